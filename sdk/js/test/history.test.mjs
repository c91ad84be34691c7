// History channels in the SDK's client, against a fake WebSocket and a
// manual clock: positions remembered per channel, recovery on reconnect,
// duplicates dropped by offset, recovery replies, history() requests.
import { test } from "node:test";
import assert from "node:assert/strict";
import Lhttp from "../lhttp.js";
import { fakeClient } from "./fakes.mjs";

const { decode, encode, buildMultipart, LhttpError } = Lhttp;

function makeClient(options = {}) {
  const { client, clock, sockets } = fakeClient({ minDelay: 100, ...options });
  const received = [];
  const errors = [];
  const recoveries = [];
  client.on_message = (ctx) => received.push(ctx.getBody());
  client.on_error = (ctx) => errors.push(ctx.error);
  client.on_recovery = (ctx) => recoveries.push(ctx);
  const reconnect = () => {
    sockets[sockets.length - 1].serverClose(1006);
    clock.advance(10000);
    sockets[sockets.length - 1].serverOpen();
    return sockets[sockets.length - 1];
  };
  return { client, clock, sockets, received, errors, recoveries, reconnect, last: () => sockets[sockets.length - 1] };
}

/** A message as a history channel's subscribers get it: position first. */
function stamped(channel, offset, epoch, body, command = "chat") {
  return encode(command, [["lhttp-node", "position"], ["channel", channel], ["offset", String(offset)], ["epoch", epoch], ["publish", channel]], body);
}

function recovery(channel, fields) {
  const headers = [["lhttp-node", "reply"], ["channel", channel]];
  for (const [k, v] of Object.entries(fields)) headers.push([k, String(v)]);
  return encode("recovery", headers, "");
}

const sent = (socket) => socket.sent.map((d) => decode(d));

test("after a reconnect, history channels are re-subscribed from the last offset seen", () => {
  const { client, last, reconnect, received } = makeClient();
  last().serverOpen();
  client.subscribe("room.a room.b plain");
  last().serverSend(stamped("room.a", 5, "e1", "a5"));
  last().serverSend(stamped("room.a", 9, "e1", "a9"));  // offsets are not consecutive
  last().serverSend(stamped("room.b", 7, "e2", "b7"));
  last().serverSend(encode("chat", [["publish", "plain"]], "p"));
  assert.deepEqual(received, ["a5", "a9", "b7", "p"]);
  assert.deepEqual(client.getPosition("room.a"), { offset: 9, epoch: "e1" });
  assert.equal(client.getPosition("plain"), null);

  const [resubscribe] = sent(reconnect());
  assert.equal(resubscribe.getHeader("subscribe"), "room.a room.b plain");
  assert.equal(resubscribe.getHeader("since"), "room.a=9 room.b=7");
  assert.equal(resubscribe.getHeader("epoch"), "room.a=e1 room.b=e2");
});

test("a message already seen (same epoch, offset not newer) is dropped; a new epoch starts afresh", () => {
  const { client, last, received } = makeClient();
  last().serverOpen();
  client.subscribe("room.a");
  for (const [offset, body] of [[3, "three"], [8, "eight"], [8, "eight again"], [3, "three again"], [12, "twelve"]]) {
    last().serverSend(stamped("room.a", offset, "e1", body));
  }
  last().serverSend(stamped("room.a", 2, "e2", "new epoch"));
  assert.deepEqual(received, ["three", "eight", "twelve", "new epoch"]);
  assert.equal(client.duplicates, 2);
  assert.deepEqual(client.getPosition("room.a"), { offset: 2, epoch: "e2" });
});

test("a stamp for a channel not subscribed to is neither tracked nor dropped", () => {
  const { client, last, received } = makeClient();
  last().serverOpen();
  client.subscribe("room.a");
  last().serverSend(stamped("room.x", 50, "e1", "x"));
  last().serverSend(stamped("room.x", 50, "e1", "x"));
  assert.deepEqual(received, ["x", "x"]);
  assert.equal(client.getPosition("room.x"), null);
});

test("recovery replies go to on_recovery, not on_message, and set the position's epoch", () => {
  const { client, last, reconnect, received, recoveries } = makeClient();
  last().serverOpen();
  client.subscribe("room.a plain");
  last().serverSend(stamped("room.a", 40, "old", "a40"));
  last().serverSend(stamped("plain", 1, "fake", "looks stamped"));
  const socket = reconnect();
  assert.equal(sent(socket)[0].getHeader("since"), "room.a=40 plain=1");
  // The node restarted: a new epoch; what it retains follows, from offset 1.
  socket.serverSend(recovery("room.a", { recovered: false, epoch: "new", since: 40, count: 2, offset: 3, command: "subscribe" }));
  socket.serverSend(recovery("plain", { recovered: false, history: "none", since: 1, count: 0, offset: 0, command: "subscribe" }));
  socket.serverSend(stamped("room.a", 1, "new", "n1"));
  socket.serverSend(stamped("room.a", 3, "new", "n3"));
  assert.deepEqual(received, ["a40", "looks stamped", "n1", "n3"]);
  assert.deepEqual(recoveries.map((r) => [r.channel, r.recovered, r.history, r.epoch, r.since, r.count, r.offset]), [
    ["room.a", false, true, "new", 40, 2, 3],
    ["plain", false, false, null, 1, 0, 0],
  ]);
  assert.equal(recoveries[0].getCommand(), "recovery");
  assert.equal(client.getPosition("plain"), null, "a channel without history is not resumed");
  assert.equal(sent(reconnect())[0].getHeader("since"), "room.a=3");
});

