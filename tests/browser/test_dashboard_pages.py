"""The dashboard's pages on jobs written straight into the database (no worker, no training): a reopened job is
drawn once, whatever refreshes it; the theme toggle keeps the page; phones; no request to another host; a job the
key cannot see; the charts' axes, smoothing, points and heatmap; where a page opens; what a job without archives
says; downloads that stream to disk. The sections follow the dashboard items of issue 26."""

from __future__ import annotations

import hashlib
import shutil
import time
import uuid

import httpx
import pytest
from sqlalchemy import select

from service.db import session_scope
from service.keys import create_api_key, tenant_for_key
from service.store import get_store
from service.tables import Artifact, Job
from tests.browser.helpers import (
    add_metric_steps,
    console_errors,
    foreign_requests,
    js,
    open_dashboard,
    seed_archive,
    seed_job,
    wait_js,
    wait_until_settled,
)
from tests.conftest import REPO, free_port, start_api, stop_process

# A model folder name as long as real ones get: the New job page's select is as wide as its longest option.
LONG_MODEL = "an-organisation-with-a-long-name--a-model-with-an-even-longer-name-7b-instruct-v0.3"


@pytest.fixture(scope="module")
def server(service_env, tiny_model_dir, tmp_path_factory):
    """A live API (no worker: the jobs here are written into the database) with the tiny model twice, once under a
    long name."""
    folder = tmp_path_factory.mktemp("live")
    for name in ("tiny-bert", LONG_MODEL):
        shutil.copytree(tiny_model_dir, folder / "models" / name)
    port = free_port()
    api = start_api({**service_env, "MODEL_DIRS": str(folder / "models")}, port, folder / "api.log")
    yield f"http://127.0.0.1:{port}"
    stop_process(api)


@pytest.fixture(scope="module")
def tenant_id(key) -> int:
    with session_scope() as session:
        return tenant_for_key(session, key).id


@pytest.fixture(scope="module")
def rest(server, key):
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        yield client


def increasing(xs: list) -> bool:
    return all(a < b for a, b in zip(xs, xs[1:]))


# -- 1. each point once ------------------------------------------------------------------------------------

def test_a_reopened_job_draws_each_point_once_after_reload_and_theme_toggle(server, page, key, tenant_id, rest):
    job_id = seed_job(tenant_id)
    metrics = rest.get(f"/v1/jobs/{job_id}/metrics/columns", params={"limit": 20000}).json()
    ranks = rest.get(f"/v1/jobs/{job_id}/ranks/columns").json()
    evals = [s for s, v in zip(metrics["steps"], metrics["columns"]["eval_loss"]) if v is not None]
    assert len(metrics["steps"]) == 150 and len(ranks["steps"]) == 19 and evals == [50, 100, 150]

    # Metrics answered late, as a long job's pages are: the event stream's end (at once: the job has finished) and
    # the 1.5 s poll refresh the page while the first load still waits for them.
    page.route("**/metrics/columns?*", lambda route: (time.sleep(1.6), route.continue_()))
    open_dashboard(page, server, key, f"#/jobs/{job_id}")
    for again in (None, page.reload, lambda: page.click("#theme")):
        if again:
            again()
        wait_until_settled(page)
        charts = js(page, "dashboard.charts")
        for name in ("loss", "lr", "orth_loss", "grad_norm"):
            assert charts[name]["x"] == metrics["steps"], name
            assert js(page, f"dashboard.plots.{name}.data[0].length") == 150, name  # what uPlot draws
        assert charts["loss"]["series"]["loss"] == metrics["columns"]["loss"]
        assert charts["eval"]["x"] == evals
        assert [x for x, y in zip(charts["budget"]["x"], charts["budget"]["series"]["reached"]) if y is not None] \
            == metrics["steps"]
        assert all(increasing(js(page, f"dashboard.plots[{name!r}].data[0]")) for name in charts), \
            "a line drawn back from the last step to the first"
        heat = js(page, "dashboard.heatmap")
        assert heat["steps"] == ranks["steps"] and heat["ranks"] == ranks["ranks"] and len(heat["modules"]) == 12
        assert "12 modules × 19 allocations" in page.text_content("#heatmap-legend")
        assert page.locator("#events li").count() == 3
    assert js(page, "document.documentElement.dataset.theme") == "dark"
    assert console_errors(page) == []


