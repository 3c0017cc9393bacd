// scaling serve: fills a sweep's page from the JSON API and follows the sweep.
// Every value from the store is put in the page with textContent (never innerHTML); the
// figures' texts are escaped by the server. The page polls /api/version (one listing of the
// sweep's parts) and reloads the panels only when it changed.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const SWEEP = document.body.dataset.sweep;
const POLL_MS = 1000 * parseFloat(document.body.dataset.poll || "2");
const state = {version: null, drawn: null, meta: null, brushSql: "", ranges: {}, axesKey: "", where: {}, sql: "", metric: "",
               table: null, sort: [-1, 1], filter: "", brushed: null, busy: false,
               lawsPending: false, lawsDrawn: ""};
const CONFIG = {responsive: true, displaylogo: false};

function api(what, params) {
  const q = new URLSearchParams(Object.assign({sweep: SWEEP}, params || {}));
  return fetch(`/api/${what}?${q}`, {headers: {"X-Scaling-Token": TOKEN}, cache: "no-store"})
    .then(r => r.json());
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function body(id) { return document.querySelector(`#${id} .body`); }

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(4).replace(/\.?0+$/, "");
  return String(v);
}

function card(parent, key, value, tone) {
  const c = el("div", {class: "card" + (tone ? " " + tone : "")});
  c.appendChild(el("div", {class: "k"}, key));
  c.appendChild(el("div", {class: "v"}, value));
  parent.appendChild(c);
}

function plot(div, fig) {
  return Plotly.react(div, fig.data, fig.layout, CONFIG);
}

function message(parent, text, cls) { parent.appendChild(el("p", {class: cls || "note"}, text)); }

function simpleTable(headers, rows) {
  const t = el("table");
  const tr = el("tr");
  headers.forEach(h => tr.appendChild(el("th", {}, h)));
  t.appendChild(tr);
  rows.forEach(r => {
    const row = el("tr");
    r.forEach(c => row.appendChild(el("td", {}, fmt(c))));
    t.appendChild(row);
  });
  return t;
}

// ---- progress -------------------------------------------------------------------------------

async function showProgress() {
  const p = await api("progress");
  const b = clear(body("progress"));
  if (p.error) return message(b, p.error, "msg");
  const cards = el("div", {class: "cards", id: "progress-cards"});
  card(cards, "trials", p.trials);
  for (const s of ["ok", "diverged", "failed"]) card(cards, s, p.counts[s] || 0, s === "ok" ? "" : (p.counts[s] ? "bad" : ""));
  if (p.counts.pruned) card(cards, "pruned", p.counts.pruned);  // stopped early by the sweep's rule
  if (p.expected !== null && p.expected !== undefined) card(cards, "remaining", `${p.remaining} of ${p.expected}`);
  const r = p.recent;
  card(cards, "trials/s", r ? fmt(r.trials_per_s) : (p.trials_per_s ? fmt(p.trials_per_s) : "-"));
  card(cards, "steps/s", r && r.steps_per_s ? fmt(r.steps_per_s) : (p.steps_per_s ? fmt(p.steps_per_s) : "-"));
  card(cards, "ETA", p.eta.text, p.eta.stalled ? "bad" : "");
  b.appendChild(cards);
  const c = document.getElementById("progress-cards");
  c.dataset.trials = p.trials;
  c.dataset.eta = p.eta.text;
  if (p.eta.why) message(b, "ETA unknown: " + p.eta.why);
  else if (p.eta.rate) message(b, `rates over the last ${p.eta.window_trials} trials (${fmt(p.eta.window_s)} s); ` +
    `over the whole sweep ${p.trials_per_s ? fmt(p.trials_per_s) : "-"} trials/s`);
  if (p.figure) { const d = el("div", {class: "fig", id: "progress-fig"}); b.appendChild(d); plot(d, p.figure); }
  if (p.note) message(b, p.note);
  if (p.n_failures) {
    message(b, `${p.n_failures} trials did not finish ok` + (p.n_failures > p.failures.length ? ` (first ${p.failures.length} shown)` : ""), "msg");
    b.appendChild(simpleTable(["trial", "status", "configuration", "error"],
      p.failures.map(f => [f.trial_id, f.status, f.config, f.error])));
  }
}

