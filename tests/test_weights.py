"""Importers of the public AlexNet releases: every format, written here with seeded random
weights exactly as the release lays it out, must give an FCN whose conv7 on one crop equals the
fc7 of a plain classifier computed in NumPy from the file's own arrays.

The writers and the NumPy classifier below are deliberately independent of
``binmap_tf.cli.weights``: they follow the release layouts (Caffe/torch fc6 flattened from pool5 in
(C, H, W) order, the TF port in (H, W, C) order), so a silent transpose in the importer fails.
"""

from __future__ import annotations

import fractions
import functools
import io
import pickle
import shutil
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from binmap_tf.binary_map.backbones.alexnet import build_alexnet
from binmap_tf.binary_map.backbones.alexnet.network import assign_weights, build_alexnet_classifier
from binmap_tf.binary_map.backbones.alexnet.weights import detect_format, read_weights, weights_path
from binmap_tf.cli.weights import main

CAFFE_MEAN_BGR = np.array([104.0, 117.0, 123.0])
TORCH_MEAN = np.array([0.485, 0.456, 0.406])
TORCH_STD = np.array([0.229, 0.224, 0.225])
# (out, in, kernel, stride, pad, groups) of conv1..conv5 in each release.
CAFFE_CONVS = [(96, 3, 11, 4, 0, 1), (256, 96, 5, 1, 2, 2), (384, 256, 3, 1, 1, 1), (384, 384, 3, 1, 1, 2),
               (256, 384, 3, 1, 1, 2)]
TORCH_CONVS = [(64, 3, 11, 4, 2, 1), (192, 64, 5, 1, 2, 1), (384, 192, 3, 1, 1, 1), (256, 384, 3, 1, 1, 1),
               (256, 256, 3, 1, 1, 1)]
CONVS = {"caffe": CAFFE_CONVS, "torchvision": TORCH_CONVS}
FCS = [(4096, 9216), (4096, 4096), (1000, 4096)]  # (out, in) of fc6, fc7, fc8
CAFFE_NAMES = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
TORCH_PREFIXES = ["features.0", "features.3", "features.6", "features.8", "features.10", "classifier.1",
                  "classifier.4", "classifier.6"]


# --- seeded random releases, in each file's own layout ------------------------------------------

