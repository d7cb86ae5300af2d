"""Atomic file writes: a result file is either complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from binmap_tf.common.png import save_png

_UMASK = os.umask(0)
os.umask(_UMASK)
# The 116-byte text that opens a MATLAB 5 file (of its 128-byte header); scipy writes the creation
# time into it, which would make two saves of equal arrays differ.
MAT_HEADER_TEXT = b"MATLAB 5.0 MAT-file, Platform: binmap_tf"
MAT_HEADER_BYTES = 116
MAT_HEADER_SIZE = 128
# The MATLAB 5 data type of a zlib-deflated element, and the level write_mat deflates at.
MAT_COMPRESSED = 15
MAT_ZLIB_LEVEL = 1


# The temporary files of atomic_path: "." + the target's name + "." + mkstemp's 8 random characters
# + the target's suffix (so that tools that go by the suffix still read them).
_TEMPORARY = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]*)?")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary file is removed when the block fails, except where the folder no longer allows it
    (turned read-only meanwhile) or the process is killed: :func:`temporary_target` recognises it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, target)
    finally:
        with contextlib.suppress(OSError):  # the block's own error, if any, is the one to report
            tmp_path.unlink(missing_ok=True)


def temporary_target(name: str) -> str | None:
    """The name of the file that :func:`atomic_path`'s temporary file ``name`` was to become, or None
    when ``name`` is not such a temporary file."""
    match = _TEMPORARY.fullmatch(name)
    if match is None or not match["target"].endswith(match["suffix"] or ""):
        return None
    return match["target"]


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Temporary paths beside ``paths`` (one :func:`atomic_path` each), moved into place in the order
    given only once the block has written all of them: files that belong together (one image's
    outputs) appear together or not at all. A full disk or a read-only folder then fails the block
    before any file is moved; should a move itself fail, the files already moved are removed again
    (where the folder still allows it), so a reader never finds a part of the set."""
    targets = [Path(path) for path in paths]
    publishing = False
    try:
        with contextlib.ExitStack() as stack:
            # Entered last to first, so left (and moved into place) first to last.
            tmps = [stack.enter_context(atomic_path(target)) for target in reversed(targets)]
            yield tmps[::-1]
            publishing = True
    except BaseException:
        if publishing:
            for target in targets:
                with contextlib.suppress(OSError):
                    target.unlink(missing_ok=True)
        raise


def save_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON (not atomically: see :func:`write_json`)."""
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save ``array`` in ``.npy`` format (not atomically: see :func:`write_npy`)."""
    with open(path, "wb") as handle:
        np.save(handle, array)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        save_json(tmp, data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save ``array`` in ``.npy`` format, atomically."""
    with atomic_path(path) as tmp:
        save_npy(tmp, array)


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Save ``arrays`` in a compressed ``.npz``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def write_png(path: str | os.PathLike, image: np.ndarray, compress_level: int = 1) -> None:
    """Save a uint8 (grey/RGB/RGBA) or uint16 (grey, e.g. labels) image as PNG, atomically (see
    :func:`~binmap_tf.common.png.save_png`)."""
    with atomic_path(path) as tmp:
        save_png(tmp, image, compress_level)


def write_mat(path: str | os.PathLike, name: str, array: np.ndarray) -> None:
    """Save ``array`` as the variable ``name`` of a ``.mat``, atomically (see :func:`save_mat`)."""
    with atomic_path(path) as tmp:
        save_mat(tmp, name, array)


def save_mat(path: str | os.PathLike, name: str, array: np.ndarray) -> None:
    """Save ``array`` as the variable ``name`` of a compressed MATLAB 5 ``.mat`` (``scipy.io.loadmat`` and
    MATLAB's ``load`` read it), not atomically (see :func:`write_mat`).

    scipy writes the variable; it is then deflated at zlib level :data:`MAT_ZLIB_LEVEL` into the
    format's ``miCOMPRESSED`` element (scipy's own compression, level 6, takes three times as long on
    a 321x481 ucm2 for files half the size), and the header text is fixed instead of scipy's creation
    time, so equal arrays give equal bytes wherever they are written.
    """
    import scipy.io

    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {name: array})  # the 128-byte header, then the variable's one element
    data = buffer.getbuffer()
    compressed = zlib.compress(data[MAT_HEADER_SIZE:], MAT_ZLIB_LEVEL)
    with open(path, "wb") as handle:
        handle.write(MAT_HEADER_TEXT.ljust(MAT_HEADER_BYTES, b" "))
        handle.write(data[MAT_HEADER_BYTES:MAT_HEADER_SIZE])  # subsystem offset, version, byte order
        handle.write(struct.pack("=II", MAT_COMPRESSED, len(compressed)))  # scipy writes native order
        handle.write(compressed)
