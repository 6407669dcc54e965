import functools
import importlib.util
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(os.path.dirname(TESTS), "scripts")

sys.path.insert(0, TESTS)


@functools.lru_cache(maxsize=None)
def load_script(name: str):
    """``scripts/<name>.py`` as a module: scripts/ is a folder of programs, not a package,
    and stays off sys.path (``from conftest import load_script``)."""
    spec = importlib.util.spec_from_file_location(f"scripts.{name}", os.path.join(SCRIPTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
