"""Run-time fixes that let fairseq 0.12.2 work on Python >= 3.11 and torch >= 2.6.

This module is loaded at interpreter start by ``fairseq_vrae_compat.pth`` (installed
into site-packages by ``setup.py``), so the fixes hold for every ``fairseq-*`` command
in the environment, with or without ``--user-dir``.  Start-up stays cheap: nothing
here imports torch or fairseq.  A meta-path hook waits for the affected modules to be
imported and patches them then.

Each fix is gated on the versions it is needed for and is a no-op elsewhere:

* ``dataclass_defaults`` -- Python >= 3.11 rejects dataclass defaults whose class is
  unhashable, which every nested fairseq/hydra config is (fairseq issues #5012 and
  #5634; hydra-core 1.0.x has the same pattern).  Config classes of the ``fairseq``
  (<= 0.12.2) and ``hydra`` (hydra-core 1.0.x) packages get back an identity hash,
  which restores the Python 3.10 behaviour for them only.
* ``checkpoint_safe_globals`` -- torch >= 2.6 loads with ``weights_only=True``;
  fairseq checkpoints hold ``argparse.Namespace`` (legacy model configs such as
  ``lstm_lm``) and a few numpy scalar types.  Those classes are allow-listed;
  ``weights_only`` stays on.
* ``broadcast_object`` -- resuming with several data-parallel workers broadcasts the
  checkpoint state from rank 0 through an in-memory ``torch.save``/``torch.load`` of
  plain Python objects (tensors are sent separately).  That one in-memory channel
  between ranks of the same job is loaded with ``weights_only=False``.
* ``bf16_without_tpu`` -- ``--bf16`` makes fairseq switch on TPU mode (fairseq issue
  #4696); the switch is undone unless ``--tpu`` was given.
* ``all_gather_list`` -- fairseq gathers logging outputs that cannot be summed through
  a CUDA buffer capped at ``--all-gather-list-size``, which fails on gloo (CPU) and
  for payloads over 16 KiB.  Replaced by a gather on the backend's device, sized to
  the payload.
* ``process_group_teardown`` -- fairseq never destroys the process group, so gloo's
  worker threads can meet interpreter finalization and abort a worker (SIGABRT,
  "terminate called without an active exception") after training has finished, which
  torchrun reports as a failed job.  The group is destroyed after fairseq's closing
  barrier.
* ``transformer_fast_path`` -- torch >= 2.0: encoder layers loaded from a state dict
  call torch's fused kernel without the ``mask_type`` argument it now requires
  ("Mask Type should be defined"); they stay on fairseq's module path.
* ``hydra_plugin_scan`` -- hydra-core 1.0.x discovers its plugins through the
  ``find_module``/``load_module`` importer API, which Python 3.12 removed from
  ``FileFinder`` ("'FileFinder' object has no attribute 'find_module'"); every fairseq
  command reaches that scan when it builds its config.  The scanner is given finders
  that answer ``find_module`` from ``find_spec`` and import with ``importlib``.  Applied
  on every Python for hydra-core 1.0.x, so the path that 3.12 needs is the one in use
  (and tested) everywhere.
"""

from __future__ import annotations

import sys

# Only modules that are loaded anyway at start-up are imported here: this file runs
# in every interpreter of the environment.

#: Names of the fixes applied in this process, for tests and ``--help`` debugging.
APPLIED: list = []

_LAST_AFFECTED_FAIRSEQ = (0, 12, 2)
_LAST_AFFECTED_HYDRA = (1, 0, 99)


def _version_tuple(version: str) -> tuple:
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


_VERSIONS: dict = {}


def _installed_version(distribution: str):
    """The installed version as a tuple of ints, None when absent (cached)."""
    if distribution not in _VERSIONS:
        from importlib.metadata import PackageNotFoundError, version

        try:
            _VERSIONS[distribution] = _version_tuple(version(distribution))
        except PackageNotFoundError:
            _VERSIONS[distribution] = None
    return _VERSIONS[distribution]


def _affected(distribution: str, last_affected: tuple) -> bool:
    found = _installed_version(distribution)
    return found is not None and found <= last_affected


# --------------------------------------------------------------------------------------
# dataclass defaults (Python >= 3.11)


def _config_needs_hash(cls: type) -> bool:
    """True for a config class of an affected fairseq/hydra release with no hash."""
    if cls.__hash__ is not None:
        return False
    top = (getattr(cls, "__module__", "") or "").split(".", 1)[0]
    if top == "fairseq":
        return _affected("fairseq", _LAST_AFFECTED_FAIRSEQ)
    if top == "hydra":
        return _affected("hydra-core", _LAST_AFFECTED_HYDRA)
    return False


