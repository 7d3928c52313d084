"""Parsing dataset files, one reader per format, and checking an upload with them: find its format, parse
every row, summarise its columns. Training reads server files and uploads through the same readers
(service.dataset.readers: text_rows, parquet_batches), so a file is read the same way whichever way it came.

Everything streams: a file is read in chunks or line by line, never whole, so a multi-gigabyte upload
costs little memory. Errors are DataError whose message names the place (line, item or row) and what to
fix. Supported: JSON Lines, a JSON array of objects, CSV, TSV (GLUE style: no quoting) and Parquet.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from service.dataset import DataError
from service.redaction import first_line

# A file's format by its suffix: an upload's where its content does not tell, a server file's where its job
# spec names none (service.jobspec.SERVER_SUFFIX_FORMATS: these, less the formats a spec cannot name).
SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv",
                  ".parquet": "parquet"}
PARQUET_MAGIC = b"PAR1"
SNIFF_BYTES = 8192
CHUNK_CHARS = 1 << 16
PREVIEW_ROWS = 5
CLIP_CHARS = 200      # longer preview strings are cut
DISTINCT_CAP = 100    # distinct values kept per column (enough for any label set)
DISTINCT_MAX_CHARS = 100  # a longer value is text, not a label: stop collecting that column's values
INTEGER = re.compile(r"^[+-]?\d+$")
MAX_JSON_DEPTH = 32   # lists and objects inside each other; a chat with tool calls needs about 6
# Byte-order marks of the text encodings we do not read, longest first (UTF-32-LE's starts with UTF-16-LE's).
WIDE_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"), (codecs.BOM_UTF16_LE, "UTF-16"),
             (codecs.BOM_UTF16_BE, "UTF-16"))

# Text fields may be long; MAX_LINE_BYTES bounds them instead of csv's 128 KiB default.
csv.field_size_limit(2**31 - 1)


# -- format ----------------------------------------------------------------------------------------

def detect_format(path: Path, filename: str) -> str:
    """The format from the content where it is unambiguous (Parquet's magic bytes, a leading `[` or `{`),
    otherwise from the file name's suffix. Text that cannot be read (empty, binary, UTF-16) is refused
    by text_rows."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    suffix = PurePosixPath(filename).suffix.lower()
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    if suffix == ".parquet":
        raise DataError("not a Parquet file: it does not start with the PAR1 magic bytes; upload the file "
                        "as written by pandas/pyarrow, or name it after its real format")
    first = head.removeprefix(codecs.BOM_UTF8).lstrip()[:1]
    if suffix in SUFFIX_FORMATS:
        fmt = SUFFIX_FORMATS[suffix]
        if fmt == "json" and first == b"{":
            raise DataError("the JSON file holds an object, not an array of records: wrap the records in "
                            "[ ... ], or upload one object per line as JSON Lines (.jsonl)")
        return fmt
    if first == b"[":
        return "json"
    if first == b"{":
        return "jsonl"
    first_line = head.split(b"\n", 1)[0]
    return "tsv" if b"\t" in first_line else "csv"


def check_text_head(head: bytes) -> None:
    """Refuses, from its first bytes, a text file that is UTF-16 or UTF-32, empty, or binary."""
    if (encoding := wide_encoding(head)) is not None:
        raise DataError(f"the file is {encoding} text; this server reads UTF-8: save it as UTF-8 (e.g. "
                        f"`iconv -f {encoding.lower()} -t utf-8`, or \"CSV UTF-8\" in Excel)")
    if not head.removeprefix(codecs.BOM_UTF8).strip():
        raise DataError("empty file: it holds no data; upload a file with a header and rows, or JSON records")
    if b"\0" in head:
        raise DataError(f"binary data, not text (a NUL byte at offset {head.index(0)}); upload JSON Lines, "
                        "a JSON array, CSV, TSV or Parquet")


def wide_encoding(head: bytes) -> str | None:
    """UTF-16 or UTF-32 when `head` starts with their byte-order mark, or is UTF-16 without one (ASCII
    text then has a NUL in every other byte); otherwise None."""
    for bom, encoding in WIDE_BOMS:
        if head.startswith(bom):
            return encoding
    for zeros, chars in ((head[1::2], head[0::2]), (head[0::2], head[1::2])):  # little-, then big-endian
        if len(head) >= 4 and zeros.count(0) >= len(zeros) / 2 and chars.count(0) == 0:
            return "UTF-16"
    return None


# -- column summary --------------------------------------------------------------------------------

@dataclass
class ColumnStats:
    """What one column holds, gathered row by row: its type, missing, NaN and infinite values, and (while
    there are few and short ones) its distinct values, so labels can be checked without reading the file."""

    name: str
    kinds: dict[str, str] = field(default_factory=dict)  # kind -> place it was first seen
    nulls: int = 0
    nans: int = 0
    infs: int = 0
    values: set[str] | None = field(default_factory=set)

    def add(self, value: Any, place: str, typed: bool) -> None:
        kind = value_kind(value) if typed else text_kind(value)
        if kind is None:
            self.nulls += 1
            return
        if kind == "float" and not math.isfinite(number := float(value)):
            if math.isnan(number):
                self.nans += 1
            else:
                self.infs += 1
        if kind not in self.kinds:
            self.kinds[kind] = place
            if typed and not self._one_type():
                raise DataError(self._mixed_message(kind, value, place))
        if kind in ("list", "dict"):
            self.values = None
        if self.values is not None:
            text = value if isinstance(value, str) else json.dumps(value)
            if len(text) > DISTINCT_MAX_CHARS:
                self.values = None
            else:
                self.values.add(text)
                if len(self.values) > DISTINCT_CAP:
                    self.values = None

    def _one_type(self) -> bool:
        kinds = set(self.kinds)
        return len(kinds) == 1 or kinds == {"int", "float"}

    def _mixed_message(self, kind: str, value: Any, place: str) -> str:
        other, first_place = next((k, p) for k, p in self.kinds.items() if k != kind and {k, kind} != {"int", "float"})
        return (f"{place}: column {self.name!r} holds a {kind} ({clip(value, 40)!r}), but earlier rows hold "
                f"{other} values (first at {first_place}); use one type per column")

    @property
    def type(self) -> str:
        kinds = set(self.kinds)
        if not kinds:
            return "null"
        if kinds <= {"int", "float"}:
            return "float" if "float" in kinds else "int"
        return kinds.pop() if len(kinds) == 1 else "str"  # only text files reach here: their values are text

    def public(self) -> dict[str, Any]:
        values = sorted(self.values) if self.values is not None else None
        return {"name": self.name, "type": self.type, "nulls": self.nulls, "nans": self.nans,
                "infs": self.infs, "distinct": len(values) if values is not None else None, "values": values}


def value_kind(value: Any) -> str | None:
    """The type of a parsed JSON/Parquet value: int, float, str, bool, list, dict, or None for null."""
    if value is None:
        return None
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("str", str), ("list", list),
                        ("dict", dict)):
        if isinstance(value, types):
            return kind
    return type(value).__name__


