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
//   TESSERA_STATUS_TTL_MS        how long a fetched list is used before revalidation (30000)
//   TESSERA_STATUS_MAX_STALE_MS  a list that cannot be revalidated for this long is dropped,
//                                and status.fail_policy decides (600000)
//   TESSERA_STATUS_TIMEOUT_MS    timeout of one status list fetch (3000)
//   TESSERA_USAGE_URL            if set, usage events are POSTed there in batches
//   TESSERA_USAGE_TOKEN          bearer credential for TESSERA_USAGE_URL
//   TESSERA_USAGE_BATCH          events per batch (100)
//   TESSERA_USAGE_FLUSH_MS       a batch is sent at the latest this long after the last (10000)
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

function jsonObject(value, name) {
  if (value === undefined || value === null || value === "") return {};
  const parsed = typeof value === "string" ? JSON.parse(value) : value;
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new Error(`${name} must be a JSON object`);
  }
  return parsed;
}

// ---------------------------------------------------------------------------------------
// Per-isolate state: the verifier (with its token cache) and the status lists' freshness.

let state = null;

function currentState(env) {
  const configText = jsonText(env.TESSERA_CONFIG);
  const statusText = jsonText(env.TESSERA_STATUS_URLS ?? "");
  if (state && state.configText === configText && state.statusText === statusText) {
    return state;
  }
  const next = {
    configText,
    statusText,
    verifier: null,
    error: null,
    lists: new Map(), // status list uri -> { url, etag, loaded, fetchedAt, retryAt, refreshingSince }
    webcrypto: env.TESSERA_WEBCRYPTO !== "off",
    jwks: new Map(), // kid -> public JWK (from TESSERA_CONFIG)
    cryptoKeys: new Map(), // kid -> CryptoKey, or null when WebCrypto cannot verify it
  };
  try {
    if (configText === undefined) throw new Error("TESSERA_CONFIG is not set");
    next.verifier = new EdgeVerifier(configText);
    for (const jwk of JSON.parse(configText).jwks?.keys ?? []) {
      if (typeof jwk?.kid === "string") next.jwks.set(jwk.kid, jwk);
    }
    for (const [uri, url] of Object.entries(jsonObject(env.TESSERA_STATUS_URLS, "TESSERA_STATUS_URLS"))) {
      next.lists.set(uri, { url: String(url), etag: null, loaded: false, fetchedAt: 0, retryAt: 0, refreshingSince: 0 });
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
    ttl: number(env.TESSERA_STATUS_TTL_MS, 30_000),
    maxStale: number(env.TESSERA_STATUS_MAX_STALE_MS, 600_000),
    timeout: number(env.TESSERA_STATUS_TIMEOUT_MS, 3_000),
    usageUrl: env.TESSERA_USAGE_URL || null,
    usageToken: env.TESSERA_USAGE_TOKEN || null,
    usageBatch: Math.max(1, number(env.TESSERA_USAGE_BATCH, 100)),
    usageFlushMs: number(env.TESSERA_USAGE_FLUSH_MS, 10_000),
  };
}

// ---------------------------------------------------------------------------------------
// Status lists: fetched per isolate, used for `ttl`, revalidated with If-None-Match.
// Only plain data is shared between requests (never a promise or a response: workerd
// forbids I/O objects of one request in another). The request that finds a list due
// revalidates it and waits; requests arriving meanwhile use the list in force.

async function refreshList(st, uri, entry, s) {
  entry.refreshingSince = Date.now();
  try {
    const headers = { accept: "application/json" };
    if (entry.etag && entry.loaded) headers["if-none-match"] = entry.etag;
    const init = { headers };
    if (typeof AbortSignal !== "undefined" && typeof AbortSignal.timeout === "function") {
      init.signal = AbortSignal.timeout(s.timeout);
    }
    const resp = await fetch(entry.url, init);
    if (resp.status === 304 && entry.loaded) {
      entry.fetchedAt = Date.now();
      return;
    }
    if (resp.status !== 200) throw new Error(`HTTP ${resp.status}`);
    const text = await resp.text();
    st.verifier.set_status_list(uri, text);
    entry.etag = resp.headers.get("etag");
    entry.loaded = true;
    entry.fetchedAt = Date.now();
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    console.error(`tessera: status list ${uri} from ${entry.url}: ${message}`);
    entry.retryAt = Date.now() + Math.min(s.ttl, 5_000);
    if (entry.loaded && Date.now() - entry.fetchedAt > s.maxStale) {
      console.error(`tessera: status list ${uri} is older than ${s.maxStale} ms; dropped (fail policy applies)`);
      st.verifier.forget_status_list(uri);
      entry.loaded = false;
      entry.etag = null;
    }
  } finally {
    entry.refreshingSince = 0;
  }
}

async function refreshStatusLists(st, s) {
  const now = Date.now();
  const due = [];
  for (const [uri, entry] of st.lists) {
    if (entry.loaded && now - entry.fetchedAt < s.ttl) continue;
    if (now < entry.retryAt) continue;
    const inFlight = entry.refreshingSince && now - entry.refreshingSince < s.timeout + 1_000;
    if (inFlight && entry.loaded) continue;
    due.push(refreshList(st, uri, entry, s));
  }
  if (due.length) await Promise.all(due);
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

async function cryptoKey(st, alg, kid) {
  if (st.cryptoKeys.has(kid)) return st.cryptoKeys.get(kid);
  let key = null;
  try {
    const jwk = st.jwks.get(kid);
    if (!jwk) throw new Error("not in TESSERA_CONFIG's jwks");
    key = await crypto.subtle.importKey("jwk", publicJwk(jwk), WEBCRYPTO[alg].import, false, ["verify"]);
    console.log(`tessera: key ${kid} (${alg}): signatures verified with WebCrypto`);
  } catch (e) {
    console.log(`tessera: key ${kid} (${alg}): WebCrypto cannot use it (${e instanceof Error ? e.message : e}); verifying in Rust`);
  }
  st.cryptoKeys.set(kid, key);
  return key;
}

// true/false: WebCrypto's verdict; null: WebCrypto could not decide (use the Rust path).
async function webcryptoVerify(st, pending) {
  const alg = pending.alg;
  if (!WEBCRYPTO[alg]) return null;
  const key = await cryptoKey(st, alg, pending.kid);
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
// Usage reports: batched per isolate, sent with ctx.waitUntil so no request waits.

const usage = { events: [], lastFlush: 0 };

function recordUsage(s, ctx, event) {
  if (!s.usageUrl) return;
  usage.events.push(event);
  const now = Date.now();
  if (usage.events.length < s.usageBatch && now - usage.lastFlush < s.usageFlushMs) return;
  const events = usage.events.splice(0, 1000);
  usage.lastFlush = now;
  const headers = { "content-type": "application/json" };
  if (s.usageToken) headers.authorization = `Bearer ${s.usageToken}`;
  ctx.waitUntil(
    fetch(s.usageUrl, { method: "POST", headers, body: JSON.stringify({ events }) })
      .then((resp) => {
        if (!resp.ok) console.error(`tessera: usage report: HTTP ${resp.status}`);
        return resp.body?.cancel();
      })
      .catch((e) => console.error(`tessera: usage report: ${e instanceof Error ? e.message : e}`)),
  );
}

// ---------------------------------------------------------------------------------------

function forward(request, env, verdict) {
  const headers = new Headers(request.headers);
  for (const name of verdict.headers_to_remove) headers.delete(name);
  for (const [name, value] of verdict.headers_to_add) headers.append(name, value);
  const init = { method: request.method, headers, redirect: "manual" };
  if (request.method !== "GET" && request.method !== "HEAD") init.body = request.body;
  if (env.ORIGIN_SERVICE) {
    return env.ORIGIN_SERVICE.fetch(new Request(new URL(verdict.path, request.url), init));
  }
  return fetch(new URL(verdict.path, env.ORIGIN), init);
}

export default {
  async fetch(request, env, ctx) {
    const st = currentState(env);
    if (!st.verifier) return failClosed();
    if (!env.ORIGIN_SERVICE && !env.ORIGIN) {
      console.error("tessera: refusing to serve: neither ORIGIN nor ORIGIN_SERVICE is bound");
      return failClosed();
    }
    const s = settings(env);
    if (st.lists.size) await refreshStatusLists(st, s);

    const url = new URL(request.url);
    const clientIp = request.headers.get("cf-connecting-ip");
    const nowSecs = Math.floor(Date.now() / 1000);
    let verdict;
    try {
      verdict = await decide(st, request.method, url.pathname + url.search, [...request.headers], clientIp ?? undefined, nowSecs);
    } catch (e) {
      console.error(`tessera: verifier failure: ${e instanceof Error ? e.message : e}`);
      return failClosed();
    }

    // Usage: every decision about a token whose signature verified (a token refused
    // before that has no trustworthy id).
    if (verdict.token_id) {
      recordUsage(s, ctx, {
        token_id: verdict.token_id,
        parent: verdict.parent,
        at: nowSecs,
        ip: verdict.client_ip,
        outcome: verdict.allow ? "allow" : "deny",
        reason: verdict.allow ? (verdict.status_fail_open ? "status_fail_open" : null) : verdict.reason,
        method: request.method,
        path: (verdict.allow ? verdict.path : url.pathname).split("?")[0].slice(0, 2048),
      });
    }
    if (!verdict.allow) {
      return new Response(verdict.body, { status: verdict.status, headers: verdict.headers });
    }
    return forward(request, env, verdict);
  },
};
