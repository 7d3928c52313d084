"""Why a model cannot be used, said in the user's terms: the model as they named it, which file is
missing, that code shipped with a model is never run; the server folder it resolved to never appears.

The dry run and the worker describe a failed load with the same words (load_problem); the job spec names
a few of the folders a user may choose from (model_folders).
"""

from __future__ import annotations

from pathlib import Path

from service.redaction import first_line, hide_server_paths
from service.settings import get_settings

SHOWN_FOLDERS = 5
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")  # what transformers loads, unsharded or not


def model_folders() -> list[str]:
    """Names (relative to their MODEL_DIRS root) of the saved models a job may name: folders with a
    config.json, one or two levels down (`tiny-bert`, `org/name`)."""
    names = {config.parent.relative_to(root).as_posix()
             for root in get_settings().resolved_model_dirs() if root.is_dir()
             for config in (*root.glob("*/config.json"), *root.glob("*/*/config.json"))}
    return sorted(names)


def some_model_folders() -> str:
    names = model_folders()
    if not names:
        return "MODEL_DIRS holds no model folders"
    more = f" and {len(names) - SHOWN_FOLDERS} more" if len(names) > SHOWN_FOLDERS else ""
    return f"MODEL_DIRS holds {', '.join(names[:SHOWN_FOLDERS])}{more}"


def has_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in WEIGHT_FILES)


def load_problem(model: str, error: BaseException) -> str:
    """What went wrong reading `model` (a MODEL_DIRS folder or a hub id) and what to do about it."""
    if hasattr(error, "describe"):  # adalora_core.hf.UnsupportedTask: no class for the task
        return error.describe(model)
    text = str(error)
    if "contains custom code" in text:
        return (f"{model!r} needs custom code (an auto_map in its config.json), and this server never runs code "
                "that comes with a model: use a model whose architecture transformers includes")
    if "no file named model.safetensors" in text:
        return (f"{model!r} has no {WEIGHT_FILES[0]} (nor a sharded {WEIGHT_FILES[1]}) in its folder; this "
                "server loads safetensors weights only: save the model with "
                "save_pretrained(folder, safe_serialization=True)")
    if (hub := _hub_problem(text.lower())) is not None:
        return f"{model!r} is not a folder in MODEL_DIRS ({some_model_folders()}), and as a hub id {hub}"
    return f"{model!r} could not be read ({hide_server_paths(first_line(error))})"


def _hub_problem(lowered: str) -> str | None:
    """How looking the model up on the hub failed, when that is what the loader says happened."""
    if any(sign in lowered for sign in ("couldn't connect", "outgoing traffic has been disabled", "offline mode")):
        return ("it needs the Hugging Face hub, which this server cannot reach (and it has no cached copy): name "
                "one of those folders, or ask the operator to add the model to MODEL_DIRS or to open hub access")
    if "not a valid model identifier" in lowered or "repository not found" in lowered:
        return "the hub has no such model (or it is private and this server has no token for it): check the id"
    return None
