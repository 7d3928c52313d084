"""A job's dataset by its rules, without torch: the API checks and plans with them, the worker tokenises
what they return (worker/data).

formats.py   checking an uploaded file: its format, every row, a summary of its columns
readers.py   reading a job's dataset into plain columns, the hold-out, counting training rows
columns.py   which columns feed which role (explicit mapping, else common names)
labels.py    classes or regression from the label values, and their ids
packing.py   the tokenizer rules both sides share: a vocabulary, the end token, plain text packed into blocks

Errors a user can fix are DataError, with the fix in the message. Importing this package imports nothing
else: each module pulls in only what it needs.
"""

Columns = dict[str, list]


class DataError(ValueError):
    """The dataset cannot be used as given; the message names the fix."""
