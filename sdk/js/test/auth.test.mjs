// Authentication in the SDK (docs/protocol.rst, "Authentication") against
// a scripted fake node: the connect message first, nothing else before its
// reply, expires and refresh, the close codes 4401/4403/4000/4419/4503,
// subscription tokens and the node's unsubscribed message.
import { test } from "node:test";
import assert from "node:assert/strict";
import Lhttp from "../lhttp.js";
import { fakeClient } from "./fakes.mjs";

const { decode } = Lhttp;

const NODE = "lhttp-node:reply\r\n";
const connected = (user, expires) =>
  `LHTTP/1.0 connect\r\n${NODE}status:200\r\nuser:${user}\r\n` +
  (expires === undefined ? "" : `expires:${expires}\r\n`) + "\r\n";
const refreshed = (user, expires) => `LHTTP/1.0 refresh\r\n${NODE}status:200\r\nuser:${user}\r\nexpires:${expires}\r\n\r\n`;
const refused = (command, body) =>
  `LHTTP/1.0 error\r\n${NODE}status:401\r\nreason:unauthorized\r\ncommand:${command}\r\n\r\n${body}`;
const NOTICE = `LHTTP/1.0 refresh\r\n${NODE}status:401\r\nreason:token expired\r\ngrace:10\r\n\r\n`;

// Promise callbacks (getToken's) run.
const settle = () => new Promise((resolve) => setImmediate(resolve));

function authClient(options = {}) {
  const made = fakeClient({ minDelay: 100, jitter: 0, ...options });
  // Unix seconds on the manual clock: it starts at 1,000,000 s.
  made.clock.now = 1e9;
  made.client.options.now = () => made.clock.now;
  made.client._now = () => made.clock.now;
  const events = [];
  for (const kind of ["open", "message", "close", "error", "unsubscribed"]) {
    made.client.on(kind, (ctx) => events.push([kind, ctx]));
  }
  return { ...made, events, kinds: () => events.map((e) => e[0]) };
}

// A getToken that counts its calls and gives tok1, tok2, ...
function tokens() {
  const fn = async () => `tok${++fn.calls}`;
  fn.calls = 0;
  return fn;
}

const frames = (socket) => socket.sent.map((d) => decode(d));

test("with a token the connect message goes first, and nothing else before its reply", () => {
  const { client, last, events, kinds } = authClient({ token: "abc.def.ghi" });
  client.subscribe("room");
  client.publish("room", "chat", null, "hi");
  last().serverOpen();
  assert.deepEqual(last().sent, ["LHTTP/1.0 connect\r\ntoken:abc.def.ghi\r\n\r\n"]);
  assert.equal(client.state, "connecting");
  client.send("later", [], "");
  assert.equal(last().sent.length, 1, "sends wait for the connect reply");
  assert.deepEqual(kinds(), []);
  last().serverSend(connected("alice", 1000120));
  assert.deepEqual(frames(last()).map((m) => m.command), ["connect", "subscribe", "chat", "later"]);
  assert.equal(client.state, "open");
  const open = events.find((e) => e[0] === "open")[1];
  assert.equal(open.user, "alice");
  assert.equal(open.expires, 1000120);
  assert.equal(client.user, "alice");
  assert.deepEqual(kinds(), ["open"], "the connect reply is not a message");
});

test("without token options the bytes sent are those of before", () => {
  const { client, last } = authClient();
  client.subscribe("room");
  last().serverOpen();
  client.publish("room", "chat", null, "hi");
  assert.deepEqual(last().sent, [
    "LHTTP/1.0 subscribe\r\nsubscribe:room\r\n\r\n",
    "LHTTP/1.0 chat\r\npublish:room\r\n\r\nhi",
  ]);
  assert.equal(client.state, "open");
});

test("getToken is asked before the socket opens, and its token is sent", async () => {
  const getToken = tokens();
  const { client, sockets, last } = authClient({ getToken });
  assert.equal(sockets.length, 0, "no socket before the token");
  await settle();
  assert.equal(getToken.calls, 1);
  last().serverOpen();
  assert.deepEqual(last().sent, ["LHTTP/1.0 connect\r\ntoken:tok1\r\n\r\n"]);
  last().serverSend(connected("alice"));
  assert.equal(client.state, "open");
  assert.equal(client.expires, null, "no expires header: no expiry");
});

