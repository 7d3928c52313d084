import json
import warnings

import peft
import pytest
import torch
import transformers

from adalora_core import AdaLoraConfig, TrainArgs, build_model, save_merged, save_peft_adapter, train
from tests.core.tiny import LOGITS_ATOL, collate, lm_data, tiny_gpt2, trained_classifier

warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def test_adapter_loads_in_stock_peft_with_our_logits(bert_dir, tmp_path):
    result = trained_classifier(bert_dir)
    x = torch.randint(0, 100, (4, 8))
    ours = result.adapted.model.eval()(input_ids=x).logits
    save_peft_adapter(result, tmp_path / "adapter", base_model=bert_dir, task_type="SEQ_CLS")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "ADALORA" and config["tinit"] < config["total_step"] - config["tfinal"]
    base = transformers.AutoModelForSequenceClassification.from_pretrained(bert_dir)
    loaded = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    torch.testing.assert_close(loaded(input_ids=x).logits, ours, rtol=0, atol=LOGITS_ATOL)
    plain = transformers.AutoModelForSequenceClassification.from_pretrained(bert_dir).eval()
    assert not torch.allclose(plain(input_ids=x).logits, ours, atol=1e-3), "training must change the output"


def test_merged_weights_load_in_stock_transformers_with_our_logits(bert_dir, tmp_path):
    result = trained_classifier(bert_dir)
    x = torch.randint(0, 100, (4, 8))
    ours = result.adapted.model.eval()(input_ids=x).logits
    save_merged(result, tmp_path / "merged")
    assert (tmp_path / "merged" / "model.safetensors").exists()
    merged = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    torch.testing.assert_close(merged(input_ids=x).logits, ours, rtol=0, atol=LOGITS_ATOL)


def test_pruned_rows_are_removed_and_a_rank_zero_module_round_trips(bert_dir, tmp_path):
    result = trained_classifier(bert_dir, target_r=0.5)  # 6 of 48 ranks survive: some modules end at 0
    ranks = {name: sum(keep) for name, keep in result.rank_pattern.items()}
    assert 0 in ranks.values()
    save_peft_adapter(result, tmp_path / "adapter", base_model=bert_dir, task_type="SEQ_CLS")
    from safetensors.torch import load_file
    tensors = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    for name, rank in ranks.items():
        assert tensors[f"base_model.model.{name}.lora_A"].shape[0] == rank
        assert tensors[f"base_model.model.{name}.lora_B"].shape[1] == rank
    assert not any("ranknum" in k for k in tensors)
    x = torch.randint(0, 100, (4, 8))
    ours = result.adapted.model.eval()(input_ids=x).logits
    base = transformers.AutoModelForSequenceClassification.from_pretrained(bert_dir)
    loaded = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    torch.testing.assert_close(loaded(input_ids=x).logits, ours, rtol=0, atol=LOGITS_ATOL)


def test_gpt2_conv1d_adapter_and_merged_weights_load_with_our_logits(tmp_path):
    tiny_gpt2().save_pretrained(tmp_path / "gpt2")
    model = build_model(str(tmp_path / "gpt2"), "causal_lm")
    result = train(model, AdaLoraConfig(init_r=4, target_r=2, tinit=1, tfinal=2, delta_t=1),
                   TrainArgs(max_steps=8, batch_size=4, learning_rate=2e-2), lm_data(), collate)
    x = torch.randint(0, 100, (2, 10))
    ours = result.adapted.model.eval()(input_ids=x).logits
    save_peft_adapter(result, tmp_path / "adapter", base_model=str(tmp_path / "gpt2"), task_type="CAUSAL_LM")
    save_merged(result, tmp_path / "merged")
    base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "gpt2")
    loaded = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    torch.testing.assert_close(loaded(input_ids=x).logits, ours, rtol=0, atol=LOGITS_ATOL)
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    torch.testing.assert_close(merged(input_ids=x).logits, ours, rtol=0, atol=LOGITS_ATOL)


def test_build_model_refuses_pickle_only_weights(tmp_path):
    model = tiny_gpt2()
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # a pickle: loading it could run code
    with pytest.raises(OSError, match="safetensors"):
        build_model(str(tmp_path), "causal_lm")
