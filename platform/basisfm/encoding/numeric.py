"""Numeric cell encoders behind one interface: the SMR family (fixed, dynamic-range, hybrid) and `build_numeric_encoder`.

Every encoder maps values [R, C] float64 plus the columns' manifest statistics to [R, C, d_model] float32
(the `NumericEncoder` interface, in `encoding.numeric_base`). The baselines the encoding benchmark
compares against live in `encoding.baselines`.
"""

from __future__ import annotations

import torch
from torch import nn

from basisfm.config import ModelConfig
from basisfm.encoding import baselines
from basisfm.encoding.numeric_base import NumericEncoder
from basisfm.encoding.smr import SMRCodec
from basisfm.errors import ConfigError


class SMREncoder(NumericEncoder):
    """The paper's SMR(h, l): sign, h high bits (2^(h-1)..2^0), l low bits (2^-1..2^-l), plus an overflow flag.

    Values beyond 2^h saturate to all ones and raise the flag, which the projection sees as one more input.
    """

    def __init__(self, high_bits: int, low_bits: int, d_model: int):
        super().__init__()
        self.codec = SMRCodec.fixed(high_bits, low_bits)
        self.project = nn.Linear(self.codec.n_bits + 1, d_model)

    def forward(self, values, column_abs_max, column_min_nonzero):
        top, low = self.codec.windows(column_abs_max, column_min_nonzero)
        bits, overflow = self.codec.encode(values, top, low)
        features = torch.cat([bits, overflow.unsqueeze(-1).to(bits.dtype)], dim=-1)
        return self.project(features.to(self.project.weight.dtype))  # bf16/fp16 when DeepSpeed casts the model


class DynamicSMREncoder(NumericEncoder):
    """SMR over a per-column window: top bit at the column's abs-max, reaching down towards its smallest
    non-zero magnitude, `bit_budget` bits wide. The window's position (the exponent shift) is fed alongside
    the bits so the model still knows the column's absolute scale.
    """

    def __init__(self, bit_budget: int, d_model: int, default_high_bits: int = 16, default_low_bits: int = 8):
        super().__init__()
        self.codec = SMRCodec.adaptive(bit_budget, default_high_bits, default_low_bits)
        self.project = nn.Linear(self.codec.n_bits + 1 + 2, d_model)

    def bit_features(self, values, column_abs_max, column_min_nonzero) -> tuple[torch.Tensor, torch.Tensor]:
        """([R, C, n_bits + 3] bits + overflow + window features, top exponents [C])."""
        top, low = self.codec.windows(column_abs_max, column_min_nonzero)
        bits, overflow = self.codec.encode(values, top, low)
        window = self.codec.window_features(top, low).to(bits.device).expand(*bits.shape[:-1], 2)
        return torch.cat([bits, overflow.unsqueeze(-1).to(bits.dtype), window], dim=-1), top

    def forward(self, values, column_abs_max, column_min_nonzero):
        features, _ = self.bit_features(values, column_abs_max, column_min_nonzero)
        return self.project(features.to(self.project.weight.dtype))


class HybridSMREncoder(NumericEncoder):
    """Dynamic SMR bits together with a learned embedding of the column-scaled value, fused by `concat` or `gate`.

    The bits say exactly what the number is; the learned path gives a smooth notion of "large for this
    column" (15 as an age vs 15 as a price) that bit patterns do not make obvious.
    """

    def __init__(self, bit_budget: int, d_model: int, fusion: str = "gate", default_high_bits: int = 16, default_low_bits: int = 8):
        super().__init__()
        if fusion not in ("concat", "gate"):
            raise ConfigError(f"hybrid fusion must be 'concat' or 'gate', got {fusion!r}")
        self.fusion = fusion
        self.smr = DynamicSMREncoder(bit_budget, d_model, default_high_bits, default_low_bits)
        self.learned = nn.Sequential(nn.Linear(3, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.fuse = nn.Linear(2 * d_model, d_model)

    def forward(self, values, column_abs_max, column_min_nonzero):
        features, top = self.smr.bit_features(values, column_abs_max, column_min_nonzero)
        bits_embedding = self.smr.project(features.to(self.smr.project.weight.dtype))
        # x / 2^(top+1) lies in (-1, 1) for in-range values; overflowing ones are clamped, their flag is in the bits.
        scale = torch.exp2((top + 1).to(torch.float64))
        scaled = (values.to(torch.float64) / scale).clamp(-1.0, 1.0).to(torch.float32).unsqueeze(-1)
        learned_input = torch.cat([scaled, scaled.abs().sqrt(), features[..., -2:-1]], dim=-1)
        learned_embedding = self.learned(learned_input.to(self.smr.project.weight.dtype))
        both = torch.cat([bits_embedding, learned_embedding], dim=-1)
        if self.fusion == "concat":
            return self.fuse(both)
        gate = torch.sigmoid(self.fuse(both))
        return gate * bits_embedding + (1.0 - gate) * learned_embedding


def target_codec(config: ModelConfig) -> SMRCodec:
    """The bit code the regression head predicts. The paper's fixed SMR when that is the input encoding,
    the per-column dynamic window otherwise (so every encoding is judged on the same targets)."""
    if config.numeric_encoding == "smr":
        return SMRCodec.fixed(config.smr_high_bits, config.smr_low_bits)
    return SMRCodec.adaptive(config.smr_bit_budget, config.smr_high_bits, config.smr_low_bits)


def build_numeric_encoder(config: ModelConfig) -> NumericEncoder:
    """The numeric encoder `config.numeric_encoding` names."""
    d = config.d_model
    kind = config.numeric_encoding
    if kind == "smr":
        return SMREncoder(config.smr_high_bits, config.smr_low_bits, d)
    if kind == "dynamic_smr":
        return DynamicSMREncoder(config.smr_bit_budget, d, config.smr_high_bits, config.smr_low_bits)
    if kind == "hybrid_smr":
        return HybridSMREncoder(config.smr_bit_budget, d, config.hybrid_fusion, config.smr_high_bits, config.smr_low_bits)
    if kind == "log_bins":
        return baselines.LogBinsEncoder(d)
    if kind == "fixed_point":
        return baselines.FixedPointEncoder(config.smr_high_bits, config.smr_low_bits, d)
    if kind == "periodic":
        return baselines.PeriodicEncoder(d)
    if kind == "digits":
        return baselines.DigitsEncoder(d)
    raise ConfigError(f"config key 'model.numeric_encoding': unknown encoding {kind!r}; choose one of smr, dynamic_smr, hybrid_smr, log_bins, fixed_point, periodic, digits")
