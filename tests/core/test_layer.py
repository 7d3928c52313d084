import pytest
import torch
from torch import nn

from adalora_core import AdaLoraConfig, SVDLinear, inject_adalora, unload
from tests.core.tiny import tiny_bert, tiny_gpt2


@pytest.mark.parametrize("init", ["lora", "gaussian", "orthogonal", "svd"])
def test_wrapped_model_equals_base_model_at_init(init):
    x = torch.randint(0, 100, (3, 8))
    model = tiny_bert()
    before = model(input_ids=x).logits
    inject_adalora(model, AdaLoraConfig(init_r=4, target_r=2, init=init))
    # E = 0 (or B = 0 for the lora init), so the adapter adds exactly zero: equality, not closeness.
    assert torch.equal(model(input_ids=x).logits, before)


def test_lora_init_starts_like_lora_and_b_learns_first():
    torch.manual_seed(0)
    layer = SVDLinear(nn.Linear(16, 24), r=4, scaling=2, init="lora")
    assert torch.equal(layer.lora_B, torch.zeros(24, 4)) and torch.equal(layer.lora_E, torch.ones(4, 1))
    bound = 1 / 16 ** 0.5  # kaiming-uniform with a = sqrt(5), as nn.Linear initialises its weight
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.std() > bound / 4
    layer(torch.randn(5, 16)).pow(2).sum().backward()
    # B = 0: only B has a gradient at the first step (the paper's E = 0 start gives E alone one instead).
    assert layer.lora_B.grad.abs().sum() > 0
    assert not layer.lora_A.grad.any() and not layer.lora_E.grad.any()


def test_gpt2_conv1d_layers_are_wrapped_with_fan_in_fan_out():
    model = tiny_gpt2()
    adapted = inject_adalora(model, AdaLoraConfig(init_r=4, target_r=2))
    names = sorted(adapted.modules)
    assert names == sorted(f"transformer.h.{i}.{m}" for i in range(2)
                           for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))
    layer = adapted.modules["transformer.h.0.attn.c_attn"]
    assert layer.fan_in_fan_out and (layer.in_features, layer.out_features) == (32, 96)


@pytest.mark.parametrize("conv1d", [False, True])
def test_merge_then_unmerge_restores_outputs(conv1d):
    torch.manual_seed(0)
    if conv1d:
        from transformers.pytorch_utils import Conv1D
        base = Conv1D(24, 16)
    else:
        base = nn.Linear(16, 24)
    layer = SVDLinear(base, r=4, scaling=2)
    with torch.no_grad():
        layer.lora_E.normal_()
    x = torch.randn(5, 16)
    unmerged = layer(x)
    original_weight = base.weight.clone()
    layer.merge()
    merged = layer(x)
    layer.unmerge()
    # Merging reassociates fp32 sums (x·W + x·dW vs x·(W + dW)): equal to ~1e-6 relative, not bitwise.
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer(x), unmerged, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(base.weight, original_weight, rtol=0, atol=1e-6)
    assert not torch.equal(unmerged, base(x)), "a non-zero E must change the output"


def test_adapter_stays_fp32_on_a_bf16_base_model():
    model = tiny_bert().to(torch.bfloat16)
    adapted = inject_adalora(model, AdaLoraConfig(init_r=4, target_r=2))
    layer = next(iter(adapted.modules.values()))
    assert {layer.lora_A.dtype, layer.lora_E.dtype, layer.lora_B.dtype} == {torch.float32}
    with torch.no_grad():
        layer.lora_E.fill_(1.0)
    out = model(input_ids=torch.randint(0, 100, (2, 8))).logits
    assert out.dtype == torch.float32 and torch.isfinite(out).all()  # the head is fp32 too, so are its logits


def test_injection_freezes_base_and_trains_adapters_and_head():
    model = tiny_bert()
    adapted = inject_adalora(model, AdaLoraConfig(init_r=4, target_r=2))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert adapted.heads == ["classifier"]
    assert {"classifier.weight", "classifier.bias"} <= trainable
    assert all(".lora_" in n or n.startswith("classifier.") for n in trainable)
    counts = adapted.parameter_counts()
    # 12 linears: 4 of 32x32, 1 of 32->64 and 1 of 64->32 per layer; each rank costs in + out + 1.
    per_rank = 2 * (4 * 65 + 2 * 97)
    assert counts["adapter"] == 4 * per_rank
    assert counts["heads"] == 32 * 2 + 2


