// Times each Ed25519 candidate of tessera-bench-ed25519 inside V8 (node).
// usage: node run.mjs <module.wasm> <verifications> <rounds>
// Prints one line per candidate and round: "candidate=<i> round=<r> us_per_verify=<x>".
import { readFileSync } from "node:fs";

const [file, nArg, roundsArg] = process.argv.slice(2);
const n = Number(nArg ?? 2000);
const rounds = Number(roundsArg ?? 3);
const { instance } = await WebAssembly.instantiate(readFileSync(file), {});
const { candidates, check, verify_n } = instance.exports;
const count = candidates();
for (let c = 0; c < count; c++) {
  if (check(c) !== 1) {
    console.error(`candidate ${c} gives a wrong verdict`);
    process.exit(1);
  }
  verify_n(c, Math.max(1, Math.floor(n / 10))); // warm-up: let V8 tier up
}
for (let r = 1; r <= rounds; r++) {
  for (let c = 0; c < count; c++) {
    const t0 = performance.now();
    const ok = verify_n(c, n);
    const us = ((performance.now() - t0) * 1000) / n;
    if (ok !== n) {
      console.error(`candidate ${c}: ${ok}/${n} verified`);
      process.exit(1);
    }
    console.log(`candidate=${c} round=${r} us_per_verify=${us.toFixed(2)}`);
  }
}
