// The SDK's pure codec: SPEC section 1 vectors, header values with ':',
// multipart (section 4), binary bodies, round trips.
import { test } from "node:test";
import assert from "node:assert/strict";
import Lhttp from "../lhttp.js";

const { decode, encode, splitMultipart, buildMultipart, LhttpParseError } = Lhttp;
const bytes = (text) => new TextEncoder().encode(text);
const text = (data) => new TextDecoder().decode(data);

test("SPEC vector 1: chat with content-type and publish", () => {
  const m = decode('LHTTP/1.0 chat\r\ncontent-type:json\r\npublish:channel_jack\r\n\r\n{"to":"jack"}');
  assert.equal(m.command, "chat");
  assert.deepEqual(m.headers, [["content-type", "json"], ["publish", "channel_jack"]]);
  assert.equal(m.getHeader("content-type"), "json");
  assert.equal(m.getHeader("publish"), "channel_jack");
  assert.equal(m.body, '{"to":"jack"}');
});

test("SPEC vector 2: subscribe to three channels, empty body", () => {
  const m = decode("LHTTP/1.0 subpub\r\nsubscribe:channelID1 channelID2 channelID3\r\n\r\n");
  assert.equal(m.command, "subpub");
  assert.equal(m.getHeader("subscribe"), "channelID1 channelID2 channelID3");
  assert.equal(m.body, "");
});

test("SPEC vector 3: multipart upload", () => {
  const m = decode("LHTTP/1.0 upload\r\nmultipart:0 14\r\n\r\nk1:v1\r\n\r\nbody1k2:v2\r\n\r\nbody2");
  assert.equal(m.command, "upload");
  assert.equal(m.getHeader("multipart"), "0 14");
  const parts = m.getMultipart();
  assert.equal(parts.length, 2);
  assert.deepEqual(parts[0].headers, [["k1", "v1"]]);
  assert.equal(parts[0].getHeader("K1"), "v1");
  assert.equal(parts[0].body, "body1");
  assert.deepEqual(parts[1].headers, [["k2", "v2"]]);
  assert.equal(parts[1].body, "body2");
});

test("SPEC vectors decode the same from a binary frame", () => {
  const m = decode(bytes('LHTTP/1.0 chat\r\ncontent-type:json\r\npublish:channel_jack\r\n\r\n{"to":"jack"}'));
  assert.equal(m.command, "chat");
  assert.equal(m.getHeader("publish"), "channel_jack");
  assert.ok(m.body instanceof Uint8Array);
  assert.equal(text(m.body), '{"to":"jack"}');
  const parts = decode(bytes("LHTTP/1.0 upload\r\nmultipart:0 14\r\n\r\nk1:v1\r\n\r\nbody1k2:v2\r\n\r\nbody2")).getMultipart();
  assert.deepEqual(parts.map((p) => [p.headers, text(p.body)]), [[[["k1", "v1"]], "body1"], [[["k2", "v2"]], "body2"]]);
});

test("a header value containing ':' splits at the first colon only", () => {
  const m = decode("LHTTP/1.0 chat\r\nupstream:POST http://127.0.0.1:8080/x?a=b:c\r\ntime:12:30:45\r\n\r\n");
  assert.equal(m.getHeader("upstream"), "POST http://127.0.0.1:8080/x?a=b:c");
  assert.equal(m.getHeader("time"), "12:30:45");
});

test("values are stripped of spaces and tabs; names compare case-insensitively", () => {
  const m = decode("LHTTP/1.0 chat\r\nPublish: \ta b \t\r\nX-Empty:\r\n\r\n");
  assert.equal(m.getHeader("publish"), "a b");
  assert.equal(m.getHeader("PUBLISH"), "a b");
  assert.equal(m.getHeader("x-empty"), "");
  assert.equal(m.getHeader("missing"), null);
  assert.deepEqual(m.headers.map((h) => h[0]), ["Publish", "X-Empty"], "original spelling kept");
});

test("the body may contain CRLF and blank lines", () => {
  const body = "line1\r\n\r\nline2\r\nnot:a header\r\n";
  const m = decode("LHTTP/1.0 note\r\na:1\r\n\r\n" + body);
  assert.equal(m.body, body);
  assert.deepEqual(m.headers, [["a", "1"]]);
});

test("no headers, and a message ending right after the blank line", () => {
  const m = decode("LHTTP/1.0 ping\r\n\r\n");
  assert.equal(m.command, "ping");
  assert.deepEqual(m.headers, []);
  assert.equal(m.body, "");
});

test("malformed messages are refused with LhttpParseError", () => {
  for (const bad of [
    "LHTTP/1.0 chat\r\npublish:a\r\n",          // headers never end
    "LHTTP/1.0 chat",                            // no blank line at all
    "HTTP/1.1 chat\r\n\r\n",                     // wrong protocol
    "LHTTP/1.0 \r\n\r\n",                        // empty command
    "LHTTP/1.0 two words\r\n\r\n",               // space in command
    "LHTTP/1.0  chat\r\n\r\n",                   // two spaces
    "LHTTP/1.0 chat\r\nno colon here\r\n\r\n",  // bad header line
    "LHTTP/1.0 chat\r\n:value\r\n\r\n",         // empty header name
  ]) {
    assert.throws(() => decode(bad), LhttpParseError, JSON.stringify(bad));
  }
  assert.throws(() => decode(bytes("LHTTP/1.0 chat\r\n")), LhttpParseError);
});

