// The SDK's client against a fake WebSocket and a manual clock: callbacks
// and contexts, queueing while connecting, reconnect with backoff and
// jitter, re-subscription, error replies, binary frames.
import { test } from "node:test";
import assert from "node:assert/strict";
import Lhttp from "../lhttp.js";
import { fakeClient } from "./fakes.mjs";

const { decode, encode, LhttpError } = Lhttp;

function makeClient(options = {}) {
  const { client, clock, sockets } = fakeClient(options);
  const events = [];
  client.on_open = (ctx) => events.push(["open", ctx]);
  client.on_message = (ctx) => events.push(["message", ctx]);
  client.on_close = (ctx) => events.push(["close", ctx]);
  client.on_error = (ctx) => events.push(["error", ctx]);
  return { client, clock, sockets, events, last: () => sockets[sockets.length - 1] };
}

const sentMessages = (socket) => socket.sent.map((d) => decode(d));

test("open and message callbacks get a context that reads the message", () => {
  const { client, last, events } = makeClient();
  assert.equal(client.state, "connecting");
  last().serverOpen();
  assert.equal(client.state, "open");
  assert.equal(events[0][0], "open");
  assert.equal(events[0][1].reconnected, false);
  last().serverSend("LHTTP/1.0 chat\r\nnick:a:b\r\nmultipart:0 7\r\n\r\n\r\npart1h:v\r\n\r\npart2");
  const [kind, ctx] = events[1];
  assert.equal(kind, "message");
  assert.equal(ctx.getCommand(), "chat");
  assert.equal(ctx.getHeader("NICK"), "a:b");
  assert.equal(ctx.getBody(), "\r\npart1h:v\r\n\r\npart2");
  assert.deepEqual(ctx.getMultipart().map((p) => p.body), ["part1", "part2"]);
});

test("a context replies with its command and headers; headers reset after send", () => {
  const { client, last, events } = makeClient();
  last().serverOpen();
  last().serverSend("LHTTP/1.0 ping\r\n\r\n");
  const ctx = events[1][1];
  ctx.addHeader("x-trace", "1").send("pong body");
  ctx.setCommand("pong").send("again");
  const [reply1, reply2] = sentMessages(last());
  assert.equal(reply1.command, "ping", "the reply defaults to the received command");
  assert.deepEqual(reply1.headers, [["x-trace", "1"]]);
  assert.equal(reply1.body, "pong body");
  assert.equal(reply2.command, "pong");
  assert.deepEqual(reply2.headers, []);
  // The original SDK's client.context: send from application code.
  client.context.publish("room", "chat", { nick: "ann" }, "hi");
  const pub = sentMessages(last())[2];
  assert.equal(pub.command, "chat");
  assert.deepEqual(pub.headers, [["nick", "ann"], ["publish", "room"]]);
});

test("publish/subscribe/unsubscribe build the reserved headers", () => {
  const { client, last } = makeClient();
  last().serverOpen();
  client.subscribe(["a", "b"]);
  client.publish("a b", "chat", [["k", "v"]], "body");
  client.unsubscribe("b");
  const [sub, pub, unsub] = sentMessages(last());
  assert.equal(sub.command, "subscribe");
  assert.equal(sub.getHeader("subscribe"), "a b");
  assert.equal(pub.getHeader("publish"), "a b");
  assert.equal(pub.getHeader("k"), "v");
  assert.equal(unsub.getHeader("unsubscribe"), "b");
  assert.deepEqual(client.getChannels(), ["a"]);
  assert.throws(() => client.publish("", "chat", null, "x"), TypeError);
});

test("a multipart reply gets its multipart header", () => {
  const { client, last } = makeClient();
  last().serverOpen();
  client.context.setCommand("upload").appendPart([["k1", "v1"]], "body1").appendPart([["k2", "v2"]], "body2").send();
  const [m] = sentMessages(last());
  assert.equal(m.getHeader("multipart"), "0 14");
  assert.equal(m.body, "k1:v1\r\n\r\nbody1k2:v2\r\n\r\nbody2");
});

test("sends while connecting are queued and flushed in order on open", () => {
  const { client, last } = makeClient();
  client.send("one", [], "1");
  client.publish("room", "two", null, "2");
  assert.deepEqual(last().sent, []);
  last().serverOpen();
  assert.deepEqual(sentMessages(last()).map((m) => m.command), ["one", "two"]);
});

test("the queue is bounded: overflow is an error, not a silent drop", () => {
  const { client, events } = makeClient({ maxQueue: 2 });
  assert.equal(client.send("a", [], ""), true);
  assert.equal(client.send("b", [], ""), true);
  assert.equal(client.send("c", [], ""), false);
  const errors = events.filter((e) => e[0] === "error");
  assert.equal(errors.length, 1);
  assert.match(errors[0][1].error.message, /queue full/);
});

