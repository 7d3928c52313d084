"""Error texts without this server's folders: what a user reads (a 422, a job's error, its events) names
models and files as the user knows them, never where they live on the server.

Loaders (transformers, datasets, the OS) put absolute paths into their messages; a path under one of the
configured folders is shown relative to the setting (`MODEL_DIRS/tiny-bert`), one under the home folder or
the Python installation loses that prefix (`…/site-packages/x.py`). Of a loader's error only the first line
is shown (first_line): the rest is a traceback or hints meant for a developer.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from service.settings import get_settings


def first_line(error: BaseException) -> str:
    """The first line of an error's message (loaders append tracebacks and hints); its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def hide_server_paths(text: str) -> str:
    for folder, shown in _folders():
        text = re.sub(re.escape(folder) + r"(?![\w.-])", shown, text)
    return text


def _folders() -> list[tuple[str, str]]:
    """(folder, what to show instead), longest first so a folder inside another is replaced as itself."""
    settings = get_settings()
    named = [(settings.model_dirs, "MODEL_DIRS"), (settings.data_dirs, "DATA_DIRS"),
             ([settings.artifact_dir], "ARTIFACT_DIR")]
    pairs = {(str(form), shown) for folders, shown in named for folder in folders
             for form in (folder, folder.expanduser().resolve())}
    others = [Path.home(), Path(sys.prefix)] + [Path(os.environ[name]) for name in ("HF_HOME",) if name in os.environ]
    pairs |= {(str(form), "…") for folder in others for form in (folder, folder.resolve())}
    # A folder given relatively (var/models) or the root itself would match inside unrelated text.
    return sorted(((f, s) for f, s in pairs if Path(f).is_absolute() and len(Path(f).parts) > 1),
                  key=lambda pair: -len(pair[0]))
