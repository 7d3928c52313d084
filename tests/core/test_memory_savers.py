"""Gradient checkpointing really recomputes (a checkpointed block's layers run forward twice per step) and keeps the
gradients the allocator reads; a bf16 base keeps fp32 adapters and an fp32 head."""

import torch

from adalora_core import AdaLoraConfig, base_dtype, enable_gradient_checkpointing, inject_adalora
from tests.core.tiny import tiny_bert, tiny_gpt2


def block_calls_and_grads(checkpointing: bool):
    torch.manual_seed(0)
    model = tiny_gpt2()
    if checkpointing:
        assert enable_gradient_checkpointing(model)
    adapted = inject_adalora(model, AdaLoraConfig(init_r=4, target_r=2, init="gaussian"))
    calls = []
    model.transformer.h[0].attn.register_forward_hook(lambda *_: calls.append(1))  # inside the checkpointed block
    model.train()
    x = torch.randint(0, 100, (2, 10))
    model(input_ids=x, labels=x).loss.backward()
    return len(calls), {n: m.lora_E.grad.clone() for n, m in adapted.modules.items()}


def test_checkpointing_recomputes_and_keeps_the_gradients():
    plain_calls, plain_grads = block_calls_and_grads(False)
    calls, grads = block_calls_and_grads(True)
    assert (plain_calls, calls) == (1, 2)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-7)


def test_a_bf16_base_keeps_fp32_adapters_and_head():
    model = tiny_bert().to(base_dtype("bf16", torch.device("cpu")))
    adapted = inject_adalora(model, AdaLoraConfig(init_r=4, target_r=2))
    assert {p.dtype for m in adapted.modules.values() for n, p in m.named_parameters() if "lora_" in n} == \
        {torch.float32}
    assert model.bert.encoder.layer[0].attention.self.query.base.weight.dtype == torch.bfloat16
    assert {p.dtype for h in adapted.heads for p in model.get_submodule(h).parameters()} == {torch.float32}
    logits = model.eval()(input_ids=torch.randint(0, 100, (2, 8))).logits  # no autocast: the head casts its input
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert base_dtype("auto", torch.device("cpu")) == torch.float32
