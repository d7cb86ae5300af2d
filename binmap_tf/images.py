"""Reading and normalising input images to the one layout the models take: uint8 RGB, HxWx3."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# Larger images are refused (or downscaled where the caller asks), so one upload cannot
# exhaust memory: 4096x4096 RGB is 48 MiB as uint8 and several GiB of CNN activations.
MAX_PIXELS = 4096 * 4096


class ImageError(ValueError):
    """An input that is not a usable image; the message names the problem and the fix."""


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a contiguous uint8 RGB array of shape (H, W, 3).

    Grey (H, W) or (H, W, 1) images are repeated to three channels, RGBA drops alpha,
    floats are read as [0, 1] and other integer types are rescaled from their range.
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ImageError(
            f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}; "
            "pass one image (not a batch) with channels last"
        )
    array = array[..., :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == bool:
        return np.ascontiguousarray(array.astype(np.uint8) * 255)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ImageError("image has NaN or infinite values; pass finite values in [0, 1]")
        return np.ascontiguousarray(np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8))
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        if array.min() >= 0 and array.max() <= 255:
            return np.ascontiguousarray(array.astype(np.uint8))
        scaled = (array.astype(np.float64) - max(info.min, 0)) / (info.max - max(info.min, 0))
        return np.ascontiguousarray(np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8))
    raise ImageError(f"unsupported image dtype {array.dtype}; pass uint8 RGB or floats in [0, 1]")


def check_size(image: np.ndarray, min_side: int = 1, max_pixels: int = MAX_PIXELS) -> None:
    """Raise :class:`ImageError` if ``image`` is smaller than ``min_side`` or larger than ``max_pixels``."""
    height, width = image.shape[:2]
    if min(height, width) < min_side:
        raise ImageError(
            f"image is {height}x{width}, smaller than the {min_side} pixels the model needs on its "
            "shorter side; upscale it or use a larger image"
        )
    if height * width > max_pixels:
        raise ImageError(
            f"image is {height}x{width} = {height * width} pixels, more than the limit of {max_pixels}; "
            "downscale it first (e.g. skimage.transform.rescale) or use binmap_tf.images.downscale_to_limit"
        )


def downscale_to_limit(image: np.ndarray, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, float]:
    """Downscale ``image`` so it has at most ``max_pixels`` pixels; return it and the scale used."""
    height, width = image.shape[:2]
    if height * width <= max_pixels:
        return image, 1.0
    from skimage.transform import resize

    scale = float(np.sqrt(max_pixels / (height * width)))
    shape = (max(1, int(height * scale)), max(1, int(width * scale)))
    resized = resize(image, shape, order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.round(resized), 0, 255).astype(np.uint8), scale


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3); grey and RGBA files are converted.

    Raises :class:`FileNotFoundError` for a missing file and :class:`ImageError` for a file
    that is not a readable image.
    """
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"image file not found: {file}; check the path")
    if file.is_dir():
        raise ImageError(f"{file} is a folder, not an image file")
    return decode_image(file, str(file))


def decode_image(source: str | os.PathLike | BinaryIO, name: str) -> np.ndarray:
    """Decode an image file (a path or an open binary file, e.g. the bytes of a remote object in
    ``io.BytesIO``) as uint8 RGB (H, W, 3), the way :func:`load_image` does; ``name`` names it in
    the :class:`ImageError` raised when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as pil:
            pil.load()
            if pil.mode not in ("RGB", "L", "RGBA", "LA", "I;16", "I", "F"):
                pil = pil.convert("RGBA" if "A" in pil.getbands() else "RGB")
            array = np.asarray(pil)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageError(
            f"cannot read {name} as an image ({error}); pass a JPEG, PNG, BMP or TIFF file"
        ) from error
    if array.ndim == 3 and array.shape[-1] == 2:  # grey + alpha
        array = array[..., 0]
    return as_rgb_uint8(array)


def find_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into a sorted list of image paths (folders: image suffixes only)."""
    paths: list[Path] = []
    for item in inputs:
        entry = Path(item)
        if entry.is_dir():
            paths.extend(sorted(p for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            paths.append(entry)
    return paths
