"""Codecs for DVID's on-the-wire block formats.

* :mod:`dvid_store.codecs.labelblock`: DVID's compressed label block encoding
  (labelmap / labelarray blocks), vectorised with numpy, plus its gzip wire form.
* :mod:`dvid_store.codecs.numcodecs_codec`: the same as a numcodecs codec
  (``codec_id = "dvid_labelblock"``), registered on import.
"""

from .labelblock import (
    DEFAULT_GZIP_LEVEL,
    MAX_BLOCK_SIZE,
    SUBBLOCK_SIZE,
    LabelBlockError,
    decode_gzipped_label_block,
    decode_label_block,
    encode_gzipped_label_block,
    encode_label_block,
    label_block_labels,
    label_block_shape,
    load_label_block_decoder,
)
from .numcodecs_codec import DvidLabelBlockCodec

__all__ = [
    "DEFAULT_GZIP_LEVEL",
    "MAX_BLOCK_SIZE",
    "SUBBLOCK_SIZE",
    "DvidLabelBlockCodec",
    "LabelBlockError",
    "decode_gzipped_label_block",
    "decode_label_block",
    "encode_gzipped_label_block",
    "encode_label_block",
    "label_block_labels",
    "label_block_shape",
    "load_label_block_decoder",
]
