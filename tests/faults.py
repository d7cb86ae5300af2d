"""Faults for tests/test_batch_faults.py that must reach Ray's worker processes, where a monkeypatch
of the test process does not: Ray imports :func:`install_from_environment` in every worker it
starts (``runtime_env={"worker_process_setup_hook": "faults.install_from_environment"}``, with this
folder on the workers' ``PYTHONPATH``)."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Callable, Iterator

FULL_DISK_FLAG = "BINMAP_TF_TEST_FULL_DISK_FLAG"  # environment variable: the flag file's path


def full_disk_writer(flag: Path, atomic_path: Callable) -> Callable:
    """``binmap_tf.common.files.atomic_path`` as on a full disk while ``flag`` exists: the temporary
    file is written, then the write fails with ENOSPC, as when the disk fills up during a write."""

    @contextlib.contextmanager
    def full_disk_atomic_path(path: str | os.PathLike) -> Iterator[Path]:
        with atomic_path(path) as tmp:
            yield tmp
            if flag.exists():
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    return full_disk_atomic_path


def install_from_environment() -> None:
    """Ray's ``worker_process_setup_hook``: the full disk of :data:`FULL_DISK_FLAG`, when it is set."""
    flag = os.environ.get(FULL_DISK_FLAG)
    if flag:
        from binmap_tf.common import files

        files.atomic_path = full_disk_writer(Path(flag), files.atomic_path)
