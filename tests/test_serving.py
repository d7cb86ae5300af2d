"""Serving: the exported SavedModel, version folders, the gRPC client against the loopback
server (equality with the local model, edge map included, typed errors, pixel limit, batching and
load with default settings) and host-side merging, the merge hierarchy included (on real BSDS500
images with the real model: ``test_serving_hierarchy.py``)."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import random_itq
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from binmap_tf.binary_map.model import BinaryMapper
from binmap_tf.cli.segment import main as segment_main
from binmap_tf.cli.serve import main as server_main
from binmap_tf.common.files import write_png
from binmap_tf.segmentation.pipeline import segment
from serving import export
from serving.batching import BatchingOptions, BatchScheduler, QueueFullError
from serving.client import (
    DEFAULT_TIMEOUT,
    BinmapClient,
    DeadlineExceededError,
    InvalidInputError,
    ModelNotFoundError,
    ServerBusyError,
    ServerUnavailableError,
    ServingError,
    connect,
)
from serving.protocol import DEFAULT_MAX_PIXELS, INFO_FILE, WARMUP_FILE, ModelInfo
from serving.retry import DEFAULT_ATTEMPTS, DEFAULT_BASE_DELAY, DEFAULT_MAX_DELAY, NO_RETRY, RetryPolicy
from serving.server import LoopbackServer

BITS = 8


def synthetic_image(height: int = 64, width: int = 96, seed: int = 0) -> np.ndarray:
    """Coloured blocks with mild noise: a few regions for the superpixels to find."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.float64)
    for _ in range(6):
        top, left = rng.integers(0, height - 8), rng.integers(0, width - 8)
        image[top:top + rng.integers(8, height), left:left + rng.integers(8, width)] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 4, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


SIGNATURES = ("serving_default", "encoded", "with_edges", "encoded_with_edges")


@pytest.fixture(scope="module")
def mapper() -> BinaryMapper:
    return BinaryMapper("vgg16-hed", bits=BITS, hashing=random_itq(512, BITS), weights=None, edges=True)


@pytest.fixture(scope="module")
def version_dir(mapper, tmp_path_factory):
    return export.export_model(mapper, tmp_path_factory.mktemp("models") / "binmap")


@pytest.fixture(scope="module")
def server(version_dir):
    with LoopbackServer(version_dir.parent) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with BinmapClient(server.target, timeout=60.0) as connected:
        yield connected


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return synthetic_image()


def parse_saved_model_cli(text: str) -> dict[str, dict[str, dict[str, tuple[str, str]]]]:
    """``saved_model_cli show --all`` text -> {signature: {"inputs"|"outputs": {name: (dtype, shape)}}}."""
    signatures = {}
    for block in re.split(r"\nsignature_def\['", text)[1:]:
        name = block.split("'", 1)[0]
        found: dict[str, dict[str, tuple[str, str]]] = {"inputs": {}, "outputs": {}}
        for kind, tensor, dtype, shape in re.findall(
                r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (.+)", block):
            found[kind][tensor] = (dtype, shape.strip())
        signatures[name] = found
    return signatures


@pytest.mark.slow
def test_saved_model_cli_shows_the_signatures(version_dir):
    shown = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--all",
                            "--dir", str(version_dir)], capture_output=True, text=True, check=True).stdout
    signatures = parse_saved_model_cli(shown)
    outputs = {"bits": ("DT_UINT8", f"(-1, -1, -1, {BITS})"), "codes": ("DT_INT32", "(-1, -1, -1)"),
               "logits": ("DT_FLOAT", f"(-1, -1, -1, {BITS})"), "geometry": ("DT_STRING", "(-1)")}
    with_edges = {**outputs, "edges": ("DT_FLOAT", "(-1, -1, -1)")}  # float32: full precision
    assert signatures["serving_default"] == {"inputs": {"images": ("DT_UINT8", "(-1, -1, -1, 3)")},
                                             "outputs": outputs}
    assert signatures["encoded"] == {"inputs": {"image_bytes": ("DT_STRING", "(-1)")}, "outputs": outputs}
    assert signatures["with_edges"] == {"inputs": {"images": ("DT_UINT8", "(-1, -1, -1, 3)")},
                                        "outputs": with_edges}
    assert signatures["encoded_with_edges"] == {"inputs": {"image_bytes": ("DT_STRING", "(-1)")},
                                                "outputs": with_edges}
    ops = re.search(r"contains the following ops: \{(.*)\}", shown).group(1)
    assert "PyFunc" not in ops and "DecodeImage" in ops  # all in-graph: TF Serving can run it