# -- 2. the theme toggle keeps the page ----------------------------------------------------------------------

def test_the_theme_toggle_keeps_the_page_and_what_its_form_holds(server, page, key):
    open_dashboard(page, server, key, "#/new")
    page.wait_for_selector("#model option[value='tiny-bert']", state="attached")
    typed = {"#job-name": "half-typed", "#max-steps": "777", "#learning-rate": "0.0003", "#hub-path": "nyu-mll/glue"}
    page.select_option("#model", "tiny-bert")
    page.select_option("#dataset-source", "hub")
    for selector, value in typed.items():
        page.fill(selector, value)
    js(page, "document.querySelector('#new-job').dataset.mark = 'the same form'")
    page.click("#theme")
    assert js(page, "document.documentElement.dataset.theme") == "dark"
    assert js(page, "document.querySelector('#new-job').dataset.mark") == "the same form"
    assert {selector: page.input_value(selector) for selector in typed} == typed
    assert page.input_value("#dataset-source") == "hub" and page.input_value("#model") == "tiny-bert"
    # The jobs list keeps its filter too, and the page keeps its colours in step with the theme.
    page.click("nav a[href='#/jobs']")
    page.select_option("#status-filter", "failed")
    page.click("#theme")
    assert page.input_value("#status-filter") == "failed"
    assert js(page, "getComputedStyle(document.body).backgroundColor") == "rgb(247, 247, 249)"


# -- 3. phones -------------------------------------------------------------------------------------------------

def test_every_page_fits_a_390px_phone_even_with_a_long_model_name(server, page, key, tenant_id):
    job_id = seed_job(tenant_id, name="a-job-name-long-enough-to-push-a-select-past-the-edge-of-a-phone-screen")
    page.set_viewport_size({"width": 390, "height": 844})
    open_dashboard(page, server, key, "#/new")
    page.wait_for_selector(f"#model option[value='{LONG_MODEL}']", state="attached")
    page.select_option("#model", LONG_MODEL)
    page.select_option("#dataset-source", "server")
    page.fill("#server-path", "sentiment.csv")
    page.fill("#gpu", "T4")
    page.click("#dry-run")
    page.wait_for_selector("#plan-total-steps")
    assert js(page, "document.documentElement.scrollWidth") <= 390, "#/new"
    for route, ready in [("#/jobs", "#jobs tbody tr[data-job-id]"), ("#/files", "#files tbody tr"),
                         (f"#/compare?a={job_id}&b={job_id}", "#rank-diff"),
                         (f"#/jobs/{job_id}", "#heatmap-legend .level"),
                         (f"#/jobs/{uuid.uuid4()}", "#not-found")]:
        page.goto(f"{server}/dashboard/{route}")
        page.wait_for_selector(ready, state="attached")
        assert js(page, "document.documentElement.scrollWidth") <= 390, route


# -- 4. no request leaves the server ----------------------------------------------------------------------------

def test_docs_redoc_and_the_dashboard_request_nothing_from_another_host(server, page, key, tenant_id):
    job_id = seed_job(tenant_id)
    open_dashboard(page, server, key, f"#/jobs/{job_id}")
    wait_until_settled(page)
    page.goto(f"{server}/docs")
    page.wait_for_selector(".swagger-ui .info")
    page.goto(f"{server}/redoc")
    page.wait_for_selector("img[alt='redocly logo']", state="attached")  # ReDoc's footer image: it was a CDN's
    page.wait_for_load_state("networkidle")
    assert {r.url.split("?")[0].rsplit("/", 1)[-1] for r in page.requests} >= {"redoc-offline.js", "openapi.json"}
    assert foreign_requests(page.requests, server) == []
    assert console_errors(page) == []


# -- 5. a job the key cannot see ----------------------------------------------------------------------------------

