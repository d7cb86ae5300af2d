"""Reading and normalising input images to the one layout the models take: uint8 RGB, HxWx3."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence, TypeVar

import numpy as np

from binmap_tf.common.bands import row_bands

Result = TypeVar("Result")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# The hard limit: larger images are refused before any work (load_image reads the size from
# the file header, before decoding), or downscaled where the caller asks. Below it every stage
# is bounded (the CNN runs on tiles, superpixels on at most SUPERPIXEL_MAX_PIXELS, the host
# stages in row bands): a 50 MP photo segments at 2.5 GB peak (benchmarks/results/large_images.json);
# only the whole-image arrays (image, labels, cell index, edge map) grow with the size.
MAX_PIXELS = 100_000_000


class ImageError(ValueError):
    """An input that is not a usable image; the message names the problem and the fix."""


class ImageNotice(UserWarning):
    """Something the user should know about how an image was read (e.g. first frame of an animation)."""


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a contiguous uint8 RGB array of shape (H, W, 3).

    Grey (H, W) or (H, W, 1) images are repeated to three channels, RGBA drops alpha (everywhere
    in binmap_tf: files, uploads and arrays alike), floats are read as [0, 1], unsigned integer
    types by their dtype's range (uint16: divided by 257, whatever the values), signed integer
    types as 8-bit values (``ImageError`` outside 0..255).
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
    if np.issubdtype(array.dtype, np.unsignedinteger):  # the dtype's full range is the intensity range
        if array.dtype == np.uint16:  # 65535 / 255 = 257 exactly: round to nearest in integers
            return np.ascontiguousarray(((array.astype(np.uint32) + 128) // 257).astype(np.uint8))
        scaled = array.astype(np.float64) * (255.0 / np.iinfo(array.dtype).max)
        return np.ascontiguousarray(np.round(scaled).astype(np.uint8))
    if np.issubdtype(array.dtype, np.integer):  # e.g. np.array([[0, 128, 255]]): 8-bit values
        if array.min() < 0 or array.max() > 255:
            raise ImageError(f"a {array.dtype} image is read as 8-bit values in 0..255, but its values span "
                             f"{array.min()}..{array.max()}; pass uint16 for 16-bit data, floats in [0, 1], "
                             "or uint8")
        return np.ascontiguousarray(array.astype(np.uint8))
    raise ImageError(f"unsupported image dtype {array.dtype}; pass uint8 RGB or floats in [0, 1]")


def check_size(image: np.ndarray, min_side: int = 1, max_pixels: int = MAX_PIXELS) -> None:
    """Raise :class:`ImageError` if ``image`` is smaller than ``min_side`` or larger than ``max_pixels``."""
    check_shape(image.shape[:2], min_side, max_pixels)


def check_shape(shape: tuple[int, int], min_side: int = 1, max_pixels: int = MAX_PIXELS, name: str = "image") -> None:
    """:func:`check_size` for an image of ``shape`` (height, width) not in memory yet; ``name`` starts the message."""
    height, width = shape
    if min(height, width) < min_side:
        raise ImageError(
            f"{name} is {height}x{width}, smaller than the {min_side} pixels the model needs on its "
            "shorter side; upscale it or use a larger image"
        )
    if height * width > max_pixels:
        raise ImageError(
            f"{name} is {height}x{width} = {height * width} pixels, more than the limit of {max_pixels}; "
            "downscale it first (e.g. skimage.transform.rescale) or use binmap_tf.common.images.downscale_to_limit"
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


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, tuple[str, ...]]:
    """Decode an image file as uint8 RGB (H, W, 3), with notices for the user (:func:`decode_image`).

    Raises :class:`FileNotFoundError` for a missing file and :class:`ImageError` for a file
    that is not a readable image or has more than ``max_pixels`` pixels (read from its header,
    before decoding).
    """
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"image file not found: {file}; check the path")
    if file.is_dir():
        raise ImageError(f"{file} is a folder, not an image file")
    return decode_image(file, str(file), max_pixels)


def decode_image(source: str | os.PathLike | BinaryIO, name: str,
                 max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, tuple[str, ...]]:
    """Decode an image (a path or an open binary file, e.g. a remote object's bytes in ``io.BytesIO``)
    as uint8 RGB (H, W, 3), with notices for the user; the one decoder of binmap_tf (command lines,
    evaluate, the demo's uploads, the batch pipeline). ``name`` names the image in messages.

    EXIF orientation is applied (a phone photo is segmented the way it is shown); an embedded ICC
    colour profile (e.g. Display P3) is applied, converting the pixels to sRGB; palette images
    (GIF, PNG-8) are converted to RGB through their palette; 16-bit files are scaled by their
    range (``as_rgb_uint8``); alpha is dropped; of an animation the first frame is used, with a
    notice. Raises :class:`ImageError` for what is not a readable image or has more than
    ``max_pixels`` pixels; the size comes from the header, so that is refused before decoding.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    notices: list[str] = []
    try:
        with warnings.catch_warnings():
            # The size is checked here against max_pixels; PIL's own, lower guess only warns.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as pil:
                check_shape((pil.height, pil.width), max_pixels=max_pixels, name=name)
                frames = getattr(pil, "n_frames", 1)
                if frames > 1:
                    notices.append(f"{name} is an animation of {frames} frames; its first frame was segmented")
                pil.seek(0)
                pil.load()
                ImageOps.exif_transpose(pil, in_place=True)  # in place: no copy of an upright photo
                array = _pixels(pil, _srgb_transform(pil, name, notices))
    except Image.DecompressionBombError as error:  # over twice PIL's limit: refused by PIL itself
        raise ImageError(f"{name} is too large to decode ({error}); binmap_tf's limit is {max_pixels} "
                         "pixels: downscale it first") from error
    except ImageError:  # over max_pixels: already says so
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageError(
            f"cannot read {name} as an image ({error}); pass a JPEG, PNG, GIF, BMP, TIFF or WebP file"
        ) from error
    return as_rgb_uint8(array), tuple(notices)


def _srgb_transform(pil, name: str, notices: list[str]) -> Callable[[Any], Any] | None:
    """The conversion of ``pil``'s pixels by its embedded ICC profile to sRGB, the space the CNN was
    trained on and the colour features assume (a Display P3 phone photo's values mean other colours),
    as a function of a band of the image; None for images without a profile or with an sRGB one.
    A profile LittleCMS cannot read is ignored with a notice (its values are taken as sRGB)."""
    icc = pil.info.get("icc_profile")
    if not icc or pil.mode not in ("RGB", "RGBA", "CMYK"):
        return None
    import io

    from PIL import ImageCms

    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in (ImageCms.getProfileDescription(profile) or "").lower().replace(" ", ""):
            return None
        mode = "RGB" if pil.mode == "RGBA" else pil.mode  # alpha is dropped anyway (as_rgb_uint8)
        transform = ImageCms.buildTransform(profile, ImageCms.createProfile("sRGB"), mode, "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as error:
        notices.append(f"{name}: its embedded colour profile could not be read ({error}); its values were "
                       "taken as sRGB")
        return None
    return lambda band: ImageCms.applyTransform(band.convert(mode), transform)


def _pixels(pil, to_srgb: Callable[[Any], Any] | None = None) -> np.ndarray:
    """The decoded pixels of a PIL image as an array :func:`as_rgb_uint8` reads by dtype, converted by
    ``to_srgb`` when given. Filled a row band at a time: ``np.asarray`` of the whole image would hold
    its bytes twice more besides PIL's own copy (300 MB for a 50 MP photo), and so would converting
    the whole image's mode or colour profile."""
    pixels = None
    for start, stop in row_bands(pil.height, pil.width):
        band = _band_pixels(pil.crop((0, start, pil.width, stop)), to_srgb)
        if pixels is None:  # the first band tells the dtype and channels
            pixels = np.empty((pil.height, *band.shape[1:]), band.dtype)
        pixels[start:stop] = band
    return pixels


def _band_pixels(band, to_srgb: Callable[[Any], Any] | None) -> np.ndarray:
    """:func:`_pixels` of one band (a PIL image)."""
    if to_srgb is not None:
        return np.asarray(to_srgb(band))
    if band.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(band).astype(np.uint16)
    if band.mode == "I":  # PIL's mode for 16-bit grey PNGs: 32-bit ints holding 0..65535
        return np.clip(np.asarray(band), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    if band.mode not in ("RGB", "L", "F"):  # palette, bilevel, CMYK, YCbCr, alpha modes ...
        band = band.convert("RGBA" if band.mode == "P" and "transparency" in band.info else "RGB")
    return np.asarray(band)


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """:func:`read_image`'s pixels; its notices go to ``warnings`` (shown once by command lines)."""
    return warn_notices(read_image(path, max_pixels))


def warn_notices(decoded: tuple[np.ndarray, tuple[str, ...]]) -> np.ndarray:
    """The pixels of a :func:`decode_image` result, its notices issued as :class:`ImageNotice` warnings."""
    image, notices = decoded
    for notice in notices:
        warnings.warn(notice, ImageNotice, stacklevel=3)
    return image


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


def map_in_shape_batches(images: Sequence[np.ndarray], run: Callable[[np.ndarray], Sequence[Result]],
                         alone: Callable[[np.ndarray], bool] | None = None,
                         run_alone: Callable[[np.ndarray], Result] | None = None) -> list[Result]:
    """``run`` on stacks of equal-shaped images (one batch per shape), results in input order.

    A network takes one shape per batch; images of different sizes must never be padded or
    stacked together. ``run(batch)`` returns one result per row of ``batch``. Images for which
    ``alone(image)`` holds (too large for one pass, say) go through ``run_alone(image)`` one by one.
    """
    by_shape: dict[tuple[int, ...], list[int]] = {}
    results: list[Result | None] = [None] * len(images)
    for index, image in enumerate(images):
        if alone is not None and alone(image):
            results[index] = run_alone(image)
        else:
            by_shape.setdefault(np.shape(image), []).append(index)
    for indices in by_shape.values():
        for index, result in zip(indices, run(np.stack([images[i] for i in indices]))):
            results[index] = result
    return results  # type: ignore[return-value]
