// The search page: plain JavaScript, no build step, every asset served by the app.
"use strict";

const API = "/api/v1";
const PAGE = 40;

const $ = (id) => document.getElementById(id);
const state = {
  mode: "browse", // browse | text | image | similar
  q: "",
  similar: null, // asset id
  file: null, // File for search by example
  offset: 0,
  done: false,
  loading: false,
  generation: 0, // bumps on every new search; stale answers are dropped
  results: [],
  answer: null, // the last search response (model, collection, fallback_reason, search_id)
};

// -- API helpers ---------------------------------------------------------------------------
// Same-origin fetches: the session cookie goes along (see auth.js); no key is sent or kept.
class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.kind = (body && body.error) || "";
  }
}

async function api(path, options = {}) {
  const response = await Auth.request(path, options); // a 401 shows the sign-in form
  let body = null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("application/json")) body = await response.json();
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// -- the anonymous user id (X-User-Id) --------------------------------------------------
// A random id kept in this browser (IndexedDB, database "image-search"; it is not a
// secret and names no one), sent with every search so one person's searches land in
// one arm of the rollout experiment and their reformulations are recognised.
// "New anonymous id" replaces it. (Not localStorage: the page keeps web storage empty.)
const USER_DB = "image-search";
const USER_STORE = "anonymous";
const USER_KEY = "user-id";
let userIdPromise = null;

function newUserId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; // version 4
  b[8] = (b[8] & 0x3f) | 0x80; // variant
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// One transaction on the id: `replace` writes a new one, otherwise the stored one is
// read (and a new one stored when there is none). Resolves to the id.
function storeUserId(replace) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(USER_DB, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(USER_STORE);
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const db = open.result;
      const tx = db.transaction(USER_STORE, "readwrite");
      const store = tx.objectStore(USER_STORE);
      let id = null;
      const write = () => {
        id = newUserId();
        store.put(id, USER_KEY);
      };
      if (replace) write();
      else store.get(USER_KEY).onsuccess = (event) => {
        if (typeof event.target.result === "string" && event.target.result) id = event.target.result;
        else write();
      };
      tx.oncomplete = () => { db.close(); resolve(id); };
      tx.onerror = tx.onabort = () => { db.close(); reject(tx.error); };
    };
  });
}

// The id, read once per page; where the browser keeps no storage (blocked, or some
// private modes) an id for this page only.
function userId() {
  if (!userIdPromise) userIdPromise = storeUserId(false).catch(() => newUserId());
  return userIdPromise;
}

function resetUserId() {
  userIdPromise = storeUserId(true).catch(() => newUserId());
  return userIdPromise;
}
window.userId = userId;

// The options of a search request: the user id travels as a header.
async function searchOptions(options = {}) {
  const id = await userId();
  return { ...options, headers: { ...(options.headers || {}), "X-User-Id": id } };
}

// -- click evidence (hook for POST /api/v1/events) ------------------------------------------
// Reports a result interaction, but only when the search response carried a `search_id`
// (servers without the events endpoint never send one, so nothing is sent to them).
function reportEvent(searchId, assetId, type, rank) {
  if (!searchId || !navigator.sendBeacon) return false;
  const body = JSON.stringify({ search_id: searchId, asset_id: assetId, type, rank });
  return navigator.sendBeacon(`${API}/events`, new Blob([body], { type: "application/json" }));
}
window.reportEvent = reportEvent;