def test_a_job_the_key_cannot_see_shows_not_found_and_stops_asking(server, page, key, tenant_id):
    with session_scope() as session:
        other_tenant = tenant_for_key(session, create_api_key(session, "someone-else")).id
    foreign = seed_job(other_tenant)
    open_dashboard(page, server, key, f"#/jobs/{foreign}")
    page.wait_for_selector("#not-found:has-text('Job not found')")
    assert page.locator("#charts, #events, #heatmap").count() == 0  # no empty panels under it
    def asked() -> list[str]:
        return [r.url for r in page.requests if foreign in r.url]

    seen = asked()
    page.wait_for_timeout(4_000)  # longer than the poll (1.5 s) and the event stream's reconnect (2 s)
    assert asked() == seen and len(seen) <= 2 and not [u for u in seen if "/events" in u], seen

    # A job deleted while its page polls: the same page, and the polling stops.
    running = seed_job(tenant_id, status="running", step=30)
    page.goto(f"{server}/dashboard/#/jobs/{running}")
    wait_js(page, "dashboard.polling && dashboard.streaming")
    with session_scope() as session:
        session.delete(session.get(Job, running))
    page.wait_for_selector("#not-found")
    wait_js(page, "!dashboard.polling && !dashboard.streaming")

    # Compared with a job it cannot see: said so, not an empty page.
    page.goto(f"{server}/dashboard/#/compare?a={foreign}&b={foreign}")
    assert f"no job {foreign}" in page.wait_for_selector("#compare-error").text_content()


# -- 6. charts -------------------------------------------------------------------------------------------------

def axes(page, chart: str) -> list[dict]:
    """The y axes of a chart as uPlot drew them (its internal _splits, _values and _size), with the width of the
    widest label measured in the axis font."""
    return js(page, f"""dashboard.plots[{chart!r}].axes.slice(1).map((a) => {{
        const ctx = document.createElement("canvas").getContext("2d"); ctx.font = a.font[0];
        return {{ scale: a.scale, side: a.side, label: a.label, splits: a._splits, labels: a._values, size: a._size,
                  room: a._size - a.ticks.size - a.gap,
                  widest: Math.max(...a._values.map((v) => ctx.measureText(v).width)) }};
    }})""")


def assert_exact_labels(axis: dict) -> None:
    """Each tick label reads as its tick (to a thousandth of their spacing), so no two read alike."""
    step = min(abs(b - a) for a, b in zip(axis["splits"], axis["splits"][1:]))
    for split, label in zip(axis["splits"], axis["labels"]):
        assert float(label.replace(",", "")) == pytest.approx(split, abs=step / 1000), axis["labels"]


def test_axes_label_ticks_with_the_digits_they_need_and_are_as_wide_as_their_labels(server, page, key, tenant_id):
    job_id = seed_job(tenant_id, grad_norm_scale=1e6)  # gradient norms of a million: labels like 1,200,000
    open_dashboard(page, server, key, f"#/jobs/{job_id}")
    wait_until_settled(page)
    [lr] = axes(page, "lr")
    assert_exact_labels(lr)
    assert all("e-" in label for label in lr["labels"] if label != "0"), lr["labels"]  # 2e-4 ... 1e-3
    # Zoomed into the warmup (lr below 6e-4), where the labels read 0, 0, 0.
    js(page, "dashboard.plots.lr.setScale('x', { min: 1, max: 8 })")
    [warmup] = axes(page, "lr")
    assert_exact_labels(warmup)
    assert warmup["splits"] != lr["splits"]
    for chart in ("loss", "lr", "orth_loss", "grad_norm", "eval", "budget"):
        for axis in axes(page, chart):
            assert axis["room"] >= axis["widest"], (chart, axis["labels"], axis["size"])  # no clipped digit
    assert max(len(label) for label in axes(page, "grad_norm")[0]["labels"]) >= len("1,000,000")


