"""In headless Chromium (Debian's /usr/bin/chromium, driven by playwright; no browser is downloaded), on the
local stack: log in, open helical_model_workflow, trigger it through its Params form (no field may show a
literal "null"), wait for success, open the run's graph; then open the run's report.html: no console errors
and the scatter visible. Screenshots go to test-artifacts/screenshots/ (scripts/test.sh lists them).
The same run's real task logs are fed through the Promtail pipeline (tests/unit/test_promtail_pipeline.py)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("airflow")
pytest.importorskip("playwright")

from stack_helpers import LocalStack, local_stack, require_binaries  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.stack]

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
DAG = "helical_model_workflow"


@pytest.fixture(scope="module")
def stack(sample_h5ad: Path, fixture_cache: str) -> Iterator[LocalStack]:
    require_binaries("redis-server")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; scripts/install_test_deps.sh)")
    with local_stack(sample_h5ad, fixture_cache, prefix="helical-browser-", monitoring=False,
                     wait_for_dag=DAG) as running:  # fmt: skip
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def test_trigger_through_the_params_form_and_see_the_graph(stack: LocalStack, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": 2600})  # the whole Params form in one screenshot
    page.set_default_timeout(60_000)
    base = stack.cfg.api_url
    page.goto(f"{base}/")
    page.locator("input[name='username']").fill("admin")
    page.locator("input[name='password']").fill(stack.secrets["admin_password"])
    page.locator("button[type='submit']").click()
    page.wait_for_url(re.compile(r"^(?!.*/login).*$"))
    page.goto(f"{base}/dags/{DAG}")
    page.get_by_text("Helical model workflow").first.wait_for()
    page.screenshot(path=str(SHOTS / "1-dag.png"))

    page.get_by_role("button", name=re.compile("^Trigger")).first.click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    section = dialog.get_by_role("button", name=re.compile("Run Parameters"))
    if section.get_attribute("aria-expanded") != "true":
        section.click()  # the Params form is folded away at first
    dialog.get_by_text("Shard size").first.wait_for(state="visible")
    page.wait_for_timeout(1000)
    page.screenshot(path=str(SHOTS / "2-trigger-form.png"), full_page=True)
    values = dialog.locator("input, textarea").evaluate_all("els => els.map(e => [e.name || e.id, e.value])")
    shown = dialog.inner_text()
    assert values and not [v for v in values if v[1].strip().lower() == "null"], values
    assert not re.search(r"\bnull\b", shown), shown
    trigger = dialog.get_by_role("button", name=re.compile("^Trigger"))
    invalid = dialog.locator("[aria-invalid='true'], [data-invalid]").evaluate_all(
        "els => els.map(e => e.name || e.id || e.getAttribute('aria-label') || e.outerHTML.slice(0, 120))"
    )
    assert trigger.last.is_enabled(), f"the form refuses its own defaults; invalid: {invalid}\n{shown}"

    before = {r["dag_run_id"] for r in stack.client.get(f"/dags/{DAG}/dagRuns?limit=100")["dag_runs"]}
    trigger.last.click()
    runs: list[dict] = []
    for _ in range(60):
        runs = [r for r in stack.client.get(f"/dags/{DAG}/dagRuns?limit=100")["dag_runs"]
                if r["dag_run_id"] not in before]  # fmt: skip
        if runs:
            break
        page.wait_for_timeout(1000)
    assert runs, "the form did not trigger a run"
    run_id = runs[0]["dag_run_id"]
    assert runs[0]["conf"]["input_path"] == "sample.h5ad" and runs[0]["conf"]["label_key"] is None
    run = stack.client.wait_for_run(DAG, run_id, timeout_s=900)
    assert run["state"] == "success", stack.client.task_instances(DAG, run_id)

    page.goto(f"{base}/dags/{DAG}/runs/{run_id}")
    graph = page.get_by_role("button", name=re.compile("Graph", re.I))
    if graph.count():
        graph.first.click()
    page.get_by_text("quality_gate").first.wait_for()
    page.get_by_text(re.compile("success", re.I)).first.wait_for()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(SHOTS / "3-run-graph.png"), full_page=True)
    page.close()

    published = stack.client.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/publish/xcomEntries/return_value"
                                 "?deserialize=true")["value"]  # fmt: skip
    _check_report(browser, Path(published["report"]))
    _check_task_logs(stack, run_id, json.loads(Path(published["manifest"]).read_text()))


def _check_report(browser, report: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(report.as_uri())
    scatter = page.locator("#scatter img")
    scatter.wait_for(state="visible")
    assert scatter.evaluate("img => img.complete && img.naturalWidth > 400 && img.naturalHeight > 200")
    scatter.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "4-report.png"), full_page=True)
    assert problems == []
    assert page.get_by_text("FIXTURE RUN").count() == 1 and page.get_by_text("kNN label-transfer accuracy").count()
    page.close()


def _check_task_logs(stack: LocalStack, run_id: str, manifest: dict) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("promtail_check", REPO / "tests/unit/test_promtail_pipeline.py")
    assert spec and spec.loader
    promtail = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(promtail)
    _stages, apply = promtail._stages, promtail.apply

    logs = stack.cfg.airflow_home / "logs"
    files = sorted(logs.glob(f"dag_id={DAG}/run_id={run_id}/task_id=embed_shard/**/*.log"))
    assert files, sorted(str(p) for p in logs.rglob("*.log"))[:20]
    stages = _stages("airflow-tasks")
    seen = []
    for path in files:
        as_promtail_sees_it = "/opt/airflow/logs/" + str(path.relative_to(logs))
        for line in path.read_text().splitlines():
            labels, metadata = apply(stages, line, {"job": "airflow", "filename": as_promtail_sees_it})
            if "run_key" in labels:
                seen.append((labels, metadata))
    assert seen, "no runner line with a run key in the embed_shard task logs"
    labels, metadata = seen[0]
    assert labels["run_key"] == manifest["run_key"] and labels["model"] == "geneformer"
    assert labels["task_id"] == "embed_shard" and labels["dag_id"] == DAG and labels["level"] in ("info", "warning")
    assert metadata["shard"].isdigit() and metadata["run_id"] == run_id
    shutil.copy(files[0], SHOTS / "embed_shard-task-log.log")