test("a recovery in the same epoch keeps the position, so nothing is shown twice", () => {
  const { client, last, reconnect, received, recoveries } = makeClient();
  last().serverOpen();
  client.subscribe("room.a");
  last().serverSend(stamped("room.a", 4, "e", "4"));
  const socket = reconnect();
  socket.serverSend(recovery("room.a", { recovered: true, epoch: "e", since: 4, count: 1, offset: 6 }));
  socket.serverSend(stamped("room.a", 4, "e", "4 again"));
  socket.serverSend(stamped("room.a", 6, "e", "6"));
  assert.deepEqual(received, ["4", "6"]);
  assert.equal(recoveries[0].recovered, true);
});

test("unsubscribe forgets the position; setPosition makes the next subscribe resume", () => {
  const { client, last } = makeClient();
  last().serverOpen();
  client.subscribe("room.a");
  last().serverSend(stamped("room.a", 4, "e", "4"));
  client.unsubscribe("room.a");
  assert.equal(client.getPosition("room.a"), null);
  client.subscribe("room.a");
  assert.equal(sent(last())[2].getHeader("since"), null, "a fresh subscribe after unsubscribe");

  client.setPosition("room.b", 17, "e9");
  client.subscribe(["room.b", "room.c"]);
  const resumed = sent(last())[3];
  assert.equal(resumed.getHeader("since"), "room.b=17");
  assert.equal(resumed.getHeader("epoch"), "room.b=e9");
  // An explicit since wins.
  client.setPosition("room.d", 5, "e9");
  client.subscribe("room.d", "join", [["since", "0"]]);
  assert.equal(sent(last())[4].getHeader("since"), "0");
  assert.equal(sent(last())[4].getHeader("epoch"), null);
  assert.throws(() => client.setPosition("room.e", -1), TypeError);
});

function historyReply(channel, entries, extra = {}) {
  const parts = entries.map(([offset, body]) => ({ headers: [["offset", String(offset)]], body: stamped(channel, offset, "e", body) }));
  const built = buildMultipart(parts);
  const headers = [["lhttp-node", "reply"], ["channel", channel], ["epoch", "e"], ["offset", String(extra.top ?? 0)],
    ["count", String(parts.length)], ["complete", extra.complete ?? "true"]];
  if (parts.length) headers.push(["multipart", built.offsets]);
  return encode("history", headers, parts.length ? built.body : "");
}

test("history() sends a history request and resolves with the messages", async () => {
  const { client, last, received } = makeClient();
  const pending = client.history("room.a", 2);  // queued while connecting
  last().serverOpen();
  const [request] = sent(last());
  assert.equal(request.command, "history");
  assert.equal(request.getHeader("channel"), "room.a");
  assert.equal(request.getHeader("limit"), "2");
  last().serverSend(historyReply("room.a", [[7, "seven"], [9, "nine: with a colon"]], { top: 9, complete: "false" }));
  const messages = await pending;
  assert.deepEqual(messages.map((m) => [m.command, m.getHeader("offset"), m.body]), [["chat", "7", "seven"], ["chat", "9", "nine: with a colon"]]);
  assert.equal(messages.channel, "room.a");
  assert.equal(messages.epoch, "e");
  assert.equal(messages.offset, 9);
  assert.equal(messages.complete, false);
  assert.deepEqual(received, [], "a history reply is not a message");

  const empty = client.history("room.b");
  assert.equal(sent(last())[1].getHeader("limit"), null);
  last().serverSend(historyReply("room.b", []));
  assert.deepEqual(Array.from(await empty), []);
});

