# workerd configuration: the Tessera edge worker on 127.0.0.1:8080 in front of an origin
# on 127.0.0.1:8081. Build the bundle first (`cargo xtask build-wasm`), then from this
# directory:
#
#     workerd serve tessera.capnp
#
# The module paths are relative to this file and point at the bundle the build writes.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "tessera", worker = .tesseraWorker),
    # Outbound fetches (the origin, status lists, usage reports). "local" admits loopback
    # only, enough for this example; a deployment in front of a remote origin would use
    # ["public"] (workerd's default) or name the networks it needs.
    (name = "outbound", network = (allow = ["local"])),
  ],
  sockets = [
    (name = "http", address = "127.0.0.1:8080", http = (), service = "tessera"),
  ],
);

const tesseraWorker :Workerd.Worker = (
  modules = [
    (name = "worker.mjs", esModule = embed "../../target/wasm/edge-worker/worker.mjs"),
    (name = "tessera_edge_worker.js", esModule = embed "../../target/wasm/edge-worker/tessera_edge_worker.js"),
    (name = "tessera_edge_worker_bg.wasm", wasm = embed "../../target/wasm/edge-worker/tessera_edge_worker_bg.wasm"),
  ],
  compatibilityDate = "2025-01-01",
  bindings = [
    # The Envoy filter's configuration schema (filter/README.md), as one JSON text.
    (name = "TESSERA_CONFIG", text = embed "tessera-config.json"),
    (name = "ORIGIN", text = "http://127.0.0.1:8081"),
    # Live status lists from the control plane (uncomment and point at it):
    # (name = "TESSERA_STATUS_URLS", text = "{\"https://cp.example.com/v1/orgs/acme/status-list\": \"http://127.0.0.1:8700/v1/orgs/acme/status-list\"}"),
    # (name = "TESSERA_STATUS_TTL_MS", text = "900"),
    # Keys from the control plane's JWKS, added to the config's `jwks`:
    # (name = "TESSERA_JWKS_URLS", text = "[\"http://127.0.0.1:8700/v1/orgs/acme/jwks.json\"]"),
    # (name = "TESSERA_JWKS_TTL_MS", text = "30000"),
  ],
  globalOutbound = "outbound",
);