// -- filters and URL ----------------------------------------------------------------------
function nextDay(value) {
  const d = new Date(`${value}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + 1);
  return d.toISOString().slice(0, 10);
}

function names(id) {
  return $(id).value.split(",").map((s) => s.trim()).filter(Boolean).join(",");
}

function filterParams() {
  const params = {};
  if ($("taken-after").value) params.taken_after = $("taken-after").value;
  // "Taken before" a day includes that day.
  if ($("taken-before").value) params.taken_before = nextDay($("taken-before").value);
  if ($("format").value) params.format = $("format").value;
  // Everyone listed must be in the photo (and every tag on it): the API's people / tags.
  if (names("people")) params.people = names("people");
  if (names("tags")) params.tags = names("tags");
  return params;
}

function syncUrl() {
  const url = new URLSearchParams();
  if (state.mode === "text") url.set("q", state.q);
  if (state.mode === "similar") url.set("similar", state.similar);
  if ($("taken-after").value) url.set("after", $("taken-after").value);
  if ($("taken-before").value) url.set("before", $("taken-before").value);
  if ($("format").value) url.set("format", $("format").value);
  if (names("people")) url.set("people", names("people"));
  if (names("tags")) url.set("tags", names("tags"));
  const query = url.toString();
  const target = query ? `/?${query}` : "/";
  if (target !== location.pathname + location.search) history.pushState(null, "", target);
  document.title = state.mode === "text" ? `${state.q} - Photo search` : "Photo search";
}

function readUrl() {
  const url = new URLSearchParams(location.search);
  $("taken-after").value = url.get("after") || "";
  $("taken-before").value = url.get("before") || "";
  $("format").value = (url.get("format") || "").toUpperCase();
  $("people").value = url.get("people") || "";
  $("tags").value = url.get("tags") || "";
  if (["after", "before", "format", "people", "tags"].some((k) => url.get(k))) $("filters").open = true;
  const q = (url.get("q") || "").trim();
  const similar = url.get("similar");
  $("q").value = q;
  if (q) return { mode: "text", q };
  if (similar) return { mode: "similar", similar };
  return { mode: "browse" };
}

// -- searching ----------------------------------------------------------------------------
function setStatus(text, { error = false, hint = "" } = {}) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", error);
  if (hint) {
    const span = document.createElement("span");
    span.className = "hint";
    span.textContent = hint;
    el.appendChild(span);
  }
}

function start(next, { push = true } = {}) {
  state.mode = next.mode;
  state.q = next.q || "";
  state.similar = next.similar || null;
  state.file = next.file || null;
  state.offset = 0;
  state.done = false;
  state.loading = false;
  state.results = [];
  state.answer = null;
  state.generation += 1;
  $("grid").replaceChildren();
  $("more").hidden = true;
  showExample();
  if (push) syncUrl();
  loadMore();
}

function query(params) {
  const url = new URLSearchParams({ limit: PAGE, offset: state.offset, ...params });
  return url.toString();
}

async function fetchPage() {
  const filters = filterParams();
  if (state.mode === "text") {
    return api(`${API}/search?${query({ q: state.q, ...filters })}`, await searchOptions());
  }
  if (state.mode === "similar") {
    return api(`${API}/search/similar/${encodeURIComponent(state.similar)}?${query(filters)}`,
      await searchOptions());
  }
  if (state.mode === "image") {
    const form = new FormData();
    form.append("file", state.file);
    const fields = { limit: PAGE, offset: state.offset, ...filters };
    for (const [name, value] of Object.entries(fields)) form.append(name, value);
    return api(`${API}/search/image`, await searchOptions({ method: "POST", body: form }));
  }
  const page = await api(`${API}/assets?${query({})}`);
  return {
    browse: true,
    total: page.total,
    results: page.items.map((a) => ({ ...a, asset_id: a.id, score: null })),
  };
}

async function loadMore() {
  if (state.loading || state.done) return;
  state.loading = true;
  const generation = state.generation;
  if (!state.results.length) setStatus(state.mode === "browse" ? "Loading the library..." : "Searching...");
  try {
    const answer = await fetchPage();
    if (generation !== state.generation) return;
    state.answer = answer;
    const start = state.results.length;
    // Each result remembers the search that returned it and its 1-based rank there:
    // events name that search (a later page is another search with its own id).
    answer.results.forEach((hit, i) => {
      hit.searchId = answer.search_id;
      hit.rank = i + 1;
    });
    state.results.push(...answer.results);
    state.offset += answer.results.length;
    state.done = answer.results.length < PAGE;
    answer.results.forEach((hit, i) => $("grid").appendChild(tile(hit, start + i)));
    describe(answer);
  } catch (err) {
    if (generation !== state.generation) return;
    state.done = true;
    showError(err);
  } finally {
    if (generation === state.generation) {
      state.loading = false;
      $("more").hidden = state.done;
    }
  }
}

function describe(answer) {
  const count = state.results.length;
  if (answer.browse) {
    if (answer.total === 0) {
      setStatus("Nothing indexed yet.", {
        hint: "Index a folder (image-search index ~/Pictures, or LIBRARY_PATHS when serving), " +
          "or upload photos with the Upload button.",
      });
    } else {
      setStatus(`${answer.total} photo${answer.total === 1 ? "" : "s"} in the library. ` +
        "Describe what you are looking for, or drop a photo to find similar ones.");
    }
    return;
  }
  if (count === 0) {
    setStatus("No photos match.", {
      hint: hasFilters() ? "Try clearing the filters or other words."
        : "Try other words, or check that the library has been indexed.",
    });
    return;
  }
  let text = `${count}${state.done ? "" : "+"} result${count === 1 ? "" : "s"}, answered by ${answer.model}`;
  if (answer.took_ms !== undefined) text += ` in ${Math.round(answer.took_ms)} ms`;
  setStatus(text, { hint: answer.fallback_reason ? `Fallback: ${answer.fallback_reason}` : "" });
}

function hasFilters() {
  return Boolean(
    $("taken-after").value || $("taken-before").value || $("format").value || names("people") || names("tags"),
  );
}

function showError(err) {
  if (err instanceof ApiError) {
    if (err.kind === "CollectionMissing") {
      setStatus("Nothing indexed yet.", {
        hint: "Index a folder (image-search index ~/Pictures, or LIBRARY_PATHS when serving), " +
          "or upload photos with the Upload button.",
      });
      return;
    }
    const hint = err.status === 503 ? "The server is starting or a store is down; try again shortly."
      : err.status === 404 && state.mode === "similar" ? "That photo is no longer in the library." : "";
    setStatus(`Error: ${err.message}`, { error: true, hint });
  } else {
    setStatus("The server cannot be reached.", { error: true, hint: String(err.message || err) });
  }
}

// Where a photo loads from: the URLs the API handed out with the result (signed and
// short-lived when the server needs credentials), or the plain paths of older servers.
function photoUrl(hit, kind) {
  if (hit.urls && hit.urls[kind]) return hit.urls[kind];
  const id = encodeURIComponent(hit.asset_id);
  if (kind === "file") return `${API}/assets/${id}/file`;
  return `${API}/assets/${id}/thumbnail?size=${kind === "preview" ? 512 : 256}`;
}

// A signed URL that has expired (a page left open for hours) answers 403: ask for the
// asset again, which brings fresh URLs, and retry once.
function reloadOnce(img, hit, kind) {
  img.addEventListener("error", async () => {
    if (!hit.urls) return;
    try {
      const asset = await api(`${API}/assets/${encodeURIComponent(hit.asset_id)}`);
      if (asset.urls && asset.urls[kind] !== img.getAttribute("src")) {
        hit.urls = asset.urls;
        img.src = asset.urls[kind];
      }
    } catch (err) {
      // gone, or signed out: the tile stays empty
    }
  }, { once: true });
}

function baseName(path) {
  return String(path || "").split(/[\\/]/).pop();
}

function tile(hit, index) {
  const li = document.createElement("li");
  li.className = "tile";
  li.dataset.assetId = hit.asset_id;
  const open = document.createElement("button");
  open.type = "button";
  open.className = "open";
  open.setAttribute("aria-label", `Open ${baseName(hit.path)}`);
  const img = document.createElement("img");
  img.loading = "lazy";
  img.decoding = "async";
  img.alt = baseName(hit.path);
  reloadOnce(img, hit, "thumbnail");
  img.src = photoUrl(hit, "thumbnail");
  open.appendChild(img);
  open.addEventListener("click", () => openViewer(index));
  li.appendChild(open);
  if (hit.score !== null && hit.score !== undefined) {
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(2);
    score.title = "cosine similarity";
    li.appendChild(score);
  }
  const similar = document.createElement("button");
  similar.type = "button";
  similar.className = "similar";
  similar.textContent = "More like this";
  similar.setAttribute("aria-label", `More like ${baseName(hit.path)}`);
  similar.addEventListener("click", () => moreLikeThis(hit.asset_id, index));
  li.appendChild(similar);
  return li;
}

function moreLikeThis(assetId, index) {
  const hit = state.results[index];
  if (hit) reportEvent(hit.searchId, assetId, "more_like_this", hit.rank);
  if ($("viewer").open) $("viewer").close();
  $("q").value = "";
  start({ mode: "similar", similar: assetId });
  window.scrollTo({ top: 0 });
}

// -- search by example ---------------------------------------------------------------------
function searchByExample(file) {
  if (!file) return;
  if (!/^image\//.test(file.type)) {
    setStatus(`${file.name} is not an image.`, { error: true });
    return;
  }
  $("q").value = "";
  start({ mode: "image", file });
}

function showExample() {
  const box = $("example");
  if (state.mode !== "image" || !state.file) {
    box.hidden = true;
    return;
  }
  const preview = $("example-preview");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(state.file);
  $("example-label").textContent = `Photos like ${state.file.name}`;
  box.hidden = false;
}

// -- the viewer ---------------------------------------------------------------------------
let viewerIndex = -1;

function fact(list, name, value) {
  if (value === null || value === undefined || value === "") return;
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = value;
  list.append(dt, dd);
}

function formatDate(value) {
  if (!value) return "unknown";
  const d = new Date(value.endsWith("Z") || /[+-]\d\d:\d\d$/.test(value) ? value : `${value}Z`);
  return Number.isNaN(d.getTime()) ? value : d.toLocaleString(undefined, { timeZone: "UTC" });
}

async function openViewer(index) {
  const hit = state.results[index];
  if (!hit) return;
  viewerIndex = index;
  reportEvent(hit.searchId, hit.asset_id, "click", hit.rank);
  const dialog = $("viewer");
  $("viewer-image").src = photoUrl(hit, "preview");
  $("viewer-image").alt = baseName(hit.path);
  $("viewer-title").textContent = baseName(hit.path);
  $("viewer-original").href = photoUrl(hit, "file");
  $("viewer-prev").disabled = index === 0;
  $("viewer-next").disabled = index >= state.results.length - 1 && state.done;
  renderFacts(hit, null);
  if (!dialog.open) dialog.showModal();
  try {
    const asset = await api(`${API}/assets/${encodeURIComponent(hit.asset_id)}`);
    if (viewerIndex === index) {
      renderFacts(hit, asset);
      if (asset.urls) $("viewer-original").href = asset.urls.file; // freshly signed
    }
  } catch (err) {
    if (viewerIndex === index) fact($("viewer-facts"), "Error", err.message);
  }
}

function renderFacts(hit, asset) {
  const list = $("viewer-facts");
  list.replaceChildren();
  const info = asset || hit;
  fact(list, "Taken", formatDate(info.taken_at));
  fact(list, "Path", info.path);
  if (info.width && info.height) fact(list, "Size", `${info.width} x ${info.height}`);
  fact(list, "Format", info.format);
  if (info.people && info.people.length) fact(list, "People", info.people.map((p) => p.name).join(", "));
  if (info.tags && info.tags.length) fact(list, "Tags", info.tags.join(", "));
  if (info.caption) fact(list, "Caption", info.caption);
  if (asset && asset.camera_model) fact(list, "Camera", `${asset.camera_make || ""} ${asset.camera_model}`.trim());
  const answer = state.answer;
  if (answer && !answer.browse) {
    if (hit.score !== null && hit.score !== undefined) fact(list, "Score", hit.score.toFixed(4));
    fact(list, "Answered by", `${answer.model} (collection ${answer.collection})`);
    fact(list, "Fallback", answer.fallback_reason || "none: the routed model answered");
  }
}

async function stepViewer(delta) {
  const next = viewerIndex + delta;
  if (next < 0) return;
  if (next >= state.results.length && !state.done) await loadMore();
  if (next < state.results.length) openViewer(next);
}

// -- uploads ------------------------------------------------------------------------------
async function upload(files) {
  const list = Array.from(files);
  let added = 0;
  for (const [i, file] of list.entries()) {
    setStatus(`Uploading ${i + 1} of ${list.length}: ${file.name}...`);
    try {
      const form = new FormData();
      form.append("file", file);
      await api(`${API}/assets`, { method: "POST", body: form });
      added += 1;
    } catch (err) {
      const hint = err.status === 403 ? "Uploads need the admin key (API_KEY); sign out and sign in with it." : "";
      setStatus(`Upload of ${file.name} failed: ${err.message}`, { error: true, hint });
      return;
    }
  }
  setStatus(`Uploaded ${added} photo${added === 1 ? "" : "s"}.`);
  if (state.mode === "browse") start({ mode: "browse" }, { push: false });
}

// -- indexing progress (GET /api/v1/admin/index) ------------------------------------------
let indexTimer = null;

async function pollIndex() {
  const el = $("index-status");
  try {
    const status = await api(`${API}/admin/index`);
    const lines = [];
    if (status.current) {
      const run = status.current;
      lines.push(run.total === null ? `Scanning ${run.path}...`
        : `Indexing ${run.path}: ${run.done} of ${run.total} photos`);
    }
    if (status.queued && status.queued.length) lines.push(`${status.queued.length} more waiting`);
    for (const problem of status.problems || []) lines.push(problem);
    el.textContent = lines.join(" \u00b7 ");
    el.hidden = lines.length === 0;
    indexTimer = setTimeout(pollIndex, status.current ? 2000 : 10000);
  } catch (err) {
    el.hidden = true; // no such endpoint, or it needs the admin key (a read key is 403)
  }
}

// -- signed in, signed out -----------------------------------------------------------------
function signedIn(session) {
  // A read key may search but not upload: the button would only lead to a 403.
  $("upload-label").hidden = Boolean(session.required && session.scope === "read");
  clearTimeout(indexTimer);
  start(readUrl(), { push: false });
  pollIndex();
}

// Nothing of the library stays on the page once signed out (or the session ended).
function signedOut() {
  state.generation += 1; // answers still on their way are dropped
  state.loading = false;
  state.done = true;
  state.results = [];
  state.answer = null;
  $("grid").replaceChildren();
  $("more").hidden = true;
  $("example").hidden = true;
  setStatus("");
  clearTimeout(indexTimer);
  $("index-status").hidden = true;
}

// -- wiring -------------------------------------------------------------------------------
function init() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const q = $("q").value.trim();
    start(q ? { mode: "text", q } : { mode: "browse" });
  });
  $("example-file").addEventListener("change", (event) => {
    searchByExample(event.target.files[0]);
    event.target.value = "";
  });
  $("upload-file").addEventListener("change", (event) => {
    if (event.target.files.length) upload(event.target.files);
    event.target.value = "";
  });
  $("example-clear").addEventListener("click", () => start({ mode: "browse" }));
  for (const id of ["taken-after", "taken-before", "format", "people", "tags"]) {
    $(id).addEventListener("change", () => rerun());
  }
  $("clear-filters").addEventListener("click", () => {
    $("taken-after").value = "";
    $("taken-before").value = "";
    $("format").value = "";
    $("people").value = "";
    $("tags").value = "";
    rerun();
  });
  $("more").addEventListener("click", () => loadMore());
  $("reset-user-id").addEventListener("click", async () => {
    await resetUserId();
    $("user-id-note").textContent = "New anonymous id: your next searches count as a new visitor.";
  });
  $("viewer-prev").addEventListener("click", () => stepViewer(-1));
  $("viewer-next").addEventListener("click", () => stepViewer(1));
  $("viewer-similar").addEventListener("click", () => {
    const hit = state.results[viewerIndex];
    if (hit) moreLikeThis(hit.asset_id, viewerIndex);
  });
  $("viewer").addEventListener("keydown", (event) => {
    if (event.key === "ArrowLeft") stepViewer(-1);
    if (event.key === "ArrowRight") stepViewer(1);
  });
  document.addEventListener("keydown", (event) => {
    const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement.tagName);
    if (event.key === "/" && !typing && !$("viewer").open) {
      event.preventDefault();
      $("q").focus();
    }
  });
  // Drop a photo anywhere: search by example.
  let depth = 0;
  document.addEventListener("dragenter", (event) => {
    if (!Array.from(event.dataTransfer.types).includes("Files")) return;
    depth += 1;
    $("dropzone").hidden = false;
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) $("dropzone").hidden = true;
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    $("dropzone").hidden = true;
    const file = event.dataTransfer.files[0];
    if (file) searchByExample(file);
  });
  window.addEventListener("popstate", () => start(readUrl(), { push: false }));
  if ("IntersectionObserver" in window) {
    new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting) && state.results.length) loadMore();
    }, { rootMargin: "600px" }).observe($("sentinel"));
  }
  Auth.start({ ready: signedIn, signedOut });
}

function rerun() {
  if (state.mode === "image") start({ mode: "image", file: state.file });
  else start({ mode: state.mode, q: state.q, similar: state.similar });
}

document.addEventListener("DOMContentLoaded", init);
