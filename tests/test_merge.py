"""Code assignment (majority vote, grid geometry), adjacency and merging of superpixels."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label as connected_regions

from binmap_tf.binary_map.backbones import GridGeometry
from binmap_tf.binary_map.maps import BinaryMap
from binmap_tf.segmentation.merge import adjacency, group_superpixels, merge_superpixels, superpixel_codes

# Superpixels 0 | 1 | 2 side by side, 0 and 2 not touching.
ROW_OF_THREE = np.repeat(np.repeat(np.array([[0, 1, 2]]), 4, axis=0), 4, axis=1)


def block_labels(rng: np.random.Generator, blocks: tuple[int, int], size: int) -> np.ndarray:
    """Superpixels as ``size``-pixel square blocks with shuffled labels ``0 .. n-1``."""
    n = blocks[0] * blocks[1]
    grid = rng.permutation(n).reshape(blocks)
    return np.kron(grid, np.ones((size, size), np.int64))


def test_majority_vote_per_bit_with_ties_to_one():
    superpixels = np.array([[0, 0, 0, 1, 1]])
    pixel_bits = np.array([[[1, 0], [1, 1], [0, 0], [0, 1], [1, 0]]], np.uint8)
    np.testing.assert_array_equal(superpixel_codes(superpixels, pixel_bits), [[1, 0], [1, 1]])


def test_unused_label_gets_zero_code():
    codes = superpixel_codes(np.array([[0, 2]]), np.ones((1, 2, 3), np.uint8))
    np.testing.assert_array_equal(codes, [[1, 1, 1], [0, 0, 0], [1, 1, 1]])


def test_codes_follow_binary_map_geometry():
    # 2x3 grid of 10-pixel cells on a 20x30 image; each cell has its own 3-bit code.
    grid_bits = np.array([[[0, 0, 1], [0, 1, 0], [0, 1, 1]],
                          [[1, 0, 0], [1, 0, 1], [1, 1, 0]]], np.uint8)
    binary_map = BinaryMap(bits=grid_bits, logits=grid_bits.astype(np.float32), scale=1.0,
                           image_shape=(20, 30), geometry=GridGeometry(stride=10.0, offset=4.5, receptive_field=10.0))
    superpixels = np.zeros((20, 30), np.int64)
    superpixels[:, 10:] = 1       # 1: cells (0, 1) and (1, 1), half each: a tie per differing bit
    superpixels[12:, 20:] = 2     # 2: 8 rows of cell (1, 2) only
    superpixels[:12, 20:] = 3     # 3: 10 rows of cell (0, 2) and 2 rows of cell (1, 2): majority (0, 2)
    codes = superpixel_codes(superpixels, binary_map.bits, binary_map.cell_index())
    np.testing.assert_array_equal(codes, [[1, 0, 1],   # cells 001 and 100, half each: ties give 1
                                          [1, 1, 1],
                                          [1, 1, 0],
                                          [0, 1, 1]])
    # Same answer as voting over the upsampled per-pixel bits.
    np.testing.assert_array_equal(superpixel_codes(superpixels, binary_map.pixel_bits()), codes)


def test_cell_and_pixel_votes_agree_on_random_data():
    rng = np.random.default_rng(1)
    superpixels = block_labels(rng, (6, 9), 7)
    grid = rng.integers(0, 2, (5, 8, 16)).astype(np.uint8)
    cell_index = (np.arange(42)[:, None] // 9) * 8 + np.arange(63)[None, :] // 8
    pixel_bits = grid.reshape(-1, 16)[cell_index]
    np.testing.assert_array_equal(superpixel_codes(superpixels, grid, cell_index),
                                  superpixel_codes(superpixels, pixel_bits))


def test_code_assignment_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        superpixel_codes(np.zeros((4, 4), int), np.zeros((2, 2, 8), np.uint8))
    with pytest.raises(ValueError, match="outside"):
        superpixel_codes(np.zeros((4, 4), int), np.zeros((2, 2, 8), np.uint8), np.full((4, 4), 4))


def test_adjacency_counts_diagonal_neighbours_with_connectivity_2():
    labels = np.array([[0, 1],
                       [1, 2]])  # 0 and 2 touch only diagonally
    np.testing.assert_array_equal(adjacency(labels, connectivity=1), [[0, 1], [1, 2]])
    np.testing.assert_array_equal(adjacency(labels), [[0, 1], [0, 2], [1, 2]])
    anti = np.array([[1, 0],
                     [2, 1]])  # 0 and 2 touch across the other diagonal
    np.testing.assert_array_equal(adjacency(anti), [[0, 1], [0, 2], [1, 2]])
    assert adjacency(np.zeros((3, 3), int)).shape == (0, 2)


def test_equal_codes_merge_and_different_codes_do_not():
    codes = np.array([[1, 0, 1], [1, 0, 1], [0, 1, 1]], np.uint8)
    labels = merge_superpixels(ROW_OF_THREE, codes)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels[0, ::4], [0, 0, 1])


def test_hamming_threshold():
    codes = np.array([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1]], np.uint8)  # distances 1 and 1 (2 end to end)
    np.testing.assert_array_equal(merge_superpixels(ROW_OF_THREE, codes, hamming=0)[0, ::4], [0, 1, 2])
    np.testing.assert_array_equal(merge_superpixels(ROW_OF_THREE, codes, hamming=1)[0, ::4], [0, 0, 0])
    apart = np.array([[0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]], np.uint8)  # distances 2 and 4
    np.testing.assert_array_equal(merge_superpixels(ROW_OF_THREE, apart, hamming=1)[0, ::4], [0, 1, 2])
    np.testing.assert_array_equal(merge_superpixels(ROW_OF_THREE, apart, hamming=2)[0, ::4], [0, 0, 1])


def test_global_mode_merges_equal_codes_that_do_not_touch():
    codes = np.array([[1, 1], [0, 0], [1, 1]], np.uint8)
    np.testing.assert_array_equal(merge_superpixels(ROW_OF_THREE, codes, mode="adjacent")[0, ::4], [0, 1, 2])
    glob = merge_superpixels(ROW_OF_THREE, codes, mode="global")[0, ::4]
    assert glob[0] == glob[2] != glob[1] and set(glob) == {0, 1}


def test_global_mode_joins_chains_of_close_codes():
    codes = np.array([[0, 0], [0, 1], [1, 1], [1, 0]], np.uint8)
    superpixels = np.array([[0, 1, 2, 3]])
    assert len(np.unique(merge_superpixels(superpixels, codes, mode="global"))) == 4
    assert len(np.unique(merge_superpixels(superpixels, codes, hamming=1, mode="global"))) == 1


def test_diagonal_neighbours_merge_only_with_8_connectivity():
    superpixels = np.array([[0, 1],
                            [1, 2]])
    codes = np.array([[1], [0], [1]], np.uint8)
    assert merge_superpixels(superpixels, codes)[1, 1] == 0
    assert merge_superpixels(superpixels, codes, connectivity=1)[1, 1] == 2


@pytest.mark.parametrize("mode", ["adjacent", "global"])
@pytest.mark.parametrize("hamming", [0, 1, 2])
def test_segments_are_unions_of_whole_superpixels(mode, hamming):
    rng = np.random.default_rng(hamming)
    superpixels = block_labels(rng, (10, 12), 3)
    n = int(superpixels.max()) + 1
    codes = rng.integers(0, 2, (n, 3)).astype(np.uint8)  # few distinct codes, so many merges
    segment_of = group_superpixels(superpixels, codes, hamming, mode)
    labels = merge_superpixels(superpixels, codes, hamming, mode)
    np.testing.assert_array_equal(labels, segment_of[superpixels])  # one segment per superpixel
    m = int(labels.max()) + 1
    assert m <= n and np.bincount(labels.ravel()).all()  # sequential 0 .. m-1
    distance = np.count_nonzero(codes[:, None] != codes[None], axis=-1)
    same_segment = segment_of[:, None] == segment_of[None]
    if mode == "global":  # codes within the threshold always share a segment
        assert same_segment[distance <= hamming].all()
    else:  # adjacent merging keeps every segment one 8-connected region
        assert connected_regions(labels, background=-1, connectivity=2).max() == m
    if hamming == 0:  # a segment never mixes codes
        assert (distance[same_segment] == 0).all()


def test_merge_rejects_bad_options():
    codes = np.zeros((3, 2), np.uint8)
    with pytest.raises(ValueError, match="merge mode"):
        merge_superpixels(ROW_OF_THREE, codes, mode="nearest")
    with pytest.raises(ValueError, match="hamming"):
        merge_superpixels(ROW_OF_THREE, codes, hamming=-1)
    with pytest.raises(ValueError, match="a row for each"):
        merge_superpixels(ROW_OF_THREE, codes[:2])
    with pytest.raises(ValueError, match="connectivity"):
        merge_superpixels(ROW_OF_THREE, codes, connectivity=3)
    with pytest.raises(ValueError, match=">= 0"):
        merge_superpixels(ROW_OF_THREE - 1, codes)
