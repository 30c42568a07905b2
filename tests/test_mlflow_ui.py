"""The MLflow view that shows the study, in a real browser: a user who opens the URL a sweep prints and
clicks what its next lines say (Model training, Chart view, Group by pushpull, search curve/, a chart's
X-axis Metric level/<noise>) sees, per noise, the plain and the push-pull runs as two groups.

Needs playwright (pip install playwright) and a Chromium (apt-get install chromium; another one with
SWEEP_TEST_CHROMIUM=/path/to/chrome); without either the module is skipped, as in CI. The screenshot of the
view goes to $MLFLOW_VIEW_SCREENSHOT, else into the test's tmp_path; its path is printed (pytest -s)."""

import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.processes import BIN, stop, uvicorn_port, wait_for

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright; no `playwright install`)"
)


def chromium() -> str | None:
    """The Chromium to drive: $SWEEP_TEST_CHROMIUM, else the system's."""
    wanted = os.environ.get("SWEEP_TEST_CHROMIUM")
    if wanted is not None:
        return wanted if Path(wanted).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM = chromium()
if CHROMIUM is None:
    pytest.skip(
        f"no Chromium at {os.environ.get('SWEEP_TEST_CHROMIUM') or 'chromium on PATH'} "
        "(apt-get install chromium, or SWEEP_TEST_CHROMIUM=/path/to/chrome)",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.slow, pytest.mark.integration]
PRINTED_UI = "http://127.0.0.1:5000"  # where the printed URL expects `mlflow ui`
NOISES = ("gaussian", "poisson", "speckle")
GENAI_ONLY = ("Evaluation runs", "Judges")  # items of the sidebar of MLflow's GenAI pages only


def printed(lines: list[str]) -> tuple[str, str]:
    """The `mlflow ui` command and the URL of the next lines at the end of a sweep's output."""
    after = lines[lines.index("next:") + 1 :]
    command = next(line.strip() for line in after if line.strip().startswith("mlflow ui "))
    url = next(line.strip().removeprefix("open ") for line in after if line.strip().startswith("open "))
    return command, url


@pytest.fixture
def mlflow_ui(piped_smoke_sweep, tmp_path):
    """`mlflow ui` as the sweep printed it, on 127.0.0.1 and a port it binds itself (its log says which): (its
    address, the printed URL)."""
    _, _, lines = piped_smoke_sweep
    command, url = printed(lines)
    assert url.startswith(f"{PRINTED_UI}/"), url
    log = tmp_path / "mlflow-ui.log"
    process = subprocess.Popen(
        [str(BIN / "mlflow"), *command.split()[1:], "--host", "127.0.0.1", "--port", "0", "--workers", "1"],
        cwd=tmp_path,  # where it would put artifacts logged through it (none are)
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def ready() -> str | None:
        assert process.poll() is None, f"mlflow ui exited with {process.returncode}: {log.read_text()[-2000:]}"
        port = uvicorn_port(log)
        if port is None:
            return None
        address = f"http://127.0.0.1:{port}"
        return address if urllib.request.urlopen(f"{address}/health", timeout=2).status == 200 else None

    try:
        address = wait_for(ready, 120, "mlflow ui")
        yield address, url
    finally:
        stop(process)


@pytest.fixture
def page():
    """A headless Chromium page, 1600 x 1000, that waits up to 60 s for what it is asked to find."""
    with sync_api.sync_playwright() as playwright:
        root = hasattr(os, "geteuid") and os.geteuid() == 0
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"] if root else []
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            sync_api.expect.set_options(timeout=60_000)
            yield page
        finally:
            browser.close()


def test_the_printed_url_and_steps_show_plain_against_push_pull_per_noise_in_mlflow(mlflow_ui, page, tmp_path):
    expect = sync_api.expect
    address, url = mlflow_ui
    page.goto(url.replace(PRINTED_UI, address, 1))
    expect(page.get_by_role("link", name=re.compile(r"^mnist-A-s0-"))).to_be_visible()

    # "click Model training, top left, once: MLflow then keeps out of its GenAI pages"
    page.get_by_text("Model training", exact=True).click()
    expect(page).to_have_url(re.compile(r"workflowType=machine_learning"))
    page.get_by_role("link", name=re.compile(r"^mnist-A-s0-")).click()  # a run's own page
    expect(page.get_by_role("tab", name="Model metrics")).to_be_visible()
    for item in GENAI_ONLY:
        expect(page.get_by_text(item, exact=True)).to_have_count(0)
    page.go_back()
    assistant = page.get_by_role("button", name="Close")  # MLflow's assistant panel, open on a first visit
    if assistant.count() == 1:
        assistant.click()

    # "then Chart view, Group by pushpull, search curve/"
    page.locator("label").filter(has=page.locator("input[value=CHART]")).click()
    page.get_by_role("button", name="Group by").click()
    page.get_by_role("menu").get_by_placeholder("Search").fill("pushpull")
    page.get_by_role("menuitemcheckbox", name="pushpull", exact=True).click()
    page.keyboard.press("Escape")
    page.get_by_placeholder("Search metric charts").fill("curve/")

    # Two groups of 4 runs, True (push-pull) and False (plain); one chart per noise, a line per group.
    expect(page.get_by_text("Group: True")).to_be_visible()
    expect(page.get_by_text("Group: False")).to_be_visible()
    charts = page.get_by_test_id("experiment-view-compare-runs-card-menu")
    expect(charts).to_have_count(len(NOISES))
    for noise in NOISES:
        expect(page.get_by_text(f"curve/{noise}", exact=True)).to_be_visible()
        expect(page.get_by_text(f"True (curve/{noise})")).to_be_visible()
        expect(page.get_by_text(f"False (curve/{noise})")).to_be_visible()

    # "x axis = level index, or in a chart's Configure: X-axis Metric level/<noise>"
    expect(page.get_by_text("Step", exact=True)).to_have_count(len(NOISES))
    charts.first.click()  # the first chart's menu: curve/gaussian, the charts being in name order
    page.get_by_role("menuitem", name="Configure").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("radio", name="Metric").check()
    dialog.get_by_role("combobox").first.click()
    page.keyboard.type("level/gaussian")
    page.keyboard.press("Enter")
    dialog.get_by_role("button", name="Save changes").click()
    expect(dialog).to_have_count(0)
    expect(page.get_by_text("level/gaussian", exact=True)).to_be_visible()
    expect(page.get_by_text("Step", exact=True)).to_have_count(len(NOISES) - 1)

    screenshot = Path(os.environ.get("MLFLOW_VIEW_SCREENSHOT") or tmp_path / "mlflow_view.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot))
    print(f"the MLflow view of the study: {screenshot}")
