// The SDK file as a browser loads it with <script src>: no module system,
// exactly one new global, Lhttp. (Loading it as an ES module is covered by
// tests/test_browser.py in a real browser.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import vm from "node:vm";

const source = readFileSync(new URL("../lhttp.js", import.meta.url), "utf8");

test("runs as a classic script and defines only the Lhttp global", () => {
  const sandbox = { TextEncoder, TextDecoder, setTimeout, clearTimeout };
  vm.createContext(sandbox);
  const before = new Set(Object.keys(sandbox));
  new vm.Script(source, { filename: "lhttp.js" }).runInContext(sandbox);
  const added = Object.keys(sandbox).filter((k) => !before.has(k));
  assert.deepEqual(added, ["Lhttp"]);
  const m = vm.runInContext('Lhttp.decode("LHTTP/1.0 subpub\\r\\nsubscribe:a b\\r\\n\\r\\n")', sandbox);
  assert.equal(m.command, "subpub");
  assert.equal(m.getHeader("subscribe"), "a b");
  assert.equal(vm.runInContext("Lhttp.Lhttp === Lhttp", sandbox), true);
});

test("without a WebSocket class the client says so clearly", () => {
  const sandbox = { TextEncoder, TextDecoder, setTimeout, clearTimeout };
  vm.createContext(sandbox);
  new vm.Script(source).runInContext(sandbox);
  assert.throws(() => vm.runInContext('new Lhttp("ws://x/")', sandbox), /no WebSocket class/);
});
