"""Tokens/s and peak memory of a Llama-3.2-1B-shaped decoder fine-tuned four ways (issue 25, "Fast on the GPUs
users have": Measure).

    .venv/bin/python bench/gpu_throughput.py --out bench/results_gpu_throughput.jsonl   # CUDA, ~8 min on an H100
    .venv/bin/python bench/gpu_throughput.py --tiny --out /tmp/gpu_throughput.jsonl     # CPU smoke run, under a minute

The goal: our AdaLoRA trains at >= 1.0x PEFT LoRA's tokens/s at an equal batch and with <= its peak memory; the rank
allocator takes under 1 % of a step; packed rows train at least as fast per real token as padded ones.

The model is built from a LlamaConfig with Llama-3.2-1B's shape (hidden 2048, 16 layers, 32 heads, 8 KV heads,
intermediate 8192, vocab 128256, tied embeddings, rope_theta 500000): random weights, nothing from the hub, bf16
weights and bf16 autocast on CUDA (fp32 on the CPU), transformers' default attention (SDPA). All seven linears
(q, k, v, o, gate, up, down) are adapted. The contenders, each on the same batches:
  peft-lora   PEFT LoRA r=8: the baseline every ratio is printed against
  peft-ada    PEFT AdaLoRA init_r 12 -> target_r 8, its update_and_allocate(step) every step
  ours-step   adalora_core: inject_adalora, orthogonal_penalty in the loss, AdamW, RankAllocator.update(step) (as
              bench/core_step.py), init_r 12 -> target_r 8
  ours-train  adalora_core.train(), the whole loop (model_inputs, clipping, LR schedule, metrics, our callbacks),
              data from a list of examples and a collate; init_r 12 -> target_r 8
The step-level contenders run step indices 300, 301, ... of a 2000-step run (deltaT 10), the loop runs from step 0
with tinit 1: either way one step in ten is an allocation step, as in a real run's budgeting phase.

Grid: batch shapes 8 x 1024 and 16 x 128 (the service's default batch_size and max_seq_len), padded and packed rows,
eager and compiled. Synthetic examples (seed 0) have lengths uniform in [seq/16, seq]. Padded: one example per row,
right-padded to seq, with a 2-D attention mask. Packed: consecutive examples joined into rows of at most seq tokens
(worker.data.batching.pack_examples: position_ids restart at 0 per example), padded to seq. Every batch is exactly
batch x seq, and rows are collated as the worker's make_collate does; every contender gets the inputs our loop hands
its model (adalora_core.model_inputs). Tokens/s counts real (non-padding) tokens, so padded and packed compare per
real token. Compiled: each decoder layer's layer.compile() for the step-level contenders; for the loop,
TrainArgs(compile=True) when TrainArgs has that field, else layer.compile() too (the output says which). Compiled
graphs are static per shape (automatic dynamic shapes off). --tiny runs on one torch thread and compiles with the
"eager" backend (dynamo's tracing and guards, no codegen: inductor's C++ build of every graph takes minutes on a
small CPU), so its compiled rows check the path and say nothing about speed.

Each measurement: a freshly built model, warm-up steps (compilation included) left out, then a fixed number of timed
steps between device synchronisations. Peak memory: torch.cuda.max_memory_allocated over warm-up and timed steps,
the base model's weights included; on the CPU the peak RSS above the RSS before the contender was set up (VmHWM,
approximate: freed memory may stay with malloc). ours-step then runs 10 more steps timed phase by phase (CUDA events;
perf_counter on the CPU): RankAllocator.update, and orthogonal_penalty with its own backward, against the whole step.

A JSON line per measurement goes to --out as it finishes (a failed one carries "error" and the run goes on); the
markdown tables at the end give each contender's ratio to PEFT LoRA's tokens/s and peak memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import random
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import peft
import torch
import transformers
from peft import AdaLoraConfig as PeftAdaLoraConfig
from peft import LoraConfig, get_peft_model
from torch._dynamo.utils import counters
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from adalora_core import AdaLoraConfig, RankAllocator, TrainArgs, TrainCallbacks, inject_adalora, orthogonal_penalty
from adalora_core import train as core_train
from adalora_core.model_inputs import model_inputs
from adalora_core.objective import enable_lean_loss
from adalora_core.objective import task_loss as objective_loss
from worker.data.batching import pack_examples
from worker.data.encoding import IGNORE_INDEX

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LLAMA_1B = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=256,
            vocab_size=1000, tie_word_embeddings=True, rope_theta=500000.0)
METHODS = ("peft-lora", "peft-ada", "ours-step", "ours-train")
BASELINE = "peft-lora"
LAYOUTS = ("padded", "packed")
LORA_R, INIT_R, TARGET_R, ALPHA, ORTH, DELTA_T = 8, 12, 8, 16.0, 0.1, 10
TOTAL_STEP, TINIT, TFINAL, FIRST_STEP = 2000, 100, 200, 300  # the step-level contenders: mid-budgeting
LOOP_MAX_STEPS = 1000  # the loop's schedule (tinit 1, tfinal 0.2); our callback stops it after the timed steps
BREAKDOWN_STEPS = 10   # ours-step's phase-by-phase steps: one allocation among them


@dataclasses.dataclass
class Plan:
    model: dict
    shapes: list[tuple[int, int]]  # (batch, seq)
    warmup: int
    timed: dict[tuple[int, int], int]
    device: torch.device
    bf16: bool
    backend: str  # torch.compile's, for layer.compile()
    tiny: bool


def make_plan(tiny: bool, backend: str | None) -> Plan:
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    bf16 = cuda and torch.cuda.is_bf16_supported()
    if tiny:
        return Plan(TINY, [(2, 64), (4, 32)], 2, {(2, 64): 10, (4, 32): 10}, device, bf16, backend or "eager", True)
    return Plan(LLAMA_1B, [(8, 1024), (16, 128)], 3, {(8, 1024): 20, (16, 128): 40}, device, bf16,
                backend or "inductor", False)


LOOP_HAS_COMPILE = "compile" in {f.name for f in dataclasses.fields(TrainArgs)}


def compile_label(method: str, plan: Plan) -> str:
    if method == "ours-train" and LOOP_HAS_COMPILE and plan.backend == "inductor":
        return "TrainArgs.compile=True"
    return "layer.compile()" + ("" if plan.backend == "inductor" else f" backend={plan.backend}")


# -- model and data ---------------------------------------------------------------------------------

def build_model(plan: Plan) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**plan.model)
    dtype = torch.bfloat16 if plan.bf16 else torch.float32
    with torch.device(plan.device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.train()


def examples(batch: int, seq: int, steps: int, vocab: int, seed: int = 0) -> list[dict]:
    """Enough examples (lengths uniform in [seq/16, seq]) for `steps` batches of packed rows; padded rows use the
    first batch * steps of them."""
    rng = random.Random(seed)
    out: list[dict] = []
    while len(out) < batch * steps or len(pack_examples(out, seq)) <= batch * steps:
        for _ in range(batch * steps):
            ids = [rng.randrange(vocab) for _ in range(rng.randint(max(2, seq // 16), seq))]
            out.append({"input_ids": ids, "labels": list(ids)})
    return out


def rows_of(layout: str, data: list[dict], batch: int, seq: int, steps: int) -> list[dict]:
    rows = pack_examples(data, seq) if layout == "packed" else data
    return rows[:batch * steps]


def make_collate(seq: int) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    """The worker's collate (a 2-D attention mask over real tokens; position_ids for packed rows, 0 on padding),
    but always `seq` wide, so that every batch has the benchmark's shape."""
    pads = {"input_ids": 0, "labels": IGNORE_INDEX, "position_ids": 0}

    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = {k: torch.tensor([r[k] + [pad] * (seq - len(r[k])) for r in rows]) for k, pad in pads.items()
                 if k in rows[0]}
        lengths = torch.tensor([len(r["input_ids"]) for r in rows])
        batch["attention_mask"] = (torch.arange(seq) < lengths[:, None]).long()
        return batch

    return collate


