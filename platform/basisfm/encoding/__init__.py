"""Turning cells into vectors: numeric encoders (SMR family and baselines), column semantics, missing values.

Exports load on first use (PEP 562), as in `basisfm.data`: the data pipeline's collating actors import
`basisfm.encoding.text` and must not pay for importing torch through this package's encoders.
`encoding.text` (the sentence-transformer StringEmbedder) is never imported from here.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DigitsEncoder": "basisfm.encoding.baselines",
    "FixedPointEncoder": "basisfm.encoding.baselines",
    "LogBinsEncoder": "basisfm.encoding.baselines",
    "PeriodicEncoder": "basisfm.encoding.baselines",
    "ColumnEncoder": "basisfm.encoding.columns",
    "symbolic_name_features": "basisfm.encoding.columns",
    "MissingValueStrategy": "basisfm.encoding.missing",
    "build_missing_strategy": "basisfm.encoding.missing",
    "DynamicSMREncoder": "basisfm.encoding.numeric",
    "HybridSMREncoder": "basisfm.encoding.numeric",
    "NumericEncoder": "basisfm.encoding.numeric_base",
    "SMREncoder": "basisfm.encoding.numeric",
    "build_numeric_encoder": "basisfm.encoding.numeric",
    "target_codec": "basisfm.encoding.numeric",
    "SMRCodec": "basisfm.encoding.smr",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'basisfm.encoding' has no attribute {name!r}")