test("reconnect with exponential backoff, jitter, and a cap", () => {
  const { client, clock, sockets, events } = makeClient({ minDelay: 100, maxDelay: 1000, jitter: 0.5, random: () => 1 });
  sockets[0].serverClose(1006);
  const close = events.find((e) => e[0] === "close")[1];
  assert.equal(close.willReconnect, true);
  assert.equal(client.state, "reconnecting");
  // random() = 1 and jitter 0.5: each delay is half the backoff step.
  const delays = [];
  for (let i = 0; i < 6; i++) {
    delays.push(clock.pendingDelays()[0]);
    clock.advance(delays[i]);
    assert.equal(sockets.length, i + 2, "a new socket after the delay");
    sockets[sockets.length - 1].serverClose(1006);
  }
  assert.deepEqual(delays, [50, 100, 200, 400, 500, 500]);
  // A connection that lasts resets the backoff.
  clock.advance(clock.pendingDelays()[0]);
  sockets[sockets.length - 1].serverOpen();
  clock.advance(5000);
  sockets[sockets.length - 1].serverClose(1006);
  assert.equal(clock.pendingDelays()[0], 50);
});

test("a server that accepts and closes at once still gets a growing backoff", () => {
  const { clock, sockets } = makeClient({ minDelay: 100, maxDelay: 10000, jitter: 0 });
  const delays = [];
  for (let i = 0; i < 4; i++) {
    sockets[sockets.length - 1].serverOpen();
    clock.advance(10);
    sockets[sockets.length - 1].serverClose(1008, "too many connections");
    delays.push(clock.pendingDelays()[0]);
    clock.advance(delays[i]);
  }
  assert.deepEqual(delays, [100, 200, 400, 800]);
});

test("jitter spreads the delays of many clients", () => {
  const delays = [0, 0.25, 0.5, 0.99].map((r) => {
    const { clock, sockets } = makeClient({ minDelay: 1000, jitter: 0.5, random: () => r });
    sockets[0].serverClose(1006);
    return clock.pendingDelays()[0];
  });
  assert.deepEqual(delays, [1000, 875, 750, 505]);
});

test("channels are re-subscribed after a reconnect, and then the queue is flushed", () => {
  const { client, clock, sockets, events } = makeClient();
  sockets[0].serverOpen();
  client.subscribe("a b");
  client.subscribe("c");
  client.unsubscribe("b");
  sockets[0].serverClose(1006);
  client.publish("a", "chat", null, "sent while away");
  client.subscribe("d");
  clock.advance(clock.pendingDelays()[0]);
  const second = sockets[1];
  second.serverOpen();
  const sent = sentMessages(second);
  assert.equal(sent[0].command, "subscribe");
  assert.equal(sent[0].getHeader("subscribe"), "a c", "old channels, not b, not d (queued)");
  assert.deepEqual(sent.slice(1).map((m) => [m.command, m.body]), [["chat", "sent while away"], ["subscribe", ""]]);
  assert.equal(sent[2].getHeader("subscribe"), "d");
  const opens = events.filter((e) => e[0] === "open").map((e) => e[1].reconnected);
  assert.deepEqual(opens, [false, true]);
  assert.deepEqual(client.getChannels().sort(), ["a", "c", "d"]);
});

test("many channels are re-subscribed in batches", () => {
  const { client, clock, sockets } = makeClient({ resubscribeBatch: 2 });
  sockets[0].serverOpen();
  client.subscribe(["c1", "c2", "c3", "c4", "c5"]);
  sockets[0].serverClose(1006);
  clock.advance(clock.pendingDelays()[0]);
  sockets[1].serverOpen();
  assert.deepEqual(sentMessages(sockets[1]).map((m) => m.getHeader("subscribe")), ["c1 c2", "c3 c4", "c5"]);
});

test("channels are re-subscribed with the headers they were subscribed with", () => {
  // The demo names its user with a nick header: without it after a
  // reconnect, "who is here" listed a guest instead of bob.
  const { client, clock, sockets } = makeClient();
  sockets[0].serverOpen();
  client.send("join", [["subscribe", "room.a"], ["since", "0"], ["publish", "room.a"], ["nick", "bob"]], "");
  client.subscribe("room.b room.c", "enter", [["nick", "bob"]]);
  client.subscribe("plain");
  client.subscribe("room.c", "enter", [["nick", "robert"]]);
  sockets[0].serverClose(1006);
  clock.advance(clock.pendingDelays()[0]);
  sockets[1].serverOpen();
  const again = sentMessages(sockets[1]).map((m) => [
    m.command, m.getHeader("subscribe"), m.getHeader("nick"), m.getHeader("publish"),
  ]);
  assert.deepEqual(again, [
    ["subscribe", "room.a room.b", "bob", null],
    ["subscribe", "room.c", "robert", null],
    ["subscribe", "plain", null, null],
  ]);
});

