"""The aggregator on MLflow stores with known runs, written through the same Tracker that sweeps use."""

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from perturb import noise_suite
from sweep.aggregate import RESULT_SCHEMA, main
from sweep.catalog import build_sweep
from sweep.metrics import noise_metric
from sweep.paper import paper_results
from sweep.specs import TrialSpec
from sweep.tracking import Tracker


def known_accuracy(spec: TrialSpec, noise: str, level: float) -> float:
    """The accuracy the fake trials report: push-pull beats its twin by 2 on noise, loses by 1 when clean."""
    base = 90.0 - 10 * level - {"clean": 0, "gaussian": 1, "speckle": 2, "poisson": 3}[noise] + spec.seed
    if spec.model.pushpull:
        base += -1 if noise == "clean" else 2
    return base


def log_trial(tracker: Tracker, spec: TrialSpec, status: str = "FINISHED") -> None:
    """What sweep.run logs for a trial that trained 3 epochs, through the same Tracker."""
    tracker.open_run(spec)
    for epoch in (1, 2, 3):
        result = {"epoch": epoch, "train_loss": 1 / epoch, "train_acc": 50.0, "test_acc": 0.0, "lr": 0.1, "epoch_seconds": 1.0, "images_per_second": 10.0}
        if epoch == 3:
            result["test_acc"] = known_accuracy(spec, "clean", 0)
            result.update({noise_metric(p.noise, p.level): known_accuracy(spec, p.noise, p.level) for p in noise_suite(spec.dataset)})
        tracker.log_result(spec, result)
    if status == "FINISHED":
        tracker.finish(spec, result)
    elif status == "DIVERGED":
        tracker.finish(spec, {"health": "diverged", "health_reason": "loss is nan at epoch 3 step 7", "epoch": 2})
    else:
        tracker.fail(spec, "worker died")


