"""Schemathesis against the live API: uvicorn in a subprocess on a fresh Postgres database (Redis as the
broker), the schema read from its own /openapi.json, every operation called with a real tenant's key.

Each response must not be a 5xx, must match the response schema declared for its status, use a declared
status code and a declared content type. Path parameters are mostly swapped for ids that exist (a finished
job with metrics, ranks, checkpoints and an archive; a queued job; an uploaded file; another tenant's job), and
job and upload bodies often name the tiny model, dataset and CSV that exist, so the fuzzer reaches the code
behind the 404s and the first 422s as well.

The example count is fixed (FUZZ_EXAMPLES, 30 per operation) and generation derandomized, so CI makes the same
requests on every run. The test prints how many requests it made, how many came back 5xx, and the status codes
each operation answered.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.pytest.lazy import get_all_tests
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import (
    REPO,
    empty_database,
    free_port,
    migrate,
    service_environment,
    stop_process,
    tiny_job_spec,
    wait_for,
)

EXAMPLES_PER_OPERATION = int(os.environ.get("FUZZ_EXAMPLES", "30"))  # CI; set FUZZ_EXAMPLES=500 for a deeper local run
SEED = 20251125  # any fixed value: the same requests on every run
REQUEST_TIMEOUT = 10  # seconds; no route should take longer on this tiny database
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


@dataclass
class Tally:
    requests: int = 0
    server_errors: list[str] = field(default_factory=list)
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # operation -> codes

    def lines(self) -> list[str]:
        return [f"  {label}: " + " ".join(f"{code}x{n}" for code, n in sorted(codes.items()))
                for label, codes in self.statuses.items()]


TALLY = Tally()


@dataclass
class Seeded:
    headers: dict[str, str]
    finished_job: str
    queued_job: str
    other_tenants_job: str
    file_id: str
    disposable_file_id: str  # the one a fuzzed DELETE may remove; the other stays for the reads
    disposable_job: str      # likewise for DELETE /v1/jobs/{id}: a finished job without downloads


@dataclass
class LiveAPI:
    url: str
    log_path: Path

    def tracebacks(self) -> str:
        """The server's log from its first traceback on (uvicorn logs a 500's traceback), or nothing."""
        log = self.log_path.read_text(errors="replace")
        return log[log.find("Traceback"):][-20_000:] if "Traceback" in log else ""


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory, tiny_model_dir, tiny_dataset_file) -> Iterator[dict[str, str]]:
    """A migrated Postgres database, Redis as the broker on a queue of its own, the tiny model and data allowed."""
    redis_url = os.environ.get("TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("TEST_REDIS_URL is not set (scripts/test.sh sets it)")
    root = tmp_path_factory.mktemp("fuzz")
    with empty_database("postgres", root) as url:
        migrate(url)
        env = {
            "DATABASE_URL": url,
            "BROKER_URL": redis_url,
            "QUEUE_NAME": f"fuzz-{uuid.uuid4().hex[:8]}",
            "ARTIFACT_DIR": str(root / "artifacts"),
            "MODEL_DIRS": str(tiny_model_dir.parent),
            "DATA_DIRS": str(tiny_dataset_file.parent),
        }
        with service_environment(env):
            yield env
            _drop_queue(env)


def _drop_queue(env: dict[str, str]) -> None:
    """Jobs the fuzzer created were sent to this run's queue, which no worker reads; remove it from Redis."""
    from service.queue import get_celery

    with get_celery().connection_for_write() as conn:
        conn.default_channel.queue_delete(env["QUEUE_NAME"])