def text_kind(value: str) -> str | None:
    """The type a CSV/TSV cell reads as: empty is missing; numbers are int or float; anything else str."""
    if value == "":
        return None
    if INTEGER.match(value):
        return "int"
    try:
        float(value)
    except ValueError:
        return "str"
    return "float"


@dataclass
class FileSummary:
    format: str
    row_count: int
    columns: list[dict[str, Any]]
    preview: list[dict[str, Any]]


class Summariser:
    """Collects the row count, column stats and preview while the rows stream past."""

    def __init__(self, fmt: str, typed: bool) -> None:
        self.fmt, self.typed = fmt, typed
        self.columns: dict[str, ColumnStats] = {}
        self.rows = 0
        self.preview: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any], place: str) -> None:
        for name in row:
            if name not in self.columns:
                self.columns[name] = ColumnStats(name, nulls=self.rows)  # absent from earlier rows
        for name, stats in self.columns.items():
            stats.add(row.get(name), place, self.typed)
        self.rows += 1
        if len(self.preview) < PREVIEW_ROWS:
            self.preview.append({name: clip(value) for name, value in row.items()})

    def summary(self) -> FileSummary:
        return FileSummary(self.fmt, self.rows, [c.public() for c in self.columns.values()], self.preview)


def clip(value: Any, limit: int = CLIP_CHARS) -> Any:
    """A value small enough to show and to store as JSON anywhere (NaN and infinities become text)."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "…"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [clip(v, limit) for v in value[:20]]
    if isinstance(value, dict):
        return {str(k): clip(v, limit) for k, v in list(value.items())[:20]}
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return clip(str(value), limit)


# -- checking a whole file -------------------------------------------------------------------------

def inspect_file(path: Path, filename: str, max_line_bytes: int) -> FileSummary:
    """Parses every row of an uploaded file; raises DataError naming the first problem found."""
    fmt = detect_format(path, filename)
    if fmt == "parquet":
        return inspect_parquet(path)
    summariser = Summariser(fmt, typed=fmt in ("json", "jsonl"))
    with open(path, "rb") as f:
        for place, row in text_rows(f, fmt, max_line_bytes):
            summariser.add(row, place)
    return summariser.summary()


# -- text formats ----------------------------------------------------------------------------------

def text_rows(f: BinaryIO, fmt: str, max_line_bytes: int, column_names: list[str] | None = None,
              json_columns: bool = False) -> Iterator[tuple[str, dict]]:
    """(place, row) for every row of a jsonl, json, csv or tsv file, parsed by that format's one reader; a
    file that is not UTF-8 text, or holds no rows, is refused. `column_names` name the columns of a csv/tsv
    file without a header row; `json_columns` lets a json file hold an object of columns (files in DATA_DIRS)."""
    check_text_head(f.read(SNIFF_BYTES))
    f.seek(0)
    if fmt == "jsonl":
        rows = jsonl_rows(f, max_line_bytes)
    elif fmt == "json":
        rows = json_array_rows(f, max_line_bytes, json_columns)
    else:
        rows = delimited_rows(f, max_line_bytes, fmt, column_names)
    empty = True
    for place, row in rows:
        empty = False
        yield place, row
    if empty:
        raise DataError("header only: no data rows; add rows below the header" if fmt in ("csv", "tsv")
                        else "no records in the file; add at least one object")


def text_lines(f: BinaryIO, max_line_bytes: int) -> Iterator[tuple[int, str]]:
    """(line number, decoded line with its newline), refusing lines over the limit and bytes that are
    not UTF-8. A UTF-8 byte-order mark (Excel) is skipped."""
    offset, number = 0, 0
    while line := f.readline(max_line_bytes + 1):
        number += 1
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            raise DataError(f"line {number} is longer than {max_line_bytes} bytes (MAX_LINE_BYTES): is the file "
                            "missing its line breaks? Split it into one record per line")
        if number == 1 and line.startswith(codecs.BOM_UTF8):
            line, offset = line[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(not_utf8(line[e.start], offset + e.start, f"line {number}")) from None
        offset += len(line)
        yield number, text


def not_utf8(byte: int, offset: int, place: str) -> str:
    return (f"not UTF-8 (byte 0x{byte:02x} at offset {offset}, {place}); save the file as UTF-8 "
            "(e.g. `iconv -f latin1 -t utf-8`)")


def jsonl_rows(f: BinaryIO, max_line_bytes: int) -> Iterator[tuple[str, dict]]:
    for number, text in text_lines(f, max_line_bytes):
        if not text.strip():
            continue  # blank lines are skipped
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"line {number}: invalid JSON ({e.msg} at column {e.colno}); fix or remove that "
                            "line") from None
        except RecursionError:  # nested far deeper than the limit: the parser ran out of stack
            raise DataError(f"line {number}: {TOO_DEEP}") from None
        if too_deep(row):
            raise DataError(f"line {number}: {TOO_DEEP}")
        if not isinstance(row, dict):
            raise DataError(f"line {number}: expected a JSON object per line, got {json_kind(row)}; "
                            "a JSON array file should be named .json")
        yield f"line {number}", row


TOO_DEEP = (f"values are nested more than {MAX_JSON_DEPTH} levels deep (lists or objects inside each other; "
            "the limit); flatten them")


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether lists and objects nest more than `limit` levels in a parsed value (walked without recursion)."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


# GLUE-style TSV: quotes are ordinary characters.
DIALECTS: dict[str, dict[str, Any]] = {"csv": {}, "tsv": {"delimiter": "\t", "quoting": csv.QUOTE_NONE}}


def delimited_rows(f: BinaryIO, max_line_bytes: int, fmt: str,
                   column_names: list[str] | None = None) -> Iterator[tuple[str, dict]]:
    """The rows of a csv or tsv file under its header, or under `column_names` when it has none."""
    kind = fmt.upper()
    lines = (text for _, text in text_lines(f, max_line_bytes))
    reader = csv.reader(lines, strict=True, **DIALECTS[fmt])
    try:
        header, named = column_names, "dataset.column_names"
        if header is None:
            header, named = next(reader, None), "the header"
            while header == []:  # leading blank lines
                header = next(reader, None)
            if header is None:
                raise DataError("empty file: no header row")
            check_header(header)
        for fields in reader:
            if not fields:
                continue
            place = f"line {reader.line_num}"
            if len(fields) != len(header):
                raise DataError(f"{place}: row has {len(fields)} fields, {named} has {len(header)} "
                                f"({', '.join(header)}); quote fields that contain the delimiter, or check "
                                f"that the file really is {kind}")
            yield place, dict(zip(header, fields, strict=True))
    except csv.Error as e:
        raise DataError(f"line {reader.line_num}: not valid {kind} ({e}); check the quotes there: a field that "
                        "opens a quote must close it") from None


def check_header(header: list[str]) -> None:
    for position, name in enumerate(header, start=1):
        if not name.strip():
            raise DataError(f"line 1: the header's column {position} has no name; name every column")
        if header.index(name) != position - 1:
            raise DataError(f"line 1: the header names column {name!r} twice; give each column its own name")


def json_array_rows(f: BinaryIO, max_item_bytes: int, columns: bool = False) -> Iterator[tuple[str, dict]]:
    """The objects of a file holding one JSON array, decoded a chunk at a time (a single-line file of
    gigabytes included); each item may be at most `max_item_bytes` long. With `columns`, the file may
    instead hold one object of records or columns (json_object_rows)."""
    text = ChunkedText(f)
    decoder = json.JSONDecoder()
    text.skip_space()
    if columns and text.peek() == "{":
        yield from json_object_rows(text, decoder)
        return
    if text.peek() != "[":
        raise DataError(f"{text.place()}: a JSON file must hold an array of objects `[{{...}}, ...]`, "
                        f"it starts with {text.peek()!r}; for one object per line upload JSON Lines (.jsonl)")
    text.pos += 1
    number = 0
    while True:
        text.skip_space()
        if text.peek() == "]" and number == 0:
            text.pos += 1
            break
        number += 1
        place = f"item {number}"
        if text.peek() != "{":
            if not text.peek():
                raise DataError(f"{text.place()}: the JSON array is not closed with ]; the file may be cut short")
            raise DataError(f"{text.place()}, {place}: expected an object {{...}}, found {text.peek()!r}; "
                            "every item of the array must be an object with named fields")
        row = text.decode(decoder, place, max_item_bytes)
        if too_deep(row):
            raise DataError(f"{text.place()}, {place}: {TOO_DEEP}")
        yield place, row  # a line number would cost a count per item; errors below compute one
        text.skip_space()
        separator = text.peek()
        text.pos += 1
        if separator == "]":
            break
        if separator != ",":
            raise DataError(f"{text.place()}: expected ',' or ']' after {place}, found "
                            f"{separator!r}" + ("; the file may be cut short" if not separator else ""))
    text.skip_space()
    if text.peek():
        raise DataError(f"{text.place()}: unexpected data after the closing ] of the array")


def json_object_rows(text: ChunkedText, decoder: json.JSONDecoder) -> Iterator[tuple[str, dict]]:
    """The records of a JSON object `{"data": [{...}, ...]}`, or of columns `{"name": [values], ...}`: a
    layout only files in DATA_DIRS may have (an upload holds an array). The object is decoded whole."""
    loaded = text.decode(decoder, "the object", sys.maxsize)
    text.skip_space()
    if text.peek():
        raise DataError(f"{text.place()}: unexpected data after the closing }} of the object")
    if isinstance(loaded.get("data"), list):
        rows = loaded["data"]
    elif loaded and all(isinstance(values, list) for values in loaded.values()):
        if len(lengths := {len(values) for values in loaded.values()}) > 1:
            raise DataError(f"the columns hold different numbers of values ({', '.join(map(str, sorted(lengths)))}); "
                            "give every column one value per row")
        rows = [dict(zip(loaded, values, strict=True)) for values in zip(*loaded.values(), strict=True)]
    else:
        raise DataError("a JSON object must hold the records as {\"data\": [...]} or columns as "
                        "{\"name\": [values], ...}; or write an array of records [{...}, ...]")
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError(f"item {number}: expected an object {{...}}, found {json_kind(row)}; every record "
                            "must be an object with named fields")
        if too_deep(row):
            raise DataError(f"item {number}: {TOO_DEEP}")
        yield f"item {number}", row


class ChunkedText:
    """A window onto a UTF-8 file, decoded chunk by chunk, with the line number of the current position."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.buf, self.pos = f, "", 0
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.bytes_read, self.lines_dropped, self.eof, self.first = 0, 0, False, True

    def fill(self, chars: int = CHUNK_CHARS) -> bool:
        """Reads about `chars` more characters; False at the end of the file."""
        if self.eof:
            return False
        if self.pos > CHUNK_CHARS:  # drop what was consumed, keep counting its lines
            self.lines_dropped += self.buf.count("\n", 0, self.pos)
            self.buf, self.pos = self.buf[self.pos:], 0
        data = self.f.read(chars)
        pending = len(self.decoder.getstate()[0])
        try:
            decoded = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as e:
            offset = self.bytes_read - pending + e.start
            raise DataError(not_utf8(e.object[e.start], offset, f"line {self.line_at(len(self.buf))}")) from None
        self.bytes_read += len(data)
        if self.first:
            decoded, self.first = decoded.removeprefix("\ufeff"), False
        self.buf += decoded
        self.eof = not data
        return bool(data)

    def peek(self) -> str:
        while self.pos >= len(self.buf) and self.fill():
            pass
        return self.buf[self.pos:self.pos + 1]

    def skip_space(self) -> None:
        while self.peek() in (" ", "\t", "\r", "\n"):
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1

    def line_at(self, index: int) -> int:
        return self.lines_dropped + self.buf.count("\n", 0, index) + 1

    def place(self) -> str:
        return f"line {self.line_at(self.pos)}"

    def decode(self, decoder: json.JSONDecoder, place: str, max_chars: int) -> dict:
        """The JSON value starting at the position, reading more while it is cut off by the window's end."""
        while True:
            try:
                value, end = decoder.raw_decode(self.buf, self.pos)
            except RecursionError:  # nested far deeper than the limit: the parser ran out of stack
                raise DataError(f"{self.place()}, {place}: {TOO_DEEP}") from None
            except json.JSONDecodeError as e:
                # Cut off by the window (an open string, or within a few characters of its end): read more,
                # doubling, so a long item costs linear time. Anything else is a real error.
                cut_off = e.msg.startswith("Unterminated string") or e.pos > len(self.buf) - 64
                if self.eof and (e.msg.startswith("Unterminated string") or e.pos >= len(self.buf.rstrip())):
                    raise DataError(f"{self.place()}, {place}: the file ends inside this item; the file may be "
                                    "cut short: upload it again") from None
                if self.eof or not cut_off:
                    raise DataError(f"line {self.line_at(e.pos)}, {place}: invalid JSON ({e.msg}); fix or remove "
                                    "that item") from None
                if len(self.buf) - self.pos > max_chars:
                    raise DataError(f"{self.place()}, {place} is longer than {max_chars} bytes (MAX_LINE_BYTES); "
                                    "split it into smaller records") from None
                self.fill(max(CHUNK_CHARS, len(self.buf) - self.pos))
                continue
            self.pos = end
            return value


