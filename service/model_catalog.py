"""The saved models in MODEL_DIRS, described without torch or transformers: family, parameter count and the
task kinds transformers has a class for, read from config.json, the safetensors headers and transformers'
own Auto-class tables (parsed from its source: importing them loads torch, which the API never does)."""

from __future__ import annotations

import ast
import json
import math
import struct
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path

from service.jobspec import find_under
from service.model_problems import WEIGHT_FILES, model_folders
from service.settings import get_settings

# Task kind -> the name of transformers' table (model_type -> class) its Auto class looks models up in.
TASK_TABLES = {
    "sequence_classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "causal_lm": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "seq2seq": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
}
MAX_HEADER_BYTES = 100 << 20  # a safetensors header larger than this is no header


@dataclass(frozen=True)
class ServerModel:
    name: str                  # what a job's `model` names: the folder relative to its MODEL_DIRS root
    family: str                # config.json's model_type (bert, llama, t5 ...)
    architectures: list[str]
    parameters: int | None     # tensor elements in the weights files; None when there are none
    tasks: list[str]           # task kinds this family has a transformers class for


@cache
def task_tables() -> dict[str, frozenset[str]]:
    """Task kind -> the model types transformers can build for it, read from modeling_auto.py's source."""
    spec = find_spec("transformers")
    assert spec is not None and spec.submodule_search_locations, "transformers is a dependency"
    source = Path(spec.submodule_search_locations[0]) / "models" / "auto" / "modeling_auto.py"
    wanted = {table: task for task, table in TASK_TABLES.items()}
    found: dict[str, frozenset[str]] = {}
    for node in ast.parse(source.read_text()).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(target := node.targets[0], ast.Name)
                and target.id in wanted):
            assert isinstance(node.value, ast.Call), f"modeling_auto.py's {target.id} is no OrderedDict([...]) call"
            pairs = ast.literal_eval(node.value.args[0])  # OrderedDict([(model_type, class name), ...])
            found[wanted[target.id]] = frozenset(model_type for model_type, _ in pairs)
    missing = set(TASK_TABLES) - found.keys()
    assert not missing, f"transformers' modeling_auto.py no longer defines the tables for {sorted(missing)}"
    return found


def safetensors_elements(path: Path) -> int:
    """Tensor elements stored in one safetensors file, from its JSON header (8-byte length, then JSON)."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"{path.name}: not a safetensors file")
        header = json.loads(f.read(length))
    return sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")


def parameter_count(folder: Path) -> int | None:
    single, index = (folder / name for name in WEIGHT_FILES)
    if single.is_file():
        return safetensors_elements(single)
    if index.is_file():
        shards = set(json.loads(index.read_text())["weight_map"].values())
        return sum(safetensors_elements(folder / shard) for shard in shards)
    return None


def describe(name: str, folder: Path) -> ServerModel | None:
    """None for a folder whose config.json is unreadable or names no model_type (it cannot be trained)."""
    try:
        config = json.loads((folder / "config.json").read_text())
        family = config["model_type"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        parameters = parameter_count(folder)
    except (OSError, ValueError, KeyError, struct.error):
        parameters = None
    tables = task_tables()
    tasks = [task for task in TASK_TABLES if family in tables[task]]
    return ServerModel(name, family, list(config.get("architectures") or []), parameters, tasks)


def server_models() -> list[ServerModel]:
    """Every model folder a job may name (service.model_problems.model_folders) that holds safetensors
    weights, described; folders without them are left out, since no job could train them."""
    roots = get_settings().resolved_model_dirs()
    # A folder that resolves outside the roots (a symlink out of MODEL_DIRS) is not one a job may name.
    folders = ((name, find_under(name, roots, want_dir=True)) for name in model_folders())
    described = (describe(name, folder) for name, folder in folders if folder is not None)
    return [model for model in described if model is not None and model.parameters is not None]
