"""A job's dataset by its rules, without torch: the API checks and plans with them, the worker tokenises
what they return (worker/data).

formats.py   parsing each file format (one reader each, the suffix map) and checking an upload with them
readers.py   a job's dataset as plain columns (files through formats' readers), the hold-out, row counts
columns.py   which columns feed which role (explicit mapping, else common names)
labels.py    classes or regression from the label values, and their ids
packing.py   the tokenizer rules both sides share: a vocabulary, the end token, plain text packed into blocks

Errors a user can fix are DataError, with the fix in the message. Importing this package imports nothing
else: each module pulls in only what it needs.
"""

Columns = dict[str, list]


class DataError(ValueError):
    """The dataset cannot be used as given; the message names the fix."""
