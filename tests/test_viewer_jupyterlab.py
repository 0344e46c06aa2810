"""Chapter 01's slice viewer in JupyterLab, as a learner uses it.

Marked ``course``. Starts JupyterLab on localhost with a token of its own,
opens chapter 01 (``ci`` profile) in headless Chromium, runs every cell,
then moves the slice slider and switches the modality, and checks that the
viewer's image changed each time. Needs Debian's ``chromium`` (or
``BRATS_COURSE_CHROMIUM``) and the ci data, which the test prepares first.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.course

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("BRATS_COURSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
VIEWER_IMAGE = ".jp-OutputArea .widget-output img"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not CHROMIUM:
        pytest.skip("no chromium found: install Debian's `chromium` or set BRATS_COURSE_CHROMIUM")
    from tutorial_lib import data

    data.ensure_course_data("ci")
    root = tmp_path_factory.mktemp("lab")
    shutil.copy2(REPO / "notebooks" / "01_data_exploration.ipynb", root / "01_data_exploration.ipynb")
    token, port = secrets.token_hex(16), _free_port()
    env = {key: value for key, value in os.environ.items() if key != "TUTORIAL_LIB_STATIC_FIGURES"}
    log = (root / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.news_url=None"]
        + (["--allow-root"] if os.geteuid() == 0 else []),  # CI containers run as root
        stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.terminate()
                pytest.fail(f"JupyterLab did not start:\n{(root / 'jupyterlab.log').read_text()[-3000:]}")
            time.sleep(0.5)
    yield url, token
    server.terminate()
    server.wait(timeout=30)
    log.close()


def _image_after_change(page, previous: str) -> str:
    page.wait_for_function("([selector, before]) => { const image = document.querySelector(selector);"
                           " return image && image.src !== before; }", arg=[VIEWER_IMAGE, previous], timeout=30_000)
    return page.locator(VIEWER_IMAGE).get_attribute("src")


def test_viewer_follows_the_slider_and_the_modality(lab):
    from playwright.sync_api import sync_playwright

    url, token = lab
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{url}/lab/tree/01_data_exploration.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            page.locator(".jp-Notebook").first.click()
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            page.wait_for_selector(VIEWER_IMAGE, timeout=240_000)
            first = page.locator(VIEWER_IMAGE).get_attribute("src")
            handle = page.locator(".jp-OutputArea .widget-slider .noUi-handle").first
            handle.focus()
            for _ in range(5):
                handle.press("ArrowRight")
            moved = _image_after_change(page, first)
            modality = page.locator(".widget-dropdown", has=page.get_by_text("modality", exact=True)).locator("select")
            modality.select_option(label="t2")
            switched = _image_after_change(page, moved)
            assert len({first, moved, switched}) == 3
        finally:
            browser.close()
