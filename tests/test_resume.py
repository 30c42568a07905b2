"""Restoring a trial from its checkpoint: on any device, and bit for bit.

The unit tests call sweep.trainable.save_trial_state / restore_trial_state directly (no Ray); the resume
test runs the real trainable under Ray Tune and takes its worker away mid-trial.
"""

import json
import os
import random
import signal
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from models import build_model
from sweep import trainable
from sweep.catalog import build_sweep
from sweep.checkpoints import CHECKPOINT_FILE
from sweep.data import load_dataset, share_datasets
from sweep.health import HealthMonitor
from sweep.metrics import EPOCH_METRICS, parse_noise_metric
from sweep.trainable import restore_trial_state, save_trial_state, train_trial
from sweep.training import make_optimizer
from tests.datasets import write_mnist

SPEC = build_sweep("lenet", profile="smoke")[4]  # PA: LeNet A with its push-pull layer
assert SPEC.model.pushpull


@pytest.fixture(autouse=True)
def global_rng_kept():
    """These tests set the global RNGs: give the rest of the session back the states it had."""
    states = torch.get_rng_state(), random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    yield
    torch.set_rng_state(states[0])
    random.setstate(states[1])
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def parts(device: str):
    """A model of SPEC on ``device``, its optimizer, and a CPU data generator (as in train_trial)."""
    model = build_model(SPEC.model).to(device)
    return model, make_optimizer(model, SPEC.recipe), torch.Generator()


def train_step(model, optimizer, device: str) -> torch.Tensor:
    images = torch.rand(8, 1, 28, 28, device=device)
    labels = torch.arange(8, device=device) % 10
    loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def draw_from_every_rng(generator: torch.Generator) -> None:
    torch.rand(100)
    torch.rand(100, generator=generator)
    random.random()
    if torch.cuda.is_available():
        torch.rand(100, device="cuda")


def save_a_trained_trial(directory: Path, device: str) -> dict:
    """Train a step on ``device``, save the trial's state, and return what was saved (cloned)."""
    torch.manual_seed(1)
    random.seed(1)
    model, optimizer, generator = parts(device)
    generator.manual_seed(2)
    train_step(model, optimizer, device)
    draw_from_every_rng(generator)  # states other than the seeds' own
    assert all(t.device.type == torch.device(device).type for t in model.state_dict().values())
    monitor = HealthMonitor(10, steps=300, judged=True)
    final = {"test_acc": 97.5, "health": "healthy"}
    save_trial_state(directory, model, optimizer, monitor, generator, 3, final)
    saved = {
        "weights": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "momentum": {i: s["momentum_buffer"].cpu().clone() for i, s in optimizer.state_dict()["state"].items()},
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "data": generator.get_state(),
        "monitor": monitor,
        "final": final,
    }
    if torch.cuda.is_available():
        saved["cuda"] = torch.cuda.get_rng_state_all()
    draw_from_every_rng(generator)  # move every RNG on: the restore must bring them back
    return saved


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: no torch.cuda device here"),
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_a_trial_saved_and_restored_on_a_device_gets_its_weights_there_and_its_rng_states_as_cpu_byte_tensors(
    tmp_path, device
):
    """The restore of train_trial on ``device``. On CUDA this is the case that failed: the file loaded onto
    the GPU made the RNG states CUDA tensors, and torch.set_rng_state raised TypeError. Proves: weights and
    momentum buffers land on the model's device with the saved values, every RNG state (torch CPU, Python,
    the data generator, CUDA) is back to the saved one as a CPU ByteTensor, and training goes on."""
    saved = save_a_trained_trial(tmp_path, device)
    model, optimizer, generator = parts(device)

    monitor, epoch, final = restore_trial_state(tmp_path, model, optimizer, generator)

    assert (monitor, epoch, final) == (saved["monitor"], 3, saved["final"])
    for state in (
        torch.get_rng_state(),
        generator.get_state(),
        *(torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []),
    ):
        assert state.dtype == torch.uint8 and state.device.type == "cpu"
    assert torch.equal(torch.get_rng_state(), saved["torch"])
    assert torch.equal(generator.get_state(), saved["data"])
    assert random.getstate() == saved["python"]
    if torch.cuda.is_available():
        assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), saved["cuda"], strict=True))
    weights = model.state_dict()
    assert weights.keys() == saved["weights"].keys()
    for name, tensor in weights.items():
        assert tensor.device.type == torch.device(device).type, name
        assert torch.equal(tensor.cpu(), saved["weights"][name]), name
    momentum = optimizer.state_dict()["state"]
    assert momentum.keys() == saved["momentum"].keys()
    for index, state in momentum.items():
        assert state["momentum_buffer"].device.type == torch.device(device).type
        assert torch.equal(state["momentum_buffer"].cpu(), saved["momentum"][index])
    assert torch.isfinite(train_step(model, optimizer, device))


