"""Low-level superpixels, the paper's step (b): EGS (Felzenszwalb) and SLIC, as label images;
and a watershed of the network's edge map, the first level of the learned hierarchy.

Both wrap scikit-image and return contiguous ``int32`` labels ``0 .. n-1`` (SLIC's default of
starting at 1 is turned off), so a label indexes rows of the per-superpixel code array
directly. Inputs go through :func:`binmap_tf.common.images.as_rgb_uint8` first: grey, RGB and RGBA
images, uint8 or floats in [0, 1], all work; grey images stay single-channel.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import numpy as np

from binmap_tf.common.images import as_rgb_uint8
from binmap_tf.segmentation.labels import sequential_labels
from binmap_tf.segmentation.resolution import upsample_labels

# The paper runs EGS with "the default parameters (sigma = 1.0, k = 100)".
EGS_SCALE = 100.0
EGS_SIGMA = 1.0
# Felzenszwalb's code has no default minimum size; 20 is its README example and scikit-image's
# default. On 321x481 BSDS500 images the defaults give 270-660 superpixels, ~440 on average
# (100007.jpg: 399, and 927 with no minimum size, mostly specks of a few pixels).
EGS_MIN_SIZE = 20
# Chosen so SLIC gives about as many superpixels as EGS with the defaults above (~400 on
# BSDS500 once connectivity is enforced), which keeps the two baselines comparable;
# compactness m = 10 as in Achanta et al.
SLIC_N_SEGMENTS = 500
SLIC_COMPACTNESS = 10.0
# Watershed of the HED edge map from its h-minima: h = 0.05 gave, on 50 BSDS500 val images, a
# higher upper bound than EGS k=100 with half the superpixels
# (benchmarks/results/first_level_bsds500_val.json).
WATERSHED_H = 0.05
# Larger images are segmented at this many pixels and the labels upsampled (with a warning):
# scikit-image's felzenszwalb needs about 330 bytes a pixel (float64 image, four edge costs
# and their argsort, int64 edge lists), so 3.1 MP costs ~1 GiB and 50 MP would need 16 GiB;
# the watershed (h-minima reconstruction, markers, flooding) about 120 bytes a pixel.
SUPERPIXEL_MAX_PIXELS = 2048 * 1536


def _as_input(image: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Normalise ``image`` to uint8 and return it with the ``channel_axis`` scikit-image needs."""
    array = np.asarray(image)
    grey = array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 2))
    if array.ndim == 3 and array.shape[-1] == 2:  # grey + alpha
        array = array[..., 0]
    rgb = as_rgb_uint8(array)
    return (rgb[..., 0], None) if grey else (rgb, -1)


def egs(image: np.ndarray, scale: float = EGS_SCALE, sigma: float = EGS_SIGMA,
        min_size: int = EGS_MIN_SIZE) -> np.ndarray:
    """Efficient graph-based segmentation (Felzenszwalb & Huttenlocher) as superpixels.

    Parameters
    ----------
    image : ndarray
        (H, W) grey or (H, W, 3|4) RGB(A) image, uint8 or floats in [0, 1].
    scale : float
        The paper's (and Felzenszwalb's) ``k``: larger gives larger segments. Default 100.
    sigma : float
        Width of the Gaussian smoothing applied before segmenting. Default 1.0.
    min_size : int
        Segments smaller than this many pixels are merged into a neighbour afterwards.
        Default 20: Felzenszwalb's code requires a value and its example uses 20.

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        Superpixel index ``0 .. n-1`` of every pixel; each superpixel is 8-connected.

    Notes
    -----
    The paper's EGS baseline is run with "the default parameters (sigma = 1.0, k = 100)"; these
    are this function's defaults. ``scale`` is ``k`` on the 0-255 intensity scale, as in the
    original code (scikit-image rescales internally). Unlike the original code, which segments
    each colour channel separately and intersects the results, scikit-image uses the Euclidean
    RGB distance as edge weight, so counts differ slightly from the published binary.

    References
    ----------
    .. [1] P. F. Felzenszwalb and D. P. Huttenlocher, "Efficient graph-based image
       segmentation", IJCV 59(2), 2004.

    Examples
    --------
    >>> from skimage import data
    >>> labels = egs(data.astronaut())
    >>> labels.dtype.name, int(labels.min())
    ('int32', 0)
    """
    from skimage.segmentation import felzenszwalb

    array, channel_axis = _as_input(image)
    _check_values("egs", {"scale": scale, "sigma": sigma, "min_size": min_size})
    return sequential_labels(felzenszwalb(array, scale=scale, sigma=sigma, min_size=int(min_size),
                                    channel_axis=channel_axis))[0]