def fix_dataclass_defaults(dataclasses_module=None) -> bool:
    """Give fairseq/hydra config dataclasses an identity hash (Python >= 3.11 only).

    Installed when ``dataclasses`` is first imported, before any fairseq or hydra
    module can define a config, whatever import hooks (pytest's) come later.
    """
    import dataclasses

    if sys.version_info < (3, 11) or getattr(dataclasses.dataclass, "_fairseq_vrae", False):
        return False
    original = dataclasses.dataclass

    def dataclass(cls=None, /, **kwargs):
        def wrap(target):
            made = original(target, **kwargs)
            if _config_needs_hash(made):
                made.__hash__ = object.__hash__
            return made

        return wrap if cls is None else wrap(cls)

    dataclass._fairseq_vrae = True
    dataclass.__doc__ = original.__doc__
    dataclass.__wrapped__ = original
    dataclasses.dataclass = dataclass
    APPLIED.append("dataclass_defaults")
    return True


# --------------------------------------------------------------------------------------
# checkpoint loading (torch >= 2.6)


def checkpoint_safe_globals() -> list:
    """Classes found in fairseq checkpoints besides tensors and builtins."""
    import argparse

    import numpy as np

    allowed = [argparse.Namespace, np.dtype, np.ndarray]
    allowed += [type(np.dtype(name)) for name in ("float64", "float32", "int64", "int32")]
    try:
        from numpy.core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy >= 2 moved these
        from numpy._core.multiarray import _reconstruct, scalar
    allowed += [scalar, _reconstruct]
    return allowed


def fix_checkpoint_loading(_module=None) -> bool:
    import torch

    serialization = torch.serialization
    if not hasattr(serialization, "add_safe_globals"):
        return False
    if _version_tuple(torch.__version__) < (2, 6):
        return False
    serialization.add_safe_globals(checkpoint_safe_globals())
    APPLIED.append("checkpoint_safe_globals")
    return True


def fix_broadcast_object(module) -> bool:
    """Let rank 0 hand its in-memory checkpoint state to the other ranks again."""
    import inspect
    import io

    import torch

    original = getattr(module, "_broadcast_object_slow", None)
    if original is None or getattr(original, "_fairseq_vrae", False):
        return False
    if "weights_only" in inspect.getsource(original):
        return False  # fairseq already chooses; leave it alone
    broadcast = module.broadcast
    get_rank = module.get_rank

    def _broadcast_object_slow(obj, src_rank, group, dist_device):
        if get_rank(group) == src_rank:
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            payload = torch.ByteTensor(buffer.getbuffer()).to(dist_device)
            length = torch.LongTensor([len(payload)]).to(dist_device)
            broadcast(length, src=src_rank, group=group)
            broadcast(payload, src=src_rank, group=group)
            return obj
        length = torch.LongTensor([0]).to(dist_device)
        broadcast(length, src=src_rank, group=group)
        payload = torch.ByteTensor(int(length.item())).to(dist_device)
        broadcast(payload, src=src_rank, group=group)
        buffer = io.BytesIO(payload.cpu().numpy())
        # The bytes were written a moment ago by rank 0 of this job; they never touch disk.
        return torch.load(buffer, map_location="cpu", weights_only=False)

    _broadcast_object_slow._fairseq_vrae = True
    module._broadcast_object_slow = _broadcast_object_slow
    APPLIED.append("broadcast_object")
    return True


# --------------------------------------------------------------------------------------
# --bf16 without TPU mode


def fix_bf16_tpu(module) -> bool:
    original = getattr(module, "parse_args_and_arch", None)
    if original is None or getattr(original, "_fairseq_vrae", False):
        return False

    def parse_args_and_arch(parser, input_args=None, parse_known=False, *args, **kwargs):
        result = original(parser, input_args, parse_known, *args, **kwargs)
        parsed = result[0] if isinstance(result, tuple) else result
        given = sys.argv[1:] if input_args is None else list(input_args)
        if getattr(parsed, "bf16", False) and "--tpu" not in given:
            parsed.tpu = False
        return result

    parse_args_and_arch._fairseq_vrae = True
    parse_args_and_arch.__wrapped__ = original
    module.parse_args_and_arch = parse_args_and_arch
    APPLIED.append("bf16_without_tpu")
    return True


# --------------------------------------------------------------------------------------
# hydra-core 1.0.x plugin discovery (the legacy importer API is gone in Python 3.12)


class _ImportByName:
    """What the scanner gets as a 'loader': imports the module the normal way."""

    @staticmethod
    def load_module(fullname: str):
        import importlib

        return importlib.import_module(fullname)


class _SpecBackedFinder:
    """A path-entry finder seen through the old ``find_module`` API."""

    def __init__(self, finder):
        self._finder = finder

    def find_module(self, fullname: str, path=None):
        spec = self._finder.find_spec(fullname)
        return None if spec is None else _ImportByName()

    def __getattr__(self, name):
        return getattr(self._finder, name)


