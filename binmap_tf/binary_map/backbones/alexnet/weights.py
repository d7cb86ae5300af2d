"""Import the public ImageNet AlexNet releases into the FCN AlexNet, without Caffe or PyTorch.

Every reader turns its file into one canonical dict ``{"conv1": [kernel, bias], ...,
"conv8": [kernel, bias]}`` in Keras layout (kernels HWIO; fc6/fc7/fc8 as 6x6 and 1x1 conv
kernels), which is loaded into :func:`~binmap_tf.binary_map.backbones.alexnet.build_alexnet_classifier`
and saved once as ``<home>/alexnet_<layout>.weights.h5``. Formats:

* ``bvlc_alexnet.npy`` (TF port of the Caffe weights): pickled ``{"conv1": [W, b], ...}``, conv
  W HWIO, fc W ``(in, out)`` with fc6's input flattened from pool5 in (H, W, C) order.
* ``.caffemodel`` (Caffe ``NetParameter`` protobuf, new ``layer`` or legacy ``layers``): conv W
  OIHW, fc W ``(out, in)`` with fc6's input flattened in (C, H, W) order.
* torchvision ``state_dict``, as ``.npz`` or as the ``.pth`` itself (zip or legacy format):
  ``features.{0,3,6,8,10}`` and ``classifier.{1,4,6}``, OIHW and ``(out, in)``, (C, H, W).
* this project's own ``.weights.h5`` (``model.save_weights`` of the classifier model).

Pickled files (``.npy`` object arrays, ``.pth``) are read with an unpickler that only
resolves the few NumPy/torch names a weights file needs, so a file cannot run code.

Command line: ``binmap-weights {import,list}`` (:mod:`binmap_tf.cli.weights`).
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import tempfile
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Mapping, Sequence

import h5py
import keras
import numpy as np

from binmap_tf.binary_map.backbones.alexnet.network import (
    FEATURE_DIM,
    LAYOUTS,
    POOL5_SHAPE,
    assign_weights,
    build_alexnet_classifier,
    get_layout,
)
from binmap_tf.common.files import atomic_path
from binmap_tf.common.paths import cache_home

Canonical = dict[str, list[np.ndarray]]

# Input of each fully connected layer as the (H, W, C) block its conv version reads.
FC_INPUTS = {"conv6": POOL5_SHAPE, "conv7": (1, 1, FEATURE_DIM), "conv8": (1, 1, FEATURE_DIM)}
CAFFE_NAMES = {"conv1": "conv1", "conv2": "conv2", "conv3": "conv3", "conv4": "conv4", "conv5": "conv5",
               "fc6": "conv6", "fc7": "conv7", "fc8": "conv8"}
TORCHVISION_NAMES = {"features.0": "conv1", "features.3": "conv2", "features.6": "conv3", "features.8": "conv4",
                     "features.10": "conv5", "classifier.1": "conv6", "classifier.4": "conv7",
                     "classifier.6": "conv8"}
FORMATS = ("npy", "caffemodel", "npz", "torch", "torch-legacy", "keras")
LAYOUT_BY_CONV1_WIDTH = {spec.channels[0]: name for name, spec in LAYOUTS.items()}  # 96: caffe, 64: torchvision
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a legacy (pre-1.6) torch.save file
TORCH_LEGACY_HEAD = pickle.dumps(TORCH_MAGIC, protocol=2)


def weights_path(layout: str, home: str | os.PathLike | None = None) -> Path:
    """Where the imported weights of ``layout`` live: ``<home>/alexnet_<layout>.weights.h5``."""
    return cache_home(home) / f"alexnet_{get_layout(layout).name}.weights.h5"


def missing_weights_message(layout: str, path: Path) -> str:
    """What to do when the imported weights are missing: where they were looked for, where to
    get a public release, and the import command."""
    example = "bvlc_alexnet.npy" if layout == "caffe" else "alexnet-owt-7be5be79.pth"
    return (f"no imported AlexNet weights for layout {layout!r}: looked for {path} "
            "(the cache is $BINMAP_TF_HOME, default ~/.cache/binmap_tf). "
            f"Download {get_layout(layout).releases}, then convert it once with:\n"
            f"    binmap-weights import {example} --layout {layout}\n"
            "or build the backbone with weights=None for random weights.")


# --- format detection --------------------------------------------------------------------

def detect_format(path: str | os.PathLike) -> str:
    """The format of a weights file (one of :data:`FORMATS`), from its content, else its suffix."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(len(TORCH_LEGACY_HEAD))
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(HDF5_SIGNATURE):
        return "keras"
    if head == TORCH_LEGACY_HEAD:
        return "torch-legacy"
    if head.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(name.endswith("data.pkl") for name in names):
            return "torch"
        if names and all(name.endswith(".npy") for name in names):
            return "npz"
    if path.suffix == ".caffemodel":
        return "caffemodel"
    raise ValueError(f"{path}: not a weights file this importer reads (bvlc_alexnet.npy, .caffemodel, "
                     "torchvision .pth or .npz state_dict, or a binmap_tf .weights.h5)")


