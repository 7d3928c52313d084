"""The README's first real job, run as written on a fresh clone: `DATA_DIRS=../shared/data make serve` (which
installs into the clone's own .venv), then the second terminal's commands in order (the curl calls, then the
`adalora` CLI), checking that every one exits 0 and that the downloads are what they say.

The commands are read from the README itself, so the test follows any change to them."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tarfile

import httpx
import pytest

from tests.conftest import REPO, wait_for

SHARED = REPO.parent / "shared"
FIRST_JOB = ("A first real job", "The spec above leaves the budget out")
SERVICE_ENV = ("DATABASE_URL", "ARTIFACT_DIR", "MODEL_DIRS", "DATA_DIRS", "BROKER_URL", "QUEUE_NAME", "PORT",
               "OMP_NUM_THREADS", "ADALORA_API_URL", "ADALORA_API_KEY")


def first_job_commands(readme: str) -> list[str]:
    """The bash blocks of the README's first-job section, in order."""
    start, end = readme.index(FIRST_JOB[0]), readme.index(FIRST_JOB[1])
    return re.findall(r"```bash\n(.*?)```", readme[start:end], flags=re.S)


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_readme_lists_the_serve_command_then_the_client_commands():
    blocks = first_job_commands((REPO / "README.md").read_text())
    assert blocks[0].strip() == "DATA_DIRS=../shared/data make serve"
    assert "curl" in blocks[1] and "adalora jobs follow" in blocks[2]


@pytest.mark.slow
@pytest.mark.ci
def test_the_readme_first_job_works_as_written_on_a_fresh_clone(tmp_path):
    if port_taken(8000):
        pytest.skip("port 8000 is in use here, and the README's commands use it")
    if not (SHARED / "data" / "glue" / "SST-2" / "train.tsv").is_file():
        pytest.skip(f"no shared data at {SHARED}")
    clone = tmp_path / "main"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    (tmp_path / "shared").symlink_to(SHARED)  # the layout the README assumes: shared/ beside the checkout
    serve, *second_terminal = first_job_commands((clone / "README.md").read_text())
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_ENV}
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(["bash", "-c", serve], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        def listening() -> bool:
            assert server.poll() is None, log_path.read_text(errors="replace")[-3000:]
            try:
                return httpx.get("http://127.0.0.1:8000/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(listening, 900, interval=1, what="`make serve` to install and listen")  # the install is most of it
        script = "set -euo pipefail\n" + "\n".join(second_terminal)
        result = subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True,
                                timeout=1800)
        assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        out = result.stdout
        assert '"dry_run":true' in out.replace(" ", "") and "✔ succeeded" in out and "layer 5" in out
        for archive in ("adapter.tar", "merged.tar"):
            with tarfile.open(clone / archive) as tar:
                assert tar.getnames()
        config = json.loads((clone / "minilm-sst2-adapter" / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
        print(out[-3000:])
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # as Ctrl+C in the first terminal: the API and its worker stop
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        print(log_path.read_text(errors="replace")[-2000:])
