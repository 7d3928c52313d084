"""model_inputs: a decoder-only LM's right-padded rows reach the model without their 2-D mask (so SDPA can take its
flash kernel) and give the same loss and adapter gradients; every other batch keeps its mask. The training loop
and the LR probe hand the model exactly that. keeps_packed_examples_apart tells the models that read packed rows
from position_ids from those that do not."""

import pytest
import torch
import transformers

from adalora_core import AdaLoraConfig, TrainArgs, inject_adalora, train
from adalora_core.model_inputs import IGNORE_INDEX, keeps_packed_examples_apart, model_inputs
from tests.core.tiny import tiny_bert, tiny_gpt2, tiny_llama


def tiny_opt(seed: int = 0) -> transformers.OPTForCausalLM:
    torch.manual_seed(seed)
    config = transformers.OPTConfig(vocab_size=100, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                    num_attention_heads=2, max_position_embeddings=32, word_embed_proj_dim=32)
    return transformers.OPTForCausalLM(config).eval()


LMS = {"gpt2": tiny_gpt2, "llama": tiny_llama}


def padded_batch(lengths: list[int], width: int, left: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """Rows of random tokens padded (with token 0) to `width`; labels ignored on the padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        real = slice(width - n, width) if left else slice(0, n)
        ids[row, real] = torch.randint(1, 100, (n,), generator=g)
        mask[row, real] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, IGNORE_INDEX)}


def adapted(family: str):
    """The tiny LM with AdaLoRA in its linears, every adapter value random (E starts at zero, which would leave
    A and B without gradient)."""
    model = LMS[family]()
    result = inject_adalora(model, AdaLoraConfig(init_r=4, target_r=2))
    torch.manual_seed(1)
    for module in result.modules.values():
        for p in (module.lora_A, module.lora_E, module.lora_B):
            p.data.normal_(0, 0.5)
    return model


def loss_and_adapter_grads(model, inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(**inputs).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", LMS)
def test_right_padded_rows_without_their_mask_give_the_same_loss_and_adapter_gradients(family):
    model = adapted(family)
    batch = padded_batch([9, 4, 12, 1], width=12)
    inputs = model_inputs(model, batch, "cpu")
    assert "attention_mask" not in inputs and inputs["use_cache"] is False
    with_mask, with_mask_grads = loss_and_adapter_grads(model, batch)
    without, without_grads = loss_and_adapter_grads(model, inputs)
    # The same arithmetic on the same real tokens; only summation order inside attention may differ.
    torch.testing.assert_close(without, with_mask, rtol=1e-6, atol=1e-6)
    assert with_mask_grads.keys() == without_grads.keys() and len(with_mask_grads) > 0
    for name, grad in with_mask_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(without_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("family", LMS)
def test_left_padded_rows_and_scored_padding_keep_their_mask(family):
    model = LMS[family]()
    left = padded_batch([9, 4, 12], width=12, left=True)
    assert "attention_mask" in model_inputs(model, left, "cpu")
    with torch.no_grad():  # the rule matters: without its mask a left-padded row scores differently
        assert not torch.allclose(model(**left).loss, model(**{**left, "attention_mask": None}).loss)
    scored = padded_batch([9, 4, 12], width=12)
    scored["labels"] = scored["input_ids"].clone()  # padding carries labels: what it sees is scored
    assert "attention_mask" in model_inputs(model, scored, "cpu")
    assert "attention_mask" in model_inputs(model, {k: v for k, v in scored.items() if k != "labels"}, "cpu")


def test_classifier_batches_are_only_moved():
    batch = padded_batch([5, 3], width=5)
    batch["labels"] = torch.tensor([0, 1])
    inputs = model_inputs(tiny_bert(), batch, "cpu")
    assert inputs.keys() == batch.keys()
    assert all(torch.equal(inputs[k], batch[k]) for k in batch)


def test_packed_rows_laid_end_to_end_for_flash_kernels_give_the_same_loss(monkeypatch):
    """Flash kernels read packed examples from position_ids in one row only; the flattened batch is checked here on
    SDPA, which reads them in any number of rows."""
    model = tiny_llama()
    batch = padded_batch([7, 5], width=7)
    batch["position_ids"] = torch.tensor([[0, 1, 2, 0, 1, 2, 3], [0, 1, 0, 1, 2, 0, 0]])
    rows = model_inputs(model, batch, "cpu")
    with monkeypatch.context() as m:
        m.setattr(model.config, "_attn_implementation", "flash_attention_2")
        one_row = model_inputs(model, batch, "cpu")
    assert one_row["input_ids"].shape == (1, 14) and one_row["labels"][0, 7] == IGNORE_INDEX
    assert rows["input_ids"].shape == (2, 7) and rows["labels"][1, 0] != IGNORE_INDEX
    with torch.no_grad():
        torch.testing.assert_close(model(**one_row).loss, model(**rows).loss, rtol=1e-6, atol=1e-6)


def test_the_packing_check_tells_models_that_ignore_position_ids():
    assert keeps_packed_examples_apart(tiny_gpt2()) and keeps_packed_examples_apart(tiny_llama())
    assert not keeps_packed_examples_apart(tiny_opt())  # OPT's mask never looks at position_ids


def test_the_loop_and_its_lr_probe_hand_the_model_no_mask_for_right_padded_rows():
    seen = []
    model = tiny_gpt2()
    # The backbone: the loop's lean loss (adalora_core.objective) calls it and applies the head itself.
    model.transformer.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    lengths = list(range(4, 12)) * 4  # each batch right-padded to its longest row
    train(model, AdaLoraConfig(init_r=4, target_r=2, tinit=1, tfinal=1, delta_t=1),
          TrainArgs(max_steps=3, batch_size=4, learning_rate="auto", device="cpu"), lengths,
          lambda rows: padded_batch(rows, width=max(rows)))
    assert len(seen) > 3  # the probe's steps, then the run's
    assert all(kwargs.get("attention_mask") is None and kwargs["use_cache"] is False for kwargs in seen)
