"""The Ray Data pipeline end to end on a small corpus: same batches as a plain loop, seeded, equal splits, warm cache."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from basisfm.config import DataConfig
from basisfm.corpus.manifest import ColumnRecord, ColumnStats, TableRecord, write_manifest
from basisfm.errors import ConfigError

ray = pytest.importorskip("ray")

from basisfm.data.pipeline import build_dataset, collate_record, iter_table_batches, plan_epochs  # noqa: E402
from basisfm.encoding.text import StringEmbedder  # noqa: E402

pytestmark = pytest.mark.slow


def write_small_corpus(out: Path, n_tables: int = 7, seed: int = 0) -> None:
    """Shards + manifest in the corpus layout (numeric, categorical and text columns, some missing)."""
    rng = np.random.default_rng(seed)
    (out / "shards").mkdir(parents=True)
    records = []
    for t in range(n_tables):
        n_rows, n_numeric = int(rng.integers(20, 90)), int(rng.integers(2, 24))
        data = {f"m{j}": rng.normal(size=n_rows) for j in range(n_numeric)}
        data["m0"][::9] = np.nan
        data["species"] = rng.choice(["setosa", "virginica", "versicolor"], n_rows).astype(object)
        data["comment"] = [f"plant {t} sample {r % 4} grown in plot {r % 3}" for r in range(n_rows)]
        shard = f"shards/t{t}.parquet"
        pq.write_table(pa.table(data), out / shard)
        columns = [ColumnRecord(f"m{j}", "numeric", ColumnStats(abs_max=float(np.nanmax(np.abs(data[f"m{j}"]))))) for j in range(n_numeric)]
        columns += [ColumnRecord("species", "categorical"), ColumnRecord("comment", "text")]
        records.append(TableRecord(id=f"test/t{t}", source="test", locator=shard, fingerprint=f"fp{t}", shard=shard, n_rows=n_rows, columns=columns))
    write_manifest(out, records)


@pytest.fixture(scope="module")
def ray_cluster():
    # address="local": always a private cluster, even when another `ray start` cluster runs here.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    write_small_corpus(out)
    return out


def same(a, b) -> bool:
    return (
        a.table_id == b.table_id
        and a.column_names == b.column_names
        and a.vocab == b.vocab
        and torch.equal(a.values, b.values)
        and torch.equal(a.target_mask, b.target_mask)
        and torch.equal(a.vocab_embeddings, b.vocab_embeddings)
    )


def test_pipeline_is_seeded_matches_the_plain_loop_and_splits_equally(ray_cluster, corpus, tmp_path):
    cfg = DataConfig(token_budget=128, max_columns=8, validation_tables=2, epochs=2, embedding_cache_dir=str(tmp_path / "cache"))
    first = list(iter_table_batches(build_dataset(corpus, cfg, "train")))
    assert first and all(b.n_cells <= 128 and b.n_columns <= 8 for b in first)

    # Every string the pipeline embedded is now on disk: a fresh embedder encodes nothing.
    cached = StringEmbedder(cfg.embedding_cache_dir, text_top_k=cfg.text_top_k)
    for batch in first:
        cached.embed(batch.vocab)
        cached.embed(batch.column_names)
    assert cached.stats.encoded == 0 and not cached.model_loaded

    # The same plan run as a plain loop gives the very same batches, in order.
    plain = [b for record, seed in plan_epochs(corpus, cfg, "train") for b in collate_record(corpus, record, cfg, cached, seed=seed)]
    assert len(plain) == len(first) and all(same(a, b) for a, b in zip(first, plain))
    assert cached.stats.encoded == 0

    # Epochs differ (fresh order, subsets and masks), seeds differ.
    half = len(first) // 2
    assert not all(same(a, b) for a, b in zip(first[:half], first[half:]))
    other_seed = plan_epochs(corpus, DataConfig(**{**cfg.__dict__, "seed": 1}), "train")
    assert [seed for _, seed in other_seed] != [seed for _, seed in plan_epochs(corpus, cfg, "train")]

    # Validation: the held-out tables only, never a training table (the plan is what the dataset streams).
    val_ids = {record.id for record, _ in plan_epochs(corpus, cfg, "validation")}
    assert len(val_ids) == 2 and val_ids.isdisjoint(b.table_id for b in first)

    # Two training workers: equal batch counts, and together (almost) everything.
    splits = build_dataset(corpus, cfg, "train").streaming_split(2, equal=True)
    counts = [0, 0]

    def consume(i: int) -> None:
        counts[i] = sum(1 for _ in iter_table_batches(splits[i]))

    workers = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=240)
    assert counts[0] == counts[1] > 0
    assert len(first) - 1 <= sum(counts) <= len(first)


def test_empty_corpus_and_unknown_split_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="no manifest"):
        plan_epochs(tmp_path, DataConfig(), "train")
    write_small_corpus(tmp_path / "c", n_tables=3)
    with pytest.raises(ConfigError, match="'test'"):
        plan_epochs(tmp_path / "c", DataConfig(validation_tables=1), "test")


def test_the_collating_actor_code_never_imports_torch():
    # Every Ray Data actor imports these modules; torch would add seconds to each actor's start-up.
    # (basisfm.encoding's package __init__ imports the torch encoders, so the embedder is not checked here.)
    import subprocess
    import sys

    code = (
        "import sys, basisfm.data.pipeline, basisfm.data.collate, basisfm.data.wire; "
        "print(sorted(m for m in ('torch', 'sentence_transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
