// A real OpenID provider on loopback for the single sign-on tests: the npm package
// `oidc-provider` (OpenID Certified), configured at run time. Nothing here is a fixture:
// the signing key (RSA 2048), the client secret and the cookie keys are generated on each
// start.
//
//   node provider.mjs <path of oidc-provider's lib/index.js> <redirect URI> <email domain>
//
// Prints one JSON line on stdout once it listens:
//   {"issuer": "http://localhost:<port>", "client_id": "...", "client_secret": "..."}
//
// Accounts: any login is an account (the provider's own development login form asks for
// a login and a password and accepts any). Its claims: email `<login>@<domain>`, verified,
// name, and `groups` — `["tessera-admins"]` for a login starting with `admin`, else
// `["staff"]`. Two logins make the provider misbehave on purpose, so the relying party's
// checks are tested against what a real provider sends: `wrong-aud` gets an ID token whose
// `aud` is another client's, `expired` one that expired an hour ago. Both are re-signed
// with the provider's own key, so only the claim is wrong. A login starting with `hold`
// stops before the redirect back to the relying party: the provider answers a page with
// the callback URL (real code, real state) in `#callback`, for the tests that tamper with
// or replay it.

import http from "node:http";
import crypto from "node:crypto";
import { pathToFileURL } from "node:url";

const [, , modulePath, redirectUri, domain] = process.argv;
if (!modulePath || !redirectUri || !domain) {
  console.error("usage: node provider.mjs <oidc-provider lib/index.js> <redirect URI> <email domain>");
  process.exit(2);
}
const { default: Provider } = await import(pathToFileURL(modulePath).href);

const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
const kid = crypto.randomBytes(8).toString("hex");
const jwk = { ...privateKey.export({ format: "jwk" }), kid, use: "sig", alg: "RS256" };
const clientId = "tessera";
const clientSecret = crypto.randomBytes(24).toString("hex");

const server = http.createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const issuer = `http://localhost:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    // Where the provider's logout (RP-Initiated Logout) may send the browser back: the page.
    post_logout_redirect_uris: [new URL("/", redirectUri).href],
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  }],
  jwks: { keys: [jwk] },
  cookies: { keys: [crypto.randomBytes(32).toString("hex")] },
  // The ID token carries the claims of the scopes asked for (as most providers do).
  conformIdTokenClaims: false,
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name", "groups"],
  },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: `${id}@${domain}`,
          email_verified: true,
          name: `Test ${id}`,
          groups: id.startsWith("admin") ? ["tessera-admins"] : ["staff"],
        };
      },
    };
  },
  // The tests' client is first-party: no consent screen.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const found = await ctx.oidc.provider.Grant.find(grantId);
      if (found) return found;
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope("openid email profile");
    await grant.save();
    return grant;
  },
});

const b64 = (buf) => Buffer.from(buf).toString("base64url");

/// Re-signs an ID token with the provider's key after `change` edits its claims.
function resign(idToken, change) {
  const [h, p] = idToken.split(".");
  const claims = JSON.parse(Buffer.from(p, "base64url").toString());
  change(claims);
  const input = `${h}.${b64(JSON.stringify(claims))}`;
  const sig = crypto.sign("sha256", Buffer.from(input), privateKey);
  return `${input}.${b64(sig)}`;
}

const escapeHtml = (t) => t.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

provider.use(async (ctx, next) => {
  await next();
  const location = ctx.response.get("location");
  if (ctx.status >= 300 && ctx.status < 400 && location && location.startsWith(`${redirectUri}?`)
      && String(ctx.oidc?.session?.accountId || "").startsWith("hold")) {
    ctx.status = 200;
    ctx.remove("location");
    ctx.type = "html";
    ctx.body = `<!doctype html><html lang="en"><title>Held</title><pre id="callback">${escapeHtml(location)}</pre></html>`;
    return;
  }
  if (ctx.oidc?.route !== "token" || !ctx.body?.id_token) return;
  const sub = JSON.parse(Buffer.from(ctx.body.id_token.split(".")[1], "base64url").toString()).sub;
  const now = Math.floor(Date.now() / 1000);
  if (sub === "wrong-aud") {
    ctx.body.id_token = resign(ctx.body.id_token, (c) => { c.aud = "another-client"; });
  } else if (sub === "expired") {
    ctx.body.id_token = resign(ctx.body.id_token, (c) => { c.iat = now - 7200; c.exp = now - 3600; });
  }
});

server.on("request", provider.callback());
process.stdout.write(`${JSON.stringify({ issuer, client_id: clientId, client_secret: clientSecret })}\n`);
// Whoever started us may stop reading after that line: a closed pipe is no reason to stop.
process.stdout.on("error", () => {});
process.on("SIGTERM", () => process.exit(0));
