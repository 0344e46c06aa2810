"""Small Sphinx fixes for the course book (loaded through ``sphinx.local_extensions``).

Docutils writes a bibliography as ``<div role="list">`` of ``role="doc-biblioentry"``
entries, a role ARIA 1.2 deprecated, so a screen reader meets a list without items
(axe-core: aria-required-children, critical). The entries become plain list items.

sphinx-thebe 0.3 registers its inline configuration script once per
``env-before-read-docs`` event, and Jupyter Book's build fires that event more
than once, so every page declared ``const THEBE_JS_URL`` twice and the second
declaration stopped with a SyntaxError in the browser. Keeping the first of
identical scripts fixes it without touching the installed package.
"""

from __future__ import annotations

from typing import Any


def _unique_scripts(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    seen, unique = set(), []
    for script in context.get("script_files", []):
        # A body-only script has filename None or "" depending on who added it.
        key = (getattr(script, "filename", None) or "", getattr(script, "attributes", {}).get("body"))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"][:] = unique  # in place: the builder renders from this list object


def _accessible_citations(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    if "body" in context:
        context["body"] = context["body"].replace('role="doc-biblioentry"', 'role="listitem"')


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", _unique_scripts, priority=900)
    app.connect("html-page-context", _accessible_citations)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
