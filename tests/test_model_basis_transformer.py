"""The Basis Transformer's properties: column-order invariance, any width, hidden targets, gradients everywhere."""

from __future__ import annotations

import pytest
import torch

from basisfm.config import MODEL_PRESETS, ModelConfig, apply_model_preset
from basisfm.corpus.manifest import ColumnKind
from basisfm.data.batch import TableBatch
from basisfm.errors import TableError
from basisfm.model import build_model, count_parameters, describe_model
from test_model_support import single_thread, HashEmbedder, permute_columns, real_batches, synthetic_batch  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def iris_batch():
    return real_batches("datasets", "iris")[0].select_rows(slice(0, 40))


@pytest.mark.parametrize("attention", ["dense", "block_sparse", "sampled"])
@pytest.mark.parametrize("missing", ["learnable", "attention_mask"])
def test_reordering_columns_does_not_change_predictions(iris_batch, attention, missing):
    torch.manual_seed(0)
    model = build_model(ModelConfig(attention=attention, missing=missing, block_size=2, keep_ratio=0.6)).eval()
    batch = iris_batch
    order = torch.tensor([3, 0, 4, 2, 1])
    shuffled = permute_columns(batch, order)
    numeric = model.predict_numeric(batch)
    numeric_shuffled = model.predict_numeric(shuffled)
    assert torch.equal(numeric[:, order].isnan(), numeric_shuffled.isnan())
    assert torch.allclose(numeric[:, order].nan_to_num(), numeric_shuffled.nan_to_num(), rtol=1e-5)
    out, out_shuffled = model(batch), model(shuffled)
    # the same target cells, listed in another order: shuffled column j is original column order[j]
    original = {(r, c): v for r, c, v in zip(out.target_rows.tolist(), out.target_columns.tolist(), out.bit_logits)}
    for r, j, v in zip(out_shuffled.target_rows.tolist(), out_shuffled.target_columns.tolist(), out_shuffled.bit_logits):
        assert torch.allclose(original[(r, int(order[j]))], v, atol=1e-5)
    species = batch.column_names.index("Species")
    labels = torch.from_numpy(HashEmbedder().embed(["setosa", "versicolor", "virginica", "unseen-label"]))
    scores = model.predict_category_scores(batch, species, labels)
    scores_shuffled = model.predict_category_scores(shuffled, order.tolist().index(species), labels)
    assert scores.shape == (batch.n_rows, 4)
    assert torch.allclose(scores, scores_shuffled, atol=1e-5)


def _wide_batch(n_columns: int, n_rows: int = 4) -> TableBatch:
    g = torch.Generator().manual_seed(n_columns)
    names = [f"feature_{j}" for j in range(n_columns)]
    values = torch.randn(n_rows, n_columns, generator=g, dtype=torch.float64) * 10
    target = torch.zeros(n_rows, n_columns, dtype=torch.bool)
    target[:, 0] = True
    return TableBatch(
        table_id=f"wide{n_columns}",
        column_names=names,
        column_kinds=torch.full((n_columns,), int(ColumnKind.NUMERIC)),
        column_name_embeddings=torch.from_numpy(HashEmbedder().embed(names)),
        column_abs_max=values.abs().amax(0),
        column_min_nonzero=values.abs().amin(0),
        values=values,
        missing=torch.zeros(n_rows, n_columns, dtype=torch.bool),
        string_ids=torch.full((n_rows, n_columns), -1),
        vocab=[],
        vocab_embeddings=torch.zeros(0, 384),
        target_mask=target,
    )


@pytest.mark.parametrize("attention", ["dense", "block_sparse", "sampled"])
def test_one_model_handles_2_and_500_columns(attention):
    model = build_model(ModelConfig(attention=attention, block_size=16, keep_ratio=0.25)).eval()
    for n_columns in (2, 500):
        batch = _wide_batch(n_columns)
        predictions = model.predict_numeric(batch)
        assert predictions.shape == (4, n_columns)
        assert torch.isfinite(predictions[:, 0]).all() and predictions[:, 1:].isnan().all()
        assert model(batch).basis.shape == (4, model.config.n_basis, model.config.d_model)


def test_target_truth_never_reaches_the_model(iris_batch):
    torch.manual_seed(0)
    model = build_model(ModelConfig()).eval()
    batch = iris_batch
    tampered_values = batch.values.clone()
    tampered_values[batch.target_mask] = 1e6  # change only the hidden truths
    tampered_ids = batch.string_ids.clone()
    species = batch.column_names.index("Species")
    hidden_species = batch.target_mask[:, species]
    tampered_ids[hidden_species, species] = (tampered_ids[hidden_species, species] + 1) % 3
    tampered = TableBatch(**{**batch.__dict__, "values": tampered_values, "string_ids": tampered_ids})
    out, out_tampered = model(batch), model(tampered)
    assert torch.equal(out.bit_logits, out_tampered.bit_logits)
    assert torch.equal(out.hidden, out_tampered.hidden)
    # ...while a visible cell does matter
    visible = (~batch.target_mask).nonzero()[0]
    nudged_values = batch.values.clone()
    nudged_values[visible[0], visible[1]] += 3.0
    nudged = TableBatch(**{**batch.__dict__, "values": nudged_values})
    assert not torch.equal(model(nudged).hidden, out.hidden)


