"""The project's structure rules, read from the source with `ast` (imports inside functions too).

Layers, each importing only from itself and the layers below it:
  0 config primitives (bench/schema.py) -> 1 models -> 2 tasks -> 3 runner -> 4 reports / slurm /
  benchmarks -> 5 CLI.
No import cycle between modules; no cross-module use of an `_underscore` name; no project file
over 400 lines; no function over 80 lines, except one marked with LONG_OK (a hand-written backward).

A new module under models/, tasks/, reports/, slurm/ or bench/benchmarks/ takes its package's layer;
a new module directly under bench/ must be named in RUNNER or CLI below.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "models", "tasks", "reports", "slurm")
LAYER_NAMES = ("config primitives", "models", "tasks", "runner", "reports/slurm/benchmarks", "CLI")
PRIMITIVES = {"bench", "bench.schema"}
RUNNER = {"bench.config", "bench.train", "bench.store", "bench.sweep", "bench.tracking", "bench.inference",
          "bench.word_vectors", "bench.packed", "bench.packed_records", "bench.packed_step", "bench.checkpoints", "bench.ranks",
          "bench.worker", "bench.store_copy", "bench.divergence", "bench.provenance",
          "bench.csv_log"}
CLI = {"bench.cli", "reports.cli"}
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80
LONG_OK = "# long function on purpose: hand-written backward"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def layer(mod: str):
    """The layer index of a project module; None for a bench/ module no layer names."""
    if mod in CLI:
        return 5
    if mod in PRIMITIVES:
        return 0
    if mod in RUNNER:
        return 3
    top = mod.split(".")[0]
    if top in ("reports", "slurm") or mod.startswith("bench.benchmarks"):
        return 4
    return {"models": 1, "tasks": 2}.get(top)


def rel(mod: str) -> str:
    return str(MODULES[mod].relative_to(ROOT))


def imports(mod: str):
    """(line, imported project module, names taken from it) for every import in `mod`."""
    path = MODULES[mod]
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    return imports_in(ast.parse(path.read_text(), str(path)), package)


def imports_in(tree: ast.AST, package: str):
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES:
                    out.append((node.lineno, a.name, []))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in MODULES:
                    out.append((node.lineno, sub, []))
                elif base in MODULES:
                    out.append((node.lineno, base, [a.name]))
    return out


def module_aliases(mod: str) -> dict:
    """Local names bound to project modules (`from bench import config as C` -> {'C': 'bench.config'})."""
    tree = ast.parse(MODULES[mod].read_text())
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES and a.asname:
                    out[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if f"{node.module}.{a.name}" in MODULES:
                    out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def test_the_checks_catch_what_they_are_for():
    """An upward import inside a function, a private name and a cycle are all seen."""
    tree = ast.parse("def f():\n    from bench.train import make_trainer, _private\n")
    found = imports_in(tree, "models")
    assert {(line, target) for line, target, _ in found} == {(2, "bench.train")}
    assert layer("bench.train") > layer("models.config")
    assert [n for _, _, names in found for n in names] == ["make_trainer", "_private"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_has_a_layer():
    missing = [rel(m) for m in MODULES if layer(m) is None]
    assert not missing, (f"no layer for {', '.join(missing)}: name the module in RUNNER or CLI in "
                         f"tests/test_layers.py (or move it into a layered package)")


def test_imports_point_down_the_layers():
    bad = []
    for mod in MODULES:
        me = layer(mod)
        for line, target, _ in imports(mod):
            them = layer(target)
            if me is not None and them is not None and them > me:
                bad.append(f"{rel(mod)}:{line} imports {target} ({LAYER_NAMES[them]}) from layer "
                           f"{LAYER_NAMES[me]}")
    assert not bad, "upward imports (order: " + " -> ".join(LAYER_NAMES) + "):\n" + "\n".join(bad)


def find_cycle(graph: dict):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle():
    graph = {m: {t for _, t, _ in imports(m) if t != m and not m.startswith(t + ".")} for m in MODULES}
    # importing a.b.c runs a/__init__.py and a/b/__init__.py: those edges are implied, not cycles
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_cross_module_private_names():
    bad = []
    for mod in MODULES:
        for line, target, names in imports(mod):
            bad += [f"{rel(mod)}:{line} imports {n} from {target}" for n in names
                    if n.startswith("_") and not n.startswith("__") and target != mod]
        aliases = module_aliases(mod)
        for node in ast.walk(ast.parse(MODULES[mod].read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{rel(mod)}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    bad = sorted(set(bad))
    assert not bad, "private names used across modules (make them public or move them):\n" + "\n".join(bad)


def file_sizes(pkg: str) -> dict:
    return {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in sorted((ROOT / pkg).rglob("*.py"))}


@pytest.mark.parametrize("pkg", PACKAGES + ("tests",))
def test_files_are_small(pkg):
    big = [f"{p}: {n} lines" for p, n in file_sizes(pkg).items() if n > MAX_FILE_LINES]
    assert not big, f"files over {MAX_FILE_LINES} lines (split them by concern):\n" + "\n".join(big)


def long_functions():
    """(file, line, name, lines) of every function over the limit that is not marked LONG_OK."""
    out = []
    for mod, path in MODULES.items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            n = node.end_lineno - node.lineno + 1
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            marked = any(LONG_OK in lines[i - 1] for i in range(max(1, first - 1), node.lineno + 1))
            if n > MAX_FUNCTION_LINES and not marked:
                out.append((rel(mod), node.lineno, node.name, n))
    return out


def test_functions_are_short():
    bad = [f"{f}:{line} {name}: {n} lines" for f, line, name, n in long_functions()]
    assert not bad, f"functions over {MAX_FUNCTION_LINES} lines (split them):\n" + "\n".join(bad)


def test_long_function_exception_is_used_once():
    marks = [f"{rel(m)}:{i}" for m, p in MODULES.items() for i, line in enumerate(p.read_text().splitlines(), 1)
             if LONG_OK in line]
    assert len(marks) <= 1, f"the long-function exception is for the one hand-written backward: {marks}"


OPTIONAL_DEPS = ("wandb", "submitit", "gensim", "wandb_workspaces")


def inner_imports(mod: str):
    """(line, module imported) for each import not at the module's top level."""
    tree = ast.parse(MODULES[mod].read_text())
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top and not getattr(node, "level", 0):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            out += [(node.lineno, n) for n in names]
    return out


def test_imports_at_the_top():
    """Outside the CLI, imports sit at the top of the module; the exception is an optional
    dependency, imported where it is used, with a comment on that line saying why."""
    bad = []
    for mod, path in MODULES.items():
        if layer(mod) == 5:
            continue
        lines = path.read_text().splitlines()
        for line, name in inner_imports(mod):
            optional = name.split(".")[0] in OPTIONAL_DEPS
            if not optional or "#" not in lines[line - 1]:
                bad.append(f"{rel(mod)}:{line} imports {name} inside a function"
                           + (" (optional dependency: add a comment on the line saying why)" if optional else ""))
    assert not bad, "imports belong at the top of the module:\n" + "\n".join(bad)
