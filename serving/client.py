"""gRPC client of the served binary-map model (TF Serving or :mod:`serving.server`).

The CNN runs on the server; the client returns the same :class:`~binmap_tf.binary_map.maps.BinaryMap`
objects as the local :class:`~binmap_tf.binary_map.model.BinaryMapper`, and :meth:`BinmapClient.segment`
merges superpixels on the host with :func:`binmap_tf.segmentation.pipeline.segment`, so served and local
segmentations agree. A client built with ``edges=True`` asks the ``with_edges`` signature and its
maps carry HED's edge map, as a local ``BinaryMapper(edges=True)``'s do: the merge hierarchy
(hand-set or learned) needs it; :meth:`BinmapClient.segment` asks for it only when it does.

>>> client = BinmapClient("localhost:8500")  # doctest: +SKIP
>>> result = client.segment(image, superpixels="egs", hamming=0)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import random
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from binmap_tf.binary_map.maps import BinaryMap, edges_at
from binmap_tf.binary_map.tiling import DEFAULT_MAX_TILE_PIXELS, over_tile_budget, plan_tiles, stitch_tiles
from binmap_tf.common.images import MAX_PIXELS, ImageError, as_rgb_uint8, check_size, map_in_shape_batches
from serving.protocol import (
    BIT_ORDER,
    DEFAULT_MODEL_NAME,
    EDGES_OUTPUT,
    EDGES_SIGNATURE,
    ENCODED_EDGES_SIGNATURE,
    ENCODED_INPUT,
    GEOMETRY_OUTPUT,
    GRPC_OPTIONS,
    IMAGES_INPUT,
    SIGNATURES,
    ModelInfo,
)
from serving.retry import RetryPolicy

if TYPE_CHECKING:
    from binmap_tf.segmentation.pipeline import SegmentationResult

# Seconds a request may take by default. Measured (benchmarks/results/serving_loopback_cpu.json):
# 8 concurrent clients sending 321x481 images to the CPU loopback server, whose queue makes them
# take turns, waited p50 13.1 s, p99 21.3 s, at most 23.8 s, on 2 cores shared with other jobs
# (load average 11); one pass there takes ~0.44 s unloaded, so 8 clients need ~4 s. The old 10 s
# would have failed most of those requests; 30 s covers the worst measured one, matches the
# server's queue bound (64 images, ~28 s of unloaded work), and still reports a hung server
# within half a minute. An unreachable server fails at once (UNAVAILABLE), not after the deadline.
DEFAULT_TIMEOUT = 30.0

NO_EDGES_HINT = ("the served model has no edge map (no '{signature}' signature), which the merge hierarchy and "
                 "watershed superpixels need: it was exported before edges were served, or from a backbone "
                 "without one; re-export it with `binmap-export --backbone vgg16-hed`, or merge "
                 "adjacent/global without edges")
START_HINT = ("start TF Serving with `docker compose -f serving/docker-compose.yml up -d` on a GPU host, or "
              "the local test server with `binmap-serve --model-dir serving/models/binmap --port {port}`")


class ServingError(RuntimeError):
    """A request to the model server failed; the message says why and what to do.

    ``retryable`` says whether sending the same request again later may succeed.
    """

    retryable: bool = False


class ServerUnavailableError(ServingError):
    """Nothing answers at the target (server down, wrong host or port), or it refused the call for now."""

    retryable = True


class ServerBusyError(ServingError):
    """The server's request queue is full (RESOURCE_EXHAUSTED); retry after a short wait."""

    retryable = True


class DeadlineExceededError(ServingError, TimeoutError):
    """The server did not answer within the client's timeout (overloaded or hung: a later try may succeed)."""

    retryable = True


class ModelNotFoundError(ServingError, LookupError):
    """The server does not serve the requested model name or version."""


class InvalidInputError(ServingError, ValueError):
    """The input is not an image the model takes (rejected by the client or by the server)."""


@functools.lru_cache(maxsize=16)
def _model_info(text: bytes) -> ModelInfo:
    """Parse (once per distinct string) the ``geometry`` output of a response."""
    info = ModelInfo.from_json(text)
    if info.bit_order != BIT_ORDER:
        raise ServingError(f"the server's model packs bits {info.bit_order}, this client reads {BIT_ORDER}; "
                           "update binmap_tf on the client or re-export the model")
    return info


