// Signing in, for the search page and the admin page: plain JavaScript, no build step.
//
// When the server needs credentials, the page asks for an API key once and trades it
// for a session cookie (POST /api/v1/auth/session). The cookie is HttpOnly, so no script
// (this one included) can read it, and SameSite=Strict; the browser sends it with every
// same-origin request. The page keeps no copy of the key: not in localStorage, not in a
// readable cookie, not in a variable once the form is sent. Photos load from the signed,
// short-lived URLs the API hands out, so no key ends up in a URL either.
"use strict";

const Auth = (() => {
  const SESSION = "/api/v1/auth/session";
  let session = null; // the last answer of /api/v1/auth/session
  let onReady = () => {};
  let onSignedOut = () => {};
  let waitTimer = null;

  const $ = (id) => document.getElementById(id);

  function make(tag, props = {}, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (name === "text") el.textContent = value;
      else el.setAttribute(name, value);
    }
    el.append(...children);
    return el;
  }

  // The form, made once and kept in the page (hidden while signed in).
  function form() {
    if ($("signin")) return $("signin");
    const key = make("input", {
      id: "signin-key",
      name: "key",
      type: "password",
      autocomplete: "current-password",
      autocapitalize: "none",
      spellcheck: "false",
      required: "",
      "aria-describedby": "signin-error signin-why",
    });
    const card = make(
      "form",
      { id: "signin-form", class: "signin-card", novalidate: "" },
      make("h1", { id: "signin-title", text: "Sign in" }),
      make("p", {
        id: "signin-why",
        text: "This photo library is private. Enter its API key: a read key to search, " +
          "the admin key (API_KEY) for everything.",
      }),
      make("label", { for: "signin-key", text: "API key" }),
      key,
      make("button", { id: "signin-submit", type: "submit", class: "primary", text: "Sign in" }),
      make("p", { id: "signin-error", role: "alert" }),
    );
    card.addEventListener("submit", (event) => {
      event.preventDefault();
      signIn();
    });
    const section = make("section", { id: "signin", "aria-labelledby": "signin-title", hidden: "" }, card);
    document.body.prepend(section);
    return section;
  }

  function say(text, { info = false } = {}) {
    const line = $("signin-error");
    line.textContent = text;
    line.classList.toggle("info", info);
  }

  // Wrong keys too often from this address: the server says how long to wait (429).
  function waitOut(seconds) {
    clearInterval(waitTimer);
    let left = Math.max(1, seconds);
    const button = $("signin-submit");
    button.disabled = true;
    say(`Too many tries, wait ${left} s.`);
    waitTimer = setInterval(() => {
      left -= 1;
      if (left > 0) {
        say(`Too many tries, wait ${left} s.`);
        return;
      }
      clearInterval(waitTimer);
      button.disabled = false;
      say("You can try again now.", { info: true });
    }, 1000);
  }

  function retryAfter(response) {
    const seconds = parseInt(response.headers.get("retry-after") || "", 10);
    return Number.isFinite(seconds) ? seconds : 60;
  }

  // Show the form (signed out, never signed in, or the session ended).
  function show(message = "", { info = false } = {}) {
    const section = form();
    const wasShown = !section.hidden;
    if (session) session = { ...session, signed_in: false };
    for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
    document.body.classList.add("signed-out");
    section.hidden = false;
    renderAccount();
    if (!$("signin-submit").disabled) say(message, { info });
    $("signin-key").focus();
    if (!wasShown) onSignedOut();
  }

  function hide() {
    const section = $("signin");
    if (section) section.hidden = true;
    document.body.classList.remove("signed-out");
  }

  function renderAccount() {
    const box = $("account");
    if (!box) return;
    const signedIn = Boolean(session && session.required && session.signed_in);
    box.hidden = !signedIn;
    box.classList.remove("problem");
    if (signedIn) {
      const who = `${session.name} (${session.scope} key)`;
      $("account-name").textContent = who;
      $("account-name").title = `Signed in: ${who}`;
    }
  }

  function ready(answer) {
    session = answer;
    hide();
    renderAccount();
    onReady(session);
  }

  async function signIn() {
    const field = $("signin-key");
    const key = field.value.trim();
    if (!key) {
      say("Enter the API key.");
      field.focus();
      return;
    }
    const button = $("signin-submit");
    button.disabled = true;
    say("Signing in...", { info: true });
    let response;
    try {
      response = await fetch(SESSION, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ key }),
      });
    } catch (err) {
      button.disabled = false;
      say("The server cannot be reached.");
      return;
    }
    button.disabled = false;
    if (response.ok) {
      field.value = "";
      ready(await response.json());
      return;
    }
    if (response.status === 429) {
      waitOut(retryAfter(response));
    } else if (response.status === 401) {
      say("Wrong key.");
    } else if (response.status === 400) {
      // The server needs no key after all (its keys were removed): carry on.
      field.value = "";
      ready({ required: false, signed_in: false });
      return;
    } else {
      say(`Sign-in failed (HTTP ${response.status}).`);
    }
    field.select();
    field.focus();
  }

  async function signOut() {
    let response;
    try {
      response = await fetch(SESSION, { method: "DELETE", credentials: "same-origin" });
    } catch (err) {
      accountProblem("Sign-out failed: the server cannot be reached.");
      return;
    }
    if (!response.ok && response.status !== 401) {
      // Refused (429 while this address waits out wrong keys): the cookie is still there.
      const wait = response.status === 429 ? ` wait ${retryAfter(response)} s and` : "";
      accountProblem(`Sign-out failed (HTTP ${response.status}):${wait} try again.`);
      return;
    }
    show("Signed out.", { info: true });
  }

  function accountProblem(text) {
    const box = $("account");
    if (!box) return;
    $("account-name").textContent = text;
    $("account-name").title = text;
    box.classList.add("problem");
  }

  // fetch() for the API, same-origin (the session cookie goes along). A 401 means the
  // session ended (expired, signed out elsewhere, key revoked): the form comes back.
  async function request(path, options = {}) {
    const response = await fetch(path, { credentials: "same-origin", ...options });
    if (response.status === 401) {
      const had = Boolean(session && session.signed_in);
      show(had ? "The session has ended: sign in again." : "");
    }
    return response;
  }

  // Ask the server whether it needs credentials and who this browser is, then either
  // carry on (handlers.ready) or show the form.
  async function start(handlers = {}) {
    onReady = handlers.ready || onReady;
    onSignedOut = handlers.signedOut || onSignedOut;
    const out = $("sign-out");
    if (out) out.addEventListener("click", signOut);
    let response;
    try {
      response = await fetch(SESSION, { credentials: "same-origin" });
    } catch (err) {
      ready({ required: false, signed_in: false }); // the page's own calls will say why
      return;
    }
    if (response.status === 429) {
      show();
      waitOut(retryAfter(response));
      return;
    }
    if (!response.ok) {
      ready({ required: false, signed_in: false }); // a server without sign-in
      return;
    }
    const answer = await response.json();
    session = answer;
    if (answer.required && !answer.signed_in) show();
    else ready(answer);
  }

  return {
    start,
    request,
    show,
    signOut,
    session: () => session,
  };
})();
window.Auth = Auth;
