"""Where work computes (sweep.devices), the precision it trains in (sweep.precision), and what a trial or a
scoring task is handed (sweep.data, sweep.scoring): all without a GPU, the GPU's answers stubbed where the
case needs one."""

import json
import pickle
import random
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import ray
import torch

from models import build_model
from sweep import devices, trainable
from sweep.catalog import build_sweep
from sweep.data import DatasetTensors, fetch_dataset, load_dataset, share_datasets
from sweep.devices import DeviceUnusable, check_precision, device_for
from sweep.health import HealthMonitor
from sweep.precision import default_precision
from sweep.scoring import scoring_payload
from sweep.tracking import failure_reason
from sweep.trainable import NoRetryOnDeviceError, restore_trial_state, save_trial_state
from sweep.training import make_optimizer
from tests.datasets import write_mnist


class CudaCalled(AssertionError):
    pass


@pytest.fixture
def no_cuda_calls(monkeypatch):
    """Every entry into torch's CUDA runtime raises CudaCalled."""

    def forbidden(*args, **kwargs):
        raise CudaCalled("torch.cuda was called")

    for name in ("is_available", "device_count", "_lazy_init", "init", "current_device", "get_rng_state_all"):
        monkeypatch.setattr(torch.cuda, name, forbidden)


@pytest.fixture
def a_usable_gpu(monkeypatch):
    """torch as it is on a node with one usable GPU (an A100, compute capability 8.0), CUDA 13.0 build."""
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_75", "sm_80", "sm_90"])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-40GB")


def test_work_that_holds_no_gpu_computes_on_the_cpu_without_asking_cuda(no_cuda_calls):
    assert device_for([]) == torch.device("cpu")


def test_work_that_holds_no_gpu_computes_on_the_cpu_even_where_torch_sees_a_gpu(a_usable_gpu):
    assert device_for([]) == torch.device("cpu")


@pytest.mark.parametrize(
    ("visible", "assigned", "expected"),
    [(None, ["0"], "cuda:0"), (None, ["2"], "cuda:2"), ("2", ["2"], "cuda:0"), ("1,3", ["3", "1"], "cuda:1")],
)
def test_work_that_holds_a_gpu_computes_on_that_gpu_as_torch_numbers_it(
    a_usable_gpu, monkeypatch, visible, assigned, expected
):
    # Ray sets CUDA_VISIBLE_DEVICES to the assigned ids: torch then numbers them from 0.
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert device_for(assigned) == torch.device(expected)


@pytest.mark.parametrize(
    ("driver", "why_and_advice"),
    [
        (
            "12.2",
            "driver CUDA 12.2 < 13.0): use an image/AMI with driver >= 580 (CUDA 13.0) or install a torch build for "
            "CUDA 12",
        ),
        (
            None,
            "no NVIDIA driver on this node: libcuda.so.1 does not load): use an image/AMI with driver >= 580 (CUDA 13.0)",
        ),
    ],
)
def test_work_that_holds_a_gpu_where_torch_sees_none_fails_with_the_driver_and_the_build(
    monkeypatch, driver, why_and_advice
):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "driver_cuda_version", lambda: driver)
    with pytest.raises(DeviceUnusable) as raised:
        device_for(["1"])
    assert str(raised.value) == f"holds GPU 1 but torch {torch.__version__} cannot use it ({why_and_advice}"


def test_a_gpu_older_than_the_build_supports_is_unusable(a_usable_gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    with pytest.raises(DeviceUnusable) as raised:
        device_for(["0"])
    assert str(raised.value) == (
        f"holds GPU 0 but torch {torch.__version__} cannot use it (Tesla V100-SXM2-16GB has compute capability 7.0 "
        "< 7.5): use GPUs this build supports, or a torch build for these"
    )


def test_outside_ray_work_takes_the_first_usable_gpu_or_the_cpu(a_usable_gpu, monkeypatch):
    assert device_for(None) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "driver_cuda_version", lambda: None)
    assert device_for(None) == torch.device("cpu")


