"""`TableBatch`: what the data layer hands the model — rows of ONE table (or one column subset of it).

Every cell is either numeric-like (numeric, boolean, datetime: a float in `values`) or string-like
(categorical, text: an index into the batch's own string vocabulary in `string_ids`). Missing cells are
flagged in `missing` and carry 0 / -1. Target cells (`target_mask`) keep their true value in
`values` / `string_ids`: the model must hide them itself, which keeps the truth next to the input
and lets pretraining (random masked cells) and fine-tuning (one target column) share one contract.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from basisfm.corpus.manifest import ColumnKind

_TENSOR_FIELDS = (
    "column_kinds",
    "column_name_embeddings",
    "column_abs_max",
    "column_min_nonzero",
    "values",
    "missing",
    "string_ids",
    "vocab_embeddings",
    "target_mask",
)


@dataclass
class TableBatch:
    table_id: str
    column_names: list[str]
    column_kinds: torch.Tensor  # [C] long, ColumnKind values
    column_name_embeddings: torch.Tensor  # [C, E] float32
    column_abs_max: torch.Tensor  # [C] float64, from the manifest (0 for string columns)
    column_min_nonzero: torch.Tensor  # [C] float64, smallest non-zero magnitude (0 when unknown)
    values: torch.Tensor  # [R, C] float64; 0 where missing or string-like
    missing: torch.Tensor  # [R, C] bool
    string_ids: torch.Tensor  # [R, C] long into `vocab`; -1 where missing or numeric-like
    vocab: list[str]  # the batch's unique strings
    vocab_embeddings: torch.Tensor  # [V, E] float32
    target_mask: torch.Tensor  # [R, C] bool: cells to predict

    def __post_init__(self) -> None:
        r, c = self.values.shape
        if self.missing.shape != (r, c) or self.string_ids.shape != (r, c) or self.target_mask.shape != (r, c):
            raise ValueError(f"table {self.table_id!r}: cell tensors disagree on shape {(r, c)}")
        if len(self.column_names) != c or self.column_kinds.shape != (c,):
            raise ValueError(f"table {self.table_id!r}: {c} value columns but {len(self.column_names)} names")
        if self.vocab_embeddings.shape[0] != len(self.vocab):
            raise ValueError(f"table {self.table_id!r}: {len(self.vocab)} strings but {self.vocab_embeddings.shape[0]} embeddings")

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_columns(self) -> int:
        return int(self.values.shape[1])

    @property
    def n_cells(self) -> int:
        return self.n_rows * self.n_columns

    @property
    def is_string_column(self) -> torch.Tensor:
        """[C] bool: categorical or text columns."""
        return (self.column_kinds == ColumnKind.CATEGORICAL) | (self.column_kinds == ColumnKind.TEXT)

    def to(self, device: torch.device | str) -> "TableBatch":
        return replace(self, **{name: getattr(self, name).to(device) for name in _TENSOR_FIELDS})

    def with_targets(self, target_mask: torch.Tensor) -> "TableBatch":
        return replace(self, target_mask=target_mask.to(torch.bool))

    def select_rows(self, rows: torch.Tensor | slice) -> "TableBatch":
        return replace(
            self,
            values=self.values[rows],
            missing=self.missing[rows],
            string_ids=self.string_ids[rows],
            target_mask=self.target_mask[rows],
        )

    # Ray Data moves plain numpy arrays and strings between processes: these two are the wire format.
    def to_arrays(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name).cpu().numpy() for name in _TENSOR_FIELDS}
        out["table_id"] = self.table_id
        out["column_names"] = np.asarray(self.column_names, dtype=object)
        out["vocab"] = np.asarray(self.vocab, dtype=object)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> "TableBatch":
        kwargs: dict[str, Any] = {name: torch.as_tensor(np.asarray(arrays[name])) for name in _TENSOR_FIELDS}
        kwargs["missing"] = kwargs["missing"].to(torch.bool)
        kwargs["target_mask"] = kwargs["target_mask"].to(torch.bool)
        table_id = arrays["table_id"]
        kwargs["table_id"] = str(table_id.item() if isinstance(table_id, np.ndarray) else table_id)
        kwargs["column_names"] = [str(x) for x in list(arrays["column_names"])]
        kwargs["vocab"] = [str(x) for x in list(arrays["vocab"])]
        return cls(**kwargs)