def test_budget_lines_all_show_and_eval_loss_has_an_axis_of_its_own(server, page, key, tenant_id):
    job_id = seed_job(tenant_id)
    open_dashboard(page, server, key, f"#/jobs/{job_id}")
    wait_until_settled(page)
    budget = js(page, "dashboard.plots.budget.series.slice(1).map((s) => ({ label: s.label, width: s.width, "
                      "dash: s.dash || null }))")
    # Drawn in this order, each narrower than the one under it; the top one dashed, so the others show through.
    assert [s["label"] for s in budget] == ["planned", "reached", "kept params"]
    assert budget[0]["width"] > budget[1]["width"] > budget[2]["width"] and budget[2]["dash"]
    scales = dict(js(page, "dashboard.plots.eval.series.slice(1).map((s) => [s.label, s.scale])"))
    assert scales["accuracy"] == scales["f1"] == scales["mcc"] != scales["loss"]
    eval_axes = {axis["scale"]: axis for axis in axes(page, "eval")}
    assert eval_axes[scales["loss"]]["side"] == 1 and eval_axes[scales["loss"]]["label"] == "loss"  # on the right
    assert eval_axes[scales["accuracy"]]["label"] == "score"


def tensorboard_ema(values: list[float], weight: float) -> list[float]:
    """TensorBoard's scalar smoothing: an exponential moving average divided by 1 - weight^n (debiased)."""
    last, out = 0.0, []
    for n, value in enumerate(values, 1):
        last = last * weight + (1 - weight) * value
        out.append(last / (1 - weight**n))
    return out


def set_smoothing(page, chart: str, weight: float) -> None:
    page.eval_on_selector(f"input[data-smoothing={chart!r}]",
                          "(el, w) => { el.value = w; el.dispatchEvent(new Event('input')); }", weight)


def test_loss_smoothing_is_tensorboards_ema_over_a_faint_raw_curve(server, page, key, tenant_id, rest):
    job_id = seed_job(tenant_id)
    raw = rest.get(f"/v1/jobs/{job_id}/metrics/columns").json()["columns"]["loss"]
    open_dashboard(page, server, key, f"#/jobs/{job_id}")
    wait_until_settled(page)
    slider = page.locator("input[data-smoothing='loss']")
    assert (slider.get_attribute("min"), slider.get_attribute("max")) == ("0", "0.99")
    for weight in (0.9, 0.0, 0.99):
        set_smoothing(page, "loss", weight)
        series = js(page, "dashboard.charts.loss.series")
        assert series["loss"] == raw
        assert series["loss (smoothed)"] == pytest.approx(tensorboard_ema(raw, weight), rel=1e-9)
    assert js(page, "dashboard.plots.loss.data[2]") == pytest.approx(tensorboard_ema(raw, 0.99), rel=1e-9)
    strokes = js(page, "(u => u.series.slice(1).map((s, i) => [s.label, s.stroke(u, i + 1), s.width]))"
                       "(dashboard.plots.loss)")
    (raw_label, raw_stroke, raw_width), (smooth_label, smooth_stroke, smooth_width) = strokes
    assert (raw_label, smooth_label) == ("loss", "loss (smoothed)")
    assert raw_stroke == smooth_stroke + "55" and raw_width < smooth_width  # the raw curve faint, under it
    page.reload()  # the weight is kept, as TensorBoard keeps it
    assert page.locator("input[data-smoothing='loss']").input_value() == "0.99"


def test_points_show_while_few_and_go_when_the_curve_fills_in(server, page, key, tenant_id):
    job_id = seed_job(tenant_id, status="running", step=3)
    open_dashboard(page, server, key, f"#/jobs/{job_id}")
    wait_js(page, "dashboard.plots.loss && dashboard.plots.loss.data[0].length === 3")
    # uPlot asks each series' points.show whether to draw its points, for the steps in view
    points = ("(u => u.series.slice(1).map((s, i) => s.points.show(u, i + 1, ...u.series[0].idxs)))"
              "(dashboard.plots.loss)")
    assert js(page, points) == [True, True]
    add_metric_steps(job_id, 4, 400)
    wait_js(page, "dashboard.plots.loss.data[0].length === 400")
    assert js(page, points) == [False, False]