LENET = build_sweep("lenet", seeds=2)
WRN = [s for s in build_sweep("wrn_width") if s.model.width == 10]
FAILED = [s for s in build_sweep("wrn_width") if s.model.width == 1][0]
DIVERGED = [s for s in build_sweep("wrn_width") if s.model.width == 4][0]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """16 LeNet trials (2 seeds), the WRN-28-10 twins, one duplicate run and one failed trial."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    lenet, wrn = Tracker(uri, "lenet", root / "artifacts"), Tracker(uri, "wrn_width", root / "artifacts")
    for spec in LENET:
        log_trial(lenet, spec)
    # An older engine left a second, earlier run of the first LeNet trial with other numbers.
    older = lenet.client.create_run(lenet.experiment_id, tags={"trial_key": LENET[0].key, "sweep": "lenet"}).info.run_id
    lenet.client.log_metric(older, "test_acc", known_accuracy(LENET[0], "clean", 0) - 5, step=3)
    lenet.client.set_terminated(older, "FINISHED", end_time=1000)
    for spec in WRN:
        log_trial(wrn, spec)
    log_trial(wrn, FAILED, status="FAILED")
    log_trial(wrn, DIVERGED, status="DIVERGED")
    return uri


def aggregate(store: str, out: Path, *extra: str) -> int:
    return main(["--tracking-uri", store, "--out", str(out), *extra])


def test_results_table_has_the_schema_and_one_row_per_run_noise_and_level(store, tmp_path, capsys):
    assert aggregate(store, tmp_path) == 0
    table = pq.read_table(tmp_path / "results.parquet")
    assert table.schema.remove_metadata() == RESULT_SCHEMA
    results = table.to_pandas()
    assert len(results) == 16 * 25 + 2 * 23  # clean + 24 MNIST settings; clean + 22 CIFAR settings
    assert set(results["status"]) == {"FINISHED"}
    assert set(results["epochs_trained"]) == {3}
    for spec in (LENET[5], LENET[12], WRN[1]):
        rows = results[results["trial_key"] == spec.key]
        assert len(rows) == (25 if spec.dataset == "mnist" else 23)
        for row in rows.itertuples():
            assert row.accuracy == known_accuracy(spec, row.noise, row.level)
        assert (rows["model"].iloc[0], rows["seed"].iloc[0], rows["pushpull"].iloc[0]) == (spec.model.name, spec.seed, spec.model.pushpull)
    pp = results[results["model"] == "WRN-28-10-PP"].iloc[0]
    assert (pp.depth, pp.width, pp.h, pp.alpha, pp.arch, pp.sweep) == (28, 10, 2.0, 1.0, "wrn", "wrn_width")
    assert pd.isna(results[results["model"] == "A"]["h"]).all()
    assert results["dataset"].is_monotonic_increasing  # cifar10 rows, then mnist rows
    mnist = results[results["dataset"] == "mnist"]
    assert list(zip(mnist["model"], mnist["seed"])) == sorted(zip(mnist["model"], mnist["seed"]))

    out = capsys.readouterr().out
    assert "20 trials from 21 runs (1 duplicate runs of the same trial key passed over)" in out
    assert f"FAILED    {FAILED.key} (left out)" in out
    assert f"DIVERGED  {DIVERGED.key} (left out)" in out


def test_a_duplicate_trial_key_counts_once_with_its_latest_finished_run(store, tmp_path):
    aggregate(store, tmp_path)
    results = pd.read_parquet(tmp_path / "results.parquet")
    rows = results[results["trial_key"] == LENET[0].key]
    assert rows["run_id"].nunique() == 1 and len(rows) == 25
    assert rows.set_index(["noise", "level"]).loc[("clean", 0.0), "accuracy"] == known_accuracy(LENET[0], "clean", 0)


def test_paper_tables_average_over_seeds_in_the_papers_layout(store, tmp_path):
    aggregate(store, tmp_path)
    gaussian = pd.read_parquet(tmp_path / "supp_table1.parquet")
    assert list(gaussian["model"]) == ["A", "PA", "B", "PB", "C", "PC", "D", "PD"]
    levels = ["clean 0", "gaussian 0.001", "gaussian 0.01", "gaussian 0.1", "gaussian 0.2", "gaussian 0.3", "gaussian 0.4", "gaussian 0.5"]
    assert list(gaussian.columns) == ["model", *levels, *(f"{c} std" for c in levels), *(f"{c} seeds" for c in levels)]
    pa = gaussian.set_index("model").loc["PA"]
    # seeds 0 and 1 score x and x + 1: mean x + 0.5, sample std sqrt(0.5)
    assert pa["gaussian 0.2"] == pytest.approx(90 - 2 - 1 + 2 + 0.5)
    assert pa["gaussian 0.2 std"] == pytest.approx(0.5**0.5)
    assert pa["gaussian 0.2 seeds"] == 2

    table2 = pd.read_parquet(tmp_path / "table2.parquet")
    assert len(table2) == 22 and list(table2.columns[:6]) == ["noise", "level", "cifar10 plain", "cifar10 push-pull", "cifar100 plain", "cifar100 push-pull"]
    poisson2 = table2[(table2["noise"] == "poisson") & (table2["level"] == 2.0)].iloc[0]
    assert poisson2["cifar10 push-pull"] == known_accuracy(WRN[1], "poisson", 2.0)
    assert pd.isna(poisson2["cifar100 plain"]) and poisson2["cifar100 plain seeds"] == 0

    sensitivity = pd.read_parquet(tmp_path / "table3.parquet")
    assert len(sensitivity) == 10 and sensitivity.filter(like=" seeds").eq(0).all().all()


def test_comparison_sets_every_measured_cell_beside_the_paper(store, tmp_path):
    aggregate(store, tmp_path)
    comparison = pd.read_parquet(tmp_path / "comparison.parquet")
    paper = paper_results()
    cell = comparison[(comparison["source"] == "supplementary Table 1") & (comparison["model"] == "PA") & (comparison["level"] == 0.1)].iloc[0]
    assert cell["paper_accuracy"] == 95.27
    assert cell["accuracy"] == pytest.approx(90 - 1 - 1 + 2 + 0.5)
    assert cell["difference"] == pytest.approx(cell["accuracy"] - 95.27)
    # every MNIST cell of supplementary Tables 1-3, and the WRN-28-10 CIFAR-10 cells of Table 2 and Tables 4-9
    mnist = paper[paper["source"].isin(["supplementary Table 1", "supplementary Table 2", "supplementary Table 3"])]
    wrn = paper[(paper["dataset"] == "cifar10") & paper["model"].isin(["WRN-28-10", "WRN-28-10-PP"])].drop_duplicates(["source", "model", "noise", "level"])
    assert len(comparison) == len(mnist) + len(wrn)
    both = comparison[(comparison["source"].str.contains("Table 2|Table 4")) & (comparison["model"] == "WRN-28-10") & (comparison["level"] == 1.5)]
    assert sorted(both["paper_accuracy"]) == [53.61, 65.17]  # the paper's own inconsistency stays visible


def test_failed_and_diverged_trials_are_listed_apart_with_their_reason(store, tmp_path):
    aggregate(store, tmp_path)
    excluded = pd.read_parquet(tmp_path / "excluded.parquet")
    assert list(excluded.columns) == ["sweep", "trial_key", "run_id", "dataset", "model", "seed", "status", "health", "reason"]
    rows = excluded.set_index("trial_key")
    assert sorted(rows.index) == sorted([FAILED.key, DIVERGED.key])
    assert tuple(rows.loc[DIVERGED.key, ["status", "health", "reason"]]) == ("FAILED", "diverged", "loss is nan at epoch 3 step 7")
    assert tuple(rows.loc[FAILED.key, ["status", "reason"]]) == ("FAILED", "worker died")
    results = pd.read_parquet(tmp_path / "results.parquet")
    comparison = pd.read_parquet(tmp_path / "comparison.parquet")
    assert not results["model"].isin(["WRN-28-4", "WRN-28-1"]).any()
    assert not comparison["model"].isin(["WRN-28-4", "WRN-28-1"]).any()


def test_incomplete_runs_are_kept_and_flagged_on_request_but_never_diverged_ones(store, tmp_path):
    aggregate(store, tmp_path, "--include-incomplete")
    results = pd.read_parquet(tmp_path / "results.parquet")
    failed = results[results["trial_key"] == FAILED.key]
    assert len(failed) == 23 and set(failed["status"]) == {"FAILED"}
    assert DIVERGED.key not in set(results["trial_key"])
    assert list(pd.read_parquet(tmp_path / "excluded.parquet")["trial_key"]) == [DIVERGED.key]


def test_output_is_byte_identical_for_the_same_runs(store, tmp_path):
    aggregate(store, tmp_path / "a")
    aggregate(store, tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(files) == 14
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_csv_and_markdown_hold_the_same_tables(store, tmp_path, capsys):
    aggregate(store, tmp_path / "pq")
    aggregate(store, tmp_path / "csv", "--to", "csv")
    parquet = pd.read_parquet(tmp_path / "pq" / "supp_table2.parquet")
    csv = pd.read_csv(tmp_path / "csv" / "supp_table2.csv")
    pd.testing.assert_frame_equal(parquet, csv, check_dtype=False)
    capsys.readouterr()
    aggregate(store, tmp_path / "md", "--to", "markdown")
    printed = capsys.readouterr().out
    assert "| model | clean 0 | gaussian 0.001 |" in printed
    assert (tmp_path / "md" / "comparison.md").read_text().startswith("| source | dataset | model |")


def test_report_has_figures_with_both_bars_and_a_headline(store, tmp_path):
    aggregate(store, tmp_path, "--report")
    figures = sorted(p.name for p in tmp_path.glob("*.png"))
    # LeNet: supplementary Tables 1-3 (Figs. 4, 5, supp. 1); WRN-28-10 twins: Tables 4-9 (Figs. 6-9, supp. 2-3)
    assert figures == [f"supp_table{i}.png" for i in range(1, 10)]
    for name in figures:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "report.md").read_text()
    # Push-pull wins every noisy cell and loses the clean one: LeNet 4 twins x (1 clean + 22 noisy),
    # WRN-28-10 on CIFAR-10 1 x (1 + 20).
    assert "beats its plain twin in 108 of 113 measured (model, noise, level) cells" in report
    assert "![supp_table1](supp_table1.png)" in report
    assert "18 trials aggregated. 2 left out (1 diverged: they did not train; 1 failed or unfinished), so 46 (model, noise, level) cells are missing" in report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sweep", "nope"], "unknown sweep 'nope'"),
        (["--sweep", "cifar100"], "no runs found for cifar100"),
        (["--to", "excel"], "argument --to: invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_files(store, tmp_path, capsys, args, message):
    assert aggregate(store, tmp_path / "out", *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sweep.aggregate: error: {message}") and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_cannot_be_made_is_one_line_and_exit_2(store, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file, not a folder")
    assert aggregate(store, tmp_path / "taken") == 2
    err = capsys.readouterr().err.strip()
    assert err == f"sweep.aggregate: error: cannot write the tables to {tmp_path / 'taken'}: File exists"


def test_unreachable_or_missing_stores_are_one_line_errors(tmp_path, capsys):
    assert main(["--tracking-uri", "http://127.0.0.1:9", "--out", str(tmp_path / "out")]) == 2
    assert "cannot reach the MLflow tracking server at http://127.0.0.1:9" in capsys.readouterr().err
    assert main(["--storage", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 2
    assert f"no MLflow store at sqlite:///{tmp_path / 'none'}/mlflow.db" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "none").exists()