def slic(image: np.ndarray, n_segments: int = SLIC_N_SEGMENTS, compactness: float = SLIC_COMPACTNESS,
         sigma: float = 0.0, start_label: int = 0) -> np.ndarray:
    """SLIC superpixels (Achanta et al.): k-means on colour and position, started on a grid.

    Parameters
    ----------
    image : ndarray
        (H, W) grey or (H, W, 3|4) RGB(A) image, uint8 or floats in [0, 1]; colour images are
        clustered in CIELAB.
    n_segments : int
        Number of initial centres (a grid); connectivity enforcement leaves fewer superpixels.
        Default 500: about 400 on a BSDS500 image, near what :func:`egs` gives by default.
    compactness : float
        The paper's ``m``: weight of spatial against colour distance. Default 10.
    sigma : float
        Gaussian pre-smoothing; 0 (default) as in the original SLIC code.
    start_label : int
        First label; 0 (default) so labels index code arrays, 1 for scikit-image's convention.

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        Superpixel index ``start_label .. start_label + n - 1``; connectivity is enforced, so
        every superpixel is one connected region.

    References
    ----------
    .. [1] R. Achanta, A. Shaji, K. Smith, A. Lucchi, P. Fua and S. Süsstrunk, "SLIC
       superpixels compared to state-of-the-art superpixel methods", TPAMI 34(11), 2012.

    Examples
    --------
    >>> from skimage import data
    >>> labels = slic(data.astronaut(), n_segments=100)
    >>> int(labels.min())
    0
    """
    from skimage.segmentation import slic as skimage_slic

    array, channel_axis = _as_input(image)
    _check_values("slic", {"n_segments": n_segments, "compactness": compactness, "sigma": sigma})
    labels = skimage_slic(array, n_segments=int(n_segments), compactness=compactness, sigma=sigma,
                          start_label=0, channel_axis=channel_axis)
    return sequential_labels(labels)[0] + np.int32(start_label)


def watershed(image: np.ndarray, edges: np.ndarray | None = None, h: float = WATERSHED_H) -> np.ndarray:
    """Superpixels from a watershed of an edge map (HED's, ``BinaryMap.edges``), flooded from its h-minima.

    Parameters
    ----------
    image : ndarray
        The image (only its height and width are checked against ``edges``).
    edges : ndarray of float, shape (H, W)
        Boundary probability in [0, 1] at image size; required.
    h : float
        Only regional minima deeper than ``h`` seed a basin, so flat noise in the edge map does
        not split regions; larger gives fewer, larger superpixels. Default :data:`WATERSHED_H`.

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        Superpixel index ``0 .. n-1`` of every pixel; basins meet on the ridges of the edge map,
        so superpixel borders follow the network's boundaries.
    """
    from scipy import ndimage
    from skimage.morphology import h_minima
    from skimage.segmentation import watershed as skimage_watershed

    if edges is None:
        raise ValueError("watershed superpixels need an edge map (a binary map with edges: BinaryMapper(edges=True))")
    surface = np.asarray(edges, dtype=np.float64)
    if surface.shape != np.shape(image)[:2]:
        raise ValueError(f"the edge map {surface.shape} does not match the image {np.shape(image)[:2]}")
    if h <= 0:
        raise ValueError(f"watershed needs h > 0, got {h}")
    # Not higra's watershed hierarchy by dynamics cut at h: that watershed cut on pixel edges gives other
    # basins (8 % fewer on 10 BSDS500 images) in 3.7x the time (benchmarks/hierarchy_higra.py), and the
    # shipped scorers were trained on these superpixels.
    markers, _ = ndimage.label(h_minima(surface, h))
    return sequential_labels(skimage_watershed(surface, markers))[0]


_METHODS = {"egs": egs, "slic": slic, "watershed": watershed}
# Methods that read the binary map's edge map (passed as ``edges``) rather than only the image.
EDGE_METHODS = ("watershed",)

# Valid range of every superpixel parameter: (description, test).
_RANGES = {
    "scale": ("> 0", lambda value: value > 0),
    "sigma": (">= 0", lambda value: value >= 0),
    "min_size": (">= 0", lambda value: value >= 0),
    "n_segments": (">= 1", lambda value: value >= 1),
    "compactness": ("> 0", lambda value: value > 0),
    "h": ("> 0", lambda value: value > 0),
}


