"""BasisRegressor / BasisClassifier strategies: base-ft learns and is reproducible, peft trains only adapters,
save/load and clone round-trip, checkpoints load from a directory."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from basisfm.config import ModelConfig
from basisfm.corpus.manifest import ColumnKind
from basisfm.errors import CheckpointError, ConfigError
from basisfm.estimators import BasisClassifier, BasisRegressor
from basisfm.model import build_model
from basisfm.model.checkpoint import load_pretrained, save_pretrained
from basisfm.pretrained import PER_ROW_CHECKPOINT_DIR

pytestmark = pytest.mark.slow


def _houses(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"size_m2": rng.uniform(20, 200, n), "rooms": rng.integers(1, 6, n),
                      "area": rng.choice(["north", "south"], n)})
    y = pd.Series(10 * x.size_m2 + np.where(x.area == "north", 500, 0) + rng.normal(0, 20, n), name="price")
    return x, y


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("embeddings"))


def _fast(cache_dir, **kw) -> dict:
    return {**dict(embedding_cache_dir=cache_dir, progress=False, max_steps=12, token_budget=256,
                   learning_rate=3e-3, patience=2, validate_every=3), **kw}


def test_budget_counts_steps_across_passes_and_validates_every_n_steps():
    # 2 batches a pass: no pass count may cut the step budget short (max_epochs=10 once ended small tables at 20 steps).
    from basisfm.estimators.finetune import FineTuneSettings, fine_tune
    from basisfm.train.deepspeed_config import warmup_cosine_factor

    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    x = torch.linspace(-1, 1, 16).unsqueeze(1)
    y = 3 * x + 1
    halves = [(x[:8], y[:8]), (x[8:], y[8:])]
    settings = FineTuneSettings(max_steps=40, validate_every=10, patience=100, learning_rate=0.3,
                                warmup_steps=5, progress=False)
    loss = lambda m, b: ((m(b[0]) - b[1]) ** 2).mean()  # noqa: E731
    validate = lambda m: float(((m(x) - y) ** 2).mean().detach())  # noqa: E731
    start = validate(model)
    passes = []

    class Pair(tuple):  # fine_tune moves each batch to the device with .to()
        def to(self, device):
            return self

    def batches(epoch):
        passes.append(epoch)
        return [Pair(h) for h in halves]

    trained, history = fine_tune(model, batches, validate, loss, settings)
    assert history.steps == 40 and history.stopped_because == "max_steps"
    assert [c["step"] for c in history.checks] == [0, 10, 20, 30, 40]
    assert passes == list(range(1, 21))
    assert validate(trained) < start / 10
    factors = [warmup_cosine_factor(s, 5, 40, 0.1) for s in range(41)]
    assert factors[0] == pytest.approx(0.2) and factors[4] == pytest.approx(1.0)
    assert factors[40] == pytest.approx(0.1) and all(a >= b for a, b in zip(factors[4:], factors[5:]))


def test_default_budget_is_sized_to_the_table():
    from basisfm.estimators.finetune import MAX_DEFAULT_STEPS as MAX_STEPS, MIN_DEFAULT_STEPS as MIN_STEPS, default_steps

    assert default_steps(300, 256) == MIN_STEPS  # a small table still gets many passes
    assert default_steps(8_000, 256) == MAX_STEPS  # a large one is capped for fit time
    assert MIN_STEPS <= default_steps(2_000, 256) <= MAX_STEPS


def test_episodic_fine_tuning_of_a_large_table_costs_200_steps_and_512_held_out_rows(cache_dir, tmp_path, monkeypatch):
    """A 10,000-row table cost 545 s at 1 thread to fine-tune (600 steps, 13 checks of 2,000 held-out rows each
    predicted in context); a table of 7,000+ training rows now takes LARGE_TABLE_STEPS steps, a check every 25, and
    every table at most VALIDATION_ROWS held-out rows; a smaller table keeps `default_steps` and 12 checks
    (benchmarks/results/finetune_seconds.md). The per-row strategy keeps the shared 2,000-row cap."""
    import basisfm.estimators.strategies.episodic as episodic
    from basisfm.estimators.finetune import FineTuneHistory, default_steps
    from basisfm.estimators.strategies.strategy import MAX_VALIDATION_ROWS, validation_split

    torch.manual_seed(0)
    save_pretrained(build_model(ModelConfig(architecture="tab2d", regression_head="binned")), tmp_path / "icl")
    seen = []

    def recording_fine_tune(model, train_batches, validation_score, loss_fn, settings):
        seen.append(settings)
        return model.eval(), FineTuneHistory()

    real_split = episodic.validation_split
    held_out = []
    monkeypatch.setattr(episodic, "fine_tune", recording_fine_tune)
    monkeypatch.setattr(episodic, "validation_split", lambda *a: held_out.append(len(real_split(*a)[1])) or real_split(*a))
    kw = dict(checkpoint=str(tmp_path / "icl"), embedding_cache_dir=cache_dir, progress=False)
    x, y = _houses(8_000, 3)
    BasisRegressor(**kw).fit(x, y)
    assert held_out == [512] and seen[-1].max_steps == 200 and seen[-1].validate_every == 25
    assert (episodic.VALIDATION_ROWS, episodic.LARGE_TABLE_STEPS, episodic.LARGE_TABLE_ROWS) == (512, 200, 7_000)
    x, y = _houses(6_000, 3)  # 5,488 training rows: Computers' size lost accuracy at 200 steps; 600, as before
    BasisRegressor(**kw).fit(x, y)
    assert held_out[-1] == 512 and seen[-1].max_steps == 600 and seen[-1].validate_every == 50
    x, y = _houses(1_000, 3)  # 800 training rows: many passes, as before
    BasisRegressor(**kw).fit(x, y)
    assert held_out[-1] == 200
    assert seen[-1].max_steps == default_steps(800, 256) and seen[-1].validate_every == round(seen[-1].max_steps / 12)
    # per-row fine-tuning holds out as before
    assert len(validation_split(20_000, 0.2, 0)[1]) == MAX_VALIDATION_ROWS == 2_000


@pytest.fixture(scope="module")
def base_ft(cache_dir):
    x, y = _houses(120, 0)
    return BasisRegressor(strategy="base-ft", checkpoint="per_row", **_fast(cache_dir)).fit(x, y)


def test_base_ft_improves_validation_error_and_is_reproducible(base_ft, cache_dir):
    history = base_ft.history_
    assert history.steps > 0 and history.best_step >= 1
    assert min(c["val_score"] for c in history.checks[1:]) < history.checks[0]["val_score"]
    x, y = _houses(120, 0)
    again = BasisRegressor(strategy="base-ft", checkpoint="per_row", **_fast(cache_dir)).fit(x, y)
    test, _ = _houses(10, 1)
    np.testing.assert_array_equal(base_ft.predict(test), again.predict(test))


def test_save_load_round_trip_writes_no_pickle(base_ft, tmp_path):
    base_ft.save(tmp_path / "saved")
    files = sorted(p.name for p in (tmp_path / "saved").rglob("*") if p.is_file())
    assert files == ["config.json", "estimator.json", "model.safetensors"]
    loaded = BasisRegressor.load(tmp_path / "saved")
    test, _ = _houses(10, 2)
    np.testing.assert_array_equal(loaded.predict(test), base_ft.predict(test))
    assert loaded.get_params() == base_ft.get_params()
    with pytest.raises(CheckpointError, match="not a BasisClassifier"):
        BasisClassifier.load(tmp_path / "saved")


def test_clone_and_params(base_ft):
    fresh = clone(base_ft)
    assert fresh.get_params() == base_ft.get_params() and not hasattr(fresh, "model_")
    fresh.set_params(strategy="peft", lora_r=4)
    assert fresh.get_params()["lora_r"] == 4


def test_peft_trains_only_adapters_and_merges_back(cache_dir):
    x, y = _houses(80, 3)
    model = BasisRegressor(strategy="peft", lora_r=4, checkpoint="per_row", **_fast(cache_dir)).fit(x, y)
    total = sum(p.numel() for p in model.model_.parameters())
    assert 0 < model.history_.trainable_parameters < total / 5
    shipped = load_pretrained(PER_ROW_CHECKPOINT_DIR)
    assert type(model.model_) is type(shipped)  # adapters merged: a plain model, saved as safetensors
    assert not any("lora" in name for name in model.model_.state_dict())
    start = shipped.state_dict()
    assert model.model_.state_dict().keys() == start.keys()
    changed = [n for n, p in model.model_.state_dict().items() if not torch.equal(p, start[n])]
    assert changed, "LoRA training should change the merged weights"
    with pytest.raises(ConfigError, match="name no linear layer"):
        BasisRegressor(strategy="peft", lora_target_modules=["nonexistent"], checkpoint="per_row", **_fast(cache_dir)).fit(x, y)


def test_classifier_fine_tunes_and_round_trips(cache_dir, tmp_path):
    x, y = _houses(100, 4)
    labels = np.where(x.area == "north", "approved", "rejected")
    model = BasisClassifier(strategy="base-ft", target_name="decision", **_fast(cache_dir)).fit(x, labels)
    assert list(model.classes_) == ["approved", "rejected"]
    proba = model.predict_proba(x.head(8))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert set(model.predict(x.head(8))) <= {"approved", "rejected"}
    # From scratch a few steps barely move the log loss; what must hold is that the best check's weights are kept.
    history = model.history_
    best = [c["val_score"] for c in history.checks if c["step"] == history.best_step]
    assert history.steps > 0 and best == [min(c["val_score"] for c in history.checks)]
    model.save(tmp_path / "clf")
    np.testing.assert_allclose(BasisClassifier.load(tmp_path / "clf").predict_proba(x.head(8)), proba)


def test_inference_from_a_checkpoint_directory_uses_its_weights(cache_dir, tmp_path):
    torch.manual_seed(123)
    save_pretrained(build_model(ModelConfig()), tmp_path / "ckpt")
    x, y = _houses(30, 5)
    from_dir = BasisRegressor(checkpoint=str(tmp_path / "ckpt"), strategy="inference", embedding_cache_dir=cache_dir).fit(x, y)
    assert from_dir.checkpoint_source_ == f"checkpoint {tmp_path / 'ckpt'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scratch = BasisRegressor(checkpoint=None, strategy="inference", embedding_cache_dir=cache_dir, random_state=7).fit(x, y)
    assert scratch.checkpoint_source_.startswith("from scratch")
    assert not np.array_equal(from_dir.predict(x.head(5)), scratch.predict(x.head(5)))


def test_ensemble_members_differ_and_predictions_are_their_mean(cache_dir, tmp_path):
    x, y = _houses(90, 6)
    # the per-row model (from scratch): each member predicts every row alone, so the mean is checkable member by member
    model = BasisRegressor(strategy="base-ft", n_estimators=2, checkpoint=None, **_fast(cache_dir)).fit(x, y)
    assert len(model.members_) == 2 and len(model.histories_) == 2
    first, second = (dict(m.state_dict()) for m in model.members_)
    assert any(not torch.equal(first[k], second[k]) for k in first), "members must differ (seed, split, columns)"
    test, _ = _houses(7, 7)
    alone = []
    for member in model.members_:
        single = copy.copy(model)
        single.members_ = [member]
        alone.append(single.predict(test))
    mean = model.predict(test)
    np.testing.assert_allclose(mean, np.mean(alone, axis=0), rtol=1e-6)  # float32 kernels differ in the last bits
    model.save(tmp_path / "ens")
    assert sorted(p.name for p in (tmp_path / "ens").iterdir()) == ["estimator.json", "model", "model-1"]
    np.testing.assert_array_equal(BasisRegressor.load(tmp_path / "ens").predict(test), mean)


def test_every_member_of_an_in_context_ensemble_predicts(cache_dir, tmp_path):
    x, y = _houses(90, 6)
    torch.manual_seed(0)
    icl = save_pretrained(build_model(ModelConfig(architecture="tab2d", regression_head="binned")), tmp_path / "icl")
    model = BasisRegressor(strategy="base-ft", n_estimators=2, checkpoint=str(icl),
                           **_fast(cache_dir, max_steps=30, validate_every=10, patience=5)).fit(x, y)
    assert model.context_ is not None and len(model.members_) == 2
    first, second = (m.state_dict() for m in model.members_)
    assert any(not torch.equal(first[k], second[k]) for k in first), "members must differ (seed, split, columns)"
    test, _ = _houses(7, 7)
    both = model.predict(test)
    first_only = copy.copy(model)
    first_only.members_ = [model.members_[0], model.members_[0]]  # the same two context draws, the first model twice
    assert not np.allclose(both, first_only.predict(test)), "the second fine-tuned member must be used"


def test_quantile_output_is_ordered_and_brackets_the_mean(base_ft):
    test, _ = _houses(12, 8)
    q = base_ft.predict(test, output="quantiles", quantiles=[0.05, 0.5, 0.95])
    assert q.shape == (12, 3) and np.isfinite(q).all()
    assert (q[:, 0] <= q[:, 1]).all() and (q[:, 1] <= q[:, 2]).all()
    assert (q[:, 2] - q[:, 0]).mean() > 0  # a real spread, not a point mass
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        base_ft.predict(test, output="quantiles", quantiles=[0.5, 1.0])
    with pytest.raises(ConfigError, match="output must be one of"):
        base_ft.predict(test, output="median")


def test_predictions_map_back_to_rows_by_index(base_ft):
    # 300 rows are cut into shuffled 64-row chunks; the per-row model does not look across rows, so
    # predicting the rows in reverse must give the reversed predictions: batch.row_index puts each back.
    test, _ = _houses(300, 11)
    forward = base_ft.predict(test)
    backward = base_ft.predict(test.iloc[::-1].reset_index(drop=True))
    np.testing.assert_allclose(forward, backward[::-1], rtol=1e-9)
    assert len(np.unique(forward)) > 250


def test_device_is_validated(cache_dir):
    x, y = _houses(20, 10)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            BasisRegressor(device="cuda", **_fast(cache_dir)).fit(x, y)
    with pytest.raises(ConfigError, match="not a torch device"):
        BasisRegressor(device="gpu0", **_fast(cache_dir)).fit(x, y)


def test_estimators_prune_text_as_the_checkpoints_pretraining_did(cache_dir, tmp_path):
    # Pretraining pruned long text to data.text_top_k words; an estimator that embedded it whole would feed
    # the model text it never saw (train/serve skew). The checkpoint's config.json says how it was pruned.
    torch.manual_seed(0)
    model = build_model(ModelConfig())
    save_pretrained(model, tmp_path / "pruned", text_top_k=8)
    save_pretrained(model, tmp_path / "whole", text_top_k=None)
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    x = pd.DataFrame({"size_m2": rng.uniform(20, 200, 12),
                      "notes": [" ".join(rng.choice(words, 20, replace=False)) for _ in range(12)]})
    y = pd.Series(rng.normal(size=12), name="price")
    pruned = BasisRegressor(checkpoint=str(tmp_path / "pruned"), strategy="inference", embedding_cache_dir=cache_dir).fit(x, y)
    whole = BasisRegressor(checkpoint=str(tmp_path / "whole"), strategy="inference", embedding_cache_dir=cache_dir).fit(x, y)
    assert pruned._embedder().text_top_k == 8 and whole._embedder().text_top_k is None
    before = pruned._embedder().stats.pruned
    predictions = pruned.predict(x)
    assert pruned._embedder().stats.pruned > before  # the 20-word notes were pruned to 8 words
    assert not np.allclose(predictions, whole.predict(x))
    pruned.save(tmp_path / "saved")
    restored = BasisRegressor.load(tmp_path / "saved")
    assert restored.text_top_k_ == 8
    np.testing.assert_allclose(restored.predict(x), predictions)


@pytest.mark.parametrize("architecture", ["basis_icl", "tab2d"])
def test_inference_with_an_in_context_checkpoint_reads_the_training_rows(cache_dir, tmp_path, architecture):
    torch.manual_seed(0)
    config = ModelConfig(architecture=architecture, regression_head="binned")
    save_pretrained(build_model(config), tmp_path / "icl")
    x, y = _houses(40, 12)
    model = BasisRegressor(checkpoint=str(tmp_path / "icl"), strategy="inference", n_estimators=2,
                           embedding_cache_dir=cache_dir, progress=False).fit(x, y)
    assert model.context_.num_rows == 40 and model.history_.steps == 0
    test, _ = _houses(6, 13)
    mean = model.predict(test)
    q = model.predict(test, output="quantiles", quantiles=[0.1, 0.9])
    assert mean.shape == (6,) and np.isfinite(mean).all() and (q[:, 0] <= q[:, 1]).all()
    # the context is what it reads: other training rows, other predictions
    other = BasisRegressor(checkpoint=str(tmp_path / "icl"), strategy="inference", n_estimators=2,
                           embedding_cache_dir=cache_dir, progress=False).fit(x, y * 3 + 1000)
    assert not np.allclose(other.predict(test), mean)
    model.save(tmp_path / "saved")
    assert (tmp_path / "saved" / "context.parquet").is_file()
    np.testing.assert_allclose(BasisRegressor.load(tmp_path / "saved").predict(test), mean)
    # the member preprocessing options reach the in-context predictor and survive save / load
    varied = BasisRegressor(checkpoint=str(tmp_path / "icl"), strategy="inference", n_estimators=2,
                            categorical_features="ordinal", feature_transforms=["power"], target_transforms=["none", "power"],
                            embedding_cache_dir=cache_dir, progress=False).fit(x, y)
    varied_mean = varied.predict(test)
    assert np.isfinite(varied_mean).all() and not np.allclose(varied_mean, mean)
    varied.save(tmp_path / "varied")
    np.testing.assert_allclose(BasisRegressor.load(tmp_path / "varied").predict(test), varied_mean)
    labels = np.where(x.area == "north", "yes", "no")
    clf = BasisClassifier(checkpoint=str(tmp_path / "icl"), strategy="inference", embedding_cache_dir=cache_dir,
                          progress=False).fit(x, labels)
    np.testing.assert_allclose(clf.predict_proba(test).sum(axis=1), 1.0)


@pytest.mark.parametrize("architecture", ["basis_icl", "tab2d"])
def test_base_ft_of_an_in_context_checkpoint_trains_on_episodes_and_predicts_in_context(cache_dir, tmp_path, architecture,
                                                                                         monkeypatch):
    import basisfm.estimators.finetune as finetune

    torch.manual_seed(0)
    save_pretrained(build_model(ModelConfig(architecture=architecture, regression_head="binned")), tmp_path / "icl")
    seen = []
    real_fine_tune = finetune.fine_tune

    def spying_fine_tune(model, train_batches, validation_score, loss_fn, settings):
        def recorded(epoch):
            batches = train_batches(epoch)
            seen.extend(batches)
            return batches
        return real_fine_tune(model, recorded, validation_score, loss_fn, settings)

    monkeypatch.setattr("basisfm.estimators.strategies.episodic.fine_tune", spying_fine_tune)
    x, y = _houses(200, 21)
    model = BasisRegressor(checkpoint=str(tmp_path / "icl"), strategy="base-ft",
                           **_fast(cache_dir, max_steps=40, validate_every=10, patience=4)).fit(x, y)
    # every training batch is an episode: labelled support rows and hidden query rows, about half each
    assert seen and all(b.support.any() and (~b.support).any() for b in seen)
    assert all(abs(float(b.support.float().mean()) - 0.5) < 0.1 for b in seen)
    history = model.history_
    assert history.steps > 0 and len(history.checks) >= 2
    # validation predicts the held-out rows in context and the kept weights score better than the start
    assert history.checks[0]["val_score"] > min(c["val_score"] for c in history.checks[1:])
    # predict reads the training rows in context; save / load keeps them
    assert model.context_.num_rows == 200
    test, truth = _houses(40, 22)
    predicted = model.predict(test)
    untrained = BasisRegressor(checkpoint=str(tmp_path / "icl"), strategy="inference", embedding_cache_dir=cache_dir,
                               progress=False).fit(x, y).predict(test)
    assert np.mean((predicted - truth) ** 2) < np.mean((untrained - truth) ** 2)
    model.save(tmp_path / "saved")
    np.testing.assert_allclose(BasisRegressor.load(tmp_path / "saved").predict(test), predicted)


def test_inference_validates_how_many_features_to_read_and_fine_tuning_reads_the_most_relevant():
    """`feature_selection=None` resolves per strategy: "validated" in context with no gradient step, "relevance"
    once fine-tuned (the features its episodes trained on); a value the user passes is kept for either."""
    def selection(**params) -> str:
        return BasisRegressor(**params)._in_context_settings(members=1, seed=0).feature_selection

    assert selection(strategy="inference") == "validated"
    assert selection(strategy="base-ft") == selection(strategy="peft") == "relevance"
    assert selection(strategy="inference", feature_selection="relevance") == "relevance"
    assert selection(strategy="base-ft", feature_selection="validated") == "validated"
    assert BasisClassifier(strategy="inference")._in_context_settings(members=1, seed=0).feature_selection == "validated"


def test_inference_retrieves_on_tables_of_many_contexts_and_fine_tuning_never_by_default():
    """`retrieval=None` resolves at predict from the rows kept: on in context once the training rows number more
    than `RETRIEVAL_CONTEXTS` x `max_context`, off below and once fine-tuned; a value the user passes is kept."""
    import pyarrow as pa

    from basisfm.estimators.strategies.in_context import RETRIEVAL_CONTEXTS

    def retrieves(n_rows: int, **params) -> bool:
        estimator = BasisRegressor(**params)
        estimator.context_ = pa.table({"x": np.zeros(n_rows)})  # what fit keeps: the training rows
        return estimator._in_context_settings(members=1, seed=0).retrieval

    many = RETRIEVAL_CONTEXTS * 512 + 1
    assert retrieves(many, strategy="inference") and not retrieves(many - 1, strategy="inference")
    assert retrieves(RETRIEVAL_CONTEXTS * 64 + 1, strategy="inference", max_context=64)
    assert not retrieves(many, strategy="base-ft") and not retrieves(many, strategy="peft")
    assert not retrieves(many, strategy="inference", retrieval=False) and retrieves(10, strategy="inference", retrieval=True)
    assert retrieves(many, strategy="base-ft", retrieval=True)
    assert BasisRegressor(strategy="inference").get_params()["retrieval"] is None  # resolved per table, not fixed
    from basisfm.errors import InputTypeError
    from basisfm.estimators.validation import validate_params

    validate_params(BasisRegressor(retrieval=None))
    with pytest.raises(InputTypeError, match="retrieval"):
        validate_params(BasisRegressor(retrieval="yes"))


@pytest.mark.parametrize("selection", ["relevance", "random"])
def test_base_ft_of_a_too_wide_table_trains_on_the_features_prediction_reads(cache_dir, tmp_path, monkeypatch, selection):
    """Episodic fine-tuning of a table wider than an episode reads the same most relevant features as its
    in-context predictions ("relevance"), or a random subset per episode ("random")."""
    import basisfm.estimators.finetune as finetune

    torch.manual_seed(0)
    save_pretrained(build_model(ModelConfig(architecture="tab2d", regression_head="binned")), tmp_path / "icl")
    seen = []

    def recording_fine_tune(model, train_batches, validation_score, loss_fn, settings):
        seen.extend(train_batches(1) + train_batches(2))
        return model, finetune.FineTuneHistory(stopped_because="recorded")

    monkeypatch.setattr("basisfm.estimators.strategies.episodic.fine_tune", recording_fine_tune)
    rng = np.random.default_rng(5)
    x = pd.DataFrame({f"noise{i}": rng.normal(size=240) for i in range(6)})
    x["signal"] = rng.normal(size=240)
    y = pd.Series(5 * x.signal + rng.normal(0, 0.1, 240), name="y")
    BasisRegressor(checkpoint=str(tmp_path / "icl"), strategy="base-ft", max_columns=3, feature_selection=selection,
                   **_fast(cache_dir)).fit(x, y)
    read = [set(b.column_names) - {"y"} for b in seen]
    assert len(read) > 2 and all(len(columns) == 2 for columns in read)
    if selection == "relevance":
        assert all("signal" in columns for columns in read) and len({frozenset(c) for c in read}) == 1
    else:
        assert len({frozenset(c) for c in read}) > 1


def test_base_ft_of_a_too_wide_table_ranks_its_features_once_not_at_every_validation(cache_dir, tmp_path, monkeypatch):
    """The relevance ranking (about a second on a wide table) depends on the training rows alone: episodic
    fine-tuning computes it once and each validation check reuses it, with the same predictions; fit ranks once
    more, on all the training rows, for what predictions read, and predict reuses that."""
    import basisfm.data.reading.features as in_context

    torch.manual_seed(0)
    save_pretrained(build_model(ModelConfig(architecture="tab2d", regression_head="binned")), tmp_path / "icl")
    calls = []
    real_relevance = in_context.feature_relevance
    monkeypatch.setattr(in_context, "feature_relevance", lambda *a, **k: calls.append(1) or real_relevance(*a, **k))
    rng = np.random.default_rng(5)
    x = pd.DataFrame({f"noise{i}": rng.normal(size=240) for i in range(6)})
    x["signal"] = rng.normal(size=240)
    y = pd.Series(5 * x.signal + rng.normal(0, 0.1, 240), name="y")
    model = BasisRegressor(checkpoint=str(tmp_path / "icl"), strategy="base-ft", max_columns=3,
                           **_fast(cache_dir, max_steps=9, validate_every=3, patience=5)).fit(x, y)
    assert len(model.history_.checks) == 4 and len(calls) == 2  # 4 validation checks, one ranking; then features_read_
    assert len(model.features_read_) == 2 and "signal" in model.features_read_
    model.predict(x.iloc[:5])
    model.predict(x.iloc[5:10])
    assert len(calls) == 2


@pytest.mark.parametrize("coding", ["text", "sorted", "ordinal"])
def test_base_ft_episodes_code_categorical_features_as_predictions_will(cache_dir, tmp_path, monkeypatch, coding):
    import basisfm.estimators.finetune as finetune

    save_pretrained(build_model(ModelConfig(architecture="tab2d", regression_head="binned")), tmp_path / "icl")
    seen = []

    def recording_fine_tune(model, train_batches, validation_score, loss_fn, settings):
        seen.extend(b for epoch in range(1, 7) for b in train_batches(epoch))
        return model, finetune.FineTuneHistory(stopped_because="recorded")

    monkeypatch.setattr("basisfm.estimators.strategies.episodic.fine_tune", recording_fine_tune)
    x, y = _houses(200, 25)
    BasisRegressor(checkpoint=str(tmp_path / "icl"), strategy="base-ft", categorical_features=coding, **_fast(cache_dir)).fit(x, y)
    area = [int(b.column_kinds[b.column_names.index("area")]) for b in seen]
    if coding == "text":  # the strings embedded, as pretraining's corpus episodes read them
        assert set(area) == {int(ColumnKind.CATEGORICAL)}
        return
    assert set(area) == {int(ColumnKind.NUMERIC)}
    gaps = []  # per episode: mean price of the support rows coded 0 minus that of those coded 1
    for b in seen:
        area, price = b.values[:, b.column_names.index("area")], b.values[:, b.column_names.index("price")]
        codes = area[b.support]
        assert set(codes.tolist()) <= {0.0, 1.0}
        gaps.append(float(price[b.support][codes == 0].mean() - price[b.support][codes == 1].mean()))
    assert all(abs(gap) > 100 for gap in gaps)  # north costs 500 more (size adds noise): a code is one category throughout
    if coding == "sorted":  # "north" < "south": north is 0 in every pass
        assert all(gap > 0 for gap in gaps)
    else:  # an order drawn afresh each pass (6 passes here)
        assert any(gap > 0 for gap in gaps) and any(gap < 0 for gap in gaps)


def test_base_ft_of_an_in_context_classifier_scores_its_query_rows(cache_dir, tmp_path):
    torch.manual_seed(0)
    save_pretrained(build_model(ModelConfig(architecture="tab2d")), tmp_path / "icl")
    x, _ = _houses(120, 23)
    labels = np.where(x.area == "north", "yes", "no")
    clf = BasisClassifier(checkpoint=str(tmp_path / "icl"), strategy="base-ft",
                          **_fast(cache_dir, max_steps=20, validate_every=10)).fit(x, labels)
    assert clf.history_.steps > 0 and np.isfinite([c["val_score"] for c in clf.history_.checks]).all()
    test, _ = _houses(20, 24)
    proba = clf.predict_proba(test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert clf.context_.num_rows == 120
