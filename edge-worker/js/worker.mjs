// Tessera edge worker: the ES-module entry for workerd and Cloudflare Workers.
//
// Every request is checked by the Rust verifier (tessera-core, compiled to wasm with
// wasm-bindgen). Allowed requests go to the origin with the client's identity headers
// stripped and Tessera's added; refused ones get exactly the Envoy filter's answer
// (status, WWW-Authenticate, JSON body, cache-control: no-store).
//
// Bindings (env):
//   TESSERA_CONFIG               JSON text (or a JSON binding): the filter's configuration
//                                schema; client_ip.source must be "peer" (CF-Connecting-IP)
//   ORIGIN                       origin base URL, e.g. "https://api.internal.example"
//   ORIGIN_SERVICE               or a service binding to the origin (wins over ORIGIN)
//   TESSERA_STATUS_URLS          JSON object {"<status list uri in tokens>": "<URL to fetch>"}
//   TESSERA_STATUS_TTL_MS        a list is revalidated (If-None-Match) by the first request
//                                at least this long after the last fetch started (900):
//                                in the background, so no request waits for it, and a
//                                revocation is refused within a second (900 ms + one fetch)
//   TESSERA_STATUS_MAX_STALE_MS  without a `sync` section in TESSERA_CONFIG: once a list has
//                                not been fetched or revalidated for this long, status is
//                                stale (600000); with one, sync.max_staleness_secs rules.
//                                Stale: what the last lists revoked or suspended stays
//                                refused, status.fail_policy decides the rest (as in Envoy)
//   TESSERA_STATUS_TIMEOUT_MS    timeout of one status list or JWKS fetch (3000)
//   TESSERA_JWKS_URLS            JSON array of JWKS URLs; their keys are added to the
//                                config's `jwks` (which may then be omitted if the config
//                                has a `sync` section: 503 keys_unavailable until the first)
//   TESSERA_JWKS_TTL_MS          how long a fetched JWKS is used before revalidation (30000);
//                                a token with an unknown kid revalidates it at once (at
//                                most once a second per JWKS URL) and waits for it (below)
//   TESSERA_STATUS_FORCE_MS      a token whose status index lies beyond the list held
//                                revalidates that list at once, at most once per this many
//                                milliseconds per list (100), and waits for it (below)
//
// "Fetch and wait" (issue 24): a token that names a kid no key held has, or a status index
// beyond the list held (minted since the last fetch, or forged), is not refused at once:
// the request waits until a fetch of that document which left after it arrived has
// ended — one in flight per document, shared by every request waiting for it, started no
// more often than the interval above — at most the verifier's refresh_wait_ms() (1 s),
// then it is decided again, for good (key_unknown; status.fail_policy for the status).
//   TESSERA_USAGE_URL            if set, usage events are POSTed there in batches
//   TESSERA_USAGE_TOKEN          bearer credential for TESSERA_USAGE_URL
//   TESSERA_USAGE_BATCH          events per batch (100)
//   TESSERA_USAGE_FLUSH_MS       a batch is sent at the latest this long after the last (10000)
//
// Rate limits (issue 25), with usage reports on: the isolate plays the Envoy process's
// part of the lease protocol. Its usage batches carry its spend (what each limited token
// admitted and refused in the latest windows) at least once a second while requests come
// (min(TESSERA_USAGE_FLUSH_MS, 1000)), and their answers' leases are merged; an allowed
// request is admitted only within the lease its token's budget holds, else 429
// rate_limited with Retry-After and the RateLimit-Policy / RateLimit fields. A token the
// isolate holds no lease for (in an org that limits tokens, or before the first answer)
// waits while a report naming it goes at once — at most refresh_wait_ms() (1 s) — then is
// refused 429 if still without one (admitted only when the isolate never got an answer).
//   TESSERA_WEBCRYPTO            "auto" (default): signatures are checked with crypto.subtle
//                                where the runtime has the algorithm, else in Rust;
//                                "off": always in Rust. The decisions are the same.

import { initSync, EdgeVerifier } from "./tessera_edge_worker.js";
import wasmModule from "./tessera_edge_worker_bg.wasm";

initSync({ module: wasmModule });

// The answer when the worker itself cannot decide (bad configuration, missing origin, a
// failure inside the verifier): fail closed, as the filter does.
const FAIL_CLOSED_BODY = '{"error":"server_error","reason":"filter_error"}';

