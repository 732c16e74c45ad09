"""`TableBatch`: what the data layer hands the model — rows of ONE table (or one column subset of it).

Every cell is either numeric-like (numeric, boolean, datetime: a float in `values`) or string-like
(categorical, text: an index into the batch's own string vocabulary in `string_ids`). Missing cells are
flagged in `missing` and carry 0 / -1. Target cells (`target_mask`) keep their true value in
`values` / `string_ids`: the model must hide them itself, which keeps the truth next to the input
and lets pretraining (random masked cells) and fine-tuning (one target column) share one contract.

An **episode** is a TableBatch whose rows are split by `support`: support rows show their target cells
to the model (the labelled context of in-context learning), the other rows are queries whose target
cells are hidden. A plain batch has no support rows: every target cell is hidden (the per-row model).
`row_index` is each row's position in its source table, so predictions map back to rows without
replaying collation's random draws.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from basisfm.corpus.manifest import ColumnKind

TENSOR_FIELDS = (
    "column_kinds",
    "column_name_embeddings",
    "column_abs_max",
    "column_min_nonzero",
    "values",
    "missing",
    "string_ids",
    "vocab_embeddings",
    "target_mask",
    "row_index",
    "support",
    "column_mean",
    "column_std",
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
    row_index: torch.Tensor | None = None  # [R] long: each row's index in its table (default 0..R-1)
    support: torch.Tensor | None = None  # [R] bool: rows whose target cells are given as context (default none)
    # [C] float64: the scale a numeric target is standardised with (z = (y - mean) / std) by the binned
    # regression head: collation fills the whole table's statistics, episodes their support rows',
    # estimators the training rows'. Defaults 0 / 1; string columns keep the defaults.
    column_mean: torch.Tensor | None = None
    column_std: torch.Tensor | None = None

    def __post_init__(self) -> None:
        r, c = self.values.shape
        device = self.values.device
        if self.row_index is None:
            self.row_index = torch.arange(r, dtype=torch.long, device=device)
        if self.support is None:
            self.support = torch.zeros(r, dtype=torch.bool, device=device)
        self.support = self.support.to(torch.bool)
        if self.column_mean is None:
            self.column_mean = torch.zeros(c, dtype=torch.float64, device=device)
        if self.column_std is None:
            self.column_std = torch.ones(c, dtype=torch.float64, device=device)
        if self.column_mean.shape != (c,) or self.column_std.shape != (c,):
            raise ValueError(f"table {self.table_id!r}: column_mean / column_std must have one entry per column ({c})")
        if self.row_index.shape != (r,) or self.support.shape != (r,):
            raise ValueError(f"table {self.table_id!r}: row_index / support must have one entry per row ({r})")
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
    def n_support(self) -> int:
        return int(self.support.sum())

    @property
    def query_target_mask(self) -> torch.Tensor:
        """[R, C] bool: target cells whose truth is hidden from the model (targets of non-support rows)."""
        return self.target_mask & ~self.support.unsqueeze(-1)

    @property
    def is_string_column(self) -> torch.Tensor:
        """[C] bool: categorical or text columns."""
        return (self.column_kinds == ColumnKind.CATEGORICAL) | (self.column_kinds == ColumnKind.TEXT)

    def to(self, device: torch.device | str) -> "TableBatch":
        return replace(self, **{name: getattr(self, name).to(device) for name in TENSOR_FIELDS})

    def with_targets(self, target_mask: torch.Tensor) -> "TableBatch":
        return replace(self, target_mask=target_mask.to(torch.bool))

    def select_rows(self, rows: torch.Tensor | slice) -> "TableBatch":
        return replace(
            self,
            values=self.values[rows],
            missing=self.missing[rows],
            string_ids=self.string_ids[rows],
            target_mask=self.target_mask[rows],
            row_index=self.row_index[rows],
            support=self.support[rows],
        )

    # Ray Data moves plain numpy arrays and strings between processes: these two are the wire format.
    def to_arrays(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name).cpu().numpy() for name in TENSOR_FIELDS}
        out["table_id"] = self.table_id
        out["column_names"] = np.asarray(self.column_names, dtype=object)
        out["vocab"] = np.asarray(self.vocab, dtype=object)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> "TableBatch":
        kwargs: dict[str, Any] = {name: torch.as_tensor(np.asarray(arrays[name])) for name in TENSOR_FIELDS
                                  if arrays.get(name) is not None}
        kwargs["missing"] = kwargs["missing"].to(torch.bool)
        kwargs["target_mask"] = kwargs["target_mask"].to(torch.bool)
        table_id = arrays["table_id"]
        kwargs["table_id"] = str(table_id.item() if isinstance(table_id, np.ndarray) else table_id)
        kwargs["column_names"] = [str(x) for x in list(arrays["column_names"])]
        kwargs["vocab"] = [str(x) for x in list(arrays["vocab"])]
        return cls(**kwargs)

