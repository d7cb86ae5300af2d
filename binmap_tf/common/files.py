"""Atomic file writes: a result file is either complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)
# The 116-byte text that opens a MATLAB 5 file; scipy writes the creation time into it, which would
# make two saves of equal arrays differ.
MAT_HEADER_TEXT = b"MATLAB 5.0 MAT-file, Platform: binmap_tf"
MAT_HEADER_BYTES = 116


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
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
        tmp_path.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save ``array`` in ``.npy`` format, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Save ``arrays`` in a compressed ``.npz``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Save a uint8 (grey/RGB) or uint16 (grey, e.g. labels) image as PNG, atomically."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype == np.uint16 and image.ndim == 2:
        pil = Image.fromarray(np.ascontiguousarray(image, dtype="<u2"))  # 16-bit grey ("I;16")
    elif image.dtype == np.uint8:
        pil = Image.fromarray(image)
    else:
        raise ValueError(f"write_png takes uint8 images or 2-D uint16 images, got {image.dtype} {image.shape}")
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG")


def write_mat(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Save ``arrays`` as a compressed MATLAB 5 ``.mat`` (``scipy.io.loadmat`` and MATLAB's ``load``
    read it), atomically. The header text is fixed instead of scipy's creation time, so equal arrays
    give equal bytes wherever they are written."""
    import scipy.io

    buffer = io.BytesIO()
    scipy.io.savemat(buffer, arrays, do_compression=True)
    buffer.seek(0)
    buffer.write(MAT_HEADER_TEXT.ljust(MAT_HEADER_BYTES, b" "))
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(buffer.getbuffer())
