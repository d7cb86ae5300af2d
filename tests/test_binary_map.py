"""Packing, display and pixel mapping of binary maps; the binary_map CLI."""

from __future__ import annotations

import numpy as np
import pytest

from binmap_tf.binary_map.backbones import GridGeometry
from binmap_tf.binary_map.maps import BinaryMap, codes_to_image, pack_bits, unpack_codes
from binmap_tf.cli.binary_map import main


def test_pack_bits_puts_bit_zero_first():
    assert pack_bits(np.array([1, 0, 0, 0, 0, 0, 0, 1])) == 129
    codes = np.random.default_rng(0).integers(0, 2**24, 50)
    np.testing.assert_array_equal(pack_bits(unpack_codes(codes, 24)), codes)


def test_display_grey_for_8_bits_and_rgb_for_24():
    np.testing.assert_array_equal(codes_to_image(np.array([0, 255]), 8), [0, 255])
    assert codes_to_image(np.array([1]), 1)[0] == 255
    rgb = codes_to_image(np.array([0xFF8001]), 24)
    np.testing.assert_array_equal(rgb, [[255, 128, 1]])


def test_pixel_bits_follow_geometry():
    bits = np.zeros((2, 3, 1), np.uint8)
    bits[1, 2, 0] = 1  # bottom-right cell
    binary_map = BinaryMap(bits=bits, logits=bits.astype(np.float32), scale=1.0, image_shape=(20, 30),
                           geometry=GridGeometry(stride=10.0, offset=4.5, receptive_field=10.0))
    pixels = binary_map.pixel_bits()[..., 0]
    assert pixels.shape == (20, 30)
    assert pixels[10:, 20:].all() and not pixels[:10].any() and not pixels[:, :20].any()


def test_cli_writes_maps_and_reports_bad_files(tmp_path, bsds_image_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    status = main([str(bsds_image_path), str(bad), "--out", str(tmp_path / "out")])
    assert status == 1
    stem = bsds_image_path.stem
    assert (tmp_path / "out" / f"{stem}_binary_map.png").exists()
    assert np.load(tmp_path / "out" / f"{stem}_binary_map.npy").shape == (21, 31, 8)
    assert "broken.jpg" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind


def test_cli_help_exits_cleanly():
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
