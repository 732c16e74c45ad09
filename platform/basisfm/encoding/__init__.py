"""Turning cells into vectors: numeric encoders (SMR family and baselines), column semantics, missing values.

`encoding.text` (the sentence-transformer StringEmbedder) is imported on demand only: it pulls in
sentence-transformers, which the model itself never needs.
"""

from basisfm.encoding.baselines import DigitsEncoder, FixedPointEncoder, LogBinsEncoder, PeriodicEncoder
from basisfm.encoding.columns import ColumnEncoder, symbolic_name_features
from basisfm.encoding.missing import MissingValueStrategy, build_missing_strategy
from basisfm.encoding.numeric import (
    DynamicSMREncoder,
    HybridSMREncoder,
    NumericEncoder,
    SMREncoder,
    build_numeric_encoder,
    target_codec,
)
from basisfm.encoding.smr import SMRCodec

__all__ = [
    "ColumnEncoder",
    "DigitsEncoder",
    "DynamicSMREncoder",
    "FixedPointEncoder",
    "HybridSMREncoder",
    "LogBinsEncoder",
    "MissingValueStrategy",
    "NumericEncoder",
    "PeriodicEncoder",
    "SMRCodec",
    "SMREncoder",
    "build_missing_strategy",
    "build_numeric_encoder",
    "symbolic_name_features",
    "target_codec",
]