function failClosed() {
  return new Response(FAIL_CLOSED_BODY, {
    status: 500,
    headers: { "content-type": "application/json", "cache-control": "no-store" },
  });
}

function number(value, fallback) {
  const n = Number(value);
  return value !== undefined && value !== "" && Number.isFinite(n) && n >= 0 ? n : fallback;
}

function jsonText(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function jsonArray(value, name) {
  if (value === undefined || value === null || value === "") return [];
  const parsed = typeof value === "string" ? JSON.parse(value) : value;
  if (!Array.isArray(parsed) || parsed.some((u) => typeof u !== "string" || u === "")) {
    throw new Error(`${name} must be a JSON array of URLs`);
  }
  return parsed;
}

function nowSecs() {
  return Math.floor(Date.now() / 1000);
}

function jsonObject(value, name) {
  if (value === undefined || value === null || value === "") return {};
  const parsed = typeof value === "string" ? JSON.parse(value) : value;
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new Error(`${name} must be a JSON object`);
  }
  return parsed;
}

// ---------------------------------------------------------------------------------------
// Per-isolate state: the verifier (with its token cache), the status lists' and JWKS'
// fetch state (their freshness is tracked in Rust, by the filter's rule).

let state = null;

function currentState(env) {
  const configText = jsonText(env.TESSERA_CONFIG);
  const statusText = jsonText(env.TESSERA_STATUS_URLS ?? "");
  const jwksText = jsonText(env.TESSERA_JWKS_URLS ?? "");
  const maxStaleText = String(env.TESSERA_STATUS_MAX_STALE_MS ?? "");
  if (
    state &&
    state.configText === configText &&
    state.statusText === statusText &&
    state.jwksText === jwksText &&
    state.maxStaleText === maxStaleText
  ) {
    return state;
  }
  // endedFor: when the last fetch that has ended (answered or failed) left.
  const fetchState = (url) => ({ url: String(url), etag: null, loaded: false, fetchedAt: 0, retryAt: 0, refreshingSince: 0, forcedAt: 0, endedFor: 0 });
  const next = {
    configText,
    statusText,
    jwksText,
    maxStaleText,
    verifier: null,
    error: null,
    lists: new Map(), // status list uri -> { url, etag, loaded, fetchedAt, retryAt, refreshingSince, forcedAt, endedFor }
    keySets: new Map(), // JWKS URL -> the same fetch state
    webcrypto: env.TESSERA_WEBCRYPTO !== "off",
    rateLimits: false, // whether the verifier was told to limit (usage reports on)
    rlLost: false, // whether the control plane was lost at the last rate-limit decision
    cryptoKeys: new Map(), // public JWK text (from the verifier) -> CryptoKey, or null
  };
  try {
    if (configText === undefined) throw new Error("TESSERA_CONFIG is not set");
    next.verifier = new EdgeVerifier(configText);
    next.verifier.set_default_max_staleness_secs(number(env.TESSERA_STATUS_MAX_STALE_MS, 600_000) / 1000);
    for (const [uri, url] of Object.entries(jsonObject(env.TESSERA_STATUS_URLS, "TESSERA_STATUS_URLS"))) {
      next.lists.set(uri, fetchState(url));
      next.verifier.track_status_list(uri, nowSecs());
    }
    for (const url of jsonArray(env.TESSERA_JWKS_URLS, "TESSERA_JWKS_URLS")) {
      next.keySets.set(url, fetchState(url));
      next.verifier.track_jwks(url);
    }
  } catch (e) {
    next.error = e instanceof Error ? e.message : String(e);
    console.error(`tessera: refusing to serve: ${next.error}`);
    if (next.verifier) next.verifier.free();
    next.verifier = null;
  }
  if (state && state.verifier) state.verifier.free();
  state = next;
  return state;
}

function settings(env) {
  return {
    ttl: number(env.TESSERA_STATUS_TTL_MS, 900),
    jwksTtl: number(env.TESSERA_JWKS_TTL_MS, 30_000),
    listForceMs: number(env.TESSERA_STATUS_FORCE_MS, 100),
    timeout: number(env.TESSERA_STATUS_TIMEOUT_MS, 3_000),
    usageUrl: env.TESSERA_USAGE_URL || null,
    usageToken: env.TESSERA_USAGE_TOKEN || null,
    usageBatch: Math.max(1, number(env.TESSERA_USAGE_BATCH, 100)),
    usageFlushMs: number(env.TESSERA_USAGE_FLUSH_MS, 10_000),
  };
}

