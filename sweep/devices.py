"""Where work computes: the GPU that Ray assigned to it, else the CPU; and why torch cannot use a GPU.

Ray 2.60 no longer hides the node's GPUs from a task or actor that holds none (``CUDA_VISIBLE_DEVICES`` is
left as it is), so ``torch.cuda.is_available()`` tells what the node has, not what the trial holds. The
device therefore comes from Ray's assignment (:func:`assigned_gpu_ids`), and work that holds no GPU never
calls into ``torch.cuda`` at all: it opens no CUDA context on a GPU that other trials hold.

Imports Ray only inside :func:`assigned_gpu_ids`, so that the benchmark runs where no Ray is installed.
``python -m sweep.devices`` checks a GPU node's driver against the torch build (cluster.yaml runs it as the
GPU workers' setup command, so that such a node fails to start instead of training on the CPU).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple

import torch

from sweep.precision import BF16_MIN_CAPABILITY

__all__ = [
    "DEVICE_ERROR",
    "CudaProblem",
    "DeviceUnusable",
    "check_precision",
    "assigned_gpu_ids",
    "cuda_problem",
    "device_for",
    "driver_cuda_version",
]

DEVICE_ERROR = "device_error"  # the result a trial reports, with the one line, when it cannot use its GPU
# The oldest NVIDIA driver that runs the builds of a CUDA major version (NVIDIA's minor-version compatibility).
MIN_DRIVER = {12: "525", 13: "580"}


class DeviceUnusable(RuntimeError):
    """Work holds a GPU that torch cannot compute on; the message is one line: what, why and what to do."""


def assigned_gpu_ids() -> list[str]:
    """The GPUs Ray assigned to this task or actor (``ray.get_gpu_ids()``), as strings; [] when none."""
    import ray

    return [str(gpu) for gpu in ray.get_gpu_ids()]


def device_for(gpu_ids: Sequence[str] | None) -> torch.device:
    """The device of work that holds the GPUs ``gpu_ids`` (as :func:`assigned_gpu_ids` gives them), or of
    work outside Ray (``gpu_ids`` None: the first GPU when torch can use it, else the CPU).

    With ``[]`` the result is the CPU and ``torch.cuda`` is not touched. With GPUs, it is the first of
    them as torch numbers it (its place in ``CUDA_VISIBLE_DEVICES``, which Ray sets to the assigned ids).
    Raises DeviceUnusable (one line) when the work holds a GPU that torch cannot use.
    """
    if gpu_ids is None:
        return torch.device("cpu") if cuda_problem() else torch.device("cuda", 0)
    if not gpu_ids:
        return torch.device("cpu")
    problem = cuda_problem()
    if problem is not None:
        raise DeviceUnusable(
            f"holds GPU {gpu_ids[0]} but torch {torch.__version__} cannot use it ({problem.why}): {problem.advice}"
        )
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return torch.device("cuda", visible.index(gpu_ids[0]) if gpu_ids[0] in visible else int(gpu_ids[0]))


def check_precision(device: torch.device, precision: str) -> None:
    """Raise DeviceUnusable (one line) for bf16 work on a GPU without bf16 units (compute capability < 8.0),
    where autocast would emulate it many times slower than fp32."""
    if precision != "bf16" or device.type != "cuda":
        return
    capability = torch.cuda.get_device_capability(device)
    if capability < BF16_MIN_CAPABILITY:
        raise DeviceUnusable(
            f"trains in bf16, but {torch.cuda.get_device_name(device)} (compute capability "
            f"{capability[0]}.{capability[1]}) has no bf16 units: --set precision=fp32"
        )


class CudaProblem(NamedTuple):
    """Why torch cannot compute on a node's GPUs, and what to do about it."""

    why: str
    advice: str


def cuda_problem() -> CudaProblem | None:
    """Why torch cannot compute on this node's GPUs; None when it can."""
    build = torch.version.cuda
    if build is None:
        return CudaProblem("it is a build without CUDA", "install a CUDA build of torch")
    if torch.cuda.is_available():
        return _capability_problem()
    major = build.split(".")[0]
    image = f"use an image/AMI with driver >= {MIN_DRIVER.get(int(major), '?')} (CUDA {build})"
    driver = driver_cuda_version()
    if driver is None:
        return CudaProblem("no NVIDIA driver on this node: libcuda.so.1 does not load", image)
    if _version(driver) < _version(build):
        return CudaProblem(
            f"driver CUDA {driver} < {build}", f"{image} or install a torch build for CUDA {driver.split('.')[0]}"
        )
    return CudaProblem(f"CUDA finds no usable GPU with driver CUDA {driver}", "check the node with nvidia-smi")


def _capability_problem() -> CudaProblem | None:
    """The first GPU's compute capability against the oldest this torch build has kernels for."""
    supported = [int(arch[3:]) for arch in torch.cuda.get_arch_list() if arch.startswith("sm_")]
    major, minor = torch.cuda.get_device_capability(0)
    if not supported or major * 10 + minor >= min(supported):
        return None
    oldest = min(supported)
    return CudaProblem(
        f"{torch.cuda.get_device_name(0)} has compute capability {major}.{minor} < {oldest // 10}.{oldest % 10}",
        "use GPUs this build supports, or a torch build for these",
    )


def driver_cuda_version() -> str | None:
    """The CUDA version the node's NVIDIA driver supports (``cuDriverGetVersion``, "12.2"), None without a
    driver. Asks the driver library itself: it needs no CUDA context, and works where torch sees no GPU."""
    try:
        library = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int()
    if library.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def main() -> int:
    """One line on whether torch can compute on this node's GPUs; exit status 1 when it cannot."""
    problem = cuda_problem()
    if problem is not None:
        print(
            f"torch {torch.__version__} cannot use this node's GPUs ({problem.why}): {problem.advice}", file=sys.stderr
        )
        return 1
    major, minor = torch.cuda.get_device_capability(0)
    print(
        f"torch {torch.__version__} computes on {torch.cuda.get_device_name(0)} (compute capability {major}.{minor}, "
        f"driver CUDA {driver_cuda_version()})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
