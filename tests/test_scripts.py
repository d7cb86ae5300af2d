"""Every installed console script starts: its target imports and ``--help`` exits 0.

pyproject's ``[project.scripts]`` is the product's front door; a target that moved without the table
following it gave ``ImportError`` only when a user typed the command. This reads the table itself, so a
new script is covered the day it is added.
"""
from __future__ import annotations

import functools
import importlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
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


# Modules a command must not import to print --help: each takes seconds to load, and a user who
# asks how to call a command should not wait for a model framework.
HEAVY_MODULES = ("tensorflow", "keras", "gradio", "ray")


@dataclass(frozen=True)
class HelpRun:
    """What an installed script printed for ``--help``, and the modules it imported meanwhile."""

    returncode: int
    stdout: str
    stderr: str
    imported: frozenset[str]


@functools.lru_cache(maxsize=None)
def help_runs() -> dict[str, HelpRun]:
    """Every installed script run with ``--help`` once per test run, all at once (the README test
    reads them too). Python's ``-X importtime`` log, turned on by ``PYTHONPROFILEIMPORTTIME``, names
    every module the script imported."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    started = {name: subprocess.Popen([installed_script(name), "--help"], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env) for name in sorted(SCRIPTS)}
    runs = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=120)
        imported = frozenset(line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
                             if line.startswith("import time:") and "|" in line)
        log = "\n".join(line for line in stderr.splitlines() if not line.startswith("import time:"))
        runs[name] = HelpRun(process.returncode, stdout, log, imported)
    return runs


def help_text(name: str) -> str:
    """What the installed script ``name`` prints for ``--help``; fails the calling test when the
    script does not exit 0."""
    run = help_runs()[name]
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_installed_script_prints_help(name: str) -> None:
    assert f"usage: {name}" in help_text(name), help_text(name)[:500]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_loads_no_model_framework(name: str) -> None:
    """``--help`` answers in about a second: the heavy frameworks load after the arguments are parsed."""
    help_text(name)
    assert not help_runs()[name].imported & set(HEAVY_MODULES), sorted(help_runs()[name].imported & set(HEAVY_MODULES))


def test_offered_choices_are_the_registered_ones() -> None:
    """The commands offer backbones and weight layouts from :mod:`binmap_tf.binary_map.options`, which
    loads no TensorFlow; the modules that define them must agree."""
    from binmap_tf.binary_map.backbones import backbone_names
    from binmap_tf.binary_map.backbones.alexnet.network import LAYOUTS
    from binmap_tf.binary_map.options import ALEXNET_LAYOUTS, BUILT_IN_BACKBONES

    assert sorted(BUILT_IN_BACKBONES) == backbone_names()
    assert sorted(ALEXNET_LAYOUTS) == sorted(LAYOUTS)
