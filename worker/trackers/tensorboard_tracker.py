"""TensorBoard: event files under TENSORBOARD_DIR/<job id> (`tensorboard --logdir $TENSORBOARD_DIR` shows every
job). A resumed job purges what the earlier attempt wrote past its checkpoint, so each step shows once."""

from __future__ import annotations

import json

from torch.utils.tensorboard import SummaryWriter

from service.jobspec import Integration, JobSpec
from service.settings import get_settings
from worker.trackers import flat_spec


def open_run(integration: Integration, job_id: str, spec: JobSpec) -> TensorboardTracker:
    folder = get_settings().tensorboard_dir.expanduser().resolve() / job_id
    folder.mkdir(parents=True, exist_ok=True)
    return TensorboardTracker(str(folder), flat_spec(spec))


class TensorboardTracker:
    def __init__(self, folder: str, spec: dict[str, str]) -> None:
        self.folder, self.spec = folder, spec
        self.writer: SummaryWriter | None = None

    def _writer(self, step: int) -> SummaryWriter:
        if self.writer is None:  # opened at this attempt's first step, which is where the purge starts
            self.writer = SummaryWriter(self.folder, purge_step=step)
            self.writer.add_text("spec", "```\n" + json.dumps(self.spec, indent=1) + "\n```", step)
        return self.writer

    def start(self, plan: dict) -> None:
        pass  # the first step opens the writer: only then is this attempt's first step known

    def metrics(self, step: int, values: dict[str, float]) -> None:
        writer = self._writer(step)
        for name, value in values.items():
            writer.add_scalar(name, value, step)

    def ranks(self, step: int, budget: float, ranks: dict[str, int], params: int, final: bool) -> None:
        writer = self._writer(step)
        for module, rank in ranks.items():
            writer.add_scalar(f"ranks/{module}", rank, step)
        writer.add_scalar("ranks/adapter_params", params, step)
        writer.add_scalar("ranks/budget", budget, step)
        if final:
            writer.add_text("final_rank_pattern", json.dumps(ranks), step)

    def finish(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()
