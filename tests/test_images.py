"""Input normalisation, clear errors for bad files, and atomic writes."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from PIL import Image

from binmap_tf.common.files import atomic_path, write_png
from binmap_tf.common.images import (
    ImageError,
    as_rgb_uint8,
    check_size,
    downscale_to_limit,
    find_images,
    load_image,
    map_in_shape_batches,
    read_image,
)


def test_grey_rgba_float_and_uint16_become_rgb_uint8():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(as_rgb_uint8(grey)[..., 1], grey)
    rgba = np.dstack([np.zeros((3, 4, 3), np.uint8), np.full((3, 4), 9, np.uint8)])
    assert as_rgb_uint8(rgba).shape == (3, 4, 3)
    assert as_rgb_uint8(np.ones((2, 2, 3)))[0, 0, 0] == 255
    assert as_rgb_uint8(np.full((2, 2), 65535, np.uint16))[0, 0, 0] == 255


def test_bad_shapes_and_values_name_the_problem():
    with pytest.raises(ImageError, match=r"\(H, W, 3\)"):
        as_rgb_uint8(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ImageError, match="NaN"):
        as_rgb_uint8(np.full((2, 2, 3), np.nan))


def test_files_grey_rgba_corrupt_missing(tmp_path):
    Image.fromarray(np.full((5, 6), 100, np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(np.full((5, 6, 4), 50, np.uint8), mode="RGBA").save(tmp_path / "rgba.png")
    assert load_image(tmp_path / "grey.png").shape == (5, 6, 3)
    assert load_image(tmp_path / "rgba.png")[0, 0].tolist() == [50, 50, 50]
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "text.jpg")
    with pytest.raises(FileNotFoundError, match="check the path"):
        load_image(tmp_path / "missing.png")
    assert [p.name for p in find_images([tmp_path])] == ["grey.png", "rgba.png", "text.jpg"]


def test_size_limits_and_downscaling():
    with pytest.raises(ImageError, match="smaller than the 32 pixels"):
        check_size(np.zeros((10, 100, 3), np.uint8), min_side=32)
    with pytest.raises(ImageError, match="downscale"):
        check_size(np.zeros((100, 100, 3), np.uint8), max_pixels=50 * 50)
    small, scale = downscale_to_limit(np.zeros((100, 200, 3), np.uint8), max_pixels=50 * 100)
    assert small.shape == (50, 100, 3) and scale == pytest.approx(0.5)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.png"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    write_png(target, np.zeros((4, 4), np.uint16))
    assert np.asarray(Image.open(target)).dtype.itemsize == 2


def test_png_written_in_bands_reads_back_exactly(tmp_path):
    """The band-by-band PNG encoder: every layout write_png takes reads back as written, whatever the
    bands, and bands that do not make the announced image are refused."""
    from binmap_tf.common.png import save_png_bands

    rng = np.random.default_rng(0)
    for image in (rng.integers(0, 256, (37, 23, 3), dtype=np.uint8), rng.integers(0, 256, (37, 23), dtype=np.uint8),
                  rng.integers(0, 256, (5, 4, 4), dtype=np.uint8), rng.integers(0, 65536, (37, 23), dtype=np.uint16)):
        write_png(tmp_path / "whole.png", image)
        bands = (image[start:start + 5] for start in range(0, len(image), 5))
        save_png_bands(tmp_path / "bands.png", image.shape, image.dtype, bands)
        for name in ("whole.png", "bands.png"):
            np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / name)), image)
    with pytest.raises(ValueError, match="hold 5 rows, not the 6"):
        save_png_bands(tmp_path / "short.png", (6, 4), np.uint8, [np.zeros((5, 4), np.uint8)])
    with pytest.raises(ValueError, match="uint8 images or 2-D uint16"):
        write_png(tmp_path / "float.png", np.zeros((4, 4)))


def test_oversized_files_are_refused_from_the_header_before_decoding(tmp_path, monkeypatch):
    from PIL import ImageFile

    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(path)
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or None)
    with pytest.raises(ImageError, match=r"60x80 = 4800 pixels, more than the limit of 4799"):
        load_image(path, max_pixels=4799)
    assert decoded == []  # refused from the header alone


def test_pil_decompression_bomb_error_becomes_a_clear_image_error(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4800 > 2 x 1000: PIL raises on open
    with pytest.raises(ImageError, match="too large to decode"):
        load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # between 1x and 2x: PIL only warns, we load
    assert load_image(path).shape == (60, 80, 3)


def test_unsigned_integers_scale_by_dtype_whatever_their_values():
    dark16 = np.array([[0, 200, 257, 65535]], np.uint16)  # a dark 16-bit image is still 16-bit
    np.testing.assert_array_equal(as_rgb_uint8(dark16)[..., 0], [[0, 1, 1, 255]])
    np.testing.assert_array_equal(as_rgb_uint8(np.array([[0, 2**32 - 1]], np.uint32))[..., 0], [[0, 255]])
    np.testing.assert_array_equal(as_rgb_uint8(np.array([[0, 128, 255]]))[..., 0], [[0, 128, 255]])  # int64
    with pytest.raises(ImageError, match="uint16 for 16-bit"):
        as_rgb_uint8(np.array([[0, 300]]))


def test_decoder_reads_16_bit_palette_animated_and_rotated_files(tmp_path):
    import warnings

    from binmap_tf.common.images import ImageNotice, read_image

    ramp = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    Image.fromarray(ramp).save(tmp_path / "deep.png")  # 16-bit grey PNG
    np.testing.assert_array_equal(load_image(tmp_path / "deep.png")[..., 0], (ramp.astype(np.uint32) + 128) // 257)

    colours = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    index = np.array([[0, 1], [1, 0]], np.uint8)
    palette = Image.fromarray(index, mode="P")
    palette.putpalette(colours.ravel().tolist())
    palette.save(tmp_path / "palette.gif")
    np.testing.assert_array_equal(load_image(tmp_path / "palette.gif"), colours[index])

    frames = [Image.fromarray(np.full((4, 4, 3), value, np.uint8)) for value in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    pixels, notices = read_image(tmp_path / "anim.gif")
    assert notices and "first frame" in notices[0] and pixels.shape == (4, 4, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_image(tmp_path / "anim.gif")
    assert [w.category for w in caught] == [ImageNotice]

    upright = np.zeros((2, 3, 3), np.uint8)
    upright[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(upright).save(tmp_path / "phone.png", exif=exif)
    shown = load_image(tmp_path / "phone.png")
    assert shown.shape == (3, 2, 3) and shown[0, -1, 0] == 255


def test_shape_batches_never_stack_different_shapes_and_keep_the_input_order():
    images = [np.full((4, 6, 3), 0), np.full((6, 4, 3), 1), np.full((4, 6, 3), 2), np.full((4, 6), 3)]
    batches = []

    def run(batch):
        batches.append(batch.shape)
        return [int(row.flat[0]) for row in batch]

    assert map_in_shape_batches(images, run) == [0, 1, 2, 3]
    assert batches == [(2, 4, 6, 3), (1, 6, 4, 3), (1, 4, 6)]


def _s15_fixed16(*values: float) -> bytes:
    return b"".join(struct.pack(">i", round(value * 65536)) for value in values)


def display_p3_profile(gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 matrix/TRC profile with Display P3's primaries (D50-adapted, as Apple's
    profile gives them) and a pure-gamma tone curve: enough for LittleCMS, made here, no file needed."""
    description = b"Test Display P3"
    tags = {
        b"desc": b"desc\0\0\0\0" + struct.pack(">I", len(description) + 1) + description + b"\0" + bytes(12 + 67),
        b"wtpt": b"XYZ \0\0\0\0" + _s15_fixed16(0.9642, 1.0, 0.8249),
        b"rXYZ": b"XYZ \0\0\0\0" + _s15_fixed16(0.5151, 0.2412, -0.0011),
        b"gXYZ": b"XYZ \0\0\0\0" + _s15_fixed16(0.2920, 0.6922, 0.0419),
        b"bXYZ": b"XYZ \0\0\0\0" + _s15_fixed16(0.1571, 0.0666, 0.7841),
        b"cprt": b"text\0\0\0\0" + b"none\0",
    }
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags.update({b"rTRC": curve, b"gTRC": curve, b"bTRC": curve})
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags.items():
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + bytes(12)
              + b"acsp" + bytes(24) + struct.pack(">I", 0) + _s15_fixed16(0.9642, 1.0, 0.8249) + bytes(48))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def test_embedded_colour_profile_is_converted_to_srgb(tmp_path):
    """A Display-P3-tagged photo is read in sRGB values: checked against the P3 -> sRGB matrix worked
    out here (linearise by the profile's gamma, 3x3 matrix in linear light, sRGB's transfer curve)."""
    p3 = np.array([[[200, 100, 50], [40, 160, 220], [128, 128, 128]]], np.uint8)
    tagged, untagged = tmp_path / "p3.png", tmp_path / "plain.png"
    Image.fromarray(p3).save(tagged, icc_profile=display_p3_profile())
    Image.fromarray(p3).save(untagged)
    linear = (p3 / 255.0) ** 2.2
    p3_to_srgb = np.array([[1.2249, -0.2249, 0.0], [-0.0421, 1.0421, 0.0], [-0.0196, -0.0786, 1.0983]])
    srgb_linear = np.clip(linear @ p3_to_srgb.T, 0, 1)
    expected = np.where(srgb_linear <= 0.0031308, 12.92 * srgb_linear, 1.055 * srgb_linear ** (1 / 2.4) - 0.055) * 255
    decoded = load_image(tagged)
    assert np.abs(decoded.astype(float) - expected).max() <= 3, (decoded, expected.round())
    assert np.abs(decoded.astype(int) - p3.astype(int)).max() >= 10  # the conversion did something
    np.testing.assert_array_equal(load_image(untagged), p3)  # no profile: values as stored


def test_unreadable_colour_profile_is_ignored_with_a_notice(tmp_path):
    path = tmp_path / "broken.png"
    Image.fromarray(np.full((4, 4, 3), 90, np.uint8)).save(path, icc_profile=b"not a profile at all")
    image, notices = read_image(path)
    assert (image == 90).all() and any("colour profile could not be read" in notice for notice in notices)
