"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, against a live uvicorn
process and a real Celery worker training the tiny model on Postgres + Redis. Signs in, uploads, dry-runs,
submits, watches the curves and the rank heatmap grow while the job trains (read from the page's chart data
and compared with REST), downloads the adapter and checks it against the sha256 shown, cancels a second job,
compares the two; and no request leaves the server. Takes the screenshots the README shows (docs/dashboard-*.png,
written there with SAVE_SCREENSHOTS=1). The fixtures are in conftest.py; test_dashboard_pages.py tests the pages
on jobs written into the database."""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest

from service.db import session_scope
from service.keys import key_prefix, revoke_api_key, tenant_for_key
from service.tables import Job, utcnow
from tests.browser.helpers import console_errors, foreign_requests, js, wait_js
from tests.conftest import REPO, free_port, start_api, start_worker, stop_process

TRAIN_STEPS = 1500   # long enough on a busy CPU to watch the charts grow over several polls
WAIT_MS = 180_000    # a job's whole run on a loaded CI machine; reached only when something is wrong
# SAVE_SCREENSHOTS=1 writes the README's screenshots into docs/; otherwise they go to the test's own folder,
# so a test run leaves the checkout as it was.
SAVE_TO_DOCS = os.environ.get("SAVE_SCREENSHOTS") == "1"


@pytest.fixture(scope="module")
def server(service_env, browser, tmp_path_factory):
    """A live API on a free port and a worker that logs progress every 50 steps (once there is a browser)."""
    folder = tmp_path_factory.mktemp("live")
    worker = start_worker(service_env, folder, extra_env={"PROGRESS_EVENT_STEPS": "50"})
    port = free_port()
    api = start_api(service_env, port, folder / "api.log")
    yield f"http://127.0.0.1:{port}"
    stop_process(api)
    stop_process(worker.process)


def test_the_dashboard_from_sign_in_to_download_and_cancel(server, page, key, tiny_dataset_file, tmp_path):
    shots = REPO / "docs" if SAVE_TO_DOCS else tmp_path
    rest = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    # Sign in: a wrong key is refused with the server's reason, the right one opens the jobs list.
    page.goto(f"{server}/")
    assert page.url == f"{server}/dashboard/"
    page.fill("#api-key", "ada_not-a-key")
    page.click("#sign-in")
    page.wait_for_selector("#signin-error:has-text('refused')")
    page.fill("#api-key", key)
    page.click("#sign-in")
    page.wait_for_selector("#jobs")
    assert js(page, "sessionStorage.getItem('adalora-api-key')") == key

    # Files: a broken file is refused naming the line; a good one shows its rows, columns and preview.
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"sentence": "good film", "label": "positive"}\n{"sentence": oops}\n')
    page.click("nav a[href='#/files']")
    page.set_input_files("#file-input", str(broken))
    page.click("#upload")
    assert "line 2" in page.wait_for_selector("#upload-error").text_content()
    page.set_input_files("#file-input", str(tiny_dataset_file))
    page.click("#upload")
    assert "96 rows, 2 columns" in page.wait_for_selector("#upload-ok").text_content()
    assert page.locator("#file-columns tbody tr").count() == 2
    assert page.locator("#file-preview tbody tr").count() > 0
    page.screenshot(path=str(tmp_path / "files.png"), full_page=True)
    [uploaded] = rest.get("/v1/files").json()["data"]
    page.wait_for_selector(f"tr[data-file-id='{uploaded['id']}']")

    # A second copy, deleted from the list.
    page.set_input_files("#file-input", str(tiny_dataset_file))
    page.click("#upload")
    page.wait_for_function("() => document.querySelectorAll('#files tbody tr[data-file-id]').length === 2")
    extra = next(f["id"] for f in rest.get("/v1/files").json()["data"] if f["id"] != uploaded["id"])
    page.click(f"button[data-delete='{extra}']")
    page.wait_for_function(f"() => !document.querySelector(\"tr[data-file-id='{extra}']\")")
    assert [f["id"] for f in rest.get("/v1/files").json()["data"]] == [uploaded["id"]]

    # New job: the server's model, the uploaded file; a dry run shows what the REST dry run says.
    page.click("nav a[href='#/new']")
    page.wait_for_selector("#model option[value='tiny-bert']", state="attached")
    page.select_option("#model", "tiny-bert")
    page.select_option("#task", "sequence_classification")
    page.select_option("#train-file", uploaded["id"])
    for selector, value in {"#job-name": "browser-run", "#validation-split": "0.25", "#init-r": "4", "#target-r": "2",
                            "#tinit": "20", "#tfinal": "300", "#delta-t": "20", "#max-steps": str(TRAIN_STEPS),
                            "#batch-size": "8", "#learning-rate": "0.005", "#eval-every": "500",
                            "#warmup-ratio": "0"}.items():
        page.fill(selector, value)
    page.fill("#label-column", "label")
    assert page.is_hidden("#source-column")  # a seq2seq field, not this task's
    page.fill("#target-r", "9")  # more than init_r: the server's 422 is shown as it says it
    page.click("#dry-run")
    assert "must not exceed budget.init_r" in page.wait_for_selector("#spec-error:has-text('target_r')").text_content()
    page.fill("#target-r", "2")
    page.fill("#gpu", "T4")  # the dry run checks the peak memory against it; the submit below sends no card
    page.click("#dry-run")
    page.wait_for_selector("#plan-total-steps")
    assert page.text_content("#plan-fits").startswith("fits the T4")
    assert page.text_content("#plan-memory").endswith(" GiB")
    assert page.text_content("#spec-error") == ""
    spec = js(page, "JSON.parse(document.querySelector('#spec-json').textContent)")
    assert spec["dataset"] == {"source": "file", "file_id": uploaded["id"], "validation_file_id": None,
                               "validation_split": 0.25, "label_column": "label"}
    plan = rest.post("/v1/jobs", json={**spec, "dry_run": True}).json()
    assert page.text_content("#plan-total-steps") == f"{TRAIN_STEPS:,}"
    assert page.text_content("#plan-trainable-init") == f"{plan['trainable_params_init']:,}"
    assert page.text_content("#plan-trainable-final") == f"{plan['trainable_params_final']:,}"
    assert js(page, "window.dashboard.charts.plan.series.budget.length") > 2
    page.screenshot(path=str(tmp_path / "new-job.png"), full_page=True)  # kept with the test's files, for a failure

    # Submit: the job page's curves and heatmap grow while it trains.
    page.click("#submit")
    page.wait_for_function("() => /^#\\/jobs\\/[0-9a-f-]{36}$/.test(location.hash)")
    job_id = page.url.rsplit("/", 1)[1]
    wait_js(page, "window.dashboard.charts.loss && window.dashboard.charts.loss.x.length > 0 && "
                  "window.dashboard.heatmap && window.dashboard.heatmap.steps.length > 1")
    first = js(page, "({loss: dashboard.charts.loss.x.length, heat: dashboard.heatmap.steps.length})")
    assert rest.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
    wait_js(page, f"dashboard.charts.loss.x.length > {first['loss']} "
                  f"&& dashboard.heatmap.steps.length > {first['heat']}")
    assert rest.get(f"/v1/jobs/{job_id}").json()["status"] == "running", "the charts grew only after the run"
    assert page.locator("#job-status .status.running").count() == 1
    page.wait_for_selector("#events li:has-text('step 50/1500: loss')")  # live over SSE

    page.wait_for_selector("#job-status .status.succeeded", timeout=WAIT_MS)
    wait_js(page, f"dashboard.charts.loss.x.at(-1) === {TRAIN_STEPS} && document.querySelector('#download-adapter')")
    page.wait_for_selector("#events li:has-text('evaluation at step 1500/1500')")

    # The charts hold what REST holds.
    metrics = rest.get(f"/v1/jobs/{job_id}/metrics/columns", params={"limit": 20000}).json()
    charts = js(page, "window.dashboard.charts")
    assert charts["loss"]["x"] == metrics["steps"] and charts["loss"]["series"]["loss"] == metrics["columns"]["loss"]
    assert charts["grad_norm"]["series"]["grad_norm"] == metrics["columns"]["grad_norm"]
    evaluated = [s for i, s in enumerate(metrics["steps"]) if metrics["columns"]["eval_accuracy"][i] is not None]
    assert charts["eval"]["x"] == evaluated and evaluated[-3:] == [500, 1000, 1500]
    assert charts["budget"]["series"]["planned"][-1] == charts["budget"]["series"]["reached"][-1] == 2 * 908
    ranks = rest.get(f"/v1/jobs/{job_id}/ranks/columns").json()
    heat = js(page, "window.dashboard.heatmap")
    assert heat["steps"] == ranks["steps"] and heat["ranks"] == ranks["ranks"]
    assert heat["modules"] == [m["name"] for m in ranks["modules"]] and len(heat["modules"]) == 12
    pattern = js(page, "window.dashboard.pattern")
    final = ranks["final_rank_pattern"]
    assert pattern["attention"] + pattern["ffn"] == sum(final.values())
    assert page.locator("#pattern-layers .bar").count() == 2  # tiny-bert's two layers
    assert "Final rank pattern" in page.text_content(".panel:has(#pattern-layers) h2")
    job = rest.get(f"/v1/jobs/{job_id}").json()
    assert f"{job['adapter_params']:,} adapter parameters kept" in page.text_content("#kept-text")

    page.screenshot(path=str(shots / "dashboard-job.png"), full_page=True)
    page.locator(".panel:has(#heatmap)").screenshot(path=str(shots / "dashboard-heatmap.png"))

    # Download the adapter: the size and sha256 shown are the server's, and the saved file matches them.
    head = rest.head(f"/v1/jobs/{job_id}/artifacts/adapter")
    item = page.locator("#downloads li[data-kind='adapter']")
    assert item.get_attribute("data-size") == head.headers["content-length"]
    assert item.locator("code.sha256").text_content() == head.headers["x-checksum-sha256"]
    with page.expect_download() as download:
        page.click("#download-adapter")
    saved = tmp_path / "adapter.tar"
    download.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == head.headers["x-checksum-sha256"]

    # A second, long job, cancelled from its page.
    page.click("nav a[href='#/new']")
    page.wait_for_selector("#model option[value='tiny-bert']", state="attached")
    page.select_option("#train-file", uploaded["id"])
    page.fill("#job-name", "to-cancel")
    page.fill("#max-steps", "50000")
    page.fill("#tinit", "100")
    page.fill("#tfinal", "100")
    page.click("#submit")
    page.wait_for_function("() => /^#\\/jobs\\/[0-9a-f-]{36}$/.test(location.hash)")
    second = page.url.rsplit("/", 1)[1]
    assert second != job_id
    # The jobs list follows it by itself: its progress bar moves without a reload.
    page.click("nav a[href='#/jobs']")
    bar = f"#jobs tr[data-job-id='{second}'] progress"
    wait_js(page, f"Number(document.querySelector(\"{bar}\")?.getAttribute('value')) > 0")
    seen = int(page.get_attribute(bar, "value"))
    wait_js(page, f"Number(document.querySelector(\"{bar}\").getAttribute('value')) > {seen}")
    page.screenshot(path=str(tmp_path / "jobs.png"), full_page=True)
    page.click(f"#jobs tr[data-job-id='{second}'] a")
    wait_js(page, "window.dashboard.charts.loss && window.dashboard.charts.loss.x.length > 0")
    page.click("#cancel")
    page.wait_for_selector("#job-status .status.cancelled", timeout=60_000)
    assert rest.get(f"/v1/jobs/{second}").json()["status"] == "cancelled"

    # The list filters by status; the comparison shows both curves and the rank difference.
    page.click("nav a[href='#/jobs']")
    page.select_option("#status-filter", "cancelled")
    page.wait_for_function("() => [...document.querySelectorAll('#jobs tbody tr[data-job-id]')]"
                           f".map(r => r.dataset.jobId).join() === '{second}'")
    page.goto(f"{server}/dashboard/#/compare?a={job_id}&b={second}")
    page.wait_for_selector("#rank-diff tbody tr")
    second_ranks = rest.get(f"/v1/jobs/{second}/ranks").json()["data"][-1]["ranks"]
    assert js(page, "window.dashboard.rankDiff") == {m: second_ranks[m] - final[m] for m in final}
    assert "B: no final pattern" in page.text_content("#rank-diff-note")  # cancelled before the budget froze
    assert [k for k in js(page, "Object.keys(dashboard.charts['compare-loss'].series)") if "smoothed" not in k] == [
        "A: browser-run", "B: to-cancel"]
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)

    # A phone, in the dark: the job page fits the screen's width (wide parts scroll inside their own panels).
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{server}/dashboard/#/jobs/{job_id}")
    page.click("#theme")
    assert js(page, "document.documentElement.dataset.theme") == "dark"
    wait_js(page, "window.dashboard.heatmap && document.querySelector('#download-adapter')")
    assert js(page, "getComputedStyle(document.body).backgroundColor") == "rgb(21, 23, 27)"
    assert js(page, "document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(shots / "dashboard-phone-dark.png"))
    for view, ready in [("#/jobs", "#jobs tbody tr[data-job-id]"), ("#/new", "#model option"),
                        ("#/files", "#files tbody tr[data-file-id]"),
                        (f"#/compare?a={job_id}&b={second}", "#rank-diff")]:
        page.goto(f"{server}/dashboard/{view}")
        page.wait_for_selector(ready, state="attached")
        assert js(page, "document.documentElement.scrollWidth") <= 390, view
    page.set_viewport_size({"width": 1360, "height": 900})

    # The API docs load too, from this server.
    page.goto(f"{server}/docs")
    page.wait_for_selector(".swagger-ui .info", timeout=30_000)
    page.wait_for_selector("button.authorize")

    # Pages of 50: 55 more (failed) jobs of this tenant, the oldest two on the second page.
    with session_scope() as session:
        tenant_id = tenant_for_key(session, key).id
        session.add_all([Job(tenant_id=tenant_id, spec=spec, status="failed", error="seeded", finished_at=utcnow())
                         for _ in range(55)])
    page.goto(f"{server}/dashboard/#/jobs")
    page.wait_for_selector("#jobs-count:has-text('1–50 of 57 jobs')")
    assert page.is_hidden("#jobs-newer") and page.locator("#jobs tbody tr[data-job-id]").count() == 50
    page.click("#jobs-older")
    page.wait_for_selector("#jobs-count:has-text('51–57 of 57 jobs')")
    assert {job_id, second} <= set(page.eval_on_selector_all("#jobs tbody tr[data-job-id]",
                                                             "rows => rows.map(r => r.dataset.jobId)"))
    assert page.is_hidden("#jobs-older")

    # A finished job deleted from its page (after the confirmation) is gone, and the list shows the rest.
    page.goto(f"{server}/dashboard/#/jobs/{second}")
    page.wait_for_selector("#delete:not([hidden])")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete")
    page.wait_for_selector("#jobs-count:has-text('of 56 jobs')")
    assert rest.get(f"/v1/jobs/{second}").status_code == 404

    # A key revoked while signed in: the next request sends the tab back to sign in, saying why.
    with session_scope() as session:
        assert revoke_api_key(session, key_prefix(key))
    page.wait_for_selector("#signin-error:has-text('Signed out: unknown or revoked API key')")
    assert js(page, "sessionStorage.getItem('adalora-api-key')") is None

    assert foreign_requests(page.requests, server) == []
    # Chromium logs every 4xx as "Failed to load resource" (the wrong key, the broken file): those were meant.
    assert console_errors(page) == []