def real_tokens(rows: list[dict]) -> int:
    return sum(len(r["input_ids"]) for r in rows)


def compile_layers(model: torch.nn.Module, backend: str) -> None:
    for layer in model.modules():
        if isinstance(layer, LlamaDecoderLayer):
            layer.compile(backend=backend)


# -- measuring --------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Memory:
    """Peak memory from `start()`: CUDA's max_memory_allocated, or on the CPU the peak RSS above the RSS then."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.kind = "cuda_max_memory_allocated" if self.cuda else "cpu_peak_rss_delta"
        self.base = 0

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # peak RSS (VmHWM) back to the current RSS
            self.base = _proc_status_kib("VmRSS") * 1024
        except OSError:
            self.base = -1

    def peak_mib(self) -> float | None:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20
        if self.base < 0:
            return None
        return (_proc_status_kib("VmHWM") * 1024 - self.base) / 2**20


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"{field}:\s+(\d+)", f.read())
    assert match, field
    return int(match.group(1))


class PhaseClock:
    """Marks on the device's timeline: CUDA events, or perf_counter after a synchronisation on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def ms(self, a, b) -> float:
        if self.cuda:
            b.synchronize()
            return a.elapsed_time(b)
        return (b - a) * 1e3


def graphs() -> int:
    """Graphs dynamo has compiled so far in this process: a rise during timed steps means a recompile there."""
    return int(counters["stats"]["unique_graphs"])