# -- Parquet ---------------------------------------------------------------------------------------

def parquet_batches(path: Path) -> Iterator:
    """The record batches of a Parquet file, its schema checked first (each name once, nesting within the
    limit); a truncated or corrupt file fails while they are read, a file without rows after the last."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 0
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        if len(set(schema.names)) != len(schema.names):
            raise DataError("the Parquet file has two columns of the same name; give each column its own name")
        # The row is the first level, as a JSON record is.
        if deep := [name for name in schema.names if 1 + arrow_depth(schema.field(name).type) > MAX_JSON_DEPTH]:
            raise DataError(f"column {deep[0]!r}: {TOO_DEEP}")
        for batch in parquet.iter_batches(batch_size=65_536):
            rows += batch.num_rows
            yield batch
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"not a readable Parquet file ({first_line(e)}); the upload may be cut short, "
                        "write it again with pandas/pyarrow") from None
    if rows == 0:
        raise DataError("the Parquet file has no rows; write the table with its data")


def inspect_parquet(path: Path) -> FileSummary:
    """Reads every record batch and summarises its columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    stats: dict[str, ColumnStats] = {}
    rows, preview = 0, list[dict[str, Any]]()
    for batch in parquet_batches(path):
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            add_arrow_column(stats.setdefault(name, ColumnStats(name)), column, pa, pc)
        if len(preview) < PREVIEW_ROWS:
            preview += [{k: clip(v) for k, v in row.items()} for row in batch.slice(0, PREVIEW_ROWS).to_pylist()]
            preview = preview[:PREVIEW_ROWS]
        rows += batch.num_rows
        schema = batch.schema
    columns = [s.public() | {"type": arrow_kind(schema.field(s.name).type, pa)} for s in stats.values()]
    return FileSummary("parquet", rows, columns, preview)


