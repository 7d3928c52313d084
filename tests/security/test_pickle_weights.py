"""A model folder whose weights exist only as a pickle (pytorch_model.bin) is refused with a message that says
why, and the pickle is never loaded: the file used here would create a marker file if it were unpickled."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from service.db import session_scope
from service.tables import Job, JobEvent
from tests.conftest import tiny_job_spec
from tests.helpers import new_job


class TouchOnLoad:
    """Unpickling this calls Path.touch(marker): a harmless stand-in for code a hostile pickle would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.fixture
def pickle_model(tmp_path, tiny_model_dir, env_override) -> tuple[str, Path]:
    """MODEL_DIRS with `pickled`: the tiny model's config and tokenizer, and only a hostile pytorch_model.bin."""
    models, marker = tmp_path / "models", tmp_path / "unpickled"
    folder = shutil.copytree(tiny_model_dir, models / "pickled")
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(TouchOnLoad(marker)))
    pickle.loads((folder / "pytorch_model.bin").read_bytes())  # the marker works ...
    assert marker.exists()
    marker.unlink()  # ... and is gone again before the test
    env_override(MODEL_DIRS=str(models))
    return "pickled", marker


def test_a_job_on_pickle_only_weights_is_refused_at_submission(client, alice, pickle_model):
    model, marker = pickle_model
    response = client.post("/v1/jobs", json={**tiny_job_spec(), "model": model}, headers=alice)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["field"] == "model"
    assert "only pickle weights (pytorch_model.bin)" in error["message"] and "safetensors only" in error["message"]
    assert not marker.exists()


def test_a_worker_given_such_a_job_anyway_fails_it_without_loading_the_pickle(client, pickle_model):
    """As if the folder's safetensors were swapped for a pickle after the job was accepted."""
    from worker.runner import claim_and_run

    model, marker = pickle_model
    job_id = new_job({**tiny_job_spec(), "model": model}, "pickle")
    assert claim_and_run(job_id) == "failed"
    with session_scope() as session:
        error = session.get(Job, job_id).error
        events = session.query(JobEvent.message).filter(JobEvent.job_id == job_id).all()
    assert "only pickle weights (pytorch_model.bin)" in error and "safetensors only" in error, error
    assert any(error in message for (message,) in events)
    assert not marker.exists()


def test_the_core_loader_refuses_the_pickle_too(pickle_model, tmp_path):
    """The last line of defence, under the spec check: build_model reads safetensors only."""
    from adalora_core import build_model

    _, marker = pickle_model
    with pytest.raises(OSError, match="safetensors"):
        build_model(str(tmp_path / "models" / "pickled"), "sequence_classification")
    assert not marker.exists()