# --- restricted unpickling -------------------------------------------------------------------

class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``allowed``: a weights file cannot run code.

    ``encoding="latin1"`` reads Python 2 pickles of NumPy arrays (as ``bvlc_alexnet.npy``).
    """

    def __init__(self, file: BinaryIO, allowed: Mapping[tuple[str, str], Any],
                 persistent_load: Callable[[Any], Any] | None = None) -> None:
        super().__init__(file, encoding="latin1")
        self._allowed = allowed
        if persistent_load is not None:
            self.persistent_load = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a weights file only holds "
                                         "arrays") from None


_NUMPY_RECONSTRUCT = np.empty(0).__reduce__()[0]
NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


# --- bvlc_alexnet.npy --------------------------------------------------------------------------

def read_npy_release(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """The ``{layer: [W, b]}`` dict pickled in a ``.npy`` object array (``bvlc_alexnet.npy``)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(handle)
        if dtype != object or shape != ():
            raise ValueError(f"{path}: expected a pickled dict of layers, got a {dtype} array of shape {shape}")
        content = _RestrictedUnpickler(handle, NUMPY_GLOBALS).load()
    layers = content.item() if isinstance(content, np.ndarray) else content
    if not isinstance(layers, dict):
        raise ValueError(f"{path}: expected a dict of layers, got {type(layers).__name__}")
    return {str(name): list(values) for name, values in layers.items()}


# --- Caffe protobuf ---------------------------------------------------------------------------

