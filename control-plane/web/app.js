// Tessera's web page: one ES module, no framework, no build step. Every action is a call
// to the same REST API the CLI uses (see /openapi.json); the session cookie is HttpOnly,
// and the CSRF token from GET /v1/session goes with every state-changing call.

const STATUSES = ["pending", "enabled", "disabled", "revoked", "expired"];
const LIFETIMES = [30, 60, 90, 180, 365];
const COLUMNS = [
  ["name", "Name"], ["owner", "Owner"], ["status", "Status"], ["scopes", "Scopes"],
  ["ip", "IP filter"], ["created", "Created"], ["expires", "Expires"], ["used", "Last used"],
];
// The columns the API can sort by (`GET /v1/tokens?sort=`), by column key.
const SORT_KEYS = {
  name: "name", owner: "user", status: "status", created: "created_at", expires: "expires_at", used: "last_used_at",
};
const PER_PAGE = 20;

let session = null;   // SessionView
let setupNeeded = false; // the database has no organization yet (GET /v1/setup)
let prefs = {};       // remembered choices (GET/PUT /v1/me/prefs)

// ---------------------------------------------------------------------------------------
// DOM and API helpers

/** Previous / "Page 2 of 7 · 312 events" / Next; `go(n)` shows page n. */
function pagerOf(page, total, perPage, noun, go) {
  const pages = Math.max(1, Math.ceil(total / perPage));
  return el("nav", { class: "pager", "aria-label": "Pages" },
    el("button", { type: "button", disabled: page <= 1, onclick: () => go(page - 1) }, "Previous"),
    el("span", { class: "pager-where" }, `Page ${page} of ${pages} · ${total} ${noun}`),
    el("button", { type: "button", disabled: page >= pages, onclick: () => go(page + 1) }, "Next"));
}

/** A name for people with its id beneath it (the id alone when there is no name). */
function named(name, id) {
  return name ? [name, el("div", { class: "sub" }, el("code", {}, id))] : [el("code", {}, id)];
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else if (v === true) e.setAttribute(k, "");
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

class ApiError extends Error {
  constructor(status, body, headers) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.headers = headers;
  }
}

async function api(method, path, body) {
  const headers = { "accept": "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && session) headers["x-csrf-token"] = session.csrf;
  const r = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  const text = await r.text();
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!r.ok) {
    if (r.status === 401 && session && !path.startsWith("/v1/session") && !path.startsWith("/v1/links")) {
      session = null;
      showSignIn("Your session has ended. Please sign in again.");
    }
    throw new ApiError(r.status, data, r.headers);
  }
  return data;
}

function toast(msg) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.textContent = ""; }, 5000);
}

function main() { return document.getElementById("main"); }

/// Renders a page of the signed-in app; does nothing once the session has ended (the
/// sign-in page is showing).
function render(title, ...content) {
  if (!session) return;
  renderPublic(title, ...content);
}

/// Bumped on every navigation: a page that is still loading when the person moves on must
/// not draw over the page they moved to.
let pageGen = 0;

/// A `render` bound to the current navigation: it draws nothing once the person has moved
/// to another page (each page function starts with `const render = renderer();`).
function renderer() {
  const gen = pageGen;
  return (title, ...content) => { if (gen === pageGen) render(title, ...content); };
}

function renderPublic(title, ...content) {
  const m = main();
  m.replaceChildren(el("h1", {}, title), ...content);
  document.title = `${title} · Tessera`;
}

function errorBox(e) {
  return el("p", { class: "error", role: "alert" }, e instanceof ApiError ? e.message : String(e));
}

/// A scrollable table, reachable by keyboard (a narrow window scrolls it sideways).
function tableWrap(table) {
  const label = {
    tokens: "API tokens", "auth-log": "Authentication events", users: "Users", audit: "Audit entries", edges: "Edge credentials",
    keys: "Signing keys", "domain-claims": "Email domain claims", "usage-table": "Uses per slice of time",
    "usage-networks": "Networks the token was used from", "scim-credentials": "SCIM credentials",
  }[table.id] || "Tokens";
  return el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": label }, table);
}

function fmtTime(s) { return s ? s.replace("T", " ").replace("Z", " UTC") : "—"; }

function badge(status) {
  const label = status.charAt(0).toUpperCase() + status.slice(1);
  return el("span", { class: `badge ${status}` }, label);
}

function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") u.set(k, v);
  const s = u.toString();
  return s ? `?${s}` : "";
}

/// A modal dialog; resolves with the value `onSubmit` returns, or null when cancelled.
/// `cancel: false` for a dialog with nothing to cancel (a secret already issued): it has
/// only its submit button.
function modal(title, body, { submit = "OK", danger = false, onSubmit, cancel: cancellable = true } = {}) {
  return new Promise((resolve) => {
    const err = el("div");
    const form = el("form", { method: "dialog" });
    const cancel = cancellable ? el("button", { type: "button", onclick: () => { d.close(); resolve(null); } }, "Cancel") : null;
    const ok = el("button", { type: "submit", class: danger ? "primary danger" : "primary" }, submit);
    form.append(el("h2", { id: "dlg-title" }, title), ...[body].flat(), err, el("div", { class: "buttons" }, cancel, ok));
    const d = el("dialog", { "aria-labelledby": "dlg-title" }, form);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      err.replaceChildren();
      try {
        const v = onSubmit ? await onSubmit(err) : true;
        if (v === undefined) return; // stay open (field errors shown)
        d.close();
        resolve(v);
      } catch (e) {
        err.replaceChildren(errorBox(e));
      }
    });
    d.addEventListener("cancel", () => resolve(null));
    d.addEventListener("close", () => d.remove());
    document.body.append(d);
    d.showModal();
  });
}

function confirmAction(title, text, submit) {
  return modal(title, el("p", {}, text), { submit, danger: true });
}

/// Shows a secret once, with Copy and Save as file.
function showSecret(title, secret, filename, note) {
  const area = el("textarea", { class: "secret", readonly: true, rows: 6, "aria-label": title, id: "secret-value" });
  area.value = secret;
  const copy = el("button", {
    type: "button", onclick: async () => {
      try { await navigator.clipboard.writeText(secret); toast("Copied."); }
      catch { area.select(); toast("Select and copy the text."); }
    },
  }, "Copy");
  const save = el("a", {
    class: "button", download: filename,
    href: "data:text/plain;charset=utf-8," + encodeURIComponent(secret),
  }, "Save as file");
  return modal(title, [
    el("p", { class: "notice", role: "alert" }, note || "You will not see this again: copy it or save it now."),
    area, el("div", { class: "actions" }, copy, save),
  ], { submit: "Done", cancel: false });
}

/// Puts a server validation message (`field: message`) next to its field, or in `box`.
function showFieldError(form, box, e) {
  const msg = e instanceof ApiError ? e.message : String(e);
  const m = /^(?:body\.)?([a-z_]+(?:\.[a-z_]+)?)(?:\[\d+\])?: (.*)$/s.exec(msg);
  const input = m && form.querySelector(`[name="${m[1]}"]`);
  if (input) {
    const id = `${input.id || m[1]}-error`;
    const p = el("p", { class: "field-error", id, role: "alert" }, msg);
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", id);
    input.insertAdjacentElement("afterend", p);
    input.focus();
  } else {
    box.replaceChildren(errorBox(e));
  }
}

function clearFieldErrors(form) {
  form.querySelectorAll(".field-error").forEach((p) => p.remove());
  form.querySelectorAll("[aria-invalid]").forEach((i) => { i.removeAttribute("aria-invalid"); i.removeAttribute("aria-describedby"); });
}

function field(label, attrs, hint) {
  const id = attrs.id || `f-${attrs.name}`;
  const input = attrs.tag === "select"
    ? el("select", { id, name: attrs.name }, ...(attrs.options || []).map(([v, t]) => el("option", { value: v, selected: v === attrs.value }, t)))
    : attrs.tag === "textarea"
      ? el("textarea", { id, name: attrs.name, rows: attrs.rows || 3 })
      : el("input", { id, type: attrs.type || "text", name: attrs.name, value: attrs.value, required: attrs.required, autocomplete: attrs.autocomplete || "off", min: attrs.min, max: attrs.max });
  if (attrs.tag === "textarea" && attrs.value) input.value = attrs.value;
  return el("div", {}, el("label", { for: id }, label, hint ? el("span", { class: "hint" }, ` (${hint})`) : null), input);
}

// ---------------------------------------------------------------------------------------
// Signing in

function showSignIn(message, ssoReason) {
  setNav();
  if (setupNeeded) { showFirstRun(); return; }
  const box = el("div");
  if (message) box.append(el("p", { class: "error", role: "alert", "data-sso-reason": ssoReason }, message));
  const form = el("form", { class: "card", id: "signin-form" },
    field("Organization", { name: "org", required: true, autocomplete: "organization" }),
    field("Username", { name: "username", required: true, autocomplete: "username" }),
    field("Password", { name: "password", type: "password", required: true, autocomplete: "current-password" }),
    box,
    el("p", {}, el("button", { type: "submit", class: "primary" }, "Sign in")),
    el("p", {}, el("a", { href: "#/report-leak" }, "Found a Tessera token (tsr_…) in public? Report it")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    box.replaceChildren();
    const f = new FormData(form);
    try {
      session = await api("POST", "/v1/session", { org: f.get("org"), username: f.get("username"), password: f.get("password") });
      await afterSignIn();
    } catch (e) {
      let msg = e.message;
      if (e.status === 429) msg = `${e.message} (wait ${e.headers.get("retry-after")} s)`;
      box.replaceChildren(el("p", { class: "error", role: "alert" }, msg));
    }
  });
  renderPublic("Sign in", form, ssoSignIn());
  if (location.hash && !location.hash.startsWith("#/signin")) history.replaceState(null, "", "#/signin");
  form.querySelector("input").focus();
}

// ---------------------------------------------------------------------------------------
// First run: a database without any organization. Nobody can sign in yet, so the sign-in
// page says how to begin; the setup link `tessera serve` printed opens the setup form.

const SETUP_LINK = /#\/setup\/([0-9a-f]+)\s*$/;

function showFirstRun() {
  setNav();
  const box = el("div");
  const form = el("form", { class: "card", id: "first-run-form" },
    field("Setup link", { name: "link", required: true }, `it begins with ${location.origin}/#/setup/`),
    box,
    el("p", {}, el("button", { type: "submit", class: "primary" }, "Continue")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    clearFieldErrors(form);
    box.replaceChildren();
    const text = String(new FormData(form).get("link") || "").trim();
    const m = SETUP_LINK.exec(text) || /^([0-9a-f]{64})$/.exec(text);
    if (!m) {
      showFieldError(form, box, "link: paste the whole link tessera serve printed when it started, such as " +
        `${location.origin}/#/setup/0123…`);
      return;
    }
    location.hash = `#/setup/${m[1]}`;
  });
  renderPublic("Set up Tessera",
    el("p", {}, "This Tessera has no organization yet, so nobody can sign in. When ", el("code", {}, "tessera serve"),
      " started on this empty database, it printed a one-time setup link in its log. Open that link, or paste it here, to create the first organization and its admin."),
    form,
    el("p", {}, "Or, on the server and with the same database, run ",
      el("code", {}, "tessera admin bootstrap --org <organization> --admin <your username>"),
      " and open the sign-in link it prints. A restart of ", el("code", {}, "tessera serve"), " on an empty database prints a new setup link."));
  if (location.hash && !location.hash.startsWith("#/signin")) history.replaceState(null, "", "#/signin");
}