@pytest.mark.filterwarnings("ignore:for .* copying from a non-meta parameter:UserWarning")  # meta holds no values
def test_the_restore_does_not_load_the_checkpoint_onto_the_device_of_the_model(tmp_path):
    """The GPU failure, reproduced without a GPU: a model on the "meta" device stands for one on a GPU.
    Loading the file onto the model's device, as train_trial once did, would make the RNG states meta
    tensors, which torch.set_rng_state refuses with the TypeError seen on GPUs. Proves: the restore loads
    on the CPU, gives the RNG states back as the saved CPU ByteTensors, and leaves the weights and the
    optimizer state on the model's device, where a training step runs."""
    with pytest.raises(TypeError, match="RNG state must be a torch.ByteTensor"):
        torch.set_rng_state(torch.get_rng_state().to("meta"))  # what the old map_location=device led to
    saved = save_a_trained_trial(tmp_path, "cpu")
    model, optimizer, generator = parts("meta")

    assert restore_trial_state(tmp_path, model, optimizer, generator)[1] == 3

    for restored, name in ((torch.get_rng_state(), "torch"), (generator.get_state(), "data")):
        assert restored.dtype == torch.uint8 and restored.device.type == "cpu"
        assert torch.equal(restored, saved[name])
    assert random.getstate() == saved["python"]
    assert all(t.device.type == "meta" for t in model.state_dict().values())
    assert all(s["momentum_buffer"].device.type == "meta" for s in optimizer.state_dict()["state"].values())
    train_step(model, optimizer, "meta")


# --- bit for bit, through Ray Tune ----------------------------------------------------------------

EPOCHS, KILLED_IN = 4, 3  # the worker dies in epoch 3, once epoch 2 is checkpointed and epoch 3 trained
# Augmentation draws from the data generator every step, and the learning rate decays after the restart.
RESUME_SPEC = build_sweep(
    "lenet", profile="smoke", overrides=[(None, "epochs", EPOCHS), (None, "milestones", (3,)), (None, "augment", True)]
)[4]


def trial_killed_in_epoch(config, datasets):
    """train_trial; on its first attempt with ``config["killed_in"]`` set, it stops when it is about to report
    that epoch (trained, scored, checkpoint not yet handed to Tune): its worker SIGKILLs itself, as a lost node
    would, or, with ``config["raises"]``, the trial raises RuntimeError."""
    killed_in = config["killed_in"]
    if killed_in is None or trainable.tune.get_checkpoint() is not None:
        return train_trial(config, datasets)
    report = trainable.tune.report

    def report_or_die(metrics, **kwargs):
        if metrics["epoch"] == killed_in:
            if config.get("raises"):
                raise RuntimeError(f"stopped in epoch {killed_in}")
            os.kill(os.getpid(), signal.SIGKILL)
        report(metrics, **kwargs)

    with mock.patch.object(trainable.tune, "report", report_or_die):
        return train_trial(config, datasets)


def epoch_results(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]


