"""The nbgrader assignments: what a release holds, and grading round trips.

The structural tests release every chapter (nbgrader's generate_assignment
does not execute anything, so they take seconds). The round trip, marked
``course``, grades six made-up students on chapters 01 and 06 under the
``ci`` profile: the reference solutions, an untouched release, one exercise
solved, a crash, an endless loop and a zipped submission.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import zipfile
from pathlib import Path

import nbformat
import pytest
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
assignments = load_script("assignments")

CHAPTERS = assignments.read_chapters(REPO)
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
backend_independent = pytest.mark.skipif(os.environ.get("KERAS_BACKEND") == "jax",
                                         reason="backend independent: runs in the TensorFlow pass")


def _graded_cells(notebook):
    return [cell for cell in notebook.cells if cell.metadata.get("nbgrader", {}).get("grade")]


def _source(chapter):
    return nbformat.read(REPO / f"{chapter}.ipynb", as_version=4)


def _solution_lines(notebook):
    """Lines inside the solution and hidden-test regions of a source notebook."""
    lines, inside = [], False
    for cell in notebook.cells:
        for line in cell.source.splitlines():
            if line.strip() in ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS"):
                inside = True
            elif line.strip() in ("### END SOLUTION", "### END HIDDEN TESTS"):
                inside = False
            elif inside and len(line.strip()) > 25:
                lines.append(line.strip())
    return lines


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    paths = assignments.release(CHAPTERS, profile="laptop", course_dir=root / "course", out=root / "release")
    return {Path(chapter).name: nbformat.read(path, as_version=4) for chapter, path in zip(CHAPTERS, paths)}


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_chapter_has_an_autograded_exercise_with_points_and_unique_ids(chapter):
    graded = _graded_cells(_source(chapter))
    code = [cell for cell in graded if cell.cell_type == "code"]
    assert code, f"{chapter} has no autograded exercise"
    for cell in graded:
        assert cell.metadata["nbgrader"].get("points", 0) > 0, f"{chapter}: graded cell without points"
    for cell in code:
        assert cell.metadata["nbgrader"]["locked"], f"{chapter}: a test cell a learner could edit"
        assert "### BEGIN HIDDEN TESTS" in cell.source, f"{chapter}: test cell without hidden tests"
        assert "selfcheck.passed(" in cell.source.split("### BEGIN HIDDEN TESTS")[0], \
            f"{chapter}: the visible checks do not end with a self-check message"


def test_exercises_across_the_course():
    ids, manual = [], 0
    for chapter in CHAPTERS:
        notebook = _source(chapter)
        ids += [cell.metadata["nbgrader"]["grade_id"] for cell in notebook.cells if "nbgrader" in cell.metadata]
        manual += sum(cell.cell_type == "markdown" for cell in _graded_cells(notebook))
        for cell in notebook.cells:
            if cell.metadata.get("nbgrader", {}).get("solution") and cell.cell_type == "code":
                assert "hide-input" in cell.metadata.get("tags", []), f"{chapter}: solution not folded in the book"
    assert len(ids) == len(set(ids)), "grade ids must be unique across the course"
    exercises = sum(len(_graded_cells(_source(chapter))) for chapter in CHAPTERS)
    assert exercises >= 10 and manual >= 2


@backend_independent
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_release_holds_no_solution_and_no_hidden_test(released, chapter):
    notebook = released[Path(chapter).name]
    text = "\n".join(cell.source for cell in notebook.cells)
    for marker in SOLUTION_MARKERS:
        assert marker not in text
    hidden = _solution_lines(_source(chapter))
    assert hidden, f"{chapter}: no solution lines found to look for"
    leaked = [line for line in hidden if line in text]
    assert not leaked, f"reference solution or hidden test lines left in the release: {leaked[:3]}"
    assert "raise NotImplementedError()" in text
    assert 'profile = "laptop"' in text or "profile = 'laptop'" in text


def test_set_profile_names_the_notebook_without_a_parameters_cell():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    with pytest.raises(ValueError, match="broken.ipynb: no parameters cell"):
        assignments.set_profile(notebook, "ci", where="broken.ipynb")


def test_commands_before_release_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `release` first"):
        assignments.collect(tmp_path, course_dir=tmp_path / "course")


# --- the round trip -------------------------------------------------------------------------------

ROUND_TRIP = ["notebooks/01_data_exploration", "notebooks/06_postprocessing"]
FIRST = "01_data_exploration"
CELL_TIMEOUT_S = 45


def _cell(notebook, grade_id):
    (cell,) = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    return cell


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    from tutorial_lib import course_data

    course_data.ensure_course_data("ci")  # the chapters read the ci cache; make it before the clock starts
    root = tmp_path_factory.mktemp("round_trip")
    course = root / "course"
    release = assignments.release(ROUND_TRIP, profile="ci", course_dir=course, out=root / "release",
                                  cell_timeout=CELL_TIMEOUT_S)
    blank = nbformat.read(release[0], as_version=4)
    reference = nbformat.read(course / "source" / FIRST / f"{FIRST}.ipynb", as_version=4)
    box = _cell(reference, "ex01_bounding_box").source

    def submit(student, notebook, name=FIRST):
        (root / "submissions" / student).mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, root / "submissions" / student / f"{name}.ipynb")

    submit("alice", reference)
    shutil.copy2(course / "source" / "06_postprocessing" / "06_postprocessing.ipynb",
                 root / "submissions" / "alice" / "06_postprocessing.ipynb")
    submit("bob", blank)
    one = nbformat.read(release[0], as_version=4)
    _cell(one, "ex01_bounding_box").source = box
    submit("carol", one)
    crash = nbformat.read(release[0], as_version=4)
    _cell(crash, "ex01_bounding_box").source = 'raise RuntimeError("my notebook is broken")'
    submit("dave", crash)
    endless = nbformat.read(release[0], as_version=4)
    _cell(endless, "ex01_bounding_box").source = box
    _cell(endless, "ex01_split_counts").source = "while True:\n    pass"
    (root / "zipped").mkdir()
    nbformat.write(endless, root / "zipped" / f"{FIRST}.ipynb")
    with zipfile.ZipFile(root / "submissions" / "erin.zip", "w") as archive:
        archive.write(root / "zipped" / f"{FIRST}.ipynb", f"homework/{FIRST}.ipynb")

    collected = assignments.collect(root / "submissions", course_dir=course)
    rows = assignments.grade(course_dir=course, out=root / "grades")
    points = {(row["student_id"], row["assignment"], row["exercise"]): row["points"] for row in rows}
    return dict(root=root, collected=collected, rows=rows, points=points)


def _points(graded, student, assignment=FIRST):
    return {exercise: score for (who, where, exercise), score in graded["points"].items()
            if who == student and where == assignment}


@pytest.mark.course
def test_collect_finds_folders_and_zips(graded):
    assert graded["collected"][FIRST] == ["alice", "bob", "carol", "dave", "erin"]
    assert graded["collected"]["06_postprocessing"] == ["alice"]


@pytest.mark.course
def test_reference_solutions_get_full_marks(graded):
    for assignment in ("01_data_exploration", "06_postprocessing"):
        rows = [r for r in graded["rows"] if r["student_id"] == "alice" and r["assignment"] == assignment]
        assert rows and all(r["points"] == r["max_points"] > 0 for r in rows), rows


@pytest.mark.course
def test_untouched_release_gets_zero_everywhere(graded):
    scores = _points(graded, "bob")
    assert set(scores) == {"ex01_bounding_box_tests", "ex01_split_counts_tests"}
    assert all(score == 0 for score in scores.values())


@pytest.mark.course
def test_one_exercise_solved_gets_exactly_its_points(graded):
    assert _points(graded, "carol") == {"ex01_bounding_box_tests": 2.0, "ex01_split_counts_tests": 0.0}


@pytest.mark.course
def test_crash_and_endless_loop_are_graded_with_a_message(graded):
    assert _points(graded, "dave") == {"ex01_bounding_box_tests": 0.0, "ex01_split_counts_tests": 0.0}
    # The loop is stopped after the cell timeout and the rest of the notebook is still graded.
    assert _points(graded, "erin") == {"ex01_bounding_box_tests": 2.0, "ex01_split_counts_tests": 0.0}
    feedback = graded["root"] / "grades" / "feedback"
    assert "my notebook is broken" in (feedback / "dave" / f"{FIRST}.html").read_text(encoding="utf-8")
    erin = (feedback / "erin" / f"{FIRST}.html").read_text(encoding="utf-8")
    assert f"ran for more than {CELL_TIMEOUT_S} s and was stopped by the grader" in erin


@pytest.mark.course
def test_grades_csv_has_one_row_per_student_and_exercise(graded):
    with (graded["root"] / "grades" / "grades.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == assignments.GRADE_COLUMNS
    assert len(rows) == 5 * 2 + 1  # five students on 01 (two exercises), alice on 06 (one)
    assert {row["status"] for row in rows} == {"graded"}
    assert all(re.fullmatch(r"\d+(\.\d+)?", row["points"]) for row in rows)


def test_instructor_guide_lists_every_graded_cell_with_its_points():
    guide = (REPO / "book" / "instructor.md").read_text(encoding="utf-8")
    listed = {match[0]: float(match[1]) for match in re.findall(r"\| `(ex\w+)` \| (\d+) \|", guide)}
    graded = {cell.metadata["nbgrader"]["grade_id"]: float(cell.metadata["nbgrader"]["points"])
              for chapter in CHAPTERS for cell in _graded_cells(_source(chapter))}
    assert listed == graded
