"""Every installed console script starts: its target imports and ``--help`` exits 0.

pyproject's ``[project.scripts]`` is the product's front door; a target that moved without the table
following it gave ``ImportError`` only when a user typed the command. This reads the table itself, so a
new script is covered the day it is added.
"""
from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from binmap_tf.common.paths import REPO_ROOT

SCRIPTS: dict[str, str] = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_target_is_an_importable_callable(name: str) -> None:
    module_name, _, function_name = SCRIPTS[name].partition(":")
    assert callable(getattr(importlib.import_module(module_name), function_name)), SCRIPTS[name]


def installed_script(name: str) -> str:
    """The console script beside this interpreter, as ``pip install`` wrote it."""
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail(f"console script {name!r} is not installed next to {sys.executable}: "
                    "run `pip install -e .` again after changing [project.scripts]")
    return path


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_installed_script_prints_help(name: str) -> None:
    result = subprocess.run([installed_script(name), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"usage: {name}" in result.stdout, result.stdout[:500]
