"""The start-up hook and each fairseq 0.12.2 compatibility fix."""

import argparse
import dataclasses
import importlib.metadata
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fairseq_vrae import compat


def run_python(code: str, **env) -> str:
    environment = dict(os.environ, **env)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_startup_hook_is_loaded_without_torch_or_fairseq():
    out = run_python(
        "import sys; print('fairseq_vrae.compat' in sys.modules, 'torch' in sys.modules, "
        "'fairseq' in sys.modules, 'fairseq_vrae' in sys.modules, "
        "sum(type(f).__name__ == '_PatchFinder' for f in sys.meta_path))"
    )
    assert out == "True False False False 1"


def test_the_hook_is_an_installed_file_that_uninstall_removes():
    import site

    site_dirs = site.getsitepackages()
    installed = list(importlib.metadata.Distribution.discover(name="fairseq-vrae", path=site_dirs))
    assert installed, "fairseq-vrae is not installed in this environment"
    files = [str(f) for f in installed[0].files]
    assert "fairseq_vrae_compat.pth" in files  # in RECORD, so pip uninstall deletes it
    hooks = [os.path.join(d, "fairseq_vrae_compat.pth") for d in site_dirs]
    assert any(os.path.exists(h) for h in hooks)


def test_fairseq_imports_and_the_fixes_apply_in_a_fresh_interpreter():
    out = run_python(
        "import fairseq, fairseq.options, fairseq.checkpoint_utils, fairseq.distributed.utils, sys;"
        "import hydra.core.plugins, fairseq.modules.transformer_layer;"
        "print(sorted(sys.modules['fairseq_vrae.compat'].APPLIED))"
    )
    expected = ["all_gather_list", "bf16_without_tpu", "broadcast_object", "checkpoint_safe_globals",
                "hydra_plugin_scan", "process_group_teardown", "transformer_fast_path"]
    if sys.version_info >= (3, 11):
        expected.append("dataclass_defaults")
    assert out == str(sorted(expected))


def test_a_fix_can_be_switched_off_by_name():
    out = run_python(
        "import fairseq.options, sys; print(sorted(sys.modules['fairseq_vrae.compat'].APPLIED))",
        FAIRSEQ_VRAE_COMPAT_DISABLE="bf16_without_tpu",
    )
    assert "bf16_without_tpu" not in out and "checkpoint_safe_globals" in out


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the dataclass check is new in 3.11")
def test_dataclass_fix_is_scoped_to_fairseq_and_hydra():
    def config_classes(module):
        inner = type("Inner", (), {"__module__": module, "__annotations__": {"x": int}, "x": 1})
        inner = dataclasses.dataclass(inner)
        outer = type("Outer", (), {"__module__": module, "__annotations__": {"inner": inner}, "inner": inner()})
        return dataclasses.dataclass(outer)

    made = config_classes("hydra.conf.example")
    assert made().inner.x == 1
    with pytest.raises(ValueError, match="mutable default"):
        config_classes("someone_else.configs")


def test_dataclass_fix_is_a_no_op_for_a_fixed_release(monkeypatch):
    monkeypatch.setattr(compat, "_installed_version", lambda name: (0, 13, 0) if name == "fairseq" else (1, 3, 2))
    probe = type("Probe", (), {"__module__": "fairseq.dataclass.configs", "__hash__": None})
    assert not compat._config_needs_hash(probe)
    assert not compat._fairseq_affected()
    monkeypatch.setattr(compat, "_installed_version", lambda name: (0, 12, 2))
    assert compat._config_needs_hash(probe) and compat._fairseq_affected()


class NotAllowed:
    pass


def test_checkpoints_load_with_weights_only_still_on(tmp_path):
    import fairseq.checkpoint_utils  # noqa: F401  (applies the fix)

    path = tmp_path / "state.pt"
    torch.save({"args": argparse.Namespace(arch="lstm_lm", lr=[0.1]), "best": np.float64(3.5), "w": torch.ones(2)}, path)
    state = torch.load(path, weights_only=True)
    assert state["args"].arch == "lstm_lm" and state["best"] == 3.5
    torch.save({"evil": NotAllowed()}, tmp_path / "other.pt")
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        torch.load(tmp_path / "other.pt", weights_only=True)


@pytest.mark.parametrize("argv, tpu", [(["--bf16"], False), (["--bf16", "--tpu"], True), ([], False)])
def test_bf16_no_longer_forces_tpu_mode(argv, tpu):
    from fairseq import options

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, ["/tmp/data", "--arch", "lstm_lm", "--task", "language_modeling", *argv])
    assert args.tpu is tpu
    assert args.bf16 is ("--bf16" in argv)


