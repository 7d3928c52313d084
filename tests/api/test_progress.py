"""Following a job: its event log (JSON pages and Server-Sent Events), metrics and rank snapshots."""

import json
import threading

import pytest

from service.tables import Checkpoint, Job, JobEvent, Metric, RankSnapshot, utcnow


def add_events(sessions, job_id, *messages, level="info"):
    with sessions() as session:
        session.add_all([JobEvent(job_id=job_id, level=level, message=m) for m in messages])
        session.commit()


def parse_sse(text: str) -> list[dict]:
    """The events of an SSE body, each as {field: value} (comments and pings dropped)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if fields:
            events.append(fields)
    return events


def test_event_pages_follow_after_id(client, alice, seed_job, sessions):
    job_id = seed_job(alice, "running")
    add_events(sessions, job_id, *[f"event {i}" for i in range(5)])
    url = f"/v1/jobs/{job_id}/events"
    first = client.get(url, params={"limit": 3}, headers=alice).json()
    assert [e["message"] for e in first["data"]] == ["event 0", "event 1", "event 2"] and first["has_more"]
    second = client.get(url, params={"limit": 3, "after_id": first["data"][-1]["id"]}, headers=alice).json()
    assert [e["message"] for e in second["data"]] == ["event 3", "event 4"] and not second["has_more"]


def test_sse_delivers_events_live_and_ends_with_the_job(client, alice, seed_job, sessions):
    job_id = seed_job(alice, "running")
    add_events(sessions, job_id, "started")
    first_event_seen, seen_while_running = threading.Event(), []

    def worker_progress():  # what a worker does meanwhile, once the client saw the first event
        seen_while_running.append(first_event_seen.wait(10))
        add_events(sessions, job_id, "step 10: loss 0.7")
        with sessions() as session:
            session.add(JobEvent(job_id=job_id, level="info", message="succeeded"))
            job = session.get(Job, job_id)
            job.status, job.finished_at = "succeeded", utcnow()
            session.commit()

    writer = threading.Thread(target=worker_progress)
    writer.start()
    lines = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers={**alice, "Accept": "text/event-stream"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            lines.append(line)
            if "started" in line:
                first_event_seen.set()  # streamed while the job still runs, not buffered until the end
    writer.join()
    assert seen_while_running == [True], "the first event was not delivered before the job finished"
    events = parse_sse("\n".join(lines))
    messages = [json.loads(e["data"])["message"] for e in events if "event" not in e]
    assert messages == ["started", "step 10: loss 0.7", "succeeded"]
    ids = [int(e["id"]) for e in events if "id" in e]
    assert ids == sorted(ids)
    assert events[-1] == {"event": "end", "data": '{"status": "succeeded"}'}


def test_sse_reconnect_with_last_event_id_skips_what_was_seen(client, alice, seed_job, sessions):
    job_id = seed_job(alice, "failed")
    add_events(sessions, job_id, "a", "b", "c")
    seen = client.get(f"/v1/jobs/{job_id}/events", headers=alice).json()["data"][0]["id"]
    response = client.get(f"/v1/jobs/{job_id}/events",
                          headers={**alice, "Accept": "text/event-stream", "Last-Event-ID": str(seen)})
    events = parse_sse(response.text)
    assert [json.loads(e["data"])["message"] for e in events[:-1]] == ["b", "c"]
    assert events[-1]["event"] == "end" and "failed" in events[-1]["data"]


def test_metrics_page_after_step(client, alice, seed_job, sessions):
    job_id = seed_job(alice, "running")
    with sessions() as session:
        session.add_all([Metric(job_id=job_id, step=s, values={"loss": 2.0 - s / 100, "budget": 48.0})
                         for s in range(5, 55, 5)])
        session.commit()
    url = f"/v1/jobs/{job_id}/metrics"
    page = client.get(url, params={"after_step": 20, "limit": 4}, headers=alice).json()
    assert [m["step"] for m in page["data"]] == [25, 30, 35, 40] and page["has_more"]
    assert page["data"][0]["values"] == {"loss": 1.75, "budget": 48.0}
    tail = client.get(url, params={"after_step": 40}, headers=alice).json()
    assert [m["step"] for m in tail["data"]] == [45, 50] and not tail["has_more"]


@pytest.fixture
def ranked_job(alice, seed_job, sessions):
    job_id = seed_job(alice, "succeeded")
    snapshots = [(4, 16.0, {"a": 4, "b": 4, "c": 4, "d": 4}, False),
                 (10, 11.0, {"a": 4, "b": 3, "c": 2, "d": 2}, False),
                 (16, 8.0, {"a": 4, "b": 2, "c": 1, "d": 1}, True)]
    with sessions() as session:
        session.add_all([RankSnapshot(job_id=job_id, step=step, budget=budget, ranks=ranks, final=final)
                         for step, budget, ranks, final in snapshots])
        session.commit()
    return job_id


def test_ranks_lists_snapshots_and_the_final_pattern(client, alice, ranked_job):
    body = client.get(f"/v1/jobs/{ranked_job}/ranks", headers=alice).json()
    assert [(s["step"], s["budget"]) for s in body["data"]] == [(4, 16.0), (10, 11.0), (16, 8.0)]
    assert body["final_rank_pattern"] == {"a": 4, "b": 2, "c": 1, "d": 1}


def test_ranks_at_one_step(client, alice, ranked_job):
    body = client.get(f"/v1/jobs/{ranked_job}/ranks", params={"step": 10}, headers=alice).json()
    assert body["data"] == [{"step": 10, "budget": 11.0, "ranks": {"a": 4, "b": 3, "c": 2, "d": 2},
                             "adapter_params": None, "final": False}]
    missing = client.get(f"/v1/jobs/{ranked_job}/ranks", params={"step": 11}, headers=alice)
    assert missing.status_code == 404 and "step 11" in missing.json()["detail"]


def test_ranks_before_any_allocation(client, alice, seed_job):
    body = client.get(f"/v1/jobs/{seed_job(alice, 'queued')}/ranks", headers=alice).json()
    assert body == {"data": [], "final_rank_pattern": None}


def test_checkpoints_list_steps_without_server_paths(client, alice, seed_job, sessions):
    job_id = seed_job(alice, "running")
    with sessions() as session:
        session.add_all([Checkpoint(job_id=job_id, step=s, path=f"/srv/ckpt/{job_id}/{s}.pt") for s in (20, 10)])
        session.commit()
    body = client.get(f"/v1/jobs/{job_id}/checkpoints", headers=alice).json()
    assert [c["step"] for c in body["data"]] == [10, 20]
    assert "/srv/ckpt" not in json.dumps(body)
