// The rollout page: the verdict first, then the evidence, the live flags with a control to
// change them (each change confirmed in a <dialog>), their history, the coverage of each
// model, the per-arm figures and one chart per metric over time.
// Plain JavaScript, no build step. Reads and writes only the admin API on this origin
// with the session of auth.js (one sign-in; a read key is answered 403).
"use strict";

const API = "/api/v1";
const ARMS = ["clip", "siglip", "interleaved"];
const COLOURS = { clip: "#3b82f6", siglip: "#ea580c", interleaved: "#16a34a" };
// [key, title, kind]: kind says how values read: a count, a rate (percent) or a number.
const METRICS = [
  ["searches", "Searches", "count"],
  ["ctr", "Click-through rate", "rate"],
  ["ctr_at_1", "CTR@1", "rate"],
  ["mrr", "MRR of the first click (0..1)", "number"],
  ["zero_result_rate", "Zero-result rate", "rate"],
  ["reformulation_rate", "Reformulation rate", "rate"],
];
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

const READ_KEY_ONLY = "Signed in with a read key; the admin page needs an admin key (API_KEY). " +
  "Sign out and sign in with it.";

class HttpError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : detail ? JSON.stringify(detail) : `HTTP ${status}`);
    this.status = status;
  }
}

// Same-origin calls with the session cookie (the browser adds Origin to writes, which
// the server's browser guard checks); a 401 brings the sign-in form back (auth.js).
async function call(path, options = {}) {
  const response = await Auth.request(path, options);
  let body = null;
  if ((response.headers.get("content-type") || "").includes("application/json")) body = await response.json();
  if (!response.ok) throw new HttpError(response.status, body && body.detail);
  return body;
}
const get = (path) => call(path);

const SECTIONS = ["recommendation", "evidence-section", "flags-section", "coverage-section",
  "arms-section", "charts-section"];
let generation = 0; // bumps when signed out: answers still on their way are dropped
let current = null; // { report, rollout }: what the flags control starts from

// -- formatting ------------------------------------------------------------------------------
function pct(value) { return `${(100 * value).toFixed(1)}%`; }
function num(value, digits = 3) { return value === null || value === undefined ? "-" : value.toFixed(digits); }
function format(kind, value) {
  if (kind === "rate") return pct(value);
  if (kind === "number") return value.toFixed(3);
  return String(Math.round(value));
}
function when(iso) {
  if (!iso) return "-";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}
function onOff(value) { return value ? "on" : "off"; }

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "className") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function cell(row, text, header = false) {
  const c = document.createElement(header ? "th" : "td");
  c.textContent = text;
  row.appendChild(c);
  return c;
}

// A table whose cells carry their column's name (data-label): on a phone each row
// stacks into a card of "name value" lines instead of scrolling sideways.
function table(id, headers, rows) {
  const t = $(id);
  t.replaceChildren();
  t.classList.add("stack");
  const head = t.createTHead().insertRow();
  headers.forEach((h) => cell(head, h, true));
  const body = t.createTBody();
  rows.forEach((values) => {
    const row = body.insertRow();
    values.forEach((v, i) => { cell(row, v).dataset.label = headers[i]; });
  });
  return t;
}
function count(n) { return n === null || n === undefined ? "-" : n.toLocaleString("en-US"); }

function facts(id, pairs) {
  $(id).replaceChildren(...pairs.flatMap(([name, value, key]) => {
    const dd = el("dd", key ? { dataset: { flag: key } } : {}, value);
    return [el("dt", {}, name), dd];
  }));
}

// -- the verdict ------------------------------------------------------------------------------
const ACTION_CLASS = { raise: "raise", hold: "hold", "roll back": "rollback" };

