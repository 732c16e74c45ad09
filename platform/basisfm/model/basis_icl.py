"""`basis_icl`: the Basis Transformer's per-row compression, then attention across a table's rows (in-context learning).

A query row's targets are predicted from its own cells and from the labelled support rows of its episode
(`batch.support`), with no gradient step per table. Read top to bottom:
  1-3. the per-row pieces of `basis` (reused, not copied): cell tokens, cell attention, basis compression
       to k tokens per row. Every target cell is hidden here, support rows' too, so a row's summary
       describes its features alone, alike for support and query rows (what a query is compared on);
  4. the k basis tokens are flattened into one row vector; each row carries one target token per target
     column (a column holding any target cell): row vector + the target cell's own token (its value,
     standardised too, on support rows; the hidden stand-in on query rows) + the learned query marker;
  5. n_layers alternating blocks: within a row (its T target tokens attend each other: several targets
     inform each other), then across rows (a row's token for target t attends token t of every support
     row and of its own row only). Support rows never read queries and queries never read each other: a
     query's prediction depends on its own row and the support rows alone. As in TabICL, the row vector
     enters every target token, so a query finds the support rows it resembles in one attention hop;
  6. a hidden target cell (r, c) is read out from row r's token for column c by the shared heads.
"""

from __future__ import annotations

import torch
from torch import nn

from basisfm.config import ModelConfig
from basisfm.data.batch import TableBatch
from basisfm.model.attention import Block
from basisfm.model.basis_transformer import BasisTransformer
from basisfm.model.table_model import QueryStates


def support_attention(support: torch.Tensor) -> torch.Tensor:
    """[R, R] bool: row i may read row j when j is a support row (queries never read each other, nor
    themselves: a query's own token would outweigh the context it should read). A batch without support
    rows (masked cells) lets each row read itself alone."""
    r = support.shape[0]
    alone = torch.eye(r, dtype=torch.bool, device=support.device) & ~support.any()
    return support.unsqueeze(0).expand(r, r) | alone


class BasisICL(BasisTransformer):
    """Inherits the per-row pieces; its `blocks` (within a row) pair with `row_blocks` (across rows)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        d = config.d_model
        self.row_projection = nn.Linear(config.n_basis * d, d)
        self.row_blocks = nn.ModuleList(Block(d, config.n_heads, config.dropout) for _ in range(config.n_layers))

    def encode_queries(self, batch: TableBatch) -> QueryStates:
        hidden_cells = batch.query_target_mask  # [R, C]
        column_tokens, top, low = self.column_tokens(batch)  # [C, d]
        cells, attend = self.cell_inputs(batch, column_tokens, hidden_cells)  # [R, C, d]: support targets shown
        # 1-3. per row, features only: every target cell hidden -> cell attention -> k basis tokens
        target = batch.target_mask.unsqueeze(-1)  # [R, C, 1]
        features = torch.where(target, self.hidden_value + column_tokens.unsqueeze(0), cells)
        basis = self.compress_rows(self.mix_cells(batch, features, attend), attend)  # [R, k, d]
        # 4. target tokens: one per column that holds a target somewhere in the batch
        r, k, d = basis.shape
        row_vector = self.row_projection(basis.reshape(r, k * d)).unsqueeze(1)  # [R, 1, d]
        target_columns = batch.target_mask.any(dim=0).nonzero(as_tuple=True)[0]  # [T]
        x = row_vector + cells[:, target_columns] + self.query_token  # [R, T, d]
        # 5. within a row, then across rows (rows become the sequence: [T, R, d])
        across = support_attention(batch.support).unsqueeze(0)  # [1, R, R]
        for within_row, across_rows in zip(self.blocks, self.row_blocks):
            x = within_row(x)
            x = across_rows(x.transpose(0, 1), attend=across).transpose(0, 1)
        # 6. read out hidden cells from their column's target token
        rows, cols = hidden_cells.nonzero(as_tuple=True)  # [N]
        slot = torch.full((batch.n_columns,), -1, dtype=torch.long, device=cols.device)
        slot[target_columns] = torch.arange(len(target_columns), device=cols.device)
        hidden = self.norm(x[rows, slot[cols]])  # [N, d]
        return QueryStates(rows=rows, cols=cols, hidden=hidden, column_tokens=column_tokens, top=top, low=low, shared=basis)
