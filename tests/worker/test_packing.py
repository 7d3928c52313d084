"""training.packing: examples joined into rows without attention or loss crossing from one into the next.
The collate builds no square mask; a packed batch gives each example the loss it has alone, on GPT-2 and Llama;
a packed chat job trains, and one on a model that ignores position_ids fails at setup."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch.overrides import TorchFunctionMode

from adalora_core.model_inputs import model_inputs
from service.jobspec import JobSpec
from tests.conftest import sentiment_rows, sqlite_only_database_url
from tests.helpers import new_job
from tests.worker.helpers import finished, spec, succeeded, write_jsonl
from worker.data import IGNORE_INDEX, make_collate
from worker.data.batching import pack_examples
from worker.runner import claim_and_run

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


def test_the_collate_builds_no_square_mask():
    """The (batch, 1, len, len) mask cost the training thread 84 ms a step at rows of 2048: nothing the collate
    makes, returned or not, has more than two dimensions."""
    examples = pack_examples(EXAMPLES, 12) + [{"input_ids": [1, 2], "labels": [1, 2], "position_ids": [0, 1]}]

    dims = []

    class Dims(TorchFunctionMode):  # sees every torch call, tensor factories included
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            dims.extend([out.dim()] if isinstance(out, torch.Tensor) else [])
            return out

    with Dims():
        batch = make_collate(0)(examples)
    assert dims and max(dims) <= 2
    assert batch["attention_mask"].tolist()[1] == [1] * 11 and batch["attention_mask"].tolist()[2][:3] == [1, 1, 0]
    assert batch["position_ids"].tolist()[2] == [0, 1] + [0] * 9  # each pad token an example of its own


def per_example_losses(model, batch, spans) -> list[torch.Tensor]:
    """Summed token losses of each (row, start, end) span, as the model's own shifted loss counts them, with the
    batch handed over as training hands it."""
    logits = model(**model_inputs(model, batch, "cpu")).logits
    out = []
    for row, start, end in spans:
        targets = batch["labels"][row, start + 1:end]
        scores = logits[row, start:end - 1]
        out.append(torch.nn.functional.cross_entropy(scores, targets, ignore_index=IGNORE_INDEX,
                                                     reduction="sum"))
    return out


def example_spans(batch) -> list[tuple[int, int, int]]:
    """(row, start, end) of every example in a collated packed batch: they start where position_ids are 0."""
    spans = []
    for row, (positions, mask) in enumerate(zip(batch["position_ids"].tolist(), batch["attention_mask"].tolist())):
        starts = [i for i, p in enumerate(positions[:sum(mask)]) if p == 0]
        spans += [(row, a, b) for a, b in zip(starts, [*starts[1:], sum(mask)])]
    return spans


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("max_len", [32, 12])  # all four examples in one row; two rows, the first padded
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_packed_batch_gives_each_example_its_own_loss(family, max_len, attention):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = (GPT2LMHeadModel(GPT2Config(vocab_size=32, n_embd=32, n_layer=2, n_head=2, n_positions=32))
             if family == "gpt2" else
             LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=2, num_key_value_heads=2,
                                          max_position_embeddings=32))).eval()
    model.set_attn_implementation(attention)
    collate = make_collate(0)
    packed = collate(pack_examples(EXAMPLES, max_len=max_len))
    spans = example_spans(packed)
    assert len(spans) == len(EXAMPLES)
    with torch.no_grad():
        together = per_example_losses(model, packed, spans)
        alone = [per_example_losses(model, collate([e]), [(0, 0, len(e["input_ids"]))])[0] for e in EXAMPLES]
        logits = model(**model_inputs(model, packed, "cpu")).logits
        pad_alone = model(input_ids=torch.tensor([[0]])).logits[0, 0]
    for got, want in zip(together, alone):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert logits.isfinite().all()
    for row, length in enumerate(packed["attention_mask"].sum(1).tolist()):
        for pad in logits[row, length:]:  # padding sees itself only, not the example before it
            torch.testing.assert_close(pad, pad_alone, rtol=1e-5, atol=1e-5)


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


def test_packing_fails_at_setup_for_a_model_whose_attention_ignores_position_ids(engine, data_dir,
                                                                                 tiny_chat_gpt2_dir):
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM

    folder = tiny_chat_gpt2_dir.parent / "tiny-chat-opt"
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_gpt2_dir)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=len(tokenizer), hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                       num_attention_heads=2, max_position_embeddings=64, word_embed_proj_dim=32, pad_token_id=0)
    OPTForCausalLM(config).save_pretrained(folder)
    rows = [{"messages": [{"role": "user", "content": s}, {"role": "assistant", "content": y}]}
            for s, y in sentiment_rows(16, seed=5)]
    job_id = new_job(spec("causal_lm", write_jsonl(data_dir, rows), model="tiny-chat-opt", max_steps=12,
                          max_seq_len=64, packing=True))
    assert claim_and_run(job_id) == "failed"
    error = finished(job_id)[0].error
    assert "does not keep packed examples apart" in error and "set training.packing to false" in error, error
