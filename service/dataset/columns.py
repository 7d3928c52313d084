"""Which columns feed each task kind: the spec's explicit mapping wins, otherwise common dataset names
(matched case-insensitively).

A ColumnMap names a layout and the column behind each role, e.g. layout "prompt_completion" with roles
{"prompt": "question", "completion": "answer"}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, overload

from service.dataset import Columns, DataError
from service.jobspec import JobSpec

TEXT_NAMES = ("text", "sentence", "content", "review", "document", "input", "question")
# (first, second) names of paired-text datasets (GLUE, SNLI, QQP, MRPC ...), tried before single text.
PAIR_NAMES = (("sentence1", "sentence2"), ("premise", "hypothesis"), ("question1", "question2"),
              ("question", "sentence"), ("#1 String", "#2 String"), ("text", "text_pair"))
LABEL_NAMES = ("label", "labels", "score", "quality", "target", "class", "category")
CHAT_NAMES = ("messages", "conversations", "conversation", "chat")
PROMPT_COMPLETION_NAMES = (("prompt", "completion"), ("prompt", "response"), ("question", "answer"))
# Alpaca-style instruction data: the prompt is built from instruction (+ input); output is the completion.
ALPACA_NAMES = ("instruction", "output")
SEQ2SEQ_NAMES = (("source", "target"), ("src", "tgt"), ("input", "output"), ("input", "target"),
                 ("document", "summary"), ("article", "highlights"), ("text", "summary"),
                 ("question", "answer"), ("prompt", "completion"))


@dataclass(frozen=True)
class ColumnMap:
    layout: str              # single | pair | text | prompt_completion | alpaca | chat | source_target
    roles: dict[str, str]    # role -> column name

    def describe(self) -> str:
        return ", ".join(f"{role} from {name!r}" for role, name in self.roles.items())

    def names(self) -> list[str]:
        return list(self.roles.values())


def map_columns(spec: JobSpec, columns: Columns) -> ColumnMap:
    if spec.task == "sequence_classification":
        texts = pick_text_columns(spec, columns)
        roles = dict(zip(("text", "text_pair"), texts))
        return ColumnMap("pair" if len(texts) == 2 else "single", {**roles, "label": pick_label_column(spec, columns)})
    if spec.task == "causal_lm":
        return _lm_columns(spec, columns)
    return _seq2seq_columns(spec, columns)


def pick_text_columns(spec: JobSpec, columns: Columns) -> tuple[str, ...]:
    ds, names = spec.dataset, list(columns)
    if ds.text_column:
        _require(ds.text_column, names, "text_column")
        if ds.text_pair_column:
            _require(ds.text_pair_column, names, "text_pair_column")
            return ds.text_column, ds.text_pair_column
        return (ds.text_column,)
    if spec.task == "sequence_classification":
        for pair in PAIR_NAMES:
            if (found := _find_all(names, pair)) is not None:
                return found
    if (text := _find_first(names, TEXT_NAMES)) is not None:
        return (text,)
    label = pick_label_column(spec, columns, required=False)
    strings = [n for n in names if n != label and all(isinstance(v, str) for v in columns[n][:100])]
    if len(strings) == 1:
        return (strings[0],)
    raise DataError(f"dataset: cannot tell which column holds the text (columns: {', '.join(names)}); "
                    "set dataset.text_column")


@overload
def pick_label_column(spec: JobSpec, columns: Columns, required: Literal[True] = True) -> str: ...
@overload
def pick_label_column(spec: JobSpec, columns: Columns, required: bool) -> str | None: ...
def pick_label_column(spec: JobSpec, columns: Columns, required: bool = True) -> str | None:
    names = list(columns)
    if spec.dataset.label_column:
        _require(spec.dataset.label_column, names, "label_column")
        return spec.dataset.label_column
    if (found := default_label_column(names)) is not None:
        return found
    if required:
        raise DataError(f"dataset: cannot tell which column holds the label (columns: {', '.join(names)}); "
                        "set dataset.label_column")
    return None


def default_label_column(names: list[str]) -> str | None:
    """The first of LABEL_NAMES among `names`: the label column when the spec names none."""
    return _find_first(names, LABEL_NAMES)


def texts_of(columns: Columns, name: str) -> list[str]:
    values = columns[name]
    bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
    if bad is not None:
        raise DataError(f"dataset: column {name!r} must hold text in every row; row {bad + 1} holds "
                        f"{type(values[bad]).__name__} {values[bad]!r}: fix the rows or choose another column")
    return values


def _lm_columns(spec: JobSpec, columns: Columns) -> ColumnMap:
    ds, names = spec.dataset, list(columns)
    if ds.messages_column:
        _require(ds.messages_column, names, "messages_column")
        return ColumnMap("chat", {"messages": ds.messages_column})
    if ds.prompt_column:
        _require(ds.prompt_column, names, "prompt_column")
        assert ds.completion_column is not None, "the spec gives prompt_column and completion_column together"
        _require(ds.completion_column, names, "completion_column")
        return ColumnMap("prompt_completion", {"prompt": ds.prompt_column, "completion": ds.completion_column})
    if ds.text_column:
        _require(ds.text_column, names, "text_column")
        return ColumnMap("text", {"text": ds.text_column})
    if (chat := _find_first(names, CHAT_NAMES)) is not None:
        return ColumnMap("chat", {"messages": chat})
    for pair in PROMPT_COMPLETION_NAMES:
        if (found := _find_all(names, pair)) is not None:
            return ColumnMap("prompt_completion", dict(zip(("prompt", "completion"), found)))
    if (found := _find_all(names, ALPACA_NAMES)) is not None:
        roles = {"instruction": found[0], "output": found[1]}
        if (extra := _find_first(names, ("input",))) is not None:
            roles["input"] = extra
        return ColumnMap("alpaca", roles)
    try:
        return ColumnMap("text", {"text": pick_text_columns(spec, columns)[0]})
    except DataError:
        raise DataError(f"dataset: cannot tell which columns hold the text (columns: {', '.join(names)}); "
                        "set dataset.text_column, dataset.prompt_column + completion_column, "
                        "or dataset.messages_column") from None


def _seq2seq_columns(spec: JobSpec, columns: Columns) -> ColumnMap:
    ds, names = spec.dataset, list(columns)
    if ds.source_column or ds.target_column:
        if not (ds.source_column and ds.target_column):
            raise DataError("dataset: give source_column and target_column together")
        _require(ds.source_column, names, "source_column")
        _require(ds.target_column, names, "target_column")
        return ColumnMap("source_target", {"source": ds.source_column, "target": ds.target_column})
    for pair in SEQ2SEQ_NAMES:
        if (found := _find_all(names, pair)) is not None:
            return ColumnMap("source_target", dict(zip(("source", "target"), found)))
    raise DataError(f"dataset: cannot tell which columns hold the source and target text "
                    f"(columns: {', '.join(names)}); set dataset.source_column and dataset.target_column")


def _find_first(names: list[str], wanted: tuple[str, ...]) -> str | None:
    lower = {n.lower(): n for n in reversed(names)}  # of names differing only in case, the first wins
    return next((lower[w.lower()] for w in wanted if w.lower() in lower), None)


def _find_all(names: list[str], wanted: tuple[str, ...]) -> tuple[str, ...] | None:
    found = tuple(name for w in wanted if (name := _find_first(names, (w,))) is not None)
    return found if len(found) == len(wanted) else None


def _require(name: str, names: list[str], field: str) -> None:
    if name not in names:
        raise DataError(f"dataset.{field}: no column {name!r} (columns: {', '.join(names)})")
