"""Streaming the corpus: dynamic column batching into `TableBatch`es, their wire format, and the Ray Data pipeline.

Exports load on first use (PEP 562), so `import basisfm.data.collate` inside a Ray actor does not
pull in torch, and model code reading `TableBatch` does not pull in Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TableBatch": "basisfm.data.batch",
    "table_to_batches": "basisfm.data.collate",
    "encode_batch": "basisfm.data.wire",
    "decode_batch": "basisfm.data.wire",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'basisfm.data' has no attribute {name!r}")