def test_saved_model_gives_the_keras_model_outputs(version_dir, mapper, image):
    batch = np.stack([image, synthetic_image(seed=1)])
    signatures = tf.saved_model.load(str(version_dir)).signatures
    served = signatures["serving_default"](images=tf.constant(batch))
    local = mapper.model(batch, training=False)
    for name in ("bits", "codes", "logits"):
        np.testing.assert_array_equal(served[name].numpy(), np.asarray(local[name]), err_msg=name)
    assert "edges" not in served
    with_edges = signatures["with_edges"](images=tf.constant(batch))
    for name in ("bits", "codes", "logits", "geometry"):
        np.testing.assert_array_equal(with_edges[name].numpy(), served[name].numpy(), err_msg=name)
    assert with_edges["edges"].dtype == tf.float32
    np.testing.assert_array_equal(with_edges["edges"].numpy(), np.asarray(local["edges"])[..., 0])
    info = ModelInfo.from_json(served["geometry"].numpy()[1])
    assert info == ModelInfo.from_json((version_dir / "assets.extra" / INFO_FILE).read_text())
    assert (info.geometry, info.scale, info.bits, info.backbone) == (mapper.backbone.geometry, mapper.scale,
                                                                      BITS, "vgg16-hed")


def test_encoded_signature_equals_the_uint8_signature(version_dir, image):
    signatures = tf.saved_model.load(str(version_dir)).signatures
    batch = np.stack([image, synthetic_image(seed=2)])
    files = tf.constant([tf.io.encode_png(picture).numpy() for picture in batch])
    for encoded, pixels, names in (("encoded", "serving_default", ("bits", "codes", "logits", "geometry")),
                                   ("encoded_with_edges", "with_edges", ("bits", "logits", "edges"))):
        from_files = signatures[encoded](image_bytes=files)
        from_pixels = signatures[pixels](images=tf.constant(batch))
        for name in names:
            np.testing.assert_array_equal(from_files[name].numpy(), from_pixels[name].numpy(), err_msg=name)
        mixed = tf.constant([files[0].numpy(), tf.io.encode_png(image[:, :80]).numpy()])
        with pytest.raises(tf.errors.InvalidArgumentError, match="must have the same height and width"):
            signatures[encoded](image_bytes=mixed)


def test_warmup_requests_cover_every_signature(version_dir, server):
    requests = export.read_warmup(version_dir / "assets.extra" / WARMUP_FILE)
    assert sorted(request.model_spec.signature_name for request in requests) == sorted(SIGNATURES)
    for request in requests:
        outputs = server.model.run(request)
        assert outputs["bits"].shape[0] == 1
        assert ("edges" in outputs) == ("edges" in request.model_spec.signature_name)
        if "edges" in outputs:
            assert outputs["edges"].shape == (1, *export.WARMUP_SHAPE)


@pytest.mark.slow
def test_versions_are_numbered_and_published_atomically(mapper, tmp_path, monkeypatch):
    base = tmp_path / "binmap"
    assert export.export_model(mapper, base, warmup=False) == base / "1"
    assert export.export_model(mapper, base, version=5, warmup=False) == base / "5"
    assert export.export_model(mapper, base, warmup=False) == base / "6"
    with pytest.raises(FileExistsError, match="version 5 is taken"):
        export.export_model(mapper, base, version=5, warmup=False)

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "write_warmup", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_model(mapper, base)
    assert sorted(entry.name for entry in base.iterdir()) == ["1", "5", "6"]  # nothing half-written left


