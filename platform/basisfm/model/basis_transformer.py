"""The Basis Transformer: a table's rows in, predictions for its hidden (target) cells out.

Read top to bottom:
  1. every cell becomes a token: column token (name embedding + parsed name features + kind + scale)
     + value token (numeric encoder, or the text projection of its string); missing and hidden
     (target) cells get stand-in tokens so the truth kept in the batch never leaks in;
  2. cell-level attention mixes a row's cells (dense, block-sparse or sampled);
  3. basis compression: k learned basis queries cross-attend to the cells, so any number of columns
     becomes k tokens;
  4. a transformer runs over [k basis tokens; one query token per target cell of the row], where a
     query token is built from its target column's token and attends to the basis tokens and itself;
  5. heads: the SMR bits of a numeric target (one sigmoid per bit; its column token adds a learned
     prior), or a score against candidate
     strings' embeddings for a categorical/text target (so label sets never seen in training work).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from basisfm.config import ModelConfig
from basisfm.data.batch import TableBatch
from basisfm.encoding.columns import ColumnEncoder
from basisfm.encoding.missing import build_missing_strategy
from basisfm.encoding.numeric import build_numeric_encoder, target_codec
from basisfm.encoding.smr import sanitize
from basisfm.errors import TableError
from basisfm.model.attention import Block, build_cell_attention


@dataclass
class ModelOutput:
    """Predictions for the batch's N target cells, in row-major order of `batch.target_mask`."""

    target_rows: torch.Tensor  # [N] long
    target_columns: torch.Tensor  # [N] long
    is_numeric: torch.Tensor  # [N] bool: numeric-like target column (predicted by bits)
    hidden: torch.Tensor  # [N, d] final query states
    bit_logits: torch.Tensor  # [N, 1 + width] the target's SMR bits, as logits
    window_top: torch.Tensor  # [N] long: exponent of the target column's top bit
    window_low: torch.Tensor  # [N] long: exponent of its lowest bit
    category_logits: torch.Tensor  # [N, V] scores over the batch vocabulary; -inf outside the column's strings
    basis: torch.Tensor  # [R, k, d] compressed rows: the representation every task shares


class BasisTransformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.codec = target_codec(config)

        # 1. cell tokens
        self.text_projection = nn.Linear(config.text_dim, d)  # column names, category/text cells, labels
        # Sentence embeddings are unit vectors (entries ~0.05): the default init would shrink a column's
        # name to ~3% of its token, far below its kind and value, and the model would be slow to tell
        # columns apart. Scale it so names weigh as much as values from the first step.
        nn.init.normal_(self.text_projection.weight, std=0.5)
        self.columns = ColumnEncoder(d)
        self.numeric = build_numeric_encoder(config)
        self.missing = build_missing_strategy(config.missing, d, config.missing_buckets)
        self.hidden_value = nn.Parameter(torch.randn(d) * 0.02)  # stands in for a target cell's value
        # A fixed random direction in name-embedding space: its projection orders columns by name alone.
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("name_direction", torch.randn(config.text_dim, generator=generator), persistent=False)
        # 2. cell-level attention
        self.cell_layers = nn.ModuleList(
            build_cell_attention(config.attention, d, config.n_heads, config.dropout, config.block_size, config.keep_ratio)
            for _ in range(config.cell_layers)
        )
        # 3. basis compression
        self.basis_queries = nn.Parameter(torch.randn(config.n_basis, d) * 0.02)
        self.compress = Block(d, config.n_heads, config.dropout, cross=True)
        # 4. transformer over basis + query tokens
        self.query_token = nn.Parameter(torch.randn(d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, config.n_heads, config.dropout) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(d)
        # 5. heads
        self.bit_head = nn.Linear(d, self.codec.n_bits)
        # A direct path from the target column's token to its bits: the column's own prior (its typical
        # magnitude within its window) is learned in a few steps instead of through every layer.
        self.bit_prior = nn.Linear(d, self.codec.n_bits)
        self.category_head = nn.Linear(d, d)

    # ------------------------------------------------------------------ forward

    def forward(self, batch: TableBatch) -> ModelOutput:
        target = batch.target_mask
        column_tokens, top, low = self.column_tokens(batch)
        cells, attend = self.cell_tokens(batch, column_tokens)
        basis = self.compress_rows(cells, attend)
        rows, cols = target.nonzero(as_tuple=True)
        hidden = self.run_queries(basis, target, column_tokens[cols] + self.query_token)

        candidates = self.string_candidates(batch)  # [C, V] which strings each column may take
        vocab = self.embed_strings(batch.vocab_embeddings)
        scores = self.score_strings(hidden, vocab).masked_fill(~candidates[cols], float("-inf"))
        return ModelOutput(
            target_rows=rows,
            target_columns=cols,
            is_numeric=~batch.is_string_column[cols],
            hidden=hidden,
            bit_logits=self.bit_head(hidden) + self.bit_prior(column_tokens[cols]),
            window_top=top[cols],
            window_low=low[cols],
            category_logits=scores,
            basis=basis,
        )

    def column_tokens(self, batch: TableBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """([C, d] one token per column, [C] top and [C] low exponents of each column's target bit window)."""
        top, low = self.codec.windows(batch.column_abs_max, batch.column_min_nonzero)
        window = self.codec.window_features(top, low).to(batch.column_name_embeddings.device)
        window = window * (~batch.is_string_column).unsqueeze(-1)  # strings have no numeric scale
        names = self.embed_strings(batch.column_name_embeddings)
        return self.columns(names, batch.column_names, batch.column_kinds, window), top, low

    def cell_tokens(self, batch: TableBatch, column_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[R, C, d] cell tokens and which cells attention may read ([R, C] bool, None = all)."""
        target = batch.target_mask
        string_column = batch.is_string_column
        # Hide the truth first: a target cell's value is zeroed before any encoder sees it.
        values, missing = sanitize(batch.values, batch.missing)
        values = values.masked_fill(target, 0.0)
        missing = missing | (string_column & (batch.string_ids < 0))
        numeric = self.numeric(values, batch.column_abs_max, batch.column_min_nonzero)
        strings = self.embed_strings(batch.vocab_embeddings)
        if strings.shape[0] > 0:
            string_values = strings[batch.string_ids.clamp(min=0)]
        else:
            string_values = torch.zeros_like(numeric)
        value = torch.where(string_column.view(1, -1, 1), string_values, numeric)
        value, attend = self.missing(value, missing & ~target, batch.column_kinds, batch.column_names)
        # Hidden cells stay attendable (as the hidden token) under every strategy: "this column is being
        # asked about" is information, and their truth is already gone.
        value = torch.where(target.unsqueeze(-1), self.hidden_value, value)
        cells = value + column_tokens.unsqueeze(0)
        order = batch.column_name_embeddings.float() @ self.name_direction.float()
        for layer in self.cell_layers:
            cells = layer(cells, attend, order)
        return cells, attend

    def compress_rows(self, cells: torch.Tensor, attend: torch.Tensor | None) -> torch.Tensor:
        """Basis compression: [R, C, d] -> [R, k, d], whatever C is."""
        queries = self.basis_queries.unsqueeze(0).expand(cells.shape[0], -1, -1)
        return self.compress(queries, keys=cells, attend=None if attend is None else attend.unsqueeze(1))

    def run_queries(self, basis: torch.Tensor, target: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Transformer over each row's [basis tokens; its query tokens] -> [N, d] final query states.

        Rows hold different numbers of targets, so queries are packed into T = max-per-row slots. Basis
        tokens attend only to basis tokens and each query to the basis and itself: a prediction never
        depends on which other cells happen to be targets, nor on padding.
        """
        r, k, d = basis.shape
        rows, cols = target.nonzero(as_tuple=True)
        slot = (target.cumsum(dim=1) - 1)[rows, cols]
        n_slots = int(slot.max().item()) + 1 if slot.numel() else 0
        packed = torch.zeros(r, n_slots, d, dtype=basis.dtype, device=basis.device)
        packed[rows, slot] = queries
        x = torch.cat([basis, packed], dim=1)
        length = k + n_slots
        attend = torch.zeros(length, length, dtype=torch.bool, device=basis.device)
        attend[:, :k] = True
        attend[k:, k:] = torch.eye(n_slots, dtype=torch.bool, device=basis.device)
        for block in self.blocks:
            x = block(x, attend=attend.unsqueeze(0))
        return self.norm(x[rows, k + slot])

    # ------------------------------------------------------------------ strings and heads

    def embed_strings(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings [V, text_dim] -> [V, d] in the model's space (cells, names and labels share it)."""
        return self.text_projection(embeddings.to(self.text_projection.weight.dtype))

    def score_strings(self, hidden: torch.Tensor, strings: torch.Tensor) -> torch.Tensor:
        """[N, d] query states x [V, d] projected strings -> [N, V] logits."""
        return self.category_head(hidden) @ strings.T / math.sqrt(hidden.shape[-1])

    @staticmethod
    def string_candidates(batch: TableBatch) -> torch.Tensor:
        """[C, V] bool: the strings seen in each column of this batch (a categorical target's choices)."""
        c, v = batch.n_columns, len(batch.vocab)
        candidates = torch.zeros(c, v, dtype=torch.bool, device=batch.string_ids.device)
        present = batch.string_ids >= 0
        column_index = torch.arange(c, device=batch.string_ids.device).expand_as(batch.string_ids)
        candidates[column_index[present], batch.string_ids[present]] = True
        return candidates

    # ------------------------------------------------------------------ inference API (estimators)

    @torch.no_grad()
    def predict_numeric(self, batch: TableBatch, readout: str = "expected") -> torch.Tensor:
        """[R, C] float64: decoded predictions at numeric-like target cells, NaN everywhere else.

        `readout="expected"` is the mean value under the predicted bit probabilities (by linearity,
        sum_j p_j 2^e_j: the squared-error-minimising read-out, best for R2); `"threshold"` rounds each
        bit at 0.5, the paper's decoding, which can land far off when a high bit is uncertain.
        """
        if readout not in ("expected", "threshold"):
            raise ValueError(f"readout must be 'expected' or 'threshold', got {readout!r}")
        out = self(batch)
        probabilities = torch.sigmoid(out.bit_logits.double())
        if readout == "expected":
            decoded = self.codec.expected_value(probabilities, out.window_top, out.window_low)
        else:
            decoded = self.codec.decode(probabilities, out.window_top, out.window_low)
        result = torch.full(batch.values.shape, float("nan"), dtype=torch.float64, device=decoded.device)
        keep = out.is_numeric
        result[out.target_rows[keep], out.target_columns[keep]] = decoded[keep]
        return result

    @torch.no_grad()
    def predict_category_scores(self, batch: TableBatch, column_index: int, label_embeddings: torch.Tensor) -> torch.Tensor:
        """[R, L] logits of every row's cell in `column_index` against L label strings' embeddings [L, text_dim].

        The column is hidden in every row (along with any targets already marked); the labels need not
        be strings the model has seen, nor the ones present in the batch.
        """
        return self.category_logits(batch, column_index, label_embeddings)

    def category_logits(self, batch: TableBatch, column_index: int, label_embeddings: torch.Tensor) -> torch.Tensor:
        """`predict_category_scores` with gradients (fine-tuning a classifier on its own labels)."""
        if not 0 <= column_index < batch.n_columns:
            raise TableError(f"column index {column_index} is out of range for a batch of {batch.n_columns} columns; pass a position in batch.column_names", table=batch.table_id)
        target = batch.target_mask.clone()
        target[:, column_index] = True
        batch = batch.with_targets(target)
        column_tokens, _, _ = self.column_tokens(batch)
        cells, attend = self.cell_tokens(batch, column_tokens)
        basis = self.compress_rows(cells, attend)
        rows, cols = target.nonzero(as_tuple=True)
        hidden = self.run_queries(basis, target, column_tokens[cols] + self.query_token)
        in_column = cols == column_index  # row-major order: exactly one per row, rows ascending
        labels = self.embed_strings(label_embeddings.to(hidden.device))
        return self.score_strings(hidden[in_column], labels)