def _varint(buffer: memoryview, pos: int) -> tuple[int, int]:
    """Decode the base-128 varint at ``pos``; return it and the position after it."""
    value, shift = 0, 0
    while True:
        byte = buffer[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buffer: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Iterate ``(field number, wire type, value)`` over one protobuf message.

    Varints come as ints, fixed-width values and length-delimited fields as memoryviews (no copy).
    """
    pos, end = 0, len(buffer)
    while pos < end:
        key, pos = _varint(buffer, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buffer, pos)
        elif wire == 2:
            length, pos = _varint(buffer, pos)
            value, pos = buffer[pos:pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buffer[pos:pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {field})")
        yield field, wire, value


def _packed_varints(value: int | memoryview) -> list[int]:
    """A repeated integer field: one varint (unpacked) or a packed run of varints."""
    if isinstance(value, int):
        return [value]
    numbers, pos = [], 0
    while pos < len(value):
        number, pos = _varint(value, pos)
        numbers.append(number)
    return numbers


# Caffe's caffe.proto field numbers.
NET_LAYER, NET_LEGACY_LAYERS = 100, 2  # NetParameter.layer (LayerParameter), .layers (V1LayerParameter)
LAYER_FIELDS = {NET_LAYER: (1, 7), NET_LEGACY_LAYERS: (4, 6)}  # (name, blobs)
BLOB_LEGACY_DIMS, BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = (1, 2, 3, 4), 5, 7, 8


def _read_blob(message: memoryview) -> np.ndarray:
    """A ``BlobProto`` as a float32 array of its shape (``shape.dim``, else num/channels/height/width)."""
    legacy = dict.fromkeys(BLOB_LEGACY_DIMS, 1)
    shape: list[int] = []
    chunks: list[np.ndarray] = []
    for field, wire, value in _fields(message):
        if field in BLOB_LEGACY_DIMS and wire == 0:
            legacy[field] = value
        elif field in (BLOB_DATA, BLOB_DOUBLE_DATA):
            if wire != 2:
                raise ValueError("unpacked float data in a BlobProto is not supported (Caffe writes it packed)")
            chunks.append(np.frombuffer(value, "<f4" if field == BLOB_DATA else "<f8"))
        elif field == BLOB_SHAPE:
            shape = [dim for f, _, v in _fields(value) if f == 1 for dim in _packed_varints(v)]
    if not shape:
        shape = [legacy[field] for field in BLOB_LEGACY_DIMS]
    data = chunks[0] if len(chunks) == 1 else np.concatenate(chunks or [np.zeros(0, np.float32)])
    if data.size != int(np.prod(shape)):
        raise ValueError(f"BlobProto holds {data.size} values for shape {shape}")
    return data.astype(np.float32, copy=False).reshape(shape)


def read_caffemodel(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """``{layer name: [blobs]}`` of every layer with blobs in a binary ``.caffemodel``."""
    buffer = memoryview(Path(path).read_bytes())
    layers: dict[str, list[np.ndarray]] = {}
    for field, wire, value in _fields(buffer):
        if field not in LAYER_FIELDS or wire != 2:
            continue
        name_field, blobs_field = LAYER_FIELDS[field]
        name, blobs = None, []
        for sub_field, _, sub_value in _fields(value):
            if sub_field == name_field:
                name = bytes(sub_value).decode("utf-8")
            elif sub_field == blobs_field:
                blobs.append(_read_blob(sub_value))
        if name is not None and blobs:
            layers[name] = blobs
    if not layers:
        raise ValueError(f"{path}: no layer with weights found; is it a binary .caffemodel?")
    return layers


# --- torch state_dict (.pth: zip or legacy format; .npz export) ---------------------------------

@dataclass(frozen=True)
class _TorchStorage:
    """A storage referenced by a pickled tensor; its bytes are read after unpickling."""

    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TorchTensor:
    """A strided view of a :class:`_TorchStorage`, as ``torch._utils._rebuild_tensor_v2`` builds it."""

    storage: _TorchStorage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self, flat: np.ndarray) -> np.ndarray:
        """The tensor's values as a float32 array, read from its storage's ``flat`` data."""
        last = self.offset + sum((size - 1) * step for size, step in zip(self.size, self.stride))
        if min(self.size, default=1) > 0 and last >= flat.size:
            raise ValueError(f"tensor of size {self.size} runs past its storage of {flat.size} elements")
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.size,
                                               strides=[step * flat.itemsize for step in self.stride])
        return np.array(view, dtype=np.float32)


def _rebuild_tensor(storage: _TorchStorage, offset: int, size: Sequence[int], stride: Sequence[int],
                    *_: Any) -> _TorchTensor:
    """Stand-in for ``torch._utils._rebuild_tensor`` and ``_rebuild_tensor_v2`` (extra args ignored)."""
    return _TorchTensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: _TorchTensor, *_: Any) -> _TorchTensor:
    """Stand-in for ``torch._utils._rebuild_parameter``: a parameter is its tensor."""
    return data


TORCH_STORAGE_DTYPES = {"FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2"}
TORCH_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): code for name, code in TORCH_STORAGE_DTYPES.items()},
}


def _unpickle_state_dict(handle: BinaryIO, byteorder: str) -> dict[str, _TorchTensor]:
    """Unpickle a torch ``state_dict`` into :class:`_TorchTensor` references."""

    def persistent_load(saved_id: tuple) -> _TorchStorage:
        kind = saved_id[0].decode() if isinstance(saved_id[0], bytes) else saved_id[0]
        if kind != "storage" or saved_id[1] not in TORCH_STORAGE_DTYPES.values():
            raise pickle.UnpicklingError(f"unsupported torch storage {saved_id[:2]}")
        if len(saved_id) > 5 and saved_id[5] is not None:
            raise pickle.UnpicklingError("torch storage views are not supported")
        return _TorchStorage(str(saved_id[2]), np.dtype(byteorder + saved_id[1]), int(saved_id[4]))

    state = _RestrictedUnpickler(handle, TORCH_GLOBALS, persistent_load).load()
    if not isinstance(state, dict) or not all(isinstance(v, _TorchTensor) for v in state.values()):
        raise ValueError("the torch file does not hold a state_dict of tensors")
    return dict(state)


def _read_torch_zip(path: Path) -> dict[str, np.ndarray]:
    """A ``torch.save`` zip (torch >= 1.6): ``<archive>/data.pkl`` + raw ``<archive>/data/<key>``."""
    with zipfile.ZipFile(path) as archive:
        pickle_name = next(name for name in archive.namelist() if name.endswith("data.pkl"))
        prefix = pickle_name[:-len("data.pkl")]
        byteorder = "<"
        if prefix + "byteorder" in archive.namelist():
            byteorder = "<" if archive.read(prefix + "byteorder").strip() == b"little" else ">"
        tensors = _unpickle_state_dict(io.BytesIO(archive.read(pickle_name)), byteorder)
        flats = {}
        for tensor in tensors.values():
            storage = tensor.storage
            if storage.key not in flats:
                flats[storage.key] = np.frombuffer(archive.read(f"{prefix}data/{storage.key}"),
                                                   storage.dtype, count=storage.numel)
    return {name: tensor.materialize(flats[tensor.storage.key]) for name, tensor in tensors.items()}


def _read_torch_legacy(path: Path) -> dict[str, np.ndarray]:
    """A legacy ``torch.save`` stream: magic, protocol, system info and the state_dict pickles,
    the list of storage keys, then each storage as an int64 element count and raw data."""
    with open(path, "rb") as handle:
        magic, _, sys_info = (_RestrictedUnpickler(handle, {}).load() for _ in range(3))
        if magic != TORCH_MAGIC:
            raise ValueError(f"{path}: not a torch file (bad magic number)")
        byteorder = "<" if sys_info.get("little_endian", True) else ">"
        tensors = _unpickle_state_dict(handle, byteorder)
        keys = _RestrictedUnpickler(handle, {}).load()
        storages = {tensor.storage.key: tensor.storage for tensor in tensors.values()}
        flats = {}
        for key in keys:
            storage = storages[str(key)]
            (numel,) = struct.unpack(byteorder + "q", handle.read(8))
            flats[storage.key] = np.frombuffer(handle.read(numel * storage.dtype.itemsize), storage.dtype)
    return {name: tensor.materialize(flats[tensor.storage.key]) for name, tensor in tensors.items()}


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """A state_dict exported as ``np.savez(f, **{k: v.numpy() for k, v in state_dict.items()})``."""
    with np.load(path, allow_pickle=False) as arrays:
        return dict(arrays)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A torchvision ``state_dict`` as arrays, from a ``.pth`` (zip or legacy) or ``.npz`` file."""
    path = Path(path)
    reader = {"torch": _read_torch_zip, "torch-legacy": _read_torch_legacy, "npz": _read_npz}
    fmt = detect_format(path)
    if fmt not in reader:
        raise ValueError(f"{path}: a {fmt} file, not a torch state_dict")
    return reader[fmt](path)


# --- conversion to the canonical (Keras) layout --------------------------------------------------

def _conv_kernel(weight: np.ndarray, name: str, oihw: bool) -> np.ndarray:
    """A conv layer's kernel in HWIO, or fc6/fc7/fc8 reshaped into the conv kernel that reads the
    same input block. ``oihw`` files (Caffe blobs, torch) store fc weights ``(out, in)`` with the
    input flattened in (C, H, W) order; the TF port stores ``(in, out)`` flattened in (H, W, C)."""
    weight = np.asarray(weight, np.float32)
    if name not in FC_INPUTS:
        return weight.transpose(2, 3, 1, 0) if oihw else weight
    if weight.ndim > 2 and all(dim == 1 for dim in weight.shape[:-2]):
        weight = weight.reshape(weight.shape[-2:])  # legacy Caffe blobs are (1, 1, out, in)
    height, width, channels = FC_INPUTS[name]
    inputs = height * width * channels
    if weight.ndim != 2 or weight.shape[1 if oihw else 0] != inputs:
        layout = "(out, in)" if oihw else "(in, out)"
        raise ValueError(f"{name}: expected a {layout} matrix with in = {inputs}, got shape {weight.shape}")
    if oihw:
        return weight.reshape(-1, channels, height, width).transpose(2, 3, 1, 0)
    return weight.reshape(height, width, channels, -1)


def to_canonical(layers: Mapping[str, Sequence[np.ndarray]], names: Mapping[str, str], oihw: bool) -> Canonical:
    """Map a release's ``{source name: [W, b]}`` to ``{conv1..conv8: [kernel HWIO, bias]}``."""
    missing = [source for source in names if source not in layers]
    if missing:
        raise ValueError(f"the file lacks the AlexNet layers {missing} (found {sorted(layers)})")
    return {target: [_conv_kernel(layers[source][0], target, oihw), np.asarray(layers[source][1], np.float32).ravel()]
            for source, target in names.items()}


def _torchvision_layers(state: Mapping[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Group a torchvision ``state_dict``'s ``<prefix>.weight`` / ``<prefix>.bias`` by prefix."""
    return {prefix: [state[f"{prefix}.weight"], state[f"{prefix}.bias"]]
            for prefix in TORCHVISION_NAMES if f"{prefix}.weight" in state and f"{prefix}.bias" in state}


def keras_weights_layout(path: str | os.PathLike) -> str:
    """The layout of a binmap_tf ``.weights.h5``, from its conv1 kernel (11x11x3x96 or x64)."""
    shapes: list[tuple[int, ...]] = []
    with h5py.File(path, "r") as file:
        file.visititems(lambda _, item: shapes.append(item.shape) if isinstance(item, h5py.Dataset) else None)
    for shape in shapes:
        if len(shape) == 4 and shape[:3] == (11, 11, 3) and shape[3] in LAYOUT_BY_CONV1_WIDTH:
            return LAYOUT_BY_CONV1_WIDTH[shape[3]]
    raise ValueError(f"{path}: not an AlexNet .weights.h5 (no 11x11x3 conv1 kernel)")


def read_weights(path: str | os.PathLike, layout: str | None = None) -> tuple[str, Canonical]:
    """Read any supported weights file; return its layout and the canonical weights.

    The layout comes from the conv1 width (96 Caffe, 64 torchvision); ``layout``, when given,
    must agree.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "npy":
        weights = to_canonical(read_npy_release(path), CAFFE_NAMES, oihw=False)
    elif fmt == "caffemodel":
        weights = to_canonical(read_caffemodel(path), CAFFE_NAMES, oihw=True)
    elif fmt == "keras":
        model = build_alexnet_classifier(keras_weights_layout(path), random_weights=False)
        model.load_weights(path)
        weights = {f"conv{index}": model.get_layer(f"conv{index}").get_weights() for index in range(1, 9)}
    else:
        weights = to_canonical(_torchvision_layers(read_state_dict(path)), TORCHVISION_NAMES, oihw=True)
    found = LAYOUT_BY_CONV1_WIDTH.get(weights["conv1"][0].shape[-1])
    if found is None:
        raise ValueError(f"{path}: conv1 has {weights['conv1'][0].shape[-1]} filters, not an AlexNet layout "
                         f"({sorted(LAYOUT_BY_CONV1_WIDTH)})")
    if layout is not None and get_layout(layout).name != found:
        raise ValueError(f"{path} holds {found}-layout weights, not {layout!r}")
    return found, weights


def resolve_weights(weights: str | os.PathLike, layout: str) -> Path:
    """The file behind ``weights``: ``"imported"`` is the cached import of ``layout`` (a
    :class:`FileNotFoundError` that says how to get it when missing), anything else a path."""
    path = weights_path(layout) if str(weights) == "imported" else Path(weights)
    if not path.is_file():
        raise FileNotFoundError(missing_weights_message(layout, path) if str(weights) == "imported"
                                else f"weights file not found: {path}")
    return path


def load_weights_into(model: keras.Model, path: str | os.PathLike, layout: str) -> None:
    """Load a weights file of any supported format into a model built by
    :func:`build_alexnet_classifier` for ``layout`` (a ``.weights.h5`` directly, others converted)."""
    if detect_format(path) == "keras":
        found = keras_weights_layout(path)
        if found != layout:
            raise ValueError(f"{path} holds {found}-layout weights, not {layout!r}")
        model.load_weights(path)
    else:
        assign_weights(model, read_weights(path, layout)[1])


def save_weights(model: keras.Model, path: Path) -> None:
    """``model.save_weights`` to ``path`` atomically (Keras insists on a ``.weights.h5`` name)."""
    with atomic_path(path) as tmp, tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        staged = Path(scratch) / path.name
        model.save_weights(staged)
        os.replace(staged, tmp)


def import_weights(path: str | os.PathLike, layout: str | None = None,
                   home: str | os.PathLike | None = None) -> Path:
    """Convert a weights file once into ``<home>/alexnet_<layout>.weights.h5``; return its path."""
    found, weights = read_weights(path, layout)
    model = build_alexnet_classifier(found, random_weights=False)
    assign_weights(model, weights)
    target = weights_path(found, home)
    save_weights(model, target)
    return target


def imported_weights(home: str | os.PathLike | None = None) -> dict[str, Path | None]:
    """``{layout: path of its imported weights, or None}``."""
    return {layout: path if (path := weights_path(layout, home)).is_file() else None for layout in LAYOUTS}