def test_publish_skips_a_version_taken_meanwhile(tmp_path, monkeypatch):
    base = tmp_path / "binmap"
    (base / "2").mkdir(parents=True)
    (base / "2" / "saved_model.pb").write_bytes(b"other export")
    staging = base / ".export-x"
    staging.mkdir()
    (staging / "saved_model.pb").write_bytes(b"ours")
    proposals = iter([2, 3])  # another exporter renamed its folder to 2 after we looked
    monkeypatch.setattr(export, "next_version", lambda folder: next(proposals))
    assert export._publish(staging, base, None) == base / "3"
    assert (base / "3" / "saved_model.pb").read_bytes() == b"ours"
    assert (base / "2" / "saved_model.pb").read_bytes() == b"other export"


def test_export_command_line(tmp_path, capsys):
    from binmap_tf.cli.export import main

    assert main(["--out", str(tmp_path), "--no-warmup"]) == 0  # real vgg16-hed, shipped ITQ
    assert capsys.readouterr().out.strip() == str(tmp_path / "1")
    assert ModelInfo.from_json((tmp_path / "1" / "assets.extra" / INFO_FILE).read_text()).bits == 8
    proto = saved_model_pb2.SavedModel.FromString((tmp_path / "1" / "saved_model.pb").read_bytes())
    assert set(SIGNATURES) <= set(proto.meta_graphs[0].signature_def)  # vgg16-hed: exported with its edge map
    with pytest.raises(SystemExit, match="version 1 is taken"):
        main(["--out", str(tmp_path), "--version", "1"])


def assert_same_map(served, local):
    np.testing.assert_array_equal(served.bits, local.bits)
    np.testing.assert_array_equal(served.codes, local.codes)
    np.testing.assert_allclose(served.logits, local.logits, rtol=1e-5, atol=1e-5)
    assert (served.geometry, served.scale, served.image_shape) == (local.geometry, local.scale, local.image_shape)


def test_client_maps_equal_the_local_model(client, mapper, image):
    assert_same_map(client.binary_map(image), mapper(image))
    images = [image, synthetic_image(80, 112, seed=3), image[..., 0], np.dstack([image, np.full(image.shape[:2], 9)])]
    for served, local in zip(client.binary_maps(images), mapper.map_batch(images)):
        assert_same_map(served, local)


def test_client_maps_with_edges_equal_the_local_model(server, mapper, image):
    with BinmapClient(server.target, timeout=60.0, edges=True) as client:
        images = [image, synthetic_image(80, 112, seed=3)]
        for served, local in zip(client.binary_maps(images), mapper.map_batch(images)):
            assert_same_map(served, local)
            assert served.edges.dtype == np.float32
            np.testing.assert_array_equal(served.edges, local.edges)  # to the bit: the watershed reads it
        assert client.binary_map(image, edges=False).edges is None  # per call, the codes alone


def test_client_reads_the_signatures(client):
    signatures = client.signatures()
    assert set(signatures) == set(SIGNATURES)
    assert signatures["serving_default"].inputs["images"].dtype == tf.uint8.as_datatype_enum


