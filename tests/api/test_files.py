"""Uploads over REST: every format parses to the same rows, the bytes are kept exactly, files are the
caller's own, a file in use cannot be deleted, jobs train on uploads (read as a server file of the same
content is), and limits hold while streaming."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import pytest

from service.dataset import DataError
from service.dataset.readers import read_splits
from service.jobspec import JobSpec
from service.settings import get_settings
from service.store import get_store
from tests.api.conftest import tiny_spec
from tests.api.helpers import FORMATS, ROWS, as_delimited, as_jsonl, as_parquet, file_spec, upload, uploaded
from tests.conftest import STORES, free_port, store_env_for
from tests.s3 import stored_keys


@pytest.fixture(scope="module", params=STORES)
def artifact_store_env(request):
    return store_env_for(request)


def stored_files() -> set[str]:
    """Names under files/ in the store, with this host's uploads in progress."""
    incoming = get_store().local_path("files/incoming")
    partial = {f"incoming/{p.name}" for p in incoming.glob("*")} if incoming.exists() else set()
    return {key.removeprefix("files/") for key in stored_keys("files/")} | partial


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_parses_every_row_and_keeps_the_exact_bytes(client, alice, name):
    data = FORMATS[name](ROWS)
    response = upload(client, alice, name, data, purpose="sentiment")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["format"] == name.rsplit(".", 1)[1] and body["purpose"] == "sentiment"
    assert body["row_count"] == 40 and body["size"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    label = next(c for c in body["columns"] if c["name"] == "label")
    assert [c["name"] for c in body["columns"]] == ["sentence", "label"]
    assert label["type"] == "str" and label["values"] == ["negative", "positive"] and label["nulls"] == 0
    assert body["preview"][0] == ROWS[0] and len(body["preview"]) == 5
    download = client.get(f"/v1/files/{body['id']}/content", headers=alice)
    assert download.status_code == 200 and download.content == data
    assert download.headers["x-checksum-sha256"] == body["sha256"]


def test_columns_report_types_nulls_and_nans(client, alice):
    rows = [{"text": "a", "score": 1.5, "n": 1, "ok": True, "tags": ["x"], "meta": {"k": 1}},
            {"text": None, "score": float("nan"), "n": 2, "ok": False, "tags": [], "meta": {}},
            {"score": 2, "n": 3, "ok": True, "tags": ["y"], "meta": {"k": 2}}]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)  # json.dumps writes NaN as NaN
    body = upload(client, alice, "mixed.jsonl", data).json()
    columns = {c["name"]: c for c in body["columns"]}
    assert {n: c["type"] for n, c in columns.items()} == {
        "text": "str", "score": "float", "n": "int", "ok": "bool", "tags": "list", "meta": "dict"}
    assert columns["text"]["nulls"] == 2 and columns["score"]["nans"] == 1
    assert body["preview"][1]["score"] == "nan"  # stored as text: NaN is not valid JSON in every database


def test_tsv_reads_quotes_literally_like_glue(client, alice):
    data = b'sentence\tlabel\nit "works" fine\t1\nthe "end\t0\n'
    body = upload(client, alice, "glue.tsv", data).json()
    assert body["row_count"] == 2 and body["preview"][1]["sentence"] == 'the "end'


def test_format_comes_from_the_content_when_the_name_has_no_suffix(client, alice):
    assert upload(client, alice, "data", as_jsonl(ROWS)).json()["format"] == "jsonl"
    assert upload(client, alice, "data", as_parquet(ROWS)).json()["format"] == "parquet"
    assert upload(client, alice, "data", as_delimited(ROWS, "\t")).json()["format"] == "tsv"


def test_an_upload_bigger_than_the_json_body_limit_is_accepted(client, alice):
    rows = [{"sentence": "word " * 100, "label": i % 2} for i in range(3000)]  # ~1.6 MB > MAX_BODY_BYTES
    data = as_jsonl(rows)
    assert len(data) > get_settings().max_body_bytes
    response = upload(client, alice, "big.jsonl", data)
    assert response.status_code == 201, response.text
    assert response.json()["row_count"] == 3000


