// The origin of `cargo xtask bench` (part `workerd`): a second worker in the same workerd
// process, bound as ORIGIN_SERVICE to the worker under test (the Tessera worker or the
// jose worker), so that an allowed request costs both the same downstream: one service
// binding call answered 200 with a tiny body, no network hop.

export default {
  async fetch() {
    return new Response("ok\n", {
      status: 200,
      headers: { "content-type": "text/plain", "x-bench-origin": "1" },
    });
  },
};
