"""What GPUs a sweep's trials will get on the Ray cluster it joined: the live nodes' GPUs, the GPUs its
autoscaler can add (a cluster launched with ``ray up`` starts with no GPU worker), and whether torch can
compute on them (a task on one GPU node).

Needs a joined Ray (``ray.init``); imports Ray and torch only inside its functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["GpuProbe", "GpuSurvey", "ProbeFailed", "probe_gpu_node", "survey_gpus"]

# Where ``ray up`` puts the autoscaler's config on the head (Ray Tune looks for it there too).
LAUNCHER_CONFIG = Path("~/ray_bootstrap_config.yaml")
PROBE_TIMEOUT_S = 120  # a GPU node busy with another job's tasks may take a while to take the probe
PROBE_GPU_SHARE = 0.01  # enough to be given a GPU (Ray then sets CUDA_VISIBLE_DEVICES), next to any trial


@dataclass(frozen=True)
class GpuSurvey:
    """The GPUs of the cluster: ``live`` on its nodes now, ``autoscaled`` the most its autoscaler's node
    types can add (0 without an autoscaler, as for a local Ray), and those node types' names."""

    live: float
    autoscaled: float
    node_types: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return self.live > 0 or self.autoscaled > 0

    def describe(self) -> str:
        live = f"{self.live:g} GPUs on its live nodes" if self.live else "no GPU on its live nodes"
        if not self.autoscaled:
            return live + (", no GPU node type in its autoscaler" if not self.live else "")
        return f"{live}, up to {self.autoscaled:g} from its autoscaler's node types ({', '.join(self.node_types)})"


def survey_gpus() -> GpuSurvey:
    """The GPUs of the joined cluster: live, and those its autoscaler's node types can add."""
    import ray

    node_types = _reported_node_types() or _launcher_node_types(LAUNCHER_CONFIG.expanduser())
    autoscaled = sum(gpus * count for _, gpus, count in node_types)
    return GpuSurvey(ray.cluster_resources().get("GPU", 0), autoscaled, tuple(name for name, _, _ in node_types))


def _reported_node_types() -> list[tuple[str, float, int]]:
    """(name, GPUs per node, most nodes) of each GPU node type in the cluster config an autoscaler reports to
    Ray's GCS (autoscaler v2, KubeRay; Ray Train reads it so too)."""
    from ray._private.state import state

    config = state.get_cluster_config()
    groups = config.node_group_configs if config is not None else []
    # max_count -1: no limit, counted as one node (enough to say that GPUs can come); 0: a group turned off.
    return [
        (g.name, g.resources["GPU"], max(g.max_count, 1)) for g in groups if g.resources.get("GPU", 0) and g.max_count
    ]


def _launcher_node_types(path: Path) -> list[tuple[str, float, int]]:
    """The same from the config that ``ray up`` leaves on the head for its autoscaler (``path``), with each
    node type's resources filled in from its instance type; [] where there is none (not the head of a
    launched cluster)."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    types = dict(config.get("available_node_types", {}))
    types.pop(config.get("head_node_type"), None)
    return [
        (name, spec["resources"]["GPU"], spec.get("max_workers", config.get("max_workers", 0)))
        for name, spec in types.items()
        if (spec.get("resources") or {}).get("GPU", 0)
    ]


class ProbeFailed(RuntimeError):
    """The probe task itself failed on the GPU node (torch does not import there, the worker died); the
    message is one line."""


@dataclass(frozen=True)
class GpuProbe:
    """What a task holding a share of one GPU found on node ``node``: the GPU's ``name`` and compute
    ``capability`` where torch can use it, else ``problem`` (sweep.devices' one line)."""

    node: str
    name: str | None = None
    capability: tuple[int, int] | None = None
    problem: str | None = None


def _probe() -> GpuProbe:
    """Runs as a Ray task on a GPU node: what torch makes of the GPU Ray assigned to it."""
    import ray
    import torch

    from sweep.devices import DeviceUnusable, assigned_gpu_ids, device_for

    node = ray.util.get_node_ip_address()
    try:
        device = device_for(assigned_gpu_ids())
    except DeviceUnusable as error:
        return GpuProbe(node, problem=str(error))
    return GpuProbe(node, torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device))


def probe_gpu_node(timeout: float = PROBE_TIMEOUT_S) -> GpuProbe | None:
    """Run :func:`_probe` on one live GPU node of the joined cluster; None when it did not run within
    ``timeout`` seconds (every GPU taken by other work). Raises ProbeFailed when the task itself failed."""
    import ray

    from sweep.cli import first_line

    task = ray.remote(num_gpus=PROBE_GPU_SHARE, num_cpus=0, max_retries=0)(_probe).remote()
    try:
        return ray.get(task, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(task, force=True)
        return None
    except ray.exceptions.RayError as error:
        cause = getattr(error, "cause", None) or error
        raise ProbeFailed(f"the task that checks a GPU node of the cluster failed: {first_line(cause)}") from None
