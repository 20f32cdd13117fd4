"""The package's layers: every import of a module in src/rlft (at the top of the file or inside a
function) points to its own folder, a lower layer, or a sibling of its layer; no import cycle
between modules; `import rlft` (and the CLI's entry module) load no heavy or optional dependency.

Layers, lowest first (a folder name tells its layer):
0  errors, ops, batch, algorithms    pure: tensors in, tensors out
1  config                            schemas and the loader
2  runtime, telemetry, dist, accel   what every loop runs on
3  models, data, rewards, rollout, sandbox   the parts the loops assemble
4  rl, train, eval, pipeline, bench  the loops
5  cli, label, report, __main__      the edges users meet, with the Python API (rlft/__init__.py)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
LAYERS = [
    {"errors", "ops", "batch", "algorithms"},
    {"config"},
    {"runtime", "telemetry", "dist", "accel"},
    {"models", "data", "rewards", "rollout", "sandbox"},
    {"rl", "train", "eval", "pipeline", "bench"},
    {"cli", "label", "report", "__main__", ""},  # "": the package itself, rlft/__init__.py
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}
PURE = {"algorithms", "ops", "batch", "errors"}  # import nothing of rlft beyond each other


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in (SRC / "rlft").rglob("*.py")}


def imported_modules(path: Path) -> set[str]:
    """rlft modules `path` imports anywhere in the file; `from pkg import name` counts as the
    submodule pkg.name when that is a module, else as pkg."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES}


GRAPH = {m: imported_modules(p) for m, p in MODULES.items()}


def folder(module: str) -> str:
    """The top-level folder (or module) of rlft a module belongs to; "" for rlft itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_folder_has_a_layer():
    assert {folder(m) for m in MODULES} <= set(LAYER_OF)


def test_imports_point_down_or_sideways():
    upward = [
        f"{m} -> {d}"
        for m, deps in GRAPH.items()
        for d in deps
        if folder(d) != folder(m) and LAYER_OF[folder(d)] > LAYER_OF[folder(m)]
    ]
    assert upward == []


def test_pure_layer_imports_only_itself():
    leaks = [
        f"{m} -> {d}" for m, deps in GRAPH.items() if folder(m) in PURE for d in deps if folder(d) not in PURE
    ]
    assert leaks == []


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_strongly_connected_finds_a_planted_cycle():
    # a -> b -> c -> a is one cycle; d -> a hangs off it; e stands alone
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert strongly_connected(graph) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert strongly_connected(GRAPH) == []


def test_import_rlft_and_the_cli_load_no_heavy_dependency():
    heavy = [
        "torch",
        "transformers",
        "datasets",
        "peft",
        "vllm",
        "fastapi",
        "wandb",
        "playwright",
        "matplotlib",
    ]
    code = f"import sys, rlft, rlft.cli.main; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
