"""Course-level checks: every chapter executes, shows its evidence, and the book builds.

All tests here are marked ``course``: a session fixture runs
``scripts/build_course.py --profile ci`` once (TensorFlow backend) and the
tests read what it left in the build folder: the executed notebooks, their
timings and the HTML book. A previous build is reused when it was made for
the ``ci`` profile on TensorFlow from exactly the current sources (same
``source_fingerprint``), which is what ``make course`` followed by
``make test`` produces.

Environment variables: ``BRATS_COURSE_BUILD`` (build folder, default
``<repo>/_build``), ``BRATS_COURSE_REBUILD=1`` (never reuse),
``BRATS_COURSE_ROOT`` (course sources, default the repository; used to test
the pipeline itself on stand-in notebooks).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import load_script

pytestmark = pytest.mark.course

REPO = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("BRATS_COURSE_ROOT") or REPO).resolve()
BUILD = Path(os.environ.get("BRATS_COURSE_BUILD") or ROOT / "_build").resolve()
BOOK = BUILD / "course"
PROFILE = "ci"
BACKEND = "tensorflow"

# Figures each chapter must show at least (image/png outputs, glued ones
# included), from the paper's evidence it recomputes (see COURSE_DESIGN.md §3).
MIN_FIGURES = {
    "01_data_exploration": 2,  # example slice with label (Fig. 1), pseudo-crop (Fig. 4)
    "02_baseline_2d": 2,  # depth/width sweep (Fig. 6), learning rate x dropout (Fig. 7)
    "03_unet3d_gpu": 1,  # training curves
    "04_loss_functions": 1,  # loss comparison (Fig. 5)
    "05_ablations": 1,  # concatenation vs none (Fig. 8)
    "06_postprocessing": 2,  # prediction vs truth (Fig. 9), smoothing sizes (Fig. 10)
    "07_beyond_the_paper": 1,  # per-region results
    "08_another_site": 3,  # two sites side by side, augmented patches, Dice at both sites
    "09_network_to_tool": 2,  # reliability diagram, a case where lesion-wise and per-case Dice part
}

GLUE_PREFIX = "application/papermill.record/"
# numpy >= 2 shows scalars as e.g. "np.float64(0.71)"; unwrap that to the number.
NUMPY_SCALAR = re.compile(r"^np\.(?:float|int|uint|bool_?)\w*\((.*)\)$")


PIPELINE = load_script("build_course")
CHAPTERS = [Path(name).name for name in PIPELINE.read_chapters(ROOT)]


def _read_timings() -> dict[str, Any]:
    path = BOOK / PIPELINE.TIMINGS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"chapters": {}}


def _is_fresh(timings: dict[str, Any], fingerprint: str) -> bool:
    """True if the last build covers every chapter, for ci on TensorFlow, from these sources."""
    runs = [timings["chapters"].get(name) for name in CHAPTERS]
    chapters_fresh = all(
        run and run["status"] == "ok" and run["profile"] == PROFILE
        and run.get("keras_backend") == BACKEND and run["fingerprint"] == fingerprint
        for run in runs
    )
    book = timings.get("book", {})
    return (chapters_fresh and not book.get("placeholders") and book.get("fingerprint") == fingerprint
            and Path(book.get("index", "")).is_file())


@pytest.fixture(scope="session")
def course_build() -> dict[str, Any]:
    """Run the ci pipeline once per session (or reuse a build of the same sources).

    Returns
    -------
    dict
        ``timings`` (the pipeline's JSON record), ``returncode`` and ``log``
        (``None``/``""`` when a fresh earlier build was reused).
    """
    fingerprint = PIPELINE.source_fingerprint(ROOT)
    if os.environ.get("BRATS_COURSE_REBUILD") != "1" and _is_fresh(_read_timings(), fingerprint):
        return {"timings": _read_timings(), "returncode": None, "log": ""}
    command = [sys.executable, str(REPO / "scripts" / "build_course.py"), "--profile", PROFILE,
               "--out", str(BUILD), "--root", str(ROOT)]
    environment = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, check=False)
    log = result.stdout + result.stderr
    timings = _read_timings()
    if not timings["chapters"]:
        pytest.fail(f"the pipeline recorded no chapter (exit {result.returncode}):\n{log[-4000:]}")
    return {"timings": timings, "returncode": result.returncode, "log": log}


def _executed(name: str) -> nbformat.NotebookNode:
    path = BOOK / "notebooks" / f"{name}.ipynb"
    if not path.is_file():
        pytest.fail(f"{path}: no executed copy of {name}")
    return nbformat.read(path, as_version=4)


def _outputs(notebook: nbformat.NotebookNode) -> list[dict[str, Any]]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]


def count_png_outputs(notebook: nbformat.NotebookNode) -> int:
    """Number of outputs carrying a PNG image, shown or glued."""
    return sum(
        any(key.endswith("image/png") for key in output.get("data", {}))
        for output in _outputs(notebook)
    )


def parse_number(text: str) -> float | None:
    """The number a glued value's ``text/plain`` shows, or ``None`` if it is not one.

    Examples
    --------
    >>> parse_number("np.float64(0.71)"), parse_number("13522721"), parse_number("'WT'")
    (0.71, 13522721.0, None)
    """
    text = text.strip()
    match = NUMPY_SCALAR.match(text)
    text = match.group(1) if match else text
    try:
        return float(text)
    except ValueError:
        return None


def glued_values(notebook: nbformat.NotebookNode) -> dict[str, str]:
    """Map each myst-nb ``glue`` name to the ``text/plain`` of its value.

    ``glue`` stores its value as a display output whose metadata holds
    ``scrapbook: {name, mime_prefix}``; with ``display=False`` every mime type
    is prefixed by ``application/papermill.record/``.
    """
    values = {}
    for output in _outputs(notebook):
        scrapbook = output.get("metadata", {}).get("scrapbook")
        if scrapbook:
            prefix = scrapbook.get("mime_prefix", "")
            values[scrapbook["name"]] = output.get("data", {}).get(prefix + "text/plain", "")
    return values


# --- checks of the helpers themselves (tiny hand-made notebooks) ---------------

def _notebook_with(*outputs: dict[str, Any]) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell("pass")
    cell.outputs = [nbformat.from_dict(output) for output in outputs]
    return nbformat.v4.new_notebook(cells=[cell])


def _same_number(left: float | None, right: float | None) -> bool:
    if left is None or right is None:
        return left is right
    return (math.isnan(left) and math.isnan(right)) or left == right


@pytest.mark.parametrize(
    "outputs, figures, glued",
    [
        # one visible figure, one glued number shown, one glued hidden
        ([{"output_type": "display_data", "data": {"image/png": "AA==", "text/plain": "<Figure>"}, "metadata": {}},
          {"output_type": "display_data", "data": {"text/plain": "np.float64(0.5)"},
           "metadata": {"scrapbook": {"name": "dice", "mime_prefix": ""}}},
          {"output_type": "display_data", "data": {GLUE_PREFIX + "text/plain": "nan"},
           "metadata": {"scrapbook": {"name": "bad", "mime_prefix": GLUE_PREFIX}}}],
         1, {"dice": 0.5, "bad": math.nan}),
        # a glued hidden figure counts as a figure; a stream output does not
        ([{"output_type": "stream", "name": "stdout", "text": "image/png"},
          {"output_type": "display_data", "data": {GLUE_PREFIX + "image/png": "AA==", GLUE_PREFIX + "text/plain": "x"},
           "metadata": {"scrapbook": {"name": "fig", "mime_prefix": GLUE_PREFIX}}},
          {"output_type": "execute_result", "execution_count": 1, "data": {"text/plain": "np.int64(7)"},
           "metadata": {}}],
         1, {"fig": None}),
        ([], 0, {}),
    ],
)
def test_output_parsers(outputs, figures, glued):
    notebook = _notebook_with(*outputs)  # shape: one code cell holding `outputs`
    assert count_png_outputs(notebook) == figures
    parsed = {name: parse_number(text) for name, text in glued_values(notebook).items()}
    assert parsed.keys() == glued.keys()
    assert all(_same_number(parsed[name], expected) for name, expected in glued.items()), parsed


# --- the course -------------------------------------------------------------------

def test_running_page_profile_table_matches_config():
    from tutorial_lib.config import PROFILES

    rows = [line for line in (ROOT / "book" / "running.md").read_text(encoding="utf-8").splitlines()
            if re.match(r"\|[^|]*\(`\w+\.\w+`\) \|", line)]
    assert rows, "book/running.md has no profile table rows naming their setting as (`group.key`)"
    for row in rows:
        group, key = re.search(r"\(`(\w+)\.(\w+)`\)", row).groups()
        cells = [cell.strip() for cell in row.strip("|").split("|")][1:]  # ci, laptop, gpu, dry-run
        assert len(cells) == len(PROFILES), f"running.md row {row!r} lacks a column per profile"
        for profile, cell in zip(PROFILES, cells):
            value = PROFILES[profile][group][key]
            expected = f"{value[0]} to {value[-1]}" if isinstance(value, tuple) else str(value)
            assert cell.startswith(expected), (
                f"running.md says {group}.{key}={cell!r} for {profile}, config has {value}")


def test_toc_lists_every_chapter():
    assert CHAPTERS == list(MIN_FIGURES), "the _toc.yml chapter list and MIN_FIGURES disagree"


@pytest.mark.parametrize("name", CHAPTERS)
def test_notebook_executed_without_error(course_build, name):
    run = course_build["timings"]["chapters"].get(name)
    assert run is not None, f"{name} was not executed:\n{course_build['log'][-3000:]}"
    assert run["status"] == "ok", f"{name}: {run['error']}"
    errors = [output for output in _outputs(_executed(name)) if output["output_type"] == "error"]
    assert not errors, f"{name}: executed copy holds an error output {errors[0].get('ename')}"


@pytest.mark.parametrize("name", CHAPTERS)
def test_notebook_produced_its_figures(course_build, name):
    figures = count_png_outputs(_executed(name))
    assert figures >= MIN_FIGURES[name], f"{name}: {figures} figure(s), expected at least {MIN_FIGURES[name]}"


def printed_lines(notebook: nbformat.NotebookNode) -> list[str]:
    """What the code printed: the labelled numbers a chapter's paragraphs read, under the code that computes them."""
    return ["".join(output["text"]) for output in _outputs(notebook)
            if output["output_type"] == "stream" and output.get("name") == "stdout"]


NOT_A_NUMBER = re.compile(r"\b(?:nan|inf)\b", re.IGNORECASE)


@pytest.mark.parametrize("name", CHAPTERS)
def test_outputs_show_computed_finite_numbers_and_prose_stays_in_markdown(course_build, name):
    executed = _executed(name)
    printed = printed_lines(executed)
    assert any(re.search(r"\d", text) for text in printed), f"{name}: prints no computed number"
    bad = [text[:120] for text in printed if NOT_A_NUMBER.search(text)]
    assert not bad, f"{name}: printed a value that is not a finite number: {bad}"
    # A paragraph is a Markdown cell, read once; a code cell that shows Markdown would be read twice.
    generated = [output for output in _outputs(executed) if "text/markdown" in output.get("data", {})]
    assert not generated, f"{name}: {len(generated)} code cell(s) show a paragraph; write it as a Markdown cell"
    glued = {key: parse_number(text) for key, text in glued_values(executed).items()}
    assert all(math.isfinite(value) for value in glued.values() if value is not None), glued


def test_chapter03_beats_flair_threshold_baseline(course_build):
    glued = glued_values(_executed("03_unet3d_gpu"))
    missing = {"test_dice", "baseline_dice"} - glued.keys()
    assert not missing, f"chapter 03 does not glue {sorted(missing)}"
    test_dice, baseline_dice = parse_number(glued["test_dice"]), parse_number(glued["baseline_dice"])
    assert test_dice is not None and 0.0 <= test_dice <= 1.0, f"test_dice is {glued['test_dice']!r}"
    assert baseline_dice is not None and 0.0 <= baseline_dice <= 1.0, f"baseline_dice is {glued['baseline_dice']!r}"
    assert test_dice > baseline_dice, (
        f"3D U-Net Dice {test_dice:.3f} does not beat the FLAIR threshold {baseline_dice:.3f}")


# The study's claims, the chapter that owns each, and the glue names it must produce (book/claims.md).
CLAIMS = {
    "3d_vs_2d": "03_unet3d_gpu", "dice_loss": "04_loss_functions", "skips": "05_ablations",
    "transpose": "05_ablations", "filters": "05_ablations", "dropout": "05_ablations",
    "kernel": "05_ablations", "smoothing": "06_postprocessing",
}
# The course's own claims (the claims page's second table); they have no study's number.
COURSE_CLAIMS = {"site_augmentation": "08_another_site", "site_varied_generator": "08_another_site",
                 "ensemble": "09_network_to_tool", "mirroring": "09_network_to_tool",
                 "temperature": "09_network_to_tool"}


@pytest.mark.parametrize("claim", [*CLAIMS, *COURSE_CLAIMS])
def test_chapter_glues_a_computed_verdict_for_its_claim(course_build, claim):
    from tutorial_lib.verdicts import INCONCLUSIVE, VERDICTS

    chapter = CLAIMS.get(claim) or COURSE_CLAIMS[claim]
    glued = glued_values(_executed(chapter))
    parts = ("study", "ours", "verdict", "to_decide") if claim in CLAIMS else ("ours", "verdict", "to_decide")
    names = [f"claim_{claim}_{part}" for part in parts]
    missing = [name for name in names if name not in glued]
    assert not missing, f"{chapter} does not glue {missing}"
    verdict, to_decide = glued[f"claim_{claim}_verdict"].strip("'\""), glued[f"claim_{claim}_to_decide"]
    assert verdict in VERDICTS, f"claim_{claim}_verdict is {verdict!r}"
    if verdict == INCONCLUSIVE:
        assert re.search(r"about \d+ (seeds per arm|networks|ensembles)|more test cases|margin", to_decide), to_decide
    else:  # a decided claim says what decided it
        assert re.search(r"decided with \d+ (seeds per arm|networks|ensembles)", to_decide), to_decide


def test_claims_page_shows_the_studys_and_the_courses_computed_verdicts(course_build):
    from bs4 import BeautifulSoup

    from tutorial_lib.verdicts import VERDICTS

    html = (BOOK / "_build" / "html" / "book" / "claims.html").read_text(encoding="utf-8")
    tables = BeautifulSoup(html, "html.parser").select("table")
    assert len(tables) == 2, f"the claims page has {len(tables)} tables, not the study's and the course's"
    for table, claims, verdict_column in ((tables[0], CLAIMS, 3), (tables[1], COURSE_CLAIMS, 2)):
        rows = [[cell.get_text(" ", strip=True) for cell in row.find_all("td")] for row in table.select("tbody tr")]
        assert len(rows) == len(claims), f"a claims table has {len(rows)} rows, expected {len(claims)}"
        for row in rows:
            assert row[verdict_column] in VERDICTS, f"verdict cell of {row[0]!r} reads {row[verdict_column]!r}"
            assert "interval" in row[verdict_column - 1], f"effect cell of {row[0]!r} reads {row[verdict_column - 1]!r}"
            assert "seeds per arm" in row[verdict_column + 1] or "networks" in row[verdict_column + 1] \
                or "test cases" in row[verdict_column + 1], f"to-decide cell of {row[0]!r}: {row[verdict_column + 1]!r}"
    # the page's count of expected false verdicts is worked out for as many rows as it shows
    assert glued_values(_executed("05_ablations"))["claim_rows"].strip("'\"") == str(len(CLAIMS) + len(COURSE_CLAIMS))


# Runs that may fail to learn, because failing is what their chapter shows: the study's cross-entropy and
# sensitivity-specificity losses (04), SGD with momentum at this budget (05) and the zero start (07).
EXPECTED_FAILURES = ({"run": "losses", "loss": "binary_crossentropy"},
                     {"run": "losses", "loss": "sensitivity_specificity"},
                     {"run": "ablations", "optimizer": "sgd"},
                     {"run": "region_unet", "output_bias": "zero"})


def _may_fail(config: dict[str, Any]) -> bool:
    """An expected failure, or a cell of chapter 02's grid slower than the recipe's rate (the grid finds those)."""
    from tutorial_lib.config import get_profile

    if any(all(config.get(key) == value for key, value in expected.items()) for expected in EXPECTED_FAILURES):
        return True
    return (config["run"] == "baseline_2d"
            and config["learning_rate"] < get_profile(PROFILE, "baseline_2d")["learning_rate"])


def _of_older_code(config: dict[str, Any], cache: Path) -> bool:
    """A run the recipes of today cannot have made: its configuration lacks or has other keys than theirs."""
    from conftest import recipe_config

    group = config["run"] if config["run"] in ("baseline_2d", "losses", "unet3d") else "patch_unet"
    return set(config) != set(recipe_config(group, cache, PROFILE))


def test_no_training_of_the_build_stalled_or_collapsed_but_the_expected(course_build):
    from tutorial_lib import experiments, training
    from tutorial_lib.course_data import ensure_course_data

    cache = ensure_course_data(PROFILE)
    course = experiments.data_id(cache)  # this build's data and code, not older runs in the root
    failed = []
    for record in sorted(experiments.run_root().glob("*/record.json")):
        config = json.loads(record.read_text(encoding="utf-8"))["config"]
        if config.get("data") != course or _of_older_code(config, cache) or _may_fail(config):
            continue
        monitor = "val_volume_dice" if config["run"] in ("baseline_2d", "losses") else "val_dice"
        result = training.outcome(training.load_history(record.parent), monitor=monitor)
        if result != "learned":
            failed.append(f"{record.parent.name} ({config['run']}, seed {config.get('seed')}): {result}")
    assert not failed, "runs that did not learn:\n" + "\n".join(failed)


def test_book_index_exists(course_build):
    book = course_build["timings"].get("book")
    assert course_build["returncode"] in (None, 0), f"pipeline failed:\n{course_build['log'][-4000:]}"
    assert book and Path(book["index"]).is_file(), "the book was not built"
    assert not book.get("placeholders"), f"chapters missing from the book: {book['placeholders']}"
    assert Path(book["index"]) == (BOOK / "_build" / "html" / "index.html").resolve()


@pytest.mark.parametrize("page", PIPELINE.read_pages(ROOT))
def test_every_page_is_in_the_html(course_build, page):
    html = BOOK / "_build" / "html" / f"{page}.html"
    assert html.is_file(), f"{html} missing from the built book"
    text = html.read_text(encoding="utf-8")
    assert "<h1" in text, f"{html} has no title"
    if page.startswith("notebooks/"):
        # the executed copy's outputs made it to the page
        assert "cell_output" in text, f"{html} shows no cell output"


@pytest.mark.parametrize("name", CHAPTERS)
def test_exercises_pass_and_show_folded_in_the_book(course_build, name):
    """The reference solutions pass their checks; the page folds them and hides the hidden tests."""
    from bs4 import BeautifulSoup

    executed = _executed(name)
    tests = [cell for cell in executed.cells if cell.metadata.get("nbgrader", {}).get("grade")
             and cell.cell_type == "code"]
    assert tests, f"{name} has no exercise"
    for cell in tests:
        printed = "".join(output.get("text", "") for output in cell.get("outputs", []))
        assert "all visible checks passed" in printed, f"{name}: a test cell did not pass: {cell.source[:80]!r}"
        assert "BEGIN HIDDEN TESTS" not in cell.source, f"{name}: hidden tests left in the executed copy"
    html = (BOOK / "_build" / "html" / "notebooks" / f"{name}.html").read_text(encoding="utf-8")
    page = BeautifulSoup(html, "html.parser")
    solutions = sum(bool(cell.metadata.get("nbgrader", {}).get("solution")) for cell in executed.cells
                    if cell.cell_type == "code")
    assert len(page.select("div.cell.tag_hide-input")) == solutions, f"{name}: solutions not folded"
    assert "HIDDEN TESTS" not in html and "Exercise" in page.get_text()


RAW_REPRS = re.compile(r"np\.(?:float|int)\d+\(|\{'[a-z_]+': ")


@pytest.mark.parametrize("name", CHAPTERS)
def test_printed_output_shows_no_raw_reprs(course_build, name):
    """What a reader sees is worded or tabulated: no np.float32(...) and no printed dicts."""
    raw = []
    for output in _outputs(_executed(name)):
        data = output.get("data", {})
        text = output.get("text", "") or ("" if "text/html" in data else data.get("text/plain", ""))
        raw += [line for line in str(text).splitlines() if RAW_REPRS.search(line)]
    assert not raw, f"{name} prints raw Python reprs: {raw[:3]}"