function showSetup(secret) {
  setNav();
  const box = el("div");
  const form = el("form", { class: "card", id: "setup-form" },
    el("p", {}, "You become the first organization's admin and are signed in. This link works once."),
    field("Organization", { name: "org", required: true, autocomplete: "organization" }, "its id, used to sign in: a-z, 0-9 and -"),
    field("Organization name", { name: "org_name" }, "optional, shown on the pages"),
    field("Your username", { name: "username", required: true, autocomplete: "username" }),
    field("Email", { name: "email", type: "email", autocomplete: "email" }, "optional, for notifications"),
    ...passwordFields("Password", ""),
    box,
    el("p", {}, el("button", { type: "submit", class: "primary" }, "Create and sign in")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearFieldErrors(form);
    box.replaceChildren();
    const f = new FormData(form);
    if (passwordsDiffer(f, box)) return;
    try {
      session = await api("POST", "/v1/setup", {
        secret, org: f.get("org"), org_name: f.get("org_name"), username: f.get("username"),
        email: f.get("email"), password: f.get("password"),
      });
      setupNeeded = false;
      history.replaceState(null, "", "#/tokens");
      await afterSignIn();
    } catch (e) {
      showFieldError(form, box, e);
    }
  });
  renderPublic("Create the first organization", form);
  form.querySelector("input").focus();
}

// ---------------------------------------------------------------------------------------
// Single sign-on (OpenID Connect): the sign-in page's "Sign in with SSO", the words for a
// refused sign-in, and the Organization page's connection section.

/// Why a sign-in through the identity provider was refused, by the callback's reason.
const SSO_REFUSALS = {
  sso_state_invalid: "This sign-in is unknown or was already used. Start again from this page.",
  sso_browser_mismatch: "This sign-in was started in another browser (or its cookie is gone). Start again from this page.",
  sso_login_expired: "The sign-in took longer than 10 minutes. Start again.",
  sso_provider_refused: "Your identity provider did not sign you in.",
  sso_provider_unreachable: "Your identity provider could not be reached. Try again later, or ask an admin.",
  sso_code_refused: "Your identity provider refused the sign-in code (used already, expired, or from another sign-in). Start again.",
  sso_audience_mismatch: "Your identity provider's ID token was not issued to Tessera (wrong audience). Ask an admin to check the client id.",
  sso_id_token_expired: "Your identity provider's ID token has expired. Start again; if it persists, ask an admin to check the clocks.",
  sso_issuer_mismatch: "The ID token came from another identity provider than your organization's.",
  sso_nonce_mismatch: "The ID token belongs to another sign-in. Start again.",
  sso_signature_invalid: "The ID token's signature does not verify with your identity provider's keys.",
  sso_id_token_invalid: "Your identity provider's ID token was refused.",
  sso_email_missing: "Your identity provider sent no email address.",
  sso_email_unverified: "Your identity provider says your email address is not verified.",
  sso_domain_not_allowed: "Your email address is not in a domain your organization signs in with single sign-on.",
  sso_email_unusable: "Your email address cannot be a Tessera username.",
  sso_account_exists: "A user with your email address exists but was not created by single sign-on; an admin must delete or rename it first.",
  sso_account_disabled: "Your account is disabled; ask an admin of your organization.",
  sso_not_configured: "Your organization no longer signs in with single sign-on.",
  sso_misconfigured: "Single sign-on is not set up correctly; ask an admin.",
};

function ssoFailed(reason) {
  const words = SSO_REFUSALS[reason] || "Signing in through your identity provider failed. Start again.";
  showSignIn(`Single sign-on refused: ${words}`, reason);
}

/// The sign-in page's "Sign in with SSO": the email's domain picks the identity provider.
function ssoSignIn() {
  const box = el("div", { id: "sso-box" });
  const form = el("form", { class: "card", id: "sso-form" },
    el("h2", {}, "Sign in with your company account"),
    field("Work email", { name: "email", id: "f-sso-email", type: "email", required: true, autocomplete: "email" }),
    box,
    el("p", {}, el("button", { type: "submit", id: "sso-start" }, "Sign in with SSO")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    box.replaceChildren();
    try {
      const r = await api("GET", `/v1/sso/start${qs({ email: new FormData(form).get("email") })}`);
      location.assign(r.authorize_url);
    } catch (e) {
      let msg = e.message;
      if (e.status === 429) msg = `${e.message} (wait ${e.headers.get("retry-after")} s)`;
      box.replaceChildren(el("p", { class: "error", role: "alert" }, msg));
    }
  });
  return form;
}

/// The Organization page's single sign-on section (the org's own admins).
async function ssoSection(org) {
  const path = `/v1/orgs/${encodeURIComponent(org.id)}/sso`;
  let conn = null;
  try { conn = await api("GET", path); } catch (e) { if (e.status !== 404) return [el("h2", {}, "Single sign-on"), errorBox(e)]; }
  const box = el("div");
  const roles = [["user", "user"], ["readonly", "readonly"], ["admin", "admin"]];
  const requireBox = el("input", { type: "checkbox", id: "f-sso-require", name: "require_sso", checked: conn ? conn.require_sso : false });
  const syncBox = el("input", { type: "checkbox", id: "f-sso-sync", name: "sync_roles", checked: conn ? conn.sync_roles : false });
  const form = el("form", { id: "sso-settings" },
    field("Issuer URL", { name: "issuer", id: "f-sso-issuer", type: "url", required: true, value: conn ? conn.issuer : "" }, "e.g. https://login.example.com"),
    field("Client id", { name: "client_id", id: "f-sso-client-id", required: true, value: conn ? conn.client_id : "" }),
    field("Client secret", { name: "client_secret", id: "f-sso-client-secret", type: "password", required: !conn, autocomplete: "new-password" }, conn ? "stored sealed; leave empty to keep it" : "stored sealed, never shown again"),
    field("Email domains", { name: "domains", id: "f-sso-domains", required: true, value: conn ? conn.domains.join(", ") : "" }, "comma-separated, e.g. example.com"),
    field("Role of a new user when no group maps", { tag: "select", name: "default_role", id: "f-sso-default-role", value: conn ? conn.default_role : "user", options: roles }),
    field("Group → role mappings", { tag: "textarea", name: "group_roles", id: "f-sso-group-roles", rows: 3, value: conn ? conn.group_roles.map((g) => `${g.group}=${g.role}`).join("\n") : "" }, "one group=role per line; the first group the user is in wins"),
    el("div", { class: "check" }, syncBox, el("label", { for: "f-sso-sync" }, " Roles follow the groups at every sign-in (off: only at the first; the last admin is never demoted)")),
    el("div", { class: "check" }, requireBox, el("label", { for: "f-sso-require" }, " Require single sign-on (admins keep a break-glass password sign-in, marked in the audit log)")),
    el("p", {}, "Redirect URI to register at the identity provider: ", el("code", { id: "sso-redirect-uri" }, conn ? conn.redirect_uri : `${location.origin}/v1/sso/callback`),
      "; and, so that signing out here signs people out there too, the post-logout redirect URI ", el("code", { id: "sso-logout-uri" }, `${location.origin}/`), "."),
    box,
    el("p", {}, el("button", { type: "submit", class: "primary", id: "sso-save" }, conn ? "Save" : "Set up single sign-on"),
      conn ? el("button", { type: "button", class: "danger", id: "sso-delete", onclick: async () => {
        if (await confirmAction("Delete single sign-on?", "People of this organization sign in with passwords or links again.", "Delete")) {
          try { await api("DELETE", path); toast("Single sign-on deleted."); } catch (x) { toast(x.message); }
          showOrg();
        }
      } }, "Delete") : null));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearFieldErrors(form);
    box.replaceChildren();
    const f = new FormData(form);
    const body = {
      issuer: f.get("issuer"), client_id: f.get("client_id"),
      domains: String(f.get("domains")).split(/[\s,]+/).filter((d) => d),
      require_sso: requireBox.checked, sync_roles: syncBox.checked, default_role: f.get("default_role"),
      group_roles: String(f.get("group_roles")).split("\n").map((l) => l.trim()).filter((l) => l).map((l) => {
        const i = l.lastIndexOf("=");
        return { group: i < 0 ? l : l.slice(0, i).trim(), role: i < 0 ? "" : l.slice(i + 1).trim() };
      }),
    };
    if (f.get("client_secret")) body.client_secret = f.get("client_secret");
    try {
      await api("PUT", path, body);
      toast("Single sign-on saved.");
      showOrg();
    } catch (e) { showFieldError(form, box, e); }
  });
  const pending = conn && conn.pending_domains.length
    ? [el("p", { id: "sso-pending", class: "note", role: "status" },
      `Waiting for the operator's approval: ${conn.pending_domains.join(", ")}. People with these addresses are not sent to your identity provider until a root admin approves each domain`,
      conn.require_sso ? ", and “Require single sign-on” takes effect only once one is approved." : ".")]
    : [];
  return [el("h2", {}, "Single sign-on"), ...pending, form, ...(org.root ? await domainClaims() : [])];
}