@pytest.fixture(scope="module")
def live_api(fuzz_env, tmp_path_factory) -> Iterator[LiveAPI]:
    """`uvicorn api.main:app` on a free port."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("uvicorn") / "api.log"
    env = {**os.environ, **fuzz_env, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            pytest.fail(f"uvicorn exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, timeout=60, what="the API to answer /healthz")
    yield LiveAPI(base, log_path)
    stop_process(process)


@pytest.fixture(scope="module")
def seeded(fuzz_env, live_api, tiny_dataset_file, tmp_path_factory) -> Seeded:
    """A tenant's key and rows that exist, written the way the worker and the upload route write them."""
    from service.artifacts import archive_folder, record_archive
    from service.db import session_scope
    from service.keys import create_api_key, tenant_for_key
    from service.tables import Checkpoint, Job, JobEvent, Metric, RankSnapshot, utcnow

    with session_scope() as session:
        key = create_api_key(session, "fuzz-tenant")
        tenant_id = tenant_for_key(session, key).id
        other_id = tenant_for_key(session, create_api_key(session, "fuzz-other-tenant")).id
        spec, now = tiny_job_spec(), utcnow()
        finished = Job(tenant_id=tenant_id, spec=spec, status="succeeded", started_at=now, finished_at=now,
                       step=24, total_steps=24, current_budget=24.0, attempts=1)
        queued = Job(tenant_id=tenant_id, spec=spec, status="queued")
        other = Job(tenant_id=other_id, spec=spec, status="succeeded", finished_at=now)
        disposable = Job(tenant_id=tenant_id, spec=spec, status="cancelled", finished_at=now)
        session.add_all([finished, queued, other, disposable])
        session.flush()
        ranks = {f"bert.encoder.layer.{i}.attention.self.query": 2 for i in range(2)}
        for step in (5, 10, 15, 20, 24):
            session.add(Metric(job_id=finished.id, step=step, values={"loss": 0.7 - step / 100, "lr": 5e-3}))
            session.add(RankSnapshot(job_id=finished.id, step=step, budget=4.0, ranks=ranks, final=step == 24))
        session.add_all([JobEvent(job_id=finished.id, message="job queued"),
                         JobEvent(job_id=finished.id, message="adapter ready"),
                         JobEvent(job_id=queued.id, message="job queued"),
                         Checkpoint(job_id=finished.id, step=20, path=f"jobs/{finished.id}/checkpoint-20")])
        folder = tmp_path_factory.mktemp("adapter")
        (folder / "adapter_config.json").write_text('{"peft_type": "ADALORA"}')
        (folder / "adapter_model.safetensors").write_bytes(os.urandom(4096))
        record_archive(session, finished.id, archive_folder(finished.id, "adapter", folder))  # no merged: a 404
        job_ids, disposable_id = (finished.id, queued.id, other.id), disposable.id

    headers = {"Authorization": f"Bearer {key}"}
    file_ids = []
    for _ in range(2):
        upload = httpx.post(f"{live_api.url}/v1/files", headers=headers, timeout=30,
                            files={"file": ("sentiment.csv", tiny_dataset_file.read_bytes(), "text/csv")})
        assert upload.status_code == 201, upload.text
        file_ids.append(upload.json()["id"])
    # The first dry run imports torch and transformers into the API process (seconds on a loaded machine);
    # pay for it here, so that the fuzzed requests are timed on a warm server.
    warm = httpx.post(f"{live_api.url}/v1/jobs", headers=headers, timeout=180,
                      json={**tiny_job_spec(), "dry_run": True})
    assert warm.status_code == 200, warm.text
    return Seeded(headers, *job_ids, *file_ids, disposable_job=disposable_id)


@pytest.fixture(scope="module")
def keep_prefix_items() -> Iterator[None]:
    """Schemathesis 4.32.5 rewrites `prefixItems` (tuples, as in DryRunPublic.schedule) into the draft-4 array form
    of `items` when it prepares a response schema, then checks it with a JSON Schema 2020-12 validator, which
    rejects that form; our OpenAPI 3.1 schema is valid as served. Keeping `prefixItems` as they are makes the
    tuples checked exactly as declared."""
    from schemathesis.specs.openapi.adapter import responses
    from schemathesis.specs.openapi.converter import to_json_schema

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(responses, "to_json_schema", functools.partial(to_json_schema, convert_prefix_items=False))
        yield


@pytest.fixture(scope="module")
def api_schema(live_api, seeded, tiny_dataset_file, keep_prefix_items):
    config = schemathesis.Config.from_dict({"seed": SEED, "generation": {"deterministic": True}})
    schema = schemathesis.openapi.from_url(f"{live_api.url}/openapi.json", config=config)
    job_ids = [seeded.finished_job, seeded.queued_job, seeded.other_tenants_job]

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        """Mostly ids that exist instead of the generated ones, so the fuzzed requests reach past the 404."""
        deleting = context.operation.method == "delete"
        known = {"job_id": [seeded.disposable_job, *job_ids[1:]] if deleting else job_ids,
                 "file_id": [seeded.disposable_file_id if deleting else seeded.file_id]}
        names = sorted((path_parameters or {}).keys() & known.keys())
        swaps = [{**path_parameters, name: value} for name in names for value in known[name]]
        if not swaps:
            return st.just(path_parameters)
        return st.sampled_from([path_parameters, *swaps])

    valid_csv = tiny_dataset_file.read_bytes()

    @schema.hook
    def flatmap_body(context, body):
        """Often a body that gets past the first checks: a job on the tiny model and dataset that exist (with the
        generated sections kept, so the deeper checks and dry runs see fuzzed values), or a CSV that parses."""
        if not isinstance(body, dict):
            return st.just(body)
        if context.operation.label == "POST /v1/jobs":
            real = {**body, "model": "tiny-bert", "task": "sequence_classification",
                    "dataset": {"source": "server", "path": tiny_dataset_file.name}}
            return st.sampled_from([body, real, {**tiny_job_spec(), "dry_run": True}, tiny_job_spec()])
        if context.operation.label == "POST /v1/files" and "file" in body:
            return st.sampled_from([body, {**body, "file": valid_csv}])
        return st.just(body)

    return schema


