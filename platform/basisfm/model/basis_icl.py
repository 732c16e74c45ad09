"""`basis_icl`: the Basis Transformer's basis compression as a row summary, then attention across a table's rows.

A query row's targets are predicted from its own cells and from the labelled support rows of its episode
(`batch.support`), with no gradient step per table. The shape is TabICL's (summarise each row, then attend
across rows); the summary is the paper's basis compression. Read top to bottom:
  1-3. per row, the per-row pieces of `basis` (reused, not copied): cell tokens, cell attention, basis
       compression to k tokens [R, k, d]. A cell's token holds its column's token plus a random identity of
       the column (`identified_columns`). Every target cell is hidden here, support rows' too, so a row's
       summary describes its features alone, alike for support and query rows (what a query is compared on);
  4. the row summary: the k tokens flattened and projected to d [R, d], then centred on the support rows'
     mean and scaled to unit RMS over them (`standardise_on_support`);
  5. one token per row per target column (a column holding any target cell) [R, T, d]: the row summary +
     the target cell's value token (its value on support rows, the hidden stand-in on query rows) + the
     learned query marker + the column's token through a projection that starts at zero;
  6. n_layers pairs of blocks: within a row (its T target tokens attend each other: several targets inform
     each other), then across rows (token t of every row reads token t of the support rows). Support rows
     never read queries and queries never read each other or themselves: a query's prediction depends on
     its own row and the support rows alone;
  7. a hidden target cell (r, c) is read out from row r's token for column c by the shared heads.
Cost over R rows (S of them support): R C^2 d for the cells, then T R S d across rows, against tab2d's C R S d.

Why step 4 standardises and step 5 keeps the column token out (benchmarks/results/basis_icl_ablation.md): every
row's summary shares a large common part (basis queries, column tokens), and the part that tells rows apart was
small beside it (~0.3 against ~7 for the token at initialisation). After each block's layer norm the rows looked
alike to attention across rows, and the model stayed at the context mean for 3,000 steps of stage 1. A LayerNorm
per row does not help (it rescales the common part with the rest); centring on the context removes it.
Why step 1 gives each column a random identity (basis_icl_ablation_long.md): half the prior's tasks have no
column names, so every column had the same token and the compression, which pools a row's cells, saw a set of
values without knowing which column held which; it started far slower than tab2d, whose attention runs down each
column (stage 1 held-out ratio 0.485 without the identity, 0.193 with it; level by stage 3). The price: a
prediction depends on the order of the columns (the in-context members' feature orders average it out), as
TabPFN v2's random feature embeddings do.
The `icl_*` model options restore the earlier choices for the ablation benchmark; their defaults are the model.
"""

from __future__ import annotations

import torch
from torch import nn

from basisfm.config import ModelConfig
from basisfm.data.batch import TableBatch
from basisfm.errors import TableError
from basisfm.model.attention import Block, support_attention
from basisfm.model.basis_transformer import BasisTransformer
from basisfm.model.table_model import QueryStates, standardized_features

# `icl_row_summary: numbers` (the ablation's row-token yardstick) reads a row's standardised values in column
# order, zero-padded to this many columns.
NUMBERS_WIDTH = 32
# `icl_column_identity`: each column's random identity is drawn in this many dimensions, then projected to d.
IDENTITY_DIM = 16


