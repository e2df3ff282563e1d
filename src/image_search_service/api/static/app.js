// The search page: plain JavaScript, no build step, every asset served by the app.
"use strict";

const API = "/api/v1";
const PAGE = 40;

const $ = (id) => document.getElementById(id);
const state = {
  mode: "browse", // browse | text | image | similar
  q: "",
  similar: null, // asset id
  reference: null, // the result "More like this" started from (for its chip), when known
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

// -- errors in plain words ------------------------------------------------------------------
// The API's errors are {"error": "<Name>", "detail": "..."}; a rejected parameter is
// "field: message" (pydantic's words). People see a sentence about what they did instead.
const FORMATS = "JPEG, PNG, WebP, HEIC, GIF, TIFF or AVIF";
const FIELDS = {
  q: "That search",
  taken_after: "The \u201ctaken after\u201d date",
  taken_before: "The \u201ctaken before\u201d date",
  format: "The format",
  people: "The people filter",
  tags: "The tags filter",
};
const PHOTO_ID_FIELDS = new Set(["asset_id", "id", "similar"]);

function invalidRequest(detail) {
  for (const part of String(detail).split("; ")) {
    const match = /^([\w.]+): (.*)$/.exec(part);
    if (!match) continue;
    const [, field, message] = match;
    if (PHOTO_ID_FIELDS.has(field)) return { text: "That photo was not found in the library." };
    const name = FIELDS[field];
    if (!name) continue;
    const most = /at most (\d+) (character|item)/.exec(message);
    if (most && most[2] === "character") return { text: `${name} is too long (${most[1]} characters at most).` };
    if (most) return { text: `${name} lists too many names (${most[1]} at most).` };
    if (field === "q" && /at least 1 character/.test(message)) return { text: "Type something to search for." };
    if (field.startsWith("taken_")) return { text: `${name} is not a date.` };
    return { text: `${name} is not valid.` };
  }
  return { text: "The search could not be run as asked.", hint: "Check the search and its filters." };
}

// {text, hint} for any failure of api(): never the raw validation text.
function friendlyError(err) {
  if (!(err instanceof ApiError)) {
    return { text: "The server cannot be reached.", hint: "Check that it is running, then try again." };
  }
  switch (err.kind) {
    case "InvalidRequest":
      return invalidRequest(err.message);
    case "AssetNotFound":
      return { text: "That photo was not found in the library.", hint: "It may have been deleted or moved." };
    case "UnsupportedImage":
    case "UnsupportedMediaType":
      return { text: "That file is not a photo the library can read.", hint: `Use a ${FORMATS} file.` };
    case "ImageShapeRefused":
      return { text: "That picture is too small or too narrow to search with." };
    case "ImageTooLarge":
    case "RequestTooLarge":
      return { text: "That photo is too large.", hint: "Try a smaller copy of it." };
    case "ModelLoadError":
      return { text: "The search model could not be loaded.", hint: modelError() || "The server's log says why." };
    case "ModelMismatch":
      return { text: "The library was indexed with another model than this server uses.", hint: err.message };
    default:
  }
  if (err.status === 403) return { text: "This key may not do that.", hint: "Sign out and sign in with the admin key." };
  if (err.status === 429) return { text: "Too many requests at once.", hint: "Wait a moment and try again." };
  if (err.status === 503) return { text: "The server is starting or a store is down.", hint: "Try again in a moment." };
  if (err.status === 404) return { text: "Not found." };
  return { text: "Something went wrong on the server.", hint: "Try again; if it keeps failing, the server's log says why." };
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
  if (similar && !q) return { mode: "similar", similar }; // the box keeps its words
  $("q").value = q;
  if (q) return { mode: "text", q };
  return { mode: "browse" };
}

// -- what the server is (GET /api/v1/about) -----------------------------------------------
// Whether this is the demo library, and each model's state: right after `serve` starts it
// warms the models in the background, and a search meanwhile waits for that. Older servers
// have no /about: then nothing is said.
const about = { demo: false, note: "", models: [], noteDismissed: false };
let aboutTimer = null;

async function refreshAbout() {
  clearTimeout(aboutTimer);
  let answer = null;
  try {
    answer = await api(`${API}/about`);
  } catch (err) {
    return; // 404 from an older server, or signed out meanwhile
  }
  about.demo = Boolean(answer && answer.demo);
  about.note = (answer && answer.demo_note) || "";
  about.models = (answer && Array.isArray(answer.models)) ? answer.models : [];
  showDemoNote();
  if (modelLoading()) aboutTimer = setTimeout(refreshAbout, 1000);
  // A search waiting for its model says so (and stops saying so once it is ready).
  if (state.loading && !state.results.length && state.mode !== "browse") setStatus(searchingText(), { state: "loading" });
}

function modelLoading() {
  return about.models.some((m) => m.state === "loading");
}

function modelError() {
  const failed = about.models.find((m) => m.state === "failed" && m.error);
  return failed ? failed.error : "";
}

function searchingText() {
  return modelLoading() ? "Loading the search model..." : "Searching...";
}

function showDemoNote() {
  $("demo-note-text").textContent = about.note || "This is the demo library.";
  $("demo-note").hidden = !about.demo || about.noteDismissed;
}

// -- searching ----------------------------------------------------------------------------
// The status line says what the grid shows, in words; `data-state` (loading, answered,
// empty, error) says where the search is, for tests and assistive tools alike.
function setStatus(text, { error = false, hint = "", state: phase = "" } = {}) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", error);
  el.dataset.state = phase || (error ? "error" : "");
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
  state.reference = next.reference || null;
  state.file = next.file || null;
  state.offset = 0;
  state.done = false;
  state.loading = false;
  state.results = [];
  state.answer = null;
  state.generation += 1;
  $("grid").replaceChildren();
  $("more").hidden = true;
  showReference();
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

// Whether a page is the last: the browse total, the search's own word (`has_more`, and no
// more after "the nearest few"), or else a short page.
function lastPage(answer) {
  if (answer.browse) return state.offset >= answer.total;
  if (answer.close_matches === false) return true;
  if (typeof answer.has_more === "boolean") return !answer.has_more;
  return answer.results.length < PAGE;
}

async function loadMore() {
  if (state.loading || state.done) return;
  state.loading = true;
  const generation = state.generation;
  $("grid").setAttribute("aria-busy", "true");
  if (!state.results.length) {
    setStatus(state.mode === "browse" ? "Loading the library..." : searchingText(), { state: "loading" });
  }
  try {
    const answer = await fetchPage();
    if (generation !== state.generation) return;
    state.answer = answer;
    const first = state.results.length;
    // Each result remembers the search that returned it and its 1-based rank there:
    // events name that search (a later page is another search with its own id).
    answer.results.forEach((hit, i) => {
      hit.searchId = answer.search_id;
      hit.rank = i + 1;
    });
    state.results.push(...answer.results);
    state.offset += answer.results.length;
    state.done = answer.results.length === 0 || lastPage(answer);
    $("grid").append(...answer.results.map((hit, i) => tile(hit, first + i)));
    if (modelLoading()) refreshAbout(); // it answered: the model is ready now
    describe(answer);
  } catch (err) {
    if (generation !== state.generation) return;
    state.done = true;
    showError(err);
  } finally {
    if (generation === state.generation) {
      state.loading = false;
      $("grid").removeAttribute("aria-busy");
      $("more").hidden = state.done;
    }
  }
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

const NOTHING_INDEXED = "Index a folder (image-search index ~/Pictures, or LIBRARY_PATHS when serving), " +
  "or upload photos with the Upload button.";

function describe(answer) {
  const count = state.results.length;
  if (answer.browse) {
    if (answer.total === 0) setStatus("Nothing indexed yet.", { hint: NOTHING_INDEXED, state: "empty" });
    else setStatus(plural(answer.total, "photo"), { state: "answered" });
    return;
  }
  if (count === 0) {
    setStatus("No photos match.", {
      state: "empty",
      hint: hasFilters() ? "Try clearing the filters or other words."
        : "Try other words, or check that the library has been indexed.",
    });
    return;
  }
  // Nothing scored above the model's relevance floor: the best of the rest, said as such.
  if (answer.close_matches === false) {
    const what = state.mode === "text" ? ` for \u201c${state.q}\u201d` : "";
    setStatus(`No close matches${what} \u2013 the nearest few:`, { state: "answered" });
    return;
  }
  setStatus(`${count}${state.done ? "" : "+"} photo${count === 1 ? "" : "s"}`, { state: "answered" });
}

function hasFilters() {
  return Boolean(
    $("taken-after").value || $("taken-before").value || $("format").value || names("people") || names("tags"),
  );
}

function showError(err) {
  if (err instanceof ApiError && err.kind === "CollectionMissing") {
    setStatus("Nothing indexed yet.", { hint: NOTHING_INDEXED, state: "empty" });
    return;
  }
  const { text, hint = "" } = friendlyError(err);
  setStatus(text, { error: true, hint });
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
// asset again, which brings fresh URLs, and retry once. `failed` runs when there is
// nothing better to show.
function reloadOnce(img, hit, kind, failed = () => {}) {
  let retried = false;
  img.addEventListener("error", async () => {
    if (retried || !hit.urls) {
      failed();
      return;
    }
    retried = true;
    try {
      const asset = await api(`${API}/assets/${encodeURIComponent(hit.asset_id)}`);
      if (asset.urls && asset.urls[kind] !== img.getAttribute("src")) {
        hit.urls = asset.urls;
        img.src = asset.urls[kind];
        return;
      }
    } catch (err) {
      // gone, or signed out
    }
    failed();
  });
}

function baseName(path) {
  return String(path || "").split(/[\\/]/).pop();
}

// What a photo is called for people: its title, else its file name.
function photoName(hit) {
  return hit.title || baseName(hit.path);
}

function tile(hit, index) {
  const li = document.createElement("li");
  li.className = "tile";
  li.dataset.assetId = hit.asset_id;
  const name = photoName(hit);
  const open = document.createElement("button");
  open.type = "button";
  open.className = "open";
  open.setAttribute("aria-label", `Open ${name}`);
  const img = document.createElement("img");
  img.loading = "lazy";
  img.decoding = "async";
  img.alt = hit.caption || name;
  img.draggable = false;
  img.addEventListener("load", () => li.classList.add("loaded"));
  reloadOnce(img, hit, "thumbnail", () => li.classList.add("broken"));
  img.src = photoUrl(hit, "thumbnail");
  open.appendChild(img);
  open.addEventListener("click", () => {
    if (li.dataset.pressed) {
      delete li.dataset.pressed; // the end of a long press shows the actions, opens nothing
      return;
    }
    openViewer(index);
  });
  li.appendChild(open);
  const similar = document.createElement("button");
  similar.type = "button";
  similar.className = "similar";
  similar.append("More like this");
  const which = document.createElement("span");
  which.className = "visually-hidden";
  which.textContent = `: ${name}`;
  similar.appendChild(which);
  similar.addEventListener("click", () => moreLikeThis(index));
  li.appendChild(similar);
  longPress(li);
  return li;
}

// Touch has no hover: a long press on a tile shows its actions (a tap elsewhere hides them).
const LONG_PRESS_MS = 500;

function longPress(li) {
  let timer = null;
  let origin = null;
  const cancel = () => {
    clearTimeout(timer);
    origin = null;
  };
  li.addEventListener("pointerdown", (event) => {
    if (event.pointerType !== "touch") return;
    origin = { x: event.clientX, y: event.clientY };
    clearTimeout(timer);
    timer = setTimeout(() => {
      showActions(li);
      li.dataset.pressed = "1";
    }, LONG_PRESS_MS);
  });
  li.addEventListener("pointermove", (event) => {
    if (origin && Math.hypot(event.clientX - origin.x, event.clientY - origin.y) > 10) cancel();
  });
  li.addEventListener("pointerup", cancel);
  li.addEventListener("pointercancel", cancel);
  // The browser's own long-press menu (save image...) would cover the actions.
  li.addEventListener("contextmenu", (event) => {
    if (li.dataset.pressed) event.preventDefault();
  });
}

function showActions(li) {
  for (const other of document.querySelectorAll("#grid .tile.actions")) other.classList.remove("actions");
  if (li) li.classList.add("actions");
}

function moreLikeThis(index) {
  const hit = state.results[index];
  if (!hit) return;
  reportEvent(hit.searchId, hit.asset_id, "more_like_this", hit.rank);
  if ($("viewer").open) $("viewer").close();
  // The search box keeps its words: the chip says what the results are like, and its
  // "x" (or Back) returns to them.
  start({ mode: "similar", similar: hit.asset_id, reference: hit });
  window.scrollTo({ top: 0 });
}

// -- what a search is by: an example photo, or a result ------------------------------------
function searchByExample(file) {
  if (!file) return;
  if (!/^image\//.test(file.type)) {
    setStatus(`${file.name} is not a photo.`, { error: true, hint: `Use a ${FORMATS} file.` });
    return;
  }
  start({ mode: "image", file });
}

function showReference() {
  const box = $("example");
  const preview = $("example-preview");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  if (state.mode === "image" && state.file) {
    preview.src = URL.createObjectURL(state.file);
    $("example-label").textContent = `Photos like ${state.file.name}`;
    $("example-clear").setAttribute("aria-label", "Stop searching by this photo");
    box.hidden = false;
  } else if (state.mode === "similar") {
    const generation = state.generation;
    const shown = (hit) => {
      preview.src = photoUrl(hit, "thumbnail");
      $("example-label").textContent = `Photos like ${photoName(hit)}`;
    };
    $("example-clear").setAttribute("aria-label", "Stop showing photos like this one");
    preview.removeAttribute("src");
    $("example-label").textContent = "Photos like this one";
    box.hidden = false;
    if (state.reference) shown(state.reference);
    else {
      // Opened from a link (?similar=ID): the photo's own record names it.
      api(`${API}/assets/${encodeURIComponent(state.similar)}`).then((asset) => {
        if (generation === state.generation) shown({ ...asset, asset_id: asset.id });
      }, () => {}); // not found: the search itself says so
    }
  } else {
    box.hidden = true;
    preview.removeAttribute("src");
  }
}

// Back to what was shown before the chip: the words in the box, or the library.
function clearReference() {
  const q = $("q").value.trim();
  start(q ? { mode: "text", q } : { mode: "browse" });
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
  $("viewer-image").alt = hit.caption || photoName(hit);
  $("viewer-title").textContent = photoName(hit);
  $("viewer-original").href = photoUrl(hit, "file");
  $("viewer-prev").disabled = index === 0;
  $("viewer-next").disabled = index >= state.results.length - 1 && state.done;
  renderFacts(hit, null);
  renderDetails(hit);
  if (!dialog.open) dialog.showModal();
  try {
    const asset = await api(`${API}/assets/${encodeURIComponent(hit.asset_id)}`);
    if (viewerIndex === index) {
      renderFacts(hit, asset);
      if (asset.urls) $("viewer-original").href = asset.urls.file; // freshly signed
    }
  } catch (err) {
    if (viewerIndex === index) fact($("viewer-facts"), "Note", friendlyError(err).text);
  }
}

function renderFacts(hit, asset) {
  const list = $("viewer-facts");
  list.replaceChildren();
  const info = asset || hit;
  fact(list, "Taken", formatDate(info.taken_at));
  if (info.caption) fact(list, "Caption", info.caption);
  if (info.people && info.people.length) fact(list, "People", info.people.map((p) => p.name).join(", "));
  if (info.tags && info.tags.length) fact(list, "Tags", info.tags.join(", "));
  fact(list, "File", info.path);
  if (info.width && info.height) fact(list, "Size", `${info.width} \u00d7 ${info.height}`);
  fact(list, "Format", info.format);
  if (asset && asset.camera_model) fact(list, "Camera", `${asset.camera_make || ""} ${asset.camera_model}`.trim());
}

// For operators: which model answered, the score and the floor it was held to. Collapsed.
function renderDetails(hit) {
  const answer = state.answer;
  const box = $("viewer-details");
  const list = $("viewer-debug");
  list.replaceChildren();
  box.hidden = !answer || answer.browse;
  if (box.hidden) return;
  const model = answer.model === "interleaved" ? `${hit.model || "?"} (interleaved)` : answer.model;
  fact(list, "Model", model);
  if (hit.score !== null && hit.score !== undefined) fact(list, "Score", hit.score.toFixed(4));
  if (answer.relevance_floor !== null && answer.relevance_floor !== undefined) {
    fact(list, "Relevance floor", answer.relevance_floor.toFixed(4));
  }
  if (answer.close_matches === false) fact(list, "Close match", "no: one of the nearest few");
  fact(list, "Collection", answer.collection);
  fact(list, "Matched by", hit.matched_by);
  // Which spaces found it (image, full text, captions): why a photo is here.
  if (hit.spaces && hit.spaces.length) fact(list, "Found in", hit.spaces.join(" + "));
  fact(list, "Fallback", answer.fallback_reason || "none: the routed model answered");
}

async function stepViewer(delta) {
  const next = viewerIndex + delta;
  if (next < 0) return;
  if (next >= state.results.length && !state.done) await loadMore();
  if (next < state.results.length) openViewer(next);
}

// A horizontal swipe over the photo steps through the results (left: the next one).
const SWIPE_PX = 50;

function swipe(el) {
  let origin = null;
  el.addEventListener("pointerdown", (event) => {
    if (event.pointerType === "mouse") return;
    origin = { id: event.pointerId, x: event.clientX, y: event.clientY };
  });
  el.addEventListener("pointerup", (event) => {
    if (!origin || event.pointerId !== origin.id) return;
    const dx = event.clientX - origin.x;
    const dy = event.clientY - origin.y;
    origin = null;
    if (Math.abs(dx) >= SWIPE_PX && Math.abs(dx) > 1.5 * Math.abs(dy)) stepViewer(dx < 0 ? 1 : -1);
  });
  el.addEventListener("pointercancel", () => { origin = null; });
}

// -- uploads ------------------------------------------------------------------------------
async function upload(files) {
  const list = Array.from(files);
  let added = 0;
  for (const [i, file] of list.entries()) {
    setStatus(`Uploading ${i + 1} of ${list.length}: ${file.name}...`, { state: "loading" });
    try {
      const form = new FormData();
      form.append("file", file);
      await api(`${API}/assets`, { method: "POST", body: form });
      added += 1;
    } catch (err) {
      const { text, hint = "" } = err.status === 403
        ? { text: "Uploads need the admin key.", hint: "Sign out and sign in with the admin key (API_KEY)." }
        : friendlyError(err);
      setStatus(`${file.name} was not added: ${text}`, { error: true, hint });
      return;
    }
  }
  setStatus(`Uploaded ${plural(added, "photo")}.`, { state: "answered" });
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
  refreshAbout();
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
  clearTimeout(aboutTimer);
  $("index-status").hidden = true;
  $("demo-note").hidden = true;
}

// -- wiring -------------------------------------------------------------------------------
// A phone's search box is narrow: a placeholder that fits it.
const PLACEHOLDERS = { wide: "Describe a photo, e.g. beach sunset", narrow: "Describe a photo" };

function fitPlaceholder(narrow) {
  $("q").placeholder = narrow.matches ? PLACEHOLDERS.narrow : PLACEHOLDERS.wide;
}

function init() {
  const narrow = window.matchMedia("(max-width: 30rem)");
  fitPlaceholder(narrow);
  narrow.addEventListener("change", () => fitPlaceholder(narrow));
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
  $("example-clear").addEventListener("click", clearReference);
  $("demo-note-close").addEventListener("click", () => {
    about.noteDismissed = true;
    showDemoNote();
    $("q").focus();
  });
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
  $("viewer-similar").addEventListener("click", () => moreLikeThis(viewerIndex));
  $("viewer").addEventListener("keydown", (event) => {
    if (event.key === "ArrowLeft") stepViewer(-1);
    if (event.key === "ArrowRight") stepViewer(1);
  });
  swipe(document.querySelector("#viewer .viewer-stage"));
  document.addEventListener("pointerdown", (event) => {
    if (!event.target.closest("#grid .tile.actions")) showActions(null);
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
  else start({ mode: state.mode, q: state.q, similar: state.similar, reference: state.reference });
}

document.addEventListener("DOMContentLoaded", init);
