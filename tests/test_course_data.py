"""Tests of tutorial_lib.course_data: the course's synthetic cases, made once and drawn at other sites."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import copy_as_course_cache

from tutorial_lib import synthetic
from tutorial_lib.course_data import ensure_appearance_data, ensure_course_data
from tutorial_lib.data import data_root, load_manifest, load_split, open_array


def test_ensure_course_data_generates_once(tmp_path, monkeypatch, tiny_case_writer):
    calls = []

    def fake_make_dataset(out_dir, n_cases, *, seed=0, workers=1, **kwargs):
        calls.append(n_cases)
        for index in range(n_cases):
            tiny_case_writer(out_dir, f"Synth_{index:04d}", seed=index)


    monkeypatch.setattr(synthetic, "make_dataset", fake_make_dataset)
    monkeypatch.setenv("BRATS_COURSE_DATA", str(tmp_path))
    cache = ensure_course_data("ci", n_cases=3, workers=1)  # ci prepares at 4x down-sampling
    assert cache == tmp_path / "cache" / "synthetic-n3-k4"
    assert len(load_manifest(cache)["cases"]) == 3 and calls == [3]
    assert ensure_course_data("ci", n_cases=3, workers=1) == cache and calls == [3]  # second call: nothing to do
    (cache / "split.json").unlink()  # an interrupted earlier run is completed, not redone
    assert ensure_course_data("ci", n_cases=3, workers=1) == cache and (cache / "split.json").is_file()
    assert data_root() == tmp_path


def test_appearance_data_scans_the_course_patients_again(cache_dir, tiny_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("BRATS_COURSE_DATA", str(tmp_path / "data"))
    course = copy_as_course_cache(cache_dir, tmp_path / "data")
    test_cases = load_split(course)["test"]
    site = ensure_appearance_data(course, "second_site", test_cases, workers=1)
    assert site.parent == tmp_path / "data" / "cache" and site.name.startswith("synthetic-n4-k4-second_site-")
    assert sorted(load_manifest(site)["cases"]) == test_cases
    for case_id in test_cases:  # the same patient (truth and brain), another scanner (image)
        for name in ("label", "brain"):
            np.testing.assert_array_equal(open_array(site, case_id, name), open_array(course, case_id, name))
        assert not np.array_equal(open_array(site, case_id, "image"), open_array(course, case_id, "image"))
    written = (site / "manifest.json").stat().st_mtime_ns
    assert ensure_appearance_data(course, "second_site", test_cases) == site
    assert (site / "manifest.json").stat().st_mtime_ns == written  # nothing made twice
    # a changed appearance is another scanner: new folders, never the old images
    changed = dataclasses.replace(synthetic.APPEARANCES["second_site"], noise_range=(0.01, 0.02))
    monkeypatch.setattr(synthetic, "APPEARANCES", {**synthetic.APPEARANCES, "second_site": changed})
    again = ensure_appearance_data(course, "second_site", test_cases[:1], workers=1)
    assert again != site and again.name.startswith("synthetic-n4-k4-second_site-")
    assert not np.array_equal(open_array(again, test_cases[0], "image"), open_array(site, test_cases[0], "image"))
    with pytest.raises(ValueError, match="not cases of"):
        ensure_appearance_data(course, "second_site", ["Synth_0009"])
    with pytest.raises(ValueError, match="unknown appearance"):
        ensure_appearance_data(course, "third_site", test_cases)
    with pytest.raises(ValueError, match="not a course synthetic cache"):
        ensure_appearance_data(tiny_cache, "second_site", ["Tiny_0"])
    with pytest.raises(ValueError, match="not a course synthetic cache"):  # the same cases from elsewhere:
        ensure_appearance_data(cache_dir, "second_site", test_cases)  # their seeds are not known
