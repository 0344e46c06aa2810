"""The built book as a reader sees it: every page in headless Chromium, offline.

Marked ``course``: the pages come from the ``course_build`` fixture of
``tests/test_course.py``. The book is served on localhost and every request
to another host is refused, as on a machine without a network, so a page that
needs a CDN fails here. Chromium is Debian's (``chromium``; set
``BRATS_COURSE_CHROMIUM`` to use another binary), driven by Playwright's
Python package; no browser is downloaded. Screenshots of the intro and of
every chapter are written to ``_build/screenshots/``.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
import yaml
from test_course import BOOK, BUILD, PIPELINE, ROOT, course_build  # noqa: F401  (the fixture)

pytestmark = pytest.mark.course

HTML = BOOK / "_build" / "html"
SCREENSHOTS = BUILD / "screenshots"
PAGES = PIPELINE.read_pages(ROOT)
CHAPTERS = [page for page in PAGES if page.startswith("notebooks/")]
CHROMIUM = os.environ.get("BRATS_COURSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")

# What each overflowing element is allowed: a horizontal scrollbar on itself or a wrapper.
SCROLLS = """element => {
  for (let node = element; node && node !== document.body; node = node.parentElement) {
    const overflow = getComputedStyle(node).overflowX;
    if ((overflow === "auto" || overflow === "scroll") && node.scrollWidth > node.clientWidth) return true;
  }
  return element.scrollWidth <= element.clientWidth + 1;
}"""
# Numbers in tables that the browser broke across two lines.
SPLIT_NUMBERS = """() => {
  const split = [], walker = document.createTreeWalker(document.querySelector("article"), NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.parentElement.closest("table")) continue;
    for (const match of node.textContent.matchAll(/[+\\-\u2212]?\\d[\\d,.]*/g)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      if (new Set([...range.getClientRects()].map(rect => Math.round(rect.top))).size > 1) split.push(match[0]);
    }
  }
  return split;
}"""
# Tables wider than the column without the hint course.js writes under them.
UNHINTED = """() => [...document.querySelectorAll("article .output.text_html, article .pst-scrollable-table-container")]
  .filter(box => box.querySelector("table") && box.scrollWidth > box.clientWidth + 1
          && !(box.nextElementSibling && box.nextElementSibling.classList.contains("scroll-hint")))
  .map(box => box.textContent.slice(0, 60))"""
IMAGE_FILE = re.compile(r"\.(?:png|jpe?g|gif|svg)$", re.IGNORECASE)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(course_build):  # noqa: F811
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(HTML)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        pytest.skip("no chromium found: install Debian's `chromium` or set BRATS_COURSE_CHROMIUM")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _open(browser, site, page_name, *, height=1600):
    """Open one page offline; return the page and what went wrong while loading it."""
    page = browser.new_page(viewport={"width": 1280, "height": height})
    problems = []
    page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"failed request: {request.url}")
            if urlparse(request.url).hostname == "127.0.0.1" else None)
    page.on("response", lambda response: problems.append(f"HTTP {response.status}: {response.url}")
            if response.status >= 400 else None)
    # Offline: every other host is refused, and a page that needs one shows it.
    page.route(lambda url: urlparse(url).hostname != "127.0.0.1",
               lambda route: (problems.append(f"needs the network: {route.request.url}"), route.abort()))
    page.goto(urljoin(site, f"{page_name}.html"), wait_until="load")
    page.wait_for_load_state("networkidle")
    return page, problems


@pytest.mark.parametrize("page_name", PAGES)
def test_page_loads_offline_without_errors(browser, site, page_name):
    page, problems = _open(browser, site, page_name)
    try:
        broken = page.eval_on_selector_all("img", "images => images.filter(i => !(i.complete && i.naturalWidth > 0))"
                                           ".map(i => i.getAttribute('src'))")
        assert not problems, f"{page_name}: {problems}"
        assert not broken, f"{page_name}: images that do not decode: {broken}"
        if page.locator("span.math, div.math").count():
            page.wait_for_selector("mjx-container", timeout=15_000)  # MathJax typeset, from the build
        if page_name == "book/intro" or page_name in CHAPTERS:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"{Path(page_name).name}.png"))
    finally:
        page.close()


@pytest.mark.parametrize("page_name", PAGES)
def test_internal_links_resolve(browser, site, page_name):
    page, _ = _open(browser, site, page_name)
    try:
        links = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    finally:
        page.close()
    missing = set()
    for link in links:
        parsed = urlparse(link)
        if parsed.hostname != "127.0.0.1":
            continue
        target = HTML / parsed.path.lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            missing.add(parsed.path)
    assert not missing, f"{page_name} links to pages that do not exist: {sorted(missing)}"


@pytest.mark.parametrize("page_name", CHAPTERS)
def test_chapter_shows_figures_computed_numbers_one_parameters_cell_and_nothing_cut_off(browser, site, page_name):
    page, _ = _open(browser, site, page_name)
    try:
        assert page.locator(".cell_output img").count() >= 1, f"{page_name} shows no figure"
        # The numbers a paragraph reads are outputs of the code above it: printed lines and tables.
        outputs = page.eval_on_selector_all(".cell_output pre, .cell_output table", "es => es.map(e => e.textContent)")
        assert any(any(ch.isdigit() for ch in text) for text in outputs), f"{page_name}: no computed number shown"
        prose = page.eval_on_selector_all("article p", "ps => ps.map(p => p.textContent)")
        assert not [text for text in prose if "{glue" in text], f"{page_name}: raw glue roles on the page"
        # The chapter's own parameters cell shows; papermill's injected copy under it does not.
        assert page.locator(".tag_parameters").count() == 1, f"{page_name}: not one parameters cell"
        assert page.locator(".tag_injected-parameters").count() == 0, f"{page_name}: papermill's injected cell shows"
        clipped = page.eval_on_selector_all(
            "article table, article pre",
            f"elements => elements.filter(e => !({SCROLLS})(e)).map(e => e.textContent.slice(0, 60))")
        assert not clipped, f"{page_name}: wider than the column and not scrollable: {clipped}"
    finally:
        page.close()


def test_search_finds_a_chapter_by_a_word_from_it(browser, site):
    page, problems = _open(browser, site, "search")
    try:
        page.goto(urljoin(site, "search.html?q=pseudo-crop"), wait_until="load")
        page.wait_for_selector("#search-results li", timeout=15_000)
        results = page.eval_on_selector_all("#search-results li a", "links => links.map(a => a.href)")
    finally:
        page.close()
    assert any("01_data_exploration" in link for link in results), results
    assert not problems, problems


def test_launch_and_repository_buttons_follow_the_repository_url(course_build):  # noqa: F811
    url = (yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8")).get("repository") or {}).get("url")
    pages = {path: path.read_text(encoding="utf-8") for path in HTML.rglob("*.html")}
    placeholders = sorted(str(path.relative_to(HTML)) for path, text in pages.items() if "example-org" in text)
    assert not placeholders, f"placeholder repository URL in {placeholders}"
    chapter = pages[HTML / "notebooks" / "01_data_exploration.html"]
    if url:
        assert url in chapter and "colab.research.google.com" in chapter
    else:
        for marker in ("colab.research.google.com", "mybinder.org", "Source repository", "Open an issue"):
            offenders = sorted(str(path.relative_to(HTML)) for path, text in pages.items() if marker in text)
            assert not offenders, f"{marker!r} on {offenders[:3]} although no repository URL is set"


@pytest.mark.parametrize("page_name", PAGES)
def test_page_passes_axe_core(browser, site, page_name):
    from axe_playwright_python.sync_playwright import Axe  # axe-core, bundled: nothing is downloaded

    page, _ = _open(browser, site, page_name)
    try:
        violations = Axe().run(page).response["violations"]
        alts = page.eval_on_selector_all("article img", "images => images.map(i => i.getAttribute('alt') || '')")
    finally:
        page.close()
    serious = [f"{v['id']} ({v['impact']}): {[node['target'] for node in v['nodes'][:3]]}"
               for v in violations if v["impact"] in ("serious", "critical")]
    assert not serious, f"{page_name}: {serious}"
    # axe accepts any alt; a file path or two words do not say what a figure shows.
    unsaid = [alt for alt in alts if IMAGE_FILE.search(alt.strip()) or len(alt.split()) < 4]
    assert not unsaid, f"{page_name}: images without a description: {unsaid[:3]}"


@pytest.mark.parametrize("page_name", ["book/claims", "notebooks/05_ablations"])
def test_tables_read_in_the_texts_weight_and_keep_numbers_whole(browser, site, page_name):
    page, _ = _open(browser, site, page_name, height=1000)
    try:
        heavier = page.eval_on_selector_all(
            "span.pasted-text", "spans => spans.filter(s => getComputedStyle(s).fontWeight"
            " !== getComputedStyle(s.parentElement).fontWeight).map(s => s.textContent)")
        split, unhinted = page.evaluate(SPLIT_NUMBERS), page.evaluate(UNHINTED)
        table = page.locator("article table").last if page_name == "book/claims" else page.locator(
            "article table.dataframe", has_text="kernel size").first
        table.scroll_into_view_if_needed()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"table-{Path(page_name).name}.png"))
    finally:
        page.close()
    assert not heavier, f"{page_name}: pasted values bolder than their text: {heavier[:3]}"
    assert not split, f"{page_name}: numbers broken across lines: {split[:5]}"
    assert not unhinted, f"{page_name}: tables that scroll without a hint: {unhinted}"


@pytest.mark.parametrize("page_name", CHAPTERS[:3])
def test_volume_viewer_moves_through_the_volume_offline(browser, site, page_name):
    page, problems = _open(browser, site, page_name)
    try:
        frame_element = page.locator("iframe.volume-viewer").first
        frame_element.scroll_into_view_if_needed()
        assert frame_element.get_attribute("title").startswith("slice viewer: ")
        frame = frame_element.element_handle().content_frame()
        frame.wait_for_function("() => document.querySelector('canvas').width > 0")
        canvas = frame.locator("canvas").first
        before = canvas.evaluate("c => c.toDataURL()")
        box = canvas.bounding_box()
        canvas.click(position={"x": box["width"] * 0.12, "y": box["height"] * 0.3})  # in the sagittal view
        frame.wait_for_function("before => document.querySelector('canvas').toDataURL() !== before", arg=before,
                                timeout=10_000)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        frame_element.screenshot(path=str(SCREENSHOTS / f"viewer-{Path(page_name).name}.png"))
    finally:
        page.close()
    assert not problems, f"{page_name}: {problems}"