@dataclasses.dataclass
class Contender:
    """A step-level contender: its model, optimizer and what it calls after optimizer.step()."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    after_step: Callable[[int], object] | None
    bf16: bool
    modules: list | None = None  # ours-step: the SVDLinear modules, for orthogonal_penalty
    orth_target: str = "orthogonal"

    def task_loss(self, batch: dict) -> torch.Tensor:
        device_type = next(self.model.parameters()).device.type
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.bf16):
            return objective_loss(self.model, batch)  # the model's own loss unless the batch has a label_index

    def penalty(self) -> torch.Tensor:
        assert self.modules is not None
        return ORTH * orthogonal_penalty(self.modules, self.orth_target)

    def step(self, batch: dict, i: int) -> None:
        loss = self.task_loss(batch)
        if self.modules is not None:
            loss = loss + self.penalty()
        loss.backward()
        self.optimizer.step()
        if self.after_step is not None:
            self.after_step(i)
        self.optimizer.zero_grad(set_to_none=True)


def contender(method: str, model: torch.nn.Module, bf16: bool) -> Contender:
    modules, orth_target = None, "orthogonal"
    if method == "peft-lora":
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=LORA_R, lora_alpha=ALPHA,
                                                 lora_dropout=0.0, target_modules=TARGETS))
        after = None
    elif method == "peft-ada":  # its orthogonal term is added to the loss inside its forward
        model = get_peft_model(model, PeftAdaLoraConfig(
            task_type="CAUSAL_LM", init_r=INIT_R, target_r=TARGET_R, lora_alpha=ALPHA, lora_dropout=0.0,
            target_modules=TARGETS, tinit=TINIT, tfinal=TFINAL, deltaT=DELTA_T, total_step=TOTAL_STEP,
            orth_reg_weight=ORTH))
        after = model.base_model.update_and_allocate
    elif method == "ours-step":
        adapted = inject_adalora(model, AdaLoraConfig(init_r=INIT_R, target_r=TARGET_R, target_modules=TARGETS,
                                                      tinit=TINIT, tfinal=TFINAL, delta_t=DELTA_T,
                                                      orth_reg_weight=ORTH))
        after = RankAllocator(adapted.modules, adapted.config, TOTAL_STEP).update
        modules, orth_target = list(adapted.modules.values()), adapted.config.orth_target
    else:
        raise ValueError(method)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return Contender(model, optimizer, after, bf16, modules, orth_target)


def breakdown(c: Contender, batches: list[dict], first: int, device: torch.device) -> dict:
    """ours-step's phases timed one by one: the task loss forward and backward, orthogonal_penalty and its own
    backward, AdamW, RankAllocator.update, zero_grad."""
    assert c.after_step is not None
    clock = PhaseClock(device)
    marks = []
    for k in range(BREAKDOWN_STEPS):
        m = [clock.mark()]
        c.task_loss(batches[k % len(batches)]).backward()
        m.append(clock.mark())
        c.penalty().backward()
        m.append(clock.mark())
        c.optimizer.step()
        m.append(clock.mark())
        c.after_step(first + k)
        m.append(clock.mark())
        c.optimizer.zero_grad(set_to_none=True)
        m.append(clock.mark())
        marks.append(m)
    sync(device)

    def mean_ms(a: int, b: int) -> float:
        return sum(clock.ms(m[a], m[b]) for m in marks) / len(marks)

    step_ms, penalty_ms, allocator_ms = mean_ms(0, 5), mean_ms(1, 2), mean_ms(3, 4)
    return {"breakdown_steps": BREAKDOWN_STEPS, "breakdown_step_ms": step_ms, "allocator_ms": allocator_ms,
            "allocator_share": allocator_ms / step_ms, "penalty_ms": penalty_ms, "penalty_share": penalty_ms / step_ms}


def measure_step(method: str, plan: Plan, batch: int, seq: int, layout: str, compiled: bool) -> dict:
    """A step-level contender: its own step function over batches collated and moved to the device beforehand."""
    timed = plan.timed[(batch, seq)]
    steps = plan.warmup + timed
    rows = rows_of(layout, examples(batch, seq, steps, plan.model["vocab_size"]), batch, seq, steps)
    chunks = [rows[k * batch:(k + 1) * batch] for k in range(steps)]
    collate = make_collate(seq)
    memory = Memory(plan.device)
    model = build_model(plan)
    attention = model.config._attn_implementation
    memory.start()
    c = contender(method, model, plan.bf16)
    # What our loop hands a model; ours also computes its loss as the loop does (adalora_core.objective), PEFT's
    # contenders take the model's own loss.
    lean = method == "ours-step" and enable_lean_loss(model)
    batches = [model_inputs(model, collate(chunk), plan.device, label_index=lean) for chunk in chunks]
    if compiled:
        compile_layers(model, plan.backend)
    for k in range(plan.warmup):
        c.step(batches[k], FIRST_STEP + k)
    sync(plan.device)
    graphs_before, began = graphs(), time.perf_counter()
    for k in range(plan.warmup, steps):
        c.step(batches[k], FIRST_STEP + k)
    sync(plan.device)
    seconds = time.perf_counter() - began
    row = {"real_tokens": sum(map(real_tokens, chunks[plan.warmup:])), "seconds": seconds,
           "new_graphs_in_timed": graphs() - graphs_before, "peak_mib": memory.peak_mib(), "attention": attention}
    if method == "ours-step":
        row.update(breakdown(c, batches, FIRST_STEP + steps, plan.device))
    return row


class StopAfter(TrainCallbacks):
    """Times the loop from the end of the warm-up steps to the end of the timed ones, then stops it."""

    def __init__(self, warmup: int, last: int, device: torch.device) -> None:
        self.warmup, self.last, self.device = warmup, last, device
        self.times: dict[int, float] = {}
        self.graphs = 0
        self.loop_tokens_per_s: list[float] = []

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if step in (self.warmup, self.last):
            sync(self.device)
            self.times[step] = time.perf_counter()
            if step == self.warmup:
                self.graphs = graphs()
        if self.warmup < step <= self.last and "tokens_per_s" in metrics:
            self.loop_tokens_per_s.append(metrics["tokens_per_s"])

    def should_stop(self) -> bool:
        return self.last in self.times


def measure_loop(plan: Plan, batch: int, seq: int, layout: str, compiled: bool) -> dict:
    """adalora_core.train() on a list of rows and a collate; the collate counts each batch's real tokens."""
    timed = plan.timed[(batch, seq)]
    steps = plan.warmup + timed
    rows = rows_of(layout, examples(batch, seq, steps, plan.model["vocab_size"]), batch, seq, steps)
    collate, counted = make_collate(seq), []

    def counting_collate(chunk: list[dict]) -> dict[str, torch.Tensor]:
        counted.append(real_tokens(chunk))
        return collate(chunk)

    extra = {}
    if LOOP_HAS_COMPILE:
        extra["compile"] = compiled and compile_label("ours-train", plan) == "TrainArgs.compile=True"
    args = TrainArgs(learning_rate=1e-4, batch_size=batch, max_steps=LOOP_MAX_STEPS, seed=0,
                     device=plan.device.type, bf16=plan.bf16, **extra)
    config = AdaLoraConfig(init_r=INIT_R, target_r=TARGET_R, target_modules=TARGETS, tinit=1, tfinal=0.2,
                           delta_t=DELTA_T, orth_reg_weight=ORTH)
    memory = Memory(plan.device)
    model = build_model(plan)
    attention = model.config._attn_implementation
    memory.start()
    if compiled and not extra.get("compile"):
        compile_layers(model, plan.backend)
    timer = StopAfter(plan.warmup, steps, plan.device)
    result = core_train(model, config, args, rows, counting_collate, callbacks=timer)
    if result.step != steps:
        raise RuntimeError(f"the loop ran {result.step} steps, expected {steps}")
    row = {"real_tokens": sum(counted[plan.warmup:steps]), "seconds": timer.times[steps] - timer.times[plan.warmup],
           "new_graphs_in_timed": graphs() - timer.graphs, "peak_mib": memory.peak_mib(), "attention": attention}
    if timer.loop_tokens_per_s:  # the loop's own per-step figure, when it reports one: a cross-check
        row["loop_tokens_per_s_mean"] = sum(timer.loop_tokens_per_s) / len(timer.loop_tokens_per_s)
    return row