def scores(result: dict) -> dict:
    """What a trial computes: EPOCH_METRICS' values but the timings, and every noise-suite accuracy."""
    timings = {"epoch_seconds", "images_per_second"}
    return {
        k: v
        for k, v in result.items()
        if (k in EPOCH_METRICS and k not in timings) or k in ("epoch", "health") or parse_noise_metric(k)
    }


def final_state(result) -> dict:
    """What the latest checkpoint Tune holds of a trial (a ray.tune.Result) saved."""
    with result.checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)


def test_a_trial_whose_worker_dies_resumes_bit_for_bit(ray_cluster, tmp_path):
    """Two runs of the real trainable under Ray Tune, side by side: one uninterrupted for EPOCHS epochs, one
    whose worker is SIGKILLed in epoch KILLED_IN (epoch KILLED_IN - 1 checkpointed, epoch KILLED_IN trained
    and lost), which Tune restarts in a new process from its last checkpoint. Proves that the checkpoint
    holds all the state training depends on (weights, momentum, the data generator's and the other RNG
    states, health, lr schedule position) and that the restore puts it back exactly: every per-epoch score
    (train loss and accuracy, test accuracy, lr, noise-suite accuracies) and the final weights, optimizer
    state and data-generator state are bitwise equal to the uninterrupted run's. (CPU, one thread per trial.)"""
    from ray import tune

    write_mnist(tmp_path / "data", n_train=640, n_test=100)  # 10 steps an epoch
    datasets = share_datasets({"mnist": load_dataset("mnist", tmp_path / "data")})
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trial_killed_in_epoch, datasets=datasets), {"cpu": 1}),
        # overhead_budget 1: every epoch evaluates and checkpoints, so that the worker dies right after the
        # checkpoint of epoch KILLED_IN - 1.
        param_space={
            "spec": RESUME_SPEC.to_dict(),
            "killed_in": tune.grid_search([None, KILLED_IN]),
            "overhead_budget": 1.0,
        },
        run_config=tune.RunConfig(
            name="resume",
            storage_path=str(tmp_path / "store"),
            failure_config=tune.FailureConfig(max_failures=1),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    )
    results = {result.config["killed_in"]: result for result in tuner.fit()}
    assert all(result.error is None for result in results.values())
    whole, resumed = (epoch_results(Path(results[key].path)) for key in (None, KILLED_IN))

    # The interrupted trial really ran in two processes, and restarted from the checkpoint of the epoch before.
    assert [r["epoch"] for r in resumed] == [r["epoch"] for r in whole] == list(range(1, EPOCHS + 1))
    pids = [r["pid"] for r in resumed]
    assert len(set(pids[: KILLED_IN - 1])) == len(set(pids[KILLED_IN - 1 :])) == 1 and pids[0] != pids[-1]
    assert all(r["health"] == "healthy" for r in whole)
    assert sum(map(bool, map(parse_noise_metric, whole[-1]))) == 24  # the noise suite was scored

    assert [scores(r) for r in resumed] == [scores(r) for r in whole]
    states = [final_state(results[key]) for key in (None, KILLED_IN)]
    assert states[0]["epoch"] == states[1]["epoch"] == EPOCHS
    assert states[0]["model"].keys() == states[1]["model"].keys()
    for name, tensor in states[0]["model"].items():
        assert torch.equal(tensor, states[1]["model"][name]), name
    momentum = [{i: s["momentum_buffer"] for i, s in state["optimizer"]["state"].items()} for state in states]
    assert momentum[0].keys() == momentum[1].keys() and all(
        torch.equal(momentum[0][i], momentum[1][i]) for i in momentum[0]
    )
    assert torch.equal(states[0]["rng"]["data"], states[1]["rng"]["data"])
    assert states[0]["health"] == states[1]["health"]


