"""Packaging for fairseq_vrae.

Besides the package, the install writes ``fairseq_vrae_compat.pth`` into
site-packages.  Python runs it at start-up; it loads ``fairseq_vrae/compat.py``
(without importing the package, torch or fairseq) so that the fairseq console
scripts work on this Python.  ``pip uninstall fairseq-vrae`` removes it again.
"""

import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

STARTUP_HOOK_NAME = "fairseq_vrae_compat.pth"

# One line, executed by site.py because it starts with "import" (possibly twice: a
# venv's lib64 symlink makes site.py visit site-packages again).  Finding the package
# does not run its __init__ (which imports fairseq); the hook is loaded on its own, with
# only the import machinery that is already in memory (importlib.util would pull in
# contextlib and more), and registered under its package name so that a later
# ``import fairseq_vrae`` reuses it.
STARTUP_HOOK_LINE = (
    "import sys, importlib.machinery as im; "
    "p = 'fairseq_vrae.compat' not in sys.modules and next(filter(None, "
    "(getattr(f, 'find_spec', lambda *a: None)('fairseq_vrae', None) for f in sys.meta_path)), None); "
    "d = p and p.submodule_search_locations and list(p.submodule_search_locations)[0]; "
    "l = d and im.SourceFileLoader('fairseq_vrae.compat', d + '/compat.py'); "
    "m = l and type(sys)('fairseq_vrae.compat'); "
    "l and (setattr(m, '__spec__', im.ModuleSpec('fairseq_vrae.compat', l, origin=l.path)), "
    "setattr(m, '__file__', l.path), setattr(m, '__loader__', l), "
    "sys.modules.setdefault('fairseq_vrae.compat', m), l.exec_module(m), m.install())\n"
)


class BuildPyWithStartupHook(build_py):
    """build_py that also places the start-up .pth at the root of the wheel."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            # editable wheels are assembled from install_lib, not build_lib
            target = self.get_finalized_command("install").install_lib
        else:
            target = self.build_lib
        os.makedirs(target, exist_ok=True)
        with open(os.path.join(target, STARTUP_HOOK_NAME), "w") as hook:
            hook.write(STARTUP_HOOK_LINE)


here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "README.md"), encoding="utf-8") as readme:
    long_description = readme.read()

setup(
    name="fairseq-vrae",
    version="0.1.0",
    description="Sentence variational autoencoder (Bowman et al. 2015) as a fairseq plugin",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.8",
    packages=find_packages(include=["fairseq_vrae", "fairseq_vrae.*"]),
    package_data={"fairseq_vrae": ["config/*.yaml"]},
    install_requires=[
        "fairseq==0.12.2",
        "torch>=1.10",
        "numpy<2",
        "sacremoses",
    ],
    extras_require={
        "bpe": ["fastBPE"],
        "plot": ["matplotlib"],
        # fairseq's --tensorboard-logdir writes through tensorboardX
        "tensorboard": ["tensorboardX"],
        "test": ["pytest", "pytest-xdist"],
    },
    cmdclass={"build_py": BuildPyWithStartupHook},
)