def test_seeded_ids_reach_the_success_paths(live_api, seeded):
    """The ids the fuzzer swaps in are served, so its requests reach more than the 404s."""
    job, file = f"{live_api.url}/v1/jobs/{seeded.finished_job}", f"{live_api.url}/v1/files/{seeded.file_id}"
    for url in (job, f"{job}/metrics", f"{job}/ranks", f"{job}/events", f"{job}/checkpoints",
                f"{job}/metrics/columns", f"{job}/ranks/columns", f"{live_api.url}/v1/models",
                f"{job}/artifacts/adapter", file, f"{file}/content"):
        assert httpx.get(url, headers=seeded.headers, timeout=REQUEST_TIMEOUT).status_code == 200, url
    other = httpx.get(f"{live_api.url}/v1/jobs/{seeded.other_tenants_job}", headers=seeded.headers,
                      timeout=REQUEST_TIMEOUT)
    assert other.status_code == 404


# Requests the fuzzer (or, for the event ids, a look at the same pattern) found to be 500s, replayed on every run:
# an integer beyond the column it is compared with made Postgres refuse the query. Now a 422 naming the field.
OVERFLOWS = [
    ("/v1/files?offset=448805581738706796544", {}, "offset"),                  # OFFSET takes a BIGINT
    ("/v1/jobs?offset=517116224239580074009934405042176", {}, "offset"),
    ("/v1/jobs/{job}/metrics?after_step=10000000000000", {}, "after_step"),    # steps are INTEGER columns
    ("/v1/jobs/{job}/ranks?step=187876993030", {}, "step"),
    ("/v1/jobs/{job}/metrics/columns?after_step=10000000000000", {}, "after_step"),
    ("/v1/jobs/{job}/ranks/columns?after_step=187876993030", {}, "after_step"),
    ("/v1/jobs/{job}/events?after_id=9223372036854775808", {}, "after_id"),   # event ids are BIGINT
    ("/v1/jobs/{job}/events", {"Last-Event-ID": "9223372036854775808"}, "last-event-id"),
]


@pytest.mark.parametrize(("path", "headers", "field"), OVERFLOWS)
def test_integers_too_large_for_the_database_are_a_422(live_api, seeded, path, headers, field):
    url = live_api.url + path.format(job=seeded.finished_job)
    response = httpx.get(url, headers={**seeded.headers, **headers}, timeout=REQUEST_TIMEOUT)
    assert response.status_code == 422, response.text
    assert [error["field"] for error in response.json()["detail"]] == [field]


def test_api_answers_within_its_schema(api_schema, live_api, seeded, request, record_property):
    """Every operation, every phase schemathesis runs (examples, boundary coverage, random fuzzing)."""
    def call_and_check(case):
        response = case.call(headers=seeded.headers, timeout=REQUEST_TIMEOUT)
        TALLY.requests += 1
        TALLY.statuses[case.operation.label][response.status_code] += 1
        if response.status_code >= 500:
            TALLY.server_errors.append(f"{case.method} {case.formatted_path} -> {response.status_code}")
        case.validate_response(response, checks=CHECKS, headers=seeded.headers)

    hypothesis_settings = settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
                                   database=None, suppress_health_check=list(HealthCheck))
    failures, operations = {}, 0
    # The pytest plugin's `from_fixture` mode renames the test item through a private attribute this pytest (9.2)
    # no longer has, so the per-operation tests are built and run here instead; a failing operation does not stop
    # the others.
    for result in get_all_tests(schema=api_schema, test_func=call_and_check, settings=hypothesis_settings,
                                given_kwargs={}):
        operation, run = result.ok()
        operations += 1
        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # check failures (a group), transport errors: reported below
            failures[operation.label] = f"{type(exc).__name__}: {exc}"

    summary = (f"schemathesis {schemathesis.__version__}: {TALLY.requests} requests fuzzed over {operations} "
               f"operations, {len(TALLY.server_errors)} server errors")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # shown in CI logs even when the test passes
            reporter.write_line(summary)
            for line in TALLY.lines():
                reporter.write_line(line)
    record_property("requests_fuzzed", TALLY.requests)
    record_property("server_errors", len(TALLY.server_errors))
    assert operations >= 15, "the schema lost operations"
    assert not failures, "\n\n".join([*(f"{label}\n{error}" for label, error in failures.items()),
                                       f"server log:\n{live_api.tracebacks()}"])
