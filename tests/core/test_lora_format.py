"""AdaLoRA adapters rewritten as plain LoRA: both layouts load in stock peft's LoraConfig and give our logits;
the serving layout has one rank an engine accepts, alpha = r, and every module (rank 0 too)."""

import json
import warnings

import peft
import pytest
import torch
import transformers
from safetensors.torch import load_file

from adalora_core import SERVING_RANKS, save_lora_adapter, save_peft_adapter, save_serving_adapter
from adalora_core.lora_format import serving_rank
from tests.core.tiny import LOGITS_ATOL, collate, lm_data, tiny_gpt2, trained_classifier

warnings.filterwarnings("ignore", category=UserWarning, module="peft")


@pytest.fixture
def pruned(bert_dir, tmp_path):
    """A trained classifier with some modules pruned to rank 0, its AdaLoRA adapter, and our logits."""
    result = trained_classifier(bert_dir, target_r=0.5)
    ranks = {name: sum(keep) for name, keep in result.rank_pattern.items()}
    assert 0 in ranks.values() and max(ranks.values()) > 0
    folder = tmp_path / "adalora"
    save_peft_adapter(result, folder, base_model=bert_dir, task_type="SEQ_CLS")
    x = torch.randint(0, 100, (4, 8))
    return folder, ranks, x, result.adapted.model.eval()(input_ids=x).logits.detach()


def load_lora(bert_dir, folder):
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert isinstance(peft.PeftConfig.from_pretrained(folder), peft.LoraConfig)
    base = transformers.AutoModelForSequenceClassification.from_pretrained(bert_dir)
    return peft.PeftModel.from_pretrained(base, folder).eval(), config


def test_per_module_lora_loads_in_stock_peft_with_our_logits(bert_dir, pruned, tmp_path):
    adapter, ranks, x, ours = pruned
    kept = save_lora_adapter(adapter, tmp_path / "lora")
    assert kept == {name: r for name, r in ranks.items() if r > 0}
    model, config = load_lora(bert_dir, tmp_path / "lora")
    assert sorted(config["target_modules"]) == sorted(kept)  # rank-0 modules add nothing and are left out
    assert {**{m: config["r"] for m in kept}, **config["rank_pattern"]} == kept
    torch.testing.assert_close(model(input_ids=x).logits, ours, rtol=0, atol=LOGITS_ATOL)


def test_the_serving_layout_has_one_engine_rank_and_every_module(bert_dir, pruned, tmp_path):
    adapter, ranks, x, ours = pruned
    rank = save_serving_adapter(adapter, tmp_path / "serving")
    model, config = load_lora(bert_dir, tmp_path / "serving")
    assert rank == config["r"] == config["lora_alpha"] == 8 and rank in SERVING_RANKS  # scale 1, folded into B
    assert config["rank_pattern"] == {} and config["alpha_pattern"] == {}
    assert sorted(config["target_modules"]) == sorted(ranks)  # no module dropped
    tensors = load_file(tmp_path / "serving" / "adapter_model.safetensors")
    for name, kept in ranks.items():
        a, b = tensors[f"base_model.model.{name}.lora_A.weight"], tensors[f"base_model.model.{name}.lora_B.weight"]
        assert a.shape[0] == b.shape[1] == rank
        assert not a[kept:].any() and not b[:, kept:].any()  # zero padding past the kept ranks
        if kept == 0:
            assert not a.any() and not b.any()
    torch.testing.assert_close(model(input_ids=x).logits, ours, rtol=0, atol=LOGITS_ATOL)


def test_a_gpt2_adapter_converts_with_conv1d_layout(tmp_path):
    from adalora_core import AdaLoraConfig, TrainArgs, build_model, train

    tiny_gpt2().save_pretrained(tmp_path / "gpt2")
    result = train(build_model(str(tmp_path / "gpt2"), "causal_lm"),
                   AdaLoraConfig(init_r=4, target_r=2, tinit=1, tfinal=2, delta_t=1),
                   TrainArgs(max_steps=8, batch_size=4, learning_rate=2e-2), lm_data(), collate)
    x = torch.randint(0, 100, (2, 10))
    ours = result.adapted.model.eval()(input_ids=x).logits.detach()
    save_peft_adapter(result, tmp_path / "adapter", base_model=str(tmp_path / "gpt2"), task_type="CAUSAL_LM")
    save_lora_adapter(tmp_path / "adapter", tmp_path / "lora")
    save_serving_adapter(tmp_path / "adapter", tmp_path / "serving")
    for folder in ("lora", "serving"):
        base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "gpt2")
        loaded = peft.PeftModel.from_pretrained(base, tmp_path / folder).eval()
        torch.testing.assert_close(loaded(input_ids=x).logits, ours, rtol=0, atol=LOGITS_ATOL)


def test_serving_rank_is_the_smallest_size_that_fits():
    assert [serving_rank(r) for r in (0, 1, 8, 9, 64, 65)] == [8, 8, 8, 16, 64, 128]
    with pytest.raises(ValueError, match="above the largest rank"):
        serving_rank(600)


def test_only_adalora_adapters_convert(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    with pytest.raises(ValueError, match="not ADALORA"):
        save_lora_adapter(tmp_path, tmp_path / "out")
