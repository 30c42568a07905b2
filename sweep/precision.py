"""The precision a trial trains in unless ``--set precision=`` says otherwise: fp32 on CPUs; on GPUs, what
was measured faster for its kind of model (``benchmarks/throughput.py``, docs/performance.md).

bf16 autocast pays where a training step is tens of GFLOP per image and tensor cores do the work; it costs
where kernel launches bound a step (small models), because autocast adds casts to every layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from models import ModelSpec

__all__ = ["BF16_MIN_CAPABILITY", "GPU_PRECISION", "PrecisionChoice", "default_precision"]

# Ampere (8.0) brought bf16 tensor cores; older GPUs emulate bf16 slowly, or not at all.
BF16_MIN_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision of the models of ``arch`` (of WRN ``min_width`` and wider; 0 for architectures without
    a width), and the evidence for it."""

    arch: str
    min_width: int
    precision: str
    evidence: str


# One H200, torch 2.11, batch 128, 2026-11-26 (docs/performance.md, "Measured on one H200").
GPU_PRECISION = (
    PrecisionChoice("lenet", 0, "fp32", "H200: bf16 trains LeNet A 27 % and PA 17 % slower (launch-bound)"),
    PrecisionChoice(
        "wrn", 0, "fp32", "H200: bf16 trains WRN-16-4 20 % slower; WRNs up to width 4 are as small (< 6 GFLOP/image)"
    ),
    PrecisionChoice(
        "wrn", 8, "bf16", "H200: bf16 trains WRN-28-10 2.2x faster; width 8-10 WRNs are as large (14-48 GFLOP/image)"
    ),
    # No GPU measurement of the ResNets yet: fp32, which is never wrong, until one says bf16 pays.
    PrecisionChoice("resnet", 0, "fp32", "ResNets not measured on a GPU yet: fp32, the safe default"),
)


def default_precision(model: ModelSpec, gpus: bool, capability: tuple[int, int] | None = None) -> tuple[str, str]:
    """(precision, why) of a trial of ``model``: ``gpus`` whether it gets a GPU; ``capability`` the compute
    capability of the cluster's GPUs where a GPU node was probed (None: not known, taken as bf16-capable)."""
    if not gpus:
        return "fp32", "CPU trials"
    if capability is not None and capability < BF16_MIN_CAPABILITY:
        return "fp32", f"the GPUs have compute capability {capability[0]}.{capability[1]}, no bf16 units"
    choices = [c for c in GPU_PRECISION if c.arch == model.arch and (model.width or 0) >= c.min_width]
    choice = max(choices, key=lambda c: c.min_width)
    return choice.precision, choice.evidence
