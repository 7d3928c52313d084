// The AdaLoRA dashboard: one page, hash routes, the public REST API only (what it does, a script can do).
// The API key lives in sessionStorage and goes out as the Bearer key; nothing is fetched from another host.
"use strict";

const KEY = "adalora-api-key";
const POLL_MS = 1500;
const STATUSES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled"];
const FINISHED = ["succeeded", "failed", "cancelled"];
const TYPE_LABEL = { query: "q", key: "k", value: "v", qkv: "qkv", output: "o", ffn_in: "ffn↑", ffn_out: "ffn↓",
                     other: "·" };

// What the pages show, for scripts and tests to read (window.dashboard.charts.loss.x ...).
const dashboard = window.dashboard = { charts: {}, heatmap: null, pattern: null, route: null };
let cleanups = [];  // timers and streams of the current page, stopped on navigation

// -- small helpers ---------------------------------------------------------------------------------------

const $ = (sel, root = document) => root.querySelector(sel);
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}
const int = (n) => n == null ? "–" : Math.round(n).toLocaleString("en");
const when = (t) => t ? new Date(t).toLocaleString() : "–";
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"]; let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}
function duration(s) {
  if (s == null) return "–";
  s = Math.round(s);
  return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.round(s % 3600 / 60)} min` :
         s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}
const statusBadge = (s) => h("span", { class: `status ${s}`, text: s });
const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

class ApiError extends Error {
  constructor(status, body) {
    super(errorText(body) || `HTTP ${status}`);
    this.status = status; this.body = body;
  }
}
function errorText(body) {
  if (!body) return "";
  if (typeof body.detail === "string") return body.detail;
  if (Array.isArray(body.detail)) return body.detail.map((e) => e.field ? `${e.field}: ${e.message}` : e.message || JSON.stringify(e)).join("\n");
  return JSON.stringify(body);
}

function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${sessionStorage.getItem(KEY)}`, ...extra };
}
async function api(path, { method = "GET", body, headers = {}, raw = false } = {}) {
  const init = { method, headers: authHeaders(headers) };
  if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  const response = await fetch(path, init);
  if (raw) return response;
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (response.status === 401 && sessionStorage.getItem(KEY)) signOut(errorText(data));
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// -- routing ---------------------------------------------------------------------------------------------

const routes = [
  [/^#\/jobs\/([0-9a-f-]{36})$/, jobPage],
  [/^#\/jobs$/, jobsPage],
  [/^#\/new$/, newJobPage],
  [/^#\/files$/, filesPage],
  [/^#\/compare(?:\?a=([0-9a-f-]*)&b=([0-9a-f-]*))?$/, comparePage],
];

function route() {
  cleanups.forEach((stop) => stop()); cleanups = [];
  dashboard.charts = {}; dashboard.heatmap = null; dashboard.pattern = null;
  const view = $("#view"); view.replaceChildren();
  const signedIn = !!sessionStorage.getItem(KEY);
  $("#nav").hidden = $("#sign-out").hidden = !signedIn;
  if (!signedIn) { dashboard.route = "signin"; return signInPage(view); }
  const hash = location.hash || "#/jobs";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", hash.startsWith(a.getAttribute("href")));
  for (const [pattern, page] of routes) {
    const m = hash.match(pattern);
    if (m) { dashboard.route = page.name; return page(view, ...m.slice(1)); }
  }
  location.hash = "#/jobs";
}
function every(ms, fn) { const id = setInterval(fn, ms); cleanups.push(() => clearInterval(id)); }

function signOut(reason) {
  sessionStorage.removeItem(KEY);
  dashboard.signOutReason = reason || "";
  route();
}

// -- sign in ---------------------------------------------------------------------------------------------

function signInPage(view) {
  const input = h("input", { id: "api-key", type: "password", placeholder: "ada_…", autocomplete: "off", required: true });
  const error = h("p", { id: "signin-error", class: "error", text: dashboard.signOutReason ? `Signed out: ${dashboard.signOutReason}` : "" });
  const form = h("form", { class: "panel signin", onsubmit: async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    const response = await fetch("/v1/jobs?limit=1", { headers: { Authorization: `Bearer ${key}` } });
    if (response.ok) {
      sessionStorage.setItem(KEY, key); dashboard.signOutReason = "";
      if (!location.hash || location.hash === "#/") location.hash = "#/jobs"; else route();
    } else {
      const body = await response.json().catch(() => null);
      error.textContent = response.status === 401 ? `That key was refused: ${errorText(body)}` : `Sign-in failed: ${errorText(body) || response.status}`;
    }
  } }, h("h1", { text: "Sign in" }),
    h("p", { class: "muted", text: "With an API key (adalora-svc create-key). It is kept in this tab's session storage only." }),
    input, h("button", { class: "primary", type: "submit", id: "sign-in" }, "Sign in"), error);
  view.append(form); input.focus();
}

// -- jobs list -------------------------------------------------------------------------------------------

function jobsPage(view) {
  const PAGE = 50;
  let offset = 0;
  const filter = h("select", { id: "status-filter", onchange: () => { offset = 0; refresh(); } },
    h("option", { value: "" }, "all statuses"), STATUSES.map((s) => h("option", { value: s }, s)));
  const body = h("tbody");
  const count = h("span", { class: "muted", id: "jobs-count" });
  const prev = h("button", { id: "jobs-newer", onclick: () => { offset = Math.max(0, offset - PAGE); refresh(); } }, "← newer");
  const next = h("button", { id: "jobs-older", onclick: () => { offset += PAGE; refresh(); } }, "older →");
  view.append(h("div", { class: "row" }, h("h1", { text: "Jobs" }), h("span", { class: "spacer" }),
    h("label", {}, "Status ", filter), count, h("a", { href: "#/new" }, h("button", { class: "primary" }, "New job"))),
    h("div", { class: "panel table-wrap" }, h("table", { id: "jobs" },
      h("thead", {}, h("tr", {}, ["Job", "Status", "Progress", "Model", "Task", "Budget", "Created", "Finished"].map(
        (t, i) => h("th", { class: i >= 6 ? "hide-narrow" : null, text: t })))), body),
      h("div", { class: "row", style: "margin-top:.6rem" }, prev, next)));
  async function refresh() {
    const status = filter.value;
    const data = await api(`/v1/jobs?limit=${PAGE}&offset=${offset}${status ? `&status=${status}` : ""}`);
    count.textContent = data.count > PAGE ? `${offset + 1}–${offset + data.data.length} of ${data.count} jobs` :
      `${data.count} job${data.count === 1 ? "" : "s"}`;
    prev.hidden = offset === 0; next.hidden = offset + data.data.length >= data.count;
    body.replaceChildren(...data.data.map((j) => h("tr", { "data-job-id": j.id, "data-status": j.status },
      h("td", {}, h("a", { href: `#/jobs/${j.id}` }, j.name || j.id.slice(0, 8))),
      h("td", {}, statusBadge(j.status)),
      h("td", {}, h("progress", { max: j.total_steps || 1, value: j.total_steps ? j.step : 0 }),
        h("span", { class: "muted" }, ` ${j.step}/${j.total_steps ?? "?"}`)),
      h("td", { class: "mono", text: j.model }), h("td", { text: j.task }),
      h("td", { text: j.budget_target == null ? "–" : `${int(j.current_budget)} → ${int(j.budget_target)} ${j.budget_unit}` }),
      h("td", { class: "hide-narrow", text: when(j.created_at) }), h("td", { class: "hide-narrow", text: when(j.finished_at) }))));
    if (!data.data.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "muted", text: "No jobs yet." })));
  }
  refresh(); every(POLL_MS * 2, refresh);
}

// -- charts ----------------------------------------------------------------------------------------------

const PALETTE = ["#2f6fde", "#e07b24", "#1a8a4a", "#c62f2f", "#8a4fd0", "#0f9aa8", "#b7791f", "#d0479a"];

// A line chart of series over one x axis; `update(x, {label: ys})` redraws it. Its data is dashboard.charts[name].
function lineChart(container, name, title, { xLabel = "step", dashed = [] } = {}) {
  const panel = h("div", { class: "panel", "data-chart": name }, h("h2", { text: title }), h("div", { class: "chart" }));
  container.append(panel);
  const el = panel.lastChild;
  let plot = null, labels = [];
  const record = dashboard.charts[name] = { x: [], series: {} };
  function build(x, series) {
    labels = Object.keys(series);
    const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--line") }, ticks: { stroke: cssVar("--line") } };
    plot?.destroy();
    plot = new uPlot({
      width: Math.max(el.clientWidth, 260), height: 220, scales: { x: { time: false } },
      axes: [{ ...axis, label: xLabel }, { ...axis, size: 60 }],
      series: [{ label: xLabel }, ...labels.map((l, i) => ({ label: l, stroke: PALETTE[i % PALETTE.length], width: 1.5,
        spanGaps: true, dash: dashed.includes(l) ? [6, 4] : undefined, points: { show: x.length < 40 } }))],
    }, [x, ...labels.map((l) => series[l])], el);
  }
  const resize = () => plot && plot.setSize({ width: Math.max(el.clientWidth, 260), height: 220 });
  window.addEventListener("resize", resize); cleanups.push(() => { window.removeEventListener("resize", resize); plot?.destroy(); });
  return {
    panel,
    update(x, series) {
      record.x = x; record.series = series;
      if (!x.length) { el.replaceChildren(h("p", { class: "muted", text: "no data yet" })); plot = null; return; }
      if (!plot || Object.keys(series).join() !== labels.join()) { el.replaceChildren(); build(x, series); }
      else plot.setData([x, ...labels.map((l) => series[l])]);
    },
  };
}

// Overlays series sampled at different xs onto one x axis (null where a series has no point).
function align(parts) {
  const xs = [...new Set(parts.flatMap((p) => p.x))].sort((a, b) => a - b);
  const out = {};
  for (const p of parts) {
    const at = new Map(p.x.map((x, i) => [x, p.y[i]]));
    out[p.label] = xs.map((x) => at.has(x) ? at.get(x) : null);
  }
  return [xs, out];
}

// The rank heatmap: modules (rows, grouped by layer and type) x allocation steps (columns), colour = kept rank.
function heatmap(container) {
  const canvas = h("canvas", { id: "heatmap" });
  const tip = h("div", { class: "tooltip", hidden: true });
  const legend = h("div", { class: "legend" });
  container.append(h("div", { class: "panel" }, h("h2", { text: "Rank heatmap: modules × allocation steps" }),
    h("div", { class: "heatmap-wrap" }, canvas, tip), legend));
  let data = null, geometry = null;
  function colour(rank, max) {
    if (rank == null) return cssVar("--bg");
    if (rank === 0) return cssVar("--line");
    const t = rank / max;  // light yellow to deep blue
    const c = [[255, 237, 160], [65, 182, 196], [37, 52, 148]];
    const [a, b, u] = t < .5 ? [c[0], c[1], t * 2] : [c[1], c[2], (t - .5) * 2];
    return `rgb(${a.map((v, i) => Math.round(v + (b[i] - v) * u)).join(",")})`;
  }
  function draw() {
    if (!data || !data.steps.length) return;
    const { modules, steps, ranks } = data;
    const max = Math.max(1, ...ranks.flat().filter((r) => r != null));
    const labelW = 92, top = 18, cellH = Math.max(4, Math.min(14, Math.floor(520 / modules.length)));
    const avail = Math.max(container.clientWidth - labelW - 40, 200);
    const cellW = Math.max(3, Math.min(40, Math.floor(avail / steps.length)));
    const ratio = window.devicePixelRatio || 1;
    const width = labelW + cellW * steps.length + 4, height = top + cellH * modules.length + 4;
    canvas.width = width * ratio; canvas.height = height * ratio;
    canvas.style.width = `${width}px`; canvas.style.height = `${height}px`;
    const ctx = canvas.getContext("2d"); ctx.scale(ratio, ratio);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "10px system-ui, sans-serif"; ctx.textBaseline = "middle";
    modules.forEach((m, j) => {
      steps.forEach((_, i) => { ctx.fillStyle = colour(ranks[i][j], max); ctx.fillRect(labelW + i * cellW, top + j * cellH, cellW - (cellW > 4), cellH - (cellH > 5)); });
      const first = j === 0 || modules[j - 1].layer !== m.layer || modules[j - 1].stack !== m.stack;
      ctx.fillStyle = cssVar("--muted");
      if (first) {
        ctx.fillText(`${m.stack === "decoder" ? "dec " : ""}L${m.layer ?? "–"}`, 2, top + j * cellH + cellH / 2);
        ctx.fillStyle = cssVar("--line"); ctx.fillRect(0, top + j * cellH - .5, labelW, 1); ctx.fillStyle = cssVar("--muted");
      }
      if (cellH >= 8) ctx.fillText(TYPE_LABEL[m.type] || m.type, 48, top + j * cellH + cellH / 2);
    });
    ctx.fillStyle = cssVar("--muted");
    const every = Math.ceil(36 / cellW);
    steps.forEach((s, i) => { if (i % every === 0) ctx.fillText(String(s), labelW + i * cellW, 8); });
    geometry = { labelW, top, cellW, cellH };
    legend.replaceChildren("rank 0", ...[0, .25, .5, .75, 1].map((t) => h("span", { style: `display:inline-block;width:18px;height:10px;background:${colour(t ? Math.max(1, Math.round(t * max)) : 0, max)}` })), ` ${max}`,
      h("span", { class: "muted" }, ` · ${modules.length} modules × ${steps.length} snapshots`));
  }
  canvas.addEventListener("mousemove", (e) => {
    if (!geometry) return;
    const r = canvas.getBoundingClientRect();
    const i = Math.floor((e.clientX - r.left - geometry.labelW) / geometry.cellW), j = Math.floor((e.clientY - r.top - geometry.top) / geometry.cellH);
    if (i < 0 || j < 0 || i >= data.steps.length || j >= data.modules.length) { tip.hidden = true; return; }
    tip.hidden = false; tip.style.left = `${e.clientX - r.left + 12}px`; tip.style.top = `${e.clientY - r.top + 12}px`;
    tip.textContent = `${data.modules[j].name} · step ${data.steps[i]} · rank ${data.ranks[i][j]}`;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  const onResize = () => draw();
  window.addEventListener("resize", onResize); cleanups.push(() => window.removeEventListener("resize", onResize));
  return {
    set(columns) { data = columns; dashboard.heatmap = { modules: columns.modules.map((m) => m.name), steps: columns.steps, ranks: columns.ranks }; draw(); },
    redraw: draw,
  };
}

// The final (or latest) rank pattern as bars: per layer (attention | FFN) and per module type.
function patternBars(container) {
  const byLayer = h("div", { class: "bars", id: "pattern-layers" }), byType = h("div", { class: "bars", id: "pattern-types" });
  const summary = h("p", { class: "muted", id: "pattern-summary" });
  const title = h("h2", { text: "Rank pattern" });
  container.append(h("div", { class: "panel" }, title, summary, h("div", { class: "grid" },
    h("div", {}, h("h2", { class: "muted", text: "per layer (attention | FFN)" }), byLayer),
    h("div", {}, h("h2", { class: "muted", text: "per module type" }), byType))));
  return {
    set(modules, ranks, final) {
      title.textContent = final ? "Final rank pattern" : "Rank pattern (latest snapshot)";
      const layers = new Map(), types = new Map();
      modules.forEach((m, j) => {
        const key = `${m.stack === "decoder" ? "dec " : ""}L${m.layer ?? "–"}`;
        const l = layers.get(key) || { attention: 0, ffn: 0, other: 0 }; l[m.kind] += ranks[j] || 0; layers.set(key, l);
        types.set(m.type, (types.get(m.type) || 0) + (ranks[j] || 0));
      });
      const maxLayer = Math.max(1, ...[...layers.values()].map((l) => l.attention + l.ffn + l.other));
      byLayer.replaceChildren(...[...layers].flatMap(([k, l]) => [h("span", { text: k }),
        h("div", { class: "bar", "data-layer": k, "data-attention": l.attention, "data-ffn": l.ffn },
          h("span", { class: "attn", style: `width:${100 * l.attention / maxLayer}%` }),
          h("span", { class: "ffn", style: `width:${100 * l.ffn / maxLayer}%` }),
          h("span", { class: "other", style: `width:${100 * l.other / maxLayer}%` })),
        h("span", { class: "muted", text: `${l.attention} | ${l.ffn}` })]));
      const maxType = Math.max(1, ...types.values());
      byType.replaceChildren(...[...types].flatMap(([t, total]) => [h("span", { text: t }),
        h("div", { class: "bar", "data-type": t, "data-total": total },
          h("span", { class: t.startsWith("ffn") ? "ffn" : "attn", style: `width:${100 * total / maxType}%` })),
        h("span", { class: "muted", text: total })]));
      const keys = [...layers.keys()], half = Math.floor(keys.length / 2);
      const sum = (ks) => ks.reduce((a, k) => a + layers.get(k).attention + layers.get(k).ffn + layers.get(k).other, 0);
      const attention = [...layers.values()].reduce((a, l) => a + l.attention, 0), ffn = [...layers.values()].reduce((a, l) => a + l.ffn, 0);
      summary.textContent = `attention ${attention} vs FFN ${ffn} ranks · bottom half of the layers ${sum(keys.slice(0, half))} vs top half ${sum(keys.slice(keys.length - half))}`;
      dashboard.pattern = { layers: Object.fromEntries(layers), types: Object.fromEntries(types), attention, ffn };
    },
  };
}

// -- a job -----------------------------------------------------------------------------------------------

const CURVES = [["loss", "Training loss"], ["lr", "Learning rate"], ["orth_loss", "Orthogonal loss"], ["grad_norm", "Gradient norm"]];

function jobPage(view, jobId) {
  const title = h("h1", { id: "job-title" }), status = h("span", { id: "job-status" });
  const cancel = h("button", { class: "danger", id: "cancel", hidden: true, onclick: async () => {
    cancel.disabled = true;
    try { await api(`/v1/jobs/${jobId}/cancel`, { method: "POST" }); refresh(); } catch (e) { alert(e.message); cancel.disabled = false; }
  } }, "Cancel");
  const remove = h("button", { class: "danger", id: "delete", hidden: true, onclick: async () => {
    if (!confirm("Delete this job with its metrics, checkpoints and downloads? This cannot be undone.")) return;
    remove.disabled = true;
    try { await api(`/v1/jobs/${jobId}`, { method: "DELETE" }); location.hash = "#/jobs"; } catch (e) { alert(e.message); remove.disabled = false; }
  } }, "Delete");
  const stats = h("div", { class: "stats", id: "job-stats" });
  const error = h("p", { class: "error", id: "job-error" });
  const budgetWrap = h("div", { class: "panel" }, h("h2", { text: "Kept parameters vs budget" }), h("div", { id: "kept" }));
  view.append(h("div", { class: "row" }, title, status, h("span", { class: "spacer" }),
      h("a", { href: `#/compare?a=${jobId}&b=` }, "compare…"), cancel, remove),
    h("div", { class: "panel" }, stats, error), budgetWrap);
  const charts = h("div", { class: "grid", id: "charts" });
  view.append(charts);
  const curve = Object.fromEntries(CURVES.map(([k, t]) => [k, lineChart(charts, k, t)]));
  const evalChart = lineChart(charts, "eval", "Evaluation");
  const budgetChart = lineChart(charts, "budget", "Budget: planned vs reached", { dashed: ["planned"] });
  const heat = heatmap(view);
  const bars = patternBars(view);
  const events = h("ul", { id: "events" });
  const downloads = h("ul", { class: "downloads", id: "downloads" }, h("li", { class: "muted", text: "available once the job has succeeded" }));
  view.append(h("div", { class: "grid" }, h("div", { class: "panel" }, h("h2", { text: "Events" }), events),
    h("div", { class: "panel" }, h("h2", { text: "Downloads" }), downloads)));

  let job = null, metrics = { steps: [], columns: {} }, ranks = null, plan = null, planAsked = false, downloadsShown = false;

  async function refresh() {
    job = await api(`/v1/jobs/${jobId}`);
    title.textContent = job.name || `Job ${job.id.slice(0, 8)}`;
    status.replaceChildren(statusBadge(job.status));
    cancel.hidden = FINISHED.includes(job.status) || job.status === "cancelling";
    remove.hidden = !FINISHED.includes(job.status);
    const stat = (label, value, id) => h("div", { class: "stat" }, h("div", { class: "label", text: label }), h("div", { class: "value", id, text: value }));
    stats.replaceChildren(stat("step", `${job.step} / ${job.total_steps ?? "?"}`, "job-step"),
      stat("ETA", FINISHED.includes(job.status) ? "–" : duration(job.eta_seconds), "job-eta"),
      stat("model", job.model), stat("task", job.task),
      stat("budget now", job.current_budget == null ? "–" : `${int(job.current_budget)} ${job.budget_unit}`),
      stat("budget target", job.budget_target == null ? "–" : `${int(job.budget_target)} ${job.budget_unit}`),
      stat("created", when(job.created_at)), stat("finished", when(job.finished_at)), stat("attempts", job.attempts));
    error.textContent = job.error || "";
    keptMeter();
    if (!planAsked) { planAsked = true; askPlan(); }
    await Promise.all([moreMetrics(), moreRanks()]);
    if (job.status === "succeeded" && !downloadsShown) { downloadsShown = true; showDownloads(); }
    if (FINISHED.includes(job.status)) stopPolling();
  }
  function keptMeter() {
    const kept = job.adapter_params, budget = job.budget_unit === "params" ? job.current_budget : null;
    const target = job.budget_unit === "params" ? job.budget_target : null;
    const el = $("#kept");
    if (kept == null) { el.replaceChildren(h("span", { class: "muted", text: "no allocation yet" })); return; }
    const against = budget ?? kept;
    el.replaceChildren(h("p", { id: "kept-text", text: `${int(kept)} adapter parameters kept` +
      (budget != null ? ` of a ${int(budget)} budget now (target ${int(target)})` : ` (budget in ${job.budget_unit}: ${int(job.current_budget)}, target ${int(job.budget_target)})`) }),
      h("div", { class: "meter" }, h("span", { style: `width:${Math.min(100, 100 * kept / against)}%` })));
  }
  async function askPlan() {
    try {  // the plan of this spec, from the public dry run
      plan = await api("/v1/jobs", { method: "POST", body: { ...job.spec, dry_run: true } });
    } catch (e) { plan = null; budgetChart.panel.append(h("p", { class: "muted", text: `no plan: ${e.message}` })); }
    drawBudget();
  }
  async function moreMetrics() {
    for (;;) {
      const after = metrics.steps.length ? metrics.steps[metrics.steps.length - 1] : 0;
      const page = await api(`/v1/jobs/${jobId}/metrics/columns?after_step=${after}`);
      if (!page.steps.length) break;
      const n = metrics.steps.length;
      for (const name of new Set([...Object.keys(metrics.columns), ...Object.keys(page.columns)])) {
        const old = metrics.columns[name] || new Array(n).fill(null);
        metrics.columns[name] = old.concat(page.columns[name] || new Array(page.steps.length).fill(null));
      }
      metrics.steps = metrics.steps.concat(page.steps);
      if (!page.has_more) break;
    }
    for (const [k] of CURVES) curve[k].update(metrics.steps, metrics.columns[k] ? { [k]: metrics.columns[k] } : {});
    const evalNames = Object.keys(metrics.columns).filter((k) => k.startsWith("eval_"));
    const rows = metrics.steps.map((s, i) => evalNames.some((k) => metrics.columns[k][i] != null) ? i : -1).filter((i) => i >= 0);
    evalChart.update(rows.map((i) => metrics.steps[i]), Object.fromEntries(evalNames.map((k) => [k.slice(5), rows.map((i) => metrics.columns[k][i])])));
    drawBudget();
  }
  function drawBudget() {
    const parts = [];
    if (plan) {  // the schedule's change points, drawn as steps
      const xs = [], ys = [];
      plan.schedule.forEach(([s, b], i) => { if (i) { xs.push(s); ys.push(plan.schedule[i - 1][1]); } xs.push(s); ys.push(b); });
      xs.push(plan.total_steps); ys.push(plan.schedule[plan.schedule.length - 1][1]);
      parts.push({ label: "planned", x: xs, y: ys });
    }
    if (metrics.columns.budget) parts.push({ label: "reached", x: metrics.steps, y: metrics.columns.budget });
    if (metrics.columns.adapter_params && job?.budget_unit === "params") parts.push({ label: "kept params", x: metrics.steps, y: metrics.columns.adapter_params });
    const [x, series] = align(parts);
    budgetChart.update(x, series);
  }
  async function moreRanks() {
    const after = ranks && ranks.steps.length ? `?after_step=${ranks.steps[ranks.steps.length - 1]}` : "";
    const page = await api(`/v1/jobs/${jobId}/ranks/columns${after}`);
    if (!ranks || !ranks.steps.length) ranks = page;  // the first page before any snapshot names no module
    else if (page.steps.length) {
      for (const k of ["steps", "budgets", "adapter_params", "final", "ranks"]) ranks[k] = ranks[k].concat(page[k]);
      ranks.final_rank_pattern = page.final_rank_pattern;
    } else if (!page.final_rank_pattern || ranks.final_rank_pattern) return;
    ranks.final_rank_pattern = page.final_rank_pattern;
    if (!ranks.steps.length) return;
    heat.set(ranks);
    const final = ranks.final_rank_pattern;
    const latest = final ? ranks.modules.map((m) => final[m.name]) : ranks.ranks[ranks.ranks.length - 1];
    bars.set(ranks.modules, latest, !!final);
  }
  async function showDownloads() {
    const items = [];
    for (const kind of ["adapter", "merged", "lora", "lora-serving"]) {
      const url = `/v1/jobs/${jobId}/artifacts/${kind}`;
      const head = await fetch(url, { method: "HEAD", headers: authHeaders() });
      if (!head.ok) continue;
      const size = Number(head.headers.get("content-length")), sha = head.headers.get("x-checksum-sha256");
      const note = h("span", { class: "muted", "data-verified": "" });
      const button = h("button", { class: "primary", id: `download-${kind}`, onclick: async () => {
        button.disabled = true; note.textContent = " downloading…";
        const response = await fetch(url, { headers: authHeaders() });
        const blob = await response.blob();
        const digest = [...new Uint8Array(await crypto.subtle.digest("SHA-256", await blob.arrayBuffer()))].map((b) => b.toString(16).padStart(2, "0")).join("");
        note.textContent = digest === sha ? " sha256 verified" : ` sha256 MISMATCH (${digest})`;
        note.dataset.verified = String(digest === sha);
        const a = h("a", { href: URL.createObjectURL(blob), download: `${jobId}-${kind}.tar` });
        document.body.append(a); a.click(); a.remove(); button.disabled = false;
      } }, `Download ${kind}`);
      items.push(h("li", { "data-kind": kind, "data-size": size, "data-sha256": sha }, button, note,
        h("div", { class: "muted" }, `${kind}.tar · ${bytes(size)} · sha256 `, h("code", { text: sha }))));
    }
    downloads.replaceChildren(...(items.length ? items : [h("li", { class: "muted", text: "no archives" })]));
  }

  // Events over Server-Sent Events, read with fetch (EventSource cannot send the Bearer key).
  const controller = new AbortController();
  cleanups.push(() => controller.abort());
  let lastId = 0;
  async function streamEvents() {
    while (!controller.signal.aborted) {
      try {
        const response = await fetch(`/v1/jobs/${jobId}/events?after_id=${lastId}`, { signal: controller.signal,
          headers: authHeaders({ Accept: "text/event-stream" }) });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "", ended = false;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n/g, "\n");
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
            const fields = {};
            for (const line of block.split("\n")) { const i = line.indexOf(": "); if (line && !line.startsWith(":") && i > 0) fields[line.slice(0, i)] = (fields[line.slice(0, i)] ? fields[line.slice(0, i)] + "\n" : "") + line.slice(i + 2); }
            if (fields.event === "end") { ended = true; refresh(); continue; }
            if (!fields.data) continue;
            const event = JSON.parse(fields.data);
            lastId = event.id;
            const atBottom = events.scrollTop + events.clientHeight >= events.scrollHeight - 4;
            events.append(h("li", { class: event.level, "data-event-id": event.id }, h("span", { class: "muted" }, new Date(event.ts).toLocaleTimeString(), " "), event.message));
            if (atBottom) events.scrollTop = events.scrollHeight;
          }
        }
        if (ended) return;
      } catch (e) {
        if (controller.signal.aborted) return;
      }
      await new Promise((r) => setTimeout(r, 2000));  // reconnect after a dropped stream
    }
  }
  streamEvents();

  let polling = true;
  const timer = setInterval(() => { if (polling) refresh().catch(() => {}); }, POLL_MS);
  cleanups.push(() => clearInterval(timer));
  function stopPolling() { polling = false; }
  refresh().catch((e) => { error.textContent = e.message; stopPolling(); });
}

// -- new job ---------------------------------------------------------------------------------------------

function field(label, input) { return h("label", {}, label, input); }
function num(name, value, attrs = {}) { return h("input", { type: "number", name, value, step: "any", ...attrs }); }

async function newJobPage(view) {
  const [models, files] = await Promise.all([api("/v1/models"), api("/v1/files?limit=200")]);
  const model = h("select", { name: "model", id: "model" }, models.data.map((m) => h("option", { value: m.name },
    `${m.name} (${m.family}, ${int(m.parameters)} params)`)));
  const task = h("select", { name: "task", id: "task" });
  function syncTasks() {
    const m = models.data.find((x) => x.name === model.value);
    const tasks = m ? m.tasks : ["sequence_classification", "causal_lm", "seq2seq"];
    const keep = task.value;
    task.replaceChildren(...tasks.map((t) => h("option", { value: t }, t)));
    if (tasks.includes(keep)) task.value = keep;
  }
  model.addEventListener("change", syncTasks); syncTasks();
  const source = h("select", { name: "source", id: "dataset-source" }, h("option", { value: "file" }, "uploaded file"),
    h("option", { value: "server" }, "server file (DATA_DIRS)"), h("option", { value: "hub" }, "Hugging Face hub"));
  const fileOptions = () => files.data.map((f) => h("option", { value: f.id }, `${f.filename} (${f.row_count} rows)`));
  const trainFile = h("select", { id: "train-file" }, fileOptions());
  const valFile = h("select", { id: "validation-file" }, h("option", { value: "" }, "— hold out a split —"), fileOptions());
  const serverPath = h("input", { id: "server-path", placeholder: "glue/SST-2/train.tsv" });
  const serverValidation = h("input", { id: "server-validation-path", placeholder: "glue/SST-2/dev.tsv (optional)" });
  const hubPath = h("input", { id: "hub-path", placeholder: "nyu-mll/glue" }), hubName = h("input", { id: "hub-name", placeholder: "sst2" });
  const hubSplit = h("input", { id: "hub-split", value: "train" }), hubValidation = h("input", { id: "hub-validation", placeholder: "validation (optional)" });
  // The column fields each task kind reads (service/jobspec.py TASK_COLUMNS); empty ones are found by common names.
  const COLUMNS = { text_column: ["sequence_classification", "causal_lm"], text_pair_column: ["sequence_classification"],
    label_column: ["sequence_classification"], prompt_column: ["causal_lm"], completion_column: ["causal_lm"],
    messages_column: ["causal_lm"], source_column: ["seq2seq"], target_column: ["seq2seq"] };
  const columnInputs = Object.fromEntries(Object.keys(COLUMNS).map((c) => [c, h("input", { name: c, id: c.replace(/_/g, "-"), placeholder: "by name" })]));
  const valSplit = num("validation_split", 0.25, { id: "validation-split", min: 0, max: 0.9 });
  const form = h("form", { class: "spec", id: "new-job", onsubmit: (e) => e.preventDefault() },
    h("fieldset", {}, h("legend", { text: "Model and task" }), field("name", h("input", { name: "name", id: "job-name", placeholder: "optional" })),
      field("model", model), field("task", task)),
    h("fieldset", {}, h("legend", { text: "Dataset" }), field("source", source), field("training file", trainFile),
      field("validation file", valFile), field("server path", serverPath), field("server validation path", serverValidation),
      field("hub dataset", hubPath), field("configuration", hubName), field("split", hubSplit), field("validation split name", hubValidation),
      field("validation split", valSplit)),
    h("fieldset", {}, h("legend", { text: "Columns (empty: found by common names)" }), Object.entries(columnInputs).map(([c, el]) => field(c, el))),
    h("fieldset", {}, h("legend", { text: "Budget" }), field("init_r", num("init_r", 8, { id: "init-r", min: 1, step: 1 })),
      field("target_r", num("target_r", 4, { id: "target-r", min: 0 })),
      field("or target_params", num("target_params", "", { id: "target-params", min: 0, step: 1 })),
      field("unit", h("select", { name: "unit", id: "unit" }, h("option", { value: "params" }, "params"), h("option", { value: "ranks" }, "ranks"))),
      field("lora_alpha", num("lora_alpha", 16))),
    h("fieldset", {}, h("legend", { text: "Schedule" }), field("tinit", num("tinit", 0.1, { id: "tinit" })),
      field("tfinal", num("tfinal", 0.2, { id: "tfinal" })), field("delta_t", num("delta_t", 10, { id: "delta-t", min: 1, step: 1 }))),
    h("fieldset", {}, h("legend", { text: "Training" }), field("max_steps", num("max_steps", 100, { id: "max-steps", min: 1, step: 1 })),
      field("batch_size", num("batch_size", 16, { id: "batch-size", min: 1, step: 1 })), field("learning_rate", num("learning_rate", 0.001, { id: "learning-rate" })),
      field("max_seq_len", num("max_seq_len", 128, { min: 8, step: 1 })), field("eval_every", num("eval_every", "", { id: "eval-every", min: 1, step: 1 })),
      field("warmup_ratio", num("warmup_ratio", 0.06, { id: "warmup-ratio", min: 0 }))),
    h("fieldset", {}, h("legend", { text: "Memory check (dry run)" }),
      field("GPU card", h("input", { name: "gpu", id: "gpu", placeholder: "e.g. A100-40GB, L4, T4 or 24GB" }))),
    h("div", { class: "row" }, h("button", { type: "button", id: "dry-run", onclick: () => send(true) }, "Dry run"),
      h("button", { type: "button", class: "primary", id: "submit", onclick: () => send(false) }, "Submit")));
  function syncSource() {
    const show = { file: [trainFile, valFile], server: [serverPath, serverValidation], hub: [hubPath, hubName, hubSplit, hubValidation] };
    for (const [kind, els] of Object.entries(show)) for (const el of els) el.parentElement.hidden = source.value !== kind;
    for (const [c, el] of Object.entries(columnInputs)) el.parentElement.hidden = !COLUMNS[c].includes(task.value);
  }
  source.addEventListener("change", syncSource); task.addEventListener("change", syncSource); syncSource();
  const result = h("div", { id: "dry-run-result" }), problem = h("p", { class: "error", id: "spec-error" });
  const specView = h("pre", { class: "mono", id: "spec-json" });
  view.append(h("h1", { text: "New job" }), h("div", { class: "panel" }, form, problem), result,
    h("details", { class: "panel" }, h("summary", { text: "the request body" }), specView));

  function value(name) { const el = form.elements[name]; return el && el.value !== "" ? Number(el.value) : undefined; }
  function spec() {
    const dataset = {
      file: () => ({ source: "file", file_id: trainFile.value, validation_file_id: valFile.value || null }),
      server: () => ({ source: "server", path: serverPath.value, validation_path: serverValidation.value || undefined }),
      hub: () => ({ source: "hub", path: hubPath.value, name: hubName.value || undefined, split: hubSplit.value || "train",
                    validation_name: hubValidation.value || undefined }),
    }[source.value]();
    if (!(dataset.validation_file_id || dataset.validation_path || dataset.validation_name)) dataset.validation_split = value("validation_split");
    for (const [c, el] of Object.entries(columnInputs)) if (COLUMNS[c].includes(task.value) && el.value.trim()) dataset[c] = el.value.trim();
    const budget = { init_r: value("init_r"), unit: form.elements.unit.value, lora_alpha: value("lora_alpha") };
    if (value("target_params") !== undefined) budget.target_params = value("target_params"); else budget.target_r = value("target_r");
    const training = { max_steps: value("max_steps"), batch_size: value("batch_size"), learning_rate: value("learning_rate"),
                       max_seq_len: value("max_seq_len"), eval_every: value("eval_every"), warmup_ratio: value("warmup_ratio") };
    const body = { model: model.value, task: task.value, dataset, budget,
                   schedule: { tinit: value("tinit"), tfinal: value("tfinal"), delta_t: value("delta_t") }, training };
    if (form.elements.name.value) body.name = form.elements.name.value;
    return JSON.parse(JSON.stringify(body));  // drops the undefined
  }
  async function send(dryRun) {
    problem.textContent = "";
    const body = spec(); specView.textContent = JSON.stringify(body, null, 2);
    try {
      const gpu = form.elements.gpu.value.trim();  // a dry run's card check; a real job is not sent one
      const answer = await api("/v1/jobs", { method: "POST", body: { ...body, dry_run: dryRun, ...(dryRun && gpu ? { gpu } : {}) } });
      if (!dryRun) { location.hash = `#/jobs/${answer.id}`; return; }
      showPlan(answer);
    } catch (e) { problem.textContent = e.message; result.replaceChildren(); }
  }
  function showPlan(plan) {
    const stat = (label, value, id) => h("div", { class: "stat" }, h("div", { class: "label", text: label }), h("div", { class: "value", id, text: value }));
    result.replaceChildren(h("div", { class: "panel" }, h("h2", { text: "Dry run" }), h("div", { class: "stats" },
      stat("trainable at init", int(plan.trainable_params_init), "plan-trainable-init"),
      stat("trainable at final budget", int(plan.trainable_params_final), "plan-trainable-final"),
      stat("adapted modules", plan.adapted_modules), stat("total steps", int(plan.total_steps), "plan-total-steps"),
      stat("budget", `${int(plan.budget_init)} → ${int(plan.budget_final)} ${plan.budget_unit}`, "plan-budget"),
      stat("steps counted from", plan.total_steps_from))), memoryPanel(plan));
    const chart = lineChart(result, "plan", "Budget schedule");
    const xs = [], ys = [];
    plan.schedule.forEach(([s, b], i) => { if (i) { xs.push(s); ys.push(plan.schedule[i - 1][1]); } xs.push(s); ys.push(b); });
    xs.push(plan.total_steps); ys.push(plan.schedule[plan.schedule.length - 1][1]);
    chart.update(xs, { budget: ys });
  }
}

function memoryPanel(plan) {
  const m = plan.memory, gib = (n) => `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (!m) return h("div", { class: "panel" }, h("h2", { text: "Peak GPU memory" }), h("p", { class: "muted", id: "plan-memory", text: plan.memory_problem || "not estimated" }));
  const stat = (label, value, id) => h("div", { class: "stat" }, h("div", { class: "label", text: label }), h("div", { class: "value", id, text: value }));
  const verdict = m.card ? `${m.fits ? "fits" : "does not fit"} the ${m.card.name} (${gib(m.card.memory_bytes)})` : "name a card to check";
  return h("div", { class: "panel" }, h("h2", { text: "Peak GPU memory" }), h("div", { class: "stats" },
      stat(`peak, checkpointing ${m.gradient_checkpointing ? "on" : "off"}`, gib(m.peak_bytes), "plan-memory"),
      stat("checkpointing off / on", `${gib(m.peak_checkpointing_off_bytes)} / ${m.peak_checkpointing_on_bytes == null ? "n/a" : gib(m.peak_checkpointing_on_bytes)}`),
      stat("weights", `${gib(m.weights_bytes)} ${m.dtype}`), stat("activations", gib(m.activations_bytes)),
      stat("card", verdict, "plan-fits")),
    h("p", { class: "muted", text: `batch ${m.batch_size} x ${m.seq_len} tokens; ${m.dtype_from}` }),
    ...m.notes.map((n) => h("p", { class: "muted", text: n })),
    m.advice.length ? h("ul", { id: "plan-advice" }, ...m.advice.map((a) => h("li", { text: a }))) : null);
}

// -- files -----------------------------------------------------------------------------------------------

function filesPage(view) {
  const input = h("input", { type: "file", id: "file-input", accept: ".jsonl,.json,.csv,.tsv,.parquet" });
  const bar = h("progress", { id: "upload-progress", max: 100, value: 0, hidden: true });
  const result = h("div", { id: "upload-result" });
  const list = h("tbody");
  view.append(h("h1", { text: "Files" }), h("div", { class: "panel" }, h("h2", { text: "Upload a dataset" }),
    h("div", { class: "row" }, input, h("button", { class: "primary", id: "upload", onclick: upload }, "Upload"), bar), result),
    h("div", { class: "panel table-wrap" }, h("table", { id: "files" }, h("thead", {}, h("tr", {},
      ["File", "Format", "Rows", "Size", "Uploaded", ""].map((t) => h("th", { text: t })))), list)));
  function upload() {
    const file = input.files[0];
    if (!file) { result.replaceChildren(h("p", { class: "error", text: "choose a file first" })); return; }
    const data = new FormData(); data.append("file", file);
    const xhr = new XMLHttpRequest();  // fetch reports no upload progress
    xhr.open("POST", "/v1/files");
    xhr.setRequestHeader("Authorization", authHeaders().Authorization);
    bar.hidden = false; bar.value = 0;
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = 100 * e.loaded / e.total; };
    xhr.onload = () => {
      const body = (() => { try { return JSON.parse(xhr.responseText); } catch { return null; } })();
      if (xhr.status === 201) { bar.value = 100; showFile(body); refresh(); }
      else result.replaceChildren(h("p", { class: "error", id: "upload-error", text: `${file.name} was refused (${xhr.status}): ${errorText(body)}` }));
    };
    xhr.onerror = () => result.replaceChildren(h("p", { class: "error", text: "the upload failed (network)" }));
    xhr.send(data);
  }
  function showFile(f) {
    const columns = f.columns.map((c) => h("tr", {}, h("td", { class: "mono", text: c.name }), h("td", { text: c.type }),
      h("td", { text: c.nulls }), h("td", { text: c.distinct ?? "many" }), h("td", { class: "mono", text: (c.values || []).slice(0, 8).join(", ") })));
    const keys = f.columns.map((c) => c.name);
    result.replaceChildren(h("p", { class: "ok", id: "upload-ok" }, `${f.filename}: ${f.row_count} rows, ${f.columns.length} columns, valid · `, h("code", { text: f.id })),
      h("div", { class: "table-wrap" }, h("table", { id: "file-columns" }, h("thead", {}, h("tr", {}, ["column", "type", "nulls", "distinct", "values"].map((t) => h("th", { text: t })))), h("tbody", {}, columns))),
      h("h2", { text: "Preview", style: "margin-top:1rem" }),
      h("div", { class: "table-wrap" }, h("table", { id: "file-preview" }, h("thead", {}, h("tr", {}, keys.map((k) => h("th", { text: k })))),
        h("tbody", {}, f.preview.map((row) => h("tr", {}, keys.map((k) => h("td", { text: typeof row[k] === "object" ? JSON.stringify(row[k]) : row[k] }))))))));
  }
  async function refresh() {
    const files = await api("/v1/files?limit=200");
    list.replaceChildren(...files.data.map((f) => h("tr", { "data-file-id": f.id },
      h("td", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); showFile(f); } }, f.filename), h("div", { class: "muted mono", text: f.id })),
      h("td", { text: f.format }), h("td", { text: f.row_count }), h("td", { text: bytes(f.size) }), h("td", { text: when(f.created_at) }),
      h("td", {}, h("button", { class: "danger", "data-delete": f.id, onclick: async (e) => {
        try { await api(`/v1/files/${f.id}`, { method: "DELETE" }); refresh(); }
        catch (err) { e.target.parentElement.append(h("div", { class: "error", text: err.message })); }
      } }, "Delete")))));
    if (!files.data.length) list.append(h("tr", {}, h("td", { colspan: 6, class: "muted", text: "No files yet." })));
  }
  refresh();
}

// -- compare two jobs ------------------------------------------------------------------------------------

async function comparePage(view, a = "", b = "") {
  const jobs = (await api("/v1/jobs?limit=200")).data;
  const pick = (id, value) => h("select", { id, onchange: () => { location.hash = `#/compare?a=${$("#compare-a").value}&b=${$("#compare-b").value}`; } },
    h("option", { value: "" }, "— choose a job —"), jobs.map((j) => h("option", { value: j.id, selected: j.id === value }, `${j.name || j.id.slice(0, 8)} · ${j.status} · ${j.model}`)));
  view.append(h("h1", { text: "Compare two jobs" }), h("div", { class: "panel row" }, pick("compare-a", a), "vs", pick("compare-b", b)));
  if (!a || !b) return;
  const [ma, mb, ra, rb] = await Promise.all([a, b].flatMap((id) => [api(`/v1/jobs/${id}/metrics/columns?limit=20000`)]).concat(
    [a, b].map((id) => api(`/v1/jobs/${id}/ranks`))));
  const grid = h("div", { class: "grid" }); view.append(grid);
  const name = (id) => { const j = jobs.find((x) => x.id === id); return j?.name || id.slice(0, 8); };
  const names = [...new Set([...Object.keys(ma.columns), ...Object.keys(mb.columns)])].filter((k) => ["loss", "lr", "budget"].includes(k) || k.startsWith("eval_"));
  for (const metric of names) {
    const parts = [];
    for (const [m, id, label] of [[ma, a, "A"], [mb, b, "B"]]) {
      if (!m.columns[metric]) continue;
      const idx = m.steps.map((_, i) => i).filter((i) => m.columns[metric][i] != null);
      parts.push({ label: `${label}: ${name(id)}`, x: idx.map((i) => m.steps[i]), y: idx.map((i) => m.columns[metric][i]) });
    }
    const [x, series] = align(parts);
    lineChart(grid, `compare-${metric}`, metric).update(x, series);
  }
  const fa = ra.final_rank_pattern || ra.data.at(-1)?.ranks || {}, fb = rb.final_rank_pattern || rb.data.at(-1)?.ranks || {};
  const common = Object.keys(fa).filter((k) => k in fb).sort();
  const diffs = common.map((k) => fb[k] - fa[k]);
  const maxAbs = Math.max(1, ...diffs.map(Math.abs));
  const table = h("table", { id: "rank-diff" }, h("thead", {}, h("tr", {}, ["module", "A", "B", "B − A", ""].map((t) => h("th", { text: t })))),
    h("tbody", {}, common.map((k, i) => h("tr", { "data-module": k, "data-diff": diffs[i] }, h("td", { class: "mono", text: k }), h("td", { text: fa[k] }), h("td", { text: fb[k] }),
      h("td", { text: diffs[i] > 0 ? `+${diffs[i]}` : diffs[i] }),
      h("td", { style: "width:30%" }, h("div", { class: "bar" }, h("span", { class: diffs[i] < 0 ? "neg" : "pos", style: `width:${50 * Math.abs(diffs[i]) / maxAbs}%;margin-left:${diffs[i] < 0 ? 50 - 50 * Math.abs(diffs[i]) / maxAbs : 50}%` })))))));
  dashboard.rankDiff = Object.fromEntries(common.map((k, i) => [k, diffs[i]]));
  const latestOnly = [[ra, "A"], [rb, "B"]].filter(([r]) => !r.final_rank_pattern && r.data.length).map(([, l]) => l);
  view.append(h("div", { class: "panel table-wrap" }, h("h2", { text: "Final rank patterns: B − A" }),
    latestOnly.length ? h("p", { class: "muted", id: "rank-diff-note", text: `${latestOnly.join(" and ")}: no final pattern (the budget was not frozen), so the latest snapshot` }) : null,
    common.length ? table : h("p", { class: "muted", text: "the two jobs share no adapted module (different models?) or have no rank pattern yet" }),
    Object.keys(fa).length !== common.length || Object.keys(fb).length !== common.length ? h("p", { class: "muted", text: `${Object.keys(fa).length - common.length} modules only in A, ${Object.keys(fb).length - common.length} only in B` }) : null));
}

// -- start -----------------------------------------------------------------------------------------------

function applyTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme; else delete document.documentElement.dataset.theme;
}
applyTheme(localStorage.getItem("adalora-theme"));
$("#theme").addEventListener("click", () => {
  const dark = document.documentElement.dataset.theme === "dark" || (!document.documentElement.dataset.theme && matchMedia("(prefers-color-scheme: dark)").matches);
  const next = dark ? "light" : "dark";
  localStorage.setItem("adalora-theme", next); applyTheme(next); route();
});
$("#sign-out").addEventListener("click", () => signOut(""));
// A request a page did not handle itself (a 503 while the database restarts, say): said on the page, once.
window.addEventListener("unhandledrejection", (e) => {
  if (!(e.reason instanceof ApiError)) return;
  e.preventDefault();
  if (e.reason.status === 401) return;  // already back at the sign-in page, which says why
  let flash = $("#flash");
  if (!flash) { flash = h("p", { id: "flash", class: "panel error" }); $("#view").prepend(flash); }
  flash.textContent = e.reason.message;
});
window.addEventListener("hashchange", route);
route();