def free_port() -> int:
    """A local port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Short waits, so that tests of retries take a fraction of a second.
QUICK_RETRY = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.1)


def test_unreachable_server_is_tried_with_backoff_then_once_until_it_answers():
    port = free_port()
    with BinmapClient(f"127.0.0.1:{port}", timeout=5.0, retry=QUICK_RETRY) as client:
        start = time.monotonic()
        with pytest.raises(ServerUnavailableError, match=rf"127\.0\.0\.1:{port}.*binmap-serve.*3 attempt\(s\)"):
            client.binary_map(synthetic_image())
        assert time.monotonic() - start >= QUICK_RETRY.shortest_wait()  # it waited between the attempts
        with pytest.raises(ServerUnavailableError, match="1 attempt: an earlier request used up its retries"):
            client.binary_map(synthetic_image())  # taken for down: no more waits per request


def test_retry_policy_backs_off_exponentially_with_jitter():
    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=3.0)
    assert [policy.cap(retry) for retry in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.longest_wait() == 9.5 and policy.shortest_wait() == 4.75
    first, second = random.Random(1), random.Random(2)
    for retry in range(5):
        delays = {policy.delay(retry, first), policy.delay(retry, second)}
        assert len(delays) == 2 and all(policy.cap(retry) / 2 <= delay <= policy.cap(retry) for delay in delays)
    assert RetryPolicy(attempts=10_000).longest_wait() < float("inf")  # no overflow
    for bad, message in ((dict(attempts=0), "at least 1"), (dict(base_delay=2.0, max_delay=1.0), "base delay <= max")):
        with pytest.raises(ValueError, match=message):
            RetryPolicy(**bad)


@pytest.mark.parametrize("fault, error", [(QueueFullError("queue is full"), None),  # RESOURCE_EXHAUSTED
                                          (ValueError("bad input"), InvalidInputError)])  # INVALID_ARGUMENT
def test_only_retryable_failures_are_sent_again(server, image, fault, error):
    calls = []

    def flaky(request):
        calls.append(request)
        if len(calls) < QUICK_RETRY.attempts:
            raise fault

    server.servicer.before_predict = flaky
    try:
        with BinmapClient(server.target, timeout=60.0, retry=QUICK_RETRY) as client:
            if error is None:
                assert client.predict(image[None])["bits"].shape[0] == 1  # the last attempt got through
                assert len(calls) == QUICK_RETRY.attempts
            else:
                with pytest.raises(error, match="bad input"):
                    client.predict(image[None])
                assert len(calls) == 1
    finally:
        server.servicer.before_predict = None


@pytest.mark.parametrize("retry", [NO_RETRY, QUICK_RETRY], ids=["no retry", "retries"])
def test_deadline_exceeded_is_retried(server, image, retry):
    timeout, calls = 1.0, []

    def slow_first(request):
        calls.append(request)
        if len(calls) == 1:
            time.sleep(2 * timeout)

    server.servicer.before_predict = slow_first
    try:
        with BinmapClient(server.target, timeout=timeout, retry=retry) as client:
            if retry.attempts == 1:
                with pytest.raises(DeadlineExceededError, match=rf"timeout={timeout:g} s.*1 attempt"):
                    client.predict(image[None])
            else:
                assert client.predict(image[None])["bits"].shape[0] == 1  # the second attempt is answered
                assert len(calls) == 2
    finally:
        server.servicer.before_predict = None


@pytest.mark.parametrize("spec, message", [(dict(model="other"), r"Latest\(other\)"),
                                           (dict(version=99), r"Specific\(binmap, 99\)")])
def test_unknown_model_or_version(server, image, spec, message):
    with BinmapClient(server.target, **spec) as client:
        with pytest.raises(ModelNotFoundError, match=message):
            client.binary_map(image)


def test_pinned_version(server, image):
    with BinmapClient(server.target, version=server.model.version, timeout=60.0) as client:
        assert client.binary_map(image).n_bits == BITS


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 64, 96, 3), np.uint8), "not a batch"),
    (np.zeros((64, 96, 5), np.uint8), r"\(H, W, 4\)"),
    (np.full((64, 96, 3), "x"), "unsupported image dtype"),
])
def test_client_rejects_non_images(client, bad, message):
    with pytest.raises(InvalidInputError, match=message):
        client.binary_map(bad)


def test_server_rejects_bad_inputs(client, server):
    with pytest.raises(InvalidInputError, match="uint8 batch"):
        client.predict(np.zeros((1, 64, 96, 3), np.float32))
    with pytest.raises(InvalidInputError, match="at least 16 pixels"):
        client.binary_map(np.zeros((8, 96, 3), np.uint8))
    with pytest.raises(InvalidInputError, match=r"image_bytes\[0\] is not a JPEG, PNG"):
        client.predict_encoded([b"not an image"])
    with pytest.raises(InvalidInputError, match="same height and width"):
        client.predict_encoded([tf.io.encode_png(np.zeros((64, 96, 3), np.uint8)).numpy(),
                                tf.io.encode_png(np.zeros((64, 80, 3), np.uint8)).numpy()])
    request = predict_pb2.PredictRequest()  # what a client without our checks could send
    request.model_spec.name = "binmap"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 64, 96, 3), np.float32)))
    with grpc.insecure_channel(server.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "to be uint8" in raised.value.details()
        request.model_spec.signature_name = "with_edges"  # the same checks guard the edge map's signature
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "to be uint8" in raised.value.details()
        request.model_spec.signature_name = "nonexistent"
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def raw_predict(target: str, tensor) -> grpc.RpcError:
    """The error of a ``Predict`` call with ``tensor`` as ``images``, sent without the client's checks."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "binmap"
    request.inputs["images"].CopyFrom(tensor)
    with grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    return raised.value


