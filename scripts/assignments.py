#!/usr/bin/env python
"""Classroom assignments from the course chapters, built on nbgrader.

Every chapter is one nbgrader assignment named after its notebook (e.g.
``01_data_exploration``). The commands work in a throw-away nbgrader course
directory (``--course-dir``, default ``_build/assignments/course``) that
``release`` creates afresh; nbgrader's own commands do the work:

``release``
    copy the chosen chapters into ``source/`` with the parameters cell set to
    ``--profile``, run ``nbgrader generate_assignment`` (solutions and hidden
    tests removed, cells locked, checksums recorded in the gradebook) and copy
    the student versions to ``--out`` (default ``_build/assignments/release``).
``collect``
    read a folder of submissions, one sub-folder or ``.zip`` per student named
    by the student's id and holding the chapter notebooks under their released
    names, with ``nbgrader zip_collect`` into ``submitted/``.
``grade``
    ``nbgrader autograde`` every collected submission (each cell has
    ``--cell-timeout`` seconds; a cell that runs longer is stopped and the grade
    says so), ``nbgrader generate_feedback``, then write ``grades.csv`` (one row
    per student and exercise) and one feedback HTML per student and chapter to
    ``--out`` (default ``_build/assignments/grades``).

Examples
--------
``python scripts/assignments.py release --chapters 01 06 --profile ci``
``python scripts/assignments.py collect --submissions ~/Downloads/submissions``
``python scripts/assignments.py grade``
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import nbformat
from build_course import read_chapters, select_chapters

from tutorial_lib.config import PROFILES, get_profile

__all__ = ["set_profile", "release", "collect", "grade", "read_grades", "main"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COURSE_DIR = REPO_ROOT / "_build" / "assignments" / "course"
# A whole chapter under ci runs in well under this; one cell of a laptop or gpu run can take an hour.
GRADE_COLUMNS = ["student_id", "assignment", "exercise", "points", "max_points", "status"]
PROFILE_LINE = re.compile(r"^profile = .*$", re.MULTILINE)

CONFIG_TEMPLATE = """\
# Written by scripts/assignments.py; this folder is recreated by every `release`.
c = get_config()  # noqa: F821
c.CourseDirectory.root = {root!r}
c.CourseDirectory.course_id = "brats-course"
c.Execute.timeout = {timeout!r}
c.Execute.error_on_timeout = {{
    "ename": "CellTimeoutError",
    "evalue": "stopped by the grader",
    "traceback": ["CellTimeoutError: this cell ran for more than {timeout} s and was stopped by the grader; "
                  "check it for an endless loop, then run it yourself to see how long it takes."],
}}
"""


def _nbgrader(course_dir: Path, *arguments: str) -> None:
    """Run one nbgrader command in ``course_dir``; raise with its log if it fails."""
    command = [sys.executable, "-m", "nbgrader", *arguments]
    # nbgrader runs `alembic` (gradebook migrations) from PATH: put this interpreter's scripts first.
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    result = subprocess.run(command, cwd=course_dir, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"`nbgrader {' '.join(arguments)}` failed in {course_dir}:\n{result.stdout}{result.stderr}")


def _write_config(course_dir: Path, timeout: int | None) -> None:
    text = CONFIG_TEMPLATE.format(root=str(course_dir), timeout=timeout)
    (course_dir / "nbgrader_config.py").write_text(text, encoding="utf-8")


def set_profile(notebook: nbformat.NotebookNode, profile: str, *, where: str = "notebook") -> None:
    """Set ``profile = "<profile>"`` in the notebook's papermill parameters cell.

    Raises
    ------
    ValueError
        If the notebook has no parameters cell with a ``profile = ...`` line.
    """
    for cell in notebook.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []) and PROFILE_LINE.search(cell.source):
            cell.source = PROFILE_LINE.sub(f"profile = {profile!r}", cell.source, count=1)
            return
    raise ValueError(f"{where}: no parameters cell with a `profile = ...` line")


def release(chapters: Sequence[str], *, profile: str, course_dir: Path, out: Path,
            cell_timeout: int | None = None) -> list[Path]:
    """Create a fresh course directory for ``chapters`` and write the student versions to ``out``.

    Returns
    -------
    list of Path
        The released notebooks, one per chapter.
    """
    shutil.rmtree(course_dir, ignore_errors=True)
    course_dir.mkdir(parents=True)
    if cell_timeout is None:
        cell_timeout = get_profile(profile, "execution")["grading_cell_timeout_s"]
    _write_config(course_dir, cell_timeout)
    released = []
    for chapter in chapters:
        name = Path(chapter).name
        source = REPO_ROOT / f"{chapter}.ipynb"
        notebook = nbformat.read(source, as_version=4)
        set_profile(notebook, profile, where=str(source))
        (course_dir / "source" / name).mkdir(parents=True)
        nbformat.write(notebook, course_dir / "source" / name / f"{name}.ipynb")
        _nbgrader(course_dir, "generate_assignment", name, "--force")
        target = out / f"{name}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(course_dir / "release" / name / f"{name}.ipynb", target)
        released.append(target)
    return released


def _assignments(course_dir: Path) -> list[str]:
    if not (course_dir / "nbgrader_config.py").is_file():
        raise FileNotFoundError(f"{course_dir} is not a course directory made by `release`; run `release` first")
    return sorted(path.name for path in (course_dir / "source").iterdir() if path.is_dir())


def collect(submissions: Path, *, course_dir: Path) -> dict[str, list[str]]:
    """Collect ``submissions`` (``<student>/<chapter>.ipynb`` or ``<student>.zip``) with zip_collect.

    Returns
    -------
    dict
        Student ids collected per assignment.
    """
    if not submissions.is_dir():
        raise FileNotFoundError(f"{submissions}: no such folder of submissions")
    collected = {}
    for name in _assignments(course_dir):
        downloaded = course_dir / "downloaded" / name
        shutil.rmtree(downloaded, ignore_errors=True)
        shutil.copytree(submissions, downloaded / "archive")
        # zip_collect extracts <student>.zip into extracted/<student>/ and copies folders as they are.
        pattern = rf".*/extracted/(?P<student_id>[^/]+)/(?:.*/)?(?P<file_id>{re.escape(name)}\.ipynb)$"
        _nbgrader(course_dir, "zip_collect", name, "--force", f"--FileNameCollectorPlugin.named_regexp={pattern}")
        submitted = course_dir / "submitted"
        students = sorted(p.name for p in submitted.iterdir() if (p / name).is_dir()) if submitted.is_dir() else []
        collected[name] = students
    return collected


def read_grades(course_dir: Path) -> list[dict[str, Any]]:
    """Per-exercise grades from the gradebook: one row per student, assignment and graded cell."""
    from nbgrader.api import Gradebook

    rows = []
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gradebook:
        for assignment in sorted(gradebook.assignments, key=lambda a: a.name):
            for submission in sorted(assignment.submissions, key=lambda s: s.student.id):
                for notebook in submission.notebooks:
                    for grade in sorted(notebook.grades, key=lambda g: g.name):
                        waiting = grade.needs_manual_grade  # its score is not a grade yet: leave it empty
                        rows.append(dict(student_id=submission.student.id, assignment=assignment.name,
                                         exercise=grade.name, points=None if waiting else grade.score,
                                         max_points=grade.max_score,
                                         status="to grade by hand" if waiting else "graded"))
    return rows


def grade(*, course_dir: Path, out: Path) -> list[dict[str, Any]]:
    """Autograde every collected submission, write ``grades.csv`` and feedback HTML under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name in _assignments(course_dir):
        submissions = len(list((course_dir / "submitted").glob(f"*/{name}")))
        if not submissions:
            continue
        print(f"grading {name}: {submissions} submission(s) ...", flush=True)
        started = time.perf_counter()
        _nbgrader(course_dir, "autograde", name, "--create", "--force")
        _nbgrader(course_dir, "generate_feedback", name, "--force")
        print(f"graded {name} in {time.perf_counter() - started:.0f} s", flush=True)
        for html in (course_dir / "feedback").glob(f"*/{name}/*.html"):
            target = out / "feedback" / html.parents[1].name / html.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(html, target)
    rows = read_grades(course_dir)
    partial = out / "grades.csv.partial"
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=GRADE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(out / "grades.csv")
    return rows