// ---- training curves ------------------------------------------------------------------------

function whereText() {
  if (state.sql.trim()) return state.sql.trim();
  return Object.entries(state.where).filter(([, v]) => v !== "").map(([k, v]) => `${k}=${v}`).join(",");
}

function buildFilters(meta) {
  const b = clear(body("training"));
  const bar = el("div", {class: "filters", id: "filters"});
  for (const a of meta.axes) {
    const label = el("label", {}, a + " ");
    const sel = el("select", {"data-axis": a});
    sel.appendChild(el("option", {value: ""}, "any"));
    meta.values[a].forEach(v => sel.appendChild(el("option", {value: String(v)}, fmt(v))));
    sel.value = state.where[a] || "";
    sel.addEventListener("change", () => { state.where[a] = sel.value; showCurves(); });
    label.appendChild(sel);
    bar.appendChild(label);
  }
  const mlabel = el("label", {}, "metric ");
  const msel = el("select", {id: "curve-metric"});
  const metrics = meta.curve_metrics.slice();
  if (metrics.includes("test_acc")) metrics.unshift("error");
  metrics.forEach(m => msel.appendChild(el("option", {value: m}, m)));
  msel.value = state.metric || (metrics.includes(meta.headline) ? meta.headline : metrics[0] || "");
  state.metric = msel.value;
  msel.addEventListener("change", () => { state.metric = msel.value; showCurves(); });
  mlabel.appendChild(msel);
  bar.appendChild(mlabel);
  const sql = el("input", {type: "text", id: "curve-sql", size: "36",
                           placeholder: "or an SQL filter, e.g. lr >= 0.5 AND seed = 0"});
  sql.value = state.sql;
  sql.addEventListener("change", () => { state.sql = sql.value; showCurves(); });
  bar.appendChild(sql);
  b.appendChild(bar);
  b.appendChild(el("div", {class: "fig", id: "curves-fig"}));
  b.appendChild(el("div", {id: "curves-note"}));
}

let curvesAsked = 0;

async function showCurves() {
  const asked = ++curvesAsked;
  const r = await api("curves", {where: whereText(), metric: state.metric});
  // a filter changed (or a refresh asked) while this was on its way: the later answer draws, so an
  // earlier one arriving last never leaves the figure showing a filter no longer chosen
  if (asked !== curvesAsked) return;
  const fig = document.getElementById("curves-fig");  // looked up now: a refresh may have rebuilt it
  const note = clear(document.getElementById("curves-note"));
  if (r.error) { Plotly.purge(fig); fig.dataset.lines = 0; return message(note, r.error, "msg"); }
  await plot(fig, r.figure);
  fig.dataset.lines = r.lines;
  (r.notes || []).forEach(n => message(note, n));
}

// ---- the laws -------------------------------------------------------------------------------

async function showLaws() {
  const r = await api("laws");
  if (r.error) { state.lawsPending = false; return message(clear(body("laws")), r.error, "msg"); }
  state.lawsPending = !!r.pending;
  const seen = JSON.stringify(r);
  if (seen === state.lawsDrawn) return;  // asked again while fitting, and nothing new yet
  state.lawsDrawn = seen;
  const b = clear(body("laws"));
  const row = el("div", {class: "figs"});
  b.appendChild(row);
  const pending = [];
  for (const [key, title] of [["learning_curve", "learning curve (scaling fit)"], ["bopt", "B_opt and the rule (scaling bopt)"],
                              ["bcrit", "critical batch size (scaling bcrit)"]]) {
    const box = el("div", {class: "law", id: `law-${key}`});
    box.appendChild(el("h3", {}, title));
    row.appendChild(box);
    const part = r[key];
    if (part.pending) { message(box, "fitting in the background; shown here when ready", "note"); continue; }
    if (part.error) { message(box, "not available yet: " + part.error, "msg"); continue; }
    if (part.stale) message(box, `fitted on ${part.as_of.trials} trials at ${part.as_of.at}; refitting with the new ones`, "note");
    if (part.verdict) box.appendChild(el("p", {class: "verdict"}, "rule: " + part.verdict));
    const d = el("div", {class: "fig"});
    box.appendChild(d);
    const det = el("details");
    det.appendChild(el("summary", {}, "the text " + (part.command || "the command") + " prints"));
    det.appendChild(el("pre", {}, part.text.join("\n")));
    box.appendChild(det);
    pending.push([d, part.figure]);
  }
  // plotted once both boxes are in place, so each takes its own half of the row
  await Promise.all(pending.map(([d, fig]) => plot(d, fig)));
}