test("a forged connect reply (not the node's word) does not authenticate", () => {
  const { client, last, kinds } = authClient({ token: "t" });
  last().serverOpen();
  last().serverSend("LHTTP/1.0 connect\r\nstatus:200\r\nuser:mallory\r\n\r\n");
  assert.equal(client.state, "connecting");
  assert.equal(client.user, null);
  assert.deepEqual(kinds(), ["message"]);
});

test("the token is refreshed shortly before expires with getToken", async () => {
  const getToken = tokens();
  const { client, clock, last } = authClient({ getToken });
  await settle();
  last().serverOpen();
  last().serverSend(connected("alice", 1e6 + 120)); // 120 s left: refresh 30 s before
  clock.advance(89999);
  await settle();
  assert.equal(getToken.calls, 1);
  clock.advance(1);
  await settle();
  assert.equal(getToken.calls, 2);
  assert.equal(last().sent.at(-1), "LHTTP/1.0 refresh\r\ntoken:tok2\r\n\r\n");
  last().serverSend(refreshed("alice", 1e6 + 90 + 40)); // 40 s left: a quarter, 10 s before
  assert.equal(client.expires, 1e6 + 130);
  clock.advance(29999);
  await settle();
  assert.equal(getToken.calls, 2);
  clock.advance(1);
  await settle();
  assert.equal(getToken.calls, 3);
  assert.equal(client.state, "open");
});

test("an expires that is not ASCII digits is ignored: no refresh timer", async () => {
  const getToken = tokens();
  const { client, clock, last } = authClient({ getToken });
  const warn = console.warn;
  console.warn = () => {};
  try {
    await settle();
    last().serverOpen();
    last().serverSend(connected("alice", "١٠٠٠١٢٠"));
  } finally {
    console.warn = warn;
  }
  assert.equal(client.state, "open");
  assert.equal(client.expires, null);
  assert.deepEqual(clock.pendingDelays().filter((d) => d > 5000), [], "only the stable timer");
});

test("the node's refresh notice gets a fresh token at once", async () => {
  const getToken = tokens();
  const { last } = authClient({ getToken });
  await settle();
  last().serverOpen();
  last().serverSend(connected("alice"));
  last().serverSend(NOTICE);
  await settle();
  assert.equal(last().sent.at(-1), "LHTTP/1.0 refresh\r\ntoken:tok2\r\n\r\n");
});

test("a refresh notice without getToken is an error; a refused refresh keeps the connection", () => {
  const { client, last, events, kinds } = authClient({ token: "t" });
  last().serverOpen();
  last().serverSend(connected("alice"));
  last().serverSend(NOTICE);
  assert.deepEqual(kinds(), ["open", "error"]);
  assert.equal(events[1][1].error.status, 401);
  assert.equal(client.refresh("other"), true);
  last().serverSend(`LHTTP/1.0 error\r\n${NODE}status:403\r\nreason:forbidden\r\ncommand:refresh\r\n\r\ntoken is for another user`);
  assert.equal(events[2][1].error.status, 403);
  assert.equal(events[2][1].error.body, "token is for another user");
  assert.equal(client.state, "open");
});

test("4401: getToken once more and one retry, then stop and report", async () => {
  const getToken = tokens();
  const { client, clock, sockets, events } = authClient({ getToken });
  await settle();
  sockets[0].serverOpen();
  sockets[0].serverSend(refused("connect", "token expired"));
  sockets[0].serverClose(4401, "unauthorized");
  assert.equal(client.state, "reconnecting");
  clock.advance(clock.pendingDelays()[0]);
  await settle();
  assert.equal(getToken.calls, 2);
  sockets[1].serverOpen();
  assert.deepEqual(sockets[1].sent, ["LHTTP/1.0 connect\r\ntoken:tok2\r\n\r\n"]);
  sockets[1].serverSend(refused("connect", "bad signature"));
  sockets[1].serverClose(4401, "unauthorized");
  assert.equal(client.state, "closed");
  const errors = events.filter((e) => e[0] === "error").map((e) => e[1].error);
  assert.equal(errors.length, 1, "reported once, when it stops");
  assert.equal(errors[0].status, 4401);
  assert.equal(errors[0].body, "bad signature");
  const close = events.filter((e) => e[0] === "close").at(-1)[1];
  assert.equal(close.willReconnect, false);
  clock.advance(60000);
  await settle();
  assert.equal(sockets.length, 2);
  assert.equal(getToken.calls, 2);
});

