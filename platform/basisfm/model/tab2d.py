"""`tab2d`: Mitra-style 2-D attention over a table's cell grid, in context (no basis compression).

Every cell is a token (`TableModel.cell_inputs`: query targets hidden, support rows' targets shown); the
columns that hold a target get a learned marker on their column token. Then n_layers pairs of:
  - along a row: a row's cells attend each other (the configured cell-attention variant: dense,
    block-sparse or sampled), [R, C, d];
  - along a column: a column's cells attend that column's cells in the support rows and their own row
    only, [C, R, d], so queries never read each other and support rows never read queries.
A hidden target cell (r, c) is read out from its own final token by the shared heads. Cost grows as
R C^2 + C R^2, against R C^2 + (k + T) R^2 for `basis_icl`: Tab2D keeps every cell, basis_icl compresses.
"""

from __future__ import annotations

import torch
from torch import nn

from basisfm.config import ModelConfig
from basisfm.data.batch import TableBatch
from basisfm.model.attention import Block, build_cell_attention
from basisfm.model.attention import support_attention
from basisfm.model.table_model import QueryStates, TableModel


class Tab2D(TableModel):
    def __init__(self, config: ModelConfig):
        super().__init__(config)
        d = config.d_model
        self.target_marker = nn.Parameter(torch.randn(d) * 0.02)
        self.along_row = nn.ModuleList(
            build_cell_attention(config.attention, d, config.n_heads, config.dropout, config.block_size, config.keep_ratio)
            for _ in range(config.n_layers)
        )
        self.along_column = nn.ModuleList(Block(d, config.n_heads, config.dropout) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(d)

    def encode_queries(self, batch: TableBatch) -> QueryStates:
        hidden_cells = batch.query_target_mask  # [R, C]
        column_tokens, top, low = self.column_tokens(batch)  # [C, d]
        is_target = batch.target_mask.any(dim=0).unsqueeze(-1)  # [C, 1]
        column_tokens = column_tokens + is_target.to(column_tokens.dtype) * self.target_marker
        cells, attend = self.cell_inputs(batch, column_tokens, hidden_cells)  # [R, C, d]
        order = self.column_order(batch)
        across = support_attention(batch.support).unsqueeze(0)  # [1, R, R]
        for along_row, along_column in zip(self.along_row, self.along_column):
            cells = along_row(cells, attend, order)  # [R, C, d]
            cells = along_column(cells.transpose(0, 1), attend=across).transpose(0, 1)  # via [C, R, d]
        rows, cols = hidden_cells.nonzero(as_tuple=True)  # [N]
        hidden = self.norm(cells[rows, cols])  # [N, d]
        return QueryStates(rows=rows, cols=cols, hidden=hidden, column_tokens=column_tokens, top=top, low=low, shared=cells)
