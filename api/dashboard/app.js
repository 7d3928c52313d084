// The AdaLoRA dashboard: one page, hash routes, the public REST API only (what it does, a script can do).
// The API key lives in sessionStorage and goes out as the Bearer key; nothing is fetched from another host.
"use strict";

const KEY = "adalora-api-key";
const POLL_MS = 1500;
const STATUSES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled"];
const FINISHED = ["succeeded", "failed", "cancelled"];
// One name per module type, for the heatmap's rows and the pattern's bars alike.
const TYPE_NAMES = { query: "q", key: "k", value: "v", qkv: "qkv", output: "attn out", ffn_in: "ffn in",
                     ffn_out: "ffn out", other: "other" };
const typeName = (type) => TYPE_NAMES[type] || type;

// What the pages show, for scripts and tests to read (window.dashboard.charts.loss.x ...); plots holds the uPlot
// instances; pending counts requests in flight.
const dashboard = window.dashboard = { charts: {}, plots: {}, heatmap: null, pattern: null, route: null, pending: 0 };
let cleanups = [];  // timers and listeners of the current page, stopped on navigation
let pageAbort = new AbortController();  // the current page's requests and stream, aborted when it is left

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
// The rate in use; with "auto", what the range test chose (or that it has yet to run).
function learningRate(job) {
  const probe = job.lr_probe;
  if (probe) return `${Number(probe.learning_rate.toPrecision(3))} (auto, ${probe.steps}-step range test)`;
  return job.learning_rate == null ? "auto (probed at the start)" : String(job.learning_rate);
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
  // A page left behind stops here: its late answers must not land in the next page's charts.
  const init = { method, headers: authHeaders(headers), signal: pageAbort.signal };
  if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  dashboard.pending++;
  try {
    const response = await fetch(path, init);
    if (raw) return response;
    const text = await response.text();
    const data = text ? JSON.parse(text) : null;
    if (response.status === 401 && sessionStorage.getItem(KEY)) signOut(errorText(data));
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  } finally { dashboard.pending--; }
}

// One run at a time: a call while it runs asks for one more run after it. The first load, the poll and the event
// stream's end all refresh a page; two runs reading from the same step appended the same rows twice.
function singleFlight(fn) {
  let running = null, again = false;
  return () => {
    if (running) { again = true; return running; }
    running = (async () => {
      try { do { again = false; await fn(); } while (again); } finally { running = null; }
    })();
    return running;
  };
}

// The page for a job this key cannot see (missing, deleted, or another tenant's: the API does not say which).
function notFound(view, jobId) {
  view.replaceChildren(h("div", { class: "panel", id: "not-found" }, h("h1", { text: "Job not found" }),
    h("p", {}, "There is no job ", h("code", { text: jobId }), " for this API key: it was deleted, or it belongs to another tenant."),
    h("a", { href: "#/jobs" }, "← all jobs")));
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
  pageAbort.abort(); pageAbort = new AbortController();
  dashboard.charts = {}; dashboard.plots = {}; dashboard.heatmap = null; dashboard.pattern = null;
  dashboard.polling = dashboard.streaming = false;
  window.scrollTo(0, 0);  // a new page opens at its top, not at the last page's offset under the sticky header
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
  const refresh = singleFlight(async () => {  // a filter change and the poll: the last one asked is shown
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
  });
  refresh(); every(POLL_MS * 2, refresh);
}

// -- charts ----------------------------------------------------------------------------------------------

const PALETTE = ["#2f6fde", "#e07b24", "#1a8a4a", "#c62f2f", "#8a4fd0", "#0f9aa8", "#b7791f", "#d0479a"];
const AXIS_FONT = "12px system-ui, sans-serif";
const SMOOTHING = "adalora-smoothing";  // localStorage: the EMA weight of the smoothed curves
const measure = document.createElement("canvas").getContext("2d");

