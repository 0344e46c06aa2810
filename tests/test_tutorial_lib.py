"""The package itself: importing it switches on TensorFlow's oneDNN CPU kernels, or says why not.

Each case runs in a fresh interpreter, because TensorFlow reads
``TF_ENABLE_ONEDNN_OPTS`` only once, when it is first imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CASES = [
    # (statements, expect the warning)
    ("import tutorial_lib; import tensorflow", False),
    ("import tensorflow; import tutorial_lib", True),
]


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


def test_setting_the_switch_first_silences_the_warning() -> None:
    environment = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}
    result = subprocess.run(
        [sys.executable, "-W", "always::RuntimeWarning", "-c", "import tensorflow; import tutorial_lib"],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "oneDNN kernels are off" not in result.stderr
