"""SMR maths: the paper's layout, exactness, saturation with an overflow flag, dynamic per-column windows."""

from __future__ import annotations

import math

import pytest
import torch

from basisfm.encoding.smr import SMRCodec, floor_log2, sanitize
from test_model_support import single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


def _fixed(h, l):
    codec = SMRCodec.fixed(h, l)
    top, low = codec.windows(torch.zeros(1), torch.zeros(1))
    return codec, top, low


def test_paper_example_5_375_with_h3_l3():
    codec, top, low = _fixed(3, 3)
    bits, overflow = codec.encode(torch.tensor([[5.375]], dtype=torch.float64), top, low)
    assert bits[0, 0].tolist() == [0, 1, 0, 1, 0, 1, 1]
    assert not overflow.any()
    bits, _ = codec.encode(torch.tensor([[-5.375]], dtype=torch.float64), top, low)
    assert bits[0, 0].tolist() == [1, 1, 0, 1, 0, 1, 1]


def test_fixed_smr_is_exact_for_every_representable_value():
    codec, top, low = _fixed(6, 4)
    # every multiple of 2^-4 in (-64, 64)
    grid = torch.arange(-64 * 16 + 1, 64 * 16, dtype=torch.float64) / 16
    bits, overflow = codec.encode(grid.unsqueeze(-1), top, low)
    assert not overflow.any()
    assert torch.equal(codec.decode(bits[:, 0], top, low), grid)


def test_out_of_range_saturates_and_flags_never_wraps():
    codec, top, low = _fixed(4, 2)
    values = torch.tensor([[16.0], [1000.0], [-1e300], [15.75], [float("inf")], [float("nan")]], dtype=torch.float64)
    bits, overflow = codec.encode(values, top, low)
    assert overflow[:, 0].tolist() == [True, True, True, False, True, True]
    decoded = codec.decode(bits[:, 0], top, low)
    assert decoded[:3].tolist() == [15.75, 15.75, -15.75]  # the largest magnitude, sign kept
    assert decoded[3] == 15.75
    assert torch.isfinite(decoded).all()
    # values below 2^-l truncate to zero rather than flag
    small, flag = codec.encode(torch.tensor([[0.1]], dtype=torch.float64), top, low)
    assert codec.decode(small[:, 0], top, low).item() == 0.0 and not flag.any()


@pytest.mark.parametrize("magnitude", [1e10, 1e-10, 1e300, 1e-300, 3.0])
def test_dynamic_windows_keep_precision_at_any_scale(magnitude):
    codec = SMRCodec.adaptive(bit_budget=32, default_high_bits=16, default_low_bits=8)
    values = torch.tensor([[magnitude], [-0.37 * magnitude], [0.123456 * magnitude]], dtype=torch.float64)
    top, low = codec.windows(values.abs().amax(0), values.abs().amin(0))
    bits, overflow = codec.encode(values, top, low)
    decoded = codec.decode(bits[:, 0], top, low)
    assert not overflow.any()
    relative = ((decoded - values[:, 0]).abs() / values[:, 0].abs()).max().item()
    assert relative < 2**-15  # every value keeps at least 16 significant bits
    # a fixed SMR(16, 8) cannot represent these columns: too big saturates, too small vanishes
    if magnitude >= 1e10 or magnitude <= 1e-10:
        fixed, ftop, flow = _fixed(16, 8)
        fbits, fover = fixed.encode(values, ftop, flow)
        fdec = fixed.decode(fbits[:, 0], ftop, flow)
        assert fover.all() or (fdec == 0).all()


def test_dynamic_window_spans_smallest_nonzero_within_budget():
    codec = SMRCodec.adaptive(bit_budget=40, default_high_bits=16, default_low_bits=8)
    top, low = codec.windows(torch.tensor([1000.0, 1e10, 100.0], dtype=torch.float64), torch.tensor([0.001, 1e-10, 1.0], dtype=torch.float64))
    assert top.tolist() == [9, 33, 6]
    # 0.001 ~ 2^-10: the window reaches 15 bits below it, so it keeps 16 significant bits
    assert low[0].item() == -10 - 15
    assert (top[1] - low[1] + 1).item() == 40  # 1e10 .. 1e-10 needs more: capped by the budget
    assert low[2].item() == -15  # an integer-valued column 1..100 still gets 16 bits below its smallest value
    # unknown stats: the configured default high bits and the whole budget
    t, l = codec.windows(torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    assert t.item() == 15 and (t - l + 1).item() == 40


def test_dynamic_value_above_column_max_overflows():
    codec = SMRCodec.adaptive(bit_budget=24, default_high_bits=16, default_low_bits=8)
    top, low = codec.windows(torch.tensor([100.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))
    bits, overflow = codec.encode(torch.tensor([[50.0], [1e6]], dtype=torch.float64), top, low)
    assert overflow[:, 0].tolist() == [False, True]
    assert codec.decode(bits[:, 0], top, low)[1].item() == pytest.approx(2 ** (top.item() + 1) - 2.0 ** low.item())


def test_extreme_windows_never_produce_inf_or_nan():
    codec = SMRCodec.adaptive(bit_budget=128, default_high_bits=16, default_low_bits=8)
    values = torch.tensor([[1.7e308], [5e-324], [0.0], [-1.7e308]], dtype=torch.float64)
    top, low = codec.windows(torch.tensor([1.8e308]), torch.tensor([5e-324]))
    bits, overflow = codec.encode(values, top, low)
    assert torch.isfinite(bits).all()
    decoded = codec.decode(bits[:, 0], top, low)
    assert torch.isfinite(decoded).all()
    assert codec.expected_value(bits[:, 0], top, low).isfinite().all()


def test_expected_value_matches_decode_on_hard_bits_and_interpolates():
    codec, top, low = _fixed(4, 2)
    values = torch.tensor([[3.25], [-7.5]], dtype=torch.float64)
    bits, _ = codec.encode(values, top, low)
    assert torch.equal(codec.expected_value(bits[:, 0], top, low), values[:, 0])
    half = torch.full((1, codec.n_bits), 0.5)
    half[0, 0] = 0.0
    assert codec.expected_value(half, top, low).item() == pytest.approx(0.5 * (16 - 0.25))


def test_sanitize_marks_non_finite_missing_and_floor_log2_is_exact():
    values, missing = sanitize(torch.tensor([1.0, float("inf"), float("nan"), -2.0]), torch.tensor([False, False, False, True]))
    assert values.tolist() == [1.0, 0.0, 0.0, -2.0] and missing.tolist() == [False, True, True, True]
    powers = torch.tensor([2.0**k for k in (-1000, -3, 0, 1, 10, 1000)], dtype=torch.float64)
    assert floor_log2(powers).tolist() == [-1000, -3, 0, 1, 10, 1000]
    assert floor_log2(torch.tensor([1023.999, 0.0], dtype=torch.float64)).tolist() == [9, 0]
    assert floor_log2(torch.tensor([math.nextafter(2.0, 0.0)], dtype=torch.float64)).item() == 0