def measure(method: str, plan: Plan, batch: int, seq: int, layout: str, compiled: bool) -> dict:
    row = {"kind": "measurement", "method": method, "batch": batch, "seq": seq, "shape": f"{batch}x{seq}",
           "layout": layout, "compiled": compiled, "compile": compile_label(method, plan) if compiled else "off",
           "device": plan.device.type, "dtype": "bf16" if plan.bf16 else "fp32", "warmup_steps": plan.warmup,
           "timed_steps": plan.timed[(batch, seq)], "padded_tokens": batch * seq * plan.timed[(batch, seq)],
           "memory_kind": Memory(plan.device).kind}
    try:
        if method == "ours-train":
            row.update(measure_loop(plan, batch, seq, layout, compiled))
        else:
            row.update(measure_step(method, plan, batch, seq, layout, compiled))
        row["tokens_per_s"] = row["real_tokens"] / row["seconds"]
        row["ms_per_step"] = row["seconds"] * 1e3 / row["timed_steps"]
    except Exception as exc:  # a contender that fails (OOM, a compile error) must not cost the others' figures
        row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        gc.collect()
        if plan.device.type == "cuda":
            torch.cuda.empty_cache()
    return row


# -- the report -------------------------------------------------------------------------------------

def meta(plan: Plan) -> dict:
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    machine = (torch.cuda.get_device_name() if plan.device.type == "cuda"
               else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    return {"kind": "meta", "when": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
            "commit": commit, "machine": machine, "load_average": os.getloadavg()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__, "device": plan.device.type,
            "dtype": "bf16" if plan.bf16 else "fp32", "model": plan.model, "tiny": plan.tiny,
            "loop_has_compile_arg": LOOP_HAS_COMPILE, "compile_backend": plan.backend}


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.3f}x"


