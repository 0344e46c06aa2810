"""scripts/build_course.py: placeholders, staging, chapters run side by side, and the kernels' logs."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
build_course = load_script("build_course")


def test_placeholder_glues_what_other_pages_paste_from_it(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "book" / "claims.md").write_text(
        "| {glue:text}`../notebooks/03_demo.ipynb::verdict` | {glue:text}`../notebooks/03_demo.ipynb::dice:.3f` |")
    assert build_course.write_placeholders(["notebooks/03_demo"], tmp_path) == ["03_demo"]
    notebook = nbformat.read(tmp_path / "notebooks" / "03_demo.ipynb", as_version=4)
    outputs = {output["metadata"]["scrapbook"]["name"]: output["data"]["text/plain"]
               for cell in notebook.cells for output in cell.get("outputs", [])}
    # A number format needs a number (NaN shows as "nan"); plain text says why it is missing.
    assert outputs == {"dice": "nan", "verdict": "'not run in this build'"}
    assert notebook.metadata[build_course.PLACEHOLDER_KEY] is True
    # myst-nb needs the language to highlight the code cell; without it the -W build fails.
    assert notebook.metadata["language_info"]["name"] == "python"


@pytest.mark.parametrize("url, buttons", [("", False), ("https://github.com/someone/brats-unet-course", True)])
def test_staged_book_has_launch_buttons_only_with_a_repository_url(tmp_path, url, buttons):
    (tmp_path / "src" / "book").mkdir(parents=True)
    config = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
    config["repository"]["url"] = url
    (tmp_path / "src" / "_config.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    shutil.copy2(REPO / "_toc.yml", tmp_path / "src" / "_toc.yml")
    build_course.stage_book(tmp_path / "src", tmp_path / "book")
    staged = yaml.safe_load((tmp_path / "book" / "_config.yml").read_text(encoding="utf-8"))
    assert ("launch_buttons" in staged) is buttons
    assert staged["html"]["use_repository_button"] is buttons and staged["html"]["use_issues_button"] is buttons
    if buttons:
        assert (REPO / "binder" / "requirements.txt").is_file() and (REPO / "binder" / "postBuild").is_file()


def test_cases_and_a_cache_dir_cannot_be_combined(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_course._parse_args(["--cases", "6", "--cache-dir", str(tmp_path)])
    assert "--cases makes synthetic data" in capsys.readouterr().err


def test_peak_memory_sees_a_child_process():
    code = "import time; block = bytearray(300 * 2**20); time.sleep(1.5)"
    with build_course.PeakMemory(interval_s=0.05) as memory:
        subprocess.run([sys.executable, "-c", code], check=True)
    assert memory.peak_mb > 250


# Each chapter says it started, then waits for the other one: only chapters that
# really run at once can both finish. Each also records its kernel's thread share.
_WAITING_CHAPTER = """
import os, pathlib, time
here, other = pathlib.Path("{name}.started"), pathlib.Path("{other}.started")
here.write_text(os.environ.get("TF_NUM_INTRAOP_THREADS", "unset"))
os.write(2, b"noise from chapter {name}\\n")
deadline = time.monotonic() + 120
while not other.exists() and time.monotonic() < deadline:
    time.sleep(0.05)
assert other.exists(), "the other chapter never started alongside this one"
"""


def test_two_jobs_run_chapters_side_by_side_and_record_each(tmp_path, monkeypatch, capfd):
    # The worker processes import the script by name, as they do when it runs as a script.
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)  # a user's own setting would be kept
    (tmp_path / "notebooks").mkdir()
    for name, other in (("a", "b"), ("b", "a")):
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
            _WAITING_CHAPTER.format(name=name, other=other))])
        notebook.metadata["kernelspec"] = {"name": build_course.KERNEL_NAME, "language": "python",
                                           "display_name": "Python"}
        nbformat.write(notebook, tmp_path / "notebooks" / f"{name}.ipynb")
    book_dir = tmp_path / "out"
    args = argparse.Namespace(profile="ci", cache_dir=None, cell_timeout=300, jobs=2, root=tmp_path)
    runs = build_course._execute_all(args, ["notebooks/a", "notebooks/b"], book_dir)
    assert [(run.name, run.status) for run in runs] == [("a", "ok"), ("b", "ok")], [run.error for run in runs]
    share = str(max(1, (os.cpu_count() or 1) // 2))
    assert {path.read_text() for path in (book_dir / "notebooks").glob("*.started")} == {share}
    timings = json.loads((book_dir / build_course.TIMINGS_FILE).read_text())["chapters"]
    assert {name: (run["status"], run["jobs"]) for name, run in timings.items()} == {"a": ("ok", 2), "b": ("ok", 2)}
    assert all(run["peak_rss_mb"] > 0 for run in timings.values())  # each worker saw its own kernel
    # Each worker sends its own kernel's output to that chapter's log, and nothing of it to the terminal.
    terminal = capfd.readouterr()
    assert "noise from chapter" not in terminal.out + terminal.err
    assert "a: ok in" in terminal.out and "b: ok in" in terminal.out
    for name, other in (("a", "b"), ("b", "a")):
        log = (book_dir / "logs" / f"{name}.log").read_text()
        assert f"noise from chapter {name}" in log and f"noise from chapter {other}" not in log


@pytest.mark.parametrize("first, expected", [
    (("03", "04"), ["03_c", "04_d", "01_a", "02_b"]),
    (("09", "02"), ["02_b", "01_a", "03_c", "04_d"]),  # a chapter not selected (--notebooks) is skipped
    ((), ["01_a", "02_b", "03_c", "04_d"]),
])
def test_the_chapters_named_first_start_first(first, expected):
    chapters = ["notebooks/01_a", "notebooks/02_b", "notebooks/03_c", "notebooks/04_d"]
    assert [Path(c).name for c in build_course.start_order(chapters, first)] == expected


def test_every_chapter_named_to_start_first_exists():
    from tutorial_lib.config import PROFILES

    numbers = {Path(chapter).name.split("_")[0] for chapter in build_course.read_chapters(REPO)}
    for name, profile in PROFILES.items():
        assert set(profile["execution"]["book_start_order"]) <= numbers, name


# A kernel that dies at start while tmp/deaths holds a number above 0, as the loser of a port race does.
_FLAKY_KERNEL = """
import pathlib, runpy, sys
deaths = pathlib.Path(sys.argv[1])
left = int(deaths.read_text())
if left > 0:
    deaths.write_text(str(left - 1))
    sys.exit(1)
