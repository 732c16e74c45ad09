"""basisfm: pretrain, tune and serve the Basis Transformer, a tabular foundation model."""

__version__ = "0.1.0"