def _two_ranks(rank, init_file, results):
    import torch.distributed as dist
    from fairseq.distributed import utils as distributed_utils
    from omegaconf import OmegaConf

    from fairseq_vrae.criterions.vrae_elbo import decorrelate_workers

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    state = {"cfg": OmegaConf.create({"model": {"arch": "vrae_lstm"}}), "w": torch.arange(3.0)} if rank == 0 else None
    received = distributed_utils.broadcast_object(state, src_rank=0, group=dist.group.WORLD)
    torch.manual_seed(123)  # what fairseq does on every worker before each step
    decorrelate_workers()
    results[rank] = (received["cfg"].model.arch, received["w"].tolist(), torch.randn(4).tolist())
    dist.destroy_process_group()


def test_resume_state_broadcast_and_per_worker_noise(tmp_path):
    import torch.multiprocessing as mp

    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_two_ranks, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    assert results[1][:2] == ("vrae_lstm", [0.0, 1.0, 2.0])
    assert results[0][2] != results[1][2]


# Builds a fairseq config (which scans hydra's plugins) with FileFinder lacking the
# legacy importer API, as on Python >= 3.12, and prints the plugins found.
CONFIG_WITH_PYTHON_312_FINDERS = """
import importlib.machinery, sys
if sys.argv[1] == "py312":
    for legacy in ("find_module", "find_loader"):
        if hasattr(importlib.machinery.FileFinder, legacy):
            delattr(importlib.machinery.FileFinder, legacy)
from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
args = options.parse_args_and_arch(options.get_training_parser(),
    ["/tmp/data", "--arch", "lstm_lm", "--task", "language_modeling"])
cfg = convert_namespace_to_omegaconf(args)
from hydra.core.plugins import Plugins
print(cfg.model._name, sorted(c.__module__ + "." + c.__name__ for c in Plugins.instance().discover()))
"""


def run_config_build(finders: str, **env):
    environment = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", CONFIG_WITH_PYTHON_312_FINDERS, finders],
                          capture_output=True, text=True, env=environment, timeout=300)


def test_hydra_plugin_scan_works_without_the_importer_api_python_312_removed():
    fixed = run_config_build("py312")
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    name, plugins = fixed.stdout.strip().split(" ", 1)
    assert name == "lstm_lm" and "BasicLauncher" in plugins and "BasicSweeper" in plugins
    # the same plugins as hydra finds on its own with the legacy API present
    legacy = run_config_build("py311", FAIRSEQ_VRAE_COMPAT_DISABLE="hydra_plugin_scan")
    assert legacy.returncode == 0, legacy.stderr[-3000:]
    assert legacy.stdout.strip() == fixed.stdout.strip()
    # and without the fix, the 3.12 finders break fairseq's config
    broken = run_config_build("py312", FAIRSEQ_VRAE_COMPAT_DISABLE="hydra_plugin_scan")
    assert broken.returncode != 0 and "find_module" in broken.stderr


def _gather_on_two_ranks(rank, init_file, results):
    import torch.distributed as dist
    from fairseq.distributed import utils as distributed_utils

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    # payloads of different sizes, the larger one far above fairseq's 16 KiB default cap
    payload = {"rank": rank, "posteriors": torch.full((1000 * (rank + 1), 8), float(rank))}
    gathered = distributed_utils.all_gather_list(payload, group=dist.group.WORLD, max_size=16384)
    results[rank] = [(item["rank"], tuple(item["posteriors"].shape), float(item["posteriors"].sum())) for item in gathered]
    dist.destroy_process_group()


def test_all_gather_list_works_on_gloo_without_a_size_cap(tmp_path):
    import torch.multiprocessing as mp

    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_gather_on_two_ranks, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    expected = [(0, (1000, 8), 0.0), (1, (2000, 8), 16000.0)]
    assert results[0] == results[1] == expected


TEARDOWN_PROBE = """
import sys, torch.distributed as dist
from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.distributed import utils as distributed_utils
parser = options.get_training_parser()
args = options.parse_args_and_arch(parser, ["unused", "--task", "language_modeling", "--arch", "lstm_lm",
    "--cpu", "--distributed-world-size", "1", "--distributed-backend", "gloo",
    "--distributed-init-method", "file://" + sys.argv[1]])
cfg = convert_namespace_to_omegaconf(args)
seen = []
distributed_utils.distributed_main(0, lambda cfg: seen.append(dist.is_initialized()), cfg, {})
print(seen, dist.is_initialized())
"""


@pytest.mark.parametrize("disabled, expected", [("", "[True] False"), ("process_group_teardown", "[True] True")])
def test_the_process_group_is_destroyed_once_fairseqs_main_has_returned(tmp_path, disabled, expected):
    """Left to interpreter finalization, gloo's threads can abort a finished worker
    (SIGABRT): the group must be gone before then, and without the fix it is not."""
    environment = dict(os.environ, FAIRSEQ_VRAE_COMPAT_DISABLE=disabled)
    done = subprocess.run([sys.executable, "-c", TEARDOWN_PROBE, str(tmp_path / "init")],
                          capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == expected
