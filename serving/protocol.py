"""What the exporter, the server and the client agree on: names, limits and the model info.

Every response of the image signatures carries a ``geometry`` output (one JSON string per
image, the content of ``<version>/assets.extra/binmap.json``), so a client always reads the
grid geometry of the very version that computed the map, even while the server switches
versions, and needs no second request. A separate constant-only signature would not do: TF
Serving's server-side batching needs at least one batched input and batched outputs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from binmap_tf.geometry import GridGeometry

DEFAULT_MODEL_NAME = "binmap"
IMAGES_SIGNATURE = "serving_default"  # images: uint8 [batch, height, width, 3]
ENCODED_SIGNATURE = "encoded"  # image_bytes: string [batch] of JPEG/PNG/BMP/GIF files
IMAGES_INPUT = "images"
ENCODED_INPUT = "image_bytes"
MAP_OUTPUTS = ("bits", "codes", "logits")
GEOMETRY_OUTPUT = "geometry"
INFO_FILE = "binmap.json"  # in <version>/assets.extra/
WARMUP_FILE = "tf_serving_warmup_requests"  # in <version>/assets.extra/, read by TF Serving
BIT_ORDER = "msb-first"  # codes = sum_j bits[j] << (k - 1 - j), as binmap_tf.binary_map.pack_bits

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

    @property
    def geometry(self) -> GridGeometry:
        return GridGeometry(stride=self.stride, offset=self.offset, receptive_field=self.receptive_field)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelInfo":
        return cls(**json.loads(text))
