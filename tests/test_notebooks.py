"""Static checks of the chapter notebooks: structure, sizing only from config.PROFILES, no stored outputs.

Nothing is executed here (``tests/test_course.py`` runs the chapters); the
checks read the notebooks' JSON and parse their code cells with ``ast``.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from tutorial_lib.config import PROFILES

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# Modules that may read a profile: the library, and the scripts that run the chapters.
LIBRARY = sorted((REPO / "tutorial_lib").glob("*.py")) + sorted((REPO / "scripts").glob("*.py"))


def _code_cells(path: Path) -> list[nbformat.NotebookNode]:
    return [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]


def _tree(source: str) -> ast.Module:
    # IPython magics (%matplotlib inline) are not Python.
    return ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%")))


def _strings(tree: ast.AST) -> set[str]:
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}


PROFILE_READERS = ("get_profile", "open_chapter")


def profile_groups_read(tree: ast.AST) -> set[str]:
    """Groups named by ``get_profile(profile, "<group>")``, ``open_chapter(...)`` or ``chapter.settings_of("<group>")``.

    ``"*"`` for a group given by a variable.

    Examples
    --------
    >>> sorted(profile_groups_read(ast.parse('get_profile(p, "unet3d", epochs=e); open_chapter(p)')))
    ['data', 'unet3d']
    >>> sorted(profile_groups_read(ast.parse('get_profile(p, group); chapter.settings_of("losses")')))
    ['*', 'losses']
    """
    groups = set()
    for node in ast.walk(tree):
        name = getattr(getattr(node, "func", None), "id", getattr(getattr(node, "func", None), "attr", ""))
        if isinstance(node, ast.Call) and name in (*PROFILE_READERS, "settings_of"):
            position = 0 if name == "settings_of" else 1
            group = node.args[position] if len(node.args) > position else ast.Constant("data")
            groups.add(group.value if isinstance(group, ast.Constant) else "*")
    return groups


def sizing_tables(tree: ast.AST) -> list[int]:
    """Line numbers of dict literals keyed by two or more profile names: a chapter's own sizing table.

    Examples
    --------
    >>> sizing_tables(ast.parse('CHAPTER = {"ci": 1, "laptop": 2}\\nother = {"ci": 1}'))
    [1]
    """
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Dict)
            and len({key.value for key in node.keys if isinstance(key, ast.Constant)} & set(PROFILES)) >= 2]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_opens_with_title_goals_and_one_parameters_cell(path):
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# "), "no title first"
    assert "**You will learn to**" in cells[0].source, "no learning goals in the first cell"
    tagged = [cell for cell in cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{len(tagged)} cells tagged 'parameters'"
    assert re.search(r'^profile = "ci"$', tagged[0].source, re.MULTILINE), "parameters cell sets no profile"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_ends_with_a_summary(path):
    last = nbformat.read(path, as_version=4).cells[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## Summary"), "no closing '## Summary' cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_stored_without_outputs(path):
    stored = [index for index, cell in enumerate(_code_cells(path)) if cell.outputs or cell.execution_count]
    assert not stored, f"code cells {stored} carry outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_sizes_itself_only_from_profiles(path):
    tables = {index: sizing_tables(_tree(cell.source)) for index, cell in enumerate(_code_cells(path))}
    found = {index: lines for index, lines in tables.items() if lines}
    assert not found, f"per-profile tables in code cells {found}: put the sizes in config.PROFILES"
    trees = [_tree(cell.source) for cell in _code_cells(path)]
    assert set().union(*map(profile_groups_read, trees)), "the notebook never calls open_chapter or get_profile"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_prints_no_machine_path(path):
    # The built book would show the build machine's folders; data.display_path shows them relative.
    leaks = [index for index, cell in enumerate(_code_cells(path))
             if re.search(r"\{(cache_dir|run_dir|out_path)(!s)?\}", cell.source)]
    assert not leaks, f"code cells {leaks} format a path into the output; use data.display_path"


def test_every_profile_group_and_key_is_read():
    notebook_trees = {path.stem: [_tree(cell.source) for cell in _code_cells(path)] for path in NOTEBOOKS}
    library_trees = {path.stem: ast.parse(path.read_text(encoding="utf-8")) for path in LIBRARY}
    readers = {name: set().union(*map(profile_groups_read, trees)) for name, trees in notebook_trees.items()}
    readers.update({f"module.{name}": profile_groups_read(tree) for name, tree in library_trees.items()})
    for profile, groups in PROFILES.items():
        for group, settings in groups.items():
            consumers = [name for name, read in readers.items() if group in read or "*" in read]
            assert consumers, f"PROFILES[{profile!r}][{group!r}] is read by no notebook, library module or script"
            trees = [tree for name in consumers
                     for tree in (notebook_trees.get(name) or [library_trees[name.split(".", 1)[1]]])]
            # A chapter hands its settings to the library (chapter.config -> recipes.config), which reads them.
            used = set().union(*map(_strings, trees + list(library_trees.values())))
            unread = sorted(set(settings) - used)
            assert not unread, f"PROFILES[{profile!r}][{group!r}] keys {unread} are read by none of {consumers}"


def generated_prose(tree: ast.AST) -> list[int]:
    """Lines that make prose in code: ``Markdown(...)`` calls and conditionals that choose between strings.

    A paragraph belongs in a Markdown cell (read once, edited as Markdown), and a
    sentence whose words depend on a result comes from the library (``verdicts``).

    Examples
    --------
    >>> generated_prose(ast.parse('Markdown(f"Dice {x}")\\nword = "rose" if r > 0 else "fell"\\ny = a if b else 0'))
    [1, 2]
    """
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "Markdown":
            lines.append(node.lineno)
        elif isinstance(node, ast.IfExp) and any(isinstance(branch, (ast.JoinedStr, ast.Constant))
                                                 and isinstance(getattr(branch, "value", ""), str)
                                                 for branch in (node.body, node.orelse)):
            lines.append(node.lineno)
    return sorted(lines)


def wiring(tree: ast.AST) -> list[str]:
    """What the chapter object does for a chapter: resolving a profile, binding a recipe with ``partial``.

    Examples
    --------
    >>> wiring(ast.parse('get_profile(p, "unet3d")\\nfunctools.partial(recipes.train, cache_dir=c)'))
    ['get_profile', 'partial']
    """
    names = [getattr(node.func, "id", getattr(node.func, "attr", "")) for node in ast.walk(tree)
             if isinstance(node, ast.Call)]
    return [name for name in names if name in ("get_profile", "partial")]


def code_lines(source: str) -> int:
    """Lines of a cell that hold code: no blank or comment-only lines."""
    return sum(1 for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_prose_is_markdown_and_the_library_does_the_wiring(path):
    cells = _code_cells(path)
    prose = {index: lines for index, cell in enumerate(cells) if (lines := generated_prose(_tree(cell.source)))}
    assert not prose, f"code cells {prose} make prose: write it in a Markdown cell, print the numbers under the code"
    wired = {index: names for index, cell in enumerate(cells) if (names := wiring(_tree(cell.source)))}
    assert not wired, f"code cells {wired}: open_chapter resolved the profile; use chapter.settings_of/config/train"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_cells_are_short(path):
    # An exercise's hidden tests are as long as the checking needs; the learner never edits them.
    long = {index: code_lines(cell.source) for index, cell in enumerate(_code_cells(path))
            if code_lines(cell.source) > 15 and "nbgrader" not in cell.metadata}
    assert not long, f"code cells {long} hold more than 15 lines of code: split them where the idea changes"


def test_the_checks_catch_what_they_look_for():
    # The helpers above on code a chapter must not contain.
    assert sizing_tables(_tree('CHAPTER = {"ci": dict(epochs=2), "gpu": dict(epochs=50)}')) == [1]
    assert profile_groups_read(_tree('settings = get_profile(profile, "ablations")')) == {"ablations"}
    assert _strings(_tree('settings["max_cases"]')) == {"max_cases"}
    assert generated_prose(_tree('display(Markdown("""\nA paragraph.\n"""))')) == [1]
    assert generated_prose(_tree('print(f"{n} cases")')) == []
    assert code_lines("# why\nx = 1\n\ny = 2\n") == 2


def test_every_chapter_installs_the_course_on_colab_from_the_configured_repository():
    url = (yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8")).get("repository") or {}).get("url")
    for path in NOTEBOOKS:
        install = nbformat.read(path, as_version=4).cells[1]
        assert install.cell_type == "code" and '"google.colab" in sys.modules' in install.source, path.name
        assert f"COURSE_REPOSITORY = {json.dumps(url or '')}" in install.source, \
            f"{path.name}: its install cell and _config.yml name different repositories (scripts/set_repository.py)"


# Syntax only the book understands: a MyST role (`{glue:text}`, `{ref}`...) or a directive fence.
RAW_MYST = re.compile(r"\{[a-z][\w:-]*\}`|^\s*(?:```|:::)\s*\{", re.MULTILINE)


@pytest.mark.parametrize(
    "text, raw",
    [("moves in {glue:text}`n_epochs` epochs", True), (":::{admonition} A model answer\nbody\n:::", True),
     ("```{note}\nhi\n```", True), ("see {ref}`running`", True), ("filters $[16, \\dots, 512]$", False),
     ("a dict `{'a': 1}` in code", False), ("<details><summary>A model answer</summary>", False)],
)
def test_raw_myst_pattern(text, raw):
    assert bool(RAW_MYST.search(text)) is raw


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_markdown_reads_the_same_in_jupyter_and_the_book(path):
    # JupyterLab, Colab, VS Code and nbgrader's feedback show Markdown cells as they are: computed
    # values come as Markdown output of a cell (hidden input in the book), never as a glue role.
    cells = nbformat.read(path, as_version=4).cells
    raw = [index for index, cell in enumerate(cells) if cell.cell_type == "markdown" and RAW_MYST.search(cell.source)]
    assert not raw, f"Markdown cells {raw} hold MyST roles or directives that only the book renders"


def glue_keys(tree: ast.AST) -> list[str | None]:
    """The key of every ``glue(...)`` call in ``tree``; ``None`` where it is not a string literal.

    Examples
    --------
    >>> glue_keys(ast.parse('glue("claim_x_verdict", v, display=False); glue(f"claim_{c}", v)'))
    ['claim_x_verdict', None]
    """
    return [node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "glue"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_glue_keys_are_literals_another_page_reads(path):
    keys = [key for cell in _code_cells(path) for key in glue_keys(_tree(cell.source))]
    assert None not in keys, "a glue key is built at run time; write it out so that grep finds it"
    pasted = (REPO / "book" / "claims.md").read_text(encoding="utf-8") + (REPO / "tests" / "test_course.py").read_text(
        encoding="utf-8")
    unread = [key for key in keys if key not in pasted]
    assert not unread, f"glued but read by no page or test (show it as Markdown output instead): {unread}"
