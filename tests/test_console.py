"""What a person sees of a sweep: the piped console, the summary, and the MLflow runs (curves by noise
level, params, names); and a store that can be moved."""

import os
import pickle
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pyte
import pytest
from mlflow.tracking._tracking_service.utils import _artifact_repos_cache as mlflow_artifact_repos_cache

from perturb import NOISES, noise_suite
from sweep import console
from sweep.catalog import build_sweep
from sweep.cli import aggregate_command, format_table
from sweep.console import ConsoleProgress, next_commands, runs_view_url, summary_lines
from sweep.metrics import noise_curves, noise_metric, parse_noise_metric
from sweep.run import main
from sweep.specs import TrialSpec
from sweep.tracking import TrialOutcome, log_suite_scores
from tests.stores import copy_store


@pytest.fixture(scope="module")
def piped_sweep(piped_smoke_sweep):
    """(storage, output lines) of the shared smoke sweep; the tests here only read its store."""
    storage, _, lines = piped_smoke_sweep
    return storage, lines


def client_of(storage: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")


def runs_of(storage: Path) -> list:
    client = client_of(storage)
    return client.search_runs([client.get_experiment_by_name("lenet").experiment_id])


def test_the_piped_output_of_8_trials_is_short_and_ends_with_the_summary_and_the_next_commands(piped_sweep):
    storage, lines = piped_sweep
    assert len(lines) < 120, "\n".join(lines)
    assert not any("\x1b[" in line for line in lines), "no terminal escapes in a file"
    assert not any("tensorboard" in line.lower() for line in lines)
    runs = runs_of(storage)
    experiment_id = runs[0].info.experiment_id
    tracking_uri = f"sqlite:///{storage / 'mlflow.db'}"
    expected_next = next_commands("lenet", str(storage), tracking_uri, experiment_id)
    assert lines[-len(expected_next) :] == expected_next
    assert expected_next == [
        "next:",
        f"  mlflow ui --backend-store-uri {tracking_uri}",
        f"  open http://127.0.0.1:5000/#/experiments/{experiment_id}/runs",
        "    (click Model training, top left, once: MLflow then keeps out of its GenAI pages; then Chart view,",
        "    Group by pushpull, search curve/: accuracy per noise level, push-pull (True) against plain (False);",
        "    x axis = level index, or in a chart's Configure: X-axis Metric level/<noise>)",
        f"  python -m sweep.aggregate --sweep lenet --storage {storage} --report",
    ]
    # The summary above them: one row per model, its numbers those of the runs.
    outcomes = [
        TrialOutcome(spec, "finished", run.data.metrics)
        for spec in build_sweep("lenet", profile="smoke")
        for run in runs
        if run.data.tags["trial_key"] == spec.key
    ]
    summary = summary_lines(outcomes)
    assert len(summary) == 9
    start = len(lines) - len(expected_next) - 1 - len(summary)
    assert lines[start - 1 : len(lines) - len(expected_next)] == ["", *summary, ""]


def test_the_piped_progress_has_a_line_per_trial_start_epoch_and_end(piped_sweep):
    _, lines = piped_sweep
    for spec in build_sweep("lenet", profile="smoke"):
        mine = [line for line in lines if f"] {spec.run_name} ({spec.model.name}, seed 0) " in line]
        assert [line.split(") ", 1)[1].split(":")[0] for line in mine] == ["started", "epoch 1/1", "finished"], mine


def test_summary_lines_give_clean_and_mean_noise_accuracy_per_model_over_seeds_and_how_trials_ended():
    specs = build_sweep("lenet", profile="smoke", seeds=2)
    a0, a1 = (next(s for s in specs if s.model.name == "A" and s.seed == seed) for seed in (0, 1))
    pa = next(s for s in specs if s.model.name == "PA")

    def scores(shift: float) -> dict:
        metrics = {"test_acc": 90.0 + shift}
        for p in noise_suite("mnist"):
            metrics[noise_metric(p.noise, p.level)] = {"gaussian": 80.0, "speckle": 70.0, "poisson": 60.0}[
                p.noise
            ] + shift
        return metrics

    outcomes = [
        TrialOutcome(a0, "finished", scores(0.0)),
        TrialOutcome(a1, "finished", scores(1.0)),
        TrialOutcome(pa, "diverged", {}, "loss is nan"),
    ]
    assert summary_lines(outcomes) == [
        "model                 trials  clean  gaussian (mean)  speckle (mean)  poisson (mean)  status",
        "mnist A               2       90.50  80.50            70.50           60.50           2 finished",
        "mnist PA h=2 alpha=1  1       -      -                -               -               1 diverged",
    ]


def test_on_a_terminal_the_progress_is_one_table_redrawn_in_place(capsys):
    specs = build_sweep("lenet", profile="smoke")[:2]
    trials = [
        SimpleNamespace(trial_id=f"t{i}", config={"spec": spec.to_dict()}, status="PENDING", last_result={})
        for i, spec in enumerate(specs)
    ]
    view = ConsoleProgress(interactive=True, terminal_size=lambda: os.terminal_size((80, 24)))
    trials[0].status = "RUNNING"
    view.on_trial_start(0, trials, trials[0])
    first = capsys.readouterr().out
    view.on_trial_result(0, trials, trials[0], {"epoch": 1, "train_loss": 1.5, "test_acc": 61.0})
    trials[0].last_result = {"epoch": 1, "health": "healthy"}
    view.on_trial_complete(0, trials, trials[0])
    last = capsys.readouterr().out
    assert first.splitlines() == [
        "trial                  model  seed  epoch  train loss  test acc %  status",
        f"{specs[0].run_name}  A      0     0/1    -           -           running",
        f"{specs[1].run_name}  B      0     0/1    -           -           pending",
    ]
    # Each redraw moves up over the 3 lines of the table and clears them first.
    assert last.count("\x1b[3F\x1b[J") == 1 + last.count("\n") // 3 - 1
    assert last.rsplit("\x1b[J", 1)[1].splitlines()[1].split() == [
        specs[0].run_name,
        "A",
        "0",
        "1/1",
        "1.5000",
        "61.00",
        "finished",
    ]


class CountingScreen(pyte.Screen):
    """A pyte screen that counts the lines scrolled off its top (pyte.HistoryScreen keeps them, several
    times slower)."""

    scrolled = 0

    def index(self) -> None:
        if self.cursor.y == self.lines - 1:  # a line feed on the last line scrolls
            self.scrolled += 1
        super().index()


class Terminal:
    """A ``columns`` x ``lines`` VT100 terminal (pyte) as a view's output stream: what was written, the screen
    and how many lines scrolled off its top."""

    def __init__(self, columns: int, lines: int) -> None:
        self.size = os.terminal_size((columns, lines))
        self.screen = CountingScreen(columns, lines)
        self.screen.set_mode(pyte.modes.LNM)  # a newline returns the cursor too, as a tty's ONLCR makes it
        self.parser = pyte.Stream(self.screen)
        self.written: list[str] = []

    def write(self, text: str) -> int:
        self.written.append(text)
        self.parser.feed(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True

    def view(self) -> ConsoleProgress:
        return ConsoleProgress(interactive=True, stream=self, terminal_size=lambda: self.size)

    def written_lines(self) -> list[str]:
        """Every line written, its escape sequences left out."""
        return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", "".join(self.written)).split("\n")

    def table(self) -> list[str]:
        """The screen's lines from the table's header to the cursor, which must be at the start of a line
        with nothing below it."""
        lines = [line.rstrip() for line in self.screen.display]
        cursor = self.screen.cursor
        assert cursor.x == 0 and not any(lines[cursor.y :]), lines
        headers = [i for i, line in enumerate(lines) if line.split()[:2] == ["trial", "model"]]
        assert len(headers) == 1, lines
        return lines[headers[0] : cursor.y]


def fake_trials(specs: list) -> list[SimpleNamespace]:
    """Trials as Tune hands them to callbacks: an id and the config sweep.run gives them."""
    return [
        SimpleNamespace(trial_id=f"t{i}", config={"spec": spec.to_dict()}, last_result={}, num_failures=0)
        for i, spec in enumerate(specs)
    ]


def drive(view: ConsoleProgress, trials: list, ends: int, events: bool) -> tuple[list, list]:
    """Run ``trials`` through ``view``'s hooks as Tune would, 4 at a time: each running trial reports 2 epochs
    (a redraw each), then the oldest ends and the next starts, until ``ends`` have ended. With ``events``
    the 2nd to end diverges, the 3rd fails and the 4th loses its worker once (3 event lines); the others
    finish. Returns (the running trials, the ended ones in the order they ended)."""
    running, ended = list(trials[:4]), []
    for trial in running:
        view.on_trial_start(0, trials, trial)
    for n in range(ends):
        for epoch in (1, 2):
            for trial in running:
                view.on_trial_result(
                    0, trials, trial, {"epoch": epoch, "train_loss": 2 / epoch, "test_acc": 30.0 * epoch}
                )
        trial = running.pop(0)
        ended.append(trial)
        if events and n == 1:
            reason = "training loss 2.307 over steps 76-100 (epoch 1) is neither clearly below ln(10) = 2.303"
            trial.last_result = {"epoch": 3, "health": "diverged", "health_reason": reason}  # over 100 columns
            view.on_trial_complete(0, trials, trial)
        elif events and n == 2:
            trial.error_file = f"/home/me/sweeps/paper_full/{trial.trial_id}/error.txt"
            view.on_trial_error(0, trials, trial)
        else:
            if events and n == 3:
                trial.num_failures = 1
                view.on_trial_recover(0, trials, trial)
                view.on_trial_start(0, trials, trial)
            trial.last_result = {"epoch": 3, "health": "healthy"}
            view.on_trial_complete(0, trials, trial)
        if len(ended) + len(running) < len(trials):
            running.append(trials[len(ended) + len(running)])
            view.on_trial_start(0, trials, running[-1])
    return running, ended


def assert_rows_are(rows: list[str], trials: list, statuses: dict) -> None:
    """Each row shows its trial: the name (cut or whole), model, seed and status."""
    assert len(rows) == len(trials)
    for row, trial in zip(rows, trials, strict=True):
        spec = TrialSpec.from_config(trial.config)
        name, model, seed, *_ = row.split()
        assert spec.run_name == name or (name.endswith("...") and spec.run_name.startswith(name[:-3])), row
        assert (model, seed) == (spec.model.name, str(spec.seed)) and row.endswith(
            statuses.get(trial.trial_id, "pending")
        )


FITTING_VIEWS = [
    # (columns, lines, trials, events, the counts line: None when every row fits)
    (80, 24, 3, False, None),
    (80, 24, 3, True, None),
    (80, 24, 96, False, "96 trials: 4 running, 12 finished, 0 diverged, 0 failed, 80 pending; 75 hidden"),
    (80, 24, 96, True, "96 trials: 4 running, 10 finished, 1 diverged, 1 failed, 80 pending; 75 hidden"),
    (100, 15, 3, False, None),
    (100, 15, 3, True, None),
    (100, 15, 96, False, "96 trials: 4 running, 12 finished, 0 diverged, 0 failed, 80 pending; 84 hidden"),
    (100, 15, 96, True, "96 trials: 4 running, 10 finished, 1 diverged, 1 failed, 80 pending; 84 hidden"),
    (200, 60, 3, False, None),
    (200, 60, 3, True, None),
    (200, 60, 96, False, "96 trials: 4 running, 12 finished, 0 diverged, 0 failed, 80 pending; 39 hidden"),
    (200, 60, 96, True, "96 trials: 4 running, 10 finished, 1 diverged, 1 failed, 80 pending; 39 hidden"),
]


@pytest.mark.parametrize(("columns", "lines", "count", "events", "counts"), FITTING_VIEWS)
def test_the_live_view_fits_the_terminal_and_redraws_in_place(monkeypatch, columns, lines, count, events, counts):
    """paper_full with 3 seeds is 96 trials: on any terminal no line is wider than it, nothing but the event
    lines above the table scrolls off its top, and the last draw is one table: the running trials first,
    then the latest ended, then the pending; a counts line when they do not all fit."""
    monkeypatch.setattr(console, "REDRAW_INTERVAL_S", 0.0)  # every result redraws
    trials = fake_trials(build_sweep("paper_full", seeds=3)[:count])
    terminal = Terminal(columns, lines)
    running, ended = drive(terminal.view(), trials, ends=min(count - 1, 12), events=events)
    assert max(len(line) for line in terminal.written_lines()) <= columns
    event_lines = 3 if events and count == 96 else int(events)  # 3 trials: 2 end, the 2nd diverges
    assert terminal.screen.scrolled <= event_lines and (events or terminal.screen.scrolled == 0)
    table = terminal.table()
    statuses = {t.trial_id: "running" for t in running}
    statuses |= {t.trial_id: "finished" for t in ended}
    if events:
        statuses |= {ended[1].trial_id: "diverged"}
    if events and count == 96:
        statuses |= {ended[2].trial_id: "failed"}
    if counts is None:
        assert_rows_are(table[1:], trials, statuses)
        return
    assert len(table) == lines - 1 and table[-1] == counts
    pending = [t for t in trials if t not in running and t not in ended]
    assert_rows_are(table[1:-1], [*running, *ended[::-1], *pending][: lines - 3], statuses)


def test_the_counts_line_counts_a_restarting_trial_as_running_and_the_table_shows_the_latest_ended():
    trials = fake_trials(build_sweep("lenet", profile="smoke", seeds=2)[:10])
    terminal = Terminal(100, 8)
    view = terminal.view()
    for trial in trials[:6]:
        view.on_trial_start(0, trials, trial)
    trials[0].last_result = {"health": "healthy"}
    view.on_trial_complete(0, trials, trials[0])
    trials[1].last_result = {"health": "diverged", "health_reason": "loss is nan at epoch 1 step 3"}
    view.on_trial_complete(0, trials, trials[1])
    view.on_trial_error(0, trials, trials[2])
    trials[3].last_result = {"health": "healthy"}
    view.on_trial_complete(0, trials, trials[3])
    trials[4].num_failures = 1
    view.on_trial_recover(0, trials, trials[4])
    names = [TrialSpec.from_config(t.config).run_name for t in trials]
    assert [(row.split()[0], row.split("  ")[-1].strip()) for row in terminal.table()] == [
        ("trial", "status"),
        (names[4], "restarting (1)"),
        (names[5], "running"),
        (names[3], "finished"),
        (names[2], "failed"),
        (names[1], "diverged"),
        ("10", "10 trials: 2 running, 2 finished, 1 diverged, 1 failed, 4 pending; 5 hidden"),
    ]


def test_a_terminal_of_4_lines_shows_the_counts_line_alone():
    trials = fake_trials(build_sweep("lenet", profile="smoke", seeds=2)[:10])
    terminal = Terminal(100, 4)
    view = terminal.view()
    view.on_trial_start(0, trials, trials[0])
    view.on_trial_start(0, trials, trials[1])
    assert [line.rstrip() for line in terminal.screen.display] == [
        "10 trials: 2 running, 0 finished, 0 diverged, 0 failed, 8 pending; 10 hidden",
        "",
        "",
        "",
    ]


def test_a_narrow_terminal_cuts_the_trial_names_first_then_each_line():
    trials = fake_trials(build_sweep("paper_full")[:1])
    name = TrialSpec.from_config(trials[0].config).run_name
    wide, narrow = Terminal(60, 10), Terminal(30, 10)
    for terminal in (wide, narrow):
        terminal.view().on_trial_start(0, trials, trials[0])
    assert wide.table() == [
        "trial    model  seed  epoch  train loss  test acc %  status",
        f"{name[:4]}...  A      0     0/90   -           -           running",
    ]
    assert narrow.table() == ["trial  model  seed  epoch  ...", "mn...  A      0     0/90   ..."]


def test_a_second_ctrl_c_in_the_middle_of_a_draw_leaves_the_cursor_on_a_clean_line():
    """Tune's handler takes the first Ctrl-C (the trial loop ends, on_experiment_end), a second raises
    KeyboardInterrupt wherever the driver is: what it prints next must not land inside the table."""
    trials = fake_trials(build_sweep("lenet", profile="smoke")[:3])
    terminal = Terminal(80, 24)
    view = terminal.view()
    view.on_trial_start(0, trials, trials[0])
    write = terminal.write

    def interrupted(text: str) -> int:
        terminal.write = write  # the next write goes through
        write(text[: len(text) // 2])
        raise KeyboardInterrupt

    terminal.write = interrupted
    with pytest.raises(KeyboardInterrupt):
        view.on_trial_start(0, trials, trials[1])
    write("Traceback (most recent call last):\n")
    lines = [line.rstrip() for line in terminal.screen.display]
    at = lines.index("Traceback (most recent call last):")  # on a line of its own
    table = format_table([console.HEADER, *(view.rows[t.trial_id].cells() for t in trials)])
    assert at >= 1 and lines[:at] == table[:at] and not any(lines[at + 1 :])  # whole lines above, none below


def test_after_the_trial_loop_ends_the_view_draws_no_more_and_the_cursor_is_below_it(monkeypatch):
    monkeypatch.setattr(console, "REDRAW_INTERVAL_S", 0.0)
    trials = fake_trials(build_sweep("lenet", profile="smoke")[:3])
    terminal = Terminal(80, 24)
    view = terminal.view()
    view.on_trial_start(0, trials, trials[0])
    view.on_trial_result(0, trials, trials[0], {"epoch": 1, "train_loss": 0.25})
    view.on_experiment_end(trials)  # a first Ctrl-C: trial t0 is still running
    table = format_table([console.HEADER, *(view.rows[t.trial_id].cells() for t in trials)])
    drawn = len(terminal.written)
    view.on_trial_start(0, trials, trials[1])
    assert len(terminal.written) == drawn
    terminal.write("0 of 3 trials finished\n")
    lines = [line.rstrip() for line in terminal.screen.display]
    assert lines[:5] == [*table, "0 of 3 trials finished"]
    assert table[1].endswith("1/1    0.2500      -           running") and table[2].endswith("pending")


def test_a_resumed_sweep_works_out_its_console_afresh():
    """Tune pickles its callbacks with the experiment and Tuner.restore brings them back: a sweep started
    in a terminal and resumed with its output in a file (not a terminal, as under pytest) prints lines."""
    restored = pickle.loads(pickle.dumps(ConsoleProgress(interactive=True)))
    assert restored.interactive is False and restored.rows == {}


def test_runs_view_url_is_on_the_tracking_server_or_on_mlflow_ui():
    # No ?workflowType: it would hold for the first page only, and make the Model training switch do nothing.
    assert runs_view_url("http://tracker:5000/", "7") == "http://tracker:5000/#/experiments/7/runs"
    assert runs_view_url("sqlite:////s/mlflow.db", "1") == "http://127.0.0.1:5000/#/experiments/1/runs"


def test_every_run_holds_a_curve_and_its_levels_per_noise_at_steps_0_to_7_equal_to_its_per_level_metrics(
    piped_sweep,
):
    storage, _ = piped_sweep
    client = client_of(storage)
    runs = runs_of(storage)
    assert len(runs) == 8
    for run in runs:
        for noise in NOISES:
            levels = sorted(
                level for n, level in (parse_noise_metric(m) or ("", 0) for m in run.data.metrics) if n == noise
            )
            assert len(levels) == 8
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, f"curve/{noise}"))
            assert history == [
                (step, run.data.metrics[noise_metric(noise, level)]) for step, level in enumerate(levels)
            ]
            assert run.data.params[f"curve_levels/{noise}"] == ",".join(repr(level) for level in levels)
            # The levels again as a metric at the same steps: a line chart's x axis (X-axis: Metric).
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, f"level/{noise}"))
            assert history == list(enumerate(levels))