def add_arrow_column(stats: ColumnStats, column, pa, pc) -> None:
    stats.nulls += column.null_count
    if pa.types.is_floating(column.type):
        stats.nans += int(pc.sum(pc.is_nan(column)).as_py() or 0)
        stats.infs += int(pc.sum(pc.is_inf(column)).as_py() or 0)
    scalar = pa.types.is_integer(column.type) or pa.types.is_string(column.type) or pa.types.is_boolean(column.type)
    if stats.values is None or not scalar:
        stats.values = None
        return
    for value in pc.unique(column.drop_null()).to_pylist():
        stats.add(value, "", typed=True)
        if stats.values is None:
            return


def arrow_depth(arrow_type) -> int:
    """How many lists and structs nest in a column's type (Parquet itself allows about 100)."""
    if not arrow_type.num_fields:
        return 0
    return 1 + max(arrow_depth(arrow_type.field(i).type) for i in range(arrow_type.num_fields))


def arrow_kind(arrow_type, pa) -> str:
    checks = (("bool", pa.types.is_boolean), ("int", pa.types.is_integer), ("float", pa.types.is_floating),
              ("float", pa.types.is_decimal), ("str", pa.types.is_string), ("str", pa.types.is_large_string),
              ("list", pa.types.is_list), ("list", pa.types.is_large_list), ("list", pa.types.is_fixed_size_list),
              ("dict", pa.types.is_struct), ("dict", pa.types.is_map), ("null", pa.types.is_null))
    return next((kind for kind, check in checks if check(arrow_type)), str(arrow_type))
