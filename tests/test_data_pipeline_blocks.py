"""How the Ray Data pipeline hands work to Ray: one input block per actor task, blocks fetched ahead (no cluster)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from basisfm.config import DataConfig

ray = pytest.importorskip("ray")

from basisfm.data import pipeline  # noqa: E402


class _Stop(Exception):
    pass


class _Record:
    def __init__(self, i: int):
        self.i = i

    def to_json(self) -> str:
        return f'{{"id": "t{self.i}"}}'


@pytest.mark.parametrize("tables_per_task, blocks", [(8, 2), (3, 5), (1, 13), (20, 1)])
def test_the_input_holds_one_block_per_actor_task_in_plan_order(tmp_path, monkeypatch, tables_per_task, blocks):
    plan = [(_Record(i), 100 + i) for i in range(13)]
    seen = {}

    def from_items(items, override_num_blocks=None):
        seen.update(items=items, blocks=override_num_blocks)
        raise _Stop  # the dataset itself is Ray's; what it is given is ours

    monkeypatch.setattr(pipeline, "plan_epochs", lambda corpus_dir, data_config, split: plan)
    monkeypatch.setattr(ray.data, "from_items", from_items)
    config = DataConfig(validation_tables=0, tables_per_task=tables_per_task, embedding_cache_dir=str(tmp_path))
    with pytest.raises(_Stop):
        pipeline.build_dataset(tmp_path, config, "train")
    assert seen["blocks"] == blocks
    assert seen["items"] == [{"record": f'{{"id": "t{i}"}}', "seed": 100 + i} for i in range(13)]


def test_the_consumer_fetches_blocks_ahead_and_decodes_every_row(monkeypatch):
    block = pa.table({"batch": pa.array([b"first", b"second"], type=pa.binary())})
    calls = []

    class Shard:
        def iter_batches(self, **kwargs):
            calls.append(kwargs)
            return iter([block, block])

    monkeypatch.setattr(pipeline, "decode_batch", lambda payload: payload.upper())
    assert list(pipeline.iter_table_batches(Shard())) == [b"FIRST", b"SECOND"] * 2
    assert calls == [{"batch_size": None, "batch_format": "pyarrow", "prefetch_batches": pipeline.PREFETCH_BLOCKS}]
    assert pipeline.PREFETCH_BLOCKS >= 2
