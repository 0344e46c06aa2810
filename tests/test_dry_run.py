"""The gpu profile's full-size path, dry-run on the CPU (``build_course.py --profile dry-run``).

Marked ``course``. Chapters 01, 03 and 06 run on six synthetic
192 x 192 x 160 cases with the dry-run profile (the gpu one made affordable,
bfloat16 forced) into a throw-away build and run root: about three minutes on two
cores. Chapters 02, 04, 05 and 07 run in ``make dry-run`` only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.course
REPO = Path(__file__).resolve().parents[1]
# 02 and 04 are left to `make dry-run`: chapter 03's matched 2D networks train on the full-size slices that
# they would, through the same recipe (recipes.train_unet2d).
CHAPTERS = ("01_data_exploration", "03_unet3d_gpu", "06_postprocessing")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dry_run")
    env = {**os.environ, "BRATS_COURSE_RUNS": str(out / "runs")}
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "build_course.py"), "--profile", "dry-run",
                             "--notebooks", *(name[:2] for name in CHAPTERS), "--out", str(out)],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out / "course"


def _printed(notebook_path: Path) -> str:
    notebook = nbformat.read(notebook_path, as_version=4)
    return "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for output in cell.outputs if output.get("name") == "stdout")


def test_chapters_run_at_full_size_in_bfloat16(dry_run):
    timings = json.loads((dry_run / "timings.json").read_text(encoding="utf-8"))["chapters"]
    for name in CHAPTERS:
        assert timings[name]["status"] == "ok" and timings[name]["profile"] == "dry-run"
        assert timings[name]["peak_rss_mb"] > 0
    printed = _printed(dry_run / "notebooks" / "03_unet3d_gpu.ipynb")
    assert "grid 192 × 192 × 160" in printed and "mixed precision: bfloat16" in printed
    assert "4 train / 1 val / 1 test cases" in printed
    assert "grid 192 × 192 × 160" in _printed(dry_run / "notebooks" / "06_postprocessing.ipynb")


def test_chapter_03_checks_its_memory_count_against_the_measured_growth(dry_run):
    notebook = nbformat.read(dry_run / "notebooks" / "03_unet3d_gpu.ipynb", as_version=4)
    tables = ["".join(output.get("data", {}).get("text/plain", "")) for cell in notebook.cells
              if cell.cell_type == "code" for output in cell.outputs]
    check = next(table for table in tables if "resident memory rise (GiB)" in table)
    rise = re.search(r"resident memory rise \(GiB\)\s+(\S+)", check).group(1)
    assert rise.lower() != "nan" and float(rise) > 0, check  # measured on the CPU, not left unchecked


def test_the_book_builds_around_the_dry_run(dry_run):
    for name in CHAPTERS:
        assert (dry_run / "_build" / "html" / "notebooks" / f"{name}.html").is_file(), name