test("an error reply is surfaced to on_error as an LhttpError, not as a message", () => {
  const { last, events } = makeClient();
  last().serverOpen();
  last().serverSend("LHTTP/1.0 error\r\nlhttp-node:reply\r\nstatus:400\r\nreason:bad channel name: a*b\r\n\r\nchannel names may not contain * or >");
  assert.deepEqual(events.map((e) => e[0]), ["open", "error"]);
  const ctx = events[1][1];
  assert.ok(ctx.error instanceof LhttpError);
  assert.ok(ctx.error instanceof Error);
  assert.equal(ctx.error.status, 400);
  assert.equal(ctx.error.reason, "bad channel name: a*b", "a reason with ':' is read whole");
  assert.equal(ctx.error.body, "channel names may not contain * or >");
  assert.equal(ctx.getHeader("status"), "400");
});

test("a malformed frame from the server is an error, and the client goes on", () => {
  const { last, events } = makeClient();
  last().serverOpen();
  last().serverSend("garbage");
  last().serverSend("LHTTP/1.0 ok\r\n\r\n");
  assert.deepEqual(events.map((e) => e[0]), ["open", "error", "message"]);
  assert.equal(events[1][1].error.name, "LhttpParseError");
});

test("a close code for refused input is surfaced as an error, then reconnects", () => {
  const { client, last, events } = makeClient();
  last().serverOpen();
  last().serverClose(1009, "message too big");
  const kinds = events.map((e) => e[0]);
  assert.deepEqual(kinds, ["open", "error", "close"]);
  assert.equal(events[1][1].error.status, 1009);
  assert.equal(events[2][1].code, 1009);
  assert.equal(client.state, "reconnecting");
});

test("a throwing callback is reported to on_error and does not break the client", () => {
  const { client, last, events } = makeClient();
  client.on_message = () => { throw new Error("app bug"); };
  last().serverOpen();
  last().serverSend("LHTTP/1.0 x\r\n\r\n");
  assert.equal(events[1][0], "error");
  assert.equal(events[1][1].error.message, "app bug");
  client.send("still", [], "works");
  assert.equal(sentMessages(last())[0].command, "still");
});

test("binary frames give a Uint8Array body and are answered with binary frames", () => {
  const { last, events } = makeClient();
  last().serverOpen();
  const payload = new Uint8Array([0, 255, 13, 10, 13, 10, 7]);
  last().serverSend(encode("blob", [["name", "x:y"]], payload).buffer);
  const ctx = events[1][1];
  assert.ok(ctx.binary);
  assert.ok(ctx.getBody() instanceof Uint8Array);
  assert.deepEqual(Array.from(ctx.getBody()), Array.from(payload));
  assert.equal(ctx.getHeader("name"), "x:y");
  ctx.send("text reply");
  const frame = last().sent[0];
  assert.ok(frame instanceof Uint8Array, "same frame type as the request");
  assert.equal(new TextDecoder().decode(decode(frame).body), "text reply");
  // A bytes body from a text context also goes binary.
  events[0][1].setCommand("raw").send(new Uint8Array([1, 2]));
  assert.ok(last().sent[1] instanceof Uint8Array);
});

test("close() stops reconnecting; later sends are errors", () => {
  const { client, clock, sockets, events } = makeClient();
  sockets[0].serverOpen();
  client.close();
  assert.deepEqual(sockets[0].closedWith, [1000, ""]);
  assert.equal(client.state, "closed");
  assert.equal(events.at(-1)[0], "close");
  assert.equal(events.at(-1)[1].willReconnect, false);
  clock.advance(60000);
  assert.equal(sockets.length, 1);
  assert.equal(client.send("late", [], ""), false);
  assert.equal(events.at(-1)[0], "error");
});

test("a connect attempt that hangs times out and is retried", () => {
  const { clock, sockets, events } = makeClient({ connectTimeout: 1000 });
  clock.advance(1000);
  assert.ok(events.some((e) => e[0] === "close" && e[1].reason === "connect timeout"));
  clock.advance(clock.pendingDelays()[0]);
  assert.equal(sockets.length, 2);
  // Events from the abandoned socket are ignored.
  sockets[0].serverOpen();
  assert.ok(!events.some((e) => e[0] === "open"));
});

test("on(event, fn) adds listeners next to the on_* callbacks", () => {
  const { client, last } = makeClient();
  const seen = [];
  client.on("message", (ctx) => seen.push(ctx.getBody()));
  last().serverOpen();
  last().serverSend("LHTTP/1.0 x\r\n\r\nhello");
  assert.deepEqual(seen, ["hello"]);
  assert.throws(() => client.on("nope", () => {}), TypeError);
});