def test_heatmap_columns_span_their_steps_to_the_frozen_end_and_its_legend_names_every_rank(
        server, page, key, tenant_id, rest):
    job_id = seed_job(tenant_id)
    ranks = rest.get(f"/v1/jobs/{job_id}/ranks/columns").json()
    open_dashboard(page, server, key, f"#/jobs/{job_id}")
    wait_until_settled(page)
    heat = js(page, "dashboard.heatmap")
    steps, columns = ranks["steps"], heat["columns"]
    assert (steps[0], steps[-1], ranks["final"][-1]) == (10, 100, True)
    assert heat["end"] == 150 and heat["frozenFrom"] == 100  # the last allocation's pattern, frozen to the end
    px_per_step = (columns[-1][1] - columns[0][0]) / (150 - 10)
    for (left, right), step, following in zip(columns, steps, steps[1:] + [150]):
        assert right - left == pytest.approx((following - step) * px_per_step, abs=1.5), (step, following)
    assert columns[-1][1] - columns[-1][0] > 9 * (columns[0][1] - columns[0][0])  # 50 steps frozen vs 5
    top = max(r for row in ranks["ranks"] for r in row if r is not None)
    assert page.locator("#heatmap-legend .level").all_inner_texts() == [str(r) for r in range(top + 1)]
    # One name per module type: the heatmap's rows and the pattern's bars.
    bar_names = page.locator("#pattern-types > span:not(.muted)").all_inner_texts()
    assert set(heat["rowLabels"]) == set(bar_names) and len(bar_names) == 6
    assert page.locator(".panel:has(#heatmap)").screenshot()  # draws without error


# -- 7. where a page opens, and what a job without archives says ------------------------------------------------

def test_submit_opens_the_job_page_at_its_top(server, page, key):
    open_dashboard(page, server, key, "#/new")
    page.wait_for_selector("#model option[value='tiny-bert']", state="attached")
    page.select_option("#model", "tiny-bert")
    page.select_option("#dataset-source", "server")
    page.fill("#server-path", "sentiment.csv")
    page.fill("#job-name", "scrolled")
    page.locator("#submit").scroll_into_view_if_needed()
    assert js(page, "window.scrollY") > 0
    page.click("#submit")
    page.wait_for_selector("#job-title:has-text('scrolled')")
    assert js(page, "window.scrollY") == 0  # not under the sticky header, half way down
    # From a scrolled list to a job: the same.
    page.click("nav a[href='#/jobs']")
    page.wait_for_selector("#jobs tbody tr[data-job-id] a")
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.click("#jobs tbody tr[data-job-id] a >> nth=-1")
    page.wait_for_selector("#job-title:not(:empty)")
    assert js(page, "window.scrollY") == 0


@pytest.mark.parametrize("status", ["cancelled", "failed"])
def test_a_job_that_did_not_succeed_says_why_it_has_no_downloads_and_what_it_kept(server, page, key, tenant_id, status):
    job_id = seed_job(tenant_id, status=status, step=60)
    open_dashboard(page, server, key, f"#/jobs/{job_id}")
    wait_until_settled(page)
    text = page.wait_for_selector("#no-downloads").text_content()
    assert "once the job has succeeded" not in page.text_content("#downloads")
    assert {"cancelled": "Cancelled at step 60: a cancelled job is not exported, so it has no archives.",
            "failed": "The job failed before its archives were written"}[status] in text
    assert f'"from_checkpoint": "{job_id}:50"' in text  # seed_job's checkpoint


# -- 8. downloads ----------------------------------------------------------------------------------------------

