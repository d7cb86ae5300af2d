"""The shared label helpers: checks, renumbering 0..n-1, graph components."""

from __future__ import annotations

import numpy as np
import pytest

from binmap_tf.segmentation.labels import channel_sums, check_labels, connected_groups, sequential_labels


def test_sequential_labels_renumber_by_value_and_keep_sequential_ones():
    labels, n = sequential_labels(np.array([[5, 7], [7, 2]]))
    np.testing.assert_array_equal(labels, [[1, 2], [2, 0]])
    assert n == 3 and labels.dtype == np.int32
    already = np.array([[0, 1], [2, 1]], np.int32)
    assert sequential_labels(already)[0] is already
    huge, n = sequential_labels(np.array([[-4, 10**12]]))  # outside the lookup table's range
    np.testing.assert_array_equal(huge, [[0, 1]])
    assert n == 2


def test_connected_groups_number_components_by_smallest_member():
    np.testing.assert_array_equal(connected_groups(5, np.array([[3, 4], [0, 2]])), [0, 1, 0, 2, 2])
    np.testing.assert_array_equal(connected_groups(3, np.empty((0, 2), int)), [0, 1, 2])


def test_check_labels_names_the_problem():
    with pytest.raises(ValueError, match="superpixels must be >= 0"):
        check_labels(np.array([[0, -1]]), "superpixels")
    with pytest.raises(ValueError, match="2-D integer"):
        check_labels(np.zeros((2, 2), np.float32))


def test_channel_sums_add_each_channel_per_region():
    values = np.array([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0]])
    np.testing.assert_array_equal(channel_sums(np.array([1, 0, 1]), values, 3), [[2, 20], [5, 50], [0, 0]])
