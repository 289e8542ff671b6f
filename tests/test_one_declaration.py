"""The layout rules of the issue that made each algorithm one declaration, checked on the source tree."""
from __future__ import annotations

import ast
from pathlib import Path

import adamkit

SRC = Path(adamkit.__file__).resolve().parent
#: the one other file allowed to name algorithms (a demo), and the benchmark suite (its own declarations)
EXEMPT = {SRC / "demo.py"}


def _own_module(name: str) -> Path:
    return Path(adamkit.get_optimizer_class(name).__module__.replace(".", "/") + ".py")


def _strings_in_code(path: Path):
    """String constants of ``path`` that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_algorithm_is_named_outside_its_own_module():
    # a name that is also a hyperparameter ("amsgrad": a flag of Adam, EAdam, AdaBelief, AGD) is not policed
    hyper = {h for name in adamkit.list_optimizers() for h in adamkit.get_optimizer_class(name).hyperparameters}
    names = set(adamkit.list_optimizers()) - hyper
    found = []
    for path in SRC.rglob("*.py"):
        if path in EXEMPT or "bench" in path.relative_to(SRC).parts:
            continue
        for lineno, value in _strings_in_code(path):
            if value in names and not str(path).endswith(str(_own_module(value))):
                found.append(f"{path.relative_to(SRC)}:{lineno}: {value!r}")
    assert not found, "algorithm names outside their modules:\n" + "\n".join(found)


def test_no_per_algorithm_function_outside_optim():
    names = set(adamkit.list_optimizers())
    found = []
    for path in SRC.rglob("*.py"):
        if "optim" in path.relative_to(SRC).parts or "bench" in path.relative_to(SRC).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.strip("_").lower() in names:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.name}")
    assert not found, found
