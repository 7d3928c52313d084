"""The layering, read from the source with `ast`: every import statement counts, those inside functions too.

adalora_core (the algorithm) and service (the ground floor) are below api and worker, which do not import
each other; the command line (cli) is above them all. The client (SDK and `adalora` CLI) talks to the service
over HTTP only and imports none of it. No module of ours imports itself round a circle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("adalora_client", "adalora_core", "api", "cli", "service", "worker")
# What each package must never import (its own layer and those below are allowed).
FORBIDDEN = {
    "adalora_core": {"api", "cli", "service", "worker"},
    "service": {"api", "cli", "worker"},
    "api": {"cli", "worker"},
    "worker": {"api", "cli"},
    "cli": {"adalora_client"},
    "adalora_client": {"adalora_core", "api", "cli", "service", "worker"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def imported_names(path: Path, name: str) -> list[tuple[str, list[str]]]:
    """(module, names taken from it) for every import statement in the file; `import a.b` is ("a.b", [])."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, [alias.name for alias in node.names]))
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports. `from a import b` imports module a.b when there is one (a
    itself is then only its package, which Python loads for any submodule and is not counted), else a; a
    name resolves to the longest module it starts with."""
    modules = project_modules()

    def resolve(imported: str) -> str | None:
        parts = imported.split(".")
        return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules), None)

    graph = {}
    for name, path in modules.items():
        targets = set()
        for base, taken in imported_names(path, name):
            submodules = {f"{base}.{item}" for item in taken} & modules.keys()
            targets |= submodules if submodules and len(submodules) == len(taken) else {resolve(base), *submodules}
        graph[name] = targets - {None, name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_graph_reader_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "api.dry_run" in graph["api.routes.jobs"]  # imported inside a function
    assert "adalora_core.allocator" in graph["adalora_core.plan"]  # `from .allocator import ...`
    assert "service.dataset" in graph["service.dataset.formats"]  # a package's __init__
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_points_up_the_layers():
    upward = sorted(f"{module} imports {target}" for module, targets in import_graph().items()
                    for target in targets if target.split(".")[0] in FORBIDDEN[module.split(".")[0]])
    assert upward == []


def test_no_modules_import_each_other_round_a_circle():
    assert circles(import_graph()) == []


def imported_test_modules(path: Path, name: str, test_modules: set[str]) -> set[str]:
    """The test modules among those the file imports: `from tests.a.test_b import x`, `import tests.a.test_b`
    and `from tests.a import test_b` all import tests.a.test_b."""
    imported = set()
    for base, taken in imported_names(path, name):
        imported |= {base, *(f"{base}.{item}" for item in taken)}
    return (imported & test_modules) - {name}


def test_no_test_module_imports_another(tmp_path):
    """A test file is a leaf (changing one breaks no other): what tests share lives in a conftest.py or a
    helpers module (tests/helpers.py, tests/<area>/helpers.py), never in another test_*.py."""
    files = {module_name(path): path for path in sorted((REPO / "tests").rglob("test_*.py"))}
    probe = tmp_path / "test_probe.py"
    probe.write_text("from tests.helpers import new_job\nfrom tests.worker import test_runner\n"
                     "def f():\n    import tests.core.test_export as export\n")
    assert imported_test_modules(probe, "tests.test_probe", set(files)) == {"tests.worker.test_runner",
                                                                           "tests.core.test_export"}
    leaks = sorted(f"{name} imports {target}" for name, path in files.items()
                   for target in imported_test_modules(path, name, set(files)))
    assert leaks == []


def test_the_dataset_rules_load_without_torch():
    """The API's checks and the shared dataset rules never pull in torch or transformers (the dry run does,
    and is imported only when one is asked for)."""
    modules = ["api.main", "api.dataset_checks", *sorted(m for m in project_modules() if m.startswith("service."))]
    code = (f"import sys; import {', '.join(modules)}; "
            "loaded = [m for m in ('torch', 'transformers', 'worker') if m in sys.modules]; assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_client_loads_without_the_service_stack():
    """A laptop with only the SDK needs none of torch, the web framework or the database layers."""
    code = ("import sys; import adalora_client, adalora_client.cli.main; "
            "loaded = [m for m in ('torch', 'fastapi', 'sqlalchemy', 'celery', 'service') if m in sys.modules]; "
            "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
