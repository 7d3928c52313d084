"""Helpers of the API tests on uploads: rows in every upload format, an upload over REST, and a job spec
that trains on an uploaded file."""

from __future__ import annotations

import io
import json

from tests.api.conftest import tiny_spec
from tests.conftest import sentiment_rows

ROWS = [{"sentence": s, "label": y} for s, y in sentiment_rows(40)]


def as_jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def as_delimited(rows: list[dict], sep: str) -> bytes:
    names = list(rows[0])
    return "\n".join([sep.join(names)] + [sep.join(str(r[n]) for n in names) for r in rows]).encode() + b"\n"


def as_parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


FORMATS = {
    "train.jsonl": lambda rows: as_jsonl(rows),
    "train.json": lambda rows: json.dumps(rows, indent=1).encode(),
    "train.csv": lambda rows: as_delimited(rows, ","),
    "train.tsv": lambda rows: as_delimited(rows, "\t"),
    "train.parquet": as_parquet,
}


def upload(client, headers, name: str, data: bytes, **form):
    return client.post("/v1/files", headers=headers, files={"file": (name, data)}, data=form)


def uploaded(client, headers, name: str = "train.jsonl", rows: list[dict] = ROWS) -> dict:
    response = upload(client, headers, name, FORMATS[name](rows))
    assert response.status_code == 201, response.text
    return response.json()


def file_spec(file_id: str, **dataset) -> dict:
    return tiny_spec(dataset={"source": "file", "file_id": file_id, "validation_split": 0.25, **dataset})