def test_oversized_request_is_refused_and_the_server_keeps_serving(client, server, mapper, image):
    photo = np.zeros((3000, 4000, 3), np.uint8)  # 12 MP: within the client's MAX_PIXELS, not the server's limit
    limit = rf"more than this server's limit of {DEFAULT_MAX_PIXELS} pixels per request \(--max-pixels\); downscale"
    with BinmapClient(server.target, max_tile_pixels=None) as whole:  # sends it in one request, not in tiles
        with pytest.raises(InvalidInputError, match=rf"3000x4000.*{limit}"):
            whole.binary_map(photo)
    with pytest.raises(InvalidInputError, match=limit):  # read from the file's header, not decoded
        client.predict_encoded([tf.io.encode_png(photo).numpy()])
    with pytest.raises(InvalidInputError, match=limit):  # the edge map's signatures have the same limit
        client.predict(photo[None], edges=True)
    with pytest.raises(InvalidInputError, match=r"28 image\(s\) of 321x481"):  # the limit counts the whole batch
        client.predict(np.zeros((28, 321, 481, 3), np.uint8))
    declared = tf.make_tensor_proto(np.zeros((1, 1, 1, 3), np.uint8))  # a huge shape with no pixel data
    declared.tensor_shape.dim[1].size, declared.tensor_shape.dim[2].size = 100_000, 100_000
    declared.tensor_content = b""
    error = raw_predict(server.target, declared)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "10000000000 pixels" in error.details()
    wrong_rank = tf.make_tensor_proto(np.zeros((64, 96, 3), np.uint8))
    error = raw_predict(server.target, wrong_rank)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "must have shape" in error.details()
    assert_same_map(client.binary_map(image), mapper(image))  # still serving


def test_large_images_go_in_tiles_that_fit_the_server_and_stitch_to_the_local_map(version_dir, mapper):
    picture = synthetic_image(256, 800, seed=5)  # 204800 pixels, over the small server's limit
    budget = 256 * 528  # 3 tiles side by side, at most 256x496 pixels (cores of 272, margins of 112)
    plan = mapper.tile_plan(picture.shape[:2], budget)
    assert (len(plan.rows), len(plan.cols)) == (1, 3)
    local = mapper.map_tiled(picture, plan)
    with LoopbackServer(version_dir.parent, warmup=False, max_pixels=150_000) as small:
        with BinmapClient(small.target, timeout=60.0, edges=True, max_tile_pixels=budget) as tiled:
            served = tiled.binary_map(picture)
            assert tiled.model_info().tiling_geometry == mapper.backbone.tiling_geometry
            tiled._info = dataclasses.replace(tiled.model_info(), backbone_options={"as if": "another version"})
            with pytest.raises(ServingError, match="switched model versions while this image's tiles were sent"):
                tiled.binary_map(picture)  # a tile's geometry differs from the plan's
            assert tiled._info is None  # asked afresh next time
        with BinmapClient(small.target, max_tile_pixels=None) as whole:
            with pytest.raises(InvalidInputError, match="256x800.*more than this server's limit of 150000"):
                whole.binary_map(picture)
    assert small.scheduler.images_run == 1 + 3 + 1  # the probe for the geometry, a request per tile, the stale one
    assert_same_map(served, local)
    np.testing.assert_array_equal(served.logits, local.logits)
    np.testing.assert_array_equal(served.edges, local.edges)