test("4401 with a fixed token, no getToken: stop at once", () => {
  const { client, clock, sockets, kinds } = authClient({ token: "t" });
  sockets[0].serverOpen();
  sockets[0].serverClose(4401, "unauthorized");
  assert.equal(client.state, "closed");
  assert.deepEqual(kinds(), ["error", "close"]);
  clock.advance(60000);
  assert.equal(sockets.length, 1);
});

test("a success resets the 4401 retry", async () => {
  const getToken = tokens();
  const { client, clock, sockets } = authClient({ getToken });
  await settle();
  for (let i = 0; i < 3; i++) {
    const socket = sockets.at(-1);
    socket.serverOpen();
    if (i === 1) socket.serverSend(connected("alice"));
    socket.serverClose(4401);
    assert.equal(client.state, i === 2 ? "closed" : "reconnecting", `round ${i}`);
    clock.advance(clock.pendingDelays()[0] || 0);
    await settle();
  }
});

test("4403 stops for good; 1006 reconnects with the same token", async () => {
  const getToken = tokens();
  const { client, clock, sockets, events } = authClient({ getToken });
  await settle();
  sockets[0].serverOpen();
  sockets[0].serverSend(connected("alice", 1e6 + 3600));
  sockets[0].serverClose(1006);
  clock.advance(clock.pendingDelays()[0]);
  await settle();
  assert.equal(getToken.calls, 1, "the token is still good for an hour");
  sockets[1].serverOpen();
  assert.deepEqual(sockets[1].sent, ["LHTTP/1.0 connect\r\ntoken:tok1\r\n\r\n"]);
  sockets[1].serverSend(connected("alice", 1e6 + 3600));
  sockets[1].serverClose(4403, "disconnected");
  assert.equal(client.state, "closed");
  assert.equal(events.filter((e) => e[0] === "error").at(-1)[1].error.status, 4403);
  clock.advance(60000);
  await settle();
  assert.equal(sockets.length, 2);
});

for (const code of [4000, 4419]) {
  test(`${code} reconnects with a fresh token from getToken`, async () => {
    const getToken = tokens();
    const { client, clock, sockets } = authClient({ getToken });
    await settle();
    sockets[0].serverOpen();
    sockets[0].serverSend(connected("alice", 1e6 + 3600));
    sockets[0].serverClose(code);
    assert.equal(client.state, "reconnecting");
    clock.advance(clock.pendingDelays()[0]);
    await settle();
    assert.equal(getToken.calls, 2);
    sockets[1].serverOpen();
    assert.deepEqual(sockets[1].sent, ["LHTTP/1.0 connect\r\ntoken:tok2\r\n\r\n"]);
  });
}

test("4503 reconnects with a growing backoff", async () => {
  const { client, clock, sockets } = authClient({ token: "t" });
  const delays = [];
  for (let i = 0; i < 4; i++) {
    sockets.at(-1).serverOpen();
    sockets.at(-1).serverSend(`LHTTP/1.0 error\r\n${NODE}status:503\r\nreason:authentication unavailable\r\ncommand:connect\r\n\r\nkeys unavailable`);
    sockets.at(-1).serverClose(4503, "authentication unavailable");
    delays.push(clock.pendingDelays()[0]);
    clock.advance(delays[i]);
  }
  assert.deepEqual(delays, [100, 200, 400, 800]);
  assert.equal(client.state, "reconnecting");
  assert.equal(sockets.length, 5);
});

test("a getToken that fails is reported and tried again later", async () => {
  let calls = 0;
  const getToken = async () => { if (++calls === 1) throw new Error("backend down"); return "good"; };
  const { clock, sockets, events } = authClient({ getToken });
  await settle();
  assert.equal(sockets.length, 0);
  assert.match(events[0][1].error.message, /backend down/);
  clock.advance(clock.pendingDelays()[0]);
  await settle();
  assert.equal(calls, 2);
  sockets[0].serverOpen();
  assert.deepEqual(sockets[0].sent, ["LHTTP/1.0 connect\r\ntoken:good\r\n\r\n"]);
});