def test_no_param_reads_none_and_push_pull_runs_are_named_with_h_and_alpha(piped_sweep):
    storage, _ = piped_sweep
    runs = runs_of(storage)
    assert all(value != "None" for run in runs for value in run.data.params.values())
    plain = [run for run in runs if run.data.params["pushpull"] == "False"]
    assert len(plain) == 4 and all("h" not in run.data.params and "alpha" not in run.data.params for run in plain)
    names = sorted(run.info.run_name for run in runs)
    specs = build_sweep("lenet", profile="smoke")
    assert names == sorted(spec.run_name for spec in specs)
    assert sorted(name.split("-s0-")[0] for name in names) == [
        "mnist-A",
        "mnist-B",
        "mnist-C",
        "mnist-D",
        "mnist-PA-h2-a1",
        "mnist-PB-h2-a1",
        "mnist-PC-h2-a1",
        "mnist-PD-h2-a1",
    ]


def test_log_suite_scores_adds_a_curve_per_noise_of_the_suite(piped_sweep, tmp_path):
    storage = tmp_path / "store"
    copy_store(piped_sweep[0], storage)
    client = client_of(storage)
    run = runs_of(storage)[0]
    scores = {p: 50.0 + p.level for p in noise_suite("mnist") if p.noise == "speckle"}
    assert log_suite_scores(client, run.info.run_id, "extra", 1, scores) == 8
    curve = noise_curves({noise_metric(p.noise, p.level, "extra"): a for p, a in scores.items()}, "extra")[0]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "curve/extra/speckle"))
    assert history == list(enumerate(curve.accuracies)) and curve.accuracies == tuple(sorted(curve.accuracies))
    levels = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "level/extra/speckle"))
    assert levels == list(enumerate(curve.levels)) and curve.level_metric == "level/extra/speckle"
    assert log_suite_scores(client, run.info.run_id, "extra", 1, scores) == 0
    assert len(client.get_metric_history(run.info.run_id, "curve/extra/speckle")) == 8
    assert len(client.get_metric_history(run.info.run_id, "level/extra/speckle")) == 8


