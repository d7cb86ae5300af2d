"""A loopback gRPC ``PredictionService`` for tests and local development.

It loads the latest exported version under ``--model-dir`` and answers ``Predict`` and
``GetModelMetadata`` the way TensorFlow Serving does (same protos, same status codes: NOT_FOUND
for an unknown model or version, INVALID_ARGUMENT for bad inputs, FAILED_PRECONDITION for an
unknown signature), and replays the export's warm-up requests on load. Concurrent requests of
one image size are batched through a bounded queue (:mod:`serving.batching`); a full queue
answers RESOURCE_EXHAUSTED. Every request is checked against ``--max-pixels`` before its
images are materialised, so an oversized photo gets INVALID_ARGUMENT instead of exhausting the
server's memory. It is no replacement for ``tensorflow_model_server``: no version polling, no REST.

``binmap-serve --model-dir serving/models/binmap --port 8500`` (:mod:`binmap_tf.cli.serve`)
"""

from __future__ import annotations

import io
import os
import warnings
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc
import numpy as np
import tensorflow as tf
from PIL import Image
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.batching import BatchingOptions, BatchScheduler, QueueFullError
from serving.export import SAME_SIZE_MESSAGE, read_warmup, versions
from serving.protocol import (
    ACTIVATION_BYTES_PER_PIXEL,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MODEL_NAME,
    GRPC_OPTIONS,
    IMAGES_SIGNATURE,
    WARMUP_FILE,
)

# TensorFlow's error codes are gRPC's status codes, number for number.
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}



