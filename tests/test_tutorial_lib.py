"""The package itself: the oneDNN switch set at import, and the atomic file writer every module uses.

The import cases run in a fresh interpreter, because TensorFlow reads
``TF_ENABLE_ONEDNN_OPTS`` only once, when it is first imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import OWN_PROCESS

from tutorial_lib._files import UMASK, atomic_dir, atomic_path, write_json_atomic

REPO = Path(__file__).resolve().parents[1]

CASES = [
    # (statements, expect the warning)
    ("import tutorial_lib; import tensorflow", False),
    ("import tensorflow; import tutorial_lib", True),
]


@OWN_PROCESS
@pytest.mark.parametrize("statements, warns", CASES)
def test_import_order_and_onednn_switch(statements: str, warns: bool) -> None:
    environment = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    code = f"{statements}; import os; print('switch=' + os.environ['TF_ENABLE_ONEDNN_OPTS'])"
    result = subprocess.run(
        [sys.executable, "-W", "always::RuntimeWarning", "-c", code],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "switch=1" in result.stdout
    assert ("oneDNN kernels are off" in result.stderr) is warns


@OWN_PROCESS
def test_setting_the_switch_first_silences_the_warning() -> None:
    environment = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}
    result = subprocess.run(
        [sys.executable, "-W", "always::RuntimeWarning", "-c", "import tensorflow; import tutorial_lib"],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "oneDNN kernels are off" not in result.stderr


RETRACING = ("import numpy as np, keras\n"
             "for _ in range(8):\n"
             "    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])\n"
             "    model.predict_on_batch(np.zeros((2, 4)))\n")


@OWN_PROCESS
@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow", reason="a TensorFlow log")
@pytest.mark.parametrize("first, noted", [("", True), ("import tutorial_lib\n", False)])
def test_tensorflows_retracing_note_is_dropped_once_tutorial_lib_is_imported(first: str, noted: bool) -> None:
    # Eight new models in a row: TensorFlow takes their first traces for retracing.
    result = subprocess.run([sys.executable, "-c", first + RETRACING], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert ("triggered tf.function retracing" in result.stdout + result.stderr) is noted


def test_write_json_atomic_creates_the_folder_and_uses_the_usual_permissions(tmp_path: Path) -> None:
    target = tmp_path / "new" / "record.json"
    write_json_atomic(target, {"b": 1, "a": [0.5]}, sort_keys=True)
    assert target.read_text() == '{\n "a": [\n  0.5\n ],\n "b": 1\n}'
    # tempfile makes private 0600 files; a finished file must be readable like any other
    assert target.stat().st_mode & 0o777 == 0o666 & ~UMASK
    assert [path.name for path in target.parent.iterdir()] == ["record.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    write_json_atomic(target, {"run": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"run": object()})  # JSON cannot encode it
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as temporary:
            temporary.write_text('{"run": 2, "half')
            raise KeyboardInterrupt  # an interrupted writer
    assert target.read_text() == '{\n "run": 1\n}'
    assert [path.name for path in tmp_path.iterdir()] == ["record.json"]


def test_atomic_path_keeps_the_suffix_a_writer_chooses_the_format_by(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "case.nii.gz", suffix=".nii.gz") as temporary:
        assert temporary.name.endswith(".nii.gz") and temporary.parent == tmp_path
        temporary.write_bytes(b"x")
    assert (tmp_path / "case.nii.gz").read_bytes() == b"x"


def test_atomic_dir_renames_a_filled_folder_with_the_usual_permissions(tmp_path: Path) -> None:
    with atomic_dir(tmp_path / "cases" / "Case_0") as folder:
        assert folder.name.startswith(".tmp-Case_0-")
        (folder / "label.npy").write_bytes(b"x")
    case = tmp_path / "cases" / "Case_0"
    assert [path.name for path in case.iterdir()] == ["label.npy"]
    assert case.stat().st_mode & 0o777 == 0o777 & ~UMASK  # mkdtemp alone would leave 0700
    assert [path.name for path in case.parent.iterdir()] == ["Case_0"]


def test_atomic_dir_deletes_the_half_filled_folder_when_the_block_fails(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(tmp_path / "Case_0") as folder:
            (folder / "image.npy").write_bytes(b"half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def _library_imports() -> dict[str, set[str]]:
    """Module -> the tutorial_lib modules it imports, at any depth of its code (read, not run)."""
    import ast

    modules = {path.stem: path for path in (REPO / "tutorial_lib").glob("*.py") if path.stem != "__init__"}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tutorial_lib"):
                found.add(node.module.removeprefix("tutorial_lib").lstrip("."))
                found.update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.startswith("tutorial_lib.")]
                found.update(name.removeprefix("tutorial_lib.") for name in names)
        graph[name] = (found & set(modules)) - {name}
    return graph


def test_the_library_has_no_import_cycle() -> None:
    graph, state, cycles = _library_imports(), {}, []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                cycles.append(trail[trail.index(other):] + [other])
            elif other not in state:
                visit(other, trail + [other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert graph["course_data"] >= {"ingest", "synthetic", "data"}, "the graph reader found the imports"
    assert cycles == []


def test_scripts_never_edit_sys_path() -> None:
    # A script run puts its own folder first; tests reach scripts through pytest's pythonpath (pyproject.toml).
    edits = [f"{path.relative_to(REPO)}:{number}"
             for folder in ("benchmarks", "scripts", "data_scripts", "tutorial_lib")
             for path in sorted((REPO / folder).glob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if "sys.path.insert" in line or "sys.path.append" in line]
    assert edits == []