def test_a_resume_whose_saved_state_names_a_checkpoint_tune_deleted_goes_on_from_the_newest_that_loads(
    ray_cluster, tmp_path
):
    """Ray's race (ray-project/ray#27790), laid out on storage as a driver killed mid-sweep left it in CI:
    Tune's saved state names a trial's checkpoint that Tune deleted (num_to_keep) once newer ones came, and
    the newest of those was cut short by the kill. Proves: without the mend, Tune's restore fails the trial
    ("does not exist on storage anymore"); mend_lost_checkpoints puts a copy of the newest checkpoint that
    loads under the name, once; the trial then goes on from that epoch (no epoch reported twice) and ends
    bitwise where an uninterrupted run ends."""
    from ray import tune

    from sweep.checkpoints import MendedCheckpoint, mend_lost_checkpoints

    write_mnist(tmp_path / "data", n_train=640, n_test=100)
    datasets = share_datasets({"mnist": load_dataset("mnist", tmp_path / "data")})
    runnable = tune.with_resources(tune.with_parameters(trial_killed_in_epoch, datasets=datasets), {"cpu": 1})
    experiment = tmp_path / "store" / "resume"
    # Every epoch checkpoints (overhead_budget 1); the stopped trial raises in its last epoch, after the
    # checkpoints of epochs 2 and 3 (checkpoint_000001 and _000002: Tune keeps 2), and ends in error.
    first = tune.Tuner(
        runnable,
        param_space={
            "spec": RESUME_SPEC.to_dict(),
            "killed_in": tune.grid_search([None, EPOCHS]),
            "raises": True,
            "overhead_budget": 1.0,
        },
        run_config=tune.RunConfig(
            name="resume",
            storage_path=str(experiment.parent),
            failure_config=tune.FailureConfig(max_failures=0),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    ).fit()
    whole = next(Path(r.path) for r in first if r.error is None)
    stopped = next(Path(r.path) for r in first if r.error is not None)
    assert sorted(p.name for p in stopped.glob("checkpoint_*")) == ["checkpoint_000001", "checkpoint_000002"]
    # The race: the state names checkpoint_000002, gone; a newer one is whole, the newest cut short.
    (stopped / "checkpoint_000002").rename(stopped / "checkpoint_000003")
    (stopped / "checkpoint_000004").mkdir()
    whole_file = (stopped / "checkpoint_000003" / CHECKPOINT_FILE).read_bytes()
    (stopped / "checkpoint_000004" / CHECKPOINT_FILE).write_bytes(whole_file[: len(whole_file) // 2])

    unmended = tune.Tuner.restore(str(experiment), runnable, resume_errored=True).fit()
    assert "does not exist on storage anymore" in str(next(r.error for r in unmended if r.error is not None))

    # An earlier mend cut short: the named folder without its CHECKPOINT_FILE, and an older engine's copy.
    (stopped / "checkpoint_000002").mkdir()
    (stopped / "checkpoint_000002" / "partial").write_bytes(b"cut short")
    (stopped / ".mend-checkpoint_000002").mkdir()
    assert mend_lost_checkpoints(str(experiment)) == [
        MendedCheckpoint(stopped.name, "checkpoint_000002", "checkpoint_000003")
    ]
    assert (stopped / "checkpoint_000002" / CHECKPOINT_FILE).read_bytes() == whole_file
    # The stopped timeline's newer checkpoints are gone: the trial's state goes on under the named one.
    assert sorted(p.name for p in stopped.iterdir() if p.is_dir()) == ["checkpoint_000001", "checkpoint_000002"]
    assert mend_lost_checkpoints(str(experiment)) == []

    mended = tune.Tuner.restore(str(experiment), runnable, resume_errored=True).fit()
    assert all(result.error is None for result in mended)
    resumed = epoch_results(stopped)
    assert [r["epoch"] for r in resumed] == list(range(1, EPOCHS + 1))  # epoch 4 only, from epoch 3's state
    assert [scores(r) for r in resumed] == [scores(r) for r in epoch_results(whole)]
    finals = [final_state(next(r for r in mended if Path(r.path) == folder)) for folder in (whole, stopped)]
    assert finals[0]["epoch"] == finals[1]["epoch"] == EPOCHS
    for name, tensor in finals[0]["model"].items():
        assert torch.equal(tensor, finals[1]["model"][name]), name
