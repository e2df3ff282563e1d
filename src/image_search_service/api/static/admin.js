// The rollout experiment page: the report and one chart per metric over time.
// Plain JavaScript, no build step; reads GET /api/v1/admin/experiment[/daily] with the
// session of auth.js (one sign-in; the admin key is needed, a read key is answered 403).
"use strict";

const API = "/api/v1";
const ARMS = ["clip", "siglip", "interleaved"];
const COLOURS = { clip: "#1f5fbf", siglip: "#c2410c", interleaved: "#15803d" };
const METRICS = [
  ["searches", "Searches", false],
  ["ctr", "Click-through rate", true],
  ["ctr_at_1", "CTR@1", true],
  ["mrr", "MRR of the first click", true],
  ["zero_result_rate", "Zero-result rate", true],
  ["reformulation_rate", "Reformulation rate", true],
];
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

const READ_KEY_ONLY = "Signed in with a read key; the admin page needs an admin key (API_KEY). " +
  "Sign out and sign in with it.";

class HttpError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

// Same-origin reads with the session cookie; a 401 brings the sign-in form back (auth.js).
async function get(path) {
  const response = await Auth.request(path);
  let body = null;
  if ((response.headers.get("content-type") || "").includes("application/json")) body = await response.json();
  if (!response.ok) throw new HttpError(response.status, body && body.detail);
  return body;
}

const SECTIONS = ["recommendation", "arms-section", "comparisons-section", "charts-section"];
let generation = 0; // bumps when signed out: answers still on their way are dropped

function pct(value) { return `${(100 * value).toFixed(1)}%`; }

function cell(row, text, header = false) {
  const el = document.createElement(header ? "th" : "td");
  el.textContent = text;
  row.appendChild(el);
}

function table(id, headers, rows) {
  const t = $(id);
  t.replaceChildren();
  const head = t.insertRow();
  headers.forEach((h) => cell(head, h, true));
  rows.forEach((values) => {
    const row = t.insertRow();
    values.forEach((v) => cell(row, v));
  });
}

function renderReport(report) {
  $("recommendation-text").textContent = report.recommendation.text;
  $("flags").textContent =
    `SIGLIP_ROLLOUT_PERCENTAGE=${report.siglip_rollout_percentage}, ` +
    `INTERLEAVE_PERCENTAGE=${report.interleave_percentage}` +
    (report.since ? `, since ${report.since}` : "");
  const arms = ARMS.filter((a) => report.arms[a]);
  table(
    "arms",
    ["arm", "searches", "CTR", "CTR@1", "CTR@5", "MRR", "zero results", "abandoned", "reformulated", "p50 ms", "p95 ms"],
    arms.map((a) => {
      const m = report.arms[a];
      const ms = (v) => (v === null ? "-" : v.toFixed(0));
      return [a, m.searches, pct(m.ctr), pct(m.ctr_at_1), pct(m.ctr_at_5), m.mrr.toFixed(3),
        pct(m.zero_result_rate), pct(m.abandonment_rate), pct(m.reformulation_rate),
        ms(m.latency_p50_ms), ms(m.latency_p95_ms)];
    }),
  );
  table(
    "comparisons",
    ["metric", report.baseline, report.candidate, "difference", "95% CI", "p", "method"],
    report.comparisons.map((c) => [c.metric, c.baseline.toFixed(4), c.candidate.toFixed(4),
      c.difference.toFixed(4), `${c.ci_low.toFixed(4)} .. ${c.ci_high.toFixed(4)}`,
      c.p_value.toFixed(4) + (c.significant ? " *" : ""), c.method]),
  );
  const i = report.interleaving;
  $("interleaving").textContent = `Interleaving: ${i.searches} searches, ${i.wins} wins for ` +
    `${report.candidate}, ${i.losses} losses, ${i.ties} ties, ${i.no_click} without a click ` +
    `(sign test p = ${i.p_value.toFixed(4)}).`;
  const p = report.power;
  $("power").textContent = p.needed_per_arm === null
    ? `Sample size for a ${pct(p.min_effect)} change: not computable yet.`
    : `To detect a ${pct(p.min_effect)} change in CTR: ${p.needed_per_arm} searches per arm ` +
      `(have ${p.have_per_arm}; ${p.still_needed_per_arm || 0} still needed).`;
  $("notes").replaceChildren(...report.notes.map((n) => {
    const li = document.createElement("li");
    li.textContent = n;
    return li;
  }));
  for (const id of ["recommendation", "arms-section", "comparisons-section"]) $(id).hidden = false;
}

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

