"""The numeric encoders' shared contract and each baseline's maths; column-name features; missing strategies."""

from __future__ import annotations

import pytest
import torch

from basisfm.config import ModelConfig
from basisfm.corpus.manifest import ColumnKind
from basisfm.encoding import (
    DigitsEncoder,
    FixedPointEncoder,
    HybridSMREncoder,
    LogBinsEncoder,
    SMREncoder,
    build_missing_strategy,
    build_numeric_encoder,
    symbolic_name_features,
)
from basisfm.encoding.columns import SYMBOLIC_VOCABULARY, name_tokens
from basisfm.encoding.missing import stable_name_bucket
from test_model_support import single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

ENCODINGS = ["smr", "dynamic_smr", "hybrid_smr", "log_bins", "fixed_point", "periodic", "digits"]


def _columns():
    values = torch.tensor(
        [[1e10, 1e-10, 3.0, -1e300, 0.0], [-2.5e9, 3e-11, 15.0, 1e-300, 1.0], [0.0, 0.0, -7.0, 5.0, 1e308]],
        dtype=torch.float64,
    )
    abs_max = values.abs().amax(0)
    nonzero = values.abs().masked_fill(values == 0, float("inf")).amin(0)
    return values, abs_max, nonzero


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_encoding_gives_finite_d_model_vectors_on_extreme_values(encoding):
    torch.manual_seed(0)
    encoder = build_numeric_encoder(ModelConfig(numeric_encoding=encoding, d_model=16, n_heads=4))
    values, abs_max, nonzero = _columns()
    out = encoder(values, abs_max, nonzero)
    assert out.shape == (3, 5, 16) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # per-cell: permuting columns (with their statistics) permutes the output the same way
    order = torch.tensor([4, 2, 0, 3, 1])
    assert torch.allclose(encoder(values[:, order], abs_max[order], nonzero[order]), out[:, order], atol=1e-6)
    # gradients reach the encoder's parameters
    out.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())


def test_smr_encoder_sees_the_overflow_flag():
    encoder = SMREncoder(high_bits=4, low_bits=2, d_model=8)
    stats = torch.zeros(1, dtype=torch.float64)
    inside = encoder(torch.tensor([[15.75]], dtype=torch.float64), stats, stats)
    saturated = encoder(torch.tensor([[1e6]], dtype=torch.float64), stats, stats)
    # same (saturated) bits, but the flag differs, so the embeddings differ by exactly the flag's weight column
    assert torch.allclose(saturated - inside, encoder.project.weight[:, -1].view(1, 1, -1), atol=1e-6)


@pytest.mark.parametrize("fusion", ["concat", "gate"])
def test_hybrid_separates_same_number_in_different_columns(fusion):
    torch.manual_seed(0)
    encoder = HybridSMREncoder(bit_budget=24, d_model=16, fusion=fusion)
    # 15 as an age (max 100) and as a price (max 1e5): same value, different column scale
    values = torch.tensor([[15.0, 15.0]], dtype=torch.float64)
    out = encoder(values, torch.tensor([100.0, 1e5], dtype=torch.float64), torch.tensor([1.0, 1.0], dtype=torch.float64))
    assert not torch.allclose(out[0, 0], out[0, 1])
    with pytest.raises(ValueError, match="fusion"):
        HybridSMREncoder(bit_budget=24, d_model=16, fusion="sum")


def test_log_bins_are_monotone_in_magnitude_and_signed():
    encoder = LogBinsEncoder(d_model=4, n_bins=16)
    values = torch.tensor([[0.0], [1e-3], [1e-1], [10.0], [1000.0], [-1000.0]], dtype=torch.float64)
    ids = encoder.bin_ids(values, torch.tensor([1000.0], dtype=torch.float64), torch.tensor([1e-3], dtype=torch.float64))[:, 0]
    assert ids[0] == 0  # exact zero has its own bin
    assert (ids[1:5].diff() > 0).all()
    assert ids[5] == ids[4] + 16  # the negative twin


