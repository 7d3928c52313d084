"""A job's dataset as tokenised examples for its task kind, plus batching and evaluation.

classification.py, causal_lm.py, seq2seq.py   examples per task kind
encoding.py      tokenising with counted truncation
cache.py         tokenised data on disk, keyed by data, tokenizer, task, columns and max_seq_len
batching.py      dynamic padding, length-grouped training batches
evaluation.py, metrics.py   the loop's eval_fn and its scores
prepare.py       spec -> PreparedData, through the cache

The rules that need no torch (reading rows, which columns and labels, packing text) are service.dataset's,
which the API's checks and dry run use too; errors a user can fix are its DataError with the fix in the message.
"""

from service.dataset.columns import map_columns, pick_label_column, pick_text_columns
from service.dataset.labels import infer_labels, label_map
from worker.data.batching import length_grouped_order, make_collate
from worker.data.encoding import IGNORE_INDEX
from worker.data.evaluation import make_eval_fn
from worker.data.prepare import PreparedData, prepare

__all__ = ["IGNORE_INDEX", "PreparedData", "infer_labels", "label_map", "length_grouped_order", "make_collate",
           "make_eval_fn", "map_columns", "pick_label_column", "pick_text_columns", "prepare"]
