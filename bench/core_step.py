"""Speed and memory of our AdaLoRA against PEFT's AdaLoRA and PEFT's LoRA (issue 2's targets).

    .venv/bin/python bench/core_step.py --threads 1         # CPU, full run (about 12 minutes on 2 shared cores)
    .venv/bin/python bench/core_step.py --quick             # smoke run (about 2 minutes)
    .venv/bin/python bench/core_step.py --device cuda --bf16

Part 1, a full training step (forward, backward, AdamW step, allocator, zero_grad) on a randomly
initialised BertForSequenceClassification, batch 16 x 64 tokens, all attention and MLP linears adapted,
init_r = 12 (target_r = 8) against LoRA r = 12:
  ours        inject_adalora + orthogonal_penalty in the loss + RankAllocator.update(step)
  peft-ada    get_peft_model(AdaLoraConfig) (orthogonal term inside forward) + update_and_allocate(step)
  peft-lora   get_peft_model(LoraConfig)
The contenders live in one process and take turns every iteration (the order rotates), so a noisy
neighbour on a shared machine slows all of them alike; we report medians and ratios. On CPU the default
clock is this process's CPU time (time.process_time), which does not count time spent descheduled; on a
shared machine run with --threads 1, so that no CPU time goes to OpenMP threads waiting for each other. The step index
is fed as 300, 305, 310, ... in the middle of the budgeting phase (deltaT = 10), so every other step is an
allocation step; "amortised" weighs them as a real run does: (9 ordinary + 1 allocation) / 10.
Peak memory: each contender in its own subprocess, peak RSS (VmHWM, reset after the base model is
built) above the base model, over an allocation step and an ordinary step; on CUDA max_memory_allocated.

Part 2, the allocator alone against the number of adapted modules (MiniLM-shaped layers, 6 per layer),
gradients present: RankAllocator.update(step) against AdaLoraModel.update_and_allocate(step).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

import torch
import transformers
from peft import AdaLoraConfig as PeftAdaLoraConfig
from peft import LoraConfig, get_peft_model

from adalora_core import AdaLoraConfig, RankAllocator, inject_adalora, orthogonal_penalty

TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
SHAPES = {  # name: (hidden, layers, heads, intermediate)
    "minilm-l6": (384, 6, 12, 1536),
    "bert-base": (768, 12, 12, 3072),
}
CONTENDERS = ("ours", "peft-ada", "peft-lora")
INIT_R, TARGET_R, LORA_ALPHA, ORTH, DELTA_T = 12, 8, 32, 0.1, 10
TOTAL_STEP, TINIT, TFINAL = 2000, 100, 200   # steps 300.. are mid-budgeting
FIRST_STEP, STRIDE = 300, 5                  # 300, 305, 310, ...: allocation on every other step
BATCH, SEQ = 16, 64


def bert(hidden: int, layers: int, heads: int, intermediate: int, device: str) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                     intermediate_size=intermediate, num_labels=2)
    return transformers.BertForSequenceClassification(config).to(device)


def make_batch(device: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 30000, (BATCH, SEQ), generator=g),
             "attention_mask": torch.ones(BATCH, SEQ, dtype=torch.long),
             "labels": torch.randint(0, 2, (BATCH,), generator=g)}
    return {k: v.to(device) for k, v in batch.items()}


def peft_adalora_config() -> PeftAdaLoraConfig:
    return PeftAdaLoraConfig(task_type="SEQ_CLS", init_r=INIT_R, target_r=TARGET_R, lora_alpha=LORA_ALPHA,
                             lora_dropout=0.0, target_modules=TARGETS, tinit=TINIT, tfinal=TFINAL, deltaT=DELTA_T,
                             total_step=TOTAL_STEP, orth_reg_weight=ORTH)


def our_config() -> AdaLoraConfig:
    return AdaLoraConfig(init_r=INIT_R, target_r=TARGET_R, lora_alpha=LORA_ALPHA, target_modules=TARGETS,
                         tinit=TINIT, tfinal=TFINAL, delta_t=DELTA_T, orth_reg_weight=ORTH, init="gaussian")


def wrap(kind: str, model: torch.nn.Module, batch: dict, bf16: bool) -> Callable[[int], None]:
    """Wraps `model` as contender `kind`; returns step(i), one full training step with step index i."""
    device_type = batch["input_ids"].device.type
    if kind == "ours":
        adapted = inject_adalora(model, our_config())
        allocator = RankAllocator(adapted.modules, adapted.config, TOTAL_STEP)
        modules = list(adapted.modules.values())
        after_step = allocator.update
    elif kind == "peft-ada":
        model = get_peft_model(model, peft_adalora_config())
        after_step = model.base_model.update_and_allocate
    elif kind == "peft-lora":
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=INIT_R, lora_alpha=LORA_ALPHA,
                                                 lora_dropout=0.0, target_modules=TARGETS))
        after_step = None
    else:
        raise ValueError(kind)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(i: int) -> None:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        if kind == "ours":
            loss = loss + ORTH * orthogonal_penalty(modules)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(i)
        optimizer.zero_grad(set_to_none=True)

    return step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


def timed(fn: Callable[[], None], device: str) -> float:
    sync(device)
    start = clock()
    fn()
    sync(device)
    return (clock() - start) * 1e3


def alternate(fns: dict[str, Callable[[int], None]], iters: int, warmup: int, device: str
              ) -> dict[str, dict[str, list[float]]]:
    """Times fns[name](step) for every name each iteration, rotating the order; ms split by step kind."""
    names = list(fns)
    times = {n: {"ordinary": [], "allocation": []} for n in names}
    for it in range(warmup + iters):
        step = FIRST_STEP + STRIDE * it
        kind = "allocation" if step % DELTA_T == 0 else "ordinary"
        for name in names[it % len(names):] + names[:it % len(names)]:
            ms = timed(partial(fns[name], step), device)
            if it >= warmup:
                times[name][kind].append(ms)
    return times


def summary(t: dict[str, list[float]], allocates: bool = True) -> dict[str, float]:
    if not allocates:  # LoRA: every step is the same kind of step
        every = statistics.median(t["ordinary"] + t["allocation"])
        return {"ordinary": every, "allocation": every, "amortised": every}
    ordinary, allocation = statistics.median(t["ordinary"]), statistics.median(t["allocation"])
    return {"ordinary": ordinary, "allocation": allocation,
            "amortised": ((DELTA_T - 1) * ordinary + allocation) / DELTA_T}


# -- part 1: the training step --------------------------------------------------------------------

def bench_step(shape: str, iters: int, device: str, bf16: bool) -> dict[str, dict[str, float]]:
    batch = make_batch(device)
    fns = {kind: wrap(kind, bert(*SHAPES[shape], device), batch, bf16) for kind in CONTENDERS}
    times = alternate(fns, iters, warmup=2, device=device)
    return {name: summary(t, allocates=name != "peft-lora") for name, t in times.items()}


def peak_memory_child(kind: str, shape: str, device: str, bf16: bool) -> float:
    """Runs in its own process: MiB of peak memory above the built base model, over 2 steps."""
    model, batch = bert(*SHAPES[shape], device), make_batch(device)
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM (peak RSS) to the current RSS
        base = _proc_status_kib("VmHWM") * 1024
    step = wrap(kind, model, batch, bf16)
    for i in (FIRST_STEP, FIRST_STEP + STRIDE):  # an allocation step (optimizer state is created), an ordinary one
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _proc_status_kib("VmHWM") * 1024
    return (peak - base) / 2**20


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def peak_memory(kind: str, shape: str, device: str, bf16: bool) -> float:
    cmd = [sys.executable, __file__, "--memory-child", kind, "--shape", shape, "--device", device,
           "--threads", str(torch.get_num_threads())]
    # Tensors above 64 KiB go to mmap and back to the OS when freed, so peak RSS tracks live tensors
    # rather than the heap's high-water mark.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    cmd += ["--bf16"] if bf16 else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


# -- part 2: the allocator alone ------------------------------------------------------------------

def bench_allocator(layers: int, iters: int, device: str) -> dict[str, dict[str, float]]:
    hidden, _, heads, intermediate = SHAPES["minilm-l6"]
    ours = inject_adalora(bert(hidden, layers, heads, intermediate, device), our_config())
    allocator = RankAllocator(ours.modules, ours.config, TOTAL_STEP)
    theirs = get_peft_model(bert(hidden, layers, heads, intermediate, device), peft_adalora_config())
    g = torch.Generator(device=device).manual_seed(1)
    for model in (ours.model, theirs):
        for p in model.parameters():
            if p.requires_grad:
                p.grad = torch.randn(p.shape, generator=g, device=device)
    fns = {"ours": allocator.update, "peft-ada": theirs.base_model.update_and_allocate}
    times = alternate(fns, iters, warmup=2, device=device)
    result = {name: summary(t) for name, t in times.items()}
    result["modules"] = len(ours.modules)
    return result


# -- the report -----------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for every contender (CUDA)")
    parser.add_argument("--quick", action="store_true", help="few iterations, MiniLM shape only")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--clock", choices=list(CLOCKS), help="wall time, or this process's CPU time (immune to "
                        "being descheduled on a shared machine; use with --threads 1). Default: cpu on CPU")
    parser.add_argument("--memory-child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="minilm-l6", choices=list(SHAPES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    global clock
    clock_name = args.clock or ("wall" if args.device == "cuda" else "cpu")
    clock = CLOCKS[clock_name]
    if args.memory_child:
        print(json.dumps({"peak_mib": peak_memory_child(args.memory_child, args.shape, args.device, args.bf16)}))
        return
    gpu = args.device == "cuda"
    step_iters = {"minilm-l6": 6 if args.quick else (60 if gpu else 24),
                  "bert-base": 4 if args.quick else (60 if gpu else 10)}
    shapes = ["minilm-l6"] if args.quick else list(SHAPES)
    alloc_layers = [6, 12] if args.quick else [6, 12, 24, 50]
    alloc_iters = 10 if args.quick else 40

    started = time.time()
    machine = (torch.cuda.get_device_name() if gpu else f"{platform.processor() or platform.machine()}, "
               f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print(f"# bench/core_step.py  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  "
          f"{machine}  torch {torch.__version__}  transformers {transformers.__version__}  "
          f"peft {__import__('peft').__version__}  device {args.device}{' bf16' if args.bf16 else ''}  "
          f"clock {clock_name}"
          f"{'  --quick' if args.quick else ''}")
    print(f"# batch {BATCH}x{SEQ}, init_r {INIT_R} -> target_r {TARGET_R} (LoRA r {INIT_R}), deltaT {DELTA_T}; "
          "ms are medians; amortised = (9 ordinary + 1 allocation step) / 10\n")

    print("## Training step (ms)\n")
    print("| shape | contender | ordinary | allocation | amortised | vs peft-lora | peak mem MiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    ratios = []
    for shape in shapes:
        r = bench_step(shape, step_iters[shape], args.device, args.bf16)
        mem = {kind: peak_memory(kind, shape, args.device, args.bf16) for kind in CONTENDERS}
        lora = r["peft-lora"]["amortised"]
        for kind in CONTENDERS:
            s = r[kind]
            alloc = f"{s['allocation']:.1f}" if kind != "peft-lora" else "-"
            print(f"| {shape} | {kind} | {s['ordinary']:.1f} | {alloc} | {s['amortised']:.1f} | "
                  f"{s['amortised'] / lora:.3f}x | {mem[kind]:.0f} |")
        ratios.append((shape, r["ours"]["amortised"] / lora, r["peft-ada"]["amortised"] / lora,
                       r["ours"]["amortised"] / r["peft-ada"]["amortised"],
                       r["ours"]["ordinary"] / r["peft-lora"]["ordinary"], mem["ours"] / mem["peft-ada"]))
    print("\n| shape | ours/peft-lora | peft-ada/peft-lora | ours/peft-ada | ours/peft-lora (ordinary steps) "
          "| peak mem ours/peft-ada |")
    print("|---|---:|---:|---:|---:|---:|")
    for shape, a, b, c, d, e in ratios:
        print(f"| {shape} | {a:.3f}x | {b:.3f}x | {c:.3f}x | {d:.3f}x | {e:.2f}x |")

    print("\n## Allocator alone, gradients present (ms)\n")
    print("| modules | ours ordinary | ours allocation | peft ordinary | peft allocation | ours/peft ordinary "
          "| ours/peft allocation | ours/peft amortised |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for layers in alloc_layers:
        r = bench_allocator(layers, alloc_iters, args.device)
        o, p = r["ours"], r["peft-ada"]
        print(f"| {r['modules']} | {o['ordinary']:.2f} | {o['allocation']:.2f} | {p['ordinary']:.2f} | "
              f"{p['allocation']:.2f} | {o['ordinary'] / p['ordinary']:.3f}x | "
              f"{o['allocation'] / p['allocation']:.3f}x | {o['amortised'] / p['amortised']:.3f}x |")
    print(f"\n# total {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
