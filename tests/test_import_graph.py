"""Imports run downhill: maths -> latent layer -> models -> criterion -> tasks -> hub/scripts."""

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fairseq_vrae")


def package_imports():
    """module -> the package modules it imports (relative imports, at any depth of the file)."""
    edges = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            module = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
            package = module[: -len(".__init__")] if name == "__init__.py" else module.rsplit(".", 1)[0]
            module = package if name == "__init__.py" else module
            with open(path, encoding="utf-8") as handle:
                tree = ast.parse(handle.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    edges.setdefault(module, set()).add(".".join(base + ([node.module] if node.module else [])))
    return edges


def test_no_model_imports_a_task_and_no_task_imports_the_criterion():
    wrong = [(m, t) for m, targets in package_imports().items() for t in targets
             if (".models" in m and ".tasks" in t) or (".tasks" in m and ".criterions" in t)]
    assert not wrong


def test_the_package_modules_import_each_other_without_a_cycle():
    edges = package_imports()
    modules = set(edges) | {t for ts in edges.values() for t in ts}

    def resolve(target):  # "pkg.mod.name" imported from a module resolves to that module
        while target and target not in modules:
            target = target.rsplit(".", 1)[0] if "." in target else ""
        return target

    graph = {m: {resolve(t) for t in edges.get(m, ())} - {"", m} for m in modules}
    # the package's __init__ files register everything; edges into them are not part of a cycle
    graph = {m: {t for t in ts if t not in ("fairseq_vrae",) and not (m.startswith(t + ".") or t.endswith("__init__"))}
             for m, ts in graph.items()}
    state = {}

    def visit(m, path):
        state[m] = "open"
        for t in graph.get(m, ()):
            if state.get(t) == "open":
                raise AssertionError(" -> ".join(path + [m, t]))
            if t not in state:
                visit(t, path + [m])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