def _prepare(image: np.ndarray, max_pixels: int) -> np.ndarray:
    """``image`` as uint8 RGB (H, W, 3), or :class:`InvalidInputError` naming the problem."""
    try:
        rgb = as_rgb_uint8(image)
        check_size(rgb, max_pixels=max_pixels)
    except ImageError as error:
        raise InvalidInputError(str(error)) from error
    return rgb


# An image sent whole (max_tile_pixels=None) is one pass on the server, so the client keeps the
# limit under which one pass fits in memory; sent in tiles, images go up to the package's limit.
SERVED_MAX_PIXELS = 4096 * 4096
# Side of the blank image whose response gives a client the served model's geometry before its
# first tiled image (every backbone takes it: alexnet at scale 3.4 needs 67 pixels).
PROBE_SIDE = 256


class BinmapClient:
    """Binary maps (and segmentations) from a served ``binmap`` model over gRPC.

    Parameters
    ----------
    target : str
        ``host:port`` of the gRPC endpoint (TF Serving's default is 8500).
    model : str
        Served model name (``serving/models.config``).
    version : int or None
        Pin a model version; None asks for the latest the server has.
    timeout : float
        Seconds a request may take before :class:`DeadlineExceededError` (default
        :data:`DEFAULT_TIMEOUT`, which covers queueing behind 8 concurrent clients).
    edges : bool
        Ask for HED's edge map too (the ``with_edges`` signature), as ``BinaryMapper(edges=True)``
        does locally: the merge hierarchy needs it. Off by default: it is about 20 times the bytes
        of the codes.
    max_tile_pixels : int or None
        An image whose resized pixels exceed this is sent in overlapping tiles, one request each,
        and their maps are stitched as :class:`~binmap_tf.binary_map.model.BinaryMapper` stitches its passes:
        served and local maps then agree for every size, and no request exceeds the budget (the
        server's ``--max-pixels``). Default the local one, 1 MP; None sends every image whole
        (up to :data:`SERVED_MAX_PIXELS`), for a server with the memory for it.
    retry : RetryPolicy
        How a request that failed with a retryable error (:class:`ServerUnavailableError`,
        :class:`ServerBusyError`, :class:`DeadlineExceededError`) is sent again: bounded attempts,
        exponential backoff with jitter (:mod:`serving.retry`; ``RetryPolicy(attempts=1)`` turns it off).
        When a request has used up its attempts, the client takes the server for down: later
        requests try once (no waits) until one succeeds, so a collection whose server is gone for
        good fails image after image at once instead of waiting out every image's retries.

    The client is thread-safe; a call may be used as ``mapper`` of :func:`binmap_tf.segmentation.pipeline.segment`.
    """

    def __init__(self, target: str = "localhost:8500", model: str = DEFAULT_MODEL_NAME,
                 version: int | None = None, timeout: float = DEFAULT_TIMEOUT, edges: bool = False,
                 max_tile_pixels: int | None = DEFAULT_MAX_TILE_PIXELS, retry: RetryPolicy = RetryPolicy()) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if max_tile_pixels is not None and max_tile_pixels < 1:
            raise ValueError(f"max_tile_pixels must be a positive number of pixels or None, got {max_tile_pixels}")
        self.target = target
        self.model = model
        self.version = version
        self.timeout = float(timeout)
        self.edges = edges
        self.max_tile_pixels = max_tile_pixels
        self.retry = retry
        self._info: ModelInfo | None = None  # the served model's, from the latest response
        self._random = random.Random()  # seeded by the OS: workers that lose the server together spread out
        self._server_down = False  # the last request used up its attempts (see ``retry``)
        # gRPC reconnects a broken channel with its own backoff, growing to 120 s by default: capped
        # at the retries' longest wait, the channel is reconnecting by the time a retry is sent.
        reconnect = (("grpc.max_reconnect_backoff_ms", max(1, round(retry.max_delay * 1000))),)
        self._channel = grpc.insecure_channel(target, options=GRPC_OPTIONS + reconnect)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    # -- maps and segmentations ------------------------------------------------------------
    def __call__(self, image: np.ndarray) -> BinaryMap:
        return self.binary_map(image)

    def binary_map(self, image: np.ndarray, edges: bool | None = None) -> BinaryMap:
        """Binary map of one image (grey/RGB/RGBA, uint8 or floats in [0, 1]), computed by the server;
        ``edges`` (default: the client's) asks for the edge map too."""
        return self.binary_maps([image], edges)[0]

    def binary_maps(self, images: Sequence[np.ndarray], edges: bool | None = None) -> list[BinaryMap]:
        """Binary maps of several images; equal-sized images share one request (one batch), images
        over ``max_tile_pixels`` are sent in tiles."""
        edges = self.edges if edges is None else edges
        limit = SERVED_MAX_PIXELS if self.max_tile_pixels is None else MAX_PIXELS
        return map_in_shape_batches([_prepare(image, limit) for image in images],
                                    functools.partial(self._batch_maps, edges=edges), alone=self._over_budget,
                                    run_alone=functools.partial(self._map_tiled, edges=edges))

    def model_info(self) -> ModelInfo:
        """The served model's geometry: from the latest response, or asked with a blank image."""
        if self._info is None:
            outputs = self.predict(np.zeros((1, PROBE_SIDE, PROBE_SIDE, 3), np.uint8))
            self._info = _model_info(outputs[GEOMETRY_OUTPUT][0])
        return self._info

    def _over_budget(self, image: np.ndarray) -> bool:
        """Whether ``image`` is sent in tiles (see ``max_tile_pixels``)."""
        return self.max_tile_pixels is not None and \
            over_tile_budget(image.shape[:2], self.model_info().scale, self.max_tile_pixels)

    def _map_tiled(self, image: np.ndarray, edges: bool) -> BinaryMap:
        """Map of an image over ``max_tile_pixels``: one request per tile of the local mapper's plan,
        stitched alike. Sent whole when the export did not record the tiling geometry (an older
        version) or its ``scale`` allows no aligned tiles."""
        info = self.model_info()
        context = info.tiling_geometry
        plan = None if context is None else plan_tiles(image.shape[:2], self.max_tile_pixels, context, info.scale)
        if plan is None:
            return self._batch_maps(image[None], edges)[0]

        def tile(rows: slice, cols: slice) -> dict[str, np.ndarray]:
            outputs = {name: value[0] for name, value in self.predict(image[None, rows, cols], edges).items()}
            if _model_info(outputs[GEOMETRY_OUTPUT]) != info:
                self._info = None
                raise ServingError(f"{self.target} switched model versions while this image's tiles were sent; "
                                   "send it again")
            return outputs

        return stitch_tiles(image.shape[:2], plan, tile, info.geometry, info.scale)

    def _batch_maps(self, batch: np.ndarray, edges: bool) -> list[BinaryMap]:
        """Binary maps of a stack of equal-shaped images, one request."""
        outputs = self.predict(batch, edges)
        return [self._binary_map(outputs, row, batch.shape[1:3]) for row in range(len(batch))]

    def segment(self, image: np.ndarray, **options: Any) -> "SegmentationResult":
        """Served binary map + host-side superpixels and merging: :func:`binmap_tf.segmentation.pipeline.segment`
        with ``options``; the edge map is requested when they need it."""
        from binmap_tf.segmentation.pipeline import needs_edges, segment

        edges = needs_edges(options.get("superpixels"), options.get("merge"))
        return segment(image, functools.partial(self.binary_map, edges=edges), **options)

    def _binary_map(self, outputs: dict[str, np.ndarray], row: int, image_shape: tuple[int, int]) -> BinaryMap:
        info = self._info = _model_info(outputs[GEOMETRY_OUTPUT][row])
        edges = outputs.get(EDGES_OUTPUT)
        return BinaryMap(bits=outputs["bits"][row], logits=outputs["logits"][row], geometry=info.geometry,
                         scale=info.scale, image_shape=tuple(image_shape),
                         edges=None if edges is None else edges_at(edges[row], image_shape))

    # -- raw requests ----------------------------------------------------------------------
    def predict(self, images: np.ndarray, edges: bool = False) -> dict[str, np.ndarray]:
        """Raw outputs of ``serving_default`` (``with_edges`` with ``edges``) for a uint8 batch ``(b, H, W, 3)``."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise InvalidInputError(f"expected a uint8 batch of RGB images (b, H, W, 3), got {images.dtype} "
                                    f"{images.shape}; convert single images with binmap_tf.common.images.as_rgb_uint8")
        return self._predict(SIGNATURES[False, edges], IMAGES_INPUT, tf.make_tensor_proto(images))

    def predict_encoded(self, files: Sequence[bytes], edges: bool = False) -> dict[str, np.ndarray]:
        """Raw outputs of ``encoded`` (``encoded_with_edges`` with ``edges``) for JPEG/PNG file contents,
        decoded by the server (all of one size)."""
        if not files or not all(isinstance(data, bytes) for data in files):
            raise InvalidInputError("expected a non-empty list of encoded image files as bytes")
        return self._predict(SIGNATURES[True, edges], ENCODED_INPUT,
                             tf.make_tensor_proto(np.array(list(files), dtype=object)))

    def signatures(self) -> dict[str, Any]:
        """The served signatures, ``name -> SignatureDef`` (from ``GetModelMetadata``)."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._set_spec(request.model_spec)
        response = self._call(self._stub.GetModelMetadata, request)
        defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(defs)
        return dict(defs.signature_def)

    def _predict(self, signature: str, input_name: str, tensor: tensor_pb2.TensorProto) -> dict[str, np.ndarray]:
        request = predict_pb2.PredictRequest()
        self._set_spec(request.model_spec, signature)
        request.inputs[input_name].CopyFrom(tensor)
        response = self._call(self._stub.Predict, request, signature)
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def _set_spec(self, spec: model_pb2.ModelSpec, signature: str | None = None) -> None:
        spec.name = self.model
        if self.version is not None:
            spec.version.value = self.version
        if signature is not None:
            spec.signature_name = signature

    def _call(self, method: Callable, request: Any, signature: str | None = None) -> Any:
        """Send ``request`` (to ``signature``), again after a retryable failure as ``retry`` says; turn
        gRPC failures into :class:`ServingError` subclasses whose message counts the attempts."""
        attempts = 1 if self._server_down else self.retry.attempts
        start, attempt = time.monotonic(), 0
        while True:
            attempt += 1
            try:
                response = method(request, timeout=self.timeout)
            except grpc.RpcError as rpc_error:
                error = self._error(rpc_error.code(), rpc_error.details(), signature)
                if not error.retryable:
                    raise error from rpc_error
                if attempt < attempts:
                    time.sleep(self.retry.delay(attempt - 1, self._random))
                    continue
                raise self._give_up(error, attempts, time.monotonic() - start) from rpc_error
            self._server_down = False
            return response

    def _give_up(self, error: ServingError, attempts: int, seconds: float) -> ServingError:
        """``error``, its message saying how long the request tried; later requests try once (see ``retry``)."""
        if attempts < self.retry.attempts:
            tried = "1 attempt: an earlier request used up its retries, so requests try once until the server answers"
        else:
            tried = f"{attempts} attempt(s) over {seconds:.1f} s"
        self._server_down = True
        error.args = (f"{error} [{tried}; more --retry-attempts or a longer --retry-max-delay wait longer]",)
        return error

    def _error(self, code: grpc.StatusCode, details: str, signature: str | None = None) -> ServingError:
        model = self.model if self.version is None else f"{self.model} version {self.version}"
        if code == grpc.StatusCode.UNAVAILABLE:
            port = self.target.rsplit(":", 1)[-1]
            return ServerUnavailableError(f"the model server at {self.target} is unavailable ({details}); "
                                          "if it is overloaded retry later, if nothing runs there "
                                          + START_HINT.format(port=port))
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return ServerBusyError(f"{self.target} is busy ({details}); retry after a short wait")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceededError(f"{self.target} did not answer within timeout={self.timeout:g} s; "
                                         "raise the timeout, send fewer or smaller images, or check the server load")
        if code == grpc.StatusCode.NOT_FOUND:
            return ModelNotFoundError(f"{self.target} does not serve model {model} ({details}); check the name in "
                                      "serving/models.config and the exported version folders")
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return InvalidInputError(f"the server rejected the input: {details}")
        if code == grpc.StatusCode.FAILED_PRECONDITION and signature in (EDGES_SIGNATURE, ENCODED_EDGES_SIGNATURE):
            return ServingError(f"{self.target}, model {model}: " + NO_EDGES_HINT.format(signature=signature)
                                + f" ({details})")
        return ServingError(f"{code.name} from {self.target} for model {model}: {details}")

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "BinmapClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def connect(target: str, **options: Any) -> BinmapClient:
    """A client of the model served at ``target`` (``BinmapClient`` options), asked for its signatures
    once up front so that a wrong address or model name, or a model without the edge map an
    ``edges=True`` client needs, fails here with a :class:`ServingError`, not on the first image.
    Command lines pass it as the ``mapper`` of :func:`binmap_tf.segmentation.pipeline.segment`."""
    client = BinmapClient(target, **options)
    try:
        served = client.signatures()
    except ServingError:
        client.close()
        raise
    if client.edges and EDGES_SIGNATURE not in served:
        client.close()
        raise ServingError(f"{target}: " + NO_EDGES_HINT.format(signature=EDGES_SIGNATURE))
    return client
