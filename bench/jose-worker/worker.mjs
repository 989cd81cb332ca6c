// The comparison worker of `cargo xtask bench` (part `workerd`): API tokens checked with
// the `jose` library (npm `jose`, its WebCrypto build), as a team would without Tessera.
//
// Per request: the token from `Authorization: Bearer <token>`, then jose's `jwtVerify`
// with the key named by the token's `kid`, the algorithm pinned to that key's, and the
// claims: `exp` (required), `nbf` when present, `iss` and `aud`, with the same clock
// tolerance as Tessera's default skew (60 s). Allowed: the request goes to the origin (the
// same in-process origin worker the Tessera worker forwards to) with the subject added as
// a header; refused: 401 with a `WWW-Authenticate: Bearer` challenge.
//
// It checks less than Tessera: no `typ`, no status list (revocation), no maximum
// lifetime, no `iat` in the future, no required `sub`/`jti`/`org`, no IP filter, no route
// scopes, no token cache (every request verifies the signature).
//
// Bindings (env):
//   JOSE_JWKS       JSON text: the JWKS, every key with `kid` and `alg`
//   JOSE_ISSUER     the accepted `iss`
//   JOSE_AUDIENCE   the accepted `aud` (one of the token's)
//   ORIGIN_SERVICE  service binding to the origin
//
// jose is loaded from its ES modules, listed one by one in the workerd config under
// `jose/` (workerd has no npm resolution), so `./jose/...` imports are relative module
// names.

import { jwtVerify } from "./jose/jwt/verify.js";
import { importJWK } from "./jose/key/import.js";

const CLOCK_TOLERANCE_SECS = 60;

// Per isolate: kid -> { alg, key } once imported, plus the algorithms the keys pin and the
// binding text they came from. Only plain values and CryptoKeys are kept between requests
// (never a promise of one request awaited by another).
let keyring = null;

async function currentKeyring(env) {
  const text = typeof env.JOSE_JWKS === "string" ? env.JOSE_JWKS : JSON.stringify(env.JOSE_JWKS);
  if (keyring && keyring.text === text) return keyring;
  const jwks = JSON.parse(text);
  if (!jwks || !Array.isArray(jwks.keys)) throw new Error("JOSE_JWKS must be a JWKS");
  const byKid = new Map();
  for (const jwk of jwks.keys) {
    if (typeof jwk.kid !== "string" || typeof jwk.alg !== "string") {
      throw new Error("every JOSE_JWKS key needs a kid and an alg");
    }
    byKid.set(jwk.kid, { alg: jwk.alg, key: await importJWK(jwk, jwk.alg) });
  }
  const algorithms = [...new Set([...byKid.values()].map((k) => k.alg))];
  keyring = { text, byKid, algorithms };
  return keyring;
}

function unauthorized(error) {
  const challenge = error ? `Bearer error="${error}"` : "Bearer";
  return new Response(null, {
    status: 401,
    headers: { "www-authenticate": challenge, "cache-control": "no-store" },
  });
}

function bearerToken(request) {
  const value = request.headers.get("authorization");
  if (!value) return null;
  const space = value.indexOf(" ");
  if (space < 0 || value.slice(0, space).toLowerCase() !== "bearer") return null;
  const token = value.slice(space + 1).trim();
  return token || null;
}

export default {
  async fetch(request, env) {
    let ring;
    try {
      ring = await currentKeyring(env);
    } catch (e) {
      console.error(`jose worker: refusing to serve: ${e instanceof Error ? e.message : e}`);
      return new Response(null, { status: 500 });
    }
    const token = bearerToken(request);
    if (!token) return unauthorized(null);

    let payload;
    try {
      ({ payload } = await jwtVerify(
        token,
        (header) => {
          const entry = ring.byKid.get(header.kid);
          // The token never chooses the algorithm: it must be the one its key pins.
          if (!entry || entry.alg !== header.alg) throw new Error("no key for this kid and alg");
          return entry.key;
        },
        {
          algorithms: ring.algorithms,
          issuer: env.JOSE_ISSUER,
          audience: env.JOSE_AUDIENCE,
          requiredClaims: ["exp"],
          clockTolerance: CLOCK_TOLERANCE_SECS,
        },
      ));
    } catch {
      return unauthorized("invalid_token");
    }

    const headers = new Headers(request.headers);
    headers.set("x-auth-sub", typeof payload.sub === "string" ? payload.sub : "");
    const init = { method: request.method, headers, redirect: "manual" };
    if (request.method !== "GET" && request.method !== "HEAD") init.body = request.body;
    return env.ORIGIN_SERVICE.fetch(new Request(request.url, init));
  },
};