def test_the_size_limit_holds_while_streaming_without_a_content_length(client, alice, env_override):
    env_override(MAX_UPLOAD_BYTES="100000")
    before = stored_files()
    boundary = "b0undary"

    def body():  # a chunked request: the server cannot know the size up front
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.jsonl"\r\n\r\n'.encode()
        for _ in range(50):
            yield b'{"sentence": "' + b"a" * 10_000 + b'", "label": 1}\n'
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post("/v1/files", headers={**alice, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                           content=body())
    assert response.status_code == 413
    assert "100000 bytes (MAX_UPLOAD_BYTES" in response.json()["detail"]
    assert stored_files() == before


def test_files_are_listed_newest_first_and_paginated(client, new_tenant):
    carol = new_tenant()
    ids = [uploaded(client, carol)["id"] for _ in range(3)]
    page = client.get("/v1/files?limit=2", headers=carol).json()
    assert page["count"] == 3 and [f["id"] for f in page["data"]] == ids[::-1][:2]
    rest = client.get("/v1/files?limit=2&offset=2", headers=carol).json()
    assert [f["id"] for f in rest["data"]] == ids[:1]


def test_a_file_cannot_be_deleted_while_an_unfinished_job_uses_it(client, alice, seed_job, sessions):
    from service.tables import Job

    file = uploaded(client, alice)
    job_id = seed_job(alice, status="running")
    with sessions() as session:
        session.get(Job, job_id).spec = file_spec("file-" + "0" * 32, validation_file_id=file["id"])
        session.commit()
    response = client.delete(f"/v1/files/{file['id']}", headers=alice)
    assert response.status_code == 409 and job_id in response.json()["detail"]
    with sessions() as session:
        session.get(Job, job_id).status = "succeeded"
        session.commit()
    assert client.delete(f"/v1/files/{file['id']}", headers=alice).status_code == 204
    assert client.get(f"/v1/files/{file['id']}", headers=alice).status_code == 404
    assert f"{file['id']}.jsonl" not in stored_files()


def test_a_job_on_an_uploaded_file_is_queued_and_the_worker_reads_the_rows(client, alice):
    file = uploaded(client, alice, "train.parquet")
    validation = uploaded(client, alice, "train.csv", ROWS[:8])
    spec = file_spec(file["id"], validation_file_id=validation["id"])
    response = client.post("/v1/jobs", headers=alice, json=spec)
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["dataset"]["file_id"] == file["id"]
    train, held = read_splits(JobSpec.model_validate(spec))  # what the worker does with the stored spec
    assert train == {"sentence": [r["sentence"] for r in ROWS], "label": [r["label"] for r in ROWS]}
    assert held["sentence"] == [r["sentence"] for r in ROWS[:8]]


def test_a_dry_run_counts_rows_from_the_file_record(client, alice):
    file = uploaded(client, alice)
    spec = {**file_spec(file["id"]), "schedule": {"tinit": 0.1, "tfinal": 0.2, "delta_t": 1}}
    del spec["training"]["max_steps"]
    spec["training"]["epochs"] = 10
    response = client.post("/v1/jobs", headers=alice, json={**spec, "dry_run": True})
    assert response.status_code == 200, response.text
    assert response.json()["total_steps_from"] == "30 training rows counted"  # 40 rows, 10 held out


def test_a_job_naming_a_missing_column_is_refused_with_the_columns_found(client, alice):
    file = uploaded(client, alice)
    response = client.post("/v1/jobs", headers=alice, json=file_spec(file["id"], label_column="sentiment"))
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["field"] == "dataset.label_column"
    assert error["message"].startswith("column 'sentiment' missing from train.jsonl")
    assert error["message"].endswith("found: sentence, label")


def test_stored_names_are_sanitised_and_files_stay_in_the_store(client, alice, tmp_path):
    body = upload(client, alice, "../../../../../tmp/evil\\..\\x.jsonl", as_jsonl(ROWS)).json()
    assert body["filename"] == "x.jsonl"
    assert f"{body['id']}.jsonl" in stored_files()
    assert not Path("/tmp/evil").exists()


def test_a_partial_upload_abandoned_a_day_ago_is_swept(client, alice):
    abandoned = get_settings().artifact_dir / "files" / "incoming" / "dead.partial"
    abandoned.parent.mkdir(parents=True, exist_ok=True)
    abandoned.write_bytes(b"half an upload")
    recent = abandoned.with_name("alive.partial")
    recent.write_bytes(b"still arriving")
    a_day_ago = time.time() - 24 * 3600 - 60
    os.utime(abandoned, (a_day_ago, a_day_ago))
    uploaded(client, alice)
    assert not abandoned.exists() and recent.exists()
    recent.unlink()


def test_an_upload_without_a_key_is_refused_before_its_body_is_stored(client):
    before = stored_files()
    response = client.post("/v1/files", files={"file": ("train.jsonl", as_jsonl(ROWS))})
    assert response.status_code == 401 and stored_files() == before


def test_excel_csv_with_a_byte_order_mark_and_a_long_field_reads_the_same_in_the_worker(client, alice):
    long_text = "word " * 40_000  # 200 KB: over the csv module's default field limit
    data = b"\xef\xbb\xbf" + f'sentence,label\n"{long_text}",1\nshort,0\n'.encode()
    file = upload(client, alice, "excel.csv", data).json()
    assert [c["name"] for c in file["columns"]] == ["sentence", "label"]
    spec = file_spec(file["id"], validation_split=0)
    train, _ = read_splits(JobSpec.model_validate(spec))
    assert train == {"sentence": [long_text, "short"], "label": ["1", "0"]}


# Content the training reader once parsed otherwise than the upload check (a byte-order mark before a JSON
# array, blank lines, CRLF, quotes in GLUE TSV, NaN and Infinity); now one reader per format reads both.
ODD_FILES = {
    "excel.csv": (b'\xef\xbb\xbfsentence,label\r\n\r\n"a film,\nin two lines",1\r\nbad film,0\r\n\n',
                  {"sentence": ["a film,\nin two lines", "bad film"], "label": ["1", "0"]}),
    "glue.tsv": (b'sentence\tlabel\n\nit \'s "quoted"\t1\n"open quote\t0\n',
                 {"sentence": ['it \'s "quoted"', '"open quote'], "label": ["1", "0"]}),
    "scores.jsonl": (b'\xef\xbb\xbf{"sentence": "a", "label": NaN}\r\n\n \n{"sentence": "b", "label": -Infinity}\n',
                     {"sentence": ["a", "b"], "label": [float("nan"), float("-inf")]}),
    "array.json": (b'\xef\xbb\xbf[\n {"sentence": "a", "label": NaN},\n {"sentence": "b", "label": 1}\n]\n',
                   {"sentence": ["a", "b"], "label": [float("nan"), 1]}),
}
# ... and content the training reader once took but an upload refuses: now refused both ways, alike.
REFUSED_FILES = {
    "twice.csv": (b"sentence,sentence\na,b\n", "line 1: the header names column 'sentence' twice"),
    "utf16.csv": ("sentence,label\nfine,1\n".encode("utf-16"), "the file is UTF-16 text"),
    "nul.csv": (b"sentence,label\nfi\0ne,1\n", "binary data, not text (a NUL byte at offset 17)"),
    "old-mac.csv": (b"sentence,label\rfine,1\r", "line 1: not valid CSV"),
    "deep.jsonl": (b'{"sentence": ' + b"[" * 40 + b'"a"' + b"]" * 40 + b', "label": 1}\n',
                   "line 1: values are nested more than 32 levels deep"),
}


def in_data_dir(name: str, data: bytes) -> Path:
    """The file, under a name of its own, in the server's data folder (DATA_DIRS)."""
    path = get_settings().resolved_data_dirs()[0] / f"{uuid.uuid4().hex[:8]}-{name}"
    path.write_bytes(data)
    return path


def server_spec(path: Path) -> dict:
    return tiny_spec(dataset={"source": "server", "path": path.name, "validation_split": 0})


@pytest.mark.parametrize("name", list(ODD_FILES))
def test_a_server_file_and_an_upload_of_the_same_odd_content_read_the_same(client, alice, name):
    data, expected = ODD_FILES[name]
    response = upload(client, alice, name, data)
    assert response.status_code == 201, response.text
    uploaded_rows, _ = read_splits(JobSpec.model_validate(file_spec(response.json()["id"], validation_split=0)))
    path = in_data_dir(name, data)
    try:
        server_rows, _ = read_splits(JobSpec.model_validate(server_spec(path)))
    finally:
        path.unlink()
    as_text = lambda columns: json.dumps(columns)  # noqa: E731 (NaN is never equal to itself; its text is)
    assert as_text(server_rows) == as_text(uploaded_rows) == as_text(expected)


@pytest.mark.parametrize("name", list(REFUSED_FILES))
def test_a_server_file_and_an_upload_of_the_same_bad_content_are_refused_alike(client, alice, name):
    data, says = REFUSED_FILES[name]
    response = upload(client, alice, name, data)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    problem = error["message"].removeprefix(f"{name}: ")
    assert says in problem
    path = in_data_dir(name, data)
    try:
        with pytest.raises(DataError) as refused:
            read_splits(JobSpec.model_validate(server_spec(path)))
    finally:
        path.unlink()
    assert str(refused.value).startswith(f"dataset file {path.name} is not valid ")
    assert str(refused.value).endswith(problem)


@pytest.mark.parametrize("labels, dataset", [
    ([0.5, 1.25, 3.0, 4.75], {}),                              # STS-B style scores: regression, not 4 classes
    ([0, 1], {"label_type": "regression"}),                     # whole-number scores, regression by request
    (list(range(150)), {}),                                     # more classes than the upload records by name
], ids=["fractional scores", "integer scores", "many classes"])
def test_usable_labels_are_accepted(client, alice, labels, dataset):
    rows = [{"sentence": f"film {i}", "label": labels[i % len(labels)]} for i in range(300)]
    file = uploaded(client, alice, rows=rows)
    response = client.post("/v1/jobs", headers=alice, json=file_spec(file["id"], **dataset))
    assert response.status_code == 201, response.text


def test_content_downloads_with_ranges_and_the_uploaded_name(client, alice):
    data = FORMATS["train.jsonl"](ROWS)
    file = uploaded(client, alice)
    url = f"/v1/files/{file['id']}/content"
    whole = client.get(url, headers=alice)
    assert whole.content == data and whole.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert 'filename="train.jsonl"' in whole.headers["content-disposition"]
    part = client.get(url, headers={**alice, "Range": "bytes=5-"})
    assert part.status_code == 206 and part.content == data[5:]


def test_while_the_store_is_down_uploads_and_deletes_are_503_and_nothing_changes(
        client, alice, artifact_store_env, env_override):
    if not artifact_store_env:
        pytest.skip("the folder store has no outage of its own")
    kept = uploaded(client, alice)
    listed, before = client.get("/v1/files", headers=alice).json()["count"], stored_files()
    env_override(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    response = upload(client, alice, "train.jsonl", FORMATS["train.jsonl"](ROWS))
    assert response.status_code == 503 and "retry" in response.json()["detail"]
    response = client.delete(f"/v1/files/{kept['id']}", headers=alice)
    assert response.status_code == 503
    assert client.get(f"/v1/files/{kept['id']}/content", headers=alice).status_code == 503
    env_override(AWS_ENDPOINT_URL=artifact_store_env["AWS_ENDPOINT_URL"])
    assert client.get("/v1/files", headers=alice).json()["count"] == listed and stored_files() == before
    assert client.get(f"/v1/files/{kept['id']}/content", headers=alice).content == FORMATS["train.jsonl"](ROWS)


def test_a_non_ascii_file_name_comes_back_encoded_in_the_download(client, alice):
    file = uploaded(client, alice, name="train.jsonl")
    response = upload(client, alice, "données-été.jsonl", FORMATS["train.jsonl"](ROWS))
    assert response.status_code == 201, response.text
    download = client.get(f"/v1/files/{response.json()['id']}/content", headers=alice)
    assert download.headers["content-disposition"] == "attachment; filename*=utf-8''donn%C3%A9es-%C3%A9t%C3%A9.jsonl"
    assert file["id"] != response.json()["id"]
