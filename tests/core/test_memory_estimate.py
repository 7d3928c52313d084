"""The peak-memory estimate (a meta-device trace) against the peak a real training run reaches on this CPU.

The models are small but not tiny, so activations outweigh the fixed costs as they do in real jobs: a BERT
classifier (hidden 128, 4 layers, attention dropout 0.1: on a CPU its attention keeps the scores) and a GPT-2
causal LM (hidden 128, 4 layers, no dropout: a fused attention kernel on the CPU too).
"""

import pytest
import torch
import transformers

from adalora_core import AdaLoraConfig, TrainArgs, enable_gradient_checkpointing, inject_adalora, train
from adalora_core.memory import (
    CUDA_CONTEXT_BYTES,
    NF4_BYTES_PER_WEIGHT,
    estimate_training_memory,
    fits,
    peak_tensor_bytes,
)
from tests.core.tiny import collate

BATCH, LENGTH, STEPS = 8, 96, 2


def bert(meta: bool = False) -> transformers.PreTrainedModel:
    config = transformers.BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                                     intermediate_size=512, max_position_embeddings=256)
    with torch.device("meta" if meta else "cpu"):
        return transformers.BertForSequenceClassification(config)


def gpt2(meta: bool = False) -> transformers.PreTrainedModel:
    config = transformers.GPT2Config(vocab_size=1000, n_embd=128, n_layer=4, n_head=4, n_positions=256,
                                     attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    with torch.device("meta" if meta else "cpu"):
        return transformers.GPT2LMHeadModel(config)


MODELS = {"sequence_classification": bert, "causal_lm": gpt2}


def config() -> AdaLoraConfig:
    return AdaLoraConfig(init_r=8, target_r=4, tinit=0, tfinal=0, delta_t=1, init="gaussian")


def estimate(task: str, checkpointing: bool, *, seq_len: int = LENGTH, device: str = "cpu", **kwargs):
    adapted = inject_adalora(MODELS[task](meta=True), config().with_total_step(STEPS))
    return estimate_training_memory(adapted, task, batch_size=BATCH, seq_len=seq_len, dtype=torch.float32,
                                    checkpointing=checkpointing, device=device, **kwargs)


def measured_peak(task: str, checkpointing: bool) -> int:
    torch.manual_seed(0)
    model = MODELS[task]()
    if checkpointing:
        assert enable_gradient_checkpointing(model)
    rows = [{"input_ids": torch.randint(3, 1000, (LENGTH,))} for _ in range(BATCH * STEPS)]
    for i, row in enumerate(rows):
        row["labels"] = row["input_ids"] if task == "causal_lm" else torch.tensor(i % 2)
    args = TrainArgs(max_steps=STEPS, batch_size=BATCH, learning_rate=1e-3, device="cpu")
    return peak_tensor_bytes(lambda: train(model, config(), args, rows, collate), "cpu")


@pytest.mark.parametrize("checkpointing", [False, True], ids=["checkpointing-off", "checkpointing-on"])
@pytest.mark.parametrize("task", list(MODELS))
def test_the_estimate_is_within_15_to_25_percent_of_the_measured_peak(task, checkpointing):
    got = measured_peak(task, checkpointing)
    est = estimate(task, checkpointing)
    assert 0.85 <= est.peak / got <= 1.25, (est.to_dict(), got)


def test_checkpointing_lowers_the_activations_and_the_peak():
    for task in MODELS:
        off, on = estimate(task, False), estimate(task, True)
        assert on.activations < off.activations / 2 and on.peak < off.peak
        assert off.with_checkpointing(True) == on and on.with_checkpointing(False) == off
        assert (off.gradient_checkpointing, on.gradient_checkpointing) == (False, True)


def test_fused_attention_keeps_no_seq_by_seq_scores():
    """On a GPU attention (dropout included) is a fused kernel: activations grow linearly with the length.
    A CPU with attention dropout takes the math path, whose scores grow with its square."""
    short, long = (estimate("sequence_classification", False, seq_len=n, device="cuda") for n in (64, 128))
    assert long.activations == pytest.approx(2 * short.activations, rel=0.02)
    short, long = (estimate("sequence_classification", False, seq_len=n, device="cpu") for n in (64, 128))
    assert long.activations > 2.3 * short.activations


def test_the_fixed_part_counts_weights_adapters_optimizer_and_allocator():
    est = estimate("causal_lm", False)
    adapted = inject_adalora(gpt2(meta=True), config().with_total_step(STEPS))
    adapter = sum(p.numel() for m in adapted.modules.values() for p in (m.lora_A, m.lora_E, m.lora_B))
    everything = sum(p.numel() for p in adapted.model.parameters())
    assert est.trainable == 4 * adapter  # a causal LM trains no head
    assert (est.gradients, est.optimizer, est.allocator) == (4 * adapter, 8 * adapter, 8 * adapter)
    assert est.weights == 4 * (everything - adapter)
    bf16 = estimate_training_memory(adapted, "causal_lm", batch_size=BATCH, seq_len=LENGTH, dtype=torch.bfloat16,
                                    checkpointing=False)
    assert bf16.weights == est.weights // 2 and bf16.activations < est.activations
    nf4 = estimate("causal_lm", False, quantized=True)
    linear = sum(m.base.weight.numel() for m in adapted.modules.values())
    assert nf4.weights == round(4 * (everything - adapter - linear) + NF4_BYTES_PER_WEIGHT * linear)


def test_a_card_fits_the_peak_with_room_for_the_framework():
    peak = 10 * 2 ** 30
    assert fits(peak, round(peak * 1.1) + CUDA_CONTEXT_BYTES)
    assert not fits(peak, round(peak * 1.1) + CUDA_CONTEXT_BYTES - 2 ** 20)