def test_regex_target_modules_and_a_clear_error_when_nothing_matches():
    adapted = inject_adalora(tiny_bert(), AdaLoraConfig(init_r=2, target_r=1, target_modules=r".*\.query"))
    assert len(adapted.modules) == 2
    with pytest.raises(ValueError, match="matched no linear layer"):
        inject_adalora(tiny_bert(), AdaLoraConfig(init_r=2, target_r=1, target_modules=["nonexistent"]))


def test_unload_with_merge_gives_plain_model_with_same_outputs():
    model = tiny_bert()
    adapted = inject_adalora(model, AdaLoraConfig(init_r=4, target_r=2))
    with torch.no_grad():
        for m in adapted.modules.values():
            m.lora_E.normal_()
    x = torch.randint(0, 100, (2, 8))
    expected = model(input_ids=x).logits
    plain = unload(adapted, merge=True)
    assert not any(isinstance(m, SVDLinear) for m in plain.modules())
    torch.testing.assert_close(plain(input_ids=x).logits, expected, rtol=1e-5, atol=1e-5)


def reference_forward(layer: SVDLinear, x: torch.Tensor) -> torch.Tensor:
    """The textbook update, in fp32: W x + b + scale · B (A ⊙ E) x."""
    base = layer.base(x).float()
    return base + (x.float() @ (layer.lora_A * layer.lora_E).T @ layer.lora_B.T) * layer.scaling


@pytest.mark.parametrize("shape", [(5, 16), (2, 3, 16)])
def test_the_fused_forward_equals_the_textbook_update(shape):
    torch.manual_seed(0)
    layer = SVDLinear(nn.Linear(16, 24), r=4, scaling=1.7, init="gaussian")
    with torch.no_grad():
        layer.lora_E.normal_()
    x = torch.randn(*shape, 16)
    torch.testing.assert_close(layer(x), reference_forward(layer, x), rtol=1e-5, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the GPU path: bf16 GEMMs, the add inside the last one
        out = layer(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference_forward(layer, x), rtol=3e-2, atol=3e-2)
    layer.base.to(torch.bfloat16)  # a bf16 base outside autocast: the fp32 adapter's product is cast back
    out = layer(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference_forward(layer, x.to(torch.bfloat16)), rtol=3e-2, atol=3e-2)


def test_a_module_pruned_to_nothing_skips_its_adapter_once_the_mask_is_final():
    from adalora_core import RankAllocator

    torch.manual_seed(0)
    modules = {"kept": SVDLinear(nn.Linear(8, 8), 2, scaling=1), "gone": SVDLinear(nn.Linear(8, 8), 2, scaling=1)}
    config = AdaLoraConfig(init_r=2, target_r=1, tinit=0, tfinal=1, delta_t=1)
    allocator = RankAllocator(modules, config, 3)
    x = torch.randn(4, 8)
    for step in range(3):
        for name, module in modules.items():
            module.zero_grad(set_to_none=True)
            if not module.pruned:
                # "kept" has the larger gradients, so the final budget of 2 ranks goes to it alone.
                (module(x).sum() * (10.0 if name == "kept" else 1e-3)).backward()
        assert not any(m.pruned for m in modules.values()), "only a final mask prunes a module away"
        allocator.update(step) if step < 2 else None
    allocation = allocator.update(2)
    assert allocation.final and allocation.ranks == {"kept": 2, "gone": 0}
    gone = modules["gone"]
    assert gone.pruned and not modules["kept"].pruned
    gone.zero_grad(set_to_none=True)
    out = gone(x)
    assert torch.equal(out, gone.base(x))
    out.sum().backward()
    assert gone.lora_A.grad is None and gone.lora_E.grad is None and gone.lora_B.grad is None
    resumed = {n: SVDLinear(nn.Linear(8, 8), 2, scaling=1) for n in modules}  # a resumed run knows it too
    RankAllocator(resumed, config, 3).load_state_dict(allocator.state_dict())
    assert resumed["gone"].pruned and not resumed["kept"].pruned
