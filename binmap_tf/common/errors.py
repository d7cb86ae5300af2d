"""How a failed input (or an output that cannot be written) is told from a bug, and reported: shared
by every entry point that keeps going past a bad file (the command lines' batches and the Ray Data
pipeline)."""

from __future__ import annotations

from binmap_tf.common.images import ImageError


class OutputError(OSError):
    """A result that could not be written (a full disk, a read-only or vanished folder): the message
    names the folder, the system's reason and the fix."""


def expected_failure(error: BaseException) -> bool:
    """Whether ``error`` is about the input (a missing or unreadable file, a bad image) or the output
    (:class:`OutputError`), not a bug."""
    return isinstance(error, (ImageError, FileNotFoundError, ValueError, OutputError))


def failure_message(error: BaseException) -> str:
    """How a batch reports a failed file: the message of an input error, the type too for anything else."""
    return str(error) if expected_failure(error) else f"{type(error).__name__}: {error}"