/// The operator's (root admins') list of email-domain claims, with Approve and Withdraw:
/// a claim sends people to an organization's identity provider only once approved.
async function domainClaims() {
  let claims = [];
  try { claims = (await api("GET", "/v1/sso/domains")).domains; } catch (e) { return [el("h3", {}, "Email domain claims"), errorBox(e)]; }
  const decide = (c, verb) => act(verb === "approve" ? "Approve" : "Withdraw", async () => {
    const sure = verb === "approve"
      ? await confirmAction(`Approve ${c.domain} for ${c.org_name}?`, `People with an address at ${c.domain} will sign in through ${c.org_name}'s identity provider, which creates their users. Approve only a domain you know ${c.org_name} owns.`, "Approve")
      : await confirmAction(`Withdraw ${c.domain} from ${c.org_name}?`, `People with an address at ${c.domain} will no longer be sent to ${c.org_name}'s identity provider.`, "Withdraw");
    if (!sure) return;
    try {
      await api("POST", `/v1/sso/domains/${encodeURIComponent(c.domain)}/${verb}`, { org: c.org });
      toast(verb === "approve" ? `${c.domain} approved for ${c.org_name}.` : `${c.domain} withdrawn from ${c.org_name}.`);
    } catch (x) { toast(x.message); }
    showOrg();
  });
  return [el("h3", {}, "Email domain claims"),
    el("p", {}, "Organizations claim the email domains of their single sign-on; a claim routes nobody until you approve it. Approve a domain only for the organization that owns it."),
    claims.length ? tableWrap(el("table", { id: "domain-claims" },
      el("thead", {}, el("tr", {}, ...["Domain", "Organization", "State", "Claimed", "Approved by", "Actions"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...claims.map((c) => el("tr", { "data-domain": c.domain, "data-org": c.org },
        el("td", {}, c.domain), el("td", { title: c.org }, c.org_name),
        el("td", { "data-column": "state" }, c.state), el("td", {}, fmtTime(c.claimed_at)),
        el("td", {}, c.state === "approved" ? (c.approved_by_name || "before approvals existed") : "—"),
        el("td", {}, decide(c, c.state === "approved" ? "withdraw" : "approve"))))))) : el("p", { id: "no-domain-claims" }, "No organization claims a domain.")];
}

/// The password rule in words, a password field and its repetition (the first-run setup
/// and the invitation and reset links).
function passwordFields(label, more) {
  return [
    el("p", { id: "password-rule" }, `Choose a password of at least 10 characters that is not a common password, a word with a few changes, your name, or a pattern such as aaaa or 1234. A few unrelated words make a good one.${more}`),
    field(label, { name: "password", type: "password", required: true, autocomplete: "new-password" }),
    field("Repeat the password", { name: "again", id: "f-again", type: "password", required: true, autocomplete: "new-password" }),
  ];
}

/// Whether the two passwords of `f` differ (then said in `box`).
function passwordsDiffer(f, box) {
  if (f.get("password") === f.get("again")) return false;
  box.replaceChildren(el("p", { class: "error", role: "alert" }, "The two passwords differ."));
  return true;
}

function showSetPassword(kind, secret) {
  setNav();
  const titles = { invite: "Accept your invitation", reset: "Reset your password", bootstrap: "Set the admin password" };
  const box = el("div");
  const form = el("form", { class: "card" },
    ...passwordFields("New password", " This link works once."),
    box,
    el("p", {}, el("button", { type: "submit", class: "primary" }, "Set password and sign in")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearFieldErrors(form);
    box.replaceChildren();
    const f = new FormData(form);
    if (passwordsDiffer(f, box)) return;
    try {
      session = await api("POST", "/v1/links/accept", { secret, password: f.get("password") });
      history.replaceState(null, "", "#/tokens");
      await afterSignIn();
    } catch (e) {
      showFieldError(form, box, e);
    }
  });
  renderPublic(titles[kind] || "Set your password", form);
  form.querySelector("input").focus();
}

async function afterSignIn() {
  try { prefs = (await api("GET", "/v1/me/prefs")).prefs || {}; } catch { prefs = {}; }
  setNav();
  if (!location.hash || location.hash.startsWith("#/signin") || /^#\/(invite|reset|bootstrap|setup)\//.test(location.hash)) {
    history.replaceState(null, "", "#/tokens");
  }
  route();
}

async function signOut() {
  let out = {};
  try { out = await api("DELETE", "/v1/session"); } catch { /* already ended */ }
  session = null;
  // Signed in through the identity provider: end its session too; it sends the browser
  // back here.
  if (out && out.provider_sign_out_url) { location.assign(out.provider_sign_out_url); return; }
  history.replaceState(null, "", "#/signin");
  showSignIn("You are signed out.");
}

function isAdmin() { return session && session.user.role === "admin"; }
function isPartner() { return session && session.user.role === "partner"; }
function isReadonly() { return session && session.user.role === "readonly"; }

function setNav() {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  if (!session) { nav.hidden = true; nav.replaceChildren(); who.replaceChildren(); return; }
  const links = [["#/tokens", "API tokens"], ["#/auth-log", "Authentication log"], ["#/notifications", "Notifications"]];
  if (isPartner()) links.push(["#/partner", "Customers"]);
  if (isAdmin()) links.push(["#/users", "Users"], ["#/audit", "Audit log"], ["#/webhooks", "Webhooks"], ["#/org", "Organization"]);
  nav.replaceChildren(...links.map(([h, t]) => el("a", { href: h, "aria-current": location.hash.startsWith(h) ? "page" : null }, t)));
  nav.hidden = false;
  who.replaceChildren(
    el("span", {}, `${session.user.username} · ${session.org.id} · ${session.user.role}`),
    el("button", { type: "button", onclick: signOut }, "Sign out"));
}

// ---------------------------------------------------------------------------------------
// API tokens

/// The role × relation table of `policy::allowed`, for showing only what the API allows.
function can(action, t) {
  const role = session.user.role;
  const own = t.user === session.user.id;
  const sameOrg = t.org === session.org.id;
  if (action === "download" || action === "regenerate") return own;
  if (role === "admin") return own || sameOrg;
  if (role === "user" || role === "partner") {
    // Owners edit, enable, disable and delete their own tokens unless their org turned
    // that off (`owners_manage_tokens`); revoking stays theirs either way.
    const manages = session.org.owners_manage_tokens ? ["edit", "enable", "disable", "delete"] : [];
    if (own) return ["revoke", "authlog", ...manages].includes(action);
    if (role === "partner" && !sameOrg) return action === "revoke";
    return false;
  }
  return own && action === "authlog";
}

function tokenFilters() {
  const p = new URLSearchParams(location.hash.split("?")[1] || "");
  return {
    q: p.get("q") || "", status: p.get("status") || "", user: p.get("user") || "",
    expires_after: p.get("expires_after") || "", expires_before: p.get("expires_before") || "",
    sort: p.get("sort") || "", page: Number(p.get("page") || 1),
  };
}

function setTokenFilters(f) {
  const { page, ...rest } = f;
  history.replaceState(null, "", `#/tokens${qs({ ...rest, page: page > 1 ? page : "" })}`);
}

function dateToRfc3339(d, endOfDay) { return d ? `${d}T${endOfDay ? "23:59:59" : "00:00:00"}Z` : ""; }

function hiddenColumns() { return new Set(prefs.hidden_columns || []); }

async function saveHiddenColumns(set) {
  prefs = { ...prefs, hidden_columns: [...set] };
  try { await api("PUT", "/v1/me/prefs", { prefs }); } catch (e) { toast(e.message); }
}

async function showTokens() {
  const render = renderer();
  const f = tokenFilters();
  const query = {
    q: f.q, status: f.status, user: f.user, sort: f.sort,
    expires_after: dateToRfc3339(f.expires_after, false), expires_before: dateToRfc3339(f.expires_before, true),
  };
  const search = el("input", { id: "q", type: "search", name: "q", value: f.q, placeholder: "name, description, owner" });
  const owner = el("input", { id: "owner", name: "user", value: f.user, placeholder: "username or id" });
  const after = el("input", { id: "exp-after", type: "date", value: f.expires_after });
  const before = el("input", { id: "exp-before", type: "date", value: f.expires_before });
  const chosen = new Set(f.status ? f.status.split(",") : []);
  const statusBoxes = STATUSES.map((s) => el("label", {}, el("input", { type: "checkbox", value: s, checked: chosen.has(s) }), s.charAt(0).toUpperCase() + s.slice(1)));
  const apply = (page = 1, sort = f.sort) => {
    setTokenFilters({
      q: search.value.trim(), user: owner.value.trim(),
      status: statusBoxes.map((l) => l.firstChild).filter((c) => c.checked).map((c) => c.value).join(","),
      expires_after: after.value, expires_before: before.value, sort, page,
    });
    showTokens();
  };
  const filters = el("form", { class: "toolbar", role: "search", onsubmit: (ev) => { ev.preventDefault(); apply(); } },
    el("div", {}, el("label", { for: "q" }, "Search"), search),
    el("fieldset", {}, el("legend", {}, "Status"), ...statusBoxes),
    // Only those who see other people's tokens have an owner to choose.
    seesOthersTokens() ? el("div", {}, el("label", { for: "owner" }, "Owner"), owner) : null,
    el("div", {}, el("label", { for: "exp-after" }, "Expires from"), after),
    el("div", {}, el("label", { for: "exp-before" }, "Expires until"), before),
    el("button", { type: "submit" }, "Apply"));
  statusBoxes.forEach((l) => l.firstChild.addEventListener("change", () => apply()));

  const hidden = hiddenColumns();
  const columnsMenu = el("details", { class: "columns" }, el("summary", { class: "button" }, "Columns"),
    el("div", {}, ...COLUMNS.map(([key, label]) => el("label", {},
      el("input", {
        type: "checkbox", checked: !hidden.has(key), "data-column": key, onchange: async (ev) => {
          const h = hiddenColumns();
          if (ev.target.checked) h.delete(key); else h.add(key);
          await saveHiddenColumns(h);
          showTokens();
        },
      }), label))));
  const csv = el("a", { class: "button", id: "csv", href: `/v1/tokens.csv${qs(query)}`, download: "tokens.csv" }, "CSV");
  const buttons = el("div", { class: "toolbar" },
    isReadonly() ? null : el("button", { type: "button", class: "primary", id: "new-token", onclick: newTokenDialog }, "New API token"),
    el("button", { type: "button", id: "refresh", onclick: () => showTokens() }, "Refresh"),
    csv, columnsMenu,
    isReadonly() ? null : el("button", { type: "button", class: "danger", id: "revoke-all", onclick: revokeAllDialog }, "Revoke all"));

  let page;
  try {
    page = await api("GET", `/v1/tokens${qs({ ...query, page: f.page, per_page: PER_PAGE })}`);
  } catch (e) {
    render("API tokens", buttons, filters, errorBox(e));
    return;
  }
  const cols = COLUMNS.filter(([k]) => !hidden.has(k));
  const head = el("tr", {}, ...cols.map(([k, l]) => sortableHeader(k, l, f.sort, (sort) => apply(1, sort))),
    el("th", { scope: "col" }, "Actions"));
  const rows = page.tokens.map((t) => el("tr", { "data-token": t.id },
    ...cols.map(([k]) => el("td", { "data-column": k }, ...cell(k, t))),
    el("td", {}, el("div", { class: "actions" }, ...rowActions(t)))));
  const pager = pagerOf(page.page, page.total, page.per_page, "tokens", apply);
  const table = tableWrap(el("table", { id: "tokens" },
    el("caption", { class: "skip" }, "API tokens"), el("thead", {}, head), el("tbody", {}, ...rows)));
  render("API tokens", buttons, filters,
    page.tokens.length ? table : el("p", { class: "notice" }, "No token matches."), pager);
}

/// Whether the signed-in person may see tokens other than their own (admins: their org's;
/// partners: their customers'); a user's Owner filter could only ever show themselves.
function seesOthersTokens() { return isAdmin() || isPartner(); }

/// A column header; for a column the API sorts by, a button that sorts by it (ascending,
/// then descending), with `aria-sort` saying the current order.
function sortableHeader(key, label, current, sortBy) {
  const apiKey = SORT_KEYS[key];
  if (!apiKey) return el("th", { scope: "col" }, label);
  const desc = current === `-${apiKey}`;
  const asc = current === apiKey;
  const next = asc ? `-${apiKey}` : apiKey;
  const arrow = asc ? " ▲" : desc ? " ▼" : "";
  return el("th", { scope: "col", "aria-sort": asc ? "ascending" : desc ? "descending" : "none" },
    el("button", {
      type: "button", class: "sort", "data-sort": apiKey,
      title: `Sort by ${label.toLowerCase()}${asc ? ", descending" : ""}`, onclick: () => sortBy(next),
    }, label, arrow));
}

function cell(k, t) {
  switch (k) {
    case "name": return [el("a", { href: `#/token/${encodeURIComponent(t.id)}`, class: "token-link" }, el("strong", {}, t.name)), t.description ? el("div", { class: "sub" }, t.description) : null];
    case "owner": return [t.username];
    case "status": return [badge(t.status)];
    case "scopes": return [t.scopes.length ? t.scopes.join(" ") : "—"];
    case "ip": return [t.ip_allow.length ? t.ip_allow.join(", ") : "any address"];
    case "created": return [fmtTime(t.created_at)];
    case "expires": return [fmtTime(t.expires_at)];
    case "used": return t.last_used_at ? [fmtTime(t.last_used_at), el("div", { class: "sub" }, `from ${t.last_used_ip || "?"}`)] : ["never"];
    default: return [];
  }
}

// ---------------------------------------------------------------------------------------
// One token's page: what it is, and a chart of its uses (GET /v1/tokens/{id}/usage).

const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

/// A bar per slice of time, allowed below and refused stacked on top; each bar says its
/// numbers on hover (`title`), the whole chart in its label, and a table holds the same
/// numbers for screen readers and copying. Plain SVG: no library, no build step.
function usageChart(u) {
  const W = 720, H = 180, top = 10, bottom = 24, n = u.series.length;
  const max = Math.max(1, ...u.series.map((p) => p.allowed + p.refused));
  const step = W / n, bar = Math.max(1, step * 0.8);
  const y = (v) => (H - bottom) - (v / max) * (H - bottom - top);
  const when = (p) => fmtTime(p.start).replace(u.bucket === "day" ? / \d\d:\d\d(:\d\d)? UTC$/ : /:00 UTC$/, u.bucket === "day" ? "" : " UTC");
  const bars = u.series.map((p, i) => {
    const x = i * step + (step - bar) / 2;
    const g = svg("g", { "data-start": p.start },
      svg("title", {}, `${when(p)}: ${p.allowed} allowed, ${p.refused} refused`));
    if (p.allowed) g.append(svg("rect", { class: "bar-allowed", x, y: y(p.allowed), width: bar, height: (H - bottom) - y(p.allowed) }));
    if (p.refused) g.append(svg("rect", { class: "bar-refused", x, y: y(p.allowed + p.refused), width: bar, height: y(p.allowed) - y(p.allowed + p.refused) }));
    return g;
  });
  const label = `Uses of ${u.name} per ${u.bucket} from ${fmtTime(u.since)} to ${fmtTime(u.until)}: ${u.allowed} allowed, ${u.refused} refused; busiest ${u.bucket}: ${max === 1 && !u.allowed && !u.refused ? 0 : max} uses.`;
  return svg("svg", { id: "usage-chart", viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": label },
    svg("line", { x1: 0, x2: W, y1: H - bottom, y2: H - bottom, class: "axis" }),
    svg("text", { x: 0, y: H - 6, class: "axis-label" }, when(u.series[0])),
    svg("text", { x: W, y: H - 6, class: "axis-label", "text-anchor": "end" }, when(u.series[n - 1])),
    svg("text", { x: 0, y: top + 2, class: "axis-label" }, `${max}`),
    ...bars);
}

async function showToken(id) {
  const render = renderer();
  const bucket = /[?&]bucket=day\b/.test(location.hash) ? "day" : "hour";
  let t, u = null, usageErr = null;
  try { t = await api("GET", `/v1/tokens/${encodeURIComponent(id)}`); } catch (e) { render("API token", errorBox(e)); return; }
  if (can("authlog", t)) {
    try { u = await api("GET", `/v1/tokens/${encodeURIComponent(t.id)}/usage${qs({ bucket })}`); } catch (e) { usageErr = e; }
  }
  let limits = null;
  try { limits = await api("GET", `/v1/tokens/${encodeURIComponent(t.id)}/rate-limits`); } catch { limits = null; }
  const limitWords = !limits ? "—" : LIMIT_FIELDS.filter(([k]) => limits.effective[k] != null).map(([k, label]) =>
    `${limits.effective[k]} ${label}${limits.own[k] != null ? "" : " (organization default)"}`).join(", ") || "none";
  const other = bucket === "day" ? "hour" : "day";
  const uses = u ? [
    el("p", { id: "usage-summary" }, `${u.allowed} allowed and ${u.refused} refused from ${fmtTime(u.since)} to ${fmtTime(u.until)}, per ${u.bucket}. `,
      el("a", { href: `#/token/${encodeURIComponent(t.id)}?bucket=${other}`, id: "usage-bucket" }, other === "day" ? "Per day, last 30 days" : "Per hour, last 48 hours")),
    el("figure", { class: "chart" }, usageChart(u),
      el("figcaption", {}, el("span", { class: "key allowed" }, "allowed"), " ", el("span", { class: "key refused" }, "refused"))),
    el("details", {}, el("summary", {}, "The same numbers as a table"),
      tableWrap(el("table", { id: "usage-table" },
        el("thead", {}, el("tr", {}, ...["From", "Allowed", "Refused"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, ...u.series.filter((p) => p.allowed || p.refused).map((p) => el("tr", {},
          el("td", {}, fmtTime(p.start)), el("td", {}, String(p.allowed)), el("td", {}, String(p.refused)))))))),
    el("h2", {}, "Networks it was used from"),
    u.networks.length ? tableWrap(el("table", { id: "usage-networks" },
      el("thead", {}, el("tr", {}, ...["Network", "Uses", "Last used"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...u.networks.map((nw) => el("tr", {},
        el("td", {}, el("code", {}, nw.network)), el("td", {}, String(nw.uses)), el("td", {}, fmtTime(nw.last_used_at)))))))
      : el("p", { class: "notice" }, "No use in this window."),
  ] : [usageErr ? errorBox(usageErr) : el("p", { class: "notice" }, "You may not read this token's authentication log.")];
  render(`API token ${t.name}`,
    el("dl", { id: "token-facts" },
      el("dt", {}, "Id"), el("dd", {}, el("code", {}, t.id)),
      el("dt", {}, "Owner"), el("dd", {}, ...named(t.username, t.user)),
      el("dt", {}, "Status"), el("dd", {}, badge(t.status)),
      el("dt", {}, "Description"), el("dd", {}, t.description || "—"),
      el("dt", {}, "Scopes"), el("dd", {}, t.scopes.length ? t.scopes.join(" ") : "—"),
      el("dt", {}, "Addresses"), el("dd", {}, t.ip_allow.length ? t.ip_allow.join(", ") : "any address"),
      el("dt", {}, "Rate limits"), el("dd", { id: "token-limits" }, limitWords),
      el("dt", {}, "Created"), el("dd", {}, fmtTime(t.created_at)),
      el("dt", {}, "Expires"), el("dd", {}, fmtTime(t.expires_at)),
      el("dt", {}, "Last used"), el("dd", {}, t.last_used_at ? `${fmtTime(t.last_used_at)} from ${t.last_used_ip || "?"}` : "never")),
    el("div", { class: "actions" }, ...rowActions(t)),
    el("h2", {}, "Uses"),
    ...uses);
}

function act(label, handler, cls) {
  return el("button", { type: "button", class: cls, "data-action": label.toLowerCase(), onclick: handler }, label);
}

function rowActions(t) {
  const out = [];
  const live = t.status !== "revoked";
  if (t.status === "pending" && can("download", t)) out.push(act("Download", () => download(t, "download")));
  if (["enabled", "disabled"].includes(t.status) && can("regenerate", t) && !isReadonly()) out.push(act("Regenerate", () => regenerate(t)));
  if (t.status === "enabled" && can("revoke", t) && !isReadonly()) out.push(act("Rotate", () => rotateDialog(t)));
  if (t.status === "enabled" && can("disable", t)) out.push(act("Disable", () => simple(t, "disable")));
  if (t.status === "disabled" && can("enable", t)) out.push(act("Enable", () => simple(t, "enable")));
  if (live && can("edit", t)) out.push(act("Edit", () => editDialog(t)));
  if (live && can("revoke", t)) out.push(act("Revoke", () => revoke(t), "danger"));
  if (can("delete", t)) out.push(act("Delete", () => del(t), "danger"));
  if (can("authlog", t)) out.push(el("a", { class: "button", href: `#/auth-log?token=${encodeURIComponent(t.id)}` }, "Log"));
  if (!out.length) out.push(el("span", { class: "sub" }, t.id));
  return out;
}

async function download(t, what) {
  try {
    const m = await api("POST", `/v1/tokens/${encodeURIComponent(t.id)}/${what}`);
    await showSecret(`Your API token “${t.name}”`, m.jwt, `${t.name}.jwt`,
      "You will not see this token again: copy it or save it as a file now. Afterwards the page shows only its name and id. " +
      "It starts with tsr_ so that secret scanners can find it if it leaks; the rest is a standard JWT.");
  } catch (e) { toast(e.message); }
  route();
}

async function regenerate(t) {
  const ok = await confirmAction("Regenerate the token?", `The current JWT of “${t.name}” stops working at once; a new one is shown once.`, "Regenerate");
  if (ok) await download(t, "regenerate");
}

/// Rotation with a grace period (POST /v1/tokens/{id}/rotate): the successor is made
/// Pending; its owner downloads it here at once. The old token keeps working until the
/// successor's first use plus the grace, or the deadline, whichever comes first.
async function rotateDialog(t) {
  const wrap = el("div", {},
    el("p", {}, `A successor of “${t.name}” is made with the same settings. “${t.name}” keeps working until the successor is first used plus the grace period, or until the deadline, whichever comes first; then every edge refuses it.`),
    field("Grace period in seconds", { name: "grace_secs", type: "number", value: "300", min: "0", max: "604800", required: true }, "0 to 604800, i.e. 7 days"),
    field("Deadline", { name: "deadline", type: "datetime-local" }, "optional: the old token stops then at the latest"));
  const r = await modal(`Rotate “${t.name}”`, wrap, {
    submit: "Rotate", onSubmit: async (box) => {
      const form = wrap.closest("form");
      clearFieldErrors(form);
      const body = { grace_secs: Number(form.elements.grace_secs.value) };
      const d = form.elements.deadline.value;
      if (d) body.deadline = new Date(d).toISOString().replace(/\.\d{3}Z$/, "Z");
      try { return await api("POST", `/v1/tokens/${encodeURIComponent(t.id)}/rotate`, body); }
      catch (e) { showFieldError(form, box, e); return undefined; }
    },
  });
  if (!r) return;
  toast(`Successor “${r.successor.name}” created; “${t.name}” stops ${r.rotation.grace_secs} s after its first use${r.rotation.deadline ? `, at ${fmtTime(r.rotation.deadline)} at the latest` : ""}.`);
  if (can("download", r.successor)) await download(r.successor, "download");
  else route();
}

async function simple(t, what) {
  try { await api("POST", `/v1/tokens/${encodeURIComponent(t.id)}/${what}`); toast(`Token ${what}d.`); }
  catch (e) { toast(e.message); }
  route();
}

async function revoke(t) {
  const ok = await confirmAction("Revoke the token?", `Revoking “${t.name}” is final: the token stops working everywhere within seconds.`, "Revoke");
  if (ok) await simple(t, "revoke");
}

async function del(t) {
  const ok = await confirmAction("Delete the token?",
    `Deleting “${t.name}” cannot be undone: the record disappears and its JWT stays revoked. To keep the record, revoke it instead.`, "Delete");
  if (!ok) return;
  try { await api("DELETE", `/v1/tokens/${encodeURIComponent(t.id)}`); toast("Token deleted."); }
  catch (e) { toast(e.message); }
  route();
}

async function revokeAllDialog() {
  const own = !isAdmin();
  const ok = await confirmAction("Revoke all tokens?",
    own ? "Every one of your tokens is revoked. This is final." : `Every token of organization ${session.org.id} is revoked. This is final.`, "Revoke all");
  if (!ok) return;
  try {
    const r = await api("POST", "/v1/tokens/revoke-all", own ? { user: session.user.id } : { org: session.org.id });
    toast(`${r.revoked} tokens revoked.`);
  } catch (e) { toast(e.message); }
  route();
}

/// The token dialog's scopes: a checkbox per scope of the organization's catalogue that the
/// token's owner is granted (`GET /v1/me/scopes`, or `/v1/users/{user}/scopes` for someone
/// else), with its description. A scope the token carries that is no longer granted stays
/// listed and checked, marked, so that saving other changes keeps the token as it is.
function scopePicker(t) {
  const list = el("div", { class: "scope-list" }, el("p", { class: "hint" }, "Loading the scopes…"));
  const box = el("fieldset", { id: "f-scopes", class: "scopes" }, el("legend", {}, "Scopes"), list);
  box.load = async (owner) => {
    const who = owner || (t && t.user !== session.user.id ? t.user : null);
    let granted;
    try { granted = (await api("GET", who ? `/v1/users/${encodeURIComponent(who)}/scopes` : "/v1/me/scopes")).scopes; }
    catch (e) {
      delete box.dataset.loaded;
      list.replaceChildren(el("p", { class: "hint" }, t
        ? `The scopes could not be listed (${e.message}); saving keeps the token's scopes.`
        : `The scopes could not be listed (${e.message}); the token carries none.`));
      return;
    }
    const held = new Set(t ? t.scopes : []);
    const names = new Set(granted.map((g) => g.name));
    const rows = [...granted.map((g) => [g.name, g.description]),
      ...[...held].filter((n) => !names.has(n)).map((n) => [n, "no longer granted to the owner; uncheck to drop it"])];
    list.replaceChildren(...(rows.length
      ? rows.map(([name, description], i) => el("div", { class: "scope" },
        el("input", { type: "checkbox", id: `f-scope-${i}`, name: "scopes", value: name, checked: held.has(name) }),
        el("label", { for: `f-scope-${i}` }, el("code", {}, name), description ? el("span", { class: "hint" }, ` ${description}`) : null)))
      : [el("p", { class: "hint" }, "The owner is granted no scope; the token carries none.")]));
    box.dataset.loaded = "1";
    box.dispatchEvent(new Event("change", { bubbles: true }));
  };
  box.load(null);
  return box;
}

// A token's rate limits and quota (`limits` of a create or an edit; not in the JWT).
const LIMIT_FIELDS = [["per_second", "per second"], ["per_minute", "per minute"], ["per_hour", "per hour"],
  ["per_day", "per day"], ["per_month", "per month"], ["total", "in total"]];

/// The token dialog's rate limits: empty fields take the organization's default. For an
/// edit, the token's own values are read first (`GET /v1/tokens/{id}/rate-limits`); until
/// then an edit leaves them as they are.
function limitFields(t) {
  const inputs = LIMIT_FIELDS.map(([k, label]) => field(`Requests ${label}`, { name: `limits.${k}`, id: `f-limit-${k}`, type: "number", min: 1 }));
  const box = el("fieldset", { id: "f-limits", class: "scopes" }, el("legend", {}, "Rate limits and quota"),
    el("p", { class: "hint" }, "Enforced at every edge. Empty: the organization's default, if any. Changing them never revokes the JWT."),
    el("div", { class: "limit-grid" }, ...inputs));
  box.own = {};
  if (!t) { box.dataset.loaded = "1"; return box; }
  (async () => {
    try {
      box.own = (await api("GET", `/v1/tokens/${encodeURIComponent(t.id)}/rate-limits`)).own || {};
      for (const [k] of LIMIT_FIELDS) if (box.own[k] != null) box.querySelector(`[name="limits.${k}"]`).value = String(box.own[k]);
      box.dataset.loaded = "1";
      box.dispatchEvent(new Event("change", { bubbles: true }));
    } catch (e) { box.append(el("p", { class: "hint" }, `The rate limits could not be read (${e.message}); saving keeps them.`)); }
  })();
  return box;
}

/// The limits the dialog's fields say (only the filled ones).
function limitsOf(f) {
  const out = {};
  for (const [k] of LIMIT_FIELDS) {
    const v = String(f.get(`limits.${k}`) || "").trim();
    if (v !== "") out[k] = Number(v);
  }
  return out;
}

function tokenForm(t) {
  const lifetime = field("Lifetime", {
    tag: "select", name: "lifetime_days", id: "f-lifetime",
    options: [...LIFETIMES.map((d) => [String(d), `${d} days`]), ["custom", "Custom date"]], value: t ? "custom" : "90",
  });
  const custom = field("Expires on", { name: "expires_at", type: "date", id: "f-expires", value: t ? t.expires_at.slice(0, 10) : "" });
  const sel = lifetime.querySelector("select");
  const toggle = () => { custom.hidden = sel.value !== "custom"; };
  sel.addEventListener("change", toggle);
  toggle();
  const parts = [
    field("Name", { name: "name", required: true, value: t && t.name }),
    field("Description", { name: "description", tag: "textarea", rows: 2, value: t && t.description }),
  ];
  const picker = scopePicker(t);
  if (!t && (isAdmin() || isPartner())) {
    const forUser = field("For user", { name: "user", id: "f-user" }, "username or user id; empty: yourself");
    forUser.querySelector("input").addEventListener("change", (ev) => picker.load(ev.target.value.trim() || null));
    parts.push(forUser);
  }
  parts.push(lifetime, custom, picker, limitFields(t),
    field("IP filter", { name: "ip_allow", tag: "textarea", rows: 2, value: t ? t.ip_allow.join("\n") : "" }, "addresses or CIDRs, one per line; empty: any address"));
  return parts;
}

/// The body of a create, or of an edit (`t`: only what changed, so that an edit of the
/// name does not revoke the JWT).
function tokenBody(form, t) {
  const f = new FormData(form);
  const list = (v, re) => String(v || "").split(re).map((s) => s.trim()).filter(Boolean);
  const body = {
    name: f.get("name"), description: f.get("description") || "",
    scopes: f.getAll("scopes").map(String).sort(), ip_allow: list(f.get("ip_allow"), /[\s,]+/),
  };
  const lt = f.get("lifetime_days");
  if (lt === "custom") body.expires_at = f.get("expires_at") ? dateToRfc3339(f.get("expires_at"), true) : "";
  else body.lifetime_days = Number(lt);
  const limits = limitsOf(f);
  if (!t) {
    if (f.get("user")) body.user = f.get("user");
    if (Object.keys(limits).length) body.limits = limits;
    return body;
  }
  const limitBox = form.querySelector("#f-limits");
  if (limitBox && limitBox.dataset.loaded === "1" && JSON.stringify(limits) !== JSON.stringify(Object.fromEntries(LIMIT_FIELDS.map(([k]) => [k, limitBox.own[k]]).filter(([, v]) => v != null)))) body.limits = limits;
  const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  if (body.name === t.name) delete body.name;
  if (body.description === t.description) delete body.description;
  // Until the picker has listed the scopes, an edit leaves them as they are.
  const picked = form.querySelector("#f-scopes");
  if (!(picked && picked.dataset.loaded === "1") || same(body.scopes, [...t.scopes].sort())) delete body.scopes;
  if (same(body.ip_allow, t.ip_allow)) delete body.ip_allow;
  if (lt === "custom" && f.get("expires_at") === t.expires_at.slice(0, 10)) delete body.expires_at;
  return body;
}

async function newTokenDialog() {
  const parts = tokenForm(null);
  const wrap = el("div", {}, ...parts);
  const made = await modal("New API token", wrap, {
    submit: "Create", onSubmit: async (box) => {
      const form = wrap.closest("form");
      clearFieldErrors(form);
      try { return await api("POST", "/v1/tokens", tokenBody(form, null)); }
      catch (e) { showFieldError(form, box, e); return undefined; }
    },
  });
  if (made) toast(`Token “${made.name}” created: Pending until its owner downloads it.`);
  route();
}

// The token fields inside the JWT (`tokens::edit`): changing one revokes the current JWT
// and the token goes back to Pending. Name, description and rate limits are not in it.
const JWT_FIELDS = { scopes: "scopes", ip_allow: "IP filter", lifetime_days: "expiry", expires_at: "expiry", not_before: "start" };
const FIELD_NAMES = { name: "name", description: "description", limits: "rate limits", ...JWT_FIELDS };

/// What saving `body` (an edit of `t`) does to the current JWT, in words.
function editEffect(body, t) {
  const changed = [...new Set(Object.keys(body).map((k) => FIELD_NAMES[k] || k))];
  if (!changed.length) return "Nothing changed yet.";
  const inJwt = [...new Set(Object.keys(body).filter((k) => k in JWT_FIELDS).map((k) => JWT_FIELDS[k]))];
  const what = `Saving changes the ${changed.join(", ")}.`;
  if (!inJwt.length) return `${what} The current JWT keeps working.`;
  if (t.status === "pending") return `${what} The token has no JWT yet; its owner downloads one with these settings.`;
  return `${what} The ${inJwt.join(", ")} ${inJwt.length > 1 ? "are" : "is"} inside the JWT: saving revokes the current JWT at once, and the token is Pending until its owner downloads a new one.`;
}

async function editDialog(t) {
  const effect = el("p", { class: "notice", id: "edit-effect", "aria-live": "polite" });
  const wrap = el("div", {}, ...tokenForm(t),
    el("p", { class: "hint" }, "Changing the scopes, the expiry or the IP filter revokes the current JWT (they are inside it); the name and the description do not."),
    effect);
  const update = () => { effect.textContent = editEffect(tokenBody(wrap.closest("form"), t), t); };
  wrap.addEventListener("input", update);
  wrap.addEventListener("change", update);
  queueMicrotask(update);
  const r = await modal(`Edit “${t.name}”`, wrap, {
    submit: "Save", onSubmit: async (box) => {
      const form = wrap.closest("form");
      clearFieldErrors(form);
      try { return await api("PATCH", `/v1/tokens/${encodeURIComponent(t.id)}`, tokenBody(form, t)); }
      catch (e) { showFieldError(form, box, e); return undefined; }
    },
  });
  if (r) toast(r.jwt_revoked ? "Saved; the JWT was revoked: its owner downloads a new one." : "Saved.");
  route();
}

// ---------------------------------------------------------------------------------------
// Authentication log

// The authentication log's CSV columns: the fields of an event of GET /v1/auth-log.
const AUTH_LOG_CSV = ["at", "outcome", "reason", "token", "user", "ip", "method", "path", "source"];

function csvCell(v) {
  let s = v === null || v === undefined ? "" : String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`; // never a formula in a spreadsheet
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function authLogCsv(events) {
  return [AUTH_LOG_CSV.join(","), ...events.map((e) => AUTH_LOG_CSV.map((c) => csvCell(e[c])).join(","))].join("\r\n") + "\r\n";
}

async function showAuthLog() {
  const render = renderer();
  const p = new URLSearchParams(location.hash.split("?")[1] || "");
  const f = { token: p.get("token") || "", user: p.get("user") || "", outcome: p.get("outcome") || "", since: p.get("since") || "", until: p.get("until") || "", page: Number(p.get("page") || 1) };
  const form = el("form", { class: "toolbar", role: "search" },
    field("Outcome", { tag: "select", name: "outcome", options: [["", "any"], ["allow", "allow"], ["deny", "deny"]], value: f.outcome }),
    field("Token", { name: "token", value: f.token }), field("User", { name: "user", value: f.user }),
    field("From", { name: "since", type: "date", value: f.since }), field("Until", { name: "until", type: "date", value: f.until }),
    el("button", { type: "submit" }, "Apply"));
  const go = (page) => {
    const d = new FormData(form);
    history.replaceState(null, "", `#/auth-log${qs({ outcome: d.get("outcome"), token: d.get("token"), user: d.get("user"), since: d.get("since"), until: d.get("until"), page: page > 1 ? page : "" })}`);
    showAuthLog();
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); go(1); });
  const query = { user: f.user, outcome: f.outcome, since: dateToRfc3339(f.since, false), until: dateToRfc3339(f.until, true) };
  const path = f.token ? `/v1/tokens/${encodeURIComponent(f.token)}/auth-log` : "/v1/auth-log";
  let events, total;
  try { ({ events, total } = await api("GET", `${path}${qs({ ...(f.token ? { outcome: f.outcome, since: query.since, until: query.until } : query), page: f.page, per_page: 50 })}`)); }
  catch (e) { render("Authentication log", form, errorBox(e)); return; }
  const csv = el("button", {
    type: "button", id: "auth-csv", onclick: () => {
      const text = authLogCsv(events);
      const a = el("a", { href: "data:text/csv;charset=utf-8," + encodeURIComponent(text), download: "auth-log.csv" });
      document.body.append(a); a.click(); a.remove();
    },
  }, "CSV");
  const table = tableWrap(el("table", { id: "auth-log" },
    el("thead", {}, el("tr", {}, ...["When", "Outcome", "Token", "User", "From", "Request", "Source"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...events.map((e) => el("tr", {},
      el("td", {}, fmtTime(e.at)), el("td", {}, e.outcome, e.reason ? el("div", { class: "sub" }, e.reason) : null),
      el("td", { "data-column": "token", "data-id": e.token }, ...named(e.token_name, e.token)),
      el("td", { "data-column": "user", "data-id": e.user, title: e.user }, e.username || e.user), el("td", { "data-column": "ip" }, e.ip || "—"),
      el("td", {}, [e.method, e.path].filter(Boolean).join(" ") || "—"), el("td", {}, e.source))))));
  const pager = pagerOf(f.page, total, 50, "events", go);
  render(f.token ? `Authentication log of ${f.token}` : "Authentication log", form, el("div", { class: "toolbar" }, csv),
    events.length ? table : el("p", { class: "notice" }, "No event matches."), pager);
}

// ---------------------------------------------------------------------------------------
// Admin pages

async function showUsers() {
  const render = renderer();
  const org = session.org.id;
  let users;
  try { users = (await api("GET", `/v1/orgs/${encodeURIComponent(org)}/users`)).users; }
  catch (e) { render("Users", errorBox(e)); return; }
  const roles = [["admin", "admin"], ["user", "user"], ["readonly", "readonly"]];
  if (session.org.partner) roles.push(["partner", "partner"]);
  const linkOf = async (what, u) => {
    try {
      const r = await api("POST", `/v1/users/${encodeURIComponent(u.id)}/${what}`);
      if (r.link_mailed_to) { toast(`The reset link was mailed to ${u.username} (${r.link_mailed_to}), and to nobody else.`); return; }
      await showSecret(`Password-reset link for ${u.username}`, r.link.url, `reset-${u.username}.txt`, `Give this link to ${u.username}; it works once, until ${fmtTime(r.link.expires_at)}.`);
    } catch (e) { toast(e.message); }
  };
  const rows = users.map((u) => el("tr", { "data-user": u.username },
    el("td", {}, el("strong", {}, u.username), el("div", { class: "sub" }, u.display_name)),
    el("td", {}, u.id === session.user.id ? u.role : el("select", {
      "aria-label": `Role of ${u.username}`, onchange: async (ev) => {
        try { await api("PATCH", `/v1/users/${encodeURIComponent(u.id)}`, { role: ev.target.value }); toast("Role changed."); }
        catch (e) { toast(e.message); }
        showUsers();
      },
    }, ...roles.map(([v, t]) => el("option", { value: v, selected: v === u.role }, t)))),
    el("td", {}, u.state), el("td", {}, u.delegated ? "yes" : "no"),
    el("td", {}, u.id === session.user.id ? "you" : el("div", { class: "actions" },
      u.state === "disabled"
        ? act("Enable", async () => { try { await api("POST", `/v1/users/${encodeURIComponent(u.id)}/enable`); } catch (e) { toast(e.message); } showUsers(); })
        : act("Disable", async () => {
          if (await confirmAction(`Disable ${u.username}?`, "Their sessions end and their tokens are suspended until you enable them again.", "Disable")) {
            try { await api("POST", `/v1/users/${encodeURIComponent(u.id)}/disable`); } catch (e) { toast(e.message); }
            showUsers();
          }
        }),
      act("Reset password", async () => {
        if (await confirmAction(`Reset the password of ${u.username}?`, "Their sessions end, and the tokens waiting for their download are revoked. Give the link to them only.", "Reset password")) await linkOf("reset-link", u);
      }),
      act("Delete", async () => {
        if (await confirmAction(`Delete ${u.username}?`, "This cannot be undone: every token of theirs is revoked. To keep them, disable instead.", "Delete")) {
          try { await api("DELETE", `/v1/users/${encodeURIComponent(u.id)}`); } catch (e) { toast(e.message); }
          showUsers();
        }
      }, "danger")))));
  const create = el("button", {
    type: "button", class: "primary", id: "new-user", onclick: async () => {
      const wrap = el("div", {},
        field("Username", { name: "username", required: true }), field("Display name", { name: "display_name" }),
        field("Role", { tag: "select", name: "role", options: roles, value: "user" }),
        field("Mail address", { name: "email", type: "email", autocomplete: "off" }, "the invitation is mailed there when this server sends mail"),
        field("Invitation valid for (days)", { name: "invite_days", type: "number", value: "7", min: 1, max: 30 }));
      const made = await modal("New user", wrap, {
        submit: "Create and invite", onSubmit: async (box) => {
          const form = wrap.closest("form");
          clearFieldErrors(form);
          const d = new FormData(form);
          const body = { username: d.get("username"), role: d.get("role"), invite_days: Number(d.get("invite_days") || 7) };
          if (d.get("display_name")) body.display_name = d.get("display_name");
          if (d.get("email")) body.email = d.get("email");
          try { return await api("POST", `/v1/orgs/${encodeURIComponent(org)}/users`, body); }
          catch (e) { showFieldError(form, box, e); return undefined; }
        },
      });
      if (made && made.link_mailed_to) toast(`${made.username} was created; the invitation was mailed to ${made.link_mailed_to}, and to nobody else.`);
      else if (made && !made.link) toast(`${made.username} was created; an admin of their organization sends the invitation.`);
      else if (made) await showSecret(`Invitation for ${made.username}`, made.link.url, `invite-${made.username}.txt`, `Give this link to ${made.username}; it works once, until ${fmtTime(made.link.expires_at)}.`);
      showUsers();
    },
  }, "New user");
  render("Users", el("div", { class: "toolbar" }, create), tableWrap(el("table", { id: "users" },
    el("thead", {}, el("tr", {}, ...["User", "Role", "State", "Delegates", "Actions"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...rows))));
}

async function showAudit() {
  const render = renderer();
  const p = new URLSearchParams(location.hash.split("?")[1] || "");
  const page = Number(p.get("page") || 1);
  let entries, total;
  try { ({ entries, total } = await api("GET", `/v1/audit-log${qs({ page, per_page: 50 })}`)); }
  catch (e) { render("Audit log", errorBox(e)); return; }
  const go = (n) => { history.replaceState(null, "", `#/audit${qs({ page: n > 1 ? n : "" })}`); showAudit(); };
  render("Audit log", tableWrap(el("table", { id: "audit" },
    el("thead", {}, el("tr", {}, ...["When", "Action", "Actor", "Credential", "Target", "Detail"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...entries.map((a) => el("tr", {},
      el("td", {}, fmtTime(a.at)), el("td", {}, a.action), el("td", { "data-column": "actor", title: a.actor }, a.actor_name || a.actor),
      el("td", {}, el("code", {}, a.credential || "—")),
      el("td", { "data-column": "target" }, ...named(a.target_name, a.target)), el("td", {}, el("code", {}, JSON.stringify(a.detail)))))))),
  pagerOf(page, total, 50, "entries", go));
}

async function showOrg() {
  const render = renderer();
  const org = session.org;
  let edges = [], keys = [], scim = [], leakPolicy = "revoke";
  try {
    edges = (await api("GET", `/v1/orgs/${encodeURIComponent(org.id)}/edge-credentials`)).edges;
    scim = (await api("GET", `/v1/orgs/${encodeURIComponent(org.id)}/scim-credentials`)).credentials;
    keys = (await api("GET", `/v1/orgs/${encodeURIComponent(org.id)}/keys`)).keys;
    leakPolicy = (await api("GET", `/v1/orgs/${encodeURIComponent(org.id)}/leak-policy`)).policy;
  } catch (e) { render("Organization", errorBox(e)); return; }
  const sso = await ssoSection(org);
  const leakForm = el("form", { id: "leak-policy" },
    field("When a token of this organization is found in public", {
      tag: "select", name: "policy", value: leakPolicy,
      options: [["revoke", "Revoke it, and record who must be told"], ["notify_only", "Keep it working; only record who must be told"]],
    }, "Reports come from secret scanners (GitHub) and from anyone through the report page; the audit log says where each token was found."),
    el("p", {}, el("button", { type: "submit" }, "Save")));
  leakForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const r = await api("PUT", `/v1/orgs/${encodeURIComponent(org.id)}/leak-policy`, { policy: new FormData(leakForm).get("policy") });
      toast(`Leak policy: ${r.policy}.`);
    } catch (e) { toast(e.message); }
  });
  const newOrg = newOrgButton(org);
  const settingsErr = el("div");
  const ownersBox = el("input", { type: "checkbox", id: "f-owners-manage", name: "owners_manage_tokens", checked: org.owners_manage_tokens });
  const settings = el("form", { id: "org-settings" },
    field("Name", { name: "name", value: org.name, required: true }),
    field("Longest token lifetime (days)", { name: "max_lifetime_days", type: "number", min: 1, max: 400, value: org.max_lifetime_days },
      org.root ? "1 to 400" : org.managed_by
        ? "1 to 400; you may shorten it, and the managing partner's admins may lengthen it"
        : "1 to 400; you may shorten it, and root admins may lengthen it"),
    el("div", { class: "check" }, ownersBox, el("label", { for: "f-owners-manage" },
      " Token owners may edit, disable, enable and delete their own tokens",
      el("span", { class: "hint" }, " (off: only admins do; owners still create, regenerate, rotate and revoke theirs)"))),
    settingsErr, el("p", {}, el("button", { type: "submit" }, "Save")));
  settings.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearFieldErrors(settings);
    const d = new FormData(settings);
    try {
      const o = await api("PATCH", `/v1/orgs/${encodeURIComponent(org.id)}`, {
        name: d.get("name"), max_lifetime_days: Number(d.get("max_lifetime_days")), owners_manage_tokens: ownersBox.checked,
      });
      session.org = o;
      toast(`Saved: tokens of ${o.name} may live up to ${o.max_lifetime_days} days; ${o.owners_manage_tokens ? "owners manage their own tokens" : "only admins edit, disable, enable and delete tokens"}.`);
      showOrg();
    } catch (e) { showFieldError(settings, settingsErr, e); }
  });
  const rotate = el("button", {
    type: "button", id: "rotate", onclick: async () => {
      const wrap = el("div", {}, field("Algorithm", { tag: "select", name: "alg", options: [["EdDSA", "EdDSA"], ["ES256", "ES256"]], value: org.key_alg }));
      const r = await modal("Rotate the signing key?", [el("p", {}, "New tokens are signed with a new key; the old key stays published until its tokens expire."), wrap], {
        submit: "Rotate", onSubmit: async () => api("POST", `/v1/orgs/${encodeURIComponent(org.id)}/keys/rotate`, { alg: new FormData(wrap.closest("form")).get("alg") }),
      });
      if (r) toast(`New key ${r.kid}.`);
      showOrg();
    },
  }, "Rotate key");
  const newEdge = el("button", {
    type: "button", class: "primary", id: "new-edge", onclick: async () => {
      const wrap = el("div", {}, field("Name", { name: "name", required: true }));
      const r = await modal("New edge credential", wrap, {
        submit: "Create", onSubmit: async (box) => {
          const form = wrap.closest("form");
          clearFieldErrors(form);
          try { return await api("POST", `/v1/orgs/${encodeURIComponent(org.id)}/edge-credentials`, { name: new FormData(form).get("name") }); }
          catch (e) { showFieldError(form, box, e); return undefined; }
        },
      });
      if (r) await showSecret(`Edge credential ${r.name}`, r.secret, `${r.name}.secret`, "This secret is shown once: configure your edges with it now.");
      showOrg();
    },
  }, "New edge credential");
  render(`Organization ${org.name}`,
    el("dl", {},
      el("dt", {}, "Id"), el("dd", {}, org.id),
      el("dt", {}, "Issuer"), el("dd", {}, el("code", {}, org.issuer)),
      el("dt", {}, "Audience"), el("dd", {}, org.audience),
      el("dt", {}, "Maximum token lifetime"), el("dd", {}, `${org.max_lifetime_days} days`),
      el("dt", {}, "Owners manage their tokens"), el("dd", { id: "org-owners-manage" }, org.owners_manage_tokens
        ? "Yes: they edit, disable, enable and delete their own tokens"
        : "No: only admins edit, disable, enable and delete tokens"),
      el("dt", {}, "Public keys"), el("dd", {}, el("a", { href: org.jwks_uri }, "JWKS"))),
    el("h2", {}, "Settings"),
    settings,
    el("h2", {}, "Signing keys"),
    tableWrap(el("table", { id: "keys" },
      el("thead", {}, el("tr", {}, ...["Key", "Algorithm", "State", "Created"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...keys.map((k) => el("tr", { "data-kid": k.kid },
        el("td", {}, el("code", {}, k.kid)), el("td", {}, k.alg),
        el("td", { "data-column": "state" }, k.active
          ? el("strong", {}, "Active: signs new tokens")
          : `Retired ${fmtTime(k.retired_at)}; still published until ${fmtTime(k.published_until)}`),
        el("td", {}, fmtTime(k.created_at))))))),
    el("div", { class: "toolbar" }, rotate),
    ...(newOrg ? [el("h2", {}, org.root ? "Organizations" : "Customer organizations"), el("div", { class: "toolbar" }, newOrg)] : []),
    el("h2", {}, "Leaked tokens"),
    leakForm,
    ...sso,
    el("h2", {}, "Edge credentials"),
    el("div", { class: "toolbar" }, newEdge),
    edges.length ? tableWrap(el("table", { id: "edges" },
      el("thead", {}, el("tr", {}, ...["Name", "Id", "Created", "State", "Actions"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...edges.map((e) => el("tr", {},
        el("td", {}, e.name), el("td", {}, el("code", {}, e.id)), el("td", {}, fmtTime(e.created_at)),
        el("td", {}, e.revoked_at ? `revoked ${fmtTime(e.revoked_at)}` : "active"),
        el("td", {}, e.revoked_at ? "" : act("Revoke", async () => {
          if (await confirmAction(`Revoke ${e.name}?`, "Its usage reports are refused from now on. This is final.", "Revoke")) {
            try { await api("POST", `/v1/orgs/${encodeURIComponent(org.id)}/edge-credentials/${encodeURIComponent(e.id)}/revoke`); } catch (x) { toast(x.message); }
            showOrg();
          }
        }, "danger"))))))) : el("p", { class: "notice" }, "No edge credential yet."),
    ...scimSection(org, scim));
}

/// The Organization page's SCIM section: the credentials an identity provider provisions
/// users with (`/scim/v2/<org>`), their last use, New (the secret shown once) and Revoke.
function scimSection(org, creds) {
  const base = `/v1/orgs/${encodeURIComponent(org.id)}/scim-credentials`;
  const create = el("button", {
    type: "button", id: "new-scim", onclick: async () => {
      const wrap = el("div", {}, field("Name", { name: "name", id: "f-scim-name", required: true }, "the identity provider, e.g. okta"));
      const r = await modal("New SCIM credential", wrap, {
        submit: "Create", onSubmit: async (box) => {
          const form = wrap.closest("form");
          clearFieldErrors(form);
          try { return await api("POST", base, { name: new FormData(form).get("name") }); }
          catch (e) { showFieldError(form, box, e); return undefined; }
        },
      });
      if (r) await showSecret(`SCIM credential ${r.name}`, r.secret, `${r.name}.scim-secret`,
        `This secret is shown once. Give your identity provider the SCIM base URL ${r.base_url} and this secret as its bearer token; it provisions users as you.`);
      showOrg();
    },
  }, "New SCIM credential");
  return [el("h2", {}, "SCIM provisioning"),
    el("p", {}, "Your identity provider creates, updates and deactivates users through SCIM 2.0; a deactivated user's tokens stop working at every edge."),
    el("div", { class: "toolbar" }, create),
    creds.length ? tableWrap(el("table", { id: "scim-credentials" },
      el("thead", {}, el("tr", {}, ...["Name", "Created", "Last used", "State", "Actions"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...creds.map((c) => el("tr", { "data-scim": c.id },
        el("td", {}, ...named(c.name, c.id)), el("td", {}, fmtTime(c.created_at)), el("td", {}, c.last_used_at ? fmtTime(c.last_used_at) : "never"),
        el("td", { "data-column": "state" }, c.revoked_at ? `revoked ${fmtTime(c.revoked_at)}` : "active"),
        el("td", {}, c.revoked_at ? "" : act("Revoke", async () => {
          if (await confirmAction(`Revoke ${c.name}?`, "Your identity provider's next SCIM request is refused. This is final.", "Revoke")) {
            try { await api("POST", `${base}/${encodeURIComponent(c.id)}/revoke`); } catch (x) { toast(x.message); }
            showOrg();
          }
        }, "danger"))))))) : el("p", { class: "notice", id: "no-scim" }, "No SCIM credential yet.")];
}

/// The event types an endpoint may ask for, in the words of its checkbox.
const WEBHOOK_EVENTS = [
  ["token.expiring", "A token expires in 30, 7 or 1 days"],
  ["token.revoked", "A token was revoked"],
  ["token.rotated", "A token was rotated"],
  ["token.exposed", "A token was found in public"],
  ["token.revoked_but_presented", "A revoked or replaced token was still presented"],
  ["token.used_from_new_network", "A token was used from a new network"],
  ["user.deprovisioned", "A user was disabled or deleted"],
];

/// Webhooks (org admins): the endpoints, New (the signing secret shown once), Delete, and a
/// delivery log per endpoint (`#/webhooks/<id>`).
async function showWebhooks() {
  const render = renderer();
  const org = session.org;
  const base = `/v1/orgs/${encodeURIComponent(org.id)}/webhooks`;
  let hooks;
  try { hooks = (await api("GET", base)).webhooks; } catch (e) { render("Webhooks", errorBox(e)); return; }
  const create = el("button", {
    type: "button", class: "primary", id: "new-webhook", onclick: async () => {
      const boxes = WEBHOOK_EVENTS.map(([ev, words]) => {
        const id = `f-event-${ev.replace(/[._]/g, "-")}`;
        return el("div", { class: "check" }, el("input", { type: "checkbox", id, name: "events", value: ev }),
          el("label", { for: id }, ` ${words} `, el("code", {}, ev)));
      });
      const wrap = el("div", {},
        field("URL", { name: "url", id: "f-webhook-url", type: "url", required: true }, "https://… where your receiver listens"),
        el("fieldset", { id: "f-events" }, el("legend", {}, "Events (none checked: every event)"), ...boxes),
        field("Description", { name: "description", id: "f-webhook-description" }, "optional, e.g. security team"));
      const r = await modal("New webhook endpoint", wrap, {
        submit: "Create", onSubmit: async (box) => {
          const form = wrap.closest("form");
          clearFieldErrors(form);
          const d = new FormData(form);
          try { return await api("POST", base, { url: d.get("url"), events: d.getAll("events"), description: d.get("description") || "" }); }
          catch (e) { showFieldError(form, box, e); return undefined; }
        },
      });
      if (r) await showSecret(`Signing secret of ${r.webhook.url}`, r.secret, "webhook-secret.txt",
        "This signing secret is shown once. Give it to your receiver now: it checks each message's webhook-signature header with it (Standard Webhooks).");
      showWebhooks();
    },
  }, "New endpoint");
  render("Webhooks",
    el("p", {}, "Tessera POSTs each event to your endpoints, signed as the Standard Webhooks specification says, and retries a failed delivery for 37 hours with the same webhook-id."),
    el("div", { class: "toolbar" }, create),
    hooks.length ? tableWrap(el("table", { id: "webhooks" },
      el("thead", {}, el("tr", {}, ...["Endpoint", "Events", "Created", "Actions"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...hooks.map((w) => el("tr", { "data-webhook": w.id },
        el("td", {}, el("a", { href: `#/webhooks/${encodeURIComponent(w.id)}` }, w.url),
          w.description ? el("div", { class: "sub" }, w.description) : null, el("div", { class: "sub" }, el("code", {}, w.id))),
        el("td", {}, w.events.length ? w.events.join(", ") : "every event"),
        el("td", {}, fmtTime(w.created_at)),
        el("td", {}, el("a", { class: "button", href: `#/webhooks/${encodeURIComponent(w.id)}`, "data-action": "deliveries" }, "Delivery log"), " ",
          act("Delete", async () => {
            if (await confirmAction(`Delete the endpoint ${w.url}?`, "Nothing more is sent to it, pending messages included. This is final.", "Delete")) {
              try { await api("DELETE", `${base}/${encodeURIComponent(w.id)}`); } catch (x) { toast(x.message); }
              showWebhooks();
            }
          }, "danger"))))))) : el("p", { class: "notice", id: "no-webhooks" }, "No webhook endpoint yet."));
}

/// One endpoint's delivery log, newest first, 50 a page: each message's event, state,
/// attempts, last answer and body, with Resend (the same webhook-id, sent now).
async function showDeliveries(id) {
  const render = renderer();
  const org = session.org;
  const hook = `/v1/orgs/${encodeURIComponent(org.id)}/webhooks/${encodeURIComponent(id)}`;
  const p = new URLSearchParams(location.hash.split("?")[1] || "");
  const page = Number(p.get("page") || 1);
  let endpoint, deliveries;
  try {
    endpoint = (await api("GET", `/v1/orgs/${encodeURIComponent(org.id)}/webhooks`)).webhooks.find((w) => w.id === id);
    deliveries = (await api("GET", `${hook}/deliveries${qs({ page, per_page: 50 })}`)).deliveries;
  } catch (e) { render("Delivery log", errorBox(e)); return; }
  const go = (n) => { history.replaceState(null, "", `#/webhooks/${encodeURIComponent(id)}${qs({ page: n > 1 ? n : "" })}`); showDeliveries(id); };
  const when = (d) => d.status === "delivered" ? `delivered ${fmtTime(d.delivered_at)}`
    : d.status === "failed" ? `gave up ${fmtTime(d.failed_at)}`
      : `next try ${fmtTime(d.next_attempt_at)}`;
  const answer = (d) => d.last_status ? `HTTP ${d.last_status}` : d.last_error || "—";
  render(`Delivery log of ${endpoint ? endpoint.url : id}`,
    el("p", {}, el("a", { href: "#/webhooks" }, "All webhook endpoints")),
    deliveries.length ? tableWrap(el("table", { id: "deliveries" },
      el("thead", {}, el("tr", {}, ...["Event", "State", "Attempts", "Last answer", "Created", "Message", "Actions"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...deliveries.map((d) => el("tr", { "data-message": d.id },
        el("td", {}, d.event),
        el("td", { "data-column": "state" }, badge(d.status), el("div", { class: "sub" }, when(d))),
        el("td", { "data-column": "attempts" }, String(d.attempts)),
        el("td", { "data-column": "answer" }, answer(d)),
        el("td", {}, fmtTime(d.created_at)),
        el("td", {}, el("details", {}, el("summary", {}, el("code", {}, d.id)), el("pre", {}, JSON.stringify(d.payload, null, 2)))),
        el("td", {}, act("Resend", async () => {
          try { await api("POST", `${hook}/deliveries/${encodeURIComponent(d.id)}/resend`); toast(`${d.event}: sent again now, with the same webhook-id.`); }
          catch (x) { toast(x.message); }
          showDeliveries(id);
        }))))))) : el("p", { class: "notice", id: "no-deliveries" }, page > 1 ? "No older message." : "Nothing sent to this endpoint yet."),
    el("nav", { class: "pager", "aria-label": "Pages" },
      el("button", { type: "button", disabled: page <= 1, onclick: () => go(page - 1) }, "Newer"),
      el("span", { class: "pager-where" }, `Page ${page}`),
      el("button", { type: "button", disabled: deliveries.length < 50, onclick: () => go(page + 1) }, "Older")));
}

/// "New organization": for root admins (any organization) and partner admins (their
/// customers, managed by them). Null for everyone else.
function newOrgButton(org) {
  if (!isAdmin() || !(org.root || org.partner)) return null;
  return el("button", {
    type: "button", id: "new-org", onclick: async () => {
      const wrap = el("div", {},
        field("Id", { name: "id", required: true }, "Letters, digits, - and _; it appears in the issuer URL."),
        field("Name", { name: "name" }, "As people read it (default: the id)."),
        field("Longest token lifetime (days)", { name: "max_lifetime_days", type: "number", min: 1, max: 400, value: 365 }),
        org.root ? field("Kind", { tag: "select", name: "kind", options: [["customer", "An organization"], ["partner", "A partner, which manages customer organizations"]] }) : null);
      const made = await modal("New organization", wrap, {
        submit: "Create", onSubmit: async (box) => {
          const form = wrap.closest("form");
          clearFieldErrors(form);
          const d = new FormData(form);
          const body = { id: d.get("id"), max_lifetime_days: Number(d.get("max_lifetime_days") || 365) };
          if (d.get("name")) body.name = d.get("name");
          if (d.get("kind") === "partner") body.partner = true;
          if (!org.root) body.managed_by = org.id;
          try { return await api("POST", "/v1/orgs", body); }
          catch (e) { showFieldError(form, box, e); return undefined; }
        },
      });
      if (made) toast(`Organization ${made.name} (${made.id}) created.`);
    },
  }, "New organization");
}

// ---------------------------------------------------------------------------------------
// Notifications: the caller's mail address and the events mailed to them

const EVENT_WORDS = {
  "token.expiring": "A token of mine, or of my organization if I am an admin, expires in 30, 7 or 1 days",
  "token.exposed": "A token was found exposed (in a public repository, a paste, a report)",
  "token.revoked": "A token was revoked by someone else",
  "token.used_from_new_network": "A token was used from a network it was not used from in 30 days",
  "token.revoked_but_presented": "A replaced token was presented after its rotation ended",
};

async function showNotifications() {
  let n;
  try { n = await api("GET", "/v1/me/notifications"); } catch (e) { render("Notifications", errorBox(e)); return; }
  const err = el("div");
  const boxId = (event) => `f-mail-${event.replace(/[^a-z_]/g, "-")}`;
  const boxes = n.events.map((e) => el("div", { class: "check" },
    el("input", { type: "checkbox", id: boxId(e.event), name: "mail", value: e.event, checked: e.mail }),
    el("label", { for: boxId(e.event) }, EVENT_WORDS[e.event] || e.event, el("span", { class: "hint" }, ` (${e.event})`))));
  const source = { own: "the address you gave", scim: "from your identity provider (SCIM)", sso: "from your latest single sign-on" }[n.email_source] || "";
  const form = el("form", { id: "notifications" },
    field("Mail address", { name: "email", type: "email", value: n.email_source === "own" ? n.email : "", autocomplete: "email" },
      n.email && n.email_source !== "own" ? `empty: ${n.email}, ${source}` : "where Tessera mails you; empty: your identity provider's, if any"),
    el("fieldset", {}, el("legend", {}, "Mail me when"), ...boxes),
    err, el("p", {}, el("button", { type: "submit", class: "primary" }, "Save")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearFieldErrors(form);
    const d = new FormData(form);
    const on = new Set(d.getAll("mail"));
    try {
      const r = await api("PUT", "/v1/me/notifications", { email: d.get("email"), muted: n.events.map((e) => e.event).filter((e) => !on.has(e)) });
      toast(r.email ? `Saved: mail goes to ${r.email}.` : "Saved: no address, so no mail.");
      showNotifications();
    } catch (e) { showFieldError(form, err, e); }
  });
  render("Notifications",
    el("p", {}, n.mail_configured
      ? (n.email ? `Mail about tokens goes to ${n.email} (${source}).` : "You have no mail address here, so Tessera cannot mail you.")
      : "This Tessera server sends no mail (its operator has not configured SMTP); your choices are kept for when it does."),
    el("p", { class: "hint" }, "Mail names the token and says what to do; it never contains a token or a sign-in link. Webhooks are set per organization by its admins."),
    form);
}

async function showPartner() {
  const render = renderer();
  let orgs;
  try {
    orgs = (await api("GET", "/v1/orgs")).orgs.filter((o) => o.managed_by === session.org.id);
  } catch (e) { render("Customers", errorBox(e)); return; }
  const sections = await Promise.all(orgs.map(customerSection));
  render("Customers", el("p", {}, "Tokens of delegating users of the organizations you manage. You may create and revoke them, never download them."),
    el("div", { class: "toolbar" }, el("button", { type: "button", class: "primary", onclick: newTokenDialog }, "New API token for a customer user")),
    ...(sections.length ? sections : [el("p", { class: "notice" }, "You manage no customer organization.")]));
}

/// Rows per page of one customer organization's tokens on the partner page.
const CUSTOMER_PAGE = 20;

/// One customer organization's section of the partner page: its tokens a page at a time,
/// asked from the server by organization (`/v1/tokens?org=`), never filtered here.
async function customerSection(o) {
  const section = el("section", { "data-org": o.id });
  const heading = el("h2", {}, `${o.name} (${o.id})`);
  const fill = async (page) => {
    let r;
    try { r = await api("GET", `/v1/tokens${qs({ org: o.id, page, per_page: CUSTOMER_PAGE })}`); }
    catch (e) { section.replaceChildren(heading, errorBox(e)); return; }
    const users = [...new Set(r.tokens.map((t) => t.username))];
    section.replaceChildren(...[heading,
      r.total ? el("p", {}, "Delegating users: ", users.join(", "), r.total > r.tokens.length ? " (on this page)" : "") : el("p", { class: "notice" }, "No delegating user has a token yet."),
      r.total ? tableWrap(el("table", {},
        el("thead", {}, el("tr", {}, ...["Token", "Owner", "Status", "Expires", "Actions"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, ...r.tokens.map((t) => el("tr", { "data-token": t.id },
          el("td", {}, t.name), el("td", {}, t.username), el("td", {}, badge(t.status)), el("td", {}, fmtTime(t.expires_at)),
          el("td", {}, el("div", { class: "actions" }, ...rowActions(t)))))))) : null,
      r.total > CUSTOMER_PAGE ? pagerOf(page, r.total, CUSTOMER_PAGE, "tokens", fill) : null].filter(Boolean));
  };
  await fill(1);
  return section;
}

// ---------------------------------------------------------------------------------------
// Reporting leaked tokens (no sign-in needed)

function showReportLeak() {
  setNav();
  const box = el("div", { role: "status" });
  const form = el("form", { class: "card", id: "report-leak" },
    field("Tokens, one per line (up to 1,000)", { tag: "textarea", name: "tokens", required: true, rows: 6, spellcheck: "false", autocomplete: "off" }),
    field("Where you found them (a URL)", { name: "url", type: "url" }),
    field("What kind of place", { name: "source" }, "A repository, a paste, a log, a chat…"),
    box,
    el("p", {}, el("button", { type: "submit", class: "primary" }, "Report")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    box.replaceChildren();
    const f = new FormData(form);
    const tokens = String(f.get("tokens")).split("\n").map((s) => s.trim()).filter((s) => s);
    try {
      const r = await api("POST", "/v1/leaks", { tokens, url: f.get("url") || null, source: f.get("source") || null });
      form.reset();
      box.replaceChildren(el("p", { class: "notice" }, `Thank you: ${r.received} received. Each one that is a Tessera token is handled by its organization's policy (revoked, by default).`));
    } catch (e) {
      let msg = e.message;
      if (e.status === 429) msg = `${e.message} (wait ${e.headers.get("retry-after")} s)`;
      box.replaceChildren(el("p", { class: "error", role: "alert" }, msg));
    }
  });
  renderPublic("Report a leaked token", el("p", {}, "Tessera API tokens start with tsr_. Paste what you found; you need no account."), form,
    el("p", {}, el("a", { href: session ? "#/tokens" : "#/signin" }, session ? "Back to your tokens" : "Sign in")));
}

// ---------------------------------------------------------------------------------------
// Routing

async function route() {
  pageGen++;
  const h = location.hash || "#/tokens";
  const link = /^#\/(invite|reset|bootstrap)\/([0-9a-f]+)$/.exec(h);
  if (link) { showSetPassword(link[1], link[2]); return; }
  const setup = /^#\/setup\/([0-9a-f]+)$/.exec(h);
  if (setup) { showSetup(setup[1]); return; }
  if (h.startsWith("#/report-leak")) { showReportLeak(); return; }
  const ssoRefused = /^#\/sso-failed\/([a-z_]+)$/.exec(h);
  if (ssoRefused) { session = null; ssoFailed(ssoRefused[1]); return; }
  if (!session) { showSignIn(); return; }
  setNav();
  const page = h.split("?")[0];
  const one = /^#\/token\/([^?]+)$/.exec(page);
  if (one) { await showToken(decodeURIComponent(one[1])); main().focus(); return; }
  const hook = /^#\/webhooks\/([^?]+)$/.exec(page);
  if (hook) { await showDeliveries(decodeURIComponent(hook[1])); main().focus(); return; }
  const pages = {
    "#/tokens": showTokens, "#/auth-log": showAuthLog, "#/users": showUsers, "#/audit": showAudit,
    "#/org": showOrg, "#/partner": showPartner, "#/notifications": showNotifications,
    "#/webhooks": showWebhooks,
  };
  await (pages[page] || showTokens)();
  main().focus();
}

async function start() {
  try { session = await api("GET", "/v1/session"); } catch { session = null; }
  if (!session) { try { setupNeeded = (await api("GET", "/v1/setup")).needed === true; } catch { setupNeeded = false; } }
  if (session) { try { prefs = (await api("GET", "/v1/me/prefs")).prefs || {}; } catch { prefs = {}; } }
  window.addEventListener("hashchange", route);
  route();
}

start();
