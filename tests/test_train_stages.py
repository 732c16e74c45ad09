"""One training setup for every model: the data source a config selects, warm start and growth, the clock limit,
held-out prior validation (val_prior_ratio) and the run-directory record that `jobs.register` imports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from basisfm.config import load_config
from basisfm.errors import ConfigError

STAGE1 = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "icl" / "stage1.yaml"


def _stage(tmp_path: Path, *overrides: str):
    """Stage 1 of the in-context curriculum, shrunk to seconds."""
    return load_config(STAGE1, [*_overrides(tmp_path), *overrides])


@pytest.mark.parametrize("overrides, source, corpus", [
    ([], "corpus_tables", True),
    (["data.task=episodes"], "corpus_episodes", True),
    (["data.prior_fraction=1.0"], "prior_episodes", False),
    (["data.prior_fraction=0.5", "data.task=episodes"], "mix", True),
])
def test_the_config_selects_the_data_source_and_only_a_prior_only_run_needs_no_corpus(overrides, source, corpus):
    from basisfm.train.data_source import data_source, needs_corpus, prior_validator, training_tables

    config = load_config(None, overrides)
    assert data_source(config) == source and needs_corpus(config) is corpus
    assert (prior_validator(config) is None) is (source in ("corpus_tables", "corpus_episodes"))
    if not corpus:
        def no_corpus():
            raise AssertionError("a prior-only stream must not open the corpus")

        tables = training_tables(config, no_corpus, rank=0, device="cpu", start_step=0)
        assert all(next(tables).table_id.startswith("prior/") for _ in range(3))


def test_stage_configs_chain_each_stage_from_the_last_and_keep_the_recipe_that_learned():
    stages = [load_config(STAGE1.with_name(f"stage{n}.yaml")) for n in range(1, 8)]
    assert stages[0].train.init_from is None and stages[0].model.architecture == "tab2d"
    for n, stage in enumerate(stages[1:], start=2):
        assert stage.train.init_from == f"runs/curriculum/icl-stage{n - 1}/model"
        assert stage.train.run_name == f"icl-stage{n}"
    for stage in stages:
        assert stage.train.adam_betas == [0.9, 0.999] and stage.train.weight_decay == 0.01
        assert stage.train.micro_batch_tables * stage.train.pack_tables == 8 and stage.data.prior_fraction == 1.0
        assert stage.tracking.registered_model == "basisfm-icl"
    assert [s.train.grow_layers for s in stages] == [None, None, None, None, 4, 6, 8]
    # Stages 4-7 stop where the benchmark loop's clock caps (50, 80, 88, 80 minutes at 1 thread) stopped them, as step
    # counts part-way down their schedules, so a loaded or a faster machine makes the same stage.
    assert [s.train.max_minutes for s in stages] == [None] * 7
    # Muon at 1e-2 on the first two stages (stage 1 to its end: 0.152 against AdamW's 0.333), AdamW after them
    assert [(s.train.optimizer, s.train.lr) for s in stages[:2]] == [("muon", 1e-2)] * 2
    assert {s.train.optimizer for s in stages[2:]} == {"adamw"}
    assert [(s.train.steps, s.train.schedule_steps) for s in stages[3:]] == [(2357, 3000), (1541, 2000), (1002, 1050),
                                                                             (556, 720)]


def test_new_train_keys_are_validated_by_name():
    with pytest.raises(ConfigError, match="train.grow_layers"):
        load_config(None, ["train.grow_layers=4"])
    with pytest.raises(ConfigError, match="train.adam_betas"):
        load_config(None, ["train.adam_betas=[0.9, 1.5]"])
    with pytest.raises(ConfigError, match="train.max_minutes"):
        load_config(None, ["train.max_minutes=0"])


def test_a_warm_start_takes_a_checkpoints_architecture_and_grows_it_without_changing_its_predictions(tmp_path):
    from basisfm.config import ModelConfig, apply_model_preset
    from basisfm.model import build_model
    from basisfm.model.checkpoint import save_pretrained
    from basisfm.priors import PriorSampler
    from basisfm.train.warm_start import initial_model, resolve_warm_start

    model_config = ModelConfig(architecture="tab2d", regression_head="binned", n_bins=16)
    apply_model_preset(model_config)
    torch.manual_seed(0)
    trained = build_model(model_config).eval()
    save_pretrained(trained, tmp_path / "stage1")

    config = resolve_warm_start(_stage(tmp_path, f"train.init_from={tmp_path / 'stage1'}", "train.grow_layers=3",
                                       "model.architecture=basis"))  # the model section yields to the checkpoint
    assert config.model.architecture == "tab2d" and config.model.n_layers == 3 and config.model.n_bins == 16
    grown = initial_model(config).eval()
    assert grown.config.n_layers == 3
    episode = PriorSampler(config.priors, seed=1, text_dim=model_config.text_dim).sample(1)[0]
    with torch.no_grad():
        assert torch.allclose(trained(episode).value_logits, grown(episode).value_logits, atol=1e-5)
    with pytest.raises(ConfigError, match="train.grow_layers"):
        resolve_warm_start(_stage(tmp_path, f"train.init_from={tmp_path / 'stage1'}", "train.grow_layers=1"))
    shipped = resolve_warm_start(_stage(tmp_path, "train.init_from=in_context"))  # a shipped name resolves too
    assert Path(shipped.train.init_from).is_absolute() and shipped.model.architecture == "tab2d"


def test_a_prior_only_stage_stops_by_the_clock_checkpoints_logs_val_prior_ratio_and_the_next_stage_grows_it(tmp_path):
    """No corpus anywhere: stage 1 runs out of train.max_minutes after its first step and still writes the final
    checkpoint (consolidated model, provenance) with val_prior_ratio in MLflow and in the run directory; stage 2
    warm-starts from it, deepened, and its provenance counts stage 1's tasks; each checkpoint records how its run read
    column names."""
    from basisfm.model.checkpoint import load_pretrained, read_name_embedding
    from basisfm.tracking.mlflow_logger import make_client
    from basisfm.tracking.run_directory import read_metrics
    from basisfm.train import pretrain

    first = pretrain(_stage(tmp_path, "train.steps=1000", "train.max_minutes=0.0001"))
    assert first.metrics["step"] == 1 and math.isfinite(first.metrics["val_prior_ratio"])
    assert first.checkpoint_dir == tmp_path / "runs" / "icl-stage1" / "model"
    assert load_pretrained(first.checkpoint_dir).config.architecture == "tab2d"
    logged = read_metrics(first.run_dir)
    assert [(s, n) for n, _, s in logged if n in ("val_prior_ratio", "tasks_seen")] == [(1, "tasks_seen"), (1, "val_prior_ratio")]
    client = make_client(first.tracking_uri)
    assert [m.step for m in client.get_metric_history(first.run_id, "val_prior_ratio")] == [1]
    assert client.get_model_version("basisfm-icl", first.registered_version).run_id == first.run_id
    provenance = json.loads((first.checkpoint_dir / "provenance.json").read_text())
    assert provenance["mlflow"]["run_id"] == first.run_id and provenance["launcher"] == "local"
    assert provenance["tasks_seen"] == 2 and provenance["data_source"] == "prior_episodes"
    assert json.loads((first.run_dir / "params.json").read_text())["train.max_minutes"] == 0.0001

    assert read_name_embedding(first.checkpoint_dir) == ("sentence", None)

    # A stage that reads column names another way records it in its checkpoint, so the estimators read them so too.
    second = pretrain(_stage(tmp_path, "train.run_name=icl-stage2", f"train.init_from={first.checkpoint_dir}",
                             "train.grow_layers=3", "train.steps=2", "data.column_name_embedding=none"))
    assert second.metrics["step"] == 2 and load_pretrained(second.checkpoint_dir).config.n_layers == 3
    assert read_name_embedding(second.checkpoint_dir) == ("none", None)
    provenance = json.loads((second.checkpoint_dir / "provenance.json").read_text())
    assert provenance["init_provenance"]["run_name"] == "icl-stage1" and provenance["grown_to_layers"] == 3
    assert provenance["total_tasks_seen"] == 2 + 4

    # Started again (a curriculum rerun after a session ends), the finished stage trains no step and its checkpoint
    # keeps what made it: the held-out ratio and the loop's minutes, not the rerun's seconds and no metrics.
    again = pretrain(_stage(tmp_path, "train.run_name=icl-stage2", f"train.init_from={first.checkpoint_dir}",
                            "train.grow_layers=3", "train.steps=2", "data.column_name_embedding=none"))
    rerun = json.loads((again.checkpoint_dir / "provenance.json").read_text())
    assert rerun["steps"] == 2 and rerun["held_out_ratio"] == provenance["held_out_ratio"] is not None
    assert rerun["final_metrics"]["val_prior_ratio"] == provenance["final_metrics"]["val_prior_ratio"]
    assert rerun["tasks_seen"] == provenance["tasks_seen"]
    assert rerun["minutes"] == provenance["minutes"] and rerun["total_minutes"] == provenance["total_minutes"]
    assert json.loads((again.run_dir / "artifacts" / "train_state.json").read_text())["history"]["wall_minutes"]


def test_a_run_resumed_over_several_commands_counts_the_minutes_of_each():
    from basisfm.train.trainer import last_readings, training_minutes

    # The loop's clock restarts in each command: 3 + 5 (resumed) + 2 (resumed) minutes.
    history = {"wall_minutes": [[100, 1.0], [200, 3.0], [300, 2.5], [400, 5.0], [500, 2.0]],
               "val_prior_ratio": [[200, 0.9], [500, 0.4]], "train_loss": [[500, 1.0]]}
    assert training_minutes(history) == pytest.approx(10.0) and training_minutes({}) == 0.0
    assert last_readings(history, "val_") == {"val_prior_ratio": 0.4}


def test_without_mlflow_the_run_directory_is_the_record_and_jobs_register_imports_it(tmp_path):
    """The lent-GPU case: MLflow cannot be imported, so the local launcher writes params, metrics, checkpoint and
    provenance into the run directory only; `jobs.register RUN_DIR` then makes one MLflow run and a version, once."""
    import os
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['mlflow'] = None\n"  # `import mlflow` now raises ImportError
        "from basisfm.config import load_config\nfrom basisfm.train import pretrain\n"
        f"result = pretrain(load_config({str(STAGE1)!r}, {_overrides(tmp_path)!r}))\n"
        "assert result.run_id is None and result.registered_version is None\n"
        "assert 'mlflow' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "assert 'ray' not in sys.modules  # a lent GPU machine has no Ray either\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "platform")}
    subprocess.run([sys.executable, "-c", script], check=True, cwd=root, env=env, timeout=600)
    run_dir = tmp_path / "runs" / "icl-stage1"
    assert {p.name for p in run_dir.iterdir()} >= {"params.json", "metrics.jsonl", "tags.json", "model", "artifacts"}
    assert not (tmp_path / "mlflow" / "mlflow.db").exists()

    uri = f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    (tmp_path / "elsewhere").mkdir()
    out = subprocess.run([sys.executable, "-m", "jobs.register", str(run_dir), "--tracking-uri", uri], check=True,
                         cwd=root, env=env, capture_output=True, text=True, timeout=600).stdout
    assert "imported as MLflow run" in out and "version 1 of basisfm-icl" in out

    from basisfm.tracking.mlflow_logger import make_client
    from basisfm.tracking.run_import import import_run_directory

    again = import_run_directory(run_dir, uri)
    assert not again.imported and again.registered_version == "1"
    client = make_client(uri)
    run = client.get_run(again.run_id)
    assert run.data.params["train.run_name"] == "icl-stage1" and run.data.params["data.prior_fraction"] == "1.0"
    assert [m.step for m in client.get_metric_history(again.run_id, "val_prior_ratio")] == [2, 4]
    assert {a.path for a in client.list_artifacts(again.run_id)} >= {"provenance.json", "config.yaml", "loss_curves.png"}
    assert client.get_model_version("basisfm-icl", "1").run_id == again.run_id


def _overrides(tmp_path: Path) -> list[str]:
    return [f"train.storage_path={tmp_path / 'runs'}", f"tracking.local_dir={tmp_path / 'mlflow'}", "tracking.tracking_uri=null",
            "train.steps=4", "train.warmup_steps=1", "train.pack_tables=2", "train.validate_every=2", "train.log_every=2",
            "train.checkpoint_every=2", "train.prior_validation_tasks=4", "priors.tasks_per_chunk=4"]


def test_the_run_directory_keeps_the_last_value_of_a_redone_step_and_skips_a_torn_line(tmp_path):
    from basisfm.tracking.run_directory import METRICS_FILE, MetricFanOut, RunDirectoryLog, read_metrics

    log = RunDirectoryLog(tmp_path)
    seen = []

    class Sink:
        def buffer_metrics(self, metrics, step):
            seen.append(step)

        def flush(self):
            return False

    fan = MetricFanOut(log, None, Sink())
    fan.buffer_metrics({"loss": 2.0, "val_prior_ratio": float("nan")}, 1)
    assert fan.flush() is False and seen == [1]  # one sink failing is reported; the others still flushed
    log.buffer_metrics({"loss": 1.5}, 1)  # step 1 redone after a restart
    log.buffer_metrics({"loss": 1.0}, 2)
    log.flush()
    with open(tmp_path / METRICS_FILE, "a") as out:
        out.write('{"step": 3, "metr')
    assert read_metrics(tmp_path) == [("loss", 1.5, 1), ("loss", 1.0, 2)]


def test_a_mix_of_corpus_episodes_and_prior_episodes_reports_both_held_out_ratios(tiny_corpus, tmp_path):
    from basisfm.train import pretrain

    config = load_config(STAGE1.parents[1] / "tiny.yaml", [
        f"corpus.out_dir={tiny_corpus}", f"data.embedding_cache_dir={tiny_corpus.parent / 'embedding_cache'}",
        "data.task=episodes", "data.prior_fraction=0.5", "data.validation_tables=1", "data.token_budget=512",
        "model.architecture=tab2d", "model.regression_head=binned", "model.n_bins=16", "loss.weighting=none",
        "train.launcher=local", "train.run_name=mix", "train.steps=2", "train.warmup_steps=1", "train.validate_every=2",
        "train.validation_batches=2", "train.prior_validation_tasks=2", "priors.tasks_per_chunk=2", "priors.max_rows=32",
        f"train.storage_path={tmp_path / 'runs'}", f"tracking.local_dir={tmp_path / 'mlflow'}", "tracking.register=false"])
    result = pretrain(config)
    assert math.isfinite(result.metrics["val_prior_ratio"]) and math.isfinite(result.metrics["val_real_ratio"])
    assert math.isfinite(result.metrics["val_loss"])


def test_an_in_context_candidate_is_promoted_by_in_context_prediction_and_only_on_a_win(tmp_path):
    from basisfm.config import ModelConfig, apply_model_preset
    from basisfm.model import build_model
    from basisfm.model.checkpoint import save_pretrained
    from basisfm.tracking import log_checkpoint_model
    from basisfm.tracking.mlflow_logger import make_client
    from basisfm.evaluation.promotion import promote_registered

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model_config = ModelConfig(architecture="tab2d", regression_head="binned", n_bins=16)
    apply_model_preset(model_config)
    torch.manual_seed(0)
    sound = build_model(model_config)
    wrong = build_model(model_config)
    with torch.no_grad():  # every query predicted at the top bin, z_max standard deviations away: far worse than the mean
        wrong.heads.value_head.bias.copy_(torch.linspace(-50, 50, 16))
    for name, model in (("wrong", wrong), ("sound", sound), ("same", sound)):
        save_pretrained(model, tmp_path / name)
        log_checkpoint_model(tmp_path / name, "icl", tracking_uri=uri, experiment="e")
    config = _stage(tmp_path, f"tracking.tracking_uri={uri}", "tracking.registered_model=icl",
                    f"corpus.out_dir={tmp_path / 'no_corpus'}")

    first = promote_registered(config, 1)
    assert first.promoted and first.metric == "val_prior_ratio" and first.candidate_scores["val_prior_ratio"] > 2
    second = promote_registered(config, 2)
    assert second.promoted and second.candidate_scores["val_prior_ratio"] < first.candidate_scores["val_prior_ratio"]
    third = promote_registered(config, 3)  # the same weights: not strictly better, the alias stays
    assert not third.promoted and third.champion_version == "2"
    champion = make_client(uri).get_model_version_by_alias("icl", "champion")
    assert str(champion.version) == "2"

    from basisfm.pretrained.ship import ship_checkpoint  # the shipped checkpoint comes from the champion, with its run

    (tmp_path / "evidence.md").write_text("| model | ratio |\n")
    shipped = ship_checkpoint("models:/icl@champion", tmp_path / "evidence.md", "wins on held-out prior tasks",
                              out_dir=tmp_path / "shipped", tracking_uri=uri)
    assert shipped["mlflow"]["run_id"] == champion.run_id and shipped["architecture"] == "tab2d"


def test_a_run_on_real_tables_alone_is_promoted_on_them_without_scoring_the_prior(tiny_corpus, tmp_path):
    from basisfm.config import ModelConfig, apply_model_preset
    from basisfm.evaluation.promotion import InContextSuite
    from basisfm.model import build_model
    from basisfm.model.checkpoint import save_pretrained

    model_config = ModelConfig(architecture="tab2d", regression_head="binned", n_bins=16)
    apply_model_preset(model_config)
    save_pretrained(build_model(model_config), tmp_path / "model")
    real_only = _stage(tmp_path, f"corpus.out_dir={tiny_corpus}", f"data.embedding_cache_dir={tiny_corpus.parent / 'embedding_cache'}",
                       "data.prior_fraction=0.0", "data.validation_tables=1", "data.token_budget=512",
                       "train.validation_batches=2", "train.prior_validation_tasks=0")
    suite = InContextSuite(real_only)
    scores = suite(tmp_path / "model")
    assert suite.deciding_metric() == ("val_real_ratio", "min") and math.isfinite(scores["val_real_ratio"])
    assert "val_prior_ratio" not in scores  # 0 held-out prior tasks means none, not the default 64
    no_corpus = _stage(tmp_path, f"corpus.out_dir={tmp_path / 'none'}", "train.prior_validation_tasks=0",
                       "priors.tasks_per_chunk=4")
    assert math.isfinite(InContextSuite(no_corpus)(tmp_path / "model")["val_prior_ratio"])  # then the prior decides
