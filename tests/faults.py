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
DIE_MID_WRITE_FLAG = "BINMAP_TF_TEST_DIE_MID_WRITE_FLAG"  # environment variable: that flag file's path


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


def dying_writer(flag: Path, atomic_path: Callable) -> Callable:
    """``binmap_tf.common.files.atomic_path`` as in a worker killed in the middle of writing an image,
    once: while ``flag`` exists, the first write to finish its temporary file takes the flag away and
    ends the process at once (``os._exit``: no clean-up, as SIGKILL), before any file is in place."""

    @contextlib.contextmanager
    def dying_atomic_path(path: str | os.PathLike) -> Iterator[Path]:
        with atomic_path(path) as tmp:
            yield tmp
            with contextlib.suppress(FileNotFoundError):
                flag.unlink()  # one process takes the flag, even when several write at once
                os._exit(1)

    return dying_atomic_path


def install_from_environment() -> None:
    """Ray's ``worker_process_setup_hook``: the full disk of :data:`FULL_DISK_FLAG` and the death of
    :data:`DIE_MID_WRITE_FLAG`, those that are set."""
    from binmap_tf.common import files

    for variable, fault in ((FULL_DISK_FLAG, full_disk_writer), (DIE_MID_WRITE_FLAG, dying_writer)):
        flag = os.environ.get(variable)
        if flag:
            files.atomic_path = fault(Path(flag), files.atomic_path)