test("a subscription token travels as channel-token and again after a reconnect", () => {
  const { client, clock, sockets } = authClient({ token: "t" });
  sockets[0].serverOpen();
  sockets[0].serverSend(connected("alice"));
  client.subscribe("private.x", { token: "sub.jwt.1" });
  client.subscribe("a b", { token: ["ta", "tb"], headers: [["nick", "al"]] });
  client.subscribe("plain");
  assert.throws(() => client.subscribe("c d", { token: "one" }), TypeError);
  assert.throws(() => client.subscribe("c", { token: "has space" }), TypeError);
  const sent = frames(sockets[0]).slice(1);
  assert.equal(sockets[0].sent[1], "LHTTP/1.0 subscribe\r\nsubscribe:private.x\r\nchannel-token:sub.jwt.1\r\n\r\n");
  assert.deepEqual([sent[1].getHeader("subscribe"), sent[1].getHeader("channel-token"), sent[1].getHeader("nick")],
    ["a b", "ta tb", "al"]);
  sockets[0].serverClose(1006);
  clock.advance(clock.pendingDelays()[0]);
  sockets[1].serverOpen();
  sockets[1].serverSend(connected("alice"));
  const again = frames(sockets[1]).slice(1).map((m) => [m.getHeader("subscribe"), m.getHeader("channel-token")]);
  assert.deepEqual(again, [["private.x", "sub.jwt.1"], ["a b", "ta tb"], ["plain", null]]);
});

test("getSubscriptionToken gives fresh subscription tokens for a reconnect", async () => {
  const asked = [];
  const getSubscriptionToken = async (channel) => {
    asked.push(channel);
    return channel === "gone" ? null : `fresh-${channel}`;
  };
  const { client, clock, sockets, events } = authClient({ token: "t", getSubscriptionToken });
  sockets[0].serverOpen();
  sockets[0].serverSend(connected("alice"));
  client.subscribe("private.x", { token: "old" });
  client.subscribe("gone", { token: "old" });
  client.subscribe("plain");
  assert.deepEqual(asked, [], "the first subscribe uses the token given");
  sockets[0].serverClose(1006);
  clock.advance(clock.pendingDelays()[0]);
  await settle();
  assert.deepEqual(asked.sort(), ["gone", "private.x"]);
  sockets[1].serverOpen();
  sockets[1].serverSend(connected("alice"));
  const again = frames(sockets[1]).slice(1).map((m) => [m.getHeader("subscribe"), m.getHeader("channel-token")]);
  assert.deepEqual(again, [["private.x", "fresh-private.x"], ["plain", null]]);
  const dropped = events.filter((e) => e[0] === "unsubscribed").map((e) => [e[1].channel, e[1].reason]);
  assert.deepEqual(dropped, [["gone", "no subscription token"]]);
  assert.deepEqual(client.getChannels().sort(), ["plain", "private.x"]);
});

test("the node's unsubscribed drops the channel from the re-subscribe set", () => {
  const { client, clock, sockets, events } = authClient();
  sockets[0].serverOpen();
  client.subscribe("room.1 room.2");
  // A client's look-alike is an ordinary message and changes nothing.
  sockets[0].serverSend("LHTTP/1.0 unsubscribed\r\nchannel:room.2\r\n\r\n");
  sockets[0].serverSend(`LHTTP/1.0 unsubscribed\r\n${NODE}channel:room.1\r\nreason:unsubscribed by the server\r\n\r\n`);
  const seen = events.filter((e) => e[0] === "unsubscribed").map((e) => [e[1].channel, e[1].reason]);
  assert.deepEqual(seen, [["room.1", "unsubscribed by the server"]]);
  assert.equal(events.filter((e) => e[0] === "message").length, 1);
  assert.deepEqual(client.getChannels(), ["room.2"]);
  sockets[0].serverClose(1006);
  clock.advance(clock.pendingDelays()[0]);
  sockets[1].serverOpen();
  assert.deepEqual(frames(sockets[1]).map((m) => m.getHeader("subscribe")), ["room.2"]);
});

test("close() while getToken runs opens no socket", async () => {
  let release;
  const getToken = () => new Promise((resolve) => { release = resolve; });
  const { client, sockets } = authClient({ getToken });
  client.close();
  release("late");
  await settle();
  assert.equal(sockets.length, 0);
  assert.equal(client.state, "closed");
});