// ---------------------------------------------------------------------------------------
// Status lists and JWKS: fetched per isolate, revalidated with If-None-Match. Only plain
// data is shared between requests (never a promise or a response: workerd forbids I/O
// objects of one request in another). A document that was never loaded is fetched by the
// request that finds it missing, and that request (and any arriving meanwhile) waits for
// it. Once loaded, a due document is revalidated in the background (ctx.waitUntil)
// while requests go on with the one in force, unless the isolate was quiet for two
// periods: then the request waits for the fresh document (see refreshSources); at most one
// fetch per document is in flight. A failed or refused fetch keeps what is in force; the
// verifier tracks the lists' age and applies the staleness policy
// (sync.max_staleness_secs) itself.

async function refreshDocument(kind, name, entry, ttl, s, apply, unchanged) {
  const started = Date.now();
  entry.refreshingSince = started;
  try {
    const headers = { accept: "application/json" };
    if (entry.etag && entry.loaded) headers["if-none-match"] = entry.etag;
    const init = { headers };
    if (typeof AbortSignal !== "undefined" && typeof AbortSignal.timeout === "function") {
      init.signal = AbortSignal.timeout(s.timeout);
    }
    const resp = await fetch(entry.url, init);
    if (resp.status === 304 && entry.loaded) {
      unchanged();
      // The document is as of when the request left.
      entry.fetchedAt = started;
      return;
    }
    if (resp.status !== 200) {
      await resp.body?.cancel();
      throw new Error(`HTTP ${resp.status}`);
    }
    apply(await resp.text());
    entry.etag = resp.headers.get("etag");
    entry.loaded = true;
    entry.fetchedAt = started;
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    const from = entry.url === name ? "" : ` from ${entry.url}`;
    console.error(`tessera: ${kind} ${name}${from}: ${message} (keeping what is in force)`);
    entry.retryAt = Date.now() + Math.min(ttl, 5_000);
  } finally {
    entry.refreshingSince = 0;
    entry.endedFor = Math.max(entry.endedFor, started);
  }
}

function inFlight(entry, s, now) {
  return entry.refreshingSince !== 0 && now - entry.refreshingSince < s.timeout + 1_000;
}

function due(entry, ttl, s, now) {
  if (entry.loaded && now - entry.fetchedAt < ttl) return false;
  if (now < entry.retryAt) return false;
  return !inFlight(entry, s, now);
}

