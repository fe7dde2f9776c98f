"""The package imports only downward: the layers below, read from the source with ``ast``, and no circle."""

from __future__ import annotations

import ast
from pathlib import Path

import mtrl_famo

PACKAGE = Path(mtrl_famo.__file__).parent

# From the ground floor up; a module may import its own layer (no circle) and the layers below.
LAYERS = [
    ["config", "run_files", "atomic"],
    ["benchmark_cache", "config_checks"],  # Meta-World's drawn goals, kept on disk  # the typed schema and file helpers: nothing of ours below them
    ["runtime", "optim", "buffer", "networks", "nonfinite", "checkpoint", "envs", "aggregators", "run_lock",
     "step_rules", "env_state", "envpool_envs", "memory", "run_records", "saved_config", "restart"],
    ["update"],  # the one MT-SAC update function
    ["graph_update"],  # the compiled update of an agent (it never imports sac: the agent builds it)
    ["sac", "stacked_sac"],
    ["evaluate", "video", "video.tasks", "video.gl", "video.encode", "video.render", "video.periodic"],
    ["train"],
    ["runconfig", "report", "report.runs", "report.groups", "report.stats", "report.summary", "report.format",
     "report.tables", "report.plots"],
    ["sweep", "population", "video.command", "report.command"],
    ["cli"],
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The layer of the longest entry of LAYERS that is ``module`` or a package holding it."""
    best, level = "", None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, level = name, i
    assert level is not None, f"mtrl_famo.{module} is in no layer of tests/test_layers.py: add it"
    return level


def our_imports(path: Path) -> set[str]:
    """Every ``mtrl_famo`` module ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mtrl_famo"):
            base = node.module.removeprefix("mtrl_famo").lstrip(".")
            for alias in node.names:  # `from mtrl_famo import video` imports a module
                sub = f"{base}.{alias.name}" if base else alias.name
                found.add(sub if (PACKAGE / sub.replace(".", "/")).exists()
                          or (PACKAGE / (sub.replace(".", "/") + ".py")).exists() else base)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("mtrl_famo.") for a in node.names if a.name.startswith("mtrl_famo.")}
    return {m for m in found if m}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py") if module_name(p) not in ("", "configs")}


def test_the_schema_imports_nothing_of_ours():
    assert our_imports(MODULES["config"]) == set()


def test_no_module_imports_from_a_higher_layer():
    upward = [f"{m} (layer {layer_of(m)}) imports {i} (layer {layer_of(i)})"
              for m, path in MODULES.items() for i in our_imports(path)
              if not i.startswith(m + ".") and layer_of(i) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    graph = {m: {i for i in our_imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import circle: " + " -> ".join(stack[stack.index(n):] + [n])
            if n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_every_module_states_its_job_in_its_first_line():
    for m, path in MODULES.items():
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and doc.splitlines()[0].strip(), f"mtrl_famo.{m} has no one-line docstring"
