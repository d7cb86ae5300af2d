"""Multi-scale edges (experiments/multiscale_edges.py) with a stand-in mapper whose edges are the red channel."""

from __future__ import annotations

import numpy as np

from experiments.multiscale_edges import edges_of, multiscale_edges


class RedEdges:
    """A mapper whose "edges" are the red channel in [0, 1], at half the input's size (as HED's are not,
    so that bringing them back to the image's size is exercised)."""

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return image

    def forward(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {"edges": images[:, ::2, ::2, :1].astype(np.float32) / 255.0}


def left_to_right_ramp() -> np.ndarray:
    image = np.zeros((8, 12, 3), np.uint8)
    image[..., 0] = np.linspace(0, 255, 12)[None, :].round()
    return image


def test_a_mirrored_pass_is_mirrored_back():
    image = left_to_right_ramp()
    plain, mirrored = edges_of(RedEdges(), image, 1.0), edges_of(RedEdges(), image, 1.0, flip=True)
    assert plain.shape == mirrored.shape == image.shape[:2]
    assert plain[:, -1].mean() > plain[:, 0].mean() and mirrored[:, -1].mean() > mirrored[:, 0].mean()
    np.testing.assert_allclose(mirrored, plain, atol=0.1)


def test_the_cached_map_stands_for_scale_one_and_every_scale_comes_back_at_image_size():
    image = left_to_right_ramp()
    single = np.full(image.shape[:2], 0.5, np.float32)
    assert np.array_equal(multiscale_edges(RedEdges(), image, single, (1.0,), flip=False), single)
    mean = multiscale_edges(RedEdges(), image, single, (0.5, 1.0, 2.0), flip=True)
    expected = np.mean([edges_of(RedEdges(), image, 0.5), single, edges_of(RedEdges(), image, 2.0),
                        edges_of(RedEdges(), image, 1.0, flip=True)], axis=0)
    np.testing.assert_allclose(mean, expected, rtol=1e-6)