def test_a_store_moved_elsewhere_keeps_its_artifacts_and_its_sweep_continues_there(piped_sweep, tmp_path, capsys):
    original, _ = piped_sweep
    copy = tmp_path / "elsewhere" / "store"
    shutil.copytree(original, copy)  # as a user moves it: its store still names the original's artifacts
    mlflow_artifact_repos_cache.clear()  # MLflow's, by run id: the copy has the original's run ids
    assert "{storage}" in (copy / "lenet.sweep.json").read_text()
    # --sync reads the record, reopens the store and finds everything delivered.
    data = original.parent / "data"  # beside the store, in the shared fixture
    assert main(["lenet", "--profile", "smoke", "--storage", str(copy), "--data-root", str(data), "--sync"]) == 0
    capsys.readouterr()
    client = client_of(copy)
    runs = runs_of(copy)
    assert len(runs) == 8
    for run in runs:
        assert run.info.artifact_uri.startswith((copy / "mlartifacts").as_uri() + "/")
        local = client.download_artifacts(run.info.run_id, "results.json", str(tmp_path))
        assert Path(local).read_text().startswith("{")
    assert client.get_experiment_by_name("lenet").artifact_location == (copy / "mlartifacts").as_uri()


def test_the_aggregate_command_names_the_tracking_store_unless_it_is_the_storages_own(tmp_path):
    own = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert next_commands("lenet", str(tmp_path), own, "1")[-1] == (
        f"  python -m sweep.aggregate --sweep lenet --storage {tmp_path} --report"
    )
    assert next_commands("lenet", "s3://bucket/sweeps", "http://mlflow:5000", "1")[-1] == (
        "  python -m sweep.aggregate --sweep lenet --storage s3://bucket/sweeps --tracking-uri http://mlflow:5000 --report"
    )
    assert aggregate_command("lenet", str(tmp_path), "sqlite:////elsewhere/mlflow.db", "shot") == (
        f"python -m sweep.aggregate --sweep lenet --suite shot --storage {tmp_path} "
        "--tracking-uri sqlite:////elsewhere/mlflow.db --report"
    )
