"""The lean causal-LM loss: the model's own loss and adapter gradients, from the labelled positions only, never
holding more than one chunk of full-vocabulary logits; models whose logits are not plain "head, then softmax"
keep their own loss."""

import pytest
import torch
import transformers
from torch.utils._python_dispatch import TorchDispatchMode

from adalora_core import AdaLoraConfig, TrainArgs, inject_adalora, objective, train
from adalora_core.model_inputs import IGNORE_INDEX, model_inputs
from adalora_core.objective import enable_lean_loss, task_loss
from tests.core.tiny import lm_data, tiny_bert, tiny_gpt2, tiny_llama

LMS = {"gpt2": tiny_gpt2, "llama": tiny_llama}
VOCAB = 100  # the tiny models'


def prompt_and_padding_batch() -> dict[str, torch.Tensor]:
    """Three rows: a prompt whose labels are ignored, an answer, then right padding."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (3, 12), generator=g)
    labels, mask = ids.clone(), torch.ones_like(ids)
    for row, (prompt, length) in enumerate([(4, 12), (6, 9), (2, 5)]):
        labels[row, :prompt] = IGNORE_INDEX
        labels[row, length:] = IGNORE_INDEX
        mask[row, length:] = 0
        ids[row, length:] = 0
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class Products(TorchDispatchMode):
    """The shape of every matrix product computed (logits are one)."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default):
            self.shapes.append(tuple(out.shape))
        return out


@pytest.mark.parametrize("family", sorted(LMS))
def test_the_lean_loss_and_its_gradients_equal_the_models_own(family, monkeypatch):
    monkeypatch.setattr(objective, "CHUNK_LOGIT_BYTES", 4 * VOCAB * 5)  # five rows a chunk: several chunks
    grads = {}
    for lean in (False, True):
        model = tiny_llama() if family == "llama" else tiny_gpt2()
        adapted = inject_adalora(model, AdaLoraConfig(init_r=4, target_r=2, init="lora"))
        torch.manual_seed(1)
        for module in adapted.modules.values():
            torch.nn.init.normal_(module.lora_B, std=0.02)  # a non-zero update, so the gradients reach A and E
        assert enable_lean_loss(model)
        if not lean:
            setattr(model, objective._LEAN, False)  # the model's own loss, as the reference
        inputs = model_inputs(model, prompt_and_padding_batch(), "cpu", label_index=True)
        with Products() as seen:
            loss = task_loss(model, inputs)
            loss.backward()
        grads[lean] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        full_vocab_rows = [s[-2] for s in seen.shapes if s[-1] == VOCAB]
        if lean:
            assert max(full_vocab_rows) <= 5, "never more than one chunk of logits"
        else:
            assert max(full_vocab_rows) == 3 * 12, "the model's own loss takes every position's logits"
    (theirs, their_grads), (ours, our_grads) = grads[False], grads[True]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    for name, grad in their_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_a_model_that_scales_its_logits_keeps_its_own_loss():
    torch.manual_seed(0)
    config = transformers.Gemma2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                       max_position_embeddings=32, final_logit_softcapping=0.5)
    model = transformers.Gemma2ForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(200)  # logits of a trained model's size, where the soft-cap bites
    assert not enable_lean_loss(model)
    inputs = model_inputs(model, prompt_and_padding_batch(), "cpu", label_index=True)
    inputs_without = {k: v for k, v in inputs.items() if k != "label_index"}
    torch.testing.assert_close(task_loss(model, inputs), model(**inputs_without).loss)
    assert not enable_lean_loss(tiny_bert())  # a classifier has no LM head at all


def test_training_a_causal_lm_goes_through_the_lean_loss():
    model = tiny_gpt2()
    calls = []
    model.lm_head.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    train(model, AdaLoraConfig(init_r=4, target_r=2, tinit=1, tfinal=1, delta_t=1),
          TrainArgs(max_steps=3, batch_size=4, device="cpu"), lm_data(), lambda rows: {
              k: torch.stack([r[k] for r in rows]) for k in ("input_ids", "labels")})
    assert getattr(model, objective._LEAN)
    assert all(len(shape) == 2 for shape in calls[1:])  # (labelled rows, hidden): the head never sees (B, L, d)
