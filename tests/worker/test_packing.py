"""training.packing: examples joined into rows without attention or loss crossing from one into the next.
A packed batch gives each example the loss it has alone, on GPT-2 and Llama; a packed chat job trains."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from service.jobspec import JobSpec
from tests.conftest import sentiment_rows, sqlite_only_database_url
from tests.helpers import new_job
from tests.worker.helpers import finished, spec, succeeded, write_jsonl
from worker.data import IGNORE_INDEX, make_collate
from worker.data.batching import pack_examples

EXAMPLES = [  # prompt tokens ignored, completion learned, as prompt_completion_examples makes them
    {"input_ids": [5, 6, 7, 8, 9], "labels": [IGNORE_INDEX, IGNORE_INDEX, 7, 8, 9]},
    {"input_ids": [10, 11, 12], "labels": [IGNORE_INDEX, 11, 12]},
    {"input_ids": [13, 14, 15, 16, 17, 18, 19], "labels": [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 16, 17, 18, 19]},
    {"input_ids": [20, 21, 22, 23], "labels": [20, 21, 22, 23]},
]


database_url = sqlite_only_database_url()


def test_packing_keeps_every_token_in_order_and_restarts_positions():
    rows = pack_examples(EXAMPLES, max_len=12)
    assert [len(r["input_ids"]) for r in rows] == [8, 11]  # 5+3, then 7+4
    assert sum((r["input_ids"] for r in rows), []) == sum((e["input_ids"] for e in EXAMPLES), [])
    assert rows[0]["position_ids"] == [0, 1, 2, 3, 4, 0, 1, 2]
    assert rows[0]["labels"] == [IGNORE_INDEX, IGNORE_INDEX, 7, 8, 9, IGNORE_INDEX, 11, 12]
    assert rows[1]["labels"][7] == IGNORE_INDEX  # the second example's first label, predicted across the seam


def test_the_mask_keeps_attention_inside_each_example():
    batch = make_collate(0)(pack_examples(EXAMPLES[:2], 12) + [{"input_ids": [1, 2], "labels": [1, 2],
                                                                   "position_ids": [0, 1]}])
    mask = batch["attention_mask"]
    assert mask.shape == (2, 1, 8, 8) and mask.dtype == torch.bool
    assert mask[0, 0, 6, 5] and mask[0, 0, 6, 6] and not mask[0, 0, 6, 4] and not mask[0, 0, 2, 3]
    assert mask[1, 0, 5, 5] and not mask[1, 0, 5, 1]  # a pad position sees itself only


def per_example_losses(model, batch, spans) -> list[torch.Tensor]:
    """Summed token losses of each (row, start, end) span, as the model's own shifted loss counts them."""
    logits = model(**batch).logits
    out = []
    for row, start, end in spans:
        targets = batch["labels"][row, start + 1:end]
        scores = logits[row, start:end - 1]
        out.append(torch.nn.functional.cross_entropy(scores, targets, ignore_index=IGNORE_INDEX,
                                                     reduction="sum"))
    return out


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_packed_batch_gives_each_example_its_own_loss(family):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = (GPT2LMHeadModel(GPT2Config(vocab_size=32, n_embd=32, n_layer=2, n_head=2, n_positions=32))
             if family == "gpt2" else
             LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=2, num_key_value_heads=2,
                                          max_position_embeddings=32))).eval()
    collate = make_collate(0)
    packed = collate(pack_examples(EXAMPLES, max_len=32))  # all four in one row
    starts = [0, 5, 8, 15, 19]
    with torch.no_grad():
        together = per_example_losses(model, packed, [(0, a, b) for a, b in zip(starts, starts[1:])])
        alone = [per_example_losses(model, collate([e]), [(0, 0, len(e["input_ids"]))])[0] for e in EXAMPLES]
        assert model(**packed).loss.isfinite()
    for got, want in zip(together, alone):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_packing_is_for_causal_lm_only():
    with pytest.raises(ValidationError, match="causal_lm only"):
        JobSpec.model_validate({"model": "org/name", "task": "seq2seq", "dataset": {"source": "hub", "path": "o/d"},
                                "training": {"packing": True}})


def test_a_packed_chat_job_trains(engine, data_dir, tiny_chat_gpt2_dir):
    rows = [{"messages": [{"role": "user", "content": s}, {"role": "assistant", "content": "good" if y ==
                                                             "positive" else "bad"}]}
            for s, y in sentiment_rows(48, seed=5)]
    job_id = new_job(spec("causal_lm", write_jsonl(data_dir, rows), model="tiny-chat-gpt2", max_steps=12,
                             max_seq_len=64, packing=True))
    succeeded(job_id)
    job, events, last = finished(job_id)
    assert any(e.startswith("packing: 36 training examples joined into") for e in events), events
    assert last["eval_loss"] > 0
