"""Layers point one way (video <- model <- engine <- eval/serve/train) and no module imports itself back."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "recot"

#: What each area may import from other areas (lazy imports inside functions count too).
#: Every area's ``commands`` module may also import ``recot.cli`` (the shared error reporter).
ALLOWED: dict[str, set[str]] = {
    "_lazy": set(),
    "config": set(),
    "data": {"config"},
    "video": {"data"},
    "model": {"config", "data"},
    "engine": {"config", "data", "model", "video"},
    "training_utils": {"config", "data"},
    "pretrain": {"config", "data", "model", "video", "training_utils"},
    "train": {"config", "data", "model", "video", "engine", "training_utils"},
    "eval": {"config", "data", "model", "video", "engine"},
    "serve": {"config", "data", "model", "video", "engine"},
}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _imports(tree: ast.Module, top_level_only: bool) -> set[str]:
    # Top level includes ``if TYPE_CHECKING:`` blocks: a cycle for the type checker is a cycle too.
    nodes = [n for stmt in tree.body for n in ([stmt, *stmt.body] if isinstance(stmt, ast.If) else [stmt])]
    nodes = nodes if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recot"):
            # ``from recot import __version__`` is the one name any module may take from the package front.
            if node.module != "recot" or [a.name for a in node.names] != ["__version__"]:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("recot")}
    return found


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "recot"


def test_areas_import_only_the_layers_below() -> None:
    wrong = []
    for module, tree in _modules().items():
        area = _area(module)
        if area in ("recot", "cli"):  # the package front and the command dispatcher may see everything
            continue
        allowed = ALLOWED.get(area)
        assert allowed is not None, f"area {area!r} ({module}) has no layering rule in this test"
        # recot._lazy (lazy package attributes) is a leaf every package __init__ may use.
        allowed = allowed | {area, "_lazy"} | ({"cli"} if module.endswith(".commands") else set())
        wrong += [f"{module} -> {target}" for target in _imports(tree, False) if _area(target) not in allowed]
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles_between_modules() -> None:
    modules = _modules()
    graph = defaultdict(set)
    for module, tree in modules.items():
        for target in _imports(tree, True):
            # "from recot.model import checkpoint" names a submodule; otherwise the module itself.
            graph[module].add(target if target in modules else target.rsplit(".", 1)[0])
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            # A package's __init__ re-exporting its submodules is not a cycle of code.
            if nxt == node or node.startswith(nxt + ".") or nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module)