def test_a_download_streams_to_disk_through_the_service_worker_with_the_servers_sha256_shown(
        server, page, key, tenant_id, rest, tmp_path):
    source = (REPO / "api" / "dashboard" / "app.js").read_text()
    assert ".blob()" not in source and "arrayBuffer" not in source  # nothing reads a whole archive into the tab
    job_id = seed_job(tenant_id)
    seed_archive(job_id, tmp_path / "archive", size=3 * 2**20)
    head = rest.head(f"/v1/jobs/{job_id}/artifacts/adapter")
    open_dashboard(page, server, key, f"#/jobs/{job_id}")
    wait_until_settled(page)
    item = page.wait_for_selector("#downloads li[data-kind='adapter']")
    assert item.query_selector("code.sha256").text_content() == head.headers["x-checksum-sha256"]
    assert item.get_attribute("data-size") == head.headers["content-length"]
    with page.expect_download() as download:
        page.click("#download-adapter")
    saved = tmp_path / "adapter.tar"
    download.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == head.headers["x-checksum-sha256"]
    assert download.value.suggested_filename == f"{job_id}-adapter.tar"
    # The archive's one GET came from the service worker, with the key; the page itself only asked for its size.
    gets = [r for r in page.requests if r.url.endswith(f"/{job_id}/artifacts/adapter") and r.method == "GET"]
    assert len(gets) == 1 and gets[0].service_worker is not None
    assert page.text_content("#downloads li[data-kind='adapter'] .error") == ""
    # An archive gone from the store since the page listed it: the server's reason, beside the button.
    with session_scope() as session:
        get_store().delete(session.scalar(select(Artifact.path).where(Artifact.job_id == job_id)))
    page.click("#download-adapter")
    failure = "download failed: the adapter archive is missing from the artifact store"
    page.wait_for_selector(f"#downloads li[data-kind='adapter'] .error:has-text('{failure}')")
    assert console_errors(page) == []


# -- issue 24: where a run started, and the rate it chose ----------------------------------------------------

def test_the_eval_chart_starts_at_step_0_and_the_page_shows_the_rate_auto_chose(server, page, key, tenant_id):
    from service.tables import Metric

    job_id = seed_job(tenant_id)
    probe = {"learning_rate": 0.00123, "steps": 16, "lrs": [1e-5, 1e-1], "losses": [0.7, 0.4], "lowest_at": 0.0123}
    with session_scope() as session:
        job = session.get(Job, job_id)
        job.spec = {**job.spec, "training": {**job.spec["training"], "learning_rate": "auto"}}
        job.lr_probe = probe
        session.add(Metric(job_id=job_id, step=0, values={"eval_loss": 0.9, "eval_accuracy": 0.4}))
    open_dashboard(page, server, key, f"#/jobs/{job_id}")
    wait_until_settled(page)
    assert page.inner_text("#job-lr") == "0.00123 (auto, 16-step range test)"
    xs = js(page, "dashboard.plots.eval.data[0]")
    assert xs[0] == 0 and xs[1:] == [50, 100, 150]  # the score before training, then every evaluation


# -- issue 25: tokens counted ---------------------------------------------------------------------------------

def test_the_job_page_shows_the_tokens_trained_and_the_latest_rate(server, page, key, tenant_id):
    from service.tables import Metric

    job_id = seed_job(tenant_id)
    with session_scope() as session:
        session.get(Job, job_id).trained_tokens = 123_456
        last = session.scalar(select(Metric).where(Metric.job_id == job_id, Metric.step == 150))
        last.values = {**last.values, "tokens": 123_456.0, "tokens_per_s": 2345.6}
    open_dashboard(page, server, key, f"#/jobs/{job_id}")
    wait_until_settled(page)
    assert (page.inner_text("#job-tokens"), page.inner_text("#job-tokens-per-s")) == ("123,456", "2,346")


def test_the_new_job_form_asks_for_an_auto_learning_rate_and_a_scaling_rule(server, page, key, rest):
    open_dashboard(page, server, key, "#/new")
    page.wait_for_selector("#model option[value='tiny-bert']", state="attached")
    page.select_option("#model", "tiny-bert")
    page.select_option("#dataset-source", "server")
    page.fill("#server-path", "sentiment.csv")
    page.fill("#job-name", "auto-rate")
    assert page.input_value("#scaling") == "rank_stabilized"  # the spec's default is the form's
    page.select_option("#scaling", "standard")
    page.check("#lr-auto")
    page.click("#submit")
    page.wait_for_selector("#job-title:has-text('auto-rate')")
    job_id = page.evaluate("location.hash").rsplit("/", 1)[-1]
    spec = rest.get(f"/v1/jobs/{job_id}").json()["spec"]
    assert spec["training"]["learning_rate"] == "auto" and spec["budget"]["scaling"] == "standard"
    assert spec["budget"]["lora_alpha"] == 8
