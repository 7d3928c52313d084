"""The runner in this process (no Celery): progress is written in batches, failures get readable messages."""

from __future__ import annotations

import pytest
from sqlalchemy import event, select

from service.db import session_scope
from service.settings import get_settings
from service.tables import Artifact, Job, JobEvent, Metric, RankSnapshot
from tests.conftest import tiny_job_spec
from tests.helpers import new_job
from tests.worker.helpers import succeeded
from worker.runner import claim_and_run


def count_commits(engine) -> list[int]:
    commits = [0]
    event.listen(engine, "commit", lambda _conn: commits.__setitem__(0, commits[0] + 1))
    return commits


@pytest.fixture
def step_driven_flushes(monkeypatch):
    """Flush on the step count only, so the number of commits does not depend on this machine's speed."""
    monkeypatch.setenv("METRICS_FLUSH_SECONDS", "3600")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def test_progress_is_written_in_batches_not_per_step(engine, step_driven_flushes):
    job_id = new_job(tiny_job_spec(max_steps=30))
    commits = count_commits(engine)
    assert claim_and_run(job_id) == "succeeded"
    with session_scope() as session:
        job = session.get(Job, job_id)
        steps = session.scalars(select(Metric.step).where(Metric.job_id == job_id).order_by(Metric.step)).all()
        snapshots = session.scalars(select(RankSnapshot).where(RankSnapshot.job_id == job_id)
                                    .order_by(RankSnapshot.step)).all()
        kinds = session.scalars(select(Artifact.kind).where(Artifact.job_id == job_id)).all()
    assert (job.status, job.step, job.total_steps, job.error) == ("succeeded", 30, 30, None)
    assert steps == list(range(0, 31))  # step 0: the evaluation before training
    # 30 steps flushed every 5 (METRICS_FLUSH_STEPS), plus about ten lifecycle commits (claim, start,
    # export, cleanup, finish) that do not grow with the run; one commit per row would be 30+ for metrics alone.
    assert commits[0] <= 30 // 5 + 10, commits[0]
    assert snapshots[0].step == 0 and snapshots[-1].final
    assert sorted(kinds) == ["adapter", "lora", "lora-serving", "merged"]


def test_the_job_records_the_tokens_its_run_trained(engine):
    job_id = new_job(tiny_job_spec(max_steps=12))
    succeeded(job_id)
    with session_scope() as session:
        job = session.get(Job, job_id)
        metrics = dict(session.execute(select(Metric.step, Metric.values).where(Metric.job_id == job_id)).all())
    assert "tokens" not in metrics[0]  # step 0: the evaluation before training
    counts = [metrics[step]["tokens"] for step in range(1, 13)]
    assert 0 < counts[0] and counts == sorted(set(counts))  # every step adds its batch's tokens
    assert job.trained_tokens == counts[-1] and all(metrics[step]["tokens_per_s"] > 0 for step in range(1, 13))


def test_unreadable_labels_fail_with_a_message_naming_the_column(engine, tiny_dataset_file):
    spec = tiny_job_spec()
    spec["dataset"]["label_column"] = "missing"
    job_id = new_job(spec)
    assert claim_and_run(job_id) == "failed"
    with session_scope() as session:
        job = session.get(Job, job_id)
        last_event = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id)
                                     .order_by(JobEvent.id.desc())).first()
    assert "dataset.label_column" in job.error and "'missing'" in job.error
    assert last_event.level == "error" and last_event.message == job.error


def test_a_job_already_claimed_is_not_run_again(engine):
    job_id = new_job(tiny_job_spec(max_steps=12))
    assert claim_and_run(job_id) == "succeeded"
    assert claim_and_run(job_id) is None  # a redelivered message for a finished job does nothing
    with session_scope() as session:
        assert session.get(Job, job_id).attempts == 1


def test_a_schedule_that_does_not_fit_the_run_fails_before_loading_weights(engine):
    spec = tiny_job_spec()
    del spec["training"]["max_steps"]  # one epoch of 72 rows / 8 = 9 steps; tinit 4 + tfinal 6 do not fit
    job_id = new_job(spec)
    assert claim_and_run(job_id) == "failed"
    with session_scope() as session:
        error = session.get(Job, job_id).error
    assert error.startswith("configuration: tinit + tfinal (4 + 6)") and "train longer" in error


def test_a_stored_spec_this_worker_refuses_across_fields_fails_with_the_readable_message(engine):
    job_id = new_job(tiny_job_spec(max_steps=6))  # stored as is: the API would have refused it
    assert claim_and_run(job_id) == "failed"
    with session_scope() as session:
        error = session.get(Job, job_id).error
    assert error == ("the job spec is not valid on this worker: schedule: tinit + tfinal (4 + 6 steps) must be below "
                     "training.max_steps (6): lower tinit or tfinal, or train longer")