@dataclass
class ServedModel:
    """One loaded version: its callable signatures and their ``SignatureDef`` protos."""

    name: str
    version: int
    signatures: dict[str, Callable]
    signature_defs: get_model_metadata_pb2.SignatureDefMap
    module: object  # the loaded SavedModel: owns the variables the signatures read

    @classmethod
    def load(cls, model_dir: str | os.PathLike, name: str = DEFAULT_MODEL_NAME, warmup: bool = True) -> "ServedModel":
        """Load the highest version under ``model_dir`` (TF Serving's default version policy)."""
        base = Path(model_dir)
        found = versions(base)
        if not found:
            raise FileNotFoundError(f"no model versions in {base}; export one with: "
                                    f"binmap-export --out {base}")
        folder = base / str(found[-1])
        loaded = tf.saved_model.load(str(folder))
        proto = saved_model_pb2.SavedModel.FromString((folder / "saved_model.pb").read_bytes())
        defs = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in proto.meta_graphs[0].signature_def.items():
            if not key.startswith("__"):  # the SavedModel's init op is no serving signature
                defs.signature_def[key].CopyFrom(signature_def)
        model = cls(name=name, version=found[-1], signatures=dict(loaded.signatures), signature_defs=defs,
                    module=loaded)
        warmup_file = folder / "assets.extra" / WARMUP_FILE
        if warmup and warmup_file.exists():
            for request in read_warmup(warmup_file):
                model.run(request)
        return model

    def run(self, request: predict_pb2.PredictRequest, max_pixels: int | None = None) -> dict[str, np.ndarray]:
        """Check and run one request at once (no queue); raises like :func:`check_request` or ``tf.errors.OpError``."""
        checked = check_request(request, self.signatures, DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels)
        return self.compute(checked.signature, checked.inputs)

    def compute(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """All outputs of ``signature`` for checked ``inputs`` (a batch, possibly of several requests)."""
        outputs = self.signatures[signature](**{name: tf.constant(value) for name, value in inputs.items()})
        return {name: value.numpy() for name, value in outputs.items()}


@dataclass(frozen=True)
class CheckedRequest:
    """A request's inputs as arrays, checked against the signature and the pixel limit."""

    signature: str
    inputs: dict[str, np.ndarray]
    size: int  # images
    image_shape: tuple[int, int]  # height, width of every image
    pixels: int


def check_request(request: predict_pb2.PredictRequest, signatures: dict[str, Callable],
                  max_pixels: int) -> CheckedRequest:
    """Check a request's signature, input names, dtypes, shapes and pixel count; decode its inputs.

    Raises ``KeyError`` (unknown signature) or ``ValueError`` (anything else), before any large
    allocation: the pixel count of a uint8 batch is read from the declared shape, and that of
    encoded files from their headers, so neither a huge declared shape nor a small file that
    decodes to a huge image can exhaust the server's memory.
    """
    name = request.model_spec.signature_name or IMAGES_SIGNATURE
    if name not in signatures:
        raise KeyError(f'Serving signature key "{name}" not found.')
    specs: dict[str, tf.TensorSpec] = signatures[name].structured_input_signature[1]
    sent, expected = set(request.inputs), set(specs)
    if sent != expected:
        raise ValueError(f"input size does not match signature: {len(sent)}!={len(expected)}. Sent extra: "
                         f"{sorted(sent - expected)}. Missing but required: {sorted(expected - sent)}.")
    (input_name, spec), = specs.items()  # both signatures take one batch of images
    proto = request.inputs[input_name]
    if proto.dtype != spec.dtype.as_datatype_enum:
        raise ValueError(f"Expects arg '{input_name}' to be {spec.dtype.name} but "
                         f"{tf.dtypes.as_dtype(proto.dtype).name} is provided")
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if proto.tensor_shape.unknown_rank or min(shape, default=0) < 0 or not spec.shape.is_compatible_with(shape):
        raise ValueError(f"input '{input_name}' must have shape {spec.shape}, got {shape}")
    if spec.dtype == tf.uint8:
        size, image_shape = shape[0], (shape[1], shape[2])
        _check_pixels(size, image_shape, max_pixels)  # before make_ndarray allocates the declared shape
    try:
        value = tf.make_ndarray(proto)
    except (TypeError, ValueError) as error:
        raise ValueError(f"input '{input_name}' is not a valid TensorProto: {error}") from None
    if spec.dtype == tf.string:
        size, image_shape = len(value), _encoded_shape(list(value))
        _check_pixels(size, image_shape, max_pixels)
    if size == 0:
        raise ValueError(f"input '{input_name}' holds no image; send at least one")
    return CheckedRequest(name, {input_name: value}, size, image_shape, size * image_shape[0] * image_shape[1])


def _check_pixels(size: int, image_shape: tuple[int, int], max_pixels: int) -> None:
    """``ValueError`` naming the limit and the fixes if ``size`` images of ``image_shape`` exceed ``max_pixels``."""
    height, width = image_shape
    pixels = size * height * width
    if pixels > max_pixels:
        per_image = max_pixels // max(size, 1)
        raise ValueError(
            f"request has {pixels} pixels ({size} image(s) of {height}x{width}), more than this server's limit "
            f"of {max_pixels} pixels per request (--max-pixels); downscale the images, e.g. with "
            f"binmap_tf.common.images.downscale_to_limit(image, {per_image}), send fewer images per request, or "
            "start the server with a larger --max-pixels if it has the memory (about "
            f"{ACTIVATION_BYTES_PER_PIXEL} bytes of activations per pixel)")


def _encoded_shape(files: list[bytes]) -> tuple[int, int]:
    """The (height, width) shared by encoded image files, read from their headers without decoding."""
    shapes = set()
    for index, data in enumerate(files):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the pixel limit decides
                with Image.open(io.BytesIO(data)) as image:
                    width, height = image.size
        except Image.DecompressionBombError as error:
            raise ValueError(f"image_bytes[{index}]: {error}; downscale it before sending") from None
        except (OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"image_bytes[{index}] is not a JPEG, PNG, BMP or GIF file ({error}); "
                             "send the file's bytes unchanged") from None
        shapes.add((height, width))
    if len(shapes) > 1:
        raise ValueError(SAME_SIZE_MESSAGE)
    return shapes.pop() if shapes else (0, 0)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``Predict`` and ``GetModelMetadata`` over one :class:`ServedModel`.

    ``Predict`` checks the request (``max_pixels``), queues it on ``scheduler`` and waits for its
    rows of the batch. ``before_predict`` (e.g. a sleep, in tests of client deadlines) runs first
    on every request for this model.
    """

    def __init__(self, model: ServedModel, scheduler: BatchScheduler, max_pixels: int = DEFAULT_MAX_PIXELS,
                 before_predict: Callable[[predict_pb2.PredictRequest], None] | None = None) -> None:
        self.model = model
        self.scheduler = scheduler
        self.max_pixels = max_pixels
        self.before_predict = before_predict

    def _check_spec(self, spec: model_pb2.ModelSpec, context: grpc.ServicerContext) -> None:
        """Abort with NOT_FOUND unless ``spec`` names this model (and, if given, this version)."""
        if spec.HasField("version"):
            wanted = f"Specific({spec.name}, {spec.version.value})"
            found = spec.name == self.model.name and spec.version.value == self.model.version
        elif spec.version_label:
            wanted, found = f"Label({spec.name}, {spec.version_label})", False
        else:
            wanted, found = f"Latest({spec.name})", spec.name == self.model.name
        if not found:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {wanted}")

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext):
        self._check_spec(request.model_spec, context)
        try:
            if self.before_predict is not None:
                self.before_predict(request)
            checked = check_request(request, self.model.signatures, self.max_pixels)
            outputs = self.scheduler.submit(checked.signature, checked.image_shape, checked.inputs, checked.size,
                                            checked.pixels, context.is_active).result()
        except KeyError as error:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, error.args[0])
        except ValueError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except QueueFullError as error:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
        except CancelledError:
            context.abort(grpc.StatusCode.CANCELLED, "the client gave up before the request ran")
        except tf.errors.OpError as error:
            context.abort(_GRPC_CODES.get(error.error_code, grpc.StatusCode.INTERNAL), error.message)
        names = list(request.output_filter) or sorted(outputs)
        unknown = sorted(set(names) - set(outputs))
        if unknown:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"output tensor alias not found in signature: "
                          f"{unknown}; outputs expected to be in the set {sorted(outputs)}")
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.model.name
        response.model_spec.version.value = self.model.version
        response.model_spec.signature_name = request.model_spec.signature_name or IMAGES_SIGNATURE
        for name in names:
            response.outputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(outputs[name])))
        return response

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
                         context: grpc.ServicerContext):
        self._check_spec(request.model_spec, context)
        unsupported = sorted(set(request.metadata_field) - {"signature_def"})
        if unsupported or not request.metadata_field:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"Metadata field(s) {unsupported or '[]'} not supported; ask for 'signature_def'")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.model.name
        response.model_spec.version.value = self.model.version
        response.metadata["signature_def"].Pack(self.model.signature_defs)
        return response


class LoopbackServer:
    """The servicer on a gRPC port (``port=0``: a free one); use as a context manager or start/stop.

    ``max_pixels`` bounds the pixels of one request and of one merged batch; ``batching`` sets
    the queue. Handler threads wait while their request is queued, so there is one per queued
    image plus one per image being computed (and a few for metadata calls); gRPC refuses calls
    beyond that with RESOURCE_EXHAUSTED instead of queueing them unseen.
    """

    def __init__(self, model_dir: str | os.PathLike, model_name: str = DEFAULT_MODEL_NAME, port: int = 0,
                 host: str = "127.0.0.1", warmup: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS,
                 batching: BatchingOptions = BatchingOptions()) -> None:
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        self.model = ServedModel.load(model_dir, model_name, warmup=warmup)
        self.scheduler = BatchScheduler(self.model.compute, batching, max_pixels)
        self.servicer = PredictionServicer(self.model, self.scheduler, max_pixels)
        workers = batching.queue_capacity + batching.max_batch_size * batching.num_batch_threads + 4
        self._server = grpc.server(ThreadPoolExecutor(max_workers=workers), options=GRPC_OPTIONS,
                                   maximum_concurrent_rpcs=workers)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self.servicer, self._server)
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        self.target = f"{host}:{self.port}"

    def start(self) -> "LoopbackServer":
        self.scheduler.start()
        self._server.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, give running ones ``grace`` seconds, then fail what is still queued."""
        stopped = self._server.stop(grace)
        if grace:
            stopped.wait(grace)
        self.scheduler.stop()
        stopped.wait()

    def wait(self) -> None:
        self._server.wait_for_termination()

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
