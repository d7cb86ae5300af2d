"""README stays true: its results table equals the files it cites, its commands name real scripts and flags."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from binmap_tf.common.paths import REPO_ROOT
from tests.test_scripts import SCRIPTS, help_text

README = (REPO_ROOT / "README.md").read_text()


def results_rows() -> dict[str, list[str]]:
    """The Results table's rows whose source is a file in this repository: method -> cells."""
    rows = {}
    for line in README.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[-1].startswith("`benchmarks/results/"):
            rows[cells[0]] = cells
    return rows


def test_results_table_equals_the_summaries_it_cites():
    rows = results_rows()
    assert len(rows) >= 3, "the Results table lost its measured rows"
    methods = {"**binmap-learned** (default)": "binmap-learned", "binmap-egs (the paper's method)": "binmap-egs",
               "EGS, k=100 (its superpixels)": "egs"}
    for label, cells in rows.items():
        pattern = cells[-1].strip("`")
        folder, _, rest = pattern.partition("{")
        bsds, msrc = rest.partition("}")[0].split(",")
        bsds_figures = json.loads((REPO_ROOT / folder / bsds / "summary.json").read_text())[methods[label]]
        msrc_figures = json.loads((REPO_ROOT / folder / msrc / "summary.json").read_text())[methods[label]]
        shown = [float(cell.strip("*")) for cell in cells[1:7]]
        expected = [round(bsds_figures["covering"], 3), round(bsds_figures["pri"], 3), round(bsds_figures["voi"], 3),
                    round(bsds_figures["mean_segments"], 1), round(msrc_figures["covering"], 3),
                    round(msrc_figures["mean_segments"], 1)]
        assert shown == expected, label


def readme_commands() -> list[list[str]]:
    """Every console-script command line in README's code blocks, as argument lists (comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            for start, word in enumerate(words):
                if Path(word).name in SCRIPTS:
                    commands.append([Path(word).name, *words[start + 1:]])
    return commands


@pytest.mark.parametrize("command", readme_commands(), ids=" ".join)
def test_readme_command_uses_flags_its_script_has(command):
    script, *arguments = command
    flags = {argument.partition("=")[0] for argument in arguments if argument.startswith("--")}
    unknown = sorted(flag for flag in flags if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])",
                                                            help_text(script)))
    assert unknown == [], f"{' '.join(command)}: {script} has no {unknown}"


def test_readme_set_up_runs_the_installed_segment_command():
    """The first set-up line (what `.ci/run` runs) ends in the console script, not a module path."""
    setup = README.split("<!-- ci:setup -->")[1].split("<!-- /ci:setup -->")[0]
    lines = [line for line in setup.splitlines() if line and not line.startswith("`")]
    assert len(lines) == 2 and ".venv/bin/binmap-segment " in lines[0] and "pytest" in lines[1], lines


def test_levels_table_equals_the_levels_record():
    """README's every-level table shows the covering per level that ``benchmarks.levels`` recorded."""
    record = json.loads((REPO_ROOT / "benchmarks/results/levels_bsds500_test/levels.json").read_text())["hierarchies"]
    lines = README.split("| BSDS500 test, covering at |", 1)[1].splitlines()[2:]
    rows = {}
    for line in lines:
        if not line.startswith("|"):
            break
        cells = [cell.strip().strip("*") for cell in line.strip("|").split("|")]
        rows[cells[0].split(" (")[0]] = [float(cell) for cell in cells[1:]]
    assert set(rows) == {"binmap-learned", "binmap-hier"}
    for name, shown in rows.items():
        figures = record[name]
        expected = [round(row["covering"], 3) for row in figures["levels"].values()]
        assert shown == [*expected, round(figures["level_mean_covering"], 3)], name
