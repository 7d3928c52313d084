"""Artifact downloads: whole archive with size and sha256, byte ranges, and a resumed download."""

import hashlib
import io
import tarfile
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import STORES, free_port, store_env_for
from tests.s3 import stored_keys


@pytest.fixture(scope="module", params=STORES)
def artifact_store_env(request):
    return store_env_for(request)


@pytest.fixture
def finished(seed_job, stored_artifacts, alice):
    job_id = seed_job(alice, "succeeded")
    return job_id, stored_artifacts(job_id)


@pytest.mark.parametrize("kind", ["adapter", "merged"])
def test_whole_download_has_length_checksum_and_the_folder(client, alice, finished, kind):
    job_id, files = finished
    response = client.get(f"/v1/jobs/{job_id}/artifacts/{kind}", headers=alice)
    assert response.status_code == 200
    body, headers = response.content, response.headers
    assert int(headers["content-length"]) == len(body)
    assert headers["x-checksum-sha256"] == hashlib.sha256(body).hexdigest()
    assert headers["etag"] == f'"{headers["x-checksum-sha256"]}"'
    assert headers["accept-ranges"] == "bytes" and headers["content-type"] == "application/x-tar"
    assert f'filename="{job_id}-{kind}.tar"' in headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert got == {f"{kind}/{name}": data for name, data in files.items()}


def test_broken_download_resumes_to_the_same_bytes(client, alice, finished):
    job_id, _ = finished
    url = f"/v1/jobs/{job_id}/artifacts/adapter"
    whole = client.get(url, headers=alice)
    size, etag = len(whole.content), whole.headers["etag"]
    cut = size // 3  # the connection "broke" after this many bytes
    first = client.get(url, headers={**alice, "Range": f"bytes=0-{cut - 1}"})
    assert first.status_code == 206 and first.headers["content-range"] == f"bytes 0-{cut - 1}/{size}"
    rest = client.get(url, headers={**alice, "Range": f"bytes={cut}-", "If-Range": etag})
    assert rest.status_code == 206 and rest.headers["content-range"] == f"bytes {cut}-{size - 1}/{size}"
    assert int(rest.headers["content-length"]) == size - cut
    resumed = first.content + rest.content
    assert resumed == whole.content
    assert hashlib.sha256(resumed).hexdigest() == whole.headers["x-checksum-sha256"]


def test_suffix_range_gives_the_tail(client, alice, finished):
    job_id, _ = finished
    url = f"/v1/jobs/{job_id}/artifacts/merged"
    whole = client.get(url, headers=alice).content
    tail = client.get(url, headers={**alice, "Range": "bytes=-1000"})
    assert tail.status_code == 206 and tail.content == whole[-1000:]


def test_range_past_the_end_is_416(client, alice, finished):
    job_id, _ = finished
    url = f"/v1/jobs/{job_id}/artifacts/adapter"
    size = int(client.head(url, headers=alice).headers["content-length"])
    response = client.get(url, headers={**alice, "Range": f"bytes={size}-"})
    assert response.status_code == 416 and response.headers["content-range"] == f"bytes */{size}"


def test_stale_if_range_sends_the_whole_new_file(client, alice, finished):
    job_id, _ = finished
    response = client.get(f"/v1/jobs/{job_id}/artifacts/adapter",
                          headers={**alice, "Range": "bytes=100-", "If-Range": '"a-previous-archive"'})
    assert response.status_code == 200 and int(response.headers["content-length"]) == len(response.content)


def test_head_gives_size_and_checksum_without_body(client, alice, finished):
    job_id, _ = finished
    url = f"/v1/jobs/{job_id}/artifacts/adapter"
    head, get = client.head(url, headers=alice), client.get(url, headers=alice)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers["x-checksum-sha256"] == get.headers["x-checksum-sha256"]


@pytest.mark.parametrize("status", ["queued", "running", "cancelling"])
def test_unfinished_job_is_409(client, alice, seed_job, status):
    response = client.get(f"/v1/jobs/{seed_job(alice, status)}/artifacts/adapter", headers=alice)
    assert response.status_code == 409 and f"job is {status}" in response.json()["detail"]


def test_missing_artifact_is_404(client, alice, seed_job, stored_artifacts):
    failed = seed_job(alice, "failed", error="out of memory")
    assert client.get(f"/v1/jobs/{failed}/artifacts/adapter", headers=alice).status_code == 404
    adapter_only = seed_job(alice, "succeeded")
    stored_artifacts(adapter_only, kinds=("adapter",))
    assert client.get(f"/v1/jobs/{adapter_only}/artifacts/adapter", headers=alice).status_code == 200
    response = client.get(f"/v1/jobs/{adapter_only}/artifacts/merged", headers=alice)
    assert response.status_code == 404 and "merged" in response.json()["detail"]


def test_unknown_kind_is_422(client, alice, finished):
    response = client.get(f"/v1/jobs/{finished[0]}/artifacts/weights", headers=alice)
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "kind"


@pytest.mark.parametrize("header", ["bytes=abc", "bytes=10-5", "items=0-10", "bytes=-"])
def test_a_malformed_range_is_400(client, alice, finished, header):
    response = client.get(f"/v1/jobs/{finished[0]}/artifacts/adapter", headers={**alice, "Range": header})
    assert response.status_code == 400 and "Range" in response.json()["detail"]


