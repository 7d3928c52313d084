"""Weights & Biases: one run per job in `project` (default adalora), its id derived from the job id so that a
resumed job resumes the same run. WANDB_API_KEY (and WANDB_BASE_URL for a private server) come from the
worker's environment; WANDB_MODE=offline writes the run under WANDB_DIR to sync later."""

from __future__ import annotations

import wandb

from service.jobspec import Integration, JobSpec
from worker.trackers import flat_spec, run_name


def open_run(integration: Integration, job_id: str, spec: JobSpec) -> WandbTracker:
    settings = wandb.Settings(console="off", silent=True, disable_git=True, save_code=False,
                              x_disable_stats=True)  # a worker's own log and GPU stats stay out of it
    run = wandb.init(project=integration.project or "adalora", name=run_name(integration, job_id, spec),
                     id=f"adalora-{job_id}", resume="allow", config=flat_spec(spec), reinit="create_new",
                     settings=settings)
    return WandbTracker(run)


class WandbTracker:
    def __init__(self, run) -> None:
        self.run = run

    def start(self, plan: dict) -> None:
        self.run.config.update({f"plan.{k}": v for k, v in plan.items() if k != "ranks_init"}, allow_val_change=True)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def ranks(self, step: int, budget: float, ranks: dict[str, int], params: int, final: bool) -> None:
        self.run.log({**{f"ranks/{module}": rank for module, rank in ranks.items()},
                      "ranks/adapter_params": params, "ranks/budget": budget}, step=step)
        if final:
            self.run.summary["final_rank_pattern"] = dict(ranks)

    def finish(self, status: str) -> None:
        if status not in ("succeeded", "failed", "cancelled"):
            self.run.mark_preempting()  # handed back to the queue: the next attempt resumes this run
        self.run.finish(exit_code=1 if status == "failed" else 0)
