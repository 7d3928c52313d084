"""The `adalora` console script, run as a user runs it, against a live API and a real worker: files, a job
from a YAML spec or flags, --dry-run, --follow to the end (succeeded, failed, cancelled: exit 0, 1, 3),
Ctrl+C while following, events, metrics, the ranks heatmap, checkpoints, downloads, --json, and errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_job_spec, wait_for

ADALORA = Path(sys.executable).with_name("adalora")  # the installed console script
TIMEOUT = 300


@pytest.fixture(scope="module")
def cli_env(live_service) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADALORA_")}
    return {**env, "ADALORA_API_URL": live_service.url, "ADALORA_API_KEY": live_service.new_key(),
            "COLUMNS": "120", "NO_COLOR": "1"}


def adalora(env: dict[str, str], *args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([str(ADALORA), *args], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    if check is not None:
        assert result.returncode == check, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def adalora_json(env: dict[str, str], *args: str):
    return json.loads(adalora(env, *args, "--json").stdout)


def test_files_commands(cli_env, tiny_dataset_file):
    uploaded = adalora_json(cli_env, "files", "upload", str(tiny_dataset_file))
    assert uploaded["row_count"] == 96 and uploaded["id"].startswith("file-")
    listed = adalora(cli_env, "files", "list").stdout
    assert uploaded["id"] in listed and "sentiment.csv" in listed
    details = adalora(cli_env, "files", "get", uploaded["id"]).stdout
    assert "sentence" in details and "positive" in details  # the columns and the label values
    assert adalora_json(cli_env, "files", "delete", uploaded["id"]) == {"id": uploaded["id"], "deleted": True}
    missing = adalora(cli_env, "files", "get", uploaded["id"], check=1)
    assert "404" in missing.stderr and uploaded["id"] in missing.stderr


def test_a_job_from_a_yaml_spec_followed_to_the_end(cli_env, tmp_path, tiny_model_dir):
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({**tiny_job_spec(), "name": "from-yaml"}))
    plan = adalora(cli_env, "jobs", "create", str(spec), "--dry-run").stdout
    assert "adapter params" in plan and "nothing is queued" not in plan and "a dry run only plans" in plan
    assert "peak memory" in plan and "checkpointing off" in plan
    auto = adalora(cli_env, "jobs", "create", str(spec), "--dry-run", "--gpu", "1GB", "--batch-size", "4096").stdout
    assert "checkpointing on" in auto and "auto: on on the 1GB" in auto and "does not fit" not in auto, auto
    without = tmp_path / "without-checkpointing.yaml"
    spec_without = tiny_job_spec()
    spec_without["training"] = {**spec_without["training"], "gradient_checkpointing": False}
    without.write_text(yaml.safe_dump(spec_without))
    on_a_card = adalora(cli_env, "jobs", "create", str(without), "--dry-run", "--gpu", "1GB",
                        "--batch-size", "4096").stdout
    assert "1GB" in on_a_card and "does not fit" in on_a_card and "training.gradient_checkpointing true" in on_a_card
    assert "--dry-run" in adalora(cli_env, "jobs", "create", str(spec), "--gpu", "T4", check=2).stderr
    assert adalora_json(cli_env, "jobs", "create", str(spec), "--dry-run", "--max-steps", "48")["total_steps"] == 48

    followed = adalora(cli_env, "jobs", "create", str(spec), "--follow")
    out = followed.stdout
    assert "Following" in out and "✔ succeeded" in out and "job queued" in out
    assert "step 24/24" in out and "loss" in out and "eval accuracy" in out and "budget" in out
    assert "evaluation before training (step 0)" in out  # the event, and the end line's gain over it:
    assert "from step 0)" in out.split("✔ succeeded", 1)[1]
    job_id = out.split("Following ", 1)[1].split()[0]

    job = adalora_json(cli_env, "jobs", "get", job_id)
    assert (job["status"], job["name"], job["step"]) == ("succeeded", "from-yaml", 24)
    shown = " ".join(adalora(cli_env, "jobs", "get", job_id).stdout.split())
    assert f"learning rate {job['spec']['training']['learning_rate']:g}" in shown
    assert job["trained_tokens"] > 0 and f"trained tokens {job['trained_tokens']:,} (" in shown
    assert "tokens/s at step 24)" in shown
    assert job_id in adalora(cli_env, "jobs", "list", "--status", "succeeded").stdout
    events = adalora(cli_env, "jobs", "events", job_id).stdout
    assert "job queued" in events and "succeeded" in events
    streamed = adalora(cli_env, "jobs", "events", job_id, "--follow", "--json").stdout.splitlines()
    assert json.loads(streamed[0])["message"] == "job queued"
    metrics = adalora_json(cli_env, "jobs", "metrics", job_id)
    assert [m["step"] for m in metrics] == list(range(0, 25))  # 0: the evaluation before training
    assert len(adalora_json(cli_env, "jobs", "metrics", job_id, "--last", "3")) == 3
    assert adalora_json(cli_env, "jobs", "checkpoints", job_id) == []

    heatmap = adalora(cli_env, "jobs", "ranks", job_id).stdout
    assert "layer 0" in heatmap and "layer 1" in heatmap and "final pattern" in heatmap
    assert "query" in heatmap and "ffn_in" in heatmap
    first = adalora(cli_env, "jobs", "ranks", job_id, "--step", "0").stdout
    assert "ranks at step 0" in first and " 4 " in first  # init_r everywhere before pruning
    assert "snapshots" in adalora(cli_env, "jobs", "ranks", job_id, "--timeline").stdout
    assert adalora_json(cli_env, "jobs", "ranks", job_id)["final_rank_pattern"]

    out_dir = tmp_path / "adapter"
    downloaded = adalora(cli_env, "download", job_id, "adapter", "-o", str(out_dir)).stdout
    assert "verified" in downloaded and (out_dir / "adapter_config.json").is_file()
    tar = adalora_json(cli_env, "download", job_id, "merged", "--no-unpack", "-o", str(tmp_path / "m.tar"))
    assert Path(tar["archive"]).stat().st_size == tar["size"]
    again = adalora(cli_env, "download", job_id, "adapter", "-o", str(out_dir), check=1)
    assert "not an empty folder" in again.stderr


def test_flags_upload_a_local_file_and_a_failed_job_exits_1(cli_env, tiny_dataset_file):
    spec = adalora_json(cli_env, "jobs", "create", "--model", "tiny-bert", "--task", "sequence_classification",
                        "--train-file", str(tiny_dataset_file), "--init-r", "4", "--target-r", "2",
                        "--max-steps", "24", "--set", "schedule.tinit=4", "--set", "schedule.tfinal=6",
                        "--dry-run")
    assert spec["total_steps"] == 24 and spec["tinit"] == 4
    # A label column the file lacks passes the flags, and the server names the problem.
    bad = adalora(cli_env, "jobs", "create", "--model", "tiny-bert", "--task", "sequence_classification",
                  "--train-file", str(tiny_dataset_file), "--label-column", "stars", check=1)
    assert "stars" in bad.stderr and "dataset.label_column" in bad.stderr

    # The model is not on the server and the hub is offline: the worker fails the job.
    failed = adalora(cli_env, "jobs", "create", "--model", "nobody/no-such-model", "--task",
                     "sequence_classification", "--train-file", str(tiny_dataset_file), "--max-steps", "24",
                     "--set", "schedule.tinit=4", "--set", "schedule.tfinal=6", "--follow", check=None)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "✘ failed" in failed.stdout


def test_a_cancelled_job_exits_3_and_ctrl_c_stops_only_the_following(cli_env, tmp_path):
    job = adalora_json(cli_env, "jobs", "create", "--server-data", "sentiment.csv", "--model", "tiny-bert",
                       "--task", "sequence_classification", "--max-steps", "5000")
    out_path = tmp_path / "follow.out"
    with open(out_path, "w") as out_file:
        follower = subprocess.Popen([str(ADALORA), "jobs", "follow", job["id"]], env=cli_env, stdout=out_file,
                                    stderr=subprocess.PIPE, text=True)
    wait_for(lambda: adalora_json(cli_env, "jobs", "get", job["id"])["step"] > 0, TIMEOUT, what="training")
    # Ctrl+C once it follows: before that, the interrupt would land while Python is still importing it.
    wait_for(lambda: "Following" in out_path.read_text(), TIMEOUT, what="the CLI to start following")
    follower.send_signal(signal.SIGINT)
    _, err = follower.communicate(timeout=60)
    out = out_path.read_text()
    assert follower.returncode == 130 and "the job goes on" in err, out + err
    time.sleep(1)
    assert adalora_json(cli_env, "jobs", "get", job["id"])["status"] == "running"

    assert adalora_json(cli_env, "jobs", "cancel", job["id"])["status"] in ("cancelling", "cancelled")
    cancelled = adalora(cli_env, "jobs", "follow", job["id"], check=3)
    assert "■ cancelled" in cancelled.stdout
    assert adalora(cli_env, "jobs", "follow", job["id"], "--json", check=3).stdout.count('"cancelled"') == 1

    # A finished job can be deleted, once; what is gone is a clear error, not a traceback.
    assert adalora_json(cli_env, "jobs", "delete", job["id"]) == {"id": job["id"], "deleted": True}
    gone = adalora(cli_env, "jobs", "get", job["id"], check=1)
    assert "404" in gone.stderr or "no job" in gone.stderr


def test_usage_problems_exit_2_with_what_to_fix(cli_env, tmp_path):
    missing = adalora(cli_env, "jobs", "create", str(tmp_path / "nope.yaml"), check=2)
    assert "cannot read the spec file" in missing.stderr
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert "must hold one mapping" in adalora(cli_env, "jobs", "create", str(tmp_path / "list.yaml"),
                                              check=2).stderr
    (tmp_path / "broken.yaml").write_text("model: [unclosed\n")
    assert "not valid YAML" in adalora(cli_env, "jobs", "create", str(tmp_path / "broken.yaml"), check=2).stderr
    assert "--model" in adalora(cli_env, "jobs", "create", "--task", "causal_lm", check=2).stderr
    assert "neither a local file" in adalora(cli_env, "jobs", "create", "--model", "m", "--task", "causal_lm",
                                             "--train-file", "nothing-here.jsonl", check=2).stderr
    assert "FIELD=VALUE" in adalora(cli_env, "jobs", "create", "--model", "m", "--task", "causal_lm",
                                    "--server-data", "x.csv", "--set", "oops", check=2).stderr
    no_key = {k: v for k, v in cli_env.items() if k != "ADALORA_API_KEY"}
    assert "ADALORA_API_KEY" in adalora(no_key, "jobs", "list", check=1).stderr
    bad_key = {**cli_env, "ADALORA_API_KEY": "ada_nope_nope"}
    assert "401" in adalora(bad_key, "jobs", "list", check=1).stderr


def test_on_a_terminal_follow_draws_a_progress_bar(cli_env):
    """Under a pseudo-terminal rich draws the bar in place (a log gets plain lines, tested above)."""
    import pty

    job = adalora_json(cli_env, "jobs", "create", "--server-data", "sentiment.csv", "--model", "tiny-bert",
                       "--task", "sequence_classification", "--max-steps", "24", "--set", "schedule.tinit=4",
                       "--set", "schedule.tfinal=6")
    leader, follower = pty.openpty()
    env = {k: v for k, v in cli_env.items() if k != "NO_COLOR"}
    process = subprocess.Popen([str(ADALORA), "jobs", "follow", job["id"]], env={**env, "TERM": "xterm-256color"},
                               stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process has exited
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(TIMEOUT) == 0
    os.close(leader)
    text = output.decode(errors="replace")
    assert "━" in text and "24/24" in text and "\x1b[" in text  # the bar, complete, with colours and redraws
    assert "succeeded" in text and "step 24/24 ·" in text
