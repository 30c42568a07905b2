"""Scoring trained trials on a noise suite without training them again: the work of
``python -m sweep.evaluate`` (see there), in this process or as Ray tasks across a cluster.

A :class:`ScoringJob` is one finished trial's checkpoint and the settings its MLflow run lacks;
:func:`plan_jobs` makes them from the runs, :func:`score_jobs` scores them, making each noisy test set
once for every model that needs it.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from perturb import Perturbation, perturb_test_set, suite_settings
from sweep.cli import first_line
from sweep.cluster import join_ray
from sweep.data import DatasetTensors
from sweep.datasets import DATASETS
from sweep.devices import DeviceUnusable, assigned_gpu_ids, device_for
from sweep.metrics import noise_metric
from sweep.specs import TrialSpec
from sweep.storage import StorageError, SweepStorage

__all__ = ["ScoringJob", "find_checkpoint", "plan_jobs", "score_jobs", "score_on_cluster", "scoring_payload"]


@dataclass(frozen=True)
class ScoringJob:
    """One trained trial to score: its MLflow run, spec, checkpoint file, the epoch its scores are logged
    at, and the settings its run lacks."""

    run_id: str
    spec: TrialSpec
    checkpoint: str
    step: int
    settings: tuple[Perturbation, ...]


def find_checkpoint(storage: SweepStorage, sweep: str, key: str) -> str | None:
    """The ``trial.pt`` of the latest checkpoint Tune kept of trial ``key``, None when it kept none."""
    import pyarrow.fs

    from sweep.checkpoints import CHECKPOINT_FILE, checkpoint_names

    filesystem, folder = pyarrow.fs.FileSystem.from_uri(storage.path(f"{sweep}/{key}"))
    names = checkpoint_names(filesystem, folder)
    return storage.path(f"{sweep}/{key}/{names[0]}/{CHECKPOINT_FILE}") if names else None


def _load_model(job: ScoringJob, device: torch.device) -> torch.nn.Module:
    import pyarrow.fs

    from models import build_model
    from sweep.checkpoints import read_checkpoint

    model = build_model(job.spec.model)
    model.load_state_dict(read_checkpoint(*pyarrow.fs.FileSystem.from_uri(job.checkpoint))["model"])
    return model.to(device).eval()


def score_jobs(
    jobs: list[ScoringJob], data: dict[str, DatasetTensors], target: torch.device
) -> dict[str, dict[Perturbation, float]]:
    """Accuracy in percent of each job's model on each of its settings: {run id: {setting: accuracy}}.

    Jobs that share a test set (data set and test-image cap) are scored together: each distinct noisy
    test set (:meth:`Perturbation.same_images`) is made once and every model that needs it is scored on
    it, on ``target`` (see sweep.devices). A job whose checkpoint does not load (truncated, corrupt) is
    skipped with one line and has no entry in the result. Each line is printed at once (a Ray task's
    output reaches the driver so). ``data`` needs the test splits only (``DatasetTensors.test_only``).
    """
    from sweep.training import Normalizer, capped_test_set, evaluate

    progress = functools.partial(print, flush=True)
    scores: dict[str, dict[Perturbation, float]] = {}
    groups: dict[tuple[str, int | None], list[ScoringJob]] = {}
    for job in jobs:
        groups.setdefault((job.spec.dataset, job.spec.recipe.max_test_images), []).append(job)
    for (dataset, _), all_of_group in groups.items():
        # The models of one group on the device at a time, all of them: each noisy test set is made once.
        loaded = _load_models(all_of_group, target, progress)
        if not loaded:
            continue
        group, models = [job for job, _ in loaded], [model for _, model in loaded]
        scores.update({job.run_id: {} for job in group})
        tensors = data[dataset]
        images, labels = capped_test_set(
            tensors.test_images.to(target), tensors.test_labels.to(target), group[0].spec.recipe
        )
        normalizers = [
            Normalizer(DATASETS[dataset].mean, DATASETS[dataset].std, device=target, enabled=job.spec.recipe.normalize)
            for job in group
        ]
        # source (the setting whose images a setting shares; None: clean) -> job index -> its settings
        sources: dict[Perturbation | None, dict[int, list[Perturbation]]] = {}
        for i, job in enumerate(group):
            for setting in job.settings:
                sources.setdefault(setting.same_images(), {}).setdefault(i, []).append(setting)
        started = time.monotonic()
        for n, (source, users) in enumerate(sources.items(), 1):
            noisy = images if source is None else perturb_test_set(images, dataset, source)
            for i, settings in users.items():
                recipe = group[i].spec.recipe
                accuracy = evaluate(models[i], noisy, labels, normalizers[i], recipe.eval_batch_size, recipe.precision)
                scores[group[i].run_id].update(dict.fromkeys(settings, accuracy))
            name = "clean" if source is None else f"{source.noise} {source.level:g}"
            progress(
                f"{dataset}: [{n}/{len(sources)}] {name}: {len(users)} models scored ({time.monotonic() - started:.0f} s)"
            )
    return scores


def _load_models(
    jobs: list[ScoringJob], device: torch.device, progress: Callable[[str], None]
) -> list[tuple[ScoringJob, torch.nn.Module]]:
    """Each job with its model on ``device``; a job whose checkpoint does not load (truncated, corrupt) is
    left out, with one ``progress`` line."""
    loaded = []
    for job in jobs:
        try:
            loaded.append((job, _load_model(job, device)))
        except Exception as error:  # noqa: BLE001 - whatever a damaged file raises, this trial alone is skipped
            progress(
                f"skipped {job.spec.key}: its checkpoint {job.checkpoint} does not load ({first_line(error, 200)})"
            )
    return loaded


def plan_jobs(storage: SweepStorage, sweep: str, suite: str, runs: list) -> tuple[list[ScoringJob], list[str], int]:
    """The jobs of ``runs`` (one per trial, see sweep.runs.select_runs), the lines that say which
    trials are skipped and why, and how many trials hold every score of the suite already."""
    from sweep.tables import diverged

    jobs, skipped, complete = [], [], 0
    for run in runs:
        key = run.data.tags.get("trial_key")
        if diverged(run):
            skipped.append(f"skipped {key}: diverged ({run.data.tags.get('health_reason', 'no reason recorded')})")
            continue
        if run.info.status != "FINISHED":
            skipped.append(f"skipped {key}: its run is {run.info.status}, not FINISHED")
            continue
        dataset = run.data.params.get("dataset")
        if dataset is None:
            skipped.append(f"skipped {key}: its run records no dataset param")
            continue
        missing = tuple(
            s for s in suite_settings(suite, dataset) if noise_metric(s.noise, s.level, suite) not in run.data.metrics
        )
        if not missing:
            complete += 1
            continue
        try:
            spec = _spec_of(storage, sweep, key)
        except ValueError as why:
            skipped.append(f"skipped {key}: {why}")
            continue
        checkpoint = find_checkpoint(storage, sweep, key)
        if checkpoint is None:
            skipped.append(f"skipped {key}: no checkpoint in {storage.path(f'{sweep}/{key}')}")
            continue
        jobs.append(
            ScoringJob(
                run.info.run_id, spec, checkpoint, int(run.data.metrics.get("epoch", spec.recipe.epochs)), missing
            )
        )
    return jobs, skipped, complete


def _spec_of(storage: SweepStorage, sweep: str, key: str) -> TrialSpec:
    """The spec Tune ran trial ``key`` with (its ``params.json``); ValueError (why, one line) when the
    trial folder has none or it does not parse."""
    try:
        text = storage.read_text(f"{sweep}/{key}/params.json")
    except StorageError as error:  # unreadable (not UTF-8, say): this trial alone is skipped
        raise ValueError(str(error)) from None
    if text is None:
        raise ValueError(f"no trial folder with its spec in {storage.path(sweep)}")
    try:
        return TrialSpec.from_config(json.loads(text))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"its params.json does not parse ({type(error).__name__}: {error})") from None


def _score_task(jobs: list[ScoringJob], data: dict[str, DatasetTensors]) -> dict[str, dict[Perturbation, float]]:
    """:func:`score_jobs` in a Ray task, on the device Ray assigned to it."""
    return score_jobs(jobs, data, device_for(assigned_gpu_ids()))


def scoring_payload(data: dict[str, DatasetTensors]) -> dict[str, DatasetTensors]:
    """What the scoring tasks receive of ``data``: the test splits only, since they train nothing."""
    return {name: tensors.test_only() for name, tensors in data.items()}


def score_on_cluster(
    jobs: list[ScoringJob], data: dict[str, DatasetTensors], address: str
) -> dict[str, dict[Perturbation, float]]:
    """:func:`score_jobs` as Ray tasks: one per GPU of the cluster (one per two CPUs on a CPU cluster),
    each scoring a share of the jobs on its own copy of the noisy test sets. Raises RayUnavailable (one
    line) for a cluster that does not answer, DeviceUnusable (one line) for a GPU there that torch cannot use."""
    import ray

    if not ray.is_initialized():
        join_ray(address, verbose=False)  # Ray's log lines and the workers' output stay off the console
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    tasks = max(1, min(len(jobs), gpus or int(resources.get("CPU", 1) // 2)))
    remote = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1 if gpus else 2)(_score_task)
    shared = ray.put(scoring_payload(data))
    futures = [remote.remote(jobs[i::tasks], shared) for i in range(tasks)]
    try:
        parts = ray.get(futures)
    except ray.exceptions.RayTaskError as error:  # Ray's traceback of the task, unless it is a GPU torch cannot use
        if isinstance(error.cause, DeviceUnusable):
            raise DeviceUnusable(f"a scoring task on the cluster {error.cause}") from None
        raise
    merged: dict[str, dict[Perturbation, float]] = {}
    for part in parts:
        merged.update(part)
    return merged
