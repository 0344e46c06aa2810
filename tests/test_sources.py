"""Tests for tutorial_lib.sources: recognising each BraTS download layout.

Reading, validation and safe extraction are exercised end to end, through
``prepare_dataset``, in ``test_ingest.py`` (bad inputs, unsafe archive members).
"""

from __future__ import annotations

import tarfile

import pytest

from tutorial_lib.sources import detect_layout


@pytest.mark.parametrize("layout", ["brats2017", "brats2023", "msd"])
def test_detect_layout_folder_and_archive(tmp_path, tiny_case_writer, layout):
    tiny_case_writer(tmp_path / "src", "Case_1", layout=layout)
    assert detect_layout(tmp_path / "src") == layout
    archive = tmp_path / "src.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src", arcname="download")
    assert detect_layout(archive) == layout


def test_detect_layout_rejects_empty_and_mixed(tmp_path, tiny_case_writer):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing here")
    with pytest.raises(ValueError, match="no BraTS-style NIfTI"):
        detect_layout(tmp_path / "empty")
    tiny_case_writer(tmp_path / "mixed", "A", layout="brats2017")
    tiny_case_writer(tmp_path / "mixed", "B", layout="brats2023")
    with pytest.raises(ValueError, match="several layouts"):
        detect_layout(tmp_path / "mixed")
    with pytest.raises(FileNotFoundError):
        detect_layout(tmp_path / "missing")


def test_extract_members_names_the_file_and_checks_limits(tmp_path):
    from tutorial_lib.sources import extract_members

    not_an_archive = tmp_path / "notes.zip"
    not_an_archive.write_text("plain text")
    with pytest.raises(ValueError, match=r"notes.zip: not a .zip or .tar"):
        extract_members(not_an_archive, tmp_path / "out")
    with pytest.raises(ValueError, match="limits must be positive"):
        extract_members(not_an_archive, tmp_path / "out", max_member_bytes=0)


def test_read_nifti_reads_every_gzip_member_up_to_the_bound(tmp_path):
    import gzip

    import nibabel as nib
    import numpy as np

    from tutorial_lib.sources import CaseError, read_nifti

    raw = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), np.eye(4)).to_bytes()
    path = tmp_path / "Case_1_t1.nii.gz"
    path.write_bytes(gzip.compress(raw[:200]) + gzip.compress(raw[200:]))  # as a concatenating copy writes it
    data, _ = read_nifti(path, as_float=False, max_bytes=len(raw))
    assert data.tolist() == np.arange(60).reshape(3, 4, 5).tolist()
    with pytest.raises(CaseError, match=rf"Case_1_t1.nii.gz.*more than {len(raw) - 1} bytes"):
        read_nifti(path, max_bytes=len(raw) - 1)