def test_several_ranges_are_answered_with_the_whole_archive(client, alice, finished):
    url = f"/v1/jobs/{finished[0]}/artifacts/adapter"
    response = client.get(url, headers={**alice, "Range": "bytes=0-9,20-29"})
    assert response.status_code == 200 and response.content == client.get(url, headers=alice).content


def test_an_unreachable_store_answers_503_and_the_download_works_once_it_is_back(
        client, alice, finished, artifact_store_env, env_override):
    if not artifact_store_env:
        pytest.skip("the folder store has no outage of its own")
    url = f"/v1/jobs/{finished[0]}/artifacts/adapter"
    whole = client.get(url, headers=alice).content
    env_override(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    response = client.get(url, headers=alice)
    assert response.status_code == 503 and response.headers["retry-after"]
    assert "artifact store cannot be reached" in response.json()["detail"]
    env_override(AWS_ENDPOINT_URL=artifact_store_env["AWS_ENDPOINT_URL"])
    assert client.get(url, headers=alice).content == whole


def test_a_presigned_redirect_when_configured_serves_the_same_bytes(client, alice, finished, artifact_store_env,
                                                                    env_override):
    url = f"/v1/jobs/{finished[0]}/artifacts/adapter"
    whole = client.get(url, headers=alice)
    env_override(DOWNLOAD_REDIRECT_SECONDS="300")
    response = client.get(url, headers=alice, follow_redirects=False)
    if not artifact_store_env:  # a folder has no URL of its own: the API streams it
        assert response.status_code == 200 and response.content == whole.content
        return
    assert response.status_code == 307 and response.headers["x-checksum-sha256"] == whole.headers["x-checksum-sha256"]
    query = parse_qs(urlsplit(response.headers["location"]).query)  # SigV4: AWS refuses SigV2 on new buckets
    assert (query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
            and query["X-Amz-Credential"][0].endswith("/s3/aws4_request"))
    assert "AWSAccessKeyId" not in query and "Signature" not in query
    direct = httpx.get(response.headers["location"])  # straight from the store, no API key
    assert direct.status_code == 200 and direct.content == whole.content
    assert f'filename="{finished[0]}-adapter.tar"' in direct.headers["content-disposition"]
    assert client.head(url, headers=alice).status_code == 200  # HEAD still answers itself


def test_deleting_a_finished_job_removes_its_rows_and_its_stored_files(client, alice, bob, finished, sessions):
    from service.tables import Metric

    job_id, _ = finished
    with sessions() as session:
        session.add(Metric(job_id=job_id, step=1, values={"loss": 0.5}))
        session.commit()
    assert stored_keys(f"jobs/{job_id}/") == {f"jobs/{job_id}/adapter.tar", f"jobs/{job_id}/merged.tar"}
    assert client.delete(f"/v1/jobs/{job_id}", headers=bob).status_code == 404  # not bob's
    assert client.delete(f"/v1/jobs/{job_id}", headers=alice).status_code == 204
    assert client.get(f"/v1/jobs/{job_id}", headers=alice).status_code == 404
    assert client.get(f"/v1/jobs/{job_id}/artifacts/adapter", headers=alice).status_code == 404
    assert stored_keys(f"jobs/{job_id}/") == set()
    with sessions() as session:
        assert session.query(Metric).filter_by(job_id=job_id).count() == 0
    assert client.delete(f"/v1/jobs/{job_id}", headers=alice).status_code == 404


@pytest.mark.parametrize("status", ["queued", "running", "cancelling"])
def test_an_unfinished_job_is_not_deleted(client, alice, seed_job, status):
    job_id = seed_job(alice, status)
    response = client.delete(f"/v1/jobs/{job_id}", headers=alice)
    assert response.status_code == 409 and "cancel it" in response.json()["detail"]
    assert client.get(f"/v1/jobs/{job_id}", headers=alice).json()["status"] == status


def test_a_job_an_unfinished_job_starts_from_is_not_deleted(client, alice, seed_job, finished, sessions):
    from service.tables import Job

    job_id, _ = finished
    follower = seed_job(alice, "queued")
    with sessions() as session:
        row = session.get(Job, follower)
        row.spec = {**row.spec, "from_checkpoint": job_id}
        session.commit()
    response = client.delete(f"/v1/jobs/{job_id}", headers=alice)
    assert response.status_code == 409 and follower in response.json()["detail"]
    assert stored_keys(f"jobs/{job_id}/")


def test_while_the_store_is_down_a_job_is_not_deleted(client, alice, finished, artifact_store_env, env_override):
    if not artifact_store_env:
        pytest.skip("the folder store has no outage of its own")
    job_id, _ = finished
    env_override(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    assert client.delete(f"/v1/jobs/{job_id}", headers=alice).status_code == 503
    env_override(AWS_ENDPOINT_URL=artifact_store_env["AWS_ENDPOINT_URL"])
    assert client.get(f"/v1/jobs/{job_id}/artifacts/adapter", headers=alice).status_code == 200