def test_fixed_point_rounds_to_grid_and_saturates():
    encoder = FixedPointEncoder(high_bits=4, low_bits=2, d_model=4)
    with torch.no_grad():
        encoder.project.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))
        encoder.project.bias.zero_()
    out = encoder(torch.tensor([[1.3], [100.0]], dtype=torch.float64), None, None)
    assert out[0, 0, 0].item() == pytest.approx(1.25 / 16) and out[0, 0, 1].item() == 0.0
    assert out[1, 0, 0].item() == pytest.approx(15.75 / 16) and out[1, 0, 1].item() == 1.0


def test_digit_tokens_spell_the_number_in_scientific_notation():
    encoder = DigitsEncoder(d_model=4, n_digits=5)
    tokens = encoder.tokens(torch.tensor([1234.56, -0.000999996, 0.0], dtype=torch.float64))
    plus, minus = 10, 11
    assert tokens[0].tolist() == [plus, 1, 2, 3, 4, 6, plus, 0, 0, 3]  # +1.2346e+003
    assert tokens[1].tolist() == [minus, 1, 0, 0, 0, 0, minus, 0, 0, 3]  # rounding carries: -1.0000e-003
    assert tokens[2].tolist() == [plus, 0, 0, 0, 0, 0, plus, 0, 0, 0]


def test_symbolic_name_features_parse_units_prefixes_and_shapes():
    names = ["income_usd", "WeightKg", "pct_change", "log_price", "is_member", "x1", "Sepal.Length"]
    features = symbolic_name_features(names)
    index = {name: i for i, (name, _) in enumerate(SYMBOLIC_VOCABULARY)}
    assert features[0, index["currency"]] == 1 and features[1, index["mass"]] == 1
    assert features[2, index["percent"]] == 1 and features[3, index["log"]] == 1 and features[3, index["currency"]] == 1
    assert features[4, index["flag"]] == 1
    n_words = len(SYMBOLIC_VOCABULARY)
    assert features[5, n_words] == 1 and features[5, n_words + 1] == 0  # trailing digit, not one letter
    assert features[6, n_words + 3] == 1  # dotted name
    assert name_tokens("IncomeUSD_log2") == ["income", "usd", "log", "2"]
    assert symbolic_name_features([]).shape == (0, features.shape[1])


@pytest.mark.parametrize("strategy", ["learnable", "type_aware", "per_column", "attention_mask"])
def test_missing_strategies_replace_only_missing_cells(strategy):
    torch.manual_seed(0)
    module = build_missing_strategy(strategy, d_model=8, n_buckets=16)
    values = torch.randn(3, 4, 8)
    missing = torch.tensor([[True, False, False, False], [False, True, False, True], [False, False, False, False]])
    kinds = torch.tensor([ColumnKind.NUMERIC, ColumnKind.CATEGORICAL, ColumnKind.NUMERIC, ColumnKind.TEXT])
    names = ["age", "city", "income", "notes"]
    out, attend = module(values, missing, kinds, names)
    assert torch.equal(out[~missing], values[~missing])
    assert not torch.allclose(out[missing], values[missing])
    if strategy == "attention_mask":
        assert torch.equal(attend, ~missing) and (out[missing] == 0).all()
        return
    assert attend is None
    if strategy == "learnable":
        assert torch.equal(out[0, 0], out[1, 1])  # one token for everything
    if strategy == "type_aware":
        assert not torch.equal(out[0, 0], out[1, 1])  # numeric vs categorical
        assert torch.equal(out[0, 0], module.tokens.weight[ColumnKind.NUMERIC])
    if strategy == "per_column":
        assert torch.equal(out[1, 3], module.tokens.weight[stable_name_bucket("notes", 16)])


def test_name_buckets_are_stable_across_processes():
    # crc32, not Python's salted hash(): this value must never change or checkpoints lose their meaning
    assert stable_name_bucket("income", 256) == 208
    with pytest.raises(ValueError, match="unknown missing-value strategy"):
        build_missing_strategy("impute", d_model=8)


def test_baselines_depend_on_the_interface_only_not_on_the_smr_encoders():
    # numeric builds every encoder by name and imports the baselines; the reverse import made a cycle.
    import subprocess
    import sys

    code = "import sys, basisfm.encoding.baselines; print('basisfm.encoding.numeric' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