// Waits (without sharing any I/O object) until another request's first fetch of `entry`
// ends, or the fetch timeout passes.
async function loaded(entry, s) {
  while (!entry.loaded && inFlight(entry, s, Date.now())) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

// Waits until the refresh of `entry` in flight ends, or the fetch timeout passes.
async function settled(entry, s) {
  while (inFlight(entry, s, Date.now())) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function listFetch(st, s, uri, entry) {
  return refreshDocument(
    "status list",
    uri,
    entry,
    s.ttl,
    s,
    (text) => st.verifier.set_status_list(uri, text, nowSecs()),
    () => st.verifier.status_list_unchanged(uri, nowSecs()),
  );
}

function jwksFetch(st, s, url, entry) {
  return refreshDocument(
    "JWKS",
    url,
    entry,
    s.jwksTtl,
    s,
    (text) => {
      const n = st.verifier.set_jwks(url, text);
      st.cryptoKeys.clear();
      console.log(`tessera: JWKS ${url} loaded; ${n} keys in force`);
    },
    () => {},
  );
}

async function refreshSources(st, s, ctx) {
  const now = Date.now();
  const first = [];
  const start = (entry, ttl, fetchIt) => {
    if (!entry.loaded) {
      first.push(due(entry, ttl, s, now) ? fetchIt() : loaded(entry, s));
      return;
    }
    // Under steady traffic a document is at most about one period old, refreshed in the
    // background. Older than two periods, the isolate was quiet: the document may miss a
    // revocation made meanwhile (or be past sync.max_staleness_secs), so this request
    // waits for the refresh instead of deciding on it. A failing fetch waits no one: its
    // retry is not due, and the staleness policy decides.
    const quiet = now - entry.fetchedAt >= 2 * ttl;
    if (due(entry, ttl, s, now)) {
      if (quiet) first.push(fetchIt());
      else ctx.waitUntil(fetchIt());
    } else if (quiet && inFlight(entry, s, now)) {
      first.push(settled(entry, s));
    }
  };
  for (const [uri, entry] of st.lists) start(entry, s.ttl, () => listFetch(st, s, uri, entry));
  for (const [url, entry] of st.keySets) start(entry, s.jwksTtl, () => jwksFetch(st, s, url, entry));
  if (first.length) await Promise.all(first);
}

// "Refresh needed" (see the header): waits until a fetch of `entry` that left at or after
// `arrival` has ended, or `deadline`. Starts that fetch when none is in flight and the
// interval since the last forced one allows; otherwise waits on the one in flight (or for
// the interval), so concurrent requests share one fetch and a flood of forged tokens
// costs the control plane at most one fetch per interval. Only plain data is shared: a
// request polls the entry, it never awaits another request's promise.
async function fetchedSince(entry, arrival, deadline, interval, s, ctx, fetchIt) {
  for (;;) {
    const now = Date.now();
    if (entry.endedFor >= arrival || now >= deadline) return;
    if (!inFlight(entry, s, now) && now - entry.forcedAt >= interval) {
      entry.forcedAt = now;
      const done = fetchIt();
      ctx.waitUntil(done);
      await Promise.race([done, new Promise((resolve) => setTimeout(resolve, deadline - now))]);
      continue;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.max(1, Math.min(5, deadline - now))));
  }
}

// Fetches what `verdict.refresh` asks for; false when this worker has no source for it
// (a list or keys it does not fetch: the verdict stands).
async function refreshFor(st, s, ctx, verdict, arrival) {
  const deadline = arrival + st.verifier.refresh_wait_ms();
  const waits = [];
  if (verdict.refresh === "keys") {
    for (const [url, entry] of st.keySets) {
      waits.push(fetchedSince(entry, arrival, deadline, 1_000, s, ctx, () => jwksFetch(st, s, url, entry)));
    }
  } else if (verdict.refresh === "status_list") {
    const uri = verdict.refresh_uri;
    const entry = st.lists.get(uri);
    if (entry) {
      waits.push(fetchedSince(entry, arrival, deadline, s.listForceMs, s, ctx, () => listFetch(st, s, uri, entry)));
    }
  }
  if (!waits.length) return false;
  await Promise.all(waits);
  return true;
}

// ---------------------------------------------------------------------------------------
// Signatures with WebCrypto. The verifier has already matched the token's alg to the key's
// pinned algorithm and found the key; only the signature itself is checked here. Keys the
// runtime cannot import or use are checked in Rust instead (same decision, slower).

const WEBCRYPTO = {
  EdDSA: { import: { name: "Ed25519" }, verify: { name: "Ed25519" } },
  ES256: { import: { name: "ECDSA", namedCurve: "P-256" }, verify: { name: "ECDSA", hash: "SHA-256" } },
  RS256: { import: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, verify: { name: "RSASSA-PKCS1-v1_5" } },
};

function publicJwk(jwk) {
  switch (jwk.kty) {
    case "OKP":
      return { kty: "OKP", crv: jwk.crv, x: jwk.x };
    case "EC":
      return { kty: "EC", crv: jwk.crv, x: jwk.x, y: jwk.y };
    case "RSA":
      return { kty: "RSA", n: jwk.n, e: jwk.e };
    default:
      throw new Error(`unsupported kty ${jwk.kty}`);
  }
}

// `jwkText`: the public JWK the verifier holds for the token's kid (configured or fetched),
// so WebCrypto always uses the very key Rust would.
async function cryptoKey(st, alg, kid, jwkText) {
  if (!jwkText) return null;
  if (st.cryptoKeys.has(jwkText)) return st.cryptoKeys.get(jwkText);
  let key = null;
  try {
    key = await crypto.subtle.importKey("jwk", publicJwk(JSON.parse(jwkText)), WEBCRYPTO[alg].import, false, ["verify"]);
    console.log(`tessera: key ${kid} (${alg}): signatures verified with WebCrypto`);
  } catch (e) {
    console.log(`tessera: key ${kid} (${alg}): WebCrypto cannot use it (${e instanceof Error ? e.message : e}); verifying in Rust`);
  }
  st.cryptoKeys.set(jwkText, key);
  return key;
}

// true/false: WebCrypto's verdict; null: WebCrypto could not decide (use the Rust path).
async function webcryptoVerify(st, pending) {
  const alg = pending.alg;
  if (!WEBCRYPTO[alg]) return null;
  const key = await cryptoKey(st, alg, pending.kid, pending.jwk);
  if (!key) return null;
  try {
    return await crypto.subtle.verify(WEBCRYPTO[alg].verify, key, pending.signature, pending.signing_input);
  } catch {
    return null;
  }
}

async function decide(st, method, pathAndQuery, headers, clientIp, nowSecs) {
  if (!st.webcrypto) return st.verifier.check(method, pathAndQuery, headers, clientIp, nowSecs);
  const begun = st.verifier.begin(method, pathAndQuery, headers, clientIp, nowSecs);
  const pending = begun.pending;
  if (!pending) return begun;
  const valid = await webcryptoVerify(st, pending);
  if (valid === null) {
    pending.free();
    return st.verifier.check(method, pathAndQuery, headers, clientIp, nowSecs);
  }
  return st.verifier.finish(pending, valid);
}

// ---------------------------------------------------------------------------------------
// Usage reports: core's records (JSON text), batched per isolate, sent with ctx.waitUntil
// so no request waits. With rate limits on, a batch carries the isolate's spend at least
// once a second while requests come (sent even without records), and its answer's leases
// are merged (issue 25).

const usage = { events: [], lastFlush: 0, lastSpend: 0, askingSince: 0 };

// POSTs a batch; with `spend`, merges the answer's leases. Resolves when done (never
// rejects).
async function sendUsage(st, s, events, spend, timeoutMs) {
  const headers = { "content-type": "application/json" };
  if (s.usageToken) headers.authorization = `Bearer ${s.usageToken}`;
  const body = `{"events":[${events.join(",")}]${spend ? `,"spend":${spend}` : ""}}`;
  const init = { method: "POST", headers, body };
  if (timeoutMs && typeof AbortSignal !== "undefined" && typeof AbortSignal.timeout === "function") {
    init.signal = AbortSignal.timeout(Math.max(1, Math.ceil(timeoutMs)));
  }
  try {
    const resp = await fetch(s.usageUrl, init);
    if (!resp.ok) {
      console.error(`tessera: usage report: HTTP ${resp.status}`);
      await resp.body?.cancel();
      return;
    }
    if (!spend) {
      await resp.body?.cancel();
      return;
    }
    try {
      st.verifier.apply_usage_answer(await resp.text(), Date.now());
    } catch (e) {
      console.error(`tessera: ${e instanceof Error ? e.message : e}`);
    }
  } catch (e) {
    console.error(`tessera: usage report: ${e instanceof Error ? e.message : e}`);
  }
}

function recordUsage(st, s, ctx, record) {
  if (!s.usageUrl) return;
  if (record) usage.events.push(record);
  const now = Date.now();
  const spendDue = st.rateLimits && now - usage.lastSpend >= Math.min(s.usageFlushMs, 1000);
  if (!spendDue && (usage.events.length === 0 || (usage.events.length < s.usageBatch && now - usage.lastFlush < s.usageFlushMs))) return;
  const events = usage.events.splice(0, 1000);
  usage.lastFlush = now;
  let spend;
  if (spendDue) {
    usage.lastSpend = now;
    spend = st.verifier.spend_report(Date.now());
  }
  ctx.waitUntil(sendUsage(st, s, events, spend, s.timeout));
}

// A request of a token the isolate holds no lease for: sends a report naming it at once
// (one at a time; a request that finds one in flight waits for it, then sends its own if
// its token still has none) and waits for the answer, at most refresh_wait_ms().
async function askLease(st, s, token) {
  const deadline = Date.now() + st.verifier.refresh_wait_ms();
  while (Date.now() < deadline && st.verifier.lease_pending(token, Date.now())) {
    if (usage.askingSince === 0 && st.verifier.asking()) {
      usage.askingSince = Date.now();
      usage.lastSpend = usage.askingSince;
      try {
        const events = usage.events.splice(0, 1000);
        await sendUsage(st, s, events, st.verifier.spend_report(Date.now()), deadline - Date.now());
      } finally {
        usage.askingSince = 0;
      }
    } else {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
}

// The rate limit of an allowed verdict: null to forward, or the 429 to answer.
async function rateLimit(st, s, verdict) {
  if (!verdict.allow || !verdict.limit_token || !s.usageUrl) return null;
  if (!st.rateLimits) {
    st.verifier.enable_rate_limits(`workerd-${crypto.randomUUID()}`);
    st.rateLimits = true;
  }
  let rl = st.verifier.rate_limit(verdict.limit_token, Date.now(), true);
  if (rl.step === "ask") {
    await askLease(st, s, verdict.limit_token);
    rl = st.verifier.rate_limit(verdict.limit_token, Date.now(), false);
  }
  noteFallback(st);
  return rl.step === "refuse" ? rl : null;
}

// Says when the rate limits fall back to a local share (no answer from the control plane
// for sync.fallback_after_ms) and when its leases take over again, with the
// isolate's counters {admitted, refused, asked, unleased, fallback, lost}.
function noteFallback(st) {
  const c = st.verifier.rate_limit_counters(Date.now());
  if (c.lost === st.rlLost) return;
  st.rlLost = c.lost;
  const counters = JSON.stringify(c);
  if (c.lost) {
    console.warn(`tessera: no answer from the control plane: rate limits fall back to a local share ${counters}`);
  } else {
    console.log(`tessera: the control plane answers again: rate limits follow its leases ${counters}`);
  }
}

// ---------------------------------------------------------------------------------------

function forward(request, env, verdict) {
  const headers = new Headers(request.headers);
  for (const name of verdict.headers_to_remove) headers.delete(name);
  for (const [name, value] of verdict.headers_to_set) headers.set(name, value);
  const init = { method: request.method, headers, redirect: "manual" };
  if (request.method !== "GET" && request.method !== "HEAD") init.body = request.body;
  if (env.ORIGIN_SERVICE) {
    return env.ORIGIN_SERVICE.fetch(new Request(new URL(verdict.path, request.url), init));
  }
  return fetch(new URL(verdict.path, env.ORIGIN), init);
}

export default {
  async fetch(request, env, ctx) {
    const arrival = Date.now();
    const st = currentState(env);
    if (!st.verifier) return failClosed();
    if (!env.ORIGIN_SERVICE && !env.ORIGIN) {
      console.error("tessera: refusing to serve: neither ORIGIN nor ORIGIN_SERVICE is bound");
      return failClosed();
    }
    const s = settings(env);
    if (st.lists.size || st.keySets.size) await refreshSources(st, s, ctx);

    const url = new URL(request.url);
    const clientIp = request.headers.get("cf-connecting-ip");
    const nowSecs = Math.floor(Date.now() / 1000);
    const headers = [...request.headers];
    let verdict;
    try {
      verdict = await decide(st, request.method, url.pathname + url.search, headers, clientIp ?? undefined, nowSecs);
      // Refresh needed: fetch (bounded) and decide again; that verdict is final.
      if (verdict.refresh && (await refreshFor(st, s, ctx, verdict, arrival))) {
        const again = Math.floor(Date.now() / 1000);
        verdict = await decide(st, request.method, url.pathname + url.search, headers, clientIp ?? undefined, again);
      }
    } catch (e) {
      console.error(`tessera: verifier failure: ${e instanceof Error ? e.message : e}`);
      return failClosed();
    }

    let limited;
    try {
      limited = await rateLimit(st, s, verdict);
    } catch (e) {
      console.error(`tessera: rate limit failure: ${e instanceof Error ? e.message : e}`);
      return failClosed();
    }
    // Usage: every decision about a token whose signature verified (core's record); a
    // rate-limit refusal is counted in the spend instead.
    recordUsage(st, s, ctx, limited ? null : verdict.usage);
    if (limited) {
      return new Response(limited.body, { status: limited.status, headers: limited.headers });
    }
    if (!verdict.allow) {
      return new Response(verdict.body, { status: verdict.status, headers: verdict.headers });
    }
    return forward(request, env, verdict);
  },
};
