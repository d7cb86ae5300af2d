"""A loopback gRPC ``PredictionService`` for tests and local development.

It loads the latest exported version under ``--model-dir`` and answers ``Predict`` and
``GetModelMetadata`` the way TensorFlow Serving does (same protos, same status codes: NOT_FOUND
for an unknown model or version, INVALID_ARGUMENT for bad inputs, FAILED_PRECONDITION for an
unknown signature), and replays the export's warm-up requests on load. It is no replacement for
``tensorflow_model_server``: no batching, no version polling, no REST.

``python -m serving.server --model-dir serving/models/binmap --port 8500``
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2, predict_pb2, prediction_service_pb2_grpc

from serving.export import read_warmup, versions
from serving.protocol import DEFAULT_MODEL_NAME, GRPC_OPTIONS, IMAGES_SIGNATURE, WARMUP_FILE

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
                                    f"python -m serving.export --out {base}")
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

    def run(self, request: predict_pb2.PredictRequest) -> dict[str, tf.Tensor]:
        """Run the request's signature; raises ``KeyError`` (signature), ``ValueError`` (inputs) or ``tf.errors.OpError``."""
        name = request.model_spec.signature_name or IMAGES_SIGNATURE
        if name not in self.signatures:
            raise KeyError(f'Serving signature key "{name}" not found.')
        function = self.signatures[name]
        return function(**request_inputs(request, function.structured_input_signature[1]))


def request_inputs(request: predict_pb2.PredictRequest, specs: dict[str, tf.TensorSpec]) -> dict[str, tf.Tensor]:
    """The request's input tensors, checked against the signature's names, dtypes and shapes."""
    sent, expected = set(request.inputs), set(specs)
    if sent != expected:
        raise ValueError(f"input size does not match signature: {len(sent)}!={len(expected)}. Sent extra: "
                         f"{sorted(sent - expected)}. Missing but required: {sorted(expected - sent)}.")
    tensors = {}
    for name, spec in specs.items():
        proto = request.inputs[name]
        if proto.dtype != spec.dtype.as_datatype_enum:
            raise ValueError(f"Expects arg '{name}' to be {spec.dtype.name} but "
                             f"{tf.dtypes.as_dtype(proto.dtype).name} is provided")
        try:
            value = tf.make_ndarray(proto)
        except (TypeError, ValueError) as error:
            raise ValueError(f"input '{name}' is not a valid TensorProto: {error}") from None
        if not spec.shape.is_compatible_with(value.shape):
            raise ValueError(f"input '{name}' must have shape {spec.shape}, got {list(value.shape)}")
        tensors[name] = tf.constant(value)
    return tensors


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``Predict`` and ``GetModelMetadata`` over one :class:`ServedModel`.

    ``before_predict`` (e.g. a sleep, in tests of client deadlines) runs first on every request
    for this model.
    """

    def __init__(self, model: ServedModel,
                 before_predict: Callable[[predict_pb2.PredictRequest], None] | None = None) -> None:
        self.model = model
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
            outputs = self.model.run(request)
        except KeyError as error:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, error.args[0])
        except ValueError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
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
    """The servicer on a gRPC port (``port=0``: a free one); use as a context manager or start/stop."""

    def __init__(self, model_dir: str | os.PathLike, model_name: str = DEFAULT_MODEL_NAME, port: int = 0,
                 host: str = "127.0.0.1", max_workers: int = 8, warmup: bool = True) -> None:
        self.model = ServedModel.load(model_dir, model_name, warmup=warmup)
        self.servicer = PredictionServicer(self.model)
        self._server = grpc.server(ThreadPoolExecutor(max_workers=max_workers), options=GRPC_OPTIONS)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self.servicer, self._server)
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        self.target = f"{host}:{self.port}"

    def start(self) -> "LoopbackServer":
        self._server.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        self._server.stop(grace).wait()

    def wait(self) -> None:
        self._server.wait_for_termination()

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Command line: serve the latest exported version until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m serving.server",
                                     description="Loopback gRPC PredictionService for tests and local development.")
    parser.add_argument("--model-dir", type=Path, default=Path("serving/models/binmap"),
                        help="model base folder with numbered versions (default: %(default)s)")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="served model name (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the warm-up requests")
    args = parser.parse_args(argv)
    try:
        server = LoopbackServer(args.model_dir, args.model_name, port=args.port, host=args.host, warmup=args.warmup)
    except (FileNotFoundError, RuntimeError) as error:
        raise SystemExit(f"error: {error}") from None
    with server:
        print(f"serving {server.model.name} version {server.model.version} on {server.target} (Ctrl-C stops)")
        try:
            server.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