def _check_values(method: str, params: dict[str, Any]) -> None:
    """``ValueError`` naming every parameter of ``method`` outside its valid range."""
    bad = [f"{name} {_RANGES[name][0]} (got {value!r})" for name, value in params.items()
           if name in _RANGES and not _RANGES[name][1](value)]
    if bad:
        raise ValueError(f"{method} superpixels need {', '.join(bad)}")
SUPERPIXEL_METHODS = tuple(_METHODS)


def superpixel_params(method: str, **params: Any) -> dict[str, Any]:
    """Every parameter ``method`` will run with: its defaults updated by ``params``.

    Raises ``ValueError`` for an unknown method or an option the method does not take
    (``start_label`` included: :func:`compute_superpixels` always starts at 0), so callers can
    check options before expensive work and record the settings actually used.

    Examples
    --------
    >>> superpixel_params("egs", scale=300)
    {'scale': 300, 'sigma': 1.0, 'min_size': 20}
    """
    if method not in _METHODS:
        raise ValueError(f"unknown superpixel method {method!r}; choose one of {SUPERPIXEL_METHODS}")
    defaults = {name: parameter.default
                for name, parameter in inspect.signature(_METHODS[method]).parameters.items()
                if name not in ("image", "start_label", "edges")}
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"{method} superpixels take {sorted(defaults)}, not {unknown}")
    _check_values(method, params)
    return {**defaults, **params}


def working_shape(shape: tuple[int, int], max_pixels: int | None = SUPERPIXEL_MAX_PIXELS) -> tuple[int, int]:
    """(height, width) superpixels of an image of ``shape`` are computed at: the image's own, or
    downscaled (aspect kept) to at most ``max_pixels``; None: always the image's own."""
    height, width = shape
    if max_pixels is None or height * width <= max_pixels:
        return height, width
    factor = math.sqrt(max_pixels / (height * width))
    return max(1, int(height * factor)), max(1, int(width * factor))


def compute_superpixels(image: np.ndarray, method: str = "egs", max_pixels: int | None = SUPERPIXEL_MAX_PIXELS,
                        edges: np.ndarray | None = None, **params: Any) -> np.ndarray:
    """Superpixels of ``image`` by ``method`` (``"egs"``, ``"slic"`` or ``"watershed"``), labels ``0 .. n-1``.

    ``params`` go to :func:`egs` (``scale``, ``sigma``, ``min_size``), :func:`slic`
    (``n_segments``, ``compactness``, ``sigma``) or :func:`watershed` (``h``; it also needs
    ``edges``, the binary map's edge map at the image's size); see :func:`superpixel_params`
    for the checks.
    An image over ``max_pixels`` (default :data:`SUPERPIXEL_MAX_PIXELS`) is segmented at
    :func:`working_shape` (image and edge map area-averaged) and the labels upsampled, with a
    warning: the parameters then apply at that resolution (``min_size`` counts its pixels).

    Examples
    --------
    >>> from skimage import data
    >>> labels = compute_superpixels(data.astronaut(), "slic", n_segments=50)
    >>> labels.shape
    (512, 512)
    """
    params = superpixel_params(method, **params)
    # The watershed reads the edge map (at the image's size), passed on and shrunk with the image.
    edge_map = {"edges": edges} if method in EDGE_METHODS else {}
    shape = np.shape(image)[:2]
    small = working_shape(shape, max_pixels)
    if small == shape or (edge_map and edges is None):  # (the watershed names a missing edge map)
        return _METHODS[method](image, **edge_map, **params)
    from PIL import Image

    array, _ = _as_input(image)
    warnings.warn(f"superpixels of the {shape[1]}x{shape[0]} image are computed at {small[1]}x{small[0]} "
                  f"(over {max_pixels} pixels) and upsampled", stacklevel=2)
    shrunk = np.asarray(Image.fromarray(array).resize(small[::-1], Image.Resampling.BOX))
    if edge_map:  # area-averaged like the image
        edge_map["edges"] = np.asarray(Image.fromarray(np.asarray(edges, np.float32), mode="F")
                                       .resize(small[::-1], Image.Resampling.BOX))
    return upsample_labels(_METHODS[method](shrunk, **edge_map, **params), shape)