def test_model_info_of_older_exports_has_no_tiling_geometry():
    info = ModelInfo.from_json(json.dumps({"backbone": "vgg16-hed", "backbone_options": {}, "bits": 8, "scale": 1.0,
                                           "stride": 16.0, "offset": 7.5, "receptive_field": 196.0,
                                           "min_image_side": 16, "bit_order": "msb-first"}))
    assert info.tiling_geometry is None  # the client then sends large images whole


def test_eight_clients_with_default_settings_all_answered_correctly(server, mapper):
    images = [synthetic_image(seed=seed) for seed in range(4)]  # 64x96: equal sizes, so requests batch
    expected = mapper.map_batch(images)

    def one_client(number: int) -> list[bool]:
        # Odd clients ask for the edge map: their requests batch among themselves, apart from the others.
        with BinmapClient(server.target, edges=number % 2 == 1) as own:  # default timeout, its own channel
            assert own.timeout == DEFAULT_TIMEOUT
            answers = []
            for request in range(20):
                served, local = own.binary_map(images[(number + request) % 4]), expected[(number + request) % 4]
                answers.append(bool(np.array_equal(served.bits, local.bits)) and (
                    np.array_equal(served.edges, local.edges) if own.edges else served.edges is None))
            return answers

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = [answer for answered in pool.map(one_client, range(8)) for answer in answered]  # re-raises
    assert len(answers) == 8 * 20 and all(answers)


def test_full_queue_answers_resource_exhausted(server, image):
    scheduler = server.scheduler
    original_run, original_options = scheduler.run, scheduler.options
    computing, release = threading.Event(), threading.Event()

    def held(signature, inputs):
        computing.set()
        release.wait(60)
        return original_run(signature, inputs)

    scheduler.run, scheduler.options = held, BatchingOptions(max_batch_size=1, max_enqueued_batches=1)
    try:
        with BinmapClient(server.target, retry=NO_RETRY) as busy, ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(busy.binary_map, image)
            assert computing.wait(60)
            second = pool.submit(busy.binary_map, image)
            deadline = time.monotonic() + 60
            while scheduler.queued_images < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            with pytest.raises(ServerBusyError, match="queue is full.*--max-enqueued-batches") as raised:
                busy.binary_map(image)
            assert raised.value.retryable
            release.set()
            np.testing.assert_array_equal(first.result().bits, second.result().bits)
    finally:
        release.set()
        scheduler.run, scheduler.options = original_run, original_options


def doubling_scheduler(gate: threading.Event, batches: list, max_pixels: int = 10**6, **options) -> BatchScheduler:
    """A scheduler whose ``run`` waits for ``gate``, records each batch's key and size and doubles ``x``."""

    def run(signature: str, inputs: dict) -> dict:
        gate.wait(30)
        if (inputs["x"] < 0).any():
            raise ValueError("negative input")
        batches.append((signature, inputs["x"].shape[1:], len(inputs["x"])))
        return {"y": inputs["x"] * 2}

    return BatchScheduler(run, BatchingOptions(batch_timeout_micros=0, **options), max_pixels)


