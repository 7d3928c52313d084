"""The artifact store's contract, the same for the folder and for S3 (a live moto endpoint): whole objects,
byte ranges, copies on this host, deletes, keys that cannot escape, and an outage as StoreUnavailable."""

from __future__ import annotations

import os

import pytest

from service.settings import get_settings, parse_store_url
from service.store import S3Store, StoreUnavailable, get_store
from tests.conftest import STORES, reset_service_caches, store_env_for
from tests.s3 import Relay, objects, store_env


@pytest.fixture(params=STORES)
def store(request, monkeypatch, tmp_path):
    for name, value in {"ARTIFACT_DIR": str(tmp_path / "artifacts"), **store_env_for(request)}.items():
        monkeypatch.setenv(name, value)
    reset_service_caches()
    yield get_store()
    monkeypatch.undo()
    reset_service_caches()


def scratch(store, name: str, data: bytes):
    path = store.local_path(f"incoming/{name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_put_consumes_the_source_and_reads_back_whole_and_in_ranges(store):
    data = os.urandom(3 * (1 << 20) + 123)  # several read chunks, and a multipart upload for S3
    source = scratch(store, "a.bin", data)
    store.put("jobs/x/a.bin", source)
    assert not source.exists()
    assert store.size("jobs/x/a.bin") == len(data)
    assert b"".join(store.read("jobs/x/a.bin", 0, len(data))) == data
    assert b"".join(store.read("jobs/x/a.bin", 10, 20)) == data[10:20]
    assert b"".join(store.read("jobs/x/a.bin", len(data) - 5, len(data))) == data[-5:]
    assert store.size("jobs/x/missing.bin") is None and store.local_copy("jobs/x/missing.bin") is None


def test_a_put_replaces_the_object_and_a_local_copy_has_its_bytes(store):
    store.put("files/f.jsonl", scratch(store, "1", b"first"))
    store.put("files/f.jsonl", scratch(store, "2", b"second version"))
    copy = store.local_copy("files/f.jsonl")
    assert copy.read_bytes() == b"second version"
    assert store.local_copy("files/f.jsonl") == copy  # fetched once


def test_deleting_a_prefix_removes_its_objects_and_this_hosts_copies_only(store):
    for key in ("jobs/j/checkpoints/step-1.pt", "jobs/j/checkpoints/step-2.pt", "jobs/j/adapter.tar",
                "jobs/k/checkpoints/step-1.pt"):
        store.put(key, scratch(store, key.replace("/", "_"), key.encode()))
    copy = store.local_copy("jobs/j/checkpoints/step-1.pt")
    store.delete_prefix("jobs/j/checkpoints/")
    assert store.size("jobs/j/checkpoints/step-1.pt") is None and store.size("jobs/j/checkpoints/step-2.pt") is None
    assert not copy.exists()
    assert store.size("jobs/j/adapter.tar") == len(b"jobs/j/adapter.tar")
    assert store.size("jobs/k/checkpoints/step-1.pt") is not None  # a key sharing the text, not the folder
    store.delete("jobs/j/adapter.tar")
    store.delete("jobs/j/never-there.tar")  # no error
    assert store.size("jobs/j/adapter.tar") is None


@pytest.mark.parametrize("key", ["../outside", "/etc/passwd", "jobs/../../x", "jobs/./x", "jobs//x", "a\\b",
                                 "jobs/x\x00", ""])
def test_keys_cannot_leave_the_store(store, key):
    with pytest.raises(ValueError):
        store.size(key)
    with pytest.raises(ValueError):
        store.local_path(key)


@pytest.mark.parametrize("url, expected", [("s3://bucket", ("bucket", "")),
                                           ("s3://my.bucket/a/b/", ("my.bucket", "a/b/")),
                                           ("s3://bucket-1/prefix", ("bucket-1", "prefix/"))])
def test_store_urls_parse(url, expected):
    assert parse_store_url(url) == expected


@pytest.mark.parametrize("url", ["s3:/bucket", "gs://bucket", "s3://B", "s3://bucket/../x", "file:///tmp"])
def test_a_bad_store_url_is_refused_when_the_settings_load(url, monkeypatch):
    monkeypatch.setenv("ARTIFACT_STORE", url)
    get_settings.cache_clear()
    with pytest.raises(ValueError, match="ARTIFACT_STORE"):
        get_settings()
    monkeypatch.undo()
    get_settings.cache_clear()


def test_an_unreachable_store_raises_store_unavailable_and_keeps_what_it_holds(s3_endpoint, monkeypatch, tmp_path):
    from tests.s3 import new_bucket

    bucket = new_bucket(s3_endpoint)
    relay = Relay(s3_endpoint)
    for name, value in {"ARTIFACT_DIR": str(tmp_path), **store_env(relay.url, bucket)}.items():
        monkeypatch.setenv(name, value)
    reset_service_caches()
    store = get_store()
    assert isinstance(store, S3Store)
    store.put("files/kept.csv", scratch(store, "kept", b"a,b\n1,2\n"))
    relay.cut()
    try:
        source = scratch(store, "lost", b"new bytes")
        for call in (lambda: store.size("files/kept.csv"), lambda: store.put("files/new.csv", source),
                     lambda: b"".join(store.read("files/kept.csv", 0, 3)), store.check,
                     lambda: store.delete("files/kept.csv")):
            with pytest.raises(StoreUnavailable, match="cannot be reached"):
                call()
        assert source.exists()  # a failed put leaves its source for the caller
    finally:
        relay.restore()
    assert store.size("files/kept.csv") == 8 and "service/files/new.csv" not in objects(s3_endpoint, bucket)
    relay.close()
    reset_service_caches()


def test_presigned_urls_are_sigv4_for_the_configured_region_and_fetch_the_object(s3_endpoint, monkeypatch, tmp_path):
    # AWS refuses SigV2 (AWSAccessKeyId/Signature/Expires) on buckets created since June 2020.
    from urllib.parse import parse_qs, urlsplit

    import httpx

    from tests.s3 import new_bucket

    env = {"ARTIFACT_DIR": str(tmp_path), **store_env(s3_endpoint, new_bucket(s3_endpoint)), "AWS_REGION": "eu-west-1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_DEFAULT_REGION")  # only AWS_REGION, as ECS and Lambda may set it
    reset_service_caches()
    store = get_store()
    store.put("jobs/j/adapter.tar", scratch(store, "a", b"the archive"))
    url = store.download_url("jobs/j/adapter.tar", 'attachment; filename="a.tar"', 300)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["300"]
    assert query["X-Amz-Credential"][0].endswith("/eu-west-1/s3/aws4_request")
    assert not {"AWSAccessKeyId", "Signature", "Expires"} & set(query)
    direct = httpx.get(url)
    assert direct.status_code == 200 and direct.content == b"the archive"
    assert direct.headers["content-disposition"] == 'attachment; filename="a.tar"'
    monkeypatch.undo()
    reset_service_caches()
