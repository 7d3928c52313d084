"""The bad-input corpus: malformed uploads and job specs, each refused with a 4xx whose message names the
problem and what to change, and none of them touching anything already stored.

Every case runs next to a good file uploaded beforehand; afterwards the number of files and jobs, the
files on disk, and that good file's bytes are all exactly as they were. Cases that depend on the task
(labels, scores, batch size) are caught when the job is submitted, so such a job is never queued.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from sqlalchemy import func, select

from service.settings import get_settings
from service.tables import File, Job
from tests.api.conftest import tiny_spec

GOOD_ROWS = [{"sentence": f"good film {i}" if i % 2 else f"bad film {i}", "label": i % 2} for i in range(40)]


def jsonl(rows: list) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def csv_text(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


def empty_parquet() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.table({"sentence": pa.array([], pa.string()), "label": pa.array([], pa.int64())}), out)
    return out.getvalue()


def nested(depth: int) -> bytes:
    """A JSON value of `depth` arrays inside each other."""
    return b"[" * depth + b"1" + b"]" * depth


def deep_parquet(depth: int) -> bytes:
    value = "deep"
    for _ in range(depth):
        value = [value]
    return parquet([{"sentence": value, "label": 1}])


def invalid_line_50() -> bytes:
    lines = [json.dumps(row) for row in GOOD_ROWS * 3]
    lines[49] = '{"sentence": "broken", "label": }'
    return ("\n".join(lines) + "\n").encode()


# -- uploads ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BadUpload:
    filename: str
    data: Callable[[], bytes]
    says: str                  # the problem, as the message must name it
    fix: str = ""              # ... and the change it must suggest
    status: int = 422


BAD_UPLOADS = {
    "empty": BadUpload("train.csv", lambda: b"", "empty file", "upload a file with a header and rows"),
    "only blank lines": BadUpload("train.jsonl", lambda: b"\n \n\n", "empty file"),
    "header only": BadUpload("train.csv", lambda: b"sentence,label\n", "header only: no data rows",
                             "add rows below the header"),
    "binary junk": BadUpload("train.csv", lambda: bytes(range(256)) * 40, "binary data, not text (a NUL byte",
                             "upload JSON Lines, a JSON array, CSV, TSV or Parquet"),
    "binary junk without NUL bytes": BadUpload("train.jsonl", lambda: bytes(range(128, 256)) * 8,
                                               "not UTF-8 (byte 0x80 at offset 0, line 1)", "save the file as UTF-8"),
    "invalid JSON line in the middle": BadUpload("train.jsonl", invalid_line_50, "line 50: invalid JSON",
                                                 "fix or remove that line"),
    "not UTF-8": BadUpload("train.csv", lambda: "sentence,label\ncafé,1\n".encode("latin-1"),
                           "not UTF-8 (byte 0xe9 at offset 18, line 2)", "save the file as UTF-8"),
    "truncated Parquet": BadUpload("train.parquet", lambda: parquet(GOOD_ROWS)[:600],
                                   "not a readable Parquet file", "cut short"),
    "Parquet name, CSV bytes": BadUpload("train.parquet", lambda: csv_text("a,b", "1,2"),
                                         "not a Parquet file", "name it after its real format"),
    "empty Parquet table": BadUpload("train.parquet", lambda: empty_parquet(), "the Parquet file has no rows"),
    "JSON object, not an array": BadUpload("train.json", lambda: json.dumps({"data": GOOD_ROWS}).encode(),
                                           "holds an object, not an array of records", "wrap the records in [ ... ]"),
    "JSON array cut short": BadUpload("train.json", lambda: json.dumps(GOOD_ROWS).encode()[:-40],
                                      "the file may be cut short"),
    "JSON array of non-objects": BadUpload("train.json", lambda: b'[{"sentence": "a", "label": 1}, ["b", 0]]',
                                           "item 2: expected an object", "every item of the array must be an object"),
    "JSON Lines holding an array": BadUpload("train.jsonl", lambda: b'["a", 1]\n',
                                             "line 1: expected a JSON object per line, got an array"),
    "mixed types in a column": BadUpload("train.jsonl",
                                         lambda: jsonl(GOOD_ROWS[:5] + [{"sentence": "x", "label": "one"}]),
                                         "line 6: column 'label' holds a str ('one'), but earlier rows hold int",
                                         "use one type per column"),
    "a 10 MB single line": BadUpload("train.jsonl",
                                     lambda: b'{"sentence": "' + b"a" * 10_000_000 + b'", "label": 1}\n',
                                     "line 1 is longer than 8388608 bytes (MAX_LINE_BYTES)", "Split it"),
    "a row with an extra field": BadUpload("train.csv", lambda: csv_text("sentence,label", "fine,1", "well, fine,1"),
                                           "line 3: row has 3 fields, the header has 2",
                                           "quote fields that contain the delimiter"),
    "a column named twice": BadUpload("train.csv", lambda: csv_text("sentence,sentence", "a,b"),
                                      "names column 'sentence' twice", "give each column its own name"),
    "a column without a name": BadUpload("train.tsv", lambda: csv_text("sentence\t\tlabel", "a\tb\t1"),
                                         "column 2 has no name", "name every column"),
    "an unclosed quote": BadUpload("train.csv", lambda: csv_text("sentence,label", '"never closed,1'),
                                   "not valid CSV", "must close it"),
    "UTF-16 with a byte-order mark": BadUpload("train.csv", lambda: "sentence,label\nfine,1\n".encode("utf-16"),
                                               "the file is UTF-16 text", "save it as UTF-8"),
    "UTF-16 without a byte-order mark": BadUpload("train.jsonl",
                                                  lambda: jsonl(GOOD_ROWS).decode().encode("utf-16-be"),
                                                  "the file is UTF-16 text", "iconv -f utf-16 -t utf-8"),
    "UTF-32 with a byte-order mark": BadUpload("train.tsv", lambda: "sentence\tlabel\nfine\t1\n".encode("utf-32"),
                                               "the file is UTF-32 text", "save it as UTF-8"),
    "a JSON Lines value nested 10,000 deep": BadUpload(
        "train.jsonl", lambda: jsonl(GOOD_ROWS[:2]) + b'{"sentence": ' + nested(10_000) + b', "label": 1}\n',
        "line 3: values are nested more than 32 levels deep", "flatten them"),
    "a JSON Lines value nested 40 deep": BadUpload(
        "train.jsonl", lambda: b'{"sentence": ' + nested(40) + b', "label": 1}\n',
        "line 1: values are nested more than 32 levels deep", "flatten them"),
    "a JSON array item nested 10,000 deep": BadUpload(
        "train.json", lambda: b'[{"sentence": "a", "label": 1},\n{"sentence": ' + nested(10_000) + b', "label": 0}]',
        "line 2, item 2: values are nested more than 32 levels deep", "flatten them"),
    "a JSON array item nested 40 deep": BadUpload(
        "train.json", lambda: b'[{"sentence": ' + nested(40) + b', "label": 0}]',
        "item 1: values are nested more than 32 levels deep", "flatten them"),
    "a Parquet column nested 40 deep": BadUpload("train.parquet", lambda: deep_parquet(40),
                                                 "column 'sentence': values are nested more than 32 levels deep"),
}


# -- job specs on files that uploaded fine -----------------------------------------------------------

@dataclass(frozen=True)
class BadSpec:
    train: Callable[[], bytes]
    field: str                 # the field the 422 names
    says: str
    fix: str = ""
    train_name: str = "train.jsonl"
    validation: Callable[[], bytes] | None = None
    dataset: dict = field(default_factory=dict)
    top: dict = field(default_factory=dict)   # replaces top-level spec keys


def labelled(labels: list, n: int = 40) -> Callable[[], bytes]:
    return lambda: jsonl([{"sentence": f"film {i}", "label": labels[i % len(labels)]} for i in range(n)])


BAD_SPECS = {
    "wrong delimiter": BadSpec(lambda: csv_text("sentence;label", *[f"film {i};{i % 2}" for i in range(40)]),
                               "dataset.label_column", "found: sentence;label",
                               "looks like several names joined by another delimiter", train_name="train.csv"),
    "no label column": BadSpec(lambda: jsonl([{"sentence": "a", "sentiment": i % 2} for i in range(40)]),
                               "dataset.label_column", "no label column in train.jsonl",
                               "set dataset.label_column"),
    "unknown column name": BadSpec(labelled([0, 1]), "dataset.text_column",
                                   "column 'body' missing from train.jsonl", "found: sentence, label",
                                   dataset={"text_column": "body"}),
    "unknown label column name": BadSpec(labelled([0, 1]), "dataset.label_column", "column 'stars' missing",
                                         "found: sentence, label", dataset={"label_column": "stars"}),
    "labels only in validation": BadSpec(labelled(["pos", "neg"]), "dataset.validation_file_id",
                                         "labels ['neutral'] occur in valid.jsonl but never in training",
                                         "add training rows of those classes",
                                         validation=labelled(["pos", "neutral"], 8)),
    "validation without the label column": BadSpec(labelled([0, 1]), "dataset.validation_file_id",
                                                   "column 'label' missing from valid.jsonl",
                                                   validation=lambda: jsonl([{"sentence": "x"}] * 8)),
    "a single class": BadSpec(labelled(["pos"]), "dataset.label_column", "has a single class ('pos')",
                              "add rows of other classes"),
    "NaN scores for regression": BadSpec(labelled([0.5, float("nan"), 3.2]), "dataset.label_column",
                                         "rows of train.jsonl have NaN in 'label'", "remove those rows or fix",
                                         dataset={"label_type": "regression"}),
    "Infinity scores for regression": BadSpec(labelled([0.5, float("inf"), 3.2]), "dataset.label_column",
                                              "13 rows of train.jsonl have Infinity or -Infinity in 'label'",
                                              "every row needs a finite score", dataset={"label_type": "regression"}),
    "-inf scores in a CSV": BadSpec(lambda: csv_text("sentence,label", *[f"film {i},{(0.5, '-inf')[i % 2]}"
                                                                         for i in range(40)]),
                                    "dataset.label_column", "rows of train.csv have Infinity or -Infinity in 'label'",
                                    train_name="train.csv"),
    "Infinity scores in Parquet": BadSpec(lambda: parquet([{"sentence": f"film {i}",
                                                            "label": (0.5, float("inf"))[i % 2]}
                                                           for i in range(40)]),
                                          "dataset.label_column", "have Infinity or -Infinity in 'label'",
                                          train_name="train.parquet"),
    "NaN scores in the validation file": BadSpec(labelled([0.5, 3.2]), "dataset.validation_file_id",
                                                 "rows of valid.jsonl have NaN in 'label'",
                                                 validation=labelled([0.5, float("nan")], 8)),
    "regression validation without the label column": BadSpec(labelled([0.5, 3.2]), "dataset.validation_file_id",
                                                              "column 'label' missing from valid.jsonl",
                                                              validation=lambda: jsonl([{"sentence": "x"}] * 8)),
    "rows without a label": BadSpec(labelled([1, 0, None]), "dataset.label_column",
                                    "rows of train.jsonl have no value in 'label'", "fix their labels"),
    "text labels for regression": BadSpec(labelled(["pos", "neg"]), "dataset.label_type",
                                          "regression needs numbers", "label_type classes",
                                          dataset={"label_type": "regression"}),
    "too small for the batch size": BadSpec(labelled([0, 1], n=12), "training.batch_size",
                                            "has 9 training rows after holding out 3 for validation, fewer than "
                                            "batch_size 16", "lower training.batch_size or upload more rows",
                                            top={"training": {"max_steps": 24, "batch_size": 16}}),
    "unknown task": BadSpec(labelled([0, 1]), "task", "Input should be 'sequence_classification'",
                            top={"task": "sentiment_analysis"}),
    "a file id that is not one": BadSpec(labelled([0, 1]), "dataset.file_id", "is not a file id",
                                         "upload the data with POST /v1/files",
                                         dataset={"file_id": "../../etc/passwd"}),
    "an unknown file id": BadSpec(labelled([0, 1]), "dataset.file_id", f"no file file-{'0' * 32}",
                                  "upload the data with POST /v1/files", dataset={"file_id": f"file-{'0' * 32}"}),
}


# -- the store must not change ---------------------------------------------------------------------

def disk_files() -> set[str]:
    folder = get_settings().artifact_dir / "files"
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def good_file(client, alice) -> dict:
    data = jsonl(GOOD_ROWS)
    response = client.post("/v1/files", headers=alice, files={"file": ("good.jsonl", data)})
    assert response.status_code == 201, response.text
    return {**response.json(), "bytes": data}


@pytest.fixture
def store_unchanged(client, alice, sessions, good_file) -> Callable[[], None]:
    """Call after the bad request: files and jobs (rows and bytes) are as they were before it."""

    def snapshot() -> tuple:
        with sessions() as session:
            return (session.scalar(select(func.count()).select_from(File)),
                    session.scalar(select(func.count()).select_from(Job)), disk_files())

    before = None

    def check() -> None:
        assert snapshot() == before
        download = client.get(f"/v1/files/{good_file['id']}/content", headers=alice)
        assert download.status_code == 200 and download.content == good_file["bytes"]
        assert hashlib.sha256(download.content).hexdigest() == good_file["sha256"]

    def take() -> None:
        nonlocal before
        before = snapshot()

    check.take = take  # type: ignore[attr-defined]
    return check


def assert_message(message: str, says: str, fix: str) -> None:
    assert says in message, message
    assert fix in message, message


@pytest.mark.parametrize("case", list(BAD_UPLOADS.values()), ids=list(BAD_UPLOADS))
def test_a_malformed_upload_is_refused_and_stores_nothing(client, alice, store_unchanged, case):
    store_unchanged.take()
    response = client.post("/v1/files", headers=alice, files={"file": (case.filename, case.data())})
    assert response.status_code == case.status, response.text
    [error] = response.json()["detail"]
    assert error["field"] == "file" and error["message"].startswith(f"{case.filename}: ")
    assert_message(error["message"], case.says, case.fix)
    store_unchanged()


@pytest.mark.parametrize("case", list(BAD_SPECS.values()), ids=list(BAD_SPECS))
def test_a_job_the_data_cannot_support_is_refused_before_it_is_queued(client, alice, store_unchanged, case):
    def upload(name: str, data: bytes) -> str:
        response = client.post("/v1/files", headers=alice, files={"file": (name, data)})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    dataset = {"source": "file", "file_id": upload(case.train_name, case.train()), "validation_split": 0.25}
    if case.validation:
        dataset["validation_file_id"] = upload("valid.jsonl", case.validation())
    store_unchanged.take()
    spec = tiny_spec(dataset={**dataset, **case.dataset}, **case.top)
    for dry_run in (False, True):
        response = client.post("/v1/jobs", headers=alice, json={**spec, "dry_run": dry_run})
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["field"] == case.field, error
        assert_message(error["message"], case.says, case.fix)
    store_unchanged()


def test_a_traversing_file_name_is_stored_as_a_plain_name_inside_the_store(client, alice, tmp_path):
    target = tmp_path / "escaped.jsonl"
    name = f"../../../../../../..{target}"
    response = client.post("/v1/files", headers=alice, files={"file": (name, jsonl(GOOD_ROWS))})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["filename"] == "escaped.jsonl" and not target.exists()
    assert disk_files() >= {f"{body['id']}.jsonl"}


def test_an_oversized_upload_is_refused_with_the_limit_before_it_is_read(client, alice, store_unchanged,
                                                                         env_override):
    env_override(MAX_UPLOAD_BYTES="1000")
    store_unchanged.take()
    response = client.post("/v1/files", headers=alice, files={"file": ("big.jsonl", jsonl(GOOD_ROWS * 50))})
    assert response.status_code == 413
    assert "limit of 1000 bytes (MAX_UPLOAD_BYTES" in response.json()["detail"]
    store_unchanged()


@pytest.mark.parametrize("request_kwargs, status, says", [
    ({"json": {"file": "sentence,label"}}, 415, "send multipart/form-data"),
    ({"files": {"purpose": (None, "fine-tune")}}, 400, "no file: send the dataset in the multipart field `file`"),
    ({"files": [("file", ("a.jsonl", b'{"a": 1}\n')), ("file", ("b.jsonl", b'{"a": 1}\n'))]}, 400,
     "send exactly one file"),
    ({"files": {"file": ("a.jsonl", b'{"a": 1}\n'), "purpose": (None, "x" * 65)}}, 422, "at most 64 printable"),
    ({"files": {"file": ("a.jsonl", b'{"a": 1}\n'), "purpose": (None, "a\x00b")}}, 422, "at most 64 printable"),
    ({"files": {"fiel": ("a.jsonl", b'{"a": 1}\n')}}, 400, "unknown multipart field 'fiel'"),
], ids=["not multipart", "no file part", "two files", "purpose too long", "a NUL in the purpose", "misspelt field"])
def test_a_malformed_upload_request_is_refused_and_stores_nothing(client, alice, store_unchanged, request_kwargs,
                                                                  status, says):
    store_unchanged.take()
    response = client.post("/v1/files", headers=alice, **request_kwargs)
    assert response.status_code == status, response.text
    assert says in json.dumps(response.json())
    store_unchanged()


def cut_multipart() -> bytes:
    """A multipart body cut inside the file part: 3 of 6 rows arrived, the closing boundary never did."""
    rows = jsonl(GOOD_ROWS[:6]).splitlines(keepends=True)
    return (b"--cut\r\nContent-Disposition: form-data; name=\"file\"; filename=\"train.jsonl\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + b"".join(rows[:3]))


@pytest.mark.parametrize("framing", ["Content-Length", "chunked"])
def test_an_upload_cut_short_is_refused_and_stores_nothing(client, alice, store_unchanged, framing):
    store_unchanged.take()
    body = cut_multipart()
    content = body if framing == "Content-Length" else iter([body[:100], body[100:]])
    response = client.post("/v1/files", content=content,
                           headers={**alice, "Content-Type": "multipart/form-data; boundary=cut"})
    assert response.status_code == 400, response.text
    assert "the upload was cut short" in response.json()["detail"]
    assert "send the file again" in response.json()["detail"]
    store_unchanged()


# -- job spec bodies that cannot be read as a spec --------------------------------------------------

@dataclass(frozen=True)
class BadBody:
    content: Callable[[], bytes]
    status: int
    says: str
    field: str | None = None   # the field a 422 names
    content_type: str | None = "application/json"
    chunked: bool = False


def spec_with_raw(section: str, key: str, raw: str) -> bytes:
    """The tiny spec as JSON text with one value written as raw JSON (NaN and Infinity, which json accepts)."""
    spec = tiny_spec()
    spec[section] = {**spec[section], key: "@raw@"}
    return json.dumps(spec).replace('"@raw@"', raw).encode()


BAD_BODIES = {
    "NaN learning rate": BadBody(lambda: spec_with_raw("training", "learning_rate", "NaN"), 422,
                                 "must be a finite number, not NaN or Infinity", "training.learning_rate"),
    "Infinity weight decay": BadBody(lambda: spec_with_raw("training", "weight_decay", "Infinity"), 422,
                                     "must be a finite number", "training.weight_decay"),
    "-Infinity budget target": BadBody(lambda: spec_with_raw("budget", "target_r", "-Infinity"), 422,
                                       "must be a finite number", "budget.target_r"),
    "not UTF-8": BadBody(lambda: json.dumps(tiny_spec()).replace("tiny-bert", "tiny-b\udcffrt")
                         .encode("utf-8", "surrogateescape"), 400, "the body is not UTF-8 (byte 0xff at offset"),
    "nested 100,000 deep": BadBody(lambda: nested(100_000), 400, "nests arrays or objects too deeply to read"),
    "a value nested 500 deep": BadBody(lambda: json.dumps(tiny_spec()).replace('"tiny-bert"', nested(500).decode())
                                       .encode(), 422, "Input should be a valid string", "model"),
    "empty": BadBody(lambda: b"", 422, "the body is empty: send the job spec as a JSON object", "body"),
    "an array, not an object": BadBody(lambda: json.dumps([tiny_spec()]).encode(), 422,
                                       "the body must be a JSON object {...} holding the job spec, not an array",
                                       "body"),
    "no Content-Type": BadBody(lambda: json.dumps(tiny_spec()).encode(), 422,
                               "send the job spec with the header Content-Type: application/json", "body",
                               content_type=None),
    "a section that is not an object": BadBody(lambda: json.dumps({**tiny_spec(), "budget": 5}).encode(), 422,
                                               "must be an object {...} of named fields, not a number", "budget"),
    "an unknown dataset source": BadBody(
        lambda: json.dumps({**tiny_spec(), "dataset": {"source": "ftp", "path": "x"}}).encode(), 422,
        "unknown source 'ftp': use one of 'hub', 'server', 'file'", "dataset.source"),
    "5 MB": BadBody(lambda: json.dumps({**tiny_spec(), "name": "x" * (5 << 20)}).encode(), 413,
                    "larger than this server's limit of 1048576 bytes (MAX_BODY_BYTES, 1 MiB)"),
    "5 MB, chunked": BadBody(lambda: json.dumps({**tiny_spec(), "name": "x" * (5 << 20)}).encode(), 413,
                             "ask the operator to raise MAX_BODY_BYTES", chunked=True),
}


@pytest.mark.parametrize("case", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_a_spec_body_that_cannot_be_read_is_refused_saying_why(client, alice, store_unchanged, case):
    store_unchanged.take()
    body = case.content()
    content = iter([body[i:i + 65536] for i in range(0, len(body), 65536)]) if case.chunked else body
    headers = {**alice, **({"Content-Type": case.content_type} if case.content_type else {})}
    response = client.post("/v1/jobs", content=content, headers=headers)
    assert response.status_code == case.status, response.text
    detail = response.json()["detail"]
    if case.field is None:
        assert case.says in detail, detail
    else:
        assert [(e["field"], case.says in e["message"]) for e in detail] == [(case.field, True)], detail
    store_unchanged()
