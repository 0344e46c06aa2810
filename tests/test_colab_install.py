"""The chapters' Colab install cell, run for real: a fresh virtual environment, a local clone.

Marked ``course`` (it builds the package from a git URL, about half a minute).
Only the library itself is installed (``--no-deps``): Colab already has the
heavy dependencies, and ``make setup`` tests resolving them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.course
REPO = Path(__file__).resolve().parents[1]


def test_install_cell_installs_the_course_from_a_git_url(tmp_path):
    cell = nbformat.read(REPO / "notebooks" / "01_data_exploration.ipynb", as_version=4).cells[1].source
    (arguments,) = re.findall(r"^\s*%pip install (.+)$", cell, re.MULTILINE)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    requirement = arguments.replace("{COURSE_REPOSITORY}", f"file://{clone}").replace('"', "").split()
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", *requirement], check=True, capture_output=True)
    shown = subprocess.run([str(python), "-c", "from tutorial_lib import config; print(config.BRATS.crop_shape)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path)
    assert shown.stdout.strip() == "(192, 192, 160)"
