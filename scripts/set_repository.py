#!/usr/bin/env python
"""Set the course's public repository URL: ``repository.url`` in ``_config.yml``, and its copy in every chapter.

The URL's home is ``_config.yml``; the book's launch, repository and issue
buttons come from it (with it empty the book has none). Each chapter's first
cell needs the same URL to install the course on Colab, where ``_config.yml``
is not at hand, so this script writes it there too; ``tests/test_notebooks.py``
fails when the two disagree.

Examples
--------
``python scripts/set_repository.py https://github.com/your-org/brats-unet-course``
``python scripts/set_repository.py ""``   (no public repository: no buttons)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_URL = re.compile(r'^(repository:\n  url: ).*$', re.MULTILINE)
NOTEBOOK_URL = re.compile(r'^COURSE_REPOSITORY = .*$', re.MULTILINE)


def set_repository(url: str, root: Path = REPO_ROOT) -> list[Path]:
    """Write ``url`` into ``root/_config.yml`` and every chapter's install cell; return the files changed."""
    if url and not re.match(r"^(https://|file://|ssh://|git@)", url):
        raise ValueError(f"{url!r} does not look like a git URL (https://, ssh://, git@ or file://)")
    config_path = root / "_config.yml"
    config, count = CONFIG_URL.subn(rf'\g<1>"{url}"', config_path.read_text(encoding="utf-8"))
    if count != 1:
        raise ValueError(f"{config_path}: no `repository:` section with a `url:` line first")
    config_path.write_text(config, encoding="utf-8")
    changed = [config_path]
    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        cells = [cell for cell in notebook.cells if NOTEBOOK_URL.search(cell.source)]
        if len(cells) != 1:
            raise ValueError(f"{path}: expected one install cell with a `COURSE_REPOSITORY = ...` line")
        cells[0].source = NOTEBOOK_URL.sub(f"COURSE_REPOSITORY = {json.dumps(url)}", cells[0].source)
        nbformat.write(notebook, path)
        changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help='the repository URL, or "" for none')
    for path in set_repository(parser.parse_args(argv).url):
        print(f"updated {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
