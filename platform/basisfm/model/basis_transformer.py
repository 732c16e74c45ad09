"""The Basis Transformer (`model.architecture: basis`): each row is read on its own, its hidden cells predicted.

Read top to bottom (cell tokens and heads are shared by every architecture: `model.table_model`):
  1. every cell becomes a token (`TableModel.cell_inputs`): hidden (query target) cells get a stand-in;
  2. cell-level attention mixes a row's cells (dense, block-sparse or sampled);
  3. basis compression: k learned basis queries cross-attend to the cells, so any number of columns
     becomes k tokens;
  4. a transformer runs over [k basis tokens; one query token per hidden cell of the row], where a
     query token is built from its target column's token and attends to the basis tokens and itself;
  5. heads (`model.heads`): the target's SMR bits or bins of its standardised value, or a score
     against candidate strings' embeddings for a categorical target.
Steps 1-3 are the per-row pieces `basis_icl` reuses before it attends across rows.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from basisfm.config import ModelConfig
from basisfm.data.batch import TableBatch
from basisfm.model.attention import Block, build_cell_attention
from basisfm.model.table_model import ModelOutput, QueryStates, TableModel

__all__ = ["BasisTransformer", "ModelOutput", "TargetPositions", "target_positions"]


class TargetPositions(NamedTuple):
    """Where the N target cells sit: row-major, as `target.nonzero()` lists them."""

    rows: torch.Tensor  # [N] long
    columns: torch.Tensor  # [N] long
    slots: torch.Tensor  # [N] long: the target's rank among its row's targets (its query slot)
    n_slots: int  # T: the most targets any row has


def target_positions(target: torch.Tensor) -> TargetPositions:
    """[R, C] bool target mask -> TargetPositions, with one device-to-host read (N and T together).

    Both counts are shapes, so the host must learn them; reading them in one transfer and then listing
    the cells with `nonzero_static` (whose size is given) costs one sync instead of one per count.
    """
    r, c = target.shape
    per_row = target.sum(dim=1)
    n_targets, n_slots = torch.stack([per_row.sum(), per_row.max()]).tolist() if r else (0, 0)
    flat = torch.nonzero_static(target.reshape(-1), size=int(n_targets)).squeeze(-1)
    rows, columns = flat // c, flat % c
    slots = (target.cumsum(dim=1) - 1)[rows, columns]
    return TargetPositions(rows, columns, slots, int(n_slots))


class BasisTransformer(TableModel):
    def __init__(self, config: ModelConfig):
        super().__init__(config)
        d = config.d_model
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

    def encode_queries(self, batch: TableBatch) -> QueryStates:
        hidden_cells = batch.query_target_mask  # [R, C]
        column_tokens, top, low = self.column_tokens(batch)  # [C, d]
        cells, attend = self.cell_tokens(batch, column_tokens, hidden_cells)  # [R, C, d]
        basis = self.compress_rows(cells, attend)  # [R, k, d]
        positions = target_positions(hidden_cells)  # the forward's one host sync: how many targets, how many slots
        rows, cols = positions.rows, positions.columns  # [N]
        hidden = self.run_queries(basis, hidden_cells, column_tokens[cols] + self.query_token, positions)  # [N, d]
        return QueryStates(rows=rows, cols=cols, hidden=hidden, column_tokens=column_tokens, top=top, low=low, shared=basis)

    # ------------------------------------------------------------------ the per-row pieces

    def cell_tokens(self, batch: TableBatch, column_tokens: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Steps 1-2: [R, C, d] cell tokens after cell attention, and which cells attention may read ([R, C] or None)."""
        cells, attend = self.cell_inputs(batch, column_tokens, hidden)
        return self.mix_cells(batch, cells, attend), attend

    def mix_cells(self, batch: TableBatch, cells: torch.Tensor, attend: torch.Tensor | None) -> torch.Tensor:
        """Step 2 alone: cell-level attention over each row's [R, C, d] cell tokens."""
        order = self.column_order(batch)
        for layer in self.cell_layers:
            cells = layer(cells, attend, order)
        return cells

    def compress_rows(self, cells: torch.Tensor, attend: torch.Tensor | None) -> torch.Tensor:
        """Step 3, basis compression: [R, C, d] -> [R, k, d], whatever C is."""
        queries = self.basis_queries.unsqueeze(0).expand(cells.shape[0], -1, -1)
        return self.compress(queries, keys=cells, attend=None if attend is None else attend.unsqueeze(1))

    def run_queries(self, basis: torch.Tensor, target: torch.Tensor, queries: torch.Tensor,
                    positions: TargetPositions | None = None) -> torch.Tensor:
        """Step 4: transformer over each row's [basis tokens; its query tokens] -> [N, d] final query states.

        Rows hold different numbers of targets, so queries are packed into T = max-per-row slots. Basis
        tokens attend only to basis tokens and each query to the basis and itself: a prediction never
        depends on which other cells happen to be targets, nor on padding. `positions` is
        `target_positions(target)` when the caller already has it (no second host sync).
        """
        r, k, d = basis.shape
        if positions is None:
            positions = target_positions(target)
        rows, slot, n_slots = positions.rows, positions.slots, positions.n_slots
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
