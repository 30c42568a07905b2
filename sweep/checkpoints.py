"""The checkpoints Tune keeps of a trial (``<sweep>/<trial key>/checkpoint_NNNNNN/trial.pt``, on a local
folder or remote storage), what the trial had reported when it saved one (``reported.jsonl`` beside it), and
the mend a sweep needs to resume when Tune's saved state names one that Tune itself has deleted.

Why the trial's own record of its reports: Tune's ``result.json`` reaches the storage from the driver's
staging folder, uploaded every few seconds at best, while a checkpoint is uploaded by the trial with its
report. A driver that stops in between leaves epochs that a resumed trial, starting after its checkpoint,
never reports again; the checkpoint's ``reported.jsonl`` still holds them (see sweep.mirror.replay_trials).

Why the mend: Tune deletes a trial's checkpoints beyond ``CheckpointConfig(num_to_keep)`` the moment newer
ones arrive, but saves its experiment state only every few seconds. A driver that stops in between leaves a
state whose latest checkpoint of a running trial is gone, and ``Tuner.restore`` then fails that trial with
"Could not recover from checkpoint as it does not exist on storage anymore" (ray-project/ray#27790). The
checkpoints that replaced it are on storage, newer: the trial resumes from the newest one that loads.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs
import torch

__all__ = [
    "CHECKPOINT_FILE",
    "REPORTED_FILE",
    "MendedCheckpoint",
    "checkpoint_names",
    "checkpointed_results",
    "mend_lost_checkpoints",
    "read_checkpoint",
    "write_reported",
]

CHECKPOINT_FILE = "trial.pt"  # what sweep.trainable.save_trial_state writes in each checkpoint folder
REPORTED_FILE = "reported.jsonl"  # every result the trial reported up to the checkpoint, one JSON line each

CHECKPOINT_FOLDER = re.compile(r"checkpoint_\d+")  # Tune's name: checkpoint_ and a zero-padded index


def checkpoint_names(filesystem: pyarrow.fs.FileSystem, trial_folder: str) -> list[str]:
    """The names of the checkpoint folders in ``trial_folder`` (a path on ``filesystem``) that hold a
    CHECKPOINT_FILE, newest first; [] when there is none, or no such folder."""
    entries = filesystem.get_file_info(pyarrow.fs.FileSelector(trial_folder, allow_not_found=True))
    names = sorted(
        (
            e.base_name
            for e in entries
            if e.type == pyarrow.fs.FileType.Directory and CHECKPOINT_FOLDER.fullmatch(e.base_name)
        ),
        reverse=True,
    )
    return [
        name
        for name in names
        if filesystem.get_file_info(f"{trial_folder}/{name}/{CHECKPOINT_FILE}").type == pyarrow.fs.FileType.File
    ]


def read_checkpoint(filesystem: pyarrow.fs.FileSystem, path: str) -> dict[str, Any]:
    """The state in checkpoint file ``path`` on ``filesystem`` (see sweep.trainable.save_trial_state), its
    tensors on the CPU. Raises what torch.load raises for a truncated or corrupt file, and for one that holds
    anything but tensors and plain values (``weights_only``: a checkpoint on shared storage runs no code)."""
    with filesystem.open_input_stream(path) as stream:
        return torch.load(io.BytesIO(stream.read()), map_location="cpu", weights_only=True)


def write_reported(directory: str | Path, results: list[dict[str, Any]]) -> None:
    """Write ``results`` (the trial's reports so far, oldest first) into checkpoint folder ``directory``."""
    Path(directory, REPORTED_FILE).write_text("".join(json.dumps(result) + "\n" for result in results))


def read_reported(directory: str | Path) -> list[dict[str, Any]]:
    """The results :func:`write_reported` wrote into local checkpoint folder ``directory``; [] for a checkpoint
    of an engine that wrote none."""
    path = Path(directory, REPORTED_FILE)
    return _parse_reported(path.read_text()) if path.is_file() else []


def _parse_reported(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def checkpointed_results(trial_folder: str) -> list[dict[str, Any]]:
    """What the trial in ``trial_folder`` (a path or URI of its folder in Tune's experiment, local or on S3)
    had reported when it saved its newest checkpoint; [] when it has none, or one without that record."""
    filesystem, folder = pyarrow.fs.FileSystem.from_uri(trial_folder)
    names = checkpoint_names(filesystem, folder)
    if not names:
        return []
    path = f"{folder}/{names[0]}/{REPORTED_FILE}"
    if filesystem.get_file_info(path).type != pyarrow.fs.FileType.File:
        return []
    with filesystem.open_input_stream(path) as stream:
        return _parse_reported(stream.read().decode())


def _loads(filesystem: pyarrow.fs.FileSystem, path: str) -> bool:
    try:
        read_checkpoint(filesystem, path)
    except Exception:  # noqa: BLE001 - a file cut short by a stopped upload raises EOF, Runtime or ValueError
        return False
    return True


def _copy_into_place(filesystem: pyarrow.fs.FileSystem, source: str, target: str) -> None:
    """Copy the files of checkpoint folder ``source`` into folder ``target``, CHECKPOINT_FILE last: the file
    that makes a folder a checkpoint (:func:`checkpoint_names`), so that a copy cut short is none. File by
    file, because an object store such as S3 has no folders to move (a folder is a key prefix)."""
    files = [
        info.path
        for info in filesystem.get_file_info(pyarrow.fs.FileSelector(source, recursive=True))
        if info.type == pyarrow.fs.FileType.File
    ]
    for path in sorted(files, key=lambda path: path.endswith(f"/{CHECKPOINT_FILE}")):
        destination = f"{target}/{path.removeprefix(source).lstrip('/')}"
        filesystem.create_dir(destination.rsplit("/", 1)[0], recursive=True)
        filesystem.copy_file(path, destination)


def _remove_abandoned(filesystem: pyarrow.fs.FileSystem, folder: str, named: str, keep: str = "") -> None:
    """Remove what the stopped timeline left after checkpoint ``named`` of trial ``folder`` (but ``keep``):
    the checkpoints newer than it (their state now continues under its name: the resumed trial writes its
    own after it, and an older one left beside them would pass for the newest) and the hidden copies of
    earlier mends."""
    for entry in filesystem.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True)):
        newer = CHECKPOINT_FOLDER.fullmatch(entry.base_name) and entry.base_name > named
        abandoned = newer or entry.base_name.startswith(".mend-")
        if entry.type == pyarrow.fs.FileType.Directory and abandoned and entry.base_name != keep:
            filesystem.delete_dir(entry.path)