class _PluginScanPkgutil:
    """Stands in for ``pkgutil`` inside ``hydra.core.plugins`` only."""

    def __init__(self, pkgutil):
        self._pkgutil = pkgutil

    def walk_packages(self, *args, **kwargs):
        for info in self._pkgutil.walk_packages(*args, **kwargs):
            yield info._replace(module_finder=_SpecBackedFinder(info.module_finder))

    def __getattr__(self, name):
        return getattr(self._pkgutil, name)


def fix_hydra_plugin_scan(module) -> bool:
    pkgutil = getattr(module, "pkgutil", None)
    if pkgutil is None or isinstance(pkgutil, _PluginScanPkgutil):
        return False
    module.pkgutil = _PluginScanPkgutil(pkgutil)
    APPLIED.append("hydra_plugin_scan")
    return True


# --------------------------------------------------------------------------------------
# gathering logging outputs across workers (any backend, any size)


def _backend_device(group, torch_distributed):
    """Where a collective of ``group`` must have its tensors: CUDA for NCCL, else CPU."""
    import torch

    backend = str(torch_distributed.get_backend(group)).lower()
    if "nccl" in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_objects(data, group=None) -> list:
    """Every worker's ``data``, in rank order, on the CPU (tensors included).

    Two collectives: the payload sizes, then the payloads padded to the largest.  The
    buffers live on the device the backend works with and are sized to the payload,
    so nothing caps what can be gathered.
    """
    import pickle

    import torch
    import torch.distributed as dist
    from fairseq import utils

    device = _backend_device(group, dist)
    world_size = dist.get_world_size(group=group)
    payload = pickle.dumps(utils.move_to_cpu(data))
    size = torch.tensor([len(payload)], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size, group=group)
    sizes = [int(s.item()) for s in sizes]
    longest = max(sizes)
    local = torch.zeros(longest, dtype=torch.uint8)
    local[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    local = local.to(device)
    gathered = [torch.empty(longest, dtype=torch.uint8, device=device) for _ in range(world_size)]
    dist.all_gather(gathered, local, group=group)
    # bytes pickled a moment ago by the workers of this job
    return [pickle.loads(buffer[:n].cpu().numpy().tobytes()) for buffer, n in zip(gathered, sizes)]


def fix_all_gather_list(module) -> bool:
    """``all_gather_list`` without a CUDA buffer or a size cap."""
    original = getattr(module, "all_gather_list", None)
    if original is None or getattr(original, "_fairseq_vrae", False):
        return False
    get_global_group = module.get_global_group

    def all_gather_list(data, group=None, max_size=16384):
        if group is None:
            group = get_global_group()
        if isinstance(group, tuple):  # fairseq's TPU groups: leave them to fairseq
            return original(data, group=group, max_size=max_size)
        return gather_objects(data, group=group)

    all_gather_list._fairseq_vrae = True
    all_gather_list.__wrapped__ = original
    all_gather_list.__doc__ = original.__doc__
    module.all_gather_list = all_gather_list
    APPLIED.append("all_gather_list")
    return True


# --------------------------------------------------------------------------------------
# the process group outlives fairseq's distributed_main


def fix_process_group_teardown(module) -> bool:
    """Destroy the process group once every rank has finished ``main``.

    fairseq 0.12.2 leaves it to interpreter finalization, where gloo's worker threads
    can still be alive: the worker then aborts ("terminate called without an active
    exception", SIGABRT) after training has finished, and torchrun reports the job as
    failed.  The group is destroyed after fairseq's closing barrier, so no rank is
    still talking to it; a rank that fails before the barrier is left as it was."""
    original = getattr(module, "distributed_main", None)
    if original is None or getattr(original, "_fairseq_vrae", False):
        return False
    import torch.distributed as dist

    def distributed_main(i, main, cfg, kwargs):
        original(i, main, cfg, kwargs)
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

    distributed_main._fairseq_vrae = True
    distributed_main.__wrapped__ = original
    # torch.multiprocessing.spawn pickles the function by name: the name must find this one
    distributed_main.__module__, distributed_main.__qualname__ = original.__module__, original.__qualname__
    module.distributed_main = distributed_main
    APPLIED.append("process_group_teardown")
    return True


# --------------------------------------------------------------------------------------
# the fused Transformer encoder-layer fast path (torch >= 2.0)


def fast_path_needs_mask_type() -> bool:
    """True where torch's fused encoder layer takes the ``mask_type`` argument that
    fairseq 0.12.2 (written for torch 1.12/1.13) does not pass."""
    import torch

    try:
        schemas = torch._C._jit_get_schemas_for_operator("aten::_transformer_encoder_layer_fwd")
    except Exception:
        return False
    return any(argument.name == "mask_type" for schema in schemas for argument in schema.arguments)


def fix_transformer_fast_path(module) -> bool:
    """Keep encoder layers loaded from a checkpoint on fairseq's own code path."""
    layer_class = getattr(module, "TransformerEncoderLayerBase", None)
    if layer_class is None or not fast_path_needs_mask_type():
        return False
    original = layer_class._load_from_state_dict
    if getattr(original, "_fairseq_vrae", False):
        return False

    def _load_from_state_dict(self, *args, **kwargs):
        original(self, *args, **kwargs)
        # loading switches the layer to torch's fused kernel, which fairseq calls with
        # torch 1.13's arguments ("Mask Type should be defined"); stay on the module path
        self.load_to_BT = False

    _load_from_state_dict._fairseq_vrae = True
    _load_from_state_dict.__wrapped__ = original
    layer_class._load_from_state_dict = _load_from_state_dict
    APPLIED.append("transformer_fast_path")
    return True


# --------------------------------------------------------------------------------------
# the import hook


def _fairseq_affected() -> bool:
    return _affected("fairseq", _LAST_AFFECTED_FAIRSEQ)


def _hydra_affected() -> bool:
    return _affected("hydra-core", _LAST_AFFECTED_HYDRA)


def _always() -> bool:
    return True


#: (fix name, module, gate, patch run after the module executes), in the order applied.
#: A fix's name is what APPLIED lists and DISABLE_VARIABLE accepts.
FIXES: tuple = (
    ("dataclass_defaults", "dataclasses", _always, fix_dataclass_defaults),
    ("checkpoint_safe_globals", "fairseq.checkpoint_utils", _fairseq_affected, fix_checkpoint_loading),
    ("broadcast_object", "fairseq.distributed.utils", _fairseq_affected, fix_broadcast_object),
    ("all_gather_list", "fairseq.distributed.utils", _fairseq_affected, fix_all_gather_list),
    ("process_group_teardown", "fairseq.distributed.utils", _fairseq_affected, fix_process_group_teardown),
    ("bf16_without_tpu", "fairseq.options", _fairseq_affected, fix_bf16_tpu),
    ("hydra_plugin_scan", "hydra.core.plugins", _hydra_affected, fix_hydra_plugin_scan),
    ("transformer_fast_path", "fairseq.modules.transformer_layer", _fairseq_affected, fix_transformer_fast_path),
)
DISABLE_VARIABLE = "FAIRSEQ_VRAE_COMPAT_DISABLE"

#: module name -> [(gate, patch), ...] for the fixes in force (filled by install())
_HOOKS: dict = {}


class _PatchingLoader:
    def __init__(self, inner, patches):
        self._inner, self._patches = inner, patches

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        for gate, patch in self._patches:
            if gate():
                _safely(patch, module)

    def __getattr__(self, name):  # e.g. get_source, is_package for tracebacks
        return getattr(self._inner, name)


def _safely(patch, module) -> None:
    try:
        patch(module)
    except Exception as error:  # never break an unrelated import
        sys.stderr.write(f"fairseq_vrae.compat: {patch.__name__} not applied: {error}\n")


class _PatchFinder:
    def __init__(self):
        self._resolving = set()

    def find_spec(self, fullname, path, target=None):
        patches = _HOOKS.get(fullname)
        if not patches or fullname in self._resolving:
            return None
        self._resolving.add(fullname)
        try:
            if not any(gate() for gate, _ in patches):
                return None
            spec = None
            for finder in sys.meta_path:  # the other finders; this one steps aside
                find = getattr(finder, "find_spec", None)
                if finder is not self and find is not None:
                    spec = find(fullname, path, target)
                    if spec is not None:
                        break
        except Exception:
            return None
        finally:
            self._resolving.discard(fullname)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _PatchingLoader(spec.loader, patches)
        return spec


def _disabled() -> set:
    """Fixes named in FAIRSEQ_VRAE_COMPAT_DISABLE (comma-separated) are not applied."""
    import os

    return {name.strip() for name in os.environ.get(DISABLE_VARIABLE, "").split(",") if name.strip()}


def install() -> None:
    """Register the import hook once; patch modules that are already imported."""
    if any(type(finder).__name__ == "_PatchFinder" for finder in sys.meta_path):
        return  # already installed, possibly by another copy of this module
    disabled = _disabled()
    _HOOKS.clear()
    for name, module_name, gate, patch in FIXES:
        if name not in disabled:
            _HOOKS.setdefault(module_name, []).append((gate, patch))
    sys.meta_path.insert(0, _PatchFinder())
    for module_name, patches in _HOOKS.items():
        module = sys.modules.get(module_name)
        if module is not None:
            for gate, patch in patches:
                if gate():
                    _safely(patch, module)