def report(rows: list[dict], info: dict) -> None:
    ok = [r for r in rows if "error" not in r]
    cuda = info["device"] == "cuda"  # peak RSS deltas of a few MiB on the CPU make no ratio
    by = {(r["shape"], r["layout"], r["compiled"], r["method"]): r for r in ok}
    mem_label = ("peak MiB (max_memory_allocated)" if info["device"] == "cuda"
                 else "peak RSS above start MiB (CPU, approximate)")
    print(f"\n# bench/gpu_throughput.py  {info['when']}  {info['machine']}  device {info['device']} {info['dtype']}  "
          f"torch {info['torch']}  transformers {info['transformers']}  peft {info['peft']}  commit {info['commit']}"
          f"{'  --tiny' if info['tiny'] else ''}")
    field = "a compile field" if info["loop_has_compile_arg"] else "no compile field"
    loop_compile = ("TrainArgs.compile=True" if info["loop_has_compile_arg"] and info["compile_backend"] == "inductor"
                    else f"layer.compile() (TrainArgs has {field})")
    print(f"# compiled rows: the step-level contenders layer.compile() on each decoder layer, backend "
          f"{info['compile_backend']}; ours-train {loop_compile}")
    if info["compile_backend"] != "inductor":
        print(f"# compiled with backend {info['compile_backend']}, not inductor: the compiled rows check the path, "
              "their speeds mean nothing" + ("; TrainArgs.compile was not exercised" if info["loop_has_compile_arg"]
                                              else ""))
    attention = sorted({r["attention"] for r in ok})
    print(f"# attention {', '.join(map(str, attention)) or '-'}; tokens/s = real (non-padding) tokens per second over "
          f"the timed steps; {mem_label}\n")
    print(f"| shape | rows | compile | method | tokens/s | vs {BASELINE} | ms/step | {mem_label} | vs {BASELINE} |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['shape']} | {r['layout']} | {r['compile']} | {r['method']} | error: "
                  f"{r['error'][:80].replace('|', '/')} | | | | |")
            continue
        base = by.get((r["shape"], r["layout"], r["compiled"], BASELINE), {})
        print(f"| {r['shape']} | {r['layout']} | {r['compile']} | {r['method']} | {r['tokens_per_s']:.0f} | "
              f"{ratio(r['tokens_per_s'], base.get('tokens_per_s'))} | {r['ms_per_step']:.1f} | "
              f"{fmt(r['peak_mib'])} | {ratio(r['peak_mib'], base.get('peak_mib')) if cuda else '-'} |")

    print("\n## Packed against padded rows, per real token (tokens/s ratio)\n")
    print("| shape | compile | method | padded tokens/s | packed tokens/s | packed / padded |")
    print("|---|---|---|---:|---:|---:|")
    for (shape, layout, compiled, method), r in by.items():
        if layout == "packed" and (padded := by.get((shape, "padded", compiled, method))):
            print(f"| {shape} | {r['compile']} | {method} | {padded['tokens_per_s']:.0f} | {r['tokens_per_s']:.0f} | "
                  f"{ratio(r['tokens_per_s'], padded['tokens_per_s'])} |")

    print("\n## Compiled against eager (tokens/s ratio)\n")
    print("| shape | rows | method | compile | eager tokens/s | compiled tokens/s | compiled / eager | "
          "new graphs while timed |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for (shape, layout, compiled, method), r in by.items():
        if compiled and (eager := by.get((shape, layout, False, method))):
            print(f"| {shape} | {layout} | {method} | {r['compile']} | {eager['tokens_per_s']:.0f} | "
                  f"{r['tokens_per_s']:.0f} | {ratio(r['tokens_per_s'], eager['tokens_per_s'])} | "
                  f"{r['new_graphs_in_timed']} |")

    print(f"\n## ours-step phase by phase ({BREAKDOWN_STEPS} steps, one of them an allocation step; "
          f"{'CUDA events' if info['device'] == 'cuda' else 'perf_counter'})\n")
    print("| shape | rows | compile | step ms | RankAllocator.update ms | share | orthogonal_penalty + backward ms | "
          "share |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in ok:
        if "allocator_ms" in r:
            print(f"| {r['shape']} | {r['layout']} | {r['compile']} | {r['breakdown_step_ms']:.2f} | "
                  f"{r['allocator_ms']:.3f} | {100 * r['allocator_share']:.2f} % | {r['penalty_ms']:.3f} | "
                  f"{100 * r['penalty_share']:.2f} % |")

    print("\n## Goals\n")
    for method in ("ours-step", "ours-train"):
        speed = [r["tokens_per_s"] / b["tokens_per_s"] for k, r in by.items() if k[3] == method
                 and (b := by.get((*k[:3], BASELINE)))]
        mem = [r["peak_mib"] / b["peak_mib"] for k, r in by.items() if k[3] == method
               and (b := by.get((*k[:3], BASELINE))) and r["peak_mib"] and b["peak_mib"] and cuda]
        if speed:
            print(f"- {method}: tokens/s vs {BASELINE} (goal >= 1.0x) {min(speed):.3f}x to {max(speed):.3f}x, "
                  f"met in {sum(s >= 1.0 for s in speed)} of {len(speed)}; peak memory (goal <= 1.0x) "
                  + (f"{min(mem):.3f}x to {max(mem):.3f}x, met in {sum(m <= 1.0 for m in mem)} of {len(mem)}"
                     if mem else "not compared (CPU RSS)"))
    shares = [r["allocator_share"] for r in ok if "allocator_share" in r]
    if shares:
        print(f"- allocator share of ours-step (goal < 1 %): {100 * min(shares):.2f} % to {100 * max(shares):.2f} %")
    packed = [by[k]["tokens_per_s"] / by[(k[0], "padded", *k[2:])]["tokens_per_s"] for k in by
              if k[1] == "packed" and (k[0], "padded", *k[2:]) in by]
    if packed:
        print(f"- packed / padded per real token (goal >= 1.0x): {min(packed):.3f}x to {max(packed):.3f}x, "
              f"met in {sum(p >= 1.0 for p in packed)} of {len(packed)}")
    errors = [r for r in rows if "error" in r]
    if errors:
        print(f"- {len(errors)} measurement(s) failed; their errors are in the JSONL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/results_gpu_throughput.jsonl", help="a JSON line per measurement")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke mode: a tiny width, a few steps")
    parser.add_argument("--compile-backend", help="torch.compile backend for layer.compile() (default: inductor; "
                        "with --tiny eager, i.e. dynamo alone; aot_eager adds AOTAutograd, about twice as slow)")
    args = parser.parse_args()
    plan = make_plan(args.tiny, args.compile_backend)
    if plan.tiny:
        torch.set_num_threads(1)  # a tiny model gains nothing from threads, and on a shared CPU they spin-wait
    if plan.device.type == "cpu" and not plan.tiny:
        print("# no CUDA device: the full Llama-1B shape on the CPU takes hours; use --tiny for a smoke run")
    # One static graph per shape, and room for the recompiles of every contender's layer (one code object).
    torch._dynamo.config.automatic_dynamic_shapes = False
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 4096
    info = meta(plan)
    started = time.perf_counter()
    rows = []
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as out:
        out.write(json.dumps(info) + "\n")
        for compiled in (False, True):  # every eager figure first: they come in minutes, compilation takes longer
            for batch, seq in plan.shapes:
                for layout in LAYOUTS:
                    for method in METHODS:
                        row = measure(method, plan, batch, seq, layout, compiled)
                        rows.append(row)
                        out.write(json.dumps(row) + "\n")
                        out.flush()
                        what = (f"error {row['error'][:200]}" if "error" in row else
                                f"{row['tokens_per_s']:.0f} tokens/s, {row['ms_per_step']:.1f} ms/step, "
                                f"peak {fmt(row['peak_mib'])} MiB")
                        print(f"[{time.perf_counter() - started:6.1f} s] {batch}x{seq} {layout} "
                              f"{row['compile']} {method}: {what}", flush=True)
                if compiled:
                    torch._dynamo.reset()  # the next shape compiles afresh: this one's graphs need not stay alive
    report(rows, info)
    print(f"\nwall time {time.perf_counter() - started:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
