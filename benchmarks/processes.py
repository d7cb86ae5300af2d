"""Process trees on Linux, read from ``/proc``: what a command or a Ray node started, the CPU time
it used, and stopping it by process id, never by name (other people's processes share the machine).
Used by the benchmarks that time whole process trees and by the tests that start and kill them."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

# Seconds a process may take to exit after it was asked to (Ray's workers finish their shutdown
# shortly after ray.shutdown() returns).
EXIT_GRACE_SECONDS = 10.0


def process_table() -> dict[int, tuple[int, str, str, float]]:
    """Every process: ``{pid: (parent pid, command name, state, CPU seconds so far)}``."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), name, fields[0], (int(fields[11]) + int(fields[12])) / tick)
    return table


def _below(root: int, table: dict[int, tuple[int, str, str, float]]) -> set[int]:
    """The processes of ``table`` below ``root`` (its children, theirs, ...)."""
    found: set[int] = set()
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, *_) in table.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                frontier.append(pid)
    return found


def descendants(pid: int) -> dict[int, str]:
    """Live (not zombie) processes below ``pid``, ``{pid: command name}``."""
    table = process_table()
    return {child: table[child][1] for child in _below(pid, table) if table[child][2] != "Z"}


def tree_cpu(root: int, include_root: bool = True) -> dict[int, float]:
    """CPU seconds (user + system) so far of every process below ``root`` (and of ``root``), by pid."""
    table = process_table()
    pids = _below(root, table) | ({root} & set(table) if include_root else set())
    return {pid: table[pid][3] for pid in pids}


def process_name(pid: int) -> str | None:
    """The command name of process ``pid``, or None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.index("(") + 1:stat.rindex(")")]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_until_gone(pids: Iterable[int], seconds: float) -> set[int]:
    """Wait up to ``seconds`` for processes ``pids`` to end; return those still alive (zombies count as ended)."""
    deadline = time.monotonic() + seconds
    alive = set(pids)
    while alive:
        alive = {pid for pid in alive if _alive(pid)}
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return alive


def kill_tree(tree: dict[int, str], signal_number: int = signal.SIGKILL) -> None:
    """Send ``signal_number`` to the processes of ``tree`` (``{pid: name}``) by id, those still running
    under the same name (not a new process that took a freed id)."""
    for pid, name in tree.items():
        if process_name(pid) == name:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal_number)


def stop_leftovers(tree: dict[int, str], grace: float = EXIT_GRACE_SECONDS) -> tuple[dict[int, str], set[int]]:
    """Give the processes of ``tree`` (``{pid: name}``, taken while their parent ran) ``grace`` seconds
    to exit, then SIGTERM and at last SIGKILL, by id, those still running. Returns the processes
    that needed a signal and the ids still alive."""
    left = wait_until_gone(tree, grace)
    alive = left
    for signal_number in (signal.SIGTERM, signal.SIGKILL):
        kill_tree({pid: tree[pid] for pid in alive}, signal_number)
        alive = wait_until_gone(alive, grace)
    return {pid: tree[pid] for pid in left}, alive