// `v` with `digits` significant digits: 5e-4 style when small (a learning rate) or huge, 300,000 style otherwise.
function sig(v, digits, sci = Math.abs(v) < 1e-2 || Math.abs(v) >= 1e9) {
  if (!Number.isFinite(v) || v === 0) return String(v);
  return sci ? v.toExponential(digits - 1).replace(/\.?0*e\+?/, "e")
    : Number(v.toPrecision(digits)).toLocaleString("en", { maximumFractionDigits: 20 });
}

// Tick labels with the digits their spacing needs, one style per axis: a learning rate reads 2e-4, 4e-4 ... 1e-3
// where uPlot's three decimals read 0, 0, 0.001.
function tickLabels(splits) {
  const gaps = splits.slice(1).map((v, i) => Math.abs(v - splits[i]));
  const tol = 1e-3 * (gaps.length ? Math.min(...gaps) : Math.abs(splits[0]) || 1);
  const ticks = splits.map((v) => Math.abs(v) < tol ? 0 : v);  // 0, not 2.8e-17
  const top = Math.max(0, ...ticks.map(Math.abs)), sci = top > 0 && (top < 1e-2 || top >= 1e9);
  for (let digits = 1; ; digits++) {
    const labels = ticks.map((v) => sig(v, digits, sci));
    if (digits >= 12 || labels.every((l, i) => Math.abs(Number(l.replaceAll(",", "")) - ticks[i]) < tol)) return labels;
  }
}

// A y axis as wide as its widest label (a fixed width clipped "300,000"): ticks 10 px + gap 5 px + text + margin.
function axisSize(u, values) {
  measure.font = AXIS_FONT;
  return values ? 20 + Math.ceil(Math.max(0, ...values.map((v) => measure.measureText(v).width))) : 40;
}

// TensorBoard's smoothing: an exponential moving average, debiased so the first points are not pulled towards 0.
function ema(ys, weight) {
  let last = 0, n = 0;
  return ys.map((y) => {
    if (y == null || !Number.isFinite(y)) return y;
    last = last * weight + (1 - weight) * y; n++;
    return last / (1 - weight ** n);
  });
}

