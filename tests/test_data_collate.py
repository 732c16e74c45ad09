"""Dynamic column batching and the TableBatch wire format, without Ray or the sentence encoder."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest
import torch

from basisfm.config import DataConfig
from basisfm.corpus.manifest import ColumnKind, ColumnRecord, ColumnStats, TableRecord
from basisfm.data.collate import column_cap, group_columns_by_name, table_to_batches
from basisfm.data.pipeline import split_tables
from basisfm.data.wire import decode_batch, encode_batch
from basisfm.errors import ConfigError, InputTypeError, TableError


class PrefixEmbedder:
    """Deterministic stand-in for MiniLM: strings sharing a prefix before '_' get nearby vectors."""

    def __init__(self):
        self.calls: list[list[str]] = []

    @staticmethod
    def _vector(text: str, dim: int = 384) -> np.ndarray:
        def seeded(s: str) -> np.ndarray:
            seed = int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "little")
            return np.random.default_rng(seed).normal(size=dim)

        return (seeded(text.split("_")[0]) + 0.1 * seeded(text)).astype(np.float32)

    def embed(self, strings):
        self.calls.append(list(strings))
        return np.stack([self._vector(s) for s in strings]) if strings else np.zeros((0, 384), np.float32)


def make_table(n_rows: int, n_numeric: int, *, seed: int = 0, names: list[str] | None = None):
    """A table whose numeric cell (r, j) holds r * 1000 + j, so every cell can be traced back; plus a
    categorical and a text column with some missing cells."""
    rng = np.random.default_rng(seed)
    names = names or [f"x{j}" for j in range(n_numeric)]
    data = {name: np.arange(n_rows) * 1000.0 + j for j, name in enumerate(names)}
    colour = rng.choice(["red", "green", "blue"], n_rows).astype(object)
    colour[::7] = None
    data["colour"] = colour
    data["note"] = [f"note number {r} about row {r % 5}" if r % 3 else None for r in range(n_rows)]
    table = pa.table(data)
    columns = [
        ColumnRecord(name, "numeric", ColumnStats(abs_max=n_rows * 1000.0, min_nonzero_abs=float(j) or 1.0))
        for j, name in enumerate(names)
    ]
    columns += [ColumnRecord("colour", "categorical"), ColumnRecord("note", "text")]
    record = TableRecord(
        id="test/table", source="test", locator="mem", fingerprint="fp", shard="shards/t.parquet", n_rows=n_rows, columns=columns
    )
    return table, record


def config(**overrides) -> DataConfig:
    base = dict(token_budget=256, max_columns=8, min_rows=4, max_rows=64, mask_rate=0.25)
    base.update(overrides)
    cfg = DataConfig(**base)
    cfg.validate("data")
    return cfg


def test_batches_respect_token_budget_and_tile_every_cell_once():
    table, record = make_table(n_rows=150, n_numeric=30)
    cfg = config()
    batches = table_to_batches(table, record, cfg, PrefixEmbedder(), seed=3)
    seen = np.zeros((150, 32), dtype=int)
    names = [c.name for c in record.columns]
    for batch in batches:
        assert batch.n_cells <= cfg.token_budget
        assert batch.n_columns <= cfg.max_columns
        assert batch.n_rows <= cfg.max_rows
        numeric = [i for i, n in enumerate(batch.column_names) if n.startswith("x")]
        assert numeric, "every subset of this table holds numeric columns"
        # Row identity comes back from the numeric values: r * 1000 + j.
        row_ids = (batch.values[:, numeric[0]] // 1000).long().numpy()
        for i, name in enumerate(batch.column_names):
            seen[row_ids, names.index(name)] += 1
    assert (seen == 1).all(), "each cell of the table appears in exactly one batch per epoch"


def test_column_subsets_rotate_and_cover_every_column():
    table, record = make_table(n_rows=200, n_numeric=30)
    cfg = config()
    batches = table_to_batches(table, record, cfg, PrefixEmbedder(), seed=0)
    all_names = {c.name for c in record.columns}
    assert set().union(*(b.column_names for b in batches)) == all_names
    subsets = {tuple(b.column_names) for b in batches}
    per_chunk = len(batches) / len(subsets)
    # A fresh partition per row chunk: many more distinct subsets than one partition has.
    n_groups = -(-32 // cfg.max_columns)
    assert len(subsets) > n_groups and per_chunk < 2


def test_min_rows_lowers_the_column_cap_so_the_budget_holds():
    cfg = config(token_budget=64, max_columns=32, min_rows=16)
    assert column_cap(cfg) == 4
    table, record = make_table(n_rows=40, n_numeric=10)
    for batch in table_to_batches(table, record, cfg, PrefixEmbedder(), seed=0):
        assert batch.n_cells <= 64 and batch.n_columns <= 4


def test_grouping_by_name_keeps_related_columns_together():
    names = [f"{prefix}_{i}" for prefix in ("price", "weight", "height", "income") for i in range(6)]
    rng = np.random.default_rng(1)
    emb = PrefixEmbedder().embed(names)
    order = rng.permutation(len(names))
    groups = group_columns_by_name(emb[order], group_size=6, rng=np.random.default_rng(0))
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(names)))
    for group in groups:
        assert len(group) <= 6
        assert len({names[order[i]].split("_")[0] for i in group}) == 1, "each cluster holds one name family"

    table, record = make_table(n_rows=60, n_numeric=len(names), names=names)
    batches = table_to_batches(table, record, config(group_columns_by_name=True), PrefixEmbedder(), seed=0)
    assert set().union(*(b.column_names for b in batches)) == {c.name for c in record.columns}
    assert all(b.n_columns <= 8 for b in batches)


def test_same_seed_same_batches_other_seed_other_batches():
    table, record = make_table(n_rows=120, n_numeric=20)
    a = table_to_batches(table, record, config(), PrefixEmbedder(), seed=7)
    b = table_to_batches(table, record, config(), PrefixEmbedder(), seed=7)
    c = table_to_batches(table, record, config(), PrefixEmbedder(), seed=8)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.column_names == y.column_names and x.vocab == y.vocab
        assert torch.equal(x.values, y.values) and torch.equal(x.target_mask, y.target_mask)
    assert [x.column_names for x in a] != [z.column_names for z in c] or any(
        not torch.equal(x.values, z.values) for x, z in zip(a, c)
    )


def test_pretraining_targets_follow_mask_rate_and_skip_text_and_missing_cells():
    table, record = make_table(n_rows=200, n_numeric=6)
    cfg = config(mask_rate=0.3, max_columns=16)
    batches = table_to_batches(table, record, cfg, PrefixEmbedder(), seed=0)
    masked, eligible_cells = 0, 0
    for batch in batches:
        text = batch.column_kinds == ColumnKind.TEXT
        assert not batch.target_mask[:, text].any(), "text cells are inputs only"
        assert not (batch.target_mask & batch.missing).any(), "a missing cell has no truth to predict"
        eligible = ~batch.missing & ~text[None, :]
        rows_with_any = eligible.any(dim=1)
        assert (batch.target_mask.sum(dim=1)[rows_with_any] >= 1).all()
        masked += int(batch.target_mask.sum())
        eligible_cells += int(eligible.sum())
    assert abs(masked / eligible_cells - 0.3) < 0.05


def test_fine_tuning_marks_the_target_column_in_every_subset():
    table, record = make_table(n_rows=80, n_numeric=20)
    batches = table_to_batches(table, record, config(), PrefixEmbedder(), seed=0, target_columns=["colour"])
    for batch in batches:
        j = batch.column_names.index("colour")
        assert torch.equal(batch.target_mask[:, j], ~batch.missing[:, j])
        assert batch.target_mask.sum() == batch.target_mask[:, j].sum()
    with pytest.raises(TableError, match="'nope'"):
        table_to_batches(table, record, config(), PrefixEmbedder(), seed=0, target_columns=["nope"])
    with pytest.raises(TableError, match="'note'.*inputs only"):
        table_to_batches(table, record, config(), PrefixEmbedder(), seed=0, target_columns=["note"])


def test_strings_map_to_their_vocabulary_and_embeddings():
    table, record = make_table(n_rows=50, n_numeric=3)
    embedder = PrefixEmbedder()
    (batch,) = table_to_batches(table, record, config(max_columns=16), embedder, seed=0)
    truth = table.column("colour").to_pylist()
    row_ids = (batch.values[:, batch.column_names.index("x0")] // 1000).long().tolist()
    j = batch.column_names.index("colour")
    for r, row in enumerate(row_ids):
        sid = int(batch.string_ids[r, j])
        assert (batch.vocab[sid] if sid >= 0 else None) == truth[row]
        assert bool(batch.missing[r, j]) == (truth[row] is None)
    assert torch.allclose(batch.vocab_embeddings, torch.from_numpy(embedder.embed(batch.vocab)))
    assert torch.allclose(batch.column_name_embeddings, torch.from_numpy(embedder.embed(batch.column_names)))
    assert batch.column_abs_max[0] == 50_000.0
    numeric = ~batch.is_string_column
    assert (batch.string_ids[:, numeric] == -1).all()


def test_wire_round_trip_is_exact_and_rejects_foreign_bytes():
    table, record = make_table(n_rows=30, n_numeric=4)
    batches = table_to_batches(table, record, config(max_columns=3), PrefixEmbedder(), seed=0)
    assert any(len(b.vocab) == 0 for b in batches), "an all-numeric subset exercises the empty vocabulary"
    for batch in batches:
        back = decode_batch(encode_batch(batch))
        assert back.table_id == batch.table_id and back.column_names == batch.column_names and back.vocab == batch.vocab
        for name in ("column_kinds", "column_name_embeddings", "column_abs_max", "column_min_nonzero", "values",
                     "missing", "string_ids", "vocab_embeddings", "target_mask"):
            x, y = getattr(batch, name), getattr(back, name)
            assert x.dtype == y.dtype and torch.equal(x, y), name
    with pytest.raises(InputTypeError):
        decode_batch(b"not a safetensors payload")
    with pytest.raises(InputTypeError):
        decode_batch("a string")


def test_wire_bytes_are_safetensors_the_library_reads_and_writes():
    import safetensors.numpy
    import safetensors.torch

    from basisfm.data.wire import read_safetensors, write_safetensors

    rng = np.random.default_rng(0)
    arrays = {
        "f64": rng.normal(size=(5, 3)),
        "f32": rng.normal(size=(0, 384)).astype(np.float32),
        "i64": rng.integers(-5, 5, size=(7,)),
        "mask": rng.random((2, 2)) > 0.5,
        "sliced": np.asfortranarray(rng.normal(size=(4, 6)))[:, ::2],  # not C-contiguous
    }
    ours = write_safetensors({k: np.ascontiguousarray(v) for k, v in arrays.items()}, {"k": "v"})
    for name, tensor in safetensors.torch.load(ours).items():
        assert np.array_equal(tensor.numpy(), arrays[name]) and tensor.numpy().dtype == arrays[name].dtype, name
    theirs = safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata={"k": "v"})
    tensors, metadata = read_safetensors(theirs)
    assert metadata == {"k": "v"}
    for name, value in arrays.items():
        assert np.array_equal(tensors[name].numpy(), value), name


def _records(n: int, duplicate_of: dict[int, int] | None = None) -> list[TableRecord]:
    duplicate_of = duplicate_of or {}
    return [
        TableRecord(id=f"t/{i:02d}", source="test", locator="", fingerprint=f"fp{duplicate_of.get(i, i)}", shard="", n_rows=1, columns=[])
        for i in range(n)
    ]


def test_split_tables_is_seeded_disjoint_and_keeps_duplicates_together():
    records = _records(20, duplicate_of={19: 0, 18: 1})
    cfg = config(validation_tables=5)
    train, val = split_tables(records, cfg)
    assert split_tables(list(reversed(records)), cfg) == (train, val), "independent of manifest order"
    assert {r.id for r in train}.isdisjoint(r.id for r in val)
    assert len(train) + len(val) == 20
    assert {r.fingerprint for r in train}.isdisjoint(r.fingerprint for r in val)
    assert len({r.fingerprint for r in val}) == 5
    other = split_tables(records, config(validation_tables=5, seed=1))[1]
    assert {r.id for r in other} != {r.id for r in val}
    with pytest.raises(ConfigError, match="validation_tables"):
        split_tables(records, config(validation_tables=18))


def test_every_tiny_corpus_table_collates_within_budget_and_keeps_its_values(tiny_corpus):
    import pyarrow.parquet as pq

    from basisfm.corpus.manifest import read_manifest
    from basisfm.data.pipeline import collate_record

    cfg = config(token_budget=512, max_columns=16, max_rows=128)
    for record in read_manifest(tiny_corpus):
        batches = collate_record(tiny_corpus, record, cfg, PrefixEmbedder(), seed=0)
        assert sum(b.n_cells for b in batches) == record.n_cells, record.id
        assert all(b.n_cells <= 512 and b.n_columns <= 16 for b in batches), record.id
        assert set().union(*(b.column_names for b in batches)) == {c.name for c in record.columns}, record.id
        shard = pq.read_table(tiny_corpus / record.shard)
        numeric = [c.name for c in record.columns if not c.column_kind.is_string]
        for name in numeric:
            truth = np.sort(np.nan_to_num(shard.column(name).to_numpy(zero_copy_only=False).astype(float), nan=0.0))
            got = np.sort(np.concatenate([b.values[:, b.column_names.index(name)].numpy() for b in batches if name in b.column_names]))
            assert np.array_equal(truth, got), (record.id, name)


def test_row_index_and_column_moments_trace_back_to_the_source_table():
    # cell (r, j) holds r * 1000 + j: every batch row's values must be its row_index's row of the source.
    table, record = make_table(n_rows=150, n_numeric=30)
    batches = table_to_batches(table, record, config(), PrefixEmbedder(), seed=5)
    names = [c.name for c in record.columns]
    covered = np.zeros(150, dtype=int)
    for b in batches:
        rows = b.row_index.numpy()
        assert not b.support.any()  # a plain batch has no support rows
        for j, name in enumerate(b.column_names):
            if name.startswith("x"):
                np.testing.assert_array_equal(b.values[:, j].numpy(), rows * 1000.0 + names.index(name))
                expected = np.arange(150) * 1000.0
                assert b.column_mean[j].item() == pytest.approx(expected.mean() + names.index(name))
                assert b.column_std[j].item() == pytest.approx(expected.std())
            else:  # string columns keep the neutral scale
                assert b.column_mean[j].item() == 0.0 and b.column_std[j].item() == 1.0
        if "x0" in b.column_names:
            covered[rows] += 1
    assert (covered == 1).all()  # x0's subset holds every row exactly once
    decoded = decode_batch(encode_batch(batches[0]))  # the wire format carries both
    assert torch.equal(decoded.row_index, batches[0].row_index) and torch.equal(decoded.column_std, batches[0].column_std)