def _print_grades(rows: list[dict[str, Any]]) -> None:
    totals: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        total = totals.setdefault((row["student_id"], row["assignment"]), [0.0, 0.0, 0])
        total[0] += row["points"] or 0.0
        total[1] += row["max_points"]
        total[2] += row["status"] != "graded"
    for (student, assignment), (points, most, manual) in sorted(totals.items()):
        waiting = f", {manual} answer(s) to grade by hand" if manual else ""
        print(f"{student:20s} {assignment:24s} {points:5.1f} / {most:.0f}{waiting}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--course-dir", type=Path, default=DEFAULT_COURSE_DIR,
                        help="throw-away nbgrader course directory (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("release", help="generate the student versions of chosen chapters")
    make.add_argument("--chapters", nargs="*", help="numbers or names, e.g. 01 06 (default: all)")
    make.add_argument("--profile", default="ci", choices=tuple(PROFILES))
    make.add_argument("--cell-timeout", type=int, help="seconds per cell when grading (default: by profile)")
    make.add_argument("--out", type=Path, default=REPO_ROOT / "_build" / "assignments" / "release")
    gather = commands.add_parser("collect", help="collect a folder of submissions")
    gather.add_argument("--submissions", type=Path, required=True,
                        help="one folder or .zip per student, named by the student id")
    mark = commands.add_parser("grade", help="autograde collected submissions into grades.csv and feedback")
    mark.add_argument("--out", type=Path, default=REPO_ROOT / "_build" / "assignments" / "grades")
    args = parser.parse_args(argv)
    course_dir = args.course_dir.resolve()
    if args.command == "release":
        chapters = select_chapters(read_chapters(REPO_ROOT), args.chapters)
        for path in release(chapters, profile=args.profile, course_dir=course_dir, out=args.out.resolve(),
                            cell_timeout=args.cell_timeout):
            print(f"released {path}")
    elif args.command == "collect":
        for name, students in collect(args.submissions.resolve(), course_dir=course_dir).items():
            print(f"{name}: {len(students)} submission(s) {', '.join(students)}")
    else:
        rows = grade(course_dir=course_dir, out=args.out.resolve())
        _print_grades(rows)
        print(f"grades: {args.out.resolve() / 'grades.csv'}; feedback: {args.out.resolve() / 'feedback'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
