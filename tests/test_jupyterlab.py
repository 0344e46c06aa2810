"""Every chapter as a learner runs it: opened in JupyterLab, all cells run, in headless Chromium.

Marked ``course``. One JupyterLab server on localhost (a token of its own,
its own settings folder) serves copies of every chapter; each is opened
in Chromium in a workspace of its own, run with Run > Run All Cells under the
``ci`` profile, and its kernel shut down. The chapters' trainings are read from
the run cache that the ``course_build`` fixture of ``tests/test_course.py`` has
just filled, so this costs the chapters' evaluation, not their training. For
each chapter:

- every code cell ran and none shows a traceback (Run All stops at an error);
- no rendered Markdown shows a MyST role or directive
  (``{glue:text}``, ``{eval}``, ``:::{admonition}``...);
- the outputs show computed numbers, and no code cell shows a paragraph of
  Markdown (prose is in Markdown cells, read once).

Chapter 01 also moves its slice viewer's slider and switches the modality and
checks that the image changed. Screenshots of each chapter at its first
verdict (or its first computed number), with the paragraphs around it, go to
``_build/screenshots/``.
Needs Debian's ``chromium`` (or ``BRATS_COURSE_CHROMIUM``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from test_course import BUILD, CHAPTERS, course_build  # noqa: F401  (the fixture)

pytestmark = pytest.mark.course

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("BRATS_COURSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = BUILD / "screenshots"
CHAPTER_TIMEOUT_MS = 600_000
VIEWER_IMAGE = ".jp-OutputArea .widget-output img"
# A role or directive as it looks once JupyterLab has rendered the Markdown around it.
RENDERED_MYST = re.compile(r"\{(?:glue|eval|ref|doc|numref|cite|term|download|admonition|note|warning)[:}]")
VERDICT_WORDS = re.compile(r"reproduced|contradicted|inconclusive", re.IGNORECASE)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_lab(root: Path, settings: Path) -> tuple[subprocess.Popen, str, str]:
    token, port = secrets.token_hex(16), _free_port()
    env = {key: value for key, value in os.environ.items() if key != "TUTORIAL_LIB_STATIC_FIGURES"}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
         f"--LabApp.user_settings_dir={settings}"]
        + (["--allow-root"] if os.geteuid() == 0 else []),  # CI containers run as root
        stdout=(root / "jupyterlab.log").open("w"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            return server, url, token
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.terminate()
                pytest.fail(f"JupyterLab did not start:\n{(root / 'jupyterlab.log').read_text()[-3000:]}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def lab(course_build, tmp_path_factory):  # noqa: F811  (course_build: a warm run cache)
    if not CHROMIUM:
        pytest.skip("no chromium found: install Debian's `chromium` or set BRATS_COURSE_CHROMIUM")
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("lab")
    for name in CHAPTERS:
        shutil.copy2(REPO / "notebooks" / f"{name}.ipynb", root / f"{name}.ipynb")
    # Every cell attached to the page, in view or not, so that the checks below see them all.
    settings = root / ".settings"
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"}))
    server, url, token = _start_lab(root, settings)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            yield browser, url, token, root
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def _click_run_all(page) -> None:
    page.locator(".jp-Notebook").first.click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def _run_all(page) -> None:
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    # The kernel first: on a loaded machine a Run All clicked before it answered once started nothing.
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=120_000)
    _click_run_all(page)
    started = "() => /\\[(\\*|\\d+)\\]/.test(document.querySelector('.jp-CodeCell .jp-InputPrompt').textContent)"
    try:
        page.wait_for_function(started, timeout=60_000, polling=1000)
    except PlaywrightTimeout:
        _click_run_all(page)
    # Run All marks every cell [*]; done when none is left and the first has run (an error clears the queue).
    page.wait_for_function(
        "() => { const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
        ".map(p => p.textContent);"
        " return prompts.length > 0 && /\\[\\d+\\]/.test(prompts[0]) && !prompts.some(p => p.includes('*')); }",
        timeout=CHAPTER_TIMEOUT_MS, polling=1000)


def _shut_down_kernel(url: str, token: str, name: str) -> None:
    # Closing the page would leave the kernel running; shut it down so kernels do not pile up.
    sessions = json.load(urllib.request.urlopen(f"{url}/api/sessions?token={token}"))
    for session in sessions:
        if session["path"].endswith(f"{name}.ipynb"):
            request = urllib.request.Request(f"{url}/api/sessions/{session['id']}?token={token}", method="DELETE")
            urllib.request.urlopen(request)


def _image_after_change(page, previous: str) -> str:
    page.wait_for_function("([selector, before]) => { const image = document.querySelector(selector);"
                           " return image && image.src !== before; }", arg=[VIEWER_IMAGE, previous], timeout=30_000)
    return page.locator(VIEWER_IMAGE).get_attribute("src")


def _viewer_follows_the_slider_and_the_modality(page) -> None:
    first = page.locator(VIEWER_IMAGE).get_attribute("src")
    handle = page.locator(".jp-OutputArea .widget-slider .noUi-handle").first
    handle.focus()
    for _ in range(5):
        handle.press("ArrowRight")
    moved = _image_after_change(page, first)
    modality = page.locator(".widget-dropdown", has=page.get_by_text("modality", exact=True)).locator("select")
    modality.select_option(label="t2")
    switched = _image_after_change(page, moved)
    assert len({first, moved, switched}) == 3, "the viewer's image did not change"


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_runs_in_jupyterlab_and_shows_its_numbers_under_the_code(lab, name):
    browser, url, token, root = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        # A workspace per chapter: JupyterLab would otherwise reopen the previous chapter's tab in front.
        page.goto(f"{url}/lab/workspaces/{name}/tree/{name}.ipynb?reset&token={token}")
        _run_all(page)
        prompts = page.eval_on_selector_all(".jp-CodeCell .jp-InputPrompt", "nodes => nodes.map(n => n.textContent)")
        tracebacks = page.eval_on_selector_all(
            ".jp-OutputArea-output", "nodes => nodes.map(n => n.textContent).filter(t => t.includes('Traceback'))")
        rendered = page.eval_on_selector_all(".jp-RenderedMarkdown", "nodes => nodes.map(n => n.textContent)")
        outputs = page.eval_on_selector_all(".jp-OutputArea-output", "nodes => nodes.map(n => n.textContent)")
        generated = page.locator(".jp-OutputArea-output.jp-RenderedMarkdown").count()
        if name == "01_data_exploration":
            _viewer_follows_the_slider_and_the_modality(page)
        numbered = [index for index, text in enumerate(outputs) if re.search(r"\d", text)]
        verdicts = [index for index in numbered if VERDICT_WORDS.search(outputs[index])]
        if outputs:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.locator(".jp-OutputArea-output").nth((verdicts or numbered or [0])[0]).scroll_into_view_if_needed()
            page.screenshot(path=str(SCREENSHOTS / f"jupyterlab-{name}.png"))  # the output and the prose around it
    finally:
        page.close()
        _shut_down_kernel(url, token, name)
    assert not tracebacks, f"{name}: a cell ended in an error in JupyterLab:\n{tracebacks[0][-1500:]}"
    unrun = [index for index, prompt in enumerate(prompts) if not re.search(r"\[\d+\]", prompt)]
    assert not unrun, f"{name}: code cells {unrun} did not run"
    raw = [text[:100] for text in rendered if RENDERED_MYST.search(text)]
    assert not raw, f"{name}: JupyterLab shows raw MyST markup: {raw[:3]}"
    assert numbered, f"{name}: no computed number in the outputs JupyterLab shows"
    assert not generated, f"{name}: {generated} code cell(s) show a paragraph of Markdown; write it as a Markdown cell"