@dataclass(frozen=True)
class MendedCheckpoint:
    """Trial folder ``trial`` resumes from its checkpoint folder ``named``, which Tune had deleted and is now
    a copy of ``source``, the newest of the trial's checkpoints that loads."""

    trial: str
    named: str
    source: str


def mend_lost_checkpoints(experiment_path: str) -> list[MendedCheckpoint]:
    """Give every trial Tune will restore from experiment ``experiment_path`` (a path or URI of Tune's
    experiment folder, on a local disk or S3) the checkpoint its saved state names, where Tune had deleted
    it: a copy of the trial's newest checkpoint that loads, written into place with CHECKPOINT_FILE last (a
    mend cut short is mended again by the next), and the checkpoints after the named one removed. A trial
    with no checkpoint that loads is left as it is, and so is an experiment of which Tune saved no state
    yet. Returns the mends made, none on a second call."""
    from ray import tune

    try:
        trials = tune.ExperimentAnalysis(experiment_path).trials
    except ValueError:  # Tune saved no state yet (a driver stopped right after creating the Tuner)
        return []
    mended = []
    for trial in trials:
        lost = trial.checkpoint
        if trial.status == "TERMINATED" or lost is None:  # Tune restores no finished trial
            continue
        filesystem = lost.filesystem
        # No CHECKPOINT_FILE: deleted by Tune, or the copy of a mend cut short.
        if filesystem.get_file_info(f"{lost.path}/{CHECKPOINT_FILE}").type != pyarrow.fs.FileType.NotFound:
            continue
        folder, named = lost.path.rsplit("/", 1)
        source = next(
            (n for n in checkpoint_names(filesystem, folder) if _loads(filesystem, f"{folder}/{n}/{CHECKPOINT_FILE}")),
            None,
        )
        if source is None:
            continue
        # The stopped timeline's other checkpoints go first, its source last: a mend cut short anywhere leaves
        # at most the source, which holds the same state as the named one once that one has its file.
        _remove_abandoned(filesystem, folder, named, keep=source)
        _copy_into_place(filesystem, f"{folder}/{source}", lost.path)
        _remove_abandoned(filesystem, folder, named)
        mended.append(MendedCheckpoint(folder.rsplit("/", 1)[-1], named, source))
    return mended