sys.argv = ["ipykernel_launcher", "-f", sys.argv[2]]
runpy.run_module("ipykernel_launcher", run_name="__main__")
"""


@pytest.mark.parametrize("deaths, error", [(0, None), (1, None), (build_course.KERNEL_START_ATTEMPTS, "kernel_info")])
def test_a_kernel_that_dies_while_starting_is_started_again(tmp_path, monkeypatch, capsys, deaths, error):
    (tmp_path / "kernel.py").write_text(_FLAKY_KERNEL)
    (tmp_path / "deaths").write_text(str(deaths))
    spec = tmp_path / "jupyter" / "kernels" / "flaky"
    spec.mkdir(parents=True)
    argv = [sys.executable, str(tmp_path / "kernel.py"), str(tmp_path / "deaths"), "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "flaky", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    source, target = tmp_path / "chapter.ipynb", tmp_path / "out" / "chapter.ipynb"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    notebook.metadata["kernelspec"] = {"name": "flaky", "language": "python", "display_name": "flaky"}
    nbformat.write(notebook, source)
    result = build_course.execute_chapter(source, target, parameters={}, kernel_name="flaky", progress=False)
    if error is None:
        assert result is None and "42" in target.read_text()
        assert capsys.readouterr().err.count("died while starting") == deaths
    else:
        assert error in result and not target.exists()
    assert (tmp_path / "deaths").read_text() == "0"


# What a kernel writes to its fds 1 and 2, itself or through a child process, as TensorFlow's C++ logging does.
_NOISY_CELL = """
import os, subprocess, sys
os.write(1, b"noise from the kernel on stdout\\n")
os.write(2, b"noise from the kernel on stderr\\n")
subprocess.run([sys.executable, "-c", "import os; os.write(2, b'noise from the kernel via a child\\\\n')"], check=True)
"""


def _python_notebook(path: Path, *sources: str) -> Path:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nbformat.write(notebook, path)
    return path


def test_the_kernel_writes_to_its_log_and_the_terminal_keeps_the_progress_bar(tmp_path, monkeypatch, capfd):
    # ipykernel leaves fds 1 and 2 alone under pytest; a build's kernel copies them into the notebook too.
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    source = _python_notebook(tmp_path / "noisy.ipynb", _NOISY_CELL)
    log = tmp_path / "out" / "logs" / "noisy.log"
    log.parent.mkdir(parents=True)
    log.write_text("from the previous execution\n")
    result = build_course.execute_chapter(source, tmp_path / "out" / "noisy.ipynb", parameters={},
                                          kernel_name="python3", progress={"desc": "noisy chapter"}, log=log)
    print("the build's own line")
    assert result is None
    terminal = capfd.readouterr()
    assert "noise from the kernel" not in terminal.out + terminal.err
    assert "noisy chapter" in terminal.err  # papermill's tqdm bar
    assert "the build's own line" in terminal.out  # fd 1 is the terminal again
    text = log.read_text()
    assert "noise from the kernel on stdout" in text and "noise from the kernel on stderr" in text
    assert "noise from the kernel via a child" in text
    assert "previous execution" not in text


def test_a_failed_chapter_names_its_kernel_log(tmp_path, capfd):
    source = _python_notebook(tmp_path / "broken.ipynb", "print(1)", "raise ValueError('broken on purpose')")
    log = tmp_path / "out" / "logs" / "broken.log"
    result = build_course.execute_chapter(source, tmp_path / "out" / "broken.ipynb", parameters={},
                                          kernel_name="python3", progress=False, log=log)
    assert result.startswith("cell 2 of 2 (In [2], starting \"raise ValueError('broken on purpose')\"): ValueError")
    assert result.endswith(f"; kernel log: {log}") and log.is_file()
    assert (tmp_path / "out" / "broken.failed.ipynb").is_file()
    os.write(2, b"after the failure\n")  # fd 2 is restored when the execution fails too
    assert "after the failure" in capfd.readouterr().err