@functools.cache
def random_release(layout: str, hwio: bool) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """He-uniform random [W, b] per layer, conv W OIHW and fc W (out, in), or (``hwio``, the TF
    port's layout) conv W HWIO and fc W (in, out). Cached: 61M weights take a while to draw."""
    if hwio:
        return tuple((w.transpose(2, 3, 1, 0) if w.ndim == 4 else w.T, b) for w, b in random_release(layout, False))
    rng = np.random.default_rng(0 if layout == "caffe" else 1)
    shapes = [(out, inp // groups, kernel, kernel) for out, inp, kernel, _, _, groups in CONVS[layout]] + FCS
    layers = []
    for shape in shapes:
        bound = np.float32(np.sqrt(6 / np.prod(shape[1:])))
        weight = rng.random(shape, np.float32)
        weight -= np.float32(0.5)
        weight *= 2 * bound
        layers.append((weight, rng.uniform(0.0, 0.2, shape[0]).astype(np.float32)))
    return tuple(layers)


# --- a plain AlexNet classifier in NumPy (HWC activations) ---------------------------------------

def conv(x, kernel_hwio, bias, stride, pad, groups):
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    windows = sliding_window_view(x, kernel_hwio.shape[:2], axis=(0, 1))[::stride, ::stride]
    c_in, c_out = kernel_hwio.shape[2], kernel_hwio.shape[3] // groups
    outputs = [np.einsum("hwcij,ijco->hwo", windows[:, :, g * c_in:(g + 1) * c_in],
                         kernel_hwio[..., g * c_out:(g + 1) * c_out], optimize=True) for g in range(groups)]
    return np.concatenate(outputs, axis=-1) + bias


def caffe_lrn(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe's LRN with the bvlc_alexnet prototxt values: alpha is divided by the window size."""
    squares = np.pad(x ** 2, ((0, 0), (0, 0), (size // 2, size // 2)))
    return x / (k + alpha / size * sliding_window_view(squares, size, axis=2).sum(-1)) ** beta


def max_pool(x):
    return sliding_window_view(x, (3, 3), axis=(0, 1))[::2, ::2].max(axis=(-2, -1))


def classic_alexnet(x, convs, kernels, fcs, lrn: bool, flatten):
    """fc7 and softmax(fc8) of the classifier: ``kernels`` HWIO, ``fcs`` as (in, out) matrices,
    ``flatten`` turns pool5 (6, 6, 256) into the vector fc6 reads, in the release's order."""
    for index, ((kernel, bias), (_, _, _, stride, pad, groups)) in enumerate(zip(kernels, convs), start=1):
        x = np.maximum(conv(x, kernel.astype(np.float64), bias, stride, pad, groups), 0)
        if lrn and index <= 2:
            x = caffe_lrn(x)
        if index in (1, 2, 5):
            x = max_pool(x)
    assert x.shape == (6, 6, 256)
    h = flatten(x).astype(np.float32)
    for weight, bias in fcs[:2]:
        h = np.maximum(h @ weight + bias, 0)
    logits = (h @ fcs[2][0] + fcs[2][1]).astype(np.float64)
    probabilities = np.exp(logits - logits.max())
    return h, probabilities / probabilities.sum()


def reference(release, layout: str, image: np.ndarray, hwio: bool):
    """The classifier's (fc7, prob) for ``image`` (uint8 RGB) from a release's arrays."""
    convs = CONVS[layout]
    if layout == "caffe":
        x = image[..., ::-1].astype(np.float64) - CAFFE_MEAN_BGR
    else:
        x = (image / 255.0 - TORCH_MEAN) / TORCH_STD
    if hwio:  # the TF port: HWIO kernels, (in, out) fc, pool5 flattened in (H, W, C) order
        return classic_alexnet(x, convs, release[:5], release[5:], True, lambda p: p.reshape(-1))
    kernels = [(weight.transpose(2, 3, 1, 0), bias) for weight, bias in release[:5]]
    fcs = [(weight.T, bias) for weight, bias in release[5:]]
    return classic_alexnet(x, convs, kernels, fcs, layout == "caffe", lambda p: p.transpose(2, 0, 1).reshape(-1))


def misordered(conv6_kernel: np.ndarray) -> np.ndarray:
    """conv6's kernel with fc6's rows read in the other flattening order: the classic bug."""
    return conv6_kernel.reshape(256, 6, 6, -1).transpose(1, 2, 0, 3)


def relative_error(actual, expected) -> float:
    return float(np.abs(np.asarray(actual, np.float64) - expected).max() / np.abs(expected).max())


# --- writers: each release format, byte for byte ------------------------------------------------

def write_npy(path: Path, release) -> None:
    """bvlc_alexnet.npy: a pickled {"conv1": [W, b], ...} dict in a 0-d object array."""
    np.save(path, {name: [w, b] for name, (w, b) in zip(CAFFE_NAMES, release)}, allow_pickle=True)


def write_npz(path: Path, release) -> None:
    """A torchvision state_dict exported with np.savez(**{k: v.numpy()})."""
    np.savez(path, **{f"{prefix}.{kind}": array for prefix, (w, b) in zip(TORCH_PREFIXES, release)
                      for kind, array in (("weight", w), ("bias", b))})


# The messages of Caffe's src/caffe/proto/caffe.proto (BVLC) that a .caffemodel holds, with
# that file's own field numbers, built as a protobuf descriptor: the test files are then
# serialised by the protobuf library itself, independently of the hand-written decoder
# (binmap_tf.binary_map.backbones.alexnet.weights), so a misreading of caffe.proto cannot pass on both sides.
CAFFE_MESSAGES = {
    "BlobShape": [("dim", 1, "int64", "repeated", None)],
    "BlobProto": [("shape", 7, "message", "optional", "BlobShape"), ("data", 5, "float", "repeated", None),
                  ("num", 1, "int32", "optional", None), ("channels", 2, "int32", "optional", None),
                  ("height", 3, "int32", "optional", None), ("width", 4, "int32", "optional", None)],
    "LayerParameter": [("name", 1, "string", "optional", None), ("type", 2, "string", "optional", None),
                       ("bottom", 3, "string", "repeated", None), ("top", 4, "string", "repeated", None),
                       ("blobs", 7, "message", "repeated", "BlobProto")],
    "V1LayerParameter": [("bottom", 2, "string", "repeated", None), ("top", 3, "string", "repeated", None),
                         ("name", 4, "string", "optional", None), ("type", 5, "int32", "optional", None),
                         ("blobs", 6, "message", "repeated", "BlobProto")],
    "NetParameter": [("name", 1, "string", "optional", None),
                     ("layers", 2, "message", "repeated", "V1LayerParameter"),
                     ("layer", 100, "message", "repeated", "LayerParameter")],
}
V1_CONVOLUTION = 4  # V1LayerParameter.LayerType.CONVOLUTION


def caffe_message_classes() -> dict:
    """Python message classes for :data:`CAFFE_MESSAGES` (package ``caffe``, proto2, packed repeats)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    types = {"int64": field.TYPE_INT64, "int32": field.TYPE_INT32, "float": field.TYPE_FLOAT,
             "string": field.TYPE_STRING, "message": field.TYPE_MESSAGE}
    proto = descriptor_pb2.FileDescriptorProto(name="binmap_test_caffe.proto", package="caffe", syntax="proto2")
    for message_name, fields in CAFFE_MESSAGES.items():
        message = proto.message_type.add(name=message_name)
        for name, number, kind, label, type_name in fields:
            entry = message.field.add(name=name, number=number, type=types[kind],
                                      label=field.LABEL_REPEATED if label == "repeated" else field.LABEL_OPTIONAL)
            if type_name:
                entry.type_name = f".caffe.{type_name}"
            if label == "repeated" and kind in ("int64", "float"):
                entry.options.packed = True  # [packed = true] in caffe.proto
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}"))
            for name in CAFFE_MESSAGES}


def write_caffemodel(path: Path, release, legacy: bool) -> None:
    """A NetParameter with new-style ``layer`` entries, or legacy V1 ``layers`` whose blobs carry
    num/channels/height/width instead of a BlobShape, serialised by protobuf."""
    classes = caffe_message_classes()
    weighted = dict(zip(CAFFE_NAMES, release))
    names = ["data", "conv1", "relu1", "norm1", "pool1", "conv2", "relu2", "norm2", "pool2", "conv3", "relu3",
             "conv4", "relu4", "conv5", "relu5", "pool5", "fc6", "relu6", "drop6", "fc7", "relu7", "drop7",
             "fc8", "prob"]
    net = classes["NetParameter"](name="AlexNet")
    for name in names:
        if legacy:
            layer = net.layers.add(name=name, type=V1_CONVOLUTION, bottom=["data"], top=[name])
        else:
            layer = net.layer.add(name=name, type="Convolution", top=[name])
        for array in weighted.get(name, ()):
            blob = layer.blobs.add(data=array.astype(np.float32).ravel().tolist())
            if legacy:
                blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - array.ndim) + array.shape
            else:
                blob.shape.dim.extend(array.shape)
    path.write_bytes(net.SerializeToString())


class _TorchGlobal:
    """A torch name (class or function) pickled by reference, as torch.save writes it."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce insists that the function be callable
        raise TypeError("a stand-in for a torch global")


FLOAT_STORAGE = _TorchGlobal("torch", "FloatStorage")


class _Storage:
    def __init__(self, key: str, array: np.ndarray) -> None:
        self.key, self.array = key, np.ascontiguousarray(array, "<f4")


class _Tensor:
    """Pickles as torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())
    (legacy files of torch < 0.4: _rebuild_tensor(storage, 0, size, stride))."""

    def __init__(self, storage: _Storage, v2: bool) -> None:
        self.storage, self.v2 = storage, v2

    def __reduce__(self):
        shape = self.storage.array.shape
        stride = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
        if self.v2:
            return (_TorchGlobal("torch._utils", "_rebuild_tensor_v2"),
                    (self.storage, 0, shape, stride, False, OrderedDict()))
        return _TorchGlobal("torch._utils", "_rebuild_tensor"), (self.storage, 0, shape, stride)


class _TorchPickler(pickle._Pickler):
    """Protocol-2 pickler writing torch globals by name and storages as persistent ids."""

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, legacy: bool) -> None:
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def save_torch_global(self, obj: _TorchGlobal) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_TorchGlobal] = save_torch_global

    def persistent_id(self, obj):
        if not isinstance(obj, _Storage):
            return None
        saved_id = ("storage", FLOAT_STORAGE, obj.key, "cpu", obj.array.size)
        return saved_id + (None,) if self.legacy else saved_id  # legacy adds view_metadata


def _torch_state_dict(release, keys, v2: bool) -> tuple[OrderedDict, list[_Storage]]:
    state, storages = OrderedDict(), []
    for prefix, (w, b) in zip(TORCH_PREFIXES, release):
        for kind, array in (("weight", w), ("bias", b)):
            storages.append(_Storage(keys(len(storages)), array))
            state[f"{prefix}.{kind}"] = _Tensor(storages[-1], v2)
    state._metadata = OrderedDict((prefix, {"version": 1}) for prefix in ["", "features", "classifier"])
    return state, storages


def write_torch_zip(path: Path, release) -> None:
    """torch.save (>= 1.6): zip of <archive>/data.pkl, byteorder, data/<key> raw bytes, version."""
    state, storages = _torch_state_dict(release, str, v2=True)
    buffer = io.BytesIO()
    _TorchPickler(buffer, legacy=False).dump(state)
    archive = path.stem
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{archive}/data.pkl", buffer.getvalue())
        zf.writestr(f"{archive}/byteorder", "little")
        for storage in storages:
            zf.writestr(f"{archive}/data/{storage.key}", storage.array.tobytes())
        zf.writestr(f"{archive}/version", "3\n")


def write_torch_legacy(path: Path, release) -> None:
    """Legacy torch.save: pickles of magic number, protocol version, sys info, the state_dict and
    the sorted storage keys, then each storage as int64 element count + raw little-endian data."""
    state, storages = _torch_state_dict(release, lambda i: str(94_000_000 + 64 * i), v2=False)
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 8}}
    with open(path, "wb") as handle:
        for header in (0x1950A86A20F9469CFC6C, 1001, sys_info):
            pickle.dump(header, handle, protocol=2)
        _TorchPickler(handle, legacy=True).dump(state)
        by_key = {storage.key: storage for storage in storages}
        pickle.dump(sorted(by_key), handle, protocol=2)
        for key in sorted(by_key):
            handle.write(struct.pack("<q", by_key[key].array.size) + by_key[key].array.tobytes())


# case: (writer, file name, detected format, layout, release in HWIO / (in, out) layout?)
FORMATS = {
    "npy": (write_npy, "bvlc_alexnet.npy", "npy", "caffe", True),
    "caffemodel": (lambda p, r: write_caffemodel(p, r, legacy=False), "bvlc_alexnet.caffemodel", "caffemodel",
                   "caffe", False),
    "caffemodel-v1": (lambda p, r: write_caffemodel(p, r, legacy=True), "bvlc_alexnet.caffemodel", "caffemodel",
                      "caffe", False),
    "npz": (write_npz, "alexnet_state_dict.npz", "npz", "torchvision", False),
    "pth": (write_torch_zip, "alexnet-owt-7be5be79.pth", "torch", "torchvision", False),
    "pth-legacy": (write_torch_legacy, "alexnet-owt-4df8aa71.pth", "torch-legacy", "torchvision", False),
}
CROP = {"caffe": 227, "torchvision": 224}


@pytest.fixture(scope="module", autouse=True)
def release_cache():
    """Free the cached random releases (about 0.5 GB) when this module's tests are done."""
    yield
    random_release.cache_clear()


@pytest.fixture
def scratch(tmp_path):
    """A temporary folder whose (230 MB) weight files are removed after the test."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def crop(layout: str, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (CROP[layout], CROP[layout], 3), dtype=np.uint8)


def check_fcn_against_classifier(model, release, layout: str, hwio: bool) -> None:
    """conv7 and softmax(conv8) on one crop equal the classifier's fc7 and prob; with fc6 read in
    the wrong order they do not (so the check does catch a silent transpose)."""
    image = crop(layout)
    fc7, prob = reference(release, layout, image, hwio)
    assert (fc7 > 0).mean() > 0.2, "degenerate random weights: most fc7 units are dead"
    conv7, softmax = (np.asarray(output)[0, 0, 0] for output in model(image[None]))
    assert relative_error(conv7, fc7) < 1e-4
    np.testing.assert_allclose(softmax, prob, atol=1e-4)

    conv6 = model.get_layer("conv6")
    kernel, bias = conv6.get_weights()
    conv6.set_weights([misordered(kernel), bias])
    assert relative_error(np.asarray(model(image[None])[0])[0, 0, 0], fc7) > 0.1
    conv6.set_weights([kernel, bias])


@pytest.mark.parametrize("case", list(FORMATS))
def test_release_format_gives_the_classifier(case, scratch):
    writer, name, fmt, layout, hwio = FORMATS[case]
    release = random_release(layout, hwio)
    path = scratch / name
    writer(path, release)
    assert detect_format(path) == fmt

    backbone = build_alexnet(scale=1.0, layout=layout, weights=path, classifier=True)
    check_fcn_against_classifier(backbone.model, release, layout, hwio)


@pytest.mark.slow
def test_cli_imports_once_and_build_loads_the_cache(scratch, monkeypatch, capsys):
    release = random_release("caffe", hwio=True)
    source = scratch / "bvlc_alexnet.npy"
    write_npy(source, release)
    home = scratch / "home"

    assert main(["import", str(source), "--home", str(home)]) == 0
    target = weights_path("caffe", home)
    assert target.is_file() and str(target) in capsys.readouterr().out
    assert main(["list", "--home", str(home)]) == 0
    listing = capsys.readouterr().out
    assert "alexnet_caffe.weights.h5" in listing and "missing" in listing  # torchvision not imported

    assert main(["import", str(source), "--layout", "torchvision", "--home", str(home)]) == 1
    assert "caffe-layout" in capsys.readouterr().err

    monkeypatch.setenv("BINMAP_TF_HOME", str(home))
    backbone = build_alexnet(scale=1.0, layout="caffe", weights="imported", classifier=True)
    check_fcn_against_classifier(backbone.model, release, "caffe", hwio=True)
    dilated = build_alexnet(scale=1.0, layout="caffe", weights="imported", dilated=True)  # same file
    for expected, actual in zip(backbone.model.get_weights(), dilated.model.get_weights()):
        np.testing.assert_array_equal(actual, expected)


def test_own_weights_file_reads_back_unchanged(scratch):
    """A .weights.h5 saved by Keras from the classifier model reads back as the same arrays."""
    rng = np.random.default_rng(3)
    model = build_alexnet_classifier("torchvision", random_weights=False)
    weights = {layer: [rng.random(v.shape, np.float32) for v in model.get_layer(layer).weights]
               for layer in (f"conv{index}" for index in range(1, 9))}
    assign_weights(model, weights)
    path = scratch / "mine.weights.h5"
    model.save_weights(path)
    assert detect_format(path) == "keras"
    layout, read = read_weights(path)  # what `import` converts; the other formats share the rest
    assert layout == "torchvision"
    for name, arrays in weights.items():
        for expected, actual in zip(arrays, read[name]):
            np.testing.assert_array_equal(actual, expected)


def test_pickled_files_cannot_run_code(scratch):
    """Only NumPy array globals are resolved in a .npy: anything else is refused."""
    path = scratch / "evil.npy"
    np.save(path, {"conv1": [fractions.Fraction(1, 2)]}, allow_pickle=True)
    with pytest.raises(pickle.UnpicklingError, match="fractions.Fraction"):
        read_weights(path)


def test_unknown_and_mismatched_files_are_rejected(scratch):
    junk = scratch / "weights.bin"
    junk.write_bytes(b"not weights at all")
    with pytest.raises(ValueError, match="not a weights file"):
        detect_format(junk)
    arrays = scratch / "other.npz"
    np.savez(arrays, something=np.zeros(3))
    with pytest.raises(ValueError, match="lacks the AlexNet layers"):
        read_weights(arrays)