def test_bf16_work_on_a_gpu_without_bf16_units_is_unusable(a_usable_gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    check_precision(torch.device("cuda", 0), "fp32")
    check_precision(torch.device("cpu"), "bf16")  # autocast on the CPU: the user's choice
    with pytest.raises(DeviceUnusable) as raised:
        check_precision(torch.device("cuda", 0), "bf16")
    assert str(raised.value) == (
        "trains in bf16, but Tesla T4 (compute capability 7.5) has no bf16 units: --set precision=fp32"
    )


def test_the_node_check_of_a_gpu_workers_setup_fails_with_one_line_where_torch_cannot_use_a_gpu():
    if devices.cuda_problem() is None:
        pytest.skip("torch can use this machine's GPU")
    checked = subprocess.run([sys.executable, "-m", "sweep.devices"], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 1 and checked.stdout == ""
    assert checked.stderr == (
        f"torch {torch.__version__} cannot use this node's GPUs (no NVIDIA driver on this node: libcuda.so.1 does not "
        "load): use an image/AMI with driver >= 580 (CUDA 13.0)\n"
    )


def test_ray_assigns_no_gpu_to_a_task_that_asks_for_none_and_the_task_computes_on_the_cpu(ray_cluster):
    @ray.remote(num_cpus=1)
    def where() -> tuple[list[str], str]:
        ids = devices.assigned_gpu_ids()
        return ids, str(device_for(ids))

    assert ray.get(where.remote()) == ([], "cpu")


def test_a_cpu_trial_saves_and_restores_its_state_without_calling_cuda(tmp_path, no_cuda_calls):
    spec = build_sweep("lenet", profile="smoke")[4]
    states = torch.get_rng_state(), random.getstate()
    try:
        model = build_model(spec.model)
        optimizer, generator = make_optimizer(model, spec.recipe), torch.Generator().manual_seed(3)
        save_trial_state(tmp_path, model, optimizer, HealthMonitor(10), generator, 2, None)
        restored = restore_trial_state(tmp_path, build_model(spec.model), optimizer, torch.Generator())
    finally:
        torch.set_rng_state(states[0])
        random.setstate(states[1])
    assert restored[1:] == (2, None)
    assert "cuda" not in torch.load(tmp_path / "trial.pt", weights_only=True)["rng"]


def test_a_trials_checkpoint_loads_with_weights_only(tmp_path):
    """The project's own checkpoints hold tensors and plain values only: torch.load(weights_only=True), which
    runs no code from the file, reads every part of them."""
    spec = build_sweep("lenet", profile="smoke")[0]
    model = build_model(spec.model)
    optimizer = make_optimizer(model, spec.recipe)
    model(torch.rand(2, 1, 28, 28)).sum().backward()
    optimizer.step()  # a momentum buffer in the optimizer state
    final = {"test_acc": 91.5, "health": "healthy", "acc/gaussian/0.1": 90.0}
    save_trial_state(tmp_path, model, optimizer, HealthMonitor(10, steps=30, judged=True), torch.Generator(), 3, final)
    state = torch.load(tmp_path / "trial.pt", weights_only=True)
    assert state["epoch"] == 3 and state["final_metrics"] == final
    assert set(state) == {"model", "optimizer", "health", "rng", "epoch", "final_metrics"}
    assert state["optimizer"]["state"][0]["momentum_buffer"].shape == model.conv1.weight.shape


# --- precision ----------------------------------------------------------------------------------------


def test_the_precision_table_gives_every_model_of_the_paper_its_measured_precision_on_gpus():
    models = {spec.model.name: spec.model for spec in build_sweep("paper_full")}
    on_gpus = {name: default_precision(model, gpus=True)[0] for name, model in models.items()}
    lenets = ["A", "B", "C", "D", "PA", "PB", "PC", "PD"]
    narrow = ["WRN-28-1", "WRN-28-1-PP", "WRN-28-4", "WRN-28-4-PP"]
    wide = [f"WRN-{d}-10{pp}" for d in (16, 22, 28, 40) for pp in ("", "-PP")] + ["WRN-28-8", "WRN-28-8-PP"]
    assert sorted(on_gpus) == sorted(lenets + narrow + wide)
    assert {name: on_gpus[name] for name in lenets + narrow} == dict.fromkeys(lenets + narrow, "fp32")
    assert {name: on_gpus[name] for name in wide} == dict.fromkeys(wide, "bf16")
    assert default_precision(models["A"], gpus=True)[1] == (
        "H200: bf16 trains LeNet A 27 % and PA 17 % slower (launch-bound)"
    )
    assert default_precision(models["WRN-28-10"], gpus=True)[1] == (
        "H200: bf16 trains WRN-28-10 2.2x faster; width 8-10 WRNs are as large (14-48 GFLOP/image)"
    )


def test_cpu_trials_and_gpus_without_bf16_units_train_in_fp32():
    wide = next(spec.model for spec in build_sweep("wrn_depth") if spec.model.name == "WRN-40-10")
    assert default_precision(wide, gpus=False) == ("fp32", "CPU trials")
    assert default_precision(wide, gpus=True, capability=(7, 5)) == (
        "fp32",
        "the GPUs have compute capability 7.5, no bf16 units",
    )
    assert default_precision(wide, gpus=True, capability=(9, 0))[0] == "bf16"


# --- what trials and scoring tasks receive --------------------------------------------------------------


def dataset(n_train: int, n_test: int, side: int = 28, channels: int = 1) -> DatasetTensors:
    generator = torch.Generator().manual_seed(0)
    return DatasetTensors(
        torch.randint(0, 256, (n_train, channels, side, side), dtype=torch.uint8, generator=generator),
        torch.randint(0, 10, (n_train,), generator=generator),
        torch.randint(0, 256, (n_test, channels, side, side), dtype=torch.uint8, generator=generator),
        torch.randint(0, 10, (n_test,), generator=generator),
    )


def test_a_scoring_task_receives_the_test_images_and_no_training_image():
    data = {"mnist": dataset(6000, 100), "cifar10": dataset(5000, 50, side=32, channels=3)}
    payload = scoring_payload(data)
    test_bytes = sum(t.test_images.numel() + t.test_labels.numel() * 8 for t in data.values())
    train_bytes = sum(t.train_images.numel() for t in data.values())
    pickled = len(pickle.dumps(payload))
    assert test_bytes < pickled < test_bytes + 20_000 < train_bytes
    for name, tensors in payload.items():
        assert tensors.train_images.shape == (0, *data[name].train_images.shape[1:]) and len(tensors.train_labels) == 0
        assert torch.equal(tensors.test_images, data[name].test_images)


def test_a_trial_receives_references_and_fetches_only_the_data_set_it_trains_on(ray_cluster):
    data = {"mnist": dataset(6000, 100), "cifar10": dataset(5000, 50, side=32, channels=3)}
    shared = share_datasets(data)
    assert len(pickle.dumps(shared)) < 2_000  # what every trial is handed: references, no images
    mnist = fetch_dataset(shared["mnist"])
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(mnist, field), getattr(data["mnist"], field))


def trial_holding_gpu_0(config, datasets):
    """train_trial as in a trial that Ray gave GPU 0, on a node where torch cannot use it (this machine)."""
    with mock.patch.object(trainable, "assigned_gpu_ids", lambda: ["0"]):
        return trainable.train_trial(config, datasets)


@pytest.mark.skipif(devices.cuda_problem() is None, reason="torch can use this machine's GPU")
@pytest.mark.parametrize(("callbacks", "failures"), [("no retry on a device error", 1), ("none", 3)])
def test_a_trial_holding_a_gpu_torch_cannot_use_fails_at_once_with_its_line_and_is_not_retried(
    ray_cluster, tmp_path, callbacks, failures
):
    from ray import tune

    write_mnist(tmp_path / "data", n_train=64, n_test=10)
    datasets = share_datasets({"mnist": load_dataset("mnist", tmp_path / "data")})
    spec = build_sweep("lenet", profile="smoke")[0]
    result = tune.Tuner(
        tune.with_resources(tune.with_parameters(trial_holding_gpu_0, datasets=datasets), {"cpu": 1}),
        param_space={"spec": spec.to_dict(), "overhead_budget": 1.0},
        run_config=tune.RunConfig(
            name="gpu",
            storage_path=str(tmp_path / "store"),
            failure_config=tune.FailureConfig(max_failures=2),
            callbacks=[NoRetryOnDeviceError(2)] if callbacks != "none" else [],
            verbose=0,
        ),
    ).fit()[0]
    line = (
        f"holds GPU 0 but torch {torch.__version__} cannot use it (no NVIDIA driver on this node: libcuda.so.1 does "
        "not load): use an image/AMI with driver >= 580 (CUDA 13.0)"
    )
    assert result.error is not None and failure_reason(result.error, result.metrics) == line
    # Tune's record: how often the trial failed (2 retries without the callback), and no epoch ever trained.
    assert (Path(result.path) / "error.txt").read_text().count("Failure # ") == failures
    reports = [json.loads(r) for r in (Path(result.path) / "result.json").read_text().splitlines()]
    assert [r["device_error"] for r in reports] == [line] * failures and not any("epoch" in r for r in reports)