@pytest.mark.parametrize(
    "settings",
    [
        dict(numeric_encoding="dynamic_smr", missing="learnable", attention="dense"),
        dict(numeric_encoding="hybrid_smr", missing="type_aware", attention="block_sparse", hybrid_fusion="concat"),
        dict(numeric_encoding="smr", missing="per_column", attention="sampled"),
        dict(numeric_encoding="periodic", missing="attention_mask", attention="dense"),
        dict(numeric_encoding="digits", missing="learnable", attention="dense"),
        dict(numeric_encoding="log_bins", missing="learnable", attention="dense"),
        dict(numeric_encoding="fixed_point", missing="learnable", attention="dense"),
    ],
)
def test_gradients_reach_every_parameter_in_use(settings):
    torch.manual_seed(0)
    model = build_model(ModelConfig(block_size=2, **settings))
    batch = synthetic_batch(n_rows=8, n_numeric=4, n_categorical=2)
    out = model(batch)
    numeric_loss = out.bit_logits[out.is_numeric].sum()
    cat = ~out.is_numeric
    truth = batch.string_ids[out.target_rows[cat], out.target_columns[cat]]
    category_loss = -out.category_logits[cat].gather(1, truth.unsqueeze(1)).sum()
    (numeric_loss + category_loss).backward()
    missing_grads = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # attention_mask has no missing parameters; every other parameter must get a non-zero gradient
    assert missing_grads == []


def test_extreme_values_and_non_finite_cells_stay_finite():
    model = build_model(ModelConfig()).eval()
    batch = synthetic_batch(n_rows=4, n_numeric=3, n_categorical=1)
    values = batch.values.clone()
    values[1, 0], values[2, 0], values[3, 0] = 1e300, float("inf"), float("nan")
    values[1, 1] = 1e-300
    abs_max = batch.column_abs_max.clone()
    abs_max[0] = float("inf")
    extreme = TableBatch(**{**batch.__dict__, "values": values, "column_abs_max": abs_max})
    out = model(extreme)
    assert torch.isfinite(out.bit_logits).all() and torch.isfinite(out.basis).all()
    predictions = model.predict_numeric(extreme)
    assert (predictions.isnan() == ~(extreme.target_mask & ~extreme.is_string_column)).all()
    assert torch.isfinite(predictions[~predictions.isnan()]).all()


def test_presets_grow_and_describe_model_reports_counts():
    counts = {}
    for preset in ("tiny", "small"):
        config = ModelConfig(preset=preset)
        apply_model_preset(config)
        model = build_model(config)
        counts[preset] = count_parameters(model)
        text = describe_model(model)
        assert f"preset={preset}" in text and f"{counts[preset]:,}" in text.splitlines()[-1]
        assert config.d_model == MODEL_PRESETS[preset]["d_model"]
    assert counts["tiny"] < counts["small"]
    assert counts["tiny"] < 400_000  # tiny must stay CPU-friendly


def test_predict_category_scores_rejects_a_bad_column(iris_batch):
    model = build_model(ModelConfig()).eval()
    with pytest.raises(TableError, match="column index 9"):
        model.predict_category_scores(iris_batch, 9, torch.zeros(2, 384))


def test_readouts_agree_on_confident_bits_and_reject_unknown_names():
    model = build_model(ModelConfig()).eval()
    batch = synthetic_batch()
    with torch.no_grad():
        model.heads.bit_head.weight.zero_()
        # confident bits: sign 0, then the pattern 1, 0, 1, 0, ... from the window's top
        model.heads.bit_head.bias.copy_(torch.tensor([-30.0] + [30.0 if j % 2 == 0 else -30.0 for j in range(model.codec.width)]))
    expected = model.predict_numeric(batch)
    threshold = model.predict_numeric(batch, readout="threshold")
    assert torch.equal(expected.isnan(), threshold.isnan())
    assert torch.allclose(expected.nan_to_num(), threshold.nan_to_num(), rtol=1e-9)
    assert (threshold.nan_to_num() >= 0).all()
    with pytest.raises(ValueError, match="readout"):
        model.predict_numeric(batch, readout="mode")


@pytest.mark.parametrize("encoding", ["dynamic_smr", "hybrid_smr", "periodic", "fixed_point"])
def test_runs_in_bfloat16_as_deepspeed_casts_it(encoding):
    from basisfm.config import LossConfig
    from basisfm.losses import build_objective

    config = ModelConfig(numeric_encoding=encoding)
    model = build_model(config).to(torch.bfloat16)
    result = build_objective(model, config, LossConfig(weighting="paper"))(synthetic_batch(n_rows=8))
    assert torch.isfinite(result.loss)
    result.loss.backward()
    assert torch.isfinite(model.predict_numeric(synthetic_batch(n_rows=8)).nan_to_num()).all()
