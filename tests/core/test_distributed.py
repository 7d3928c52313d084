"""Data-parallel training (torch.distributed, gloo on CPU): 2 processes with half the batch each train the run
1 process trains with the whole batch, to the same rank pattern and the same weights within float tolerance,
and a 2-process run resumes from its checkpoint exactly."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import transformers

from adalora_core import AdaLoraConfig, TrainArgs, train
from adalora_core.config import ConfigError
from adalora_core.distributed import check_batch
from tests.core.tiny import classification_data, collate

STEPS, BATCH = 16, 8


def model() -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertForSequenceClassification(config)  # no dropout: its masks would differ by batch size


def config() -> AdaLoraConfig:
    return AdaLoraConfig(init_r=4, target_r=2, tinit=2, tfinal=4, delta_t=2, init="lora")


def args(folder: str | None = None, **changes) -> TrainArgs:
    extra = {"checkpoint_dir": folder, "checkpoint_every": 8} if folder else {}
    return TrainArgs(**{"max_steps": STEPS, "batch_size": BATCH, "learning_rate": 5e-3, "device": "cpu", **extra,
                        **changes})


def outcome(result) -> dict:
    return {"ranks": {name: sum(kept) for name, kept in result.rank_pattern.items()},
            "weights": {n: p.detach().clone() for n, p in result.adapted.model.named_parameters() if p.requires_grad},
            "loss": result.metrics["loss"], "tokens": result.metrics["tokens"], "step": result.step}


def process(rank: int, size: int, init: str, out: str, folder: str | None, resume: str | None) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=size)
    try:
        result = train(model(), config(), args(folder), classification_data(64), collate, resume_from=resume)
        torch.save(outcome(result), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def run_processes(tmp_path, name: str, folder: str | None = None, resume: str | None = None) -> list[dict]:
    init = (tmp_path / f"{name}.init").as_uri()
    out = str(tmp_path / name)
    mp.spawn(process, args=(2, init, out, folder, resume), nprocs=2, join=True)
    return [torch.load(f"{out}.{rank}", weights_only=False) for rank in range(2)]


def assert_same_run(got: dict, want: dict, atol: float) -> None:
    assert got["ranks"] == want["ranks"] and got["step"] == want["step"]
    for name, value in want["weights"].items():
        torch.testing.assert_close(got["weights"][name], value, rtol=0, atol=atol, msg=name)


def test_two_processes_with_half_batches_train_the_one_process_run(tmp_path):
    alone = outcome(train(model(), config(), args(), classification_data(64), collate))
    first, second = run_processes(tmp_path, "ddp")
    # Every process holds the same masks and weights: the gradients they score are the all-reduced ones.
    assert_same_run(second, first, atol=0)
    # The same run as one process with the whole batch, up to the order of float additions.
    assert_same_run(first, alone, atol=1e-6)  # measured: 1.2e-7
    assert first["loss"] == pytest.approx(alone["loss"], rel=1e-6)
    assert first["tokens"] == alone["tokens"] == STEPS * BATCH * 8  # each process's half, summed: 8 tokens a row
    assert len(set(alone["ranks"].values())) > 1  # the allocator really moved ranks between modules


def test_a_two_process_run_resumes_from_its_checkpoint(tmp_path):
    folder = str(tmp_path / "checkpoints")
    whole, _ = run_processes(tmp_path, "whole", folder=folder)
    saved = sorted(os.listdir(folder))
    assert saved == ["step-00000008.pt"]  # rank 0 alone writes them
    resumed, other = run_processes(tmp_path, "resumed", resume=os.path.join(folder, saved[0]))
    assert_same_run(resumed, whole, atol=0)
    assert_same_run(other, whole, atol=0)


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path):
    init = (tmp_path / "refused.init").as_uri()
    with pytest.raises(Exception, match="batch_size 7 does not split over 2 processes"):
        mp.spawn(refuse_odd_batch, args=(init,), nprocs=2, join=True)
    with pytest.raises(ConfigError, match="use a multiple of 2"):
        check_batch(7, 2)


def refuse_odd_batch(rank: int, init: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        train(model(), config(), args(batch_size=7), classification_data(64), collate)
    finally:
        dist.destroy_process_group()