def standardise_on_support(summary: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """[R, d] row summaries centred on the support rows' mean and scaled to unit RMS over them (all rows when
    there is no support row): what sets rows apart, at a fixed size.

    Every row's summary shares a large common part (the basis queries, the column tokens, the same features'
    names), and attention across rows compares what differs. Centred on the context, a query reads its
    difference from the support rows, as a standardised feature does; the support rows alone set the centre
    and scale, so queries never change each other's summaries."""
    context = summary[support] if bool(support.any()) else summary  # [S, d]
    centre = context.mean(dim=0)  # [d]
    scale = (context - centre).pow(2).mean().sqrt().clamp_min(1e-6)  # one number: keeps the summaries' geometry
    return (summary - centre) / scale


def read_support_rows(block: Block, x: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """One block across rows: x [T, R, d] (rows are the sequence), every row reading the support rows' tokens.

    The same as `block(x, attend=support_attention(support))`, without the [R, R] mask: the keys are the
    support rows themselves [T, S, d], so attention needs no mask and memory grows as R S, not R^2 (what
    lets a 10,000-row table be the context)."""
    if not bool(support.any()):
        return block(x, attend=support_attention(support).unsqueeze(0))
    normed = block.norm_query(x)  # [T, R, d]
    x = x + block.attention(normed, normed[:, support])  # keys [T, S, d]
    return x + block.feed_forward(block.norm_ff(x))


class BasisICL(BasisTransformer):
    """Inherits the per-row pieces; its `blocks` (within a row) pair with `row_blocks` (across rows)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        d = config.d_model
        if config.icl_row_summary == "numbers":
            # The yardstick's summary: a row's numbers alone (no cell tokens, no compression).
            self.numbers = nn.Sequential(nn.Linear(2 * NUMBERS_WIDTH, d), nn.GELU(), nn.Linear(d, d))
        else:
            self.row_projection = nn.Linear(config.n_basis * d, d)
        self.row_norm = nn.LayerNorm(d) if config.icl_row_norm == "layer" else None
        # The column's identity (which target a token is about, for multi-target rows) starts at zero: added
        # raw, the column token swamps the row summary (module docstring).
        self.target_column = nn.Linear(d, d)
        nn.init.zeros_(self.target_column.weight)
        nn.init.zeros_(self.target_column.bias)
        self.row_blocks = nn.ModuleList(Block(d, config.n_heads, config.dropout) for _ in range(config.n_layers))
        # The yardstick's summary reads columns by position and needs no identity.
        identity = config.icl_column_identity and config.icl_row_summary == "basis"
        self.column_identity = nn.Linear(IDENTITY_DIM, d, bias=False) if identity else None

    def identified_columns(self, batch: TableBatch, column_tokens: torch.Tensor) -> torch.Tensor:
        """[C, d] the column tokens the cells are built from: with `icl_column_identity`, plus a random identity
        per column (TabPFN v2's random feature embeddings). The summary pools a row's cells over its columns,
        and a prior task without names gives every column the same name token: without an identity the
        summary is a set of values that cannot say which column holds which. Drawn afresh at every training
        step (no column order is learned), from a fixed seed at evaluation (a prediction is repeatable)."""
        if self.column_identity is None:
            return column_tokens
        generator = None if self.training else torch.Generator().manual_seed(0)
        identity = torch.randn(batch.n_columns, IDENTITY_DIM, generator=generator)  # [C, IDENTITY_DIM]
        weight = self.column_identity.weight
        return column_tokens + self.column_identity(identity.to(device=weight.device, dtype=weight.dtype))

    def encode_queries(self, batch: TableBatch) -> QueryStates:
        hidden_cells = batch.query_target_mask  # [R, C]
        column_tokens, top, low = self.column_tokens(batch)  # [C, d]
        x, target_columns, shared = self.target_tokens(batch, column_tokens)  # [R, T, d]
        # 6. within a row, then across rows (rows become the sequence: [T, R, d])
        for within_row, across_rows in zip(self.blocks, self.row_blocks):
            x = within_row(x)
            x = read_support_rows(across_rows, x.transpose(0, 1), batch.support).transpose(0, 1)
        # 7. read out hidden cells from their column's target token
        rows, cols = hidden_cells.nonzero(as_tuple=True)  # [N]
        slot = torch.full((batch.n_columns,), -1, dtype=torch.long, device=cols.device)
        slot[target_columns] = torch.arange(len(target_columns), device=cols.device)
        hidden = self.norm(x[rows, slot[cols]])  # [N, d]
        return QueryStates(rows=rows, cols=cols, hidden=hidden, column_tokens=column_tokens, top=top, low=low, shared=shared)

    def target_tokens(self, batch: TableBatch, column_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 1-5: ([R, T, d] the tokens that attend across rows, [T] their target columns, the shared
        representation: [R, k, d] basis tokens)."""
        config = self.config
        identified = self.identified_columns(batch, column_tokens)  # [C, d]
        cells, attend = self.cell_inputs(batch, identified, batch.query_target_mask)  # [R, C, d]: support targets shown
        # 1-4. the row summary, from the features alone
        summary, shared = self.summarise_rows(batch, cells, identified, attend)  # [R, d]
        if config.icl_row_norm == "support":
            summary = standardise_on_support(summary, batch.support)
        elif self.row_norm is not None:
            summary = self.row_norm(summary)
        # 5. one token per column that holds a target somewhere in the batch
        target_columns = batch.target_mask.any(dim=0).nonzero(as_tuple=True)[0]  # [T]
        column = column_tokens[target_columns]  # [T, d]
        value = cells[:, target_columns] - identified[target_columns]  # [R, T, d]: the cells' value tokens
        if config.icl_target_column_token:
            value = value + column
        x = summary.unsqueeze(1) + value + self.target_column(column) + self.query_token  # [R, T, d]
        return x, target_columns, shared

    def summarise_rows(self, batch: TableBatch, cells: torch.Tensor, column_tokens: torch.Tensor,
                       attend: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 1-4 before the norm: ([R, d] one vector per row, the shared representation: [R, k, d] basis tokens)."""
        target = batch.target_mask.unsqueeze(-1)  # [R, C, 1]
        if self.config.icl_row_summary == "numbers":
            return self.number_summary(batch), cells
        features = cells
        if not self.config.icl_summary_sees_targets:  # every target cell hidden: the summary describes features only
            features = torch.where(target, self.hidden_value + column_tokens.unsqueeze(0), cells)
        basis = self.compress_rows(self.mix_cells(batch, features, attend), attend)  # [R, k, d]
        r, k, d = basis.shape
        return self.row_projection(basis.reshape(r, k * d)), basis

    def number_summary(self, batch: TableBatch) -> torch.Tensor:
        """[R, d]: the yardstick's row vector, an MLP over the row's standardised feature values in column order."""
        r, c = batch.values.shape
        if c > NUMBERS_WIDTH:
            raise TableError(f"icl_row_summary='numbers' reads at most {NUMBERS_WIDTH} columns and this batch has {c}; "
                             "use the basis summary (the default) for wider tables", table=batch.table_id)
        values = batch.values.nan_to_num(0.0, 0.0, 0.0).masked_fill(batch.target_mask | batch.missing, 0.0)
        numbers = standardized_features(values, batch)  # [R, C, 2]
        numbers = numbers.masked_fill((batch.target_mask | batch.missing).unsqueeze(-1), 0.0)
        numbers = nn.functional.pad(numbers, (0, 0, 0, NUMBERS_WIDTH - c)).reshape(r, 2 * NUMBERS_WIDTH)
        return self.numbers(numbers.to(self.text_projection.weight.dtype))