@pytest.mark.parametrize("options", [dict(max_batch_size=3), dict(max_batch_size=8, max_pixels=3 * 100)])
def test_scheduler_merges_equal_sized_requests_up_to_the_limits(options):
    gate, batches = threading.Event(), []
    scheduler = doubling_scheduler(gate, batches, **options)
    scheduler.start()
    try:
        def submit(value: int, shape=(10, 10)):
            return scheduler.submit("s", shape, {"x": np.full((1, *shape), value)}, size=1, pixels=100)

        futures = [submit(0)]
        while scheduler.queued_images:  # the first request is taken alone, before the others arrive
            time.sleep(0.001)
        futures += [submit(1), submit(2), submit(3, shape=(5, 20)), submit(4), submit(5)]
        gate.set()
        results = [future.result(timeout=30)["y"] for future in futures]
    finally:
        gate.set()
        scheduler.stop()
    assert [(shape, size) for _, shape, size in batches] == [((10, 10), 1), ((10, 10), 3), ((5, 20), 1),
                                                             ((10, 10), 1)]
    for value, result in enumerate(results):
        assert result.shape[0] == 1 and (result == 2 * value).all()


def test_scheduler_isolates_failures_drops_gone_clients_and_bounds_its_queue():
    gate, batches = threading.Event(), []
    scheduler = doubling_scheduler(gate, batches, max_batch_size=4, max_enqueued_batches=1)
    scheduler.start()
    try:
        first = scheduler.submit("s", (1, 1), {"x": np.ones((1, 1, 1))}, size=1, pixels=1)
        while scheduler.queued_images:
            time.sleep(0.001)
        good = scheduler.submit("s", (1, 1), {"x": np.ones((1, 1, 1))}, size=1, pixels=1)
        bad = scheduler.submit("s", (1, 1), {"x": -np.ones((1, 1, 1))}, size=1, pixels=1)
        gone = scheduler.submit("s", (1, 1), {"x": np.ones((1, 1, 1))}, size=1, pixels=1, is_active=lambda: False)
        with pytest.raises(QueueFullError, match="queue is full"):
            scheduler.submit("s", (1, 1), {"x": np.ones((2, 1, 1))}, size=2, pixels=2)
        gate.set()
        assert first.result(timeout=30)["y"].tolist() == [[[2.0]]]
        assert good.result(timeout=30)["y"].tolist() == [[[2.0]]]  # its batch failed because of `bad`
        with pytest.raises(ValueError, match="negative input"):
            bad.result(timeout=30)
        assert gone.cancelled()
    finally:
        gate.set()
        scheduler.stop()


@pytest.mark.parametrize("option, message", [(["--max-pixels", "0"], "max_pixels must be positive"),
                                             (["--max-batch-size", "0"], "max_batch_size must be at least 1")])
def test_server_command_line_rejects_bad_limits(version_dir, option, message):
    with pytest.raises(SystemExit, match=message):
        server_main(["--model-dir", str(version_dir.parent), "--port", "0", *option])


def test_default_timeout_and_retries_are_the_documented_ones():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    defaults = RetryPolicy()
    documented = [f"timeout={DEFAULT_TIMEOUT:g}", f"attempts={DEFAULT_ATTEMPTS}", f"base_delay={DEFAULT_BASE_DELAY:g}",
                  f"max_delay={DEFAULT_MAX_DELAY:g}", f"{defaults.shortest_wait():g}to{defaults.longest_wait():g}s"]
    for doc in ("docs/serving.md", "serving/README.md"):
        text = "".join((root / doc).read_text().split())  # line breaks too
        assert [phrase for phrase in documented if phrase not in text] == [], doc


@pytest.mark.parametrize("options", [dict(superpixels="egs", hamming=0, merge="adjacent"),
                                     dict(superpixels="slic", hamming=1, merge="global", n_segments=60)])
def test_served_map_and_host_merge_equal_local_segment(client, mapper, image, options):
    served = client.segment(image, **options)
    local = segment(image, mapper, **options)
    np.testing.assert_array_equal(served.labels, local.labels)
    assert served.n_segments == local.n_segments