test("encode produces the canonical bytes", () => {
  assert.equal(
    encode("chat", [["content-type", "json"], ["publish", "channel_jack"]], '{"to":"jack"}'),
    'LHTTP/1.0 chat\r\ncontent-type:json\r\npublish:channel_jack\r\n\r\n{"to":"jack"}',
  );
  assert.equal(encode("subpub", { subscribe: "channelID1 channelID2 channelID3" }),
    "LHTTP/1.0 subpub\r\nsubscribe:channelID1 channelID2 channelID3\r\n\r\n");
  assert.equal(encode("ping", new Map([["a", "1"]]), ""), "LHTTP/1.0 ping\r\na:1\r\n\r\n");
});

test("encode refuses what would inject lines or break the start line", () => {
  assert.throws(() => encode("two words", [], ""), TypeError);
  assert.throws(() => encode("", [], ""), TypeError);
  assert.throws(() => encode("chat", [["nick", "x\r\npublish:all"]], ""), TypeError);
  assert.throws(() => encode("chat", [["a:b", "v"]], ""), TypeError);
  assert.throws(() => encode("chat", [["", "v"]], ""), TypeError);
});

test("round trip: decode(encode(m)) gives m back, text and binary", () => {
  const cases = [
    ["chat", [["nick", "bob: the builder"], ["Publish", "room-a room-b"], ["nick", "twice"]], "héllo ✓ \r\n\r\n end"],
    ["empty", [], ""],
    ["x", [["k", ""]], "\r\n"],
  ];
  for (const [command, headers, body] of cases) {
    const m = decode(encode(command, headers, body));
    assert.equal(m.command, command);
    assert.deepEqual(m.headers, headers);
    assert.equal(m.body, body);
    const b = decode(encode(command, headers, body, true));
    assert.deepEqual(b.headers, headers);
    assert.equal(text(b.body), body);
    assert.equal(new Lhttp.Message(command, headers, body).encode(), encode(command, headers, body));
  }
});

test("round trip: encode(decode(s)) gives the canonical vectors back exactly", () => {
  for (const s of [
    'LHTTP/1.0 chat\r\ncontent-type:json\r\npublish:channel_jack\r\n\r\n{"to":"jack"}',
    "LHTTP/1.0 subpub\r\nsubscribe:channelID1 channelID2 channelID3\r\n\r\n",
    "LHTTP/1.0 upload\r\nmultipart:0 14\r\n\r\nk1:v1\r\n\r\nbody1k2:v2\r\n\r\nbody2",
  ]) {
    assert.equal(decode(s).encode(), s);
  }
});

test("binary bodies keep every byte value", () => {
  const body = new Uint8Array(256).map((_, i) => i);
  const wire = encode("blob", [["publish", "files"]], body);
  assert.ok(wire instanceof Uint8Array);
  const m = decode(wire);
  assert.ok(m.body instanceof Uint8Array);
  assert.deepEqual(Array.from(m.body), Array.from(body));
  // An ArrayBuffer (what a browser gives for a binary frame) decodes too.
  const fromBuffer = decode(wire.slice().buffer);
  assert.deepEqual(Array.from(fromBuffer.body), Array.from(body));
  // A body with CRLF CRLF bytes inside is not cut.
  const tricky = new Uint8Array([0, 13, 10, 13, 10, 255]);
  assert.deepEqual(Array.from(decode(encode("b", [], tricky)).body), Array.from(tricky));
});

test("multipart: a part without headers starts with CRLF", () => {
  const parts = splitMultipart("\r\nfirst" + "h:v\r\n\r\nsecond", "0 7");
  assert.deepEqual(parts[0].headers, []);
  assert.equal(parts[0].body, "first");
  assert.equal(parts[1].getHeader("h"), "v");
  assert.equal(parts[1].body, "second");
});

test("multipart offsets are bytes, also in a non-ASCII text body", () => {
  const built = buildMultipart([
    { headers: [["name", "é:1"]], body: "ünïcødé" },
    { headers: {}, body: "✓" },
  ]);
  assert.equal(built.offsets, "0 " + bytes("name:é:1\r\n\r\nünïcødé").length);
  const parts = splitMultipart(built.body, built.offsets);
  assert.equal(parts[0].getHeader("name"), "é:1");
  assert.equal(parts[0].body, "ünïcødé");
  assert.deepEqual(parts[1].headers, []);
  assert.equal(parts[1].body, "✓");
});

test("multipart with binary part bodies", () => {
  const blob = new Uint8Array([0, 1, 2, 13, 10, 13, 10, 254, 255]);
  const built = buildMultipart([{ headers: [["type", "bin"]], body: blob }, { headers: [], body: "tail" }]);
  assert.ok(built.body instanceof Uint8Array);
  const m = decode(encode("upload", [["multipart", built.offsets]], built.body));
  const parts = m.getMultipart();
  assert.deepEqual(Array.from(parts[0].body), Array.from(blob));
  assert.equal(text(parts[1].body), "tail");
});

test("multipart: bad offsets are refused", () => {
  const body = "k1:v1\r\n\r\nbody1k2:v2\r\n\r\nbody2";
  for (const bad of ["0 x", "0 -1", "14 0", "0 0", "0 1000", "1.5", ""]) {
    assert.throws(() => splitMultipart(body, bad), LhttpParseError, bad);
  }
  // A part with neither headers nor a blank line is malformed.
  assert.throws(() => splitMultipart("no blank line", "0"), LhttpParseError);
});

test("no multipart header means no parts", () => {
  assert.deepEqual(decode("LHTTP/1.0 chat\r\n\r\nbody").getMultipart(), []);
});
