"""Loaded at start-up by every Python process whose PYTHONPATH holds this folder (the Ray nodes a test starts,
their workers, a driver): while the file named by $CUDA_GUARD_FILE exists, every call into torch's CUDA
runtime raises, so that a test proves that work on the CPU never touches CUDA, in any process."""

import importlib.abc
import importlib.util
import os
import sys

# What reaches the CUDA runtime: initialisation, device queries, and the RNG helpers that query devices.
GUARDED = ("_lazy_init", "init", "is_available", "device_count", "current_device", "get_rng_state_all")


class CudaCalled(RuntimeError):
    pass


def _guarded(name, original):
    def guard(*args, **kwargs):
        if os.path.exists(os.environ.get("CUDA_GUARD_FILE", "")):
            raise CudaCalled(f"torch.cuda.{name} called in process {os.getpid()} while CUDA is forbidden")
        return original(*args, **kwargs)

    return guard


class _GuardTorchCuda(importlib.abc.MetaPathFinder):
    """Wraps torch.cuda's functions once the module has loaded."""

    def find_spec(self, name, path, target=None):
        if name != "torch.cuda":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            for function in GUARDED:
                setattr(module, function, _guarded(function, getattr(module, function)))

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("CUDA_GUARD_FILE"):
    sys.meta_path.insert(0, _GuardTorchCuda())