def test_model_without_edges_is_refused_clearly(tmp_path, image):
    codes_only = BinaryMapper("vgg16-hed", bits=BITS, hashing=random_itq(512, BITS), weights=None)
    version = export.export_model(codes_only, tmp_path / "binmap", warmup=False)
    assert [request.model_spec.signature_name for request in export.warmup_requests(edges=False)] == \
        ["serving_default", "encoded"]
    with LoopbackServer(version.parent, warmup=False) as old:
        hint = r"no edge map \(no 'with_edges' signature\).*re-export it with `binmap-export"
        with pytest.raises(ServingError, match=hint):
            connect(old.target, edges=True)
        with connect(old.target) as client:  # codes alone: still served
            assert set(client.signatures()) == {"serving_default", "encoded"}
            assert client.binary_map(image).edges is None
            with pytest.raises(ServingError, match=hint):
                client.binary_map(image, edges=True)
            with pytest.raises(ServingError, match=r"no edge map \(no 'with_edges'"):
                client.segment(image, merge="hierarchy")
        assert segment_main_error(old.target, image, tmp_path, "--merge", "hierarchy").startswith(
            f"error: {old.target}: the served model has no edge map")


def segment_main_error(target: str, image: np.ndarray, folder, *options: str) -> str:
    """The message ``binmap-segment`` exits with for ``image`` served from ``target``."""
    write_png(folder / "picture.png", image)
    with pytest.raises(SystemExit) as raised:
        segment_main([str(folder / "picture.png"), "--out", str(folder / "out"), "--serving", target, *options])
    return str(raised.value)


@pytest.mark.parametrize("options", [dict(merge="hierarchy", scorer="learned"),
                                     dict(merge="hierarchy", scorer="hand-set", segments=5),
                                     dict(superpixels="watershed", merge="adjacent")])
def test_served_map_and_host_hierarchy_equal_local_segment(client, mapper, image, options):
    served = client.segment(image, **options)  # the client without edges asks for them as these options need
    local = segment(image, mapper, **options)
    np.testing.assert_array_equal(served.labels, local.labels)
    np.testing.assert_array_equal(served.binary_map.edges, local.binary_map.edges)


def test_segment_command_line_with_serving(server, mapper, image, tmp_path):
    write_png(tmp_path / "picture.png", image)
    assert segment_main([str(tmp_path / "picture.png"), "--out", str(tmp_path / "out"),
                         "--serving", server.target]) == 0
    labels = np.load(tmp_path / "out" / "picture_labels.npy")
    np.testing.assert_array_equal(labels, segment(image, mapper).labels)
    record = json.loads((tmp_path / "out" / "picture.json").read_text())
    assert record["serving"] == server.target and "backbone" not in record
    with pytest.raises(SystemExit, match=r"unavailable.*2 attempt\(s\)"):
        segment_main([str(tmp_path / "picture.png"), "--out", str(tmp_path / "out"),
                      "--serving", f"127.0.0.1:{free_port()}", "--retry-attempts", "2", "--retry-base-delay", "0.01"])
    assert segment_main([str(tmp_path / "picture.png"), "--out", str(tmp_path / "learned"), "--serving", server.target,
                         "--merge", "hierarchy", "--scorer", "learned"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "learned" / "picture_labels.npy"),
                                  segment(image, mapper, merge="hierarchy", scorer="learned").labels)


def test_evaluate_with_serving_uses_the_served_maps(server, mapper, tmp_path):
    from PIL import Image

    from binmap_tf.cli.evaluate import main as evaluate_main
    from binmap_tf.evaluation.datasets import load_dataset

    out = tmp_path / "eval"
    assert evaluate_main(["--dataset", "bsds500", "--split", "test", "--limit", "1", "--workers", "1",
                          "--methods", "binmap-egs", "--save-labels", "--serving", server.target,
                          "--out", str(out)]) == 0
    sample = load_dataset("bsds500", "test", limit=1)[0]
    saved = np.asarray(Image.open(out / "labels" / "binmap-egs" / f"{sample.id}.png"))
    np.testing.assert_array_equal(saved, segment(sample.load_image(), mapper, merge="adjacent").labels)