// ---- parallel coordinates and the table -------------------------------------------------------

async function showParcoords() {
  const r = await api("parcoords");
  const b = clear(body("parcoords"));
  if (r.error) return message(b, r.error, "msg");
  const d = el("div", {class: "fig", id: "parcoords-fig"});
  b.appendChild(d);
  message(b, "Drag along an axis to select a range: the table keeps the trials inside every range, " +
             "and the training curves show them.");
  // ranges selected before a refresh stay selected
  r.data[0].dimensions.forEach(dim => { if (state.ranges[dim.label]) dim.constraintrange = state.ranges[dim.label]; });
  await plot(d, r);
  brush(d, r);
  d.on("plotly_restyle", () => brush(d, r));
}

function brush(d, r) {
  const dims = d.data[0].dimensions;
  state.ranges = {};
  dims.forEach(dim => { if (dim.constraintrange && dim.constraintrange.length) state.ranges[dim.label] = dim.constraintrange; });
  // the table keeps the rows inside every range, read from its own columns (the figure may
  // draw a sample of the trials)
  state.brushed = Object.keys(state.ranges).length ? r.columns.map((c, i) => {
    let cr = dims[i].constraintrange;
    if (!cr || !cr.length) return null;
    return Object.assign({ranges: Array.isArray(cr[0]) ? cr : [cr]}, c);
  }).filter(x => x) : null;
  renderTable();
  const sql = rangeFilter(dims, r.columns);
  if (sql !== state.brushSql) {  // the training curves follow the ranges on the axes
    state.brushSql = sql;
    state.sql = sql;
    const box = document.getElementById("curve-sql");
    if (box) box.value = sql;
    showCurves();
  }
}

function insideBrush(row, columns) {
  for (const b of state.brushed) {
    const k = b.metric ? columns.indexOf(state.table.metric) : columns.indexOf(b.name);
    if (k < 0) continue;
    let v = row[k];
    if (v === null || v === undefined) return false;
    if (b.scale === "category") v = b.categories.indexOf(String(v));
    else if (b.scale === "log") v = Math.log10(v);
    if (!b.ranges.some(([lo, hi]) => v >= lo && v <= hi)) return false;
  }
  return true;
}

