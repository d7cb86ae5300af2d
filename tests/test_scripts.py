"""Every installed console script starts: its target imports and ``--help`` exits 0.

pyproject's ``[project.scripts]`` is the product's front door; a target that moved without the table
following it gave ``ImportError`` only when a user typed the command. This reads the table itself, so a
new script is covered the day it is added.
"""
from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=None)
def help_text(name: str) -> str:
    """What the installed script ``name`` prints for ``--help`` (run once per script per test run; the
    README test reads it too). Fails the calling test when the script does not exit 0."""
    result = subprocess.run([installed_script(name), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_installed_script_prints_help(name: str) -> None:
    assert f"usage: {name}" in help_text(name), help_text(name)[:500]