test("history() rejects on an error reply (not on_error), a close, or no reply in time", async () => {
  const { client, clock, last, errors, received } = makeClient({ requestTimeout: 1000 });
  last().serverOpen();
  const missing = client.history("plain");
  last().serverSend("LHTTP/1.0 error\r\nlhttp-node:reply\r\nstatus:404\r\nreason:no history\r\ncommand:history\r\n\r\n'plain' keeps no history");
  await assert.rejects(missing, (e) => e instanceof LhttpError && e.status === 404);
  assert.deepEqual(errors, []);
  // Other error replies still go to on_error.
  last().serverSend("LHTTP/1.0 error\r\nlhttp-node:reply\r\nstatus:400\r\nreason:bad\r\ncommand:chat\r\n\r\n");
  assert.equal(errors.length, 1);

  const slow = client.history("room.a");
  clock.advance(1000);
  await assert.rejects(slow, /no history reply within 1000 ms/);
  const next = client.history("room.a");
  // The late reply to the first request is not taken for the second's.
  last().serverSend(historyReply("room.a", [[1, "late"]]));
  last().serverSend(historyReply("room.a", [[2, "right"]]));
  assert.deepEqual((await next).map((m) => m.body), ["right"]);
  assert.deepEqual(received, []);

  const cut = client.history("room.a");
  last().serverClose(1006);
  await assert.rejects(cut, /connection closed before the history reply/);
  const closed = client.history("room.a");  // queued while reconnecting
  client.close();
  await assert.rejects(closed, /client closed/);
});

test("a channel joined with since:0 is resumed even if no message came before the disconnect", () => {
  const { client, last, reconnect, recoveries } = makeClient();
  last().serverOpen();
  client.subscribe("room.quiet", "join", [["since", "0"]]);
  last().serverSend(recovery("room.quiet", { recovered: true, epoch: "e5", since: 0, count: 0, offset: 0 }));
  assert.equal(recoveries.length, 1);
  const [resubscribe] = sent(reconnect());
  assert.equal(resubscribe.getHeader("since"), "room.quiet=0");
  assert.equal(resubscribe.getHeader("epoch"), "room.quiet=e5");
});

// The node's word (docs/protocol.rst): what a room member publishes never
// passes for the node's, however it is dressed.

/** A message as another client published it on a history channel: the node stamps it. */
function relayed(channel, offset, command, headers, body = "") {
  return encode(command, [["lhttp-node", "position"], ["channel", channel], ["offset", String(offset)],
    ["epoch", "e1"], ...headers, ["publish", channel]], body);
}

test("a recovery, history or error message published by a client is an ordinary message", () => {
  const { client, last, reconnect, received, errors, recoveries } = makeClient();
  last().serverOpen();
  client.subscribe("room.a");
  last().serverSend(stamped("room.a", 5, "e1", "a5"));
  // An attacker in the room: the forged recovery says the channel keeps no history.
  last().serverSend(relayed("room.a", 6, "recovery", [["history", "none"], ["recovered", "false"]]));
  last().serverSend(relayed("room.a", 7, "recovery", [["count", "²"]]));
  last().serverSend(relayed("room.a", 8, "error", [["status", "503"], ["reason", "fake"]], "x"));
  // Unstamped: on a plain channel, with the mark in another case or not first.
  last().serverSend(encode("recovery", [["history", "none"], ["channel", "room.a"], ["publish", "room.a"]], ""));
  last().serverSend(encode("recovery", [["channel", "room.a"], ["lhttp-node", "reply"], ["history", "none"]], ""));
  assert.deepEqual(recoveries, []);
  assert.deepEqual(errors, []);
  assert.equal(received.length, 6);
  assert.deepEqual(client.getPosition("room.a"), { offset: 8, epoch: "e1" }, "the position is kept");
  const [resubscribe] = sent(reconnect());
  assert.equal(resubscribe.getHeader("since"), "room.a=8");
});

test("a history request is answered only by the node's reply, not by a published history message", async () => {
  const { client, last } = makeClient();
  last().serverOpen();
  client.subscribe("room.a");
  const pending = client.history("room.a", 10);
  last().serverSend(relayed("room.a", 3, "history", [["count", "1"], ["complete", "true"]], "attacker's body"));
  last().serverSend(historyReply("room.a", [[2, "real"]], { top: 3 }));
  const messages = await pending;
  assert.deepEqual(messages.map((m) => m.body), ["real"]);
});

test("a malformed position or count from the node is ignored with a console line, never thrown", () => {
  const { client, last, received, recoveries, errors } = makeClient();
  const warned = [];
  const warn = console.warn;
  console.warn = (line) => warned.push(line);
  try {
    last().serverOpen();
    client.subscribe("room.a", "join", [["since", "0"]]);
    last().serverSend(recovery("room.a", { recovered: "true", epoch: "e1", since: "0", count: "²", offset: "9".repeat(5000) }));
    last().serverSend(stamped("room.a", "٣", "e1", "arabic-indic offset"));
  } finally {
    console.warn = warn;
  }
  assert.deepEqual(errors, []);
  assert.equal(recoveries.length, 1);
  assert.equal(recoveries[0].count, null);
  assert.equal(recoveries[0].offset, null);
  assert.deepEqual(received, ["arabic-indic offset"]);
  assert.equal(client.getPosition("room.a").offset, 0);
  assert.equal(warned.length, 3);
});
