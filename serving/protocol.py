"""What the exporter, the server and the client agree on: names, limits and the model info.

Every response of the image signatures carries a ``geometry`` output (one JSON string per
image, the content of ``<version>/assets.extra/binmap.json``), so a client always reads the
grid geometry of the very version that computed the map, even while the server switches
versions, and needs no second request. A separate constant-only signature would not do: TF
Serving's server-side batching needs at least one batched input and batched outputs.

The edge map (HED's boundary probability, which the merge hierarchy and its learned scorer
read) has signatures of its own, ``with_edges`` and ``encoded_with_edges``: float32 at the
input's resolution, it is about 20 times the bytes of the codes (617 KB against 28 KB for a
321x481 image), so a client that merges by codes alone keeps using ``serving_default`` and
neither receives nor computes it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from binmap_tf.binary_map.geometry import GridGeometry

DEFAULT_MODEL_NAME = "binmap"
IMAGES_SIGNATURE = "serving_default"  # images: uint8 [batch, height, width, 3]
ENCODED_SIGNATURE = "encoded"  # image_bytes: string [batch] of JPEG/PNG/BMP/GIF files
EDGES_SIGNATURE = "with_edges"  # as serving_default, plus the edge map
ENCODED_EDGES_SIGNATURE = "encoded_with_edges"  # as encoded, plus the edge map
# (encoded input, with edges) -> signature name.
SIGNATURES = {(False, False): IMAGES_SIGNATURE, (True, False): ENCODED_SIGNATURE,
              (False, True): EDGES_SIGNATURE, (True, True): ENCODED_EDGES_SIGNATURE}
IMAGES_INPUT = "images"
ENCODED_INPUT = "image_bytes"
MAP_OUTPUTS = ("bits", "codes", "logits")
GEOMETRY_OUTPUT = "geometry"
EDGES_OUTPUT = "edges"  # float32 [batch, height, width]: the backbone's edge probability, full precision
INFO_FILE = "binmap.json"  # in <version>/assets.extra/
WARMUP_FILE = "tf_serving_warmup_requests"  # in <version>/assets.extra/, read by TF Serving
BIT_ORDER = "msb-first"  # codes = sum_j bits[j] << (k - 1 - j), as binmap_tf.binary_map.maps.pack_bits

# vgg16-hed in fp32 on a CPU peaks at about 1.3 KB of activations per input pixel (measured with
# ru_maxrss: +1.28 GiB for 1024x1024, +2.5 GiB for 1448x1448, over the ~0.8 GiB of the loaded
# model). A 4000x3000 photo (12 MP) would need ~15 GiB and get the server killed by the kernel;
# 4 MP per request (or merged batch), e.g. 2048x2048 or 27 BSDS500 images, needs ~5 GiB more,
# which a 16 GiB host spares. Raise --max-pixels only on a host with that memory to spare.
ACTIVATION_BYTES_PER_PIXEL = 1300
DEFAULT_MAX_PIXELS = 4 * 1024 * 1024

# gRPC's default 4 MB message limit is too small for a batch of photos or their logits; TF
# Serving itself accepts up to 2 GB, so the client and the loopback server raise theirs to match.
MAX_MESSAGE_BYTES = 1 << 30
GRPC_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)


@dataclass(frozen=True)
class ModelInfo:
    """How to read a served model's maps: backbone, code length, bit order and grid geometry."""

    backbone: str
    backbone_options: dict
    bits: int
    scale: float
    stride: float
    offset: float
    receptive_field: float
    min_image_side: int
    bit_order: str = BIT_ORDER
    # The geometry bounding every output (Backbone.tiling_geometry), which aligns a client's tiles;
    # None in exports that predate client-side tiling.
    context_stride: float | None = None
    context_offset: float | None = None
    context_receptive_field: float | None = None

    @property
    def geometry(self) -> GridGeometry:
        return GridGeometry(stride=self.stride, offset=self.offset, receptive_field=self.receptive_field)

    @property
    def tiling_geometry(self) -> GridGeometry | None:
        """What :func:`binmap_tf.binary_map.tiling.plan_tiles` aligns tiles to; None when the export did not record it."""
        if self.context_stride is None:
            return None
        return GridGeometry(stride=self.context_stride, offset=self.context_offset,
                            receptive_field=self.context_receptive_field)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelInfo":
        return cls(**json.loads(text))
