"""What every architecture shares: a TableBatch's cells become tokens, query states become predictions.

An architecture (`basis`, `basis_icl`, `tab2d`) subclasses `TableModel` and implements one method,
`encode_queries(batch)`: one state per hidden target cell (`batch.query_target_mask`, row-major). The
rest is here, once:
  - column tokens: name embedding + parsed name features + kind + SMR scale window + the column's
    mean / std on a log scale (so a head over the standardised target knows what one z means);
  - cell inputs: value token (numeric encoder plus the value standardised with the column's mean / std,
    or the text projection of its string) + column token; missing cells get the missing strategy's
    token, hidden cells (query targets) a stand-in, so the truth kept in the batch never leaks in;
  - the heads (`model.heads`) and the inference API the estimators call (`predict_numeric`,
    `predict_category_scores`, `category_logits`).
Support rows of an episode show their target cells like any other cell; only query targets are hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from basisfm.config import ModelConfig
from basisfm.data.batch import TableBatch
from basisfm.encoding.columns import ColumnEncoder
from basisfm.encoding.missing import build_missing_strategy
from basisfm.encoding.numeric import build_numeric_encoder, target_codec
from basisfm.encoding.smr import sanitize
from basisfm.errors import TableError
from basisfm.model.heads import PredictionHeads, value_bins

# Parameters added after format version 1 of the checkpoint: a version-1 checkpoint lacks them. The
# listed output layers start at zero when such a checkpoint is loaded (their paths then add nothing, so
# the old model predicts exactly as before); the others take their fresh initial values.
ADDED_ZERO_PARAMETERS = ("column_scale.weight", "standardized.2.weight", "standardized.2.bias")
ADDED_FRESH_PARAMETERS = ("standardized.0.weight", "standardized.0.bias")


class ModelOutput(NamedTuple):
    """Predictions for the batch's N hidden target cells (`batch.query_target_mask`), in row-major order.

    A NamedTuple, not a dataclass: DeepSpeed ZeRO-3 finds a module's output tensors to hook its backward
    (re-gathering the module's own partitioned parameters: basis queries, query and hidden-value tokens);
    it looks inside tuples, lists and dicts only, and a dataclass hides them (backward then fails).
    """

    target_rows: torch.Tensor  # [N] long
    target_columns: torch.Tensor  # [N] long
    is_numeric: torch.Tensor  # [N] bool: numeric-like target column (read out by the regression head)
    hidden: torch.Tensor  # [N, d] final query states
    bit_logits: torch.Tensor | None  # [N, 1 + width] the target's SMR bits as logits (regression_head=smr_bits)
    value_logits: torch.Tensor | None  # [N, n_bins] bins of the standardised target (regression_head=binned)
    window_top: torch.Tensor  # [N] long: exponent of the target column's top bit
    window_low: torch.Tensor  # [N] long: exponent of its lowest bit
    category_logits: torch.Tensor  # [N, V] scores over the batch vocabulary; -inf outside the column's visible strings
    basis: torch.Tensor  # the representation every task shares: [R, k, d] basis tokens (basis, basis_icl), [R, C, d] cells (tab2d)


@dataclass
class QueryStates:
    """What `encode_queries` hands the heads."""

    rows: torch.Tensor  # [N] long: the hidden target cells, row-major
    cols: torch.Tensor  # [N] long
    hidden: torch.Tensor  # [N, d] final state of each
    column_tokens: torch.Tensor  # [C, d]
    top: torch.Tensor  # [C] long: each column's SMR window
    low: torch.Tensor  # [C] long
    shared: torch.Tensor  # the shared representation (ModelOutput.basis)


def scale_features(batch: TableBatch) -> torch.Tensor:
    """[C, 2] float32: asinh(mean) and log(std) of each numeric column, / 16 (|x| < ~2 for any sane table);
    zeros for string columns (they have no scale)."""
    mean = torch.asinh(batch.column_mean.double()) / 16.0
    std = torch.log(batch.column_std.double().clamp(1e-300, 1e300)) / 16.0
    features = torch.stack([mean, std], dim=-1).nan_to_num(0.0, 0.0, 0.0)
    return (features * (~batch.is_string_column).unsqueeze(-1)).float()


def standardized_features(values: torch.Tensor, batch: TableBatch) -> torch.Tensor:
    """[R, C, 2] float32: the value as z = (x - column_mean) / column_std, clipped to +-10 and scaled, and
    sign(z) log(1 + |z|) (an outlier stays distinguishable after the clip)."""
    z = (values - batch.column_mean) / batch.column_std.clamp_min(1e-300)
    z = z.nan_to_num(0.0, 0.0, 0.0)
    clipped = z.clamp(-10.0, 10.0) / 5.0
    return torch.stack([clipped, torch.sign(z) * torch.log1p(z.abs())], dim=-1).float()


class TableModel(nn.Module):
    """Cell tokens, heads and the inference API; subclasses implement `encode_queries`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.codec = target_codec(config)
        self.bins = value_bins(config)
        self.text_projection = nn.Linear(config.text_dim, d)  # column names, category/text cells, labels
        # Sentence embeddings are unit vectors (entries ~0.05): the default init would shrink a column's
        # name to ~3% of its token, far below its kind and value, and the model would be slow to tell
        # columns apart. Scale it so names weigh as much as values from the first step.
        nn.init.normal_(self.text_projection.weight, std=0.5)
        self.columns = ColumnEncoder(d, symbolic_features=config.symbolic_name_features)
        self.column_scale = nn.Linear(2, d, bias=False)  # the column's mean / std, see scale_features
        self.numeric = build_numeric_encoder(config)
        # The value relative to its column: what a head over z needs, and what in-context models compare
        # across rows. Raw magnitudes stay with the numeric encoder.
        self.standardized = nn.Sequential(nn.Linear(2, d), nn.GELU(), nn.Linear(d, d))
        self.missing = build_missing_strategy(config.missing, d, config.missing_buckets)
        self.hidden_value = nn.Parameter(torch.randn(d) * 0.02)  # stands in for a hidden target cell's value
        # A fixed random direction in name-embedding space: its projection orders columns by name alone.
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("name_direction", torch.randn(config.text_dim, generator=generator), persistent=False)
        self.heads = PredictionHeads(config, self.codec)

    # ------------------------------------------------------------------ the one method an architecture writes

    def encode_queries(self, batch: TableBatch) -> QueryStates:
        """States for the hidden target cells (`batch.query_target_mask`), row-major."""
        raise NotImplementedError  # abstract: each architecture is one subclass

    # ------------------------------------------------------------------ forward

    def forward(self, batch: TableBatch) -> ModelOutput:
        states = self.encode_queries(batch)
        rows, cols = states.rows, states.cols
        vocab = self.embed_strings(batch.vocab_embeddings)
        candidates = self.string_candidates(batch)  # [C, V] which strings each column may take
        scores = self.heads.score_strings(states.hidden, vocab).masked_fill(~candidates[cols], float("-inf"))
        bit_logits, value_logits = self.heads.regression(states.hidden, states.column_tokens[cols])
        return ModelOutput(
            target_rows=rows,
            target_columns=cols,
            is_numeric=~batch.is_string_column[cols],
            hidden=states.hidden,
            bit_logits=bit_logits,
            value_logits=value_logits,
            window_top=states.top[cols],
            window_low=states.low[cols],
            category_logits=scores,
            basis=states.shared,
        )

    # ------------------------------------------------------------------ tokens

    def column_tokens(self, batch: TableBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """([C, d] one token per column, [C] top and [C] low exponents of each column's target bit window)."""
        top, low = self.codec.windows(batch.column_abs_max, batch.column_min_nonzero)
        device = batch.column_name_embeddings.device
        window = self.codec.window_features(top, low).to(device)
        window = window * (~batch.is_string_column).unsqueeze(-1)  # strings have no numeric scale
        names = self.embed_strings(batch.column_name_embeddings)
        tokens = self.columns(names, batch.column_names, batch.column_kinds, window)
        scale = scale_features(batch).to(device=device, dtype=self.column_scale.weight.dtype)
        return tokens + self.column_scale(scale), top, low

    def cell_inputs(self, batch: TableBatch, column_tokens: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[R, C, d] cell tokens before any attention, and which cells attention may read ([R, C] bool, None = all).

        `hidden` [R, C] bool: cells whose value the model must not see (query targets).
        """
        string_column = batch.is_string_column
        # Hide the truth first: a hidden cell's value is zeroed before any encoder sees it.
        values, missing = sanitize(batch.values, batch.missing)
        values = values.masked_fill(hidden, 0.0)
        missing = missing | (string_column & (batch.string_ids < 0))
        dtype = self.text_projection.weight.dtype  # bf16/fp16 when DeepSpeed casts the model
        numeric = self.numeric(values, batch.column_abs_max, batch.column_min_nonzero)
        numeric = numeric + self.standardized(standardized_features(values, batch).to(dtype))
        strings = self.embed_strings(batch.vocab_embeddings)
        # A zero row after the vocabulary (what a batch without strings reads): the projection is then used
        # by every batch, so every batch runs the same modules in backward. ZeRO-3 requires ranks to agree
        # on them; a table without strings skipped this projection's backward and stopped a 2-rank run.
        strings = torch.cat([strings, strings.new_zeros(1, strings.shape[-1])])
        string_values = strings[batch.string_ids.clamp(min=0)]
        value = torch.where(string_column.view(1, -1, 1), string_values, numeric)
        value, attend = self.missing(value, missing & ~hidden, batch.column_kinds, batch.column_names)
        # Hidden cells stay attendable (as the hidden token) under every strategy: "this cell is being
        # asked about" is information, and their truth is already gone.
        value = torch.where(hidden.unsqueeze(-1), self.hidden_value, value)
        return value + column_tokens.unsqueeze(0), attend

    def column_order(self, batch: TableBatch) -> torch.Tensor:
        """[C] a score per column from its name alone: cell attention variants that pick columns use it."""
        return batch.column_name_embeddings.float() @ self.name_direction.float()

    # ------------------------------------------------------------------ strings

    def embed_strings(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings [V, text_dim] -> [V, d] in the model's space (cells, names and labels share it)."""
        return self.text_projection(embeddings.to(self.text_projection.weight.dtype))

    @staticmethod
    def string_candidates(batch: TableBatch) -> torch.Tensor:
        """[C, V] bool: the strings visible in each column of this batch (a categorical target's choices).

        Hidden cells do not count: their string would tell the model a label exists, and one query's
        hidden label would change another query's choices.
        """
        c, v = batch.n_columns, len(batch.vocab)
        present = (batch.string_ids >= 0) & ~batch.query_target_mask
        # A scatter, not boolean indexing (which would wait for the device): absent cells land in an extra
        # column v that is cut off.
        ids = torch.where(present, batch.string_ids, v)  # [R, C]
        candidates = torch.zeros(c, v + 1, dtype=torch.bool, device=batch.string_ids.device)
        candidates.scatter_(1, ids.T, True)
        return candidates[:, :v]

    # ------------------------------------------------------------------ inference API (estimators)

    @torch.no_grad()
    def predict_numeric(self, batch: TableBatch, readout: str = "expected") -> torch.Tensor:
        """[R, C] float64: decoded predictions at numeric-like hidden target cells, NaN everywhere else.

        `readout="expected"` is the mean of the predicted distribution (the squared-error-minimising
        read-out, best for R2); `"threshold"` (SMR bits only) rounds each bit at 0.5, the paper's decoding,
        which can land far off when a high bit is uncertain.
        """
        from basisfm.model.decoding import decode_numeric, threshold_decode

        if readout not in ("expected", "threshold"):
            raise ValueError(f"readout must be 'expected' or 'threshold', got {readout!r}")
        if readout == "threshold" and self.config.regression_head != "smr_bits":
            raise ValueError("readout='threshold' rounds SMR bits; this model's regression_head is "
                             f"{self.config.regression_head!r}, use readout='expected'")
        out = self(batch)
        decoded = threshold_decode(self, out) if readout == "threshold" else decode_numeric(self, out, batch)[0]
        result = torch.full(batch.values.shape, float("nan"), dtype=torch.float64, device=decoded.device)
        keep = out.is_numeric
        result[out.target_rows[keep], out.target_columns[keep]] = decoded[keep]
        return result

    @torch.no_grad()
    def predict_category_scores(self, batch: TableBatch, column_index: int, label_embeddings: torch.Tensor) -> torch.Tensor:
        """[Q, L] logits of every query row's cell in `column_index` against L label strings' embeddings [L, text_dim].

        Q is every row of a plain batch (the column is hidden in each, along with any targets already
        marked); in an episode the support rows show their labels and Q is its query rows, in order. The
        labels need not be strings the model has seen, nor the ones present in the batch.
        """
        return self.category_logits(batch, column_index, label_embeddings)

    def category_logits(self, batch: TableBatch, column_index: int, label_embeddings: torch.Tensor) -> torch.Tensor:
        """`predict_category_scores` with gradients (fine-tuning a classifier on its own labels)."""
        if not 0 <= column_index < batch.n_columns:
            raise TableError(f"column index {column_index} is out of range for a batch of {batch.n_columns} columns; pass a position in batch.column_names", table=batch.table_id)
        target = batch.target_mask.clone()
        target[:, column_index] = True
        states = self.encode_queries(batch.with_targets(target))
        in_column = states.cols == column_index  # row-major order: exactly one per query row, rows ascending
        labels = self.embed_strings(label_embeddings.to(states.hidden.device))
        return self.heads.score_strings(states.hidden[in_column], labels)