def test_a_model_without_a_form_for_the_task_fails_naming_what_to_use(engine):
    spec = tiny_job_spec()
    spec["task"] = "seq2seq"  # the tiny BERT has no encoder-decoder form
    spec["dataset"].update(source_column="sentence", target_column="label")
    job_id = new_job(spec)
    assert claim_and_run(job_id) == "failed"
    with session_scope() as session:
        error = session.get(Job, job_id).error
    assert error == ("model 'tiny-bert' is a bert model, which has no seq2seq form in transformers; "
                     "use an encoder-decoder model (T5, BART, ...)"), error


def test_failures_we_can_name_get_a_fix_in_the_message():
    import torch

    from adalora_core import ConfigError
    from service.dataset import DataError
    from worker.runner import describe_failure

    oom = describe_failure(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), 7)
    assert oom.startswith("out of GPU memory at step 7") and "training.batch_size" in oom
    assert describe_failure(ConfigError("lower target_r"), 0) == "configuration: lower target_r"
    assert describe_failure(DataError("set dataset.text_column"), 0) == "set dataset.text_column"
    assert describe_failure(RuntimeError("boom"), 3).startswith("internal error at step 3: RuntimeError: boom")


def test_a_causal_lm_job_trains_and_reports_perplexity(engine, tiny_gpt2_dir, tiny_dataset_file):
    import json
    import tarfile

    from service.store import get_store

    spec = tiny_job_spec(max_steps=12, max_seq_len=16)  # 72 short sentences pack into 30 blocks of 16
    spec.update(model="tiny-gpt2", task="causal_lm")
    job_id = new_job(spec)
    assert claim_and_run(job_id) == "succeeded"
    with session_scope() as session:
        last = session.scalars(select(Metric).where(Metric.job_id == job_id).order_by(Metric.step.desc())).first()
        adapter = session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == "adapter"))
    assert last.step == 12 and last.values["eval_perplexity"] > 1
    with tarfile.open(get_store().local_copy(adapter.path)) as tar:
        config = json.load(tar.extractfile("adapter/adapter_config.json"))
    assert config["task_type"] == "CAUSAL_LM" and config["base_model_name_or_path"] == "tiny-gpt2"


def test_a_job_held_by_a_live_worker_is_busy_not_skipped(engine):
    from service.lifecycle import claim_job
    from worker.runner import JobBusy

    job_id = new_job(tiny_job_spec())
    with session_scope() as session:
        assert claim_job(session, job_id, "other", None, stale_after_seconds=60)
    with pytest.raises(JobBusy):
        claim_and_run(job_id)


def test_the_heartbeat_thread_stamps_the_row_while_the_run_is_busy(engine):
    from service.lifecycle import claim_job
    from tests.conftest import wait_for
    from worker.heartbeat import heartbeat

    job_id = new_job(tiny_job_spec())
    with session_scope() as session:
        claim_job(session, job_id, "me", None, stale_after_seconds=60)
        first = session.get(Job, job_id).heartbeat_at

    def newer_heartbeat():
        with session_scope() as session:
            return session.get(Job, job_id).heartbeat_at > first

    with heartbeat(job_id, interval=0.05):
        wait_for(newer_heartbeat, 10, interval=0.05, what="a heartbeat from the thread")


def test_a_job_scores_the_base_model_at_step_0_and_reports_its_gain(engine):
    job_id = new_job(tiny_job_spec(max_steps=24))
    assert claim_and_run(job_id) == "succeeded"
    with session_scope() as session:
        metrics = dict(session.execute(select(Metric.step, Metric.values).where(Metric.job_id == job_id)).all())
        events = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
    assert set(metrics[0]) == {"eval_loss", "eval_accuracy", "eval_f1"} or "eval_loss" in metrics[0]
    assert "loss" not in metrics[0]  # no step was trained yet
    before = next(e for e in events if e.startswith("evaluation before training (step 0)"))
    final = next(e for e in events if e.startswith("evaluation at step 24/24"))
    change = metrics[24]["eval_loss"] - metrics[0]["eval_loss"]
    assert f"{metrics[0]['eval_loss']:.4g}" in before and f"({change:+.4g} from step 0)" in final


def test_learning_rate_auto_records_the_rate_chosen_and_its_range_test_on_the_job(engine):
    job_id = new_job(tiny_job_spec(max_steps=24, learning_rate="auto"))
    assert claim_and_run(job_id) == "succeeded"
    with session_scope() as session:
        job = session.get(Job, job_id)
        events = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
    probe = job.lr_probe
    assert probe["steps"] == 16 and len(probe["lrs"]) == len(probe["losses"]) == 16
    assert 1e-5 <= probe["learning_rate"] <= 1e-2 and probe["learning_rate"] == pytest.approx(probe["lowest_at"] / 10,
                                                                                               rel=1e-2)
    assert any(e.startswith(f"learning rate auto: {probe['learning_rate']:.3g}") for e in events)
