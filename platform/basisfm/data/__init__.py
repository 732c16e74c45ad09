"""Streaming the corpus: dynamic column batching into `TableBatch`es, their wire format, and the Ray Data pipeline.

`basisfm.data.pipeline` (Ray) is imported on demand only, so that model code reading `TableBatch`
does not pull Ray in.
"""

from basisfm.data.batch import TableBatch
from basisfm.data.collate import table_to_batches
from basisfm.data.wire import decode_batch, encode_batch

__all__ = ["TableBatch", "decode_batch", "encode_batch", "table_to_batches"]
