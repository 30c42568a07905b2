"""Train once, score many: ``python -m sweep.evaluate`` on a finished smoke sweep, and the suite's tables."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
import torch

from models import build_model
from perturb import Perturbation, perturb_test_set, suite_settings
from sweep import report as report_module
from sweep.aggregate import main as aggregate_main
from sweep.data import load_dataset
from sweep.evaluate import main
from sweep.metrics import noise_metric, parse_noise_metric
from sweep.paper import paper_cells
from sweep.scoring import find_checkpoint, plan_jobs
from sweep.specs import TrialSpec
from sweep.storage import SweepStorage
from tests.stores import copy_store
from tests.test_report import BOTH_READINGS, LENET_PAIRS, LENETS, MNIST_CONTRASTS, POISSON, assert_looks_right

SUITE = "poisson-variants"
VARIANTS = suite_settings(SUITE, "mnist")


@pytest.fixture
def sweep(piped_smoke_sweep, tmp_path):
    """A finished lenet smoke sweep (8 trials, one epoch each), this test's own copy of the shared one:
    (storage, data root)."""
    storage, data, _ = piped_smoke_sweep
    return copy_store(storage, tmp_path / "store"), data


@pytest.fixture(scope="module")
def scored_sweep(piped_smoke_sweep, tmp_path_factory):
    """A copy of the shared smoke sweep with the poisson-variants suite scored: (storage, data root)."""
    storage, data, _ = piped_smoke_sweep
    copy = copy_store(storage, tmp_path_factory.mktemp("scored") / "store")
    assert evaluate_cli(copy, data, "--suite", SUITE) == 0
    return copy, data


def client_of(storage):
    return mlflow.MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")


def runs_of(storage) -> dict:
    client = client_of(storage)
    experiment = client.get_experiment_by_name("lenet")
    return {run.data.tags["trial_key"]: run for run in client.search_runs([experiment.experiment_id])}


def suite_metrics(run, suite: str) -> dict:
    return {parsed: value for name, value in run.data.metrics.items() if (parsed := parse_noise_metric(name, suite))}


def evaluate_cli(storage, data, *args):
    return main(["lenet", "--storage", str(storage), "--data-root", str(data), *args])


def test_evaluate_adds_the_suite_to_the_same_runs_and_a_second_call_changes_nothing(sweep, capsys):
    storage, data = sweep
    before = runs_of(storage)
    assert evaluate_cli(storage, data, "--suite", SUITE) == 0
    out = capsys.readouterr().out
    assert "sweep lenet, suite poisson-variants: 8 trials to score (384 scores), 0 already scored, 0 skipped" in out
    assert f"next: python -m sweep.aggregate --sweep lenet --suite {SUITE} --storage {storage} --report" in out

    after = runs_of(storage)
    assert after.keys() == before.keys()  # no new run
    client = client_of(storage)
    for key, run in after.items():
        assert run.info.run_id == before[key].info.run_id and run.info.status == "FINISHED"
        scores = suite_metrics(run, SUITE)
        assert sorted(scores) == sorted((s.noise, s.level) for s in VARIANTS)
        paper = suite_metrics(run, "paper")
        clean = run.data.metrics["test_acc"]
        for contrast in (0.2, 0.3, 0.4, 0.5, 1.5, 2.0, 2.5):
            # The same noise as the paper's suite (same seed, same images): the same numbers.
            assert scores[("poisson", contrast)] == paper[("poisson", contrast)]
            assert scores[("poisson-c1clean", contrast)] == paper[("poisson", contrast)]
        assert scores[("poisson", 1.0)] == paper[("poisson", 1.0)]
        assert scores[("poisson-c1clean", 1.0)] == clean and scores[("contrast", 1.0)] == clean
        rows = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/suites/{SUITE}.json")["rows"]
        assert {(r["noise"], r["level"]): r["accuracy"] for r in rows} == scores
        epochs = int(run.data.metrics["epoch"])
        history = client.get_metric_history(run.info.run_id, noise_metric("contrast-shot-p3", 0.5, SUITE))
        assert [(m.step, m.value) for m in history] == [(epochs, scores[("contrast-shot-p3", 0.5)])]

    assert evaluate_cli(storage, data, "--suite", SUITE) == 0
    assert "8 already scored, 0 skipped" in capsys.readouterr().out
    again = runs_of(storage)
    for key, run in again.items():
        assert run.data.metrics == after[key].data.metrics
        history = client.get_metric_history(run.info.run_id, noise_metric("contrast", 2.5, SUITE))
        assert len(history) == 1


def test_the_suite_aggregates_to_its_own_tables_figures_and_variant_fit(scored_sweep, tmp_path, monkeypatch):
    storage, _ = scored_sweep
    out = tmp_path / "tables"
    figures, draw = {}, report_module._draw
    monkeypatch.setattr(report_module, "_draw", lambda path, *args: figures.setdefault(path.name, draw(path, *args)))
    assert aggregate_main(["--storage", str(storage), "--suite", SUITE, "--out", str(out), "--report"]) == 0
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 8 * (1 + len(VARIANTS))  # clean once, every setting of the suite (C = 1 included)
    assert not (out / "supp_table2.parquet").exists() and not (out / "comparison.parquet").exists()
    noises = ["poisson", "poisson-c1clean", "contrast", "contrast-shot-p60", "contrast-shot-p12", "contrast-shot-p3"]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{SUITE}_{n}.png" for n in noises)

    fit = pd.read_parquet(out / "variant_fit.parquet")
    assert set(fit["noise"]) == set(noises) and set(fit["reading"]) == {"header", "text"}
    # The RMSE of one noise under the text reading, recomputed from the results and the paper's cells.
    paper = paper_cells()
    printed = paper[
        (paper["source"] == "supplementary Table 2") & (paper["noise"] == "poisson") & (paper["reading"] == "text")
    ]
    ours = results[results["noise"] == "contrast-shot-p12"].groupby(["model", "level"])["accuracy"].mean()
    differences = [
        ours[(m, c)] - a for m, c, a in zip(printed["model"], printed["measured_level"], printed["accuracy"])
    ]
    row = fit[(fit["noise"] == "contrast-shot-p12") & (fit["reading"] == "text") & (fit["models"] == "all")].iloc[0]
    assert row["cells"] == 40 and row["rmse"] == pytest.approx(math.sqrt(sum(d * d for d in differences) / 40))
    best = fit[(fit["reading"] == "text") & (fit["models"] == "all")].iloc[0]
    report = (out / "report.md").read_text()
    assert (
        f"Nearest under the text reading: **{best['noise']}** (RMSE {best['rmse']:.2f} points over 40 cells)." in report
    )
    # the heading, the smoke banner, what the suite is; the paper's Poisson cells under both of their readings
    assert report.startswith("# Reproduction report\n\n**Smoke profile: these numbers are not the paper's recipe**")
    assert "\n\nSuite **poisson-variants**: readings of the paper's contrast + Poisson protocol" in report
    accuracy, difference = [*BOTH_READINGS, *LENETS], [*BOTH_READINGS, *LENET_PAIRS]
    assert_looks_right(figures[f"{SUITE}_poisson.png"], MNIST_CONTRASTS, POISSON, accuracy, difference)


def test_skipped_trials_are_named_and_ray_tasks_score_the_others(sweep, ray_cluster, capsys):
    storage, data = sweep  # its own copy: a lost checkpoint, a diverged run
    runs = runs_of(storage)
    lost, collapsed, scored, damaged = sorted(runs)[:4]
    for checkpoint in (storage / "lenet" / lost).glob("checkpoint_*"):
        for file in checkpoint.iterdir():
            file.unlink()
        checkpoint.rmdir()
    client = client_of(storage)
    client.set_tag(runs[collapsed].info.run_id, "health", "diverged")
    client.set_tag(runs[collapsed].info.run_id, "health_reason", "loss is nan at epoch 1 step 3")
    client.set_terminated(runs[collapsed].info.run_id, "FAILED")
    truncated = find_checkpoint(SweepStorage(str(storage)), "lenet", damaged)
    Path(truncated).write_bytes(Path(truncated).read_bytes()[:1000])  # a copy cut short

    assert evaluate_cli(storage, data, "--suite", "shot", "--address", ray_cluster) == 0
    out = capsys.readouterr().out
    assert f"skipped {lost}: no checkpoint in {storage / 'lenet' / lost}" in out
    assert f"skipped {collapsed}: diverged (loss is nan at epoch 1 step 3)" in out
    assert "6 trials to score (30 scores), 0 already scored, 2 skipped" in out
    assert "logged 25 scores to 5 runs in" in out  # the damaged checkpoint scored nothing
    after = runs_of(storage)
    assert [key for key, run in sorted(after.items()) if suite_metrics(run, "shot")] == sorted(
        set(runs) - {lost, collapsed, damaged}
    )
    # In this process (no Ray tasks) the damaged checkpoint's line is on this console; nothing else changes.
    assert evaluate_cli(storage, data, "--suite", "shot") == 0
    out = capsys.readouterr().out.splitlines()
    assert "sweep lenet, suite shot: 1 trials to score (5 scores), 5 already scored, 2 skipped" in out
    assert any(line.startswith(f"skipped {damaged}: its checkpoint {truncated} does not load (") for line in out)
    assert any(line.startswith("logged 0 scores to 0 runs in") for line in out)

    # One score, recomputed here from the checkpoint with the noise the suite names.
    spec = TrialSpec.from_dict(json.loads((storage / "lenet" / scored / "params.json").read_text())["spec"])
    model = build_model(spec.model)
    model.load_state_dict(
        torch.load(find_checkpoint(SweepStorage(str(storage)), "lenet", scored), weights_only=False)["model"]
    )
    # By hand, not with the scoring code under test: the test images (at most max_test_images) in [0, 1], the
    # suite's noise (its draws proven against numpy's in tests/test_perturb.py), MNIST's mean and std.
    tensors = load_dataset("mnist", data)
    count = spec.recipe.max_test_images
    images, labels = tensors.test_images[:count].float() / 255, tensors.test_labels[:count]
    noisy = perturb_test_set(images, "mnist", Perturbation("shot-clip", 12.0))
    model.eval()
    with torch.no_grad():
        correct = (model((noisy - 0.1307) / 0.3081).argmax(1) == labels).sum().item()
    assert after[scored].data.metrics[noise_metric("shot-clip", 12.0, "shot")] == 100.0 * correct / len(labels)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["lenet", "--suite", "salt"],
            "sweep.evaluate: error: unknown suite 'salt': expected one of paper, poisson-variants, shot",
        ),
        (["lenet", "--suite"], "sweep.evaluate: error: argument --suite: expected one argument"),
        (["wrn", "--suite", "shot"], "sweep.evaluate: error: unknown sweep 'wrn': expected one of lenet, wrn_width"),
        (["lenet"], "sweep.evaluate: error: name a sweep and a suite"),
    ],
)
def test_bad_input_stops_with_one_line(tmp_path, capsys, args, message):
    code = main([*args, "--storage", str(tmp_path / "store")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(message) and "\n" not in err
    assert not (tmp_path / "store").exists()


def test_a_storage_without_the_sweep_stops_with_one_line(tmp_path, capsys):
    assert main(["lenet", "--suite", "shot", "--storage", str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"sweep.evaluate: error: no sweep 'lenet' in {tmp_path}: pass the --storage it ran with"
    )
    assert list(tmp_path.iterdir()) == []


def test_list_suites_names_every_suite_and_family(capsys):
    assert main(["--list-suites"]) == 0
    out = capsys.readouterr().out
    for line in (
        "  paper              24 settings on mnist",
        "  poisson-variants   48 settings on mnist",
        "  shot                5 settings on mnist",
    ):
        assert line in out
    assert "  contrast-shot     contrast change to C = LEVEL, then shot noise with PEAK photons" in out


def test_a_trial_whose_spec_does_not_parse_is_skipped_and_a_complete_one_needs_no_spec(tmp_path):
    (tmp_path / "lenet" / "damaged").mkdir(parents=True)
    (tmp_path / "lenet" / "damaged" / "params.json").write_text("{not json")
    every_score = {noise_metric(s.noise, s.level, "shot"): 90.0 for s in suite_settings("shot", "mnist")}

    def finished_run(key: str, metrics: dict) -> SimpleNamespace:
        return SimpleNamespace(
            info=SimpleNamespace(status="FINISHED", run_id=f"run-{key}"),
            data=SimpleNamespace(tags={"trial_key": key}, params={"dataset": "mnist"}, metrics=metrics),
        )

    # "complete" has no trial folder at all: its scores alone tell that nothing is left to do.
    runs = [finished_run("damaged", {}), finished_run("complete", every_score)]
    jobs, skipped, complete = plan_jobs(SweepStorage(str(tmp_path)), "lenet", "shot", runs)
    assert (jobs, complete) == ([], 1)
    assert skipped == [
        "skipped damaged: its params.json does not parse (JSONDecodeError: Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1))"
    ]


def test_a_damaged_sweep_record_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "lenet.sweep.json").write_text("{not json")
    assert main(["lenet", "--suite", "shot", "--storage", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"sweep.evaluate: error: {tmp_path / 'lenet.sweep.json'} is damaged: Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1)\n"
    )