// One small line chart: a line per arm over the days, y from 0 to the largest value.
function chart(days, rows, key, title, isRate) {
  const box = document.createElement("figure");
  box.className = "chart";
  box.dataset.metric = key;
  const h = document.createElement("h3");
  h.textContent = title;
  box.appendChild(h);
  const W = 320, H = 160, L = 40, B = 20, T = 8, R = 8;
  const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  const values = rows.map((r) => r[key]);
  const top = Math.max(isRate ? 0.01 : 1, ...values);
  const x = (i) => L + (days.length > 1 ? (i * (W - L - R)) / (days.length - 1) : (W - L - R) / 2);
  const y = (v) => H - B - (v / top) * (H - B - T);
  plot.appendChild(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" }));
  plot.appendChild(svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" }));
  const label = (text, attrs) => {
    const t = svg("text", { "font-size": 10, fill: "#555", ...attrs });
    t.textContent = text;
    plot.appendChild(t);
  };
  label(isRate ? pct(top) : String(top), { x: 2, y: T + 8 });
  label(isRate ? "0%" : "0", { x: 2, y: H - B });
  if (days.length) {
    label(days[0].slice(5), { x: L, y: H - 4 });
    label(days[days.length - 1].slice(5), { x: W - R - 28, y: H - 4 });
  }
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const arm of ARMS) {
    const points = [];
    days.forEach((day, i) => {
      const row = rows.find((r) => r.day === day && r.arm === arm);
      if (row) points.push(`${x(i).toFixed(1)},${y(row[key]).toFixed(1)}`);
    });
    if (!points.length) continue;
    const line = points.length > 1
      ? svg("polyline", { points: points.join(" "), fill: "none", stroke: COLOURS[arm], "stroke-width": 2 })
      : svg("circle", { cx: points[0].split(",")[0], cy: points[0].split(",")[1], r: 3, fill: COLOURS[arm] });
    line.classList.add(`series-${arm}`);
    plot.appendChild(line);
    const item = document.createElement("span");
    const swatch = document.createElement("span");
    swatch.className = `swatch ${arm}`;
    item.append(swatch, arm);
    legend.appendChild(item);
  }
  box.append(plot, legend);
  return box;
}

function renderDaily(rows) {
  const days = [...new Set(rows.map((r) => r.day))].sort();
  $("charts").replaceChildren(...METRICS.map(([key, title, rate]) => chart(days, rows, key, title, rate)));
  $("charts-section").hidden = false;
}

async function load() {
  const mine = generation;
  $("status").textContent = "Loading the experiment...";
  $("status").classList.remove("error");
  try {
    const days = $("days").value;
    const [report, daily] = await Promise.all([
      get(`${API}/admin/experiment`),
      get(`${API}/admin/experiment/daily?days=${encodeURIComponent(days)}`),
    ]);
    if (mine !== generation) return;
    renderReport(report);
    renderDaily(daily);
    const searches = Object.values(report.arms).reduce((n, m) => n + m.searches, 0);
    $("status").textContent = searches
      ? `${searches} recorded searches.`
      : "No searches recorded yet: the report fills in as people search.";
  } catch (err) {
    if (mine !== generation || err.status === 401) return; // the sign-in form is shown
    for (const id of SECTIONS) $(id).hidden = true;
    $("status").classList.add("error");
    $("status").textContent = err.status === 403 ? READ_KEY_ONLY
      : `Could not load the experiment: ${err.message}`;
  }
}

// Signed out (or the session ended): nothing of the report stays on the page.
function signedOut() {
  generation += 1;
  for (const id of SECTIONS) $(id).hidden = true;
  $("status").classList.remove("error");
  $("status").textContent = "";
}

$("controls").addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});
$("days").addEventListener("change", load);
Auth.start({ ready: load, signedOut });