function sqlText(v) { return "'" + String(v).replace(/'/g, "''") + "'"; }

// The ranges selected on the axes as an SQL filter of the trials (the metric's range is left to
// the table: the metric may be derived, not a column).
function rangeFilter(dims, columns) {
  const clauses = [];
  columns.forEach((c, i) => {
    if (c.metric) return;
    let cr = dims[i].constraintrange;
    if (!cr || !cr.length) return;
    if (!Array.isArray(cr[0])) cr = [cr];
    const name = '"' + c.name.replace(/"/g, '""') + '"';
    let parts;
    if (c.scale === "category") {
      const picked = c.categories.filter((_, k) => cr.some(([lo, hi]) => k >= lo && k <= hi));
      parts = [`${name} IN (${picked.map(sqlText).join(", ") || "NULL"})`];
    } else {
      const v = x => (c.scale === "log" ? Math.pow(10, x) : x);
      parts = cr.map(([lo, hi]) => `${name} BETWEEN ${v(lo).toPrecision(6)} AND ${v(hi).toPrecision(6)}`);
    }
    clauses.push(parts.length > 1 ? "(" + parts.join(" OR ") + ")" : parts[0]);
  });
  return clauses.join(" AND ");
}

async function showTable() {
  state.table = await api("table");
  const b = clear(body("trials"));
  if (state.table.error) return message(b, state.table.error, "msg");
  const input = el("input", {type: "text", id: "table-filter", size: "40",
                             placeholder: "filter rows (text in any column)"});
  input.value = state.filter;
  input.addEventListener("input", () => { state.filter = input.value; renderTable(); });
  b.appendChild(input);
  b.appendChild(el("span", {id: "table-count", class: "note"}));
  b.appendChild(el("div", {id: "table-box", class: "scroll"}));
  b.appendChild(el("div", {id: "trial-detail"}));
  renderTable();
}

function renderTable() {
  const t = state.table;
  if (!t || t.error) return;
  const needle = state.filter.trim().toLowerCase();
  let rows = t.rows.filter(r => (!state.brushed || insideBrush(r, t.columns)) &&
    (!needle || r.some(c => fmt(c).toLowerCase().includes(needle))));
  const [col, dir] = state.sort;
  if (col >= 0) rows = rows.slice().sort((a, b) => {
    const x = a[col], y = b[col];
    if (x === y) return 0;
    if (x === null) return 1;
    if (y === null) return -1;
    return (x < y ? -1 : 1) * dir;
  });
  const shown = rows.slice(0, 500);
  const table = el("table", {id: "trial-table"});
  const head = el("tr");
  t.columns.forEach((c, i) => {
    const th = el("th", {class: "sortable"}, c + (i === col ? (dir > 0 ? " ▲" : " ▼") : ""));
    th.addEventListener("click", () => { state.sort = [i, i === col ? -dir : 1]; renderTable(); });
    head.appendChild(th);
  });
  table.appendChild(head);
  shown.forEach(r => {
    const tr = el("tr", {class: "row"});
    r.forEach(c => tr.appendChild(el("td", {}, fmt(c))));
    tr.addEventListener("click", () => showTrial(r[0]));
    table.appendChild(tr);
  });
  clear(document.getElementById("table-box")).appendChild(table);
  document.getElementById("table-count").textContent =
    ` ${rows.length} of ${t.total} trials` + (rows.length > shown.length ? ` (first ${shown.length} shown)` : "");
}

async function showTrial(id) {
  const box = clear(document.getElementById("trial-detail"));
  box.appendChild(el("h3", {}, "trial " + id));
  const [r, c] = await Promise.all([api("trial", {id}), api("curves", {where: `trial_id=${id}`, metric: state.metric})]);
  const row = el("div", {class: "detail"});
  box.appendChild(row);
  const d = el("div", {class: "fig"});
  row.appendChild(d);
  if (r.error) message(row, r.error, "msg");
  else row.appendChild(el("pre", {class: "config"}, JSON.stringify(r.config || r.row, null, 2)));
  if (c.figure) await plot(d, c.figure);
  else if (c.error) message(d, c.error, "msg");
}

// ---- following the sweep ----------------------------------------------------------------------

async function refresh(listed) {
  const meta = await api("meta");
  const live = document.getElementById("live");
  if (meta.error || meta.empty) {
    live.textContent = "waiting";
    return message(clear(body("progress")), meta.error || meta.empty, meta.error ? "msg" : "note");
  }
  // the server may still show an older version (it rereads a big sweep only so often): then
  // the next poll asks again, and the panels are redrawn only when the data changed
  if (meta.version === listed) state.version = listed;
  live.textContent = meta.version === listed ? "live" : "catching up";
  if (meta.version === state.drawn) return;
  const key = JSON.stringify([meta.axes, meta.values, meta.curve_metrics]);
  if (key !== state.axesKey) { state.axesKey = key; buildFilters(meta); }
  await Promise.all([showProgress(), showCurves(), showTable(), showParcoords(), showLaws()]);
  state.drawn = meta.version;
  live.dataset.version = meta.version;
}

async function poll() {
  if (state.busy) return;
  state.busy = true;
  try {
    const v = await api("version");
    if (v.version !== state.version) await refresh(v.version);
    else if (state.lawsPending) await showLaws();  // fitted in the background: asked again
  } catch (e) {
    document.getElementById("live").textContent = "disconnected";
  } finally {
    state.busy = false;
  }
}

poll();
setInterval(poll, POLL_MS);