// A line chart of series over one x axis; `update(x, {label: ys})` draws it. Its data is dashboard.charts[name],
// its uPlot dashboard.plots[name]. style[label] sets a series' {width, dash, scale}: a scale other than "y" gets an
// axis of its own on the right. `smooth` adds TensorBoard's EMA slider: each series is drawn faint under its
// smoothed copy. Points are uPlot's default: shown while they are sparse enough to see, whatever the count was.
function lineChart(container, name, title, { xLabel = "step", yLabel, style = {}, smooth = false } = {}) {
  const el = h("div", { class: "chart" });
  const panel = h("div", { class: "panel", "data-chart": name }, h("h2", { text: title }), el);
  container.append(panel);
  const record = dashboard.charts[name] = { x: [], series: {} };
  let plot = null, labels = [], raw = {};
  let weight = Math.min(0.99, Number(localStorage.getItem(SMOOTHING) ?? 0.6) || 0);
  if (smooth) {
    const slider = h("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: weight, "data-smoothing": name });
    const shown = h("output", { text: weight.toFixed(2) });
    slider.addEventListener("input", () => {
      weight = Number(slider.value); shown.textContent = weight.toFixed(2);
      localStorage.setItem(SMOOTHING, slider.value); draw();
    });
    el.before(h("label", { class: "smoothing muted" }, "smoothing ", slider, " ", shown));
  }
  function seriesOptions(label) {
    const base = label.replace(/ \(smoothed\)$/, ""), s = style[base] || {};
    const colour = PALETTE[Object.keys(raw).indexOf(base) % PALETTE.length];
    const faint = smooth && label === base;
    return { label, scale: s.scale || "y", stroke: faint ? `${colour}55` : colour, width: faint ? 1 : s.width ?? 1.5,
             dash: s.dash, spanGaps: true, value: (u, v) => v == null ? "–" : sig(v, 4) };
  }
  function build() {
    labels = Object.keys(record.series);
    const axis = { stroke: cssVar("--muted"), font: AXIS_FONT, labelFont: AXIS_FONT, grid: { stroke: cssVar("--line") },
                   ticks: { stroke: cssVar("--line") }, values: (u, splits) => tickLabels(splits) };
    const right = [...new Set(labels.map((l) => seriesOptions(l).scale))].filter((s) => s !== "y");
    plot?.destroy(); el.replaceChildren();
    plot = dashboard.plots[name] = new uPlot({
      width: Math.max(el.clientWidth, 260), height: 220, scales: { x: { time: false } },
      axes: [{ ...axis, label: xLabel }, { ...axis, size: axisSize, label: yLabel },
        ...right.map((scale) => ({ ...axis, scale, side: 1, size: axisSize, label: scale, grid: { show: false } }))],
      series: [{ label: xLabel, value: (u, v) => v == null ? "–" : sig(v, 6) }, ...labels.map(seriesOptions)],
    }, [record.x, ...labels.map((l) => record.series[l])], el);
  }
  function draw() {
    record.series = !smooth ? raw : Object.fromEntries(Object.entries(raw).flatMap(([l, ys]) =>
      [[l, ys], [`${l} (smoothed)`, ema(ys, weight)]]));
    if (!record.x.length) {
      plot?.destroy(); plot = null; delete dashboard.plots[name];
      el.replaceChildren(h("p", { class: "muted", text: "no data yet" })); return;
    }
    if (!plot || Object.keys(record.series).join() !== labels.join()) build();
    else plot.setData([record.x, ...labels.map((l) => record.series[l])]);
  }
  const resize = () => plot && plot.setSize({ width: Math.max(el.clientWidth, 260), height: 220 });
  const restyle = () => plot && build();  // the colours are read from CSS when a plot is made
  window.addEventListener("resize", resize); window.addEventListener("themechange", restyle);
  cleanups.push(() => { window.removeEventListener("resize", resize); window.removeEventListener("themechange", restyle); plot?.destroy(); });
  return { panel, update(x, series) { record.x = x; raw = series; draw(); } };
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

// The rank heatmap: modules (rows, grouped by layer and type) x training steps. A snapshot's column spans the steps
// its ranks held: to the next allocation (they are not evenly spaced) and, for the last, to the step reached; after
// the final allocation the pattern stays frozen to the end, marked so.
function heatmap(container) {
  const canvas = h("canvas", { id: "heatmap" });
  const tip = h("div", { class: "tooltip", hidden: true });
  const legend = h("div", { class: "legend", id: "heatmap-legend" });
  container.append(h("div", { class: "panel" }, h("h2", { text: "Rank heatmap: modules × training steps" }),
    h("div", { class: "heatmap-wrap" }, canvas, tip), legend));
  let data = null, end = 0, geometry = null;
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
    const last = Math.max(end, steps.at(-1)), frozen = data.final.at(-1) && last > steps.at(-1);
    const labelW = 92, top = 18, cellH = Math.max(4, Math.min(14, Math.floor(520 / modules.length)));
    const plotW = Math.max(container.clientWidth - labelW - 70, 200);
    const px = (s) => labelW + Math.round(plotW * (s - steps[0]) / Math.max(1, last - steps[0]));
    const columns = steps.map((s, i) => [px(s), Math.max(px(steps[i + 1] ?? last), px(s) + 3)]);
    const ratio = window.devicePixelRatio || 1;
    const width = labelW + plotW + 40, height = top + cellH * modules.length + 18;
    canvas.width = width * ratio; canvas.height = height * ratio;
    canvas.style.width = `${width}px`; canvas.style.height = `${height}px`;
    const ctx = canvas.getContext("2d"); ctx.scale(ratio, ratio);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "10px system-ui, sans-serif"; ctx.textBaseline = "middle";
    modules.forEach((m, j) => {
      columns.forEach(([x0, x1], i) => { ctx.fillStyle = colour(ranks[i][j], max); ctx.fillRect(x0, top + j * cellH, x1 - x0, cellH - (cellH > 5)); });
      const first = j === 0 || modules[j - 1].layer !== m.layer || modules[j - 1].stack !== m.stack;
      ctx.fillStyle = cssVar("--muted");
      if (first) {
        ctx.fillText(`${m.stack === "decoder" ? "dec " : ""}L${m.layer ?? "–"}`, 2, top + j * cellH + cellH / 2);
        ctx.fillStyle = cssVar("--line"); ctx.fillRect(0, top + j * cellH - .5, labelW, 1); ctx.fillStyle = cssVar("--muted");
      }
      if (cellH >= 8) ctx.fillText(typeName(m.type), 40, top + j * cellH + cellH / 2);
    });
    ctx.fillStyle = cssVar("--muted");
    let shownAt = -Infinity;  // step labels at the allocations with room for them, and the last step
    [...steps, last].forEach((s, i, all) => {
      const x = px(s), isLast = i === all.length - 1;
      if (isLast || (x - shownAt >= 40 && px(last) - x >= 40)) { ctx.textAlign = isLast ? "center" : "left"; ctx.fillText(String(s), x, 8); shownAt = x; }
    });
    ctx.textAlign = "left";
    const bottom = top + cellH * modules.length;
    if (frozen) {
      const x = columns.at(-1)[0];
      ctx.fillStyle = cssVar("--text"); ctx.fillRect(x - 1, top - 3, 2, bottom - top + 6);
      ctx.fillText(`frozen from step ${steps.at(-1)} →`, x + 4, bottom + 9);
    }
    geometry = { top, cellH, columns, last };
    // Every rank level when they fit in a row (init_r is rarely above 16), else every stride-th and the highest.
    const stride = Math.ceil((max + 1) / 17), levels = [];
    for (let r = 0; r < max; r += stride) levels.push(r);
    levels.push(max);
    legend.replaceChildren("rank", ...levels.map((r) => h("span", { class: "level", "data-rank": r },
      h("i", { style: `background:${colour(r, max)}` }), String(r))),
      h("span", { class: "muted" }, ` · ${modules.length} modules × ${steps.length} allocations, steps ${steps[0]}–${last}`));
    dashboard.heatmap = { modules: modules.map((m) => m.name), steps, ranks, end: last, columns,
                          frozenFrom: frozen ? steps.at(-1) : null, rowLabels: modules.map((m) => typeName(m.type)), levels };
  }
  canvas.addEventListener("mousemove", (e) => {
    if (!geometry) return;
    const r = canvas.getBoundingClientRect(), x = e.clientX - r.left;
    const i = geometry.columns.findIndex(([a, b]) => x >= a && x < b), j = Math.floor((e.clientY - r.top - geometry.top) / geometry.cellH);
    if (i < 0 || j < 0 || j >= data.modules.length) { tip.hidden = true; return; }
    tip.hidden = false; tip.style.left = `${x + 12}px`; tip.style.top = `${e.clientY - r.top + 12}px`;
    tip.textContent = `${data.modules[j].name} · steps ${data.steps[i]}–${data.steps[i + 1] ?? geometry.last} · rank ${data.ranks[i][j]}`;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  window.addEventListener("resize", draw); window.addEventListener("themechange", draw);
  cleanups.push(() => { window.removeEventListener("resize", draw); window.removeEventListener("themechange", draw); });
  return { set(columns, endStep) { data = columns; end = endStep; draw(); } };
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
      byType.replaceChildren(...[...types].flatMap(([t, total]) => [h("span", { text: typeName(t) }),
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
const NOISY = ["loss", "orth_loss", "grad_norm"];  // per-step curves: drawn with a smoothing slider
const ARCHIVES = ["adapter", "merged", "lora", "lora-serving"];

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
  const content = h("div", { hidden: true });  // shown once the job is found: a job this key cannot see gets notFound
  view.append(content);
  content.append(h("div", { class: "row" }, title, status, h("span", { class: "spacer" }),
      h("a", { href: `#/compare?a=${jobId}&b=` }, "compare…"), cancel, remove),
    h("div", { class: "panel" }, stats, error), budgetWrap);
  const charts = h("div", { class: "grid", id: "charts" });
  content.append(charts);
  const curve = Object.fromEntries(CURVES.map(([k, t]) => [k, lineChart(charts, k, t, { smooth: NOISY.includes(k) })]));
  const evalChart = lineChart(charts, "eval", "Evaluation", { yLabel: "score", style: { loss: { scale: "loss" } } });
  // Widest first, so each line drawn over it leaves it visible; kept params (just under the budget) dashed on top.
  const budgetChart = lineChart(charts, "budget", "Budget: planned vs reached", { style: {
    planned: { width: 5 }, reached: { width: 2.5 }, "kept params": { width: 1.25, dash: [5, 3] } } });
  const heat = heatmap(content);
  const bars = patternBars(content);
  const events = h("ul", { id: "events" });
  const downloads = h("ul", { class: "downloads", id: "downloads" }, h("li", { class: "muted", text: "available once the job has succeeded" }));
  content.append(h("div", { class: "grid" }, h("div", { class: "panel" }, h("h2", { text: "Events" }), events),
    h("div", { class: "panel" }, h("h2", { text: "Downloads" }), downloads)));

  let job = null, metrics = { steps: [], columns: {} }, ranks = null, plan = null, planAsked = false, downloadsShown = false;

  const refresh = singleFlight(async () => {
    job = await api(`/v1/jobs/${jobId}`);
    content.hidden = false;
    title.textContent = job.name || `Job ${job.id.slice(0, 8)}`;
    status.replaceChildren(statusBadge(job.status));
    cancel.hidden = FINISHED.includes(job.status) || job.status === "cancelling";
    remove.hidden = !FINISHED.includes(job.status);
    const stat = (label, value, id) => h("div", { class: "stat" }, h("div", { class: "label", text: label }), h("div", { class: "value", id, text: value }));
    stats.replaceChildren(stat("step", `${job.step} / ${job.total_steps ?? "?"}`, "job-step"),
      stat("ETA", FINISHED.includes(job.status) ? "–" : duration(job.eta_seconds), "job-eta"),
      stat("trained tokens", int(job.trained_tokens), "job-tokens"),
      stat("tokens/s", int(job.latest_metrics?.values.tokens_per_s), "job-tokens-per-s"),
      stat("model", job.model), stat("task", job.task),
      stat("budget now", job.current_budget == null ? "–" : `${int(job.current_budget)} ${job.budget_unit}`),
      stat("budget target", job.budget_target == null ? "–" : `${int(job.budget_target)} ${job.budget_unit}`),
      stat("learning rate", learningRate(job), "job-lr"),
      stat("created", when(job.created_at)), stat("finished", when(job.finished_at)), stat("attempts", job.attempts));
    error.textContent = job.error || "";
    keptMeter();
    if (!planAsked) { planAsked = true; askPlan(); }
    await Promise.all([moreMetrics(), moreRanks()]);
    if (FINISHED.includes(job.status)) {
      stopPolling();
      if (!downloadsShown) { downloadsShown = true; showDownloads(); }
    }
  });
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
    } catch (e) {
      if (e.name === "AbortError") return;
      plan = null; budgetChart.panel.append(h("p", { class: "muted", text: `no plan: ${e.message}` }));
    }
    drawBudget();
  }
  // Pages are appended from the last step held, keeping only later steps: a page that arrives twice adds nothing.
  async function moreMetrics() {
    for (;;) {
      const last = metrics.steps.at(-1);  // none yet: from the server's first step (0, the evaluation before training)
      const page = await api(`/v1/jobs/${jobId}/metrics/columns${last == null ? "" : `?after_step=${last}`}`);
      const rows = page.steps.flatMap((s, i) => s > (metrics.steps.at(-1) ?? -Infinity) ? [i] : []);  // held now, not when asked
      const n = metrics.steps.length;
      for (const name of new Set([...Object.keys(metrics.columns), ...Object.keys(page.columns)])) {
        const old = metrics.columns[name] || new Array(n).fill(null);
        metrics.columns[name] = old.concat(rows.map((i) => page.columns[name]?.[i] ?? null));
      }
      metrics.steps = metrics.steps.concat(rows.map((i) => page.steps[i]));
      if (!page.has_more || !rows.length) break;
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
    const last = ranks?.steps.at(-1);
    const page = await api(`/v1/jobs/${jobId}/ranks/columns${last == null ? "" : `?after_step=${last}`}`);
    if (!ranks?.steps.length) ranks = page;  // whole: the first page before any snapshot names no module
    else {
      const rows = page.steps.flatMap((s, i) => s > ranks.steps.at(-1) ? [i] : []);
      for (const k of ["steps", "budgets", "adapter_params", "final", "ranks"]) ranks[k] = ranks[k].concat(rows.map((i) => page[k][i]));
      ranks.final_rank_pattern = page.final_rank_pattern;
    }
    if (!ranks.steps.length) return;
    heat.set(ranks, job.step);
    const final = ranks.final_rank_pattern;
    bars.set(ranks.modules, final ? ranks.modules.map((m) => final[m.name]) : ranks.ranks.at(-1), !!final);
  }
  async function showDownloads() {
    const items = [];
    for (const kind of ARCHIVES) {
      const url = `/v1/jobs/${jobId}/artifacts/${kind}`;
      const head = await api(url, { method: "HEAD", raw: true });
      if (!head.ok) continue;
      const size = Number(head.headers.get("content-length")), sha = head.headers.get("x-checksum-sha256");
      items.push(h("li", { "data-kind": kind, "data-size": size, "data-sha256": sha }, downloadLink(url, kind),
        h("div", { class: "muted" }, `${kind}.tar · ${bytes(size)} · sha256 `, h("code", { class: "sha256", text: sha }))));
    }
    if (items.length) items.push(h("li", { class: "muted", text: "Check a saved file with sha256sum (shasum -a 256 on macOS): it prints the sha256 shown here." }));
    else items.push(h("li", { class: "muted", id: "no-downloads", text: await noArchives() }));
    downloads.replaceChildren(...items);
  }
  // A cancelled or failed job was not exported; what it left is checkpoints, and a new job can start from one.
  async function noArchives() {
    const why = { cancelled: `Cancelled at step ${job.step}: a cancelled job is not exported, so it has no archives.`,
                  failed: "The job failed before its archives were written (the error is above), so it has none." }[job.status] ||
                "This job left no archives.";
    const saved = (await api(`/v1/jobs/${jobId}/checkpoints`)).data.at(-1);
    return saved ? `${why} Its checkpoint at step ${saved.step} can start a new job: "from_checkpoint": "${jobId}:${saved.step}".`
      : `${why} It kept no checkpoint to start a new job from.`;
  }

  // Events over Server-Sent Events, read with fetch (EventSource cannot send the Bearer key). A dropped stream is
  // opened again; an answer that will stay the same (401, 404) is not asked again.
  const stream = new AbortController();
  cleanups.push(() => stream.abort());
  let lastId = 0;
  async function streamEvents() {
    dashboard.streaming = true;
    try {
      while (!stream.signal.aborted) {
        try {
          const response = await fetch(`/v1/jobs/${jobId}/events?after_id=${lastId}`, { signal: stream.signal,
            headers: authHeaders({ Accept: "text/event-stream" }) });
          if (response.status === 401) { signOut(errorText(await response.json().catch(() => null))); return; }
          if (response.status === 404) { gone(); return; }
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
              if (fields.event === "end") { ended = true; refresh().catch(failed); continue; }
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
          if (stream.signal.aborted) return;
        }
        await new Promise((r) => setTimeout(r, 2000));  // reconnect after a dropped stream
      }
    } finally { dashboard.streaming = false; }
  }

  // Poll until the job has finished; the event stream opens once the job is known to exist.
  let opened = false;
  const tick = () => refresh().then(() => { if (!opened) { opened = true; streamEvents(); } }, failed);
  const poll = setInterval(tick, POLL_MS);
  cleanups.push(() => clearInterval(poll));
  dashboard.polling = true;
  function stopPolling() { clearInterval(poll); dashboard.polling = false; }
  function gone() { stopPolling(); stream.abort(); notFound(view, jobId); }
  function failed(e) {
    if (e.status === 404) gone();
    else if (e.name !== "AbortError" && e.status !== 401) { content.hidden = false; error.textContent = e.message; }
  }
  tick();
}

// Archives download through the service worker sw.js: a link cannot send the Authorization header, and reading a
// merged model of many GB into the page to hash it exhausted the tab. The page hands the worker its key for one
// ticket and opens download/<ticket>; the worker fetches the archive with the key and the response streams into the
// browser's own downloads. The page shows the server's sha256 to check the saved file against.
const downloadWorker = window.isSecureContext && navigator.serviceWorker ?
  navigator.serviceWorker.register("sw.js").then(() => navigator.serviceWorker.ready) : null;

function downloadLink(url, kind) {
  if (!downloadWorker) {  // no service worker outside a secure context (HTTPS or localhost): a command does it
    return h("div", { id: `download-${kind}` }, h("span", { class: "muted", text: "Served without HTTPS, this page cannot download with your key; run:" }),
      h("pre", { class: "mono", text: `curl -fLOJ -H "Authorization: Bearer $ADALORA_API_KEY" ${location.origin}${url}` }));
  }
  const problem = h("span", { class: "error" });
  const button = h("button", { class: "primary", id: `download-${kind}`, onclick: async () => {
    button.disabled = true; problem.textContent = "";
    try { await download(url, (text) => { problem.textContent = ` ${text}`; }); } finally { button.disabled = false; }
  } }, `Download ${kind}`);
  return h("span", {}, button, problem);
}

async function download(url, failed) {
  const { active } = await downloadWorker, ticket = crypto.randomUUID();
  await new Promise((resolve) => {  // the worker holds the ticket before the frame asks for it
    const channel = new MessageChannel();
    channel.port1.onmessage = resolve;
    active.postMessage({ ticket, url, key: sessionStorage.getItem(KEY) }, [channel.port2]);
  });
  // A hidden frame, not <a download>: Chromium sends a download link's request past the service worker. An archive
  // becomes a download and the frame stays empty; an answer it shows instead is an error, said beside the button.
  const frame = h("iframe", { hidden: true, src: `download/${ticket}` });
  frame.addEventListener("load", () => {
    const text = frame.contentDocument?.body?.textContent.trim();
    if (text) failed(`download failed: ${(() => { try { return errorText(JSON.parse(text)); } catch { return text; } })()}`);
  });
  document.body.append(frame);
  setTimeout(() => frame.remove(), 60_000);  // a started download goes on without it
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
      field("lora_alpha", num("lora_alpha", 8)),
      field("scaling", h("select", { name: "scaling", id: "scaling" },
        h("option", { value: "rank_stabilized" }, "rank_stabilized: alpha / sqrt(init_r)"),
        h("option", { value: "standard" }, "standard: alpha / init_r (the paper's)")))),
    h("fieldset", {}, h("legend", { text: "Schedule" }), field("tinit", num("tinit", 0.1, { id: "tinit" })),
      field("tfinal", num("tfinal", 0.2, { id: "tfinal" })), field("delta_t", num("delta_t", 10, { id: "delta-t", min: 1, step: 1 }))),
    h("fieldset", {}, h("legend", { text: "Training" }), field("max_steps", num("max_steps", 100, { id: "max-steps", min: 1, step: 1 })),
      field("batch_size", num("batch_size", 16, { id: "batch-size", min: 1, step: 1 })), field("learning_rate", num("learning_rate", 0.001, { id: "learning-rate" })),
      field("learning rate auto", h("input", { type: "checkbox", name: "lr_auto", id: "lr-auto",
        title: "a short range test on the job's data picks the rate" })),
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
    const budget = { init_r: value("init_r"), unit: form.elements.unit.value, lora_alpha: value("lora_alpha"),
                     scaling: form.elements.scaling.value };
    if (value("target_params") !== undefined) budget.target_params = value("target_params"); else budget.target_r = value("target_r");
    const training = { max_steps: value("max_steps"), batch_size: value("batch_size"),
                       learning_rate: form.elements.lr_auto.checked ? "auto" : value("learning_rate"),
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
  const refresh = singleFlight(async () => {
    const files = await api("/v1/files?limit=200");
    list.replaceChildren(...files.data.map((f) => h("tr", { "data-file-id": f.id },
      h("td", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); showFile(f); } }, f.filename), h("div", { class: "muted mono", text: f.id })),
      h("td", { text: f.format }), h("td", { text: f.row_count }), h("td", { text: bytes(f.size) }), h("td", { text: when(f.created_at) }),
      h("td", {}, h("button", { class: "danger", "data-delete": f.id, onclick: async (e) => {
        try { await api(`/v1/files/${f.id}`, { method: "DELETE" }); refresh(); }
        catch (err) { e.target.parentElement.append(h("div", { class: "error", text: err.message })); }
      } }, "Delete")))));
    if (!files.data.length) list.append(h("tr", {}, h("td", { colspan: 6, class: "muted", text: "No files yet." })));
  });
  refresh();
}

// -- compare two jobs ------------------------------------------------------------------------------------

async function comparePage(view, a = "", b = "") {
  const jobs = (await api("/v1/jobs?limit=200")).data;
  const pick = (id, value) => h("select", { id, onchange: () => { location.hash = `#/compare?a=${$("#compare-a").value}&b=${$("#compare-b").value}`; } },
    h("option", { value: "" }, "— choose a job —"), jobs.map((j) => h("option", { value: j.id, selected: j.id === value }, `${j.name || j.id.slice(0, 8)} · ${j.status} · ${j.model}`)));
  view.append(h("h1", { text: "Compare two jobs" }), h("div", { class: "panel row" }, pick("compare-a", a), "vs", pick("compare-b", b)));
  if (!a || !b) return;
  let ma, mb, ra, rb;
  try {
    [ma, mb, ra, rb] = await Promise.all([a, b].flatMap((id) => [api(`/v1/jobs/${id}/metrics/columns?limit=20000`)]).concat(
      [a, b].map((id) => api(`/v1/jobs/${id}/ranks`))));
  } catch (e) {
    if (e.status !== 404) throw e;
    view.append(h("p", { class: "panel error", id: "compare-error", text: `${e.message}: it was deleted, or it belongs to another tenant.` }));
    return;
  }
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
    lineChart(grid, `compare-${metric}`, metric, { smooth: metric === "loss" }).update(x, series);
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
  localStorage.setItem("adalora-theme", next); applyTheme(next);
  // Only canvases read colours when drawn: they redraw; the page, and what a form holds, stays as it is.
  window.dispatchEvent(new Event("themechange"));
});
$("#sign-out").addEventListener("click", () => signOut(""));
// A request a page did not handle itself (a 503 while the database restarts, say): said on the page, once.
window.addEventListener("unhandledrejection", (e) => {
  if (e.reason?.name === "AbortError") { e.preventDefault(); return; }  // a request of a page left behind
  if (!(e.reason instanceof ApiError)) return;
  e.preventDefault();
  if (e.reason.status === 401) return;  // already back at the sign-in page, which says why
  let flash = $("#flash");
  if (!flash) { flash = h("p", { id: "flash", class: "panel error" }); $("#view").prepend(flash); }
  flash.textContent = e.reason.message;
});
window.addEventListener("hashchange", route);
route();
