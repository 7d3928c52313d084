"""A 4-bit NF4 base (bitsandbytes, on CPU here) with our SVD adapters on top, as QLoRA does: the base layers
stay 4-bit and frozen, the adapters fp32 and trained, and the export merges dW into a full-precision copy of
the base, which equals stock peft's AdaLoRA adapter applied to that base."""

import warnings

import pytest
import torch

pytest.importorskip("bitsandbytes")

from adalora_core import AdaLoraConfig, TrainArgs, build_model, parameter_count, save_merged, save_peft_adapter, train  # noqa: E402
from adalora_core.layer import is_quantized  # noqa: E402
from tests.core.tiny import collate  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning)


@pytest.fixture
def llama_dir(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                 pad_token_id=0)).save_pretrained(tmp_path / "llama")
    return str(tmp_path / "llama")


def test_adapters_train_on_a_4bit_base_and_merge_into_full_precision(llama_dir, tmp_path):
    import peft
    import transformers

    model = build_model(llama_dir, "causal_lm", dtype=torch.float32, quantization="nf4", device="cpu")
    q_proj = model.model.layers[0].self_attn.q_proj
    assert is_quantized(q_proj) and q_proj.weight.dtype == torch.uint8
    full_size = parameter_count(build_model(llama_dir, "causal_lm", empty=True))
    assert parameter_count(model) == full_size > sum(p.numel() for p in model.parameters())  # packed, counted whole
    torch.manual_seed(1)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(1, 100, (32, 16))]
    batch = collate(data[:16])
    with torch.no_grad():
        before = model(**batch).loss
    result = train(model, AdaLoraConfig(init_r=4, target_r=2, tinit=2, tfinal=2, delta_t=2),
                   TrainArgs(max_steps=10, batch_size=4, learning_rate=2e-2), data, collate)
    layer = result.adapted.modules["model.layers.0.self_attn.q_proj"]
    assert is_quantized(layer.base) and layer.lora_A.dtype == torch.float32
    assert sum(m.lora_E.abs().sum() for m in result.adapted.modules.values()) > 0  # the adapters learned
    with torch.no_grad():
        assert result.adapted.model.eval()(**batch).loss < before

    save_peft_adapter(result, tmp_path / "adapter", base_model=llama_dir, task_type="CAUSAL_LM")
    full = build_model(llama_dir, "causal_lm", dtype=torch.float32)
    save_merged(result, tmp_path / "merged", base_model=full)
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert not hasattr(merged.config, "quantization_config")
    base = transformers.AutoModelForCausalLM.from_pretrained(llama_dir)
    with_adapter = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    x = torch.randint(1, 100, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=x).logits, with_adapter(input_ids=x).logits,
                                   rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="cannot take dW in place"):
        layer.merge()
