"""What preparing a packed batch costs the training thread's CPU per step: the dense-mask collate as it was before
issue 25 against the collate and model_inputs of now.

    .venv/bin/python bench/collate_cost.py            # batch 8, rows of 1024, 2048, 4096; one torch thread
    .venv/bin/python bench/collate_cost.py --rows 512 1024 --batch 16 --repeats 50

Examples of 32 to 512 random tokens (the prompt/completion lengths of a chat set) are packed with the worker's
pack_examples into rows of at most --rows tokens; each step collates --batch of those rows. Contenders:

  dense (B,1,L,L) mask, as before issue 25   worker/data/batching.make_collate, then the block-diagonal causal mask
                                             it built for packed rows (the function is kept below as it was)
  2-D mask + position_ids (now)              make_collate as it is, then adalora_core.model_inputs deciding on the
                                             CPU that the mask can stay behind (what the loop does before the copy)

Time is this thread's CPU time (time.thread_time), so other jobs on a shared machine do not count; medians over
--repeats steps, each contender on the same batches, taking turns.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import transformers  # noqa: E402

from adalora_core.model_inputs import model_inputs  # noqa: E402
from worker.data.batching import make_collate, pack_examples  # noqa: E402

BASELINE = "dense (B,1,L,L) mask, as before issue 25"
OURS = "2-D mask + position_ids (now)"


def packed_attention_mask(position_ids: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """The baseline, as worker/data/batching.py had it: (batch, 1, len, len) booleans, a token sees the earlier
    tokens of its own example only; padding sees only itself."""
    starts = (position_ids == 0) & padding.bool()
    example = torch.cumsum(starts.long(), dim=1).masked_fill(~padding.bool(), -1)
    width = position_ids.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    same = example[:, :, None] == example[:, None, :]
    return ((same & causal) | torch.eye(width, dtype=torch.bool))[:, None]


def packed_rows(count: int, max_len: int, seed: int) -> list[dict]:
    """`count` rows of at most `max_len` tokens, packed from examples of 32 to 512 random tokens."""
    rng = random.Random(seed)
    examples, tokens = [], 0
    while tokens < (count + 1) * max_len:
        ids = [rng.randrange(1, 32000) for _ in range(rng.randint(32, 512))]
        examples.append({"input_ids": ids, "labels": ids})
        tokens += len(ids)
    return pack_examples(examples, max_len)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1024, 2048, 4096], help="row lengths (tokens)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per contender and row length")
    args = parser.parse_args()
    torch.set_num_threads(1)
    collate = make_collate(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=8, n_layer=1, n_head=1))  # its type only

    def dense(examples):
        batch = collate(examples)
        batch["attention_mask"] = packed_attention_mask(batch["position_ids"], batch["attention_mask"])
        return batch

    def now(examples):
        return model_inputs(model, collate(examples), "cpu")

    print(f"# bench/collate_cost.py  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {platform.machine()}, "
          f"torch threads {torch.get_num_threads()}  torch {torch.__version__}  batch {args.batch}; "
          f"CPU ms per step, median of {args.repeats}")
    print(f"| row tokens | {BASELINE} | {OURS} | ratio |")
    print("|---:|---:|---:|---:|")
    for length in args.rows:
        rows = packed_rows(args.batch * args.repeats, length, seed=length)
        steps = [rows[i:i + args.batch] for i in range(0, len(rows), args.batch)]
        times: dict[str, list[float]] = {BASELINE: [], OURS: []}
        for i, step in enumerate(steps):
            contenders = [(BASELINE, dense), (OURS, now)]
            for name, fn in contenders[::-1] if i % 2 else contenders:  # taking turns at going first
                began = time.thread_time()
                fn(step)
                times[name].append((time.thread_time() - began) * 1000)
        old, new = statistics.median(times[BASELINE]), statistics.median(times[OURS])
        print(f"| {length} | {old:.2f} | {new:.2f} | {old / new:.1f}x |")


if __name__ == "__main__":
    main()