function renderVerdict(report) {
  const rec = report.recommendation;
  const box = $("recommendation");
  box.classList.remove("raise", "hold", "rollback");
  box.classList.add(ACTION_CLASS[rec.action] || "hold");
  box.dataset.action = rec.action;
  // The headline: the text up to its first "(" or ";" (e.g. "raise to 25%: siglip does
  // significantly better", "hold: not enough data: 22 searches in the smaller arm"); the
  // whole text, with its figures, follows.
  const cut = rec.text.search(/ \(|; /);
  const headline = cut > 0 ? rec.text.slice(0, cut) : rec.text;
  $("verdict-action").textContent = headline.charAt(0).toUpperCase() + headline.slice(1);
  $("recommendation-text").textContent = rec.text;
  const applicable = Boolean(rec.apply && Object.keys(rec.apply).length);
  $("apply-row").hidden = !applicable;
  $("apply-control").textContent = applicable
    ? `${rec.control || "PUT /api/v1/admin/rollout"} ${JSON.stringify(rec.apply)}` : "";
  box.hidden = false;
}

// -- the evidence -----------------------------------------------------------------------------
function renderEvidence(report) {
  $("candidate-name").textContent = report.candidate;
  $("baseline-name").textContent = report.baseline;
  const comps = report.comparisons;
  $("ab-empty").hidden = comps.length > 0;
  $("comparisons").hidden = comps.length === 0;
  const value = (c, v) => (c.unit.startsWith("percentage") ? pct(v) : v.toFixed(3));
  table(
    "comparisons",
    ["metric", report.baseline, report.candidate, "effect [95% interval]", "unit", "p (always valid)"],
    comps.map((c) => [c.metric, value(c, c.baseline), value(c, c.candidate), c.effect, c.unit,
      c.p_value.toFixed(3) + (c.significant ? " (significant)" : "")]),
  );
  const i = report.interleaving;
  const share = i.win_share === null ? "no decided search yet"
    : `win share ${pct(i.win_share)} [${pct(i.win_share_ci_low)}, ${pct(i.win_share_ci_high)}]`;
  $("interleaving").textContent = `${count(i.searches)} interleaved searches: ${count(i.wins)} wins for ` +
    `${report.candidate}, ${count(i.losses)} losses, ${count(i.ties)} ties, ${count(i.no_click)} without a click; ` +
    `${share}, p = ${i.p_value.toFixed(3)}${i.significant ? " (significant)" : ""}.`;
  const guards = report.guardrails;
  $("guardrails").replaceChildren(...(guards.length ? guards.map((g) => el(
    "li", { className: g.breached ? "breached" : "ok" }, `${g.breached ? "Breached" : "OK"}: ${g.text}`,
  )) : [el("li", { className: "muted" },
    "Not checked yet: both arms need enough searches since the flags last changed.")]));
  const p = report.power;
  $("power").textContent = p.needed_per_arm === null
    ? `To detect a ${pct(p.min_effect)} change in CTR: not computable yet (no searches).`
    : `To detect a ${pct(p.min_effect)} change in CTR: ${count(p.needed_per_arm)} searches per arm; ` +
      `have ${count(p.have_per_arm)}, ${count(p.still_needed_per_arm || 0)} still needed.`;
  const cold = ARMS.filter((a) => report.arms[a]).map((a) => `${a} ${report.arms[a].cold_starts}`);
  $("cold-starts").textContent = `Cold starts (first searches after a model loaded, left out of ` +
    `latency): ${cold.join(", ") || "none"}.`;
  $("notes").replaceChildren(...report.notes.map((n) => el("li", {}, n)));
  $("evidence-section").hidden = false;
}

// -- the live flags, their control and history ------------------------------------------------
function renderFlags(report, rollout) {
  current = { report, rollout };
  facts("flags", [
    ["SigLIP for everyone", onOff(report.use_siglip), "use_siglip"],
    ["SigLIP share", `${report.siglip_rollout_percentage}%`, "siglip_rollout_percentage"],
    ["Interleaving", `${report.interleave_percentage}%`, "interleave_percentage"],
    ["Source", report.flags_source === "database"
      ? "stored (changed at run time; wins over the environment)"
      : "environment (the settings the server started with)", "flags_source"],
    ["Last changed", report.flags_changed_at
      ? `${when(report.flags_changed_at)} by ${report.flags_changed_by || "?"}` : "never", "flags_changed"],
    ["Automatic rollback", report.auto_guard ? "on (ROLLOUT_AUTO_GUARD)" : "off: a breach is only recommended",
      "auto_guard"],
  ]);
  $("flags").dataset.source = report.flags_source;
  $("flag-use-siglip").checked = report.use_siglip;
  $("flag-rollout").value = report.siglip_rollout_percentage;
  $("flag-interleave").value = report.interleave_percentage;
  $("flags-reset").hidden = report.flags_source !== "database";
  $("flags-section").hidden = false;
}

function renderHistory(history) {
  const changes = history.changes;
  $("history-empty").hidden = changes.length > 0;
  $("history").hidden = changes.length === 0;
  const flags = (siglip, share, inter) => `${siglip ? "SigLIP for all, " : ""}${share}% / ${inter}%`;
  table(
    "history",
    ["when", "by", "from (share / interleaving)", "to"],
    changes.map((c) => [when(c.changed_at), c.source,
      flags(c.old_use_siglip, c.old_siglip_rollout_percentage, c.old_interleave_percentage),
      flags(c.new_use_siglip, c.new_siglip_rollout_percentage, c.new_interleave_percentage)]),
  );
}

// The confirmation: a <dialog> naming the request; resolves true on "Apply".
function confirmChange(title, text, body) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-body").textContent = body;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

function flagsMessage(text, error = false) {
  $("flags-message").textContent = text;
  $("flags-message").classList.toggle("error", error);
}

async function write(method, body, done) {
  const options = { method };
  if (body) {
    options.headers = { "Content-Type": "application/json" };
    options.body = JSON.stringify(body);
  }
  try {
    await call(`${API}/admin/rollout`, options);
  } catch (err) {
    if (err.status === 401) return;
    flagsMessage(err.status === 403 ? READ_KEY_ONLY : `Not changed: ${err.message}`, true);
    return;
  }
  await load();
  flagsMessage(done);
}

function describeBody(body) {
  const names = { use_siglip: "SigLIP for everyone", siglip_rollout_percentage: "SigLIP share",
    interleave_percentage: "interleaving" };
  return Object.entries(body).map(([k, v]) => `${names[k] || k}: ${typeof v === "boolean" ? onOff(v) : `${v}%`}`)
    .join(", ");
}

async function changeFlags(event) {
  event.preventDefault();
  if (!current) return;
  const r = current.report;
  const next = {
    use_siglip: $("flag-use-siglip").checked,
    siglip_rollout_percentage: Number($("flag-rollout").value),
    interleave_percentage: Number($("flag-interleave").value),
  };
  const body = {};
  for (const [k, v] of Object.entries(next)) if (v !== r[k]) body[k] = v;
  if (!Object.keys(body).length) {
    flagsMessage("Nothing to change: these are the live flags.");
    return;
  }
  if (next.siglip_rollout_percentage + next.interleave_percentage > 100) {
    flagsMessage("The SigLIP share and interleaving together may not exceed 100%.", true);
    return;
  }
  const from = Object.keys(body).map((k) => (typeof r[k] === "boolean" ? onOff(r[k]) : `${r[k]}%`));
  const ok = await confirmChange(
    "Change the rollout?",
    `Set ${describeBody(body)} (now ${from.join(", ")}). Every server process follows within seconds.`,
    `PUT /api/v1/admin/rollout\n${JSON.stringify(body, null, 2)}`,
  );
  if (!ok) {
    flagsMessage("Cancelled: nothing changed.");
    return;
  }
  await write("PUT", body, `Changed: ${describeBody(body)}.`);
}

async function applyRecommendation() {
  const rec = current && current.report.recommendation;
  if (!rec || !rec.apply) return;
  const ok = await confirmChange(
    `${rec.action === "roll back" ? "Roll back" : "Apply the recommendation"}?`,
    rec.text,
    `PUT /api/v1/admin/rollout\n${JSON.stringify(rec.apply, null, 2)}`,
  );
  if (!ok) {
    flagsMessage("Cancelled: nothing changed.");
    return;
  }
  await write("PUT", rec.apply, `Applied the recommendation: ${describeBody(rec.apply)}.`);
}

async function resetFlags() {
  const ok = await confirmChange(
    "Use the environment's flags?",
    "Forgets the stored flags: USE_SIGLIP, SIGLIP_ROLLOUT_PERCENTAGE and INTERLEAVE_PERCENTAGE " +
      "of each process apply again.",
    "DELETE /api/v1/admin/rollout",
  );
  if (!ok) {
    flagsMessage("Cancelled: nothing changed.");
    return;
  }
  await write("DELETE", null, "The environment's flags apply again.");
}

// -- coverage ---------------------------------------------------------------------------------
function renderCoverage(status, rollout, report) {
  const models = Object.keys((status && status.models) || (rollout && rollout.models) || {});
  table(
    "coverage",
    ["model", "collection", "exists", "points", "coverage", "may serve"],
    models.map((m) => {
      const s = status && status.models[m];
      const r = rollout && rollout.models[m];
      const ready = r ? (r.ready ? "yes" : `no: ${r.reason || r.reason_code || "not ready"}`) : "-";
      const coverage = s ? s.coverage : r ? r.coverage : null;
      return [m, (s || r).collection, (s || r).exists ? "yes" : "no", count((s || r).points),
        coverage === null ? "-" : pct(coverage), ready];
    }),
  );
  const candidate = rollout ? rollout.models[rollout.candidate] : null;
  const line = $("candidate-serves");
  line.classList.remove("ok", "error");
  if (!candidate) {
    line.textContent = "";
  } else if (candidate.ready) {
    line.textContent = `${report.candidate} may serve: its collection covers the library ` +
      `(${pct(candidate.coverage)}).`;
    line.classList.add("ok");
  } else {
    line.textContent = `${report.candidate} may not serve yet: ` +
      `${candidate.reason || "its collection does not cover the library"}. Its users get ` +
      `${report.baseline} (counted in the ${report.baseline} arm).`;
    line.classList.add("error");
  }
  $("coverage-section").hidden = models.length === 0;
}

// -- per arm and over time ---------------------------------------------------------------------
function renderArms(report) {
  const arms = ARMS.filter((a) => report.arms[a]);
  const ms = (v) => (v === null ? "-" : v.toFixed(0));
  table(
    "arms",
    ["arm", "searches", "CTR", "CTR@1", "CTR@5", "MRR", "zero results", "abandoned", "reformulated",
      "p50 ms", "p95 ms", "cold starts"],
    arms.map((a) => {
      const m = report.arms[a];
      return [a, count(m.searches), pct(m.ctr), pct(m.ctr_at_1), pct(m.ctr_at_5), num(m.mrr),
        pct(m.zero_result_rate), pct(m.abandonment_rate), pct(m.reformulation_rate),
        ms(m.latency_p50_ms), ms(m.latency_p95_ms), count(m.cold_starts)];
    }),
  );
  $("arms-section").hidden = false;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// A nice upper bound for the axis: counts round up to a whole number, rates and
// numbers to a step of the scale (at least 1% / 0.01 so an all-zero series has an axis).
function axisTop(kind, values) {
  const max = Math.max(0, ...values);
  if (kind === "count") return Math.max(1, Math.ceil(max));
  const floor = 0.01;
  if (max <= floor) return floor;
  const step = max > 0.2 ? 0.1 : max > 0.05 ? 0.05 : 0.01;
  return Math.min(kind === "rate" ? 1 : Infinity, Math.ceil(max / step) * step) || floor;
}

// One small chart per metric. With one day of data each arm is a labelled bar; with more,
// a line per arm with a dot per day and the last value written at its end.
function chart(days, rows, key, title, kind) {
  const box = el("figure", { className: "chart", dataset: { metric: key, kind } });
  box.appendChild(el("h3", {}, title));
  const W = 320, H = 170, L = 44, B = 22, T = 14, R = 44;
  const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  const arms = ARMS.filter((arm) => rows.some((r) => r.arm === arm));
  const values = rows.map((r) => r[key]);
  const top = axisTop(kind, values);
  const y = (v) => H - B - (v / top) * (H - B - T);
  const text = (t, attrs) => plot.appendChild(svg("text", { "font-size": 10, ...attrs }, t));
  // Axes and a mid grid line, with the scale written in the metric's own terms.
  plot.appendChild(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  plot.appendChild(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  plot.appendChild(svg("line", { x1: L, y1: y(top / 2), x2: W - R, y2: y(top / 2), class: "grid" }));
  text(format(kind, top), { x: L - 4, y: T + 4, "text-anchor": "end", class: "tick" });
  text(format(kind, top / 2), { x: L - 4, y: y(top / 2) + 3, "text-anchor": "end", class: "tick" });
  text(format(kind, 0), { x: L - 4, y: H - B + 3, "text-anchor": "end", class: "tick" });
  if (days.length === 1) {
    const slot = (W - L - R) / Math.max(arms.length, 1);
    const bar = Math.min(36, slot * 0.6);
    arms.forEach((arm, i) => {
      const row = rows.find((r) => r.arm === arm);
      const cx = L + slot * (i + 0.5);
      const rect = svg("rect", {
        x: cx - bar / 2, y: y(row[key]), width: bar, height: Math.max(1, H - B - y(row[key])),
        fill: COLOURS[arm], class: `series series-${arm}`,
      });
      plot.appendChild(rect);
      text(format(kind, row[key]), { x: cx, y: y(row[key]) - 3, "text-anchor": "middle", class: "value" });
    });
    text(days[0], { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", class: "tick" });
  } else if (days.length > 1) {
    const x = (i) => L + (i * (W - L - R)) / (days.length - 1);
    const ends = [];
    for (const arm of arms) {
      const points = [];
      days.forEach((day, i) => {
        const row = rows.find((r) => r.day === day && r.arm === arm);
        if (row) points.push([x(i), y(row[key]), row[key]]);
      });
      if (!points.length) continue;
      const group = svg("g", { class: `series series-${arm}` });
      if (points.length > 1) {
        group.appendChild(svg("polyline", {
          points: points.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" "),
          fill: "none", stroke: COLOURS[arm], "stroke-width": 2,
        }));
      }
      for (const [px, py] of points) group.appendChild(svg("circle", { cx: px, cy: py, r: 2.5, fill: COLOURS[arm] }));
      plot.appendChild(group);
      const [lx, ly, lv] = points[points.length - 1];
      ends.push({ x: lx + 4, y: ly + 3, label: format(kind, lv) });
    }
    // The last values, kept apart (one label for arms that end on the same value).
    ends.sort((a, b) => a.y - b.y);
    let prev = null;
    for (const end of ends) {
      if (prev && prev.label === end.label && end.y - prev.y < 10) continue;
      if (prev && end.y - prev.y < 10) end.y = prev.y + 10;
      text(end.label, { x: end.x, y: end.y, class: "value" });
      prev = end;
    }
    text(days[0].slice(5), { x: L, y: H - 6, class: "tick" });
    text(days[days.length - 1].slice(5), { x: W - R, y: H - 6, "text-anchor": "end", class: "tick" });
  } else {
    text("no searches in this period", { x: (L + W - R) / 2, y: H / 2, "text-anchor": "middle", class: "tick" });
  }
  const legend = el("div", { className: "legend" });
  for (const arm of arms) legend.appendChild(el("span", {}, el("span", { className: `swatch ${arm}` }), arm));
  box.append(plot, legend);
  return box;
}

function renderDaily(rows) {
  const days = [...new Set(rows.map((r) => r.day))].sort();
  $("charts").replaceChildren(...METRICS.map(([key, title, kind]) => chart(days, rows, key, title, kind)));
  $("charts-section").hidden = false;
}

// -- loading ------------------------------------------------------------------------------------
async function optional(promise) {
  try {
    return await promise;
  } catch (err) {
    if (err.status === 401 || err.status === 403) throw err;
    return null; // this part of the page is left out; the rest still shows
  }
}

async function load() {
  const mine = generation;
  $("status").textContent = "Loading the experiment...";
  $("status").classList.remove("error");
  try {
    const days = $("days").value;
    const [report, daily, rollout, history, status] = await Promise.all([
      get(`${API}/admin/experiment`),
      get(`${API}/admin/experiment/daily?days=${encodeURIComponent(days)}`),
      optional(get(`${API}/admin/rollout`)),
      optional(get(`${API}/admin/rollout/history?limit=20`)),
      optional(get(`${API}/admin/status`)),
    ]);
    if (mine !== generation) return;
    renderVerdict(report);
    renderEvidence(report);
    renderFlags(report, rollout);
    renderHistory(history || { changes: [] });
    renderCoverage(status, rollout, report);
    renderArms(report);
    renderDaily(daily);
    const searches = Object.values(report.arms).reduce((n, m) => n + m.searches, 0);
    $("status").textContent = searches
      ? `${count(searches)} recorded searches${report.since ? ` since ${when(report.since)}` : ""}.`
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
  current = null;
  for (const id of SECTIONS) $(id).hidden = true;
  if ($("confirm").open) $("confirm").close();
  $("status").classList.remove("error");
  $("status").textContent = "";
  flagsMessage("");
}

$("controls").addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});
$("days").addEventListener("change", load);
$("flags-form").addEventListener("submit", changeFlags);
$("flags-reset").addEventListener("click", resetFlags);
$("apply-recommendation").addEventListener("click", applyRecommendation);
Auth.start({ ready: load, signedOut });
