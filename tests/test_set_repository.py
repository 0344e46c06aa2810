"""scripts/set_repository.py: the repository URL in _config.yml and in every chapter's install cell."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
set_repository = load_script("set_repository")


@pytest.fixture
def course(tmp_path):
    shutil.copy2(REPO / "_config.yml", tmp_path / "_config.yml")
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return tmp_path


def _urls(root):
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))["repository"]["url"]
    cells = [nbformat.read(path, as_version=4).cells[1].source for path in sorted(root.glob("notebooks/0*.ipynb"))]
    return config, cells


@pytest.mark.parametrize("url", ["https://github.com/someone/brats-unet-course", ""])
def test_sets_config_and_every_install_cell(course, url):
    changed = set_repository.set_repository(url, course)
    config, cells = _urls(course)
    chapters = len(list((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    assert config == url and len(changed) == 1 + len(cells) == 1 + chapters and chapters >= 8
    assert all(f'COURSE_REPOSITORY = "{url}"' in cell for cell in cells)


def test_refuses_what_is_not_a_git_url(course):
    with pytest.raises(ValueError, match="does not look like a git URL"):
        set_repository.set_repository("example-org/brats", course)
    assert _urls(course)[0] == yaml.safe_load((REPO / "_config.yml").read_text())["repository"]["url"]
