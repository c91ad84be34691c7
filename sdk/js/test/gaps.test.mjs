// Live gaps in the SDK's client (issue 20), against a fake WebSocket and a
// manual clock: a history message whose `prev` (the offset of the message
// before it on the channel) is past the last offset seen is a gap; the
// client subscribes to the channel again from the last offset, without
// reconnecting, holds the channel's messages until the node's recovery
// reply, then delivers what the node sends again, once and in order.
import { test } from "node:test";
import assert from "node:assert/strict";
import Lhttp from "../lhttp.js";
import { fakeClient } from "./fakes.mjs";

const { decode, encode } = Lhttp;

function makeClient(options = {}) {
  const { client, clock, sockets } = fakeClient({ minDelay: 100, ...options });
  const received = [];
  const recoveries = [];
  client.on_message = (ctx) => received.push(ctx.getBody());
  client.on_recovery = (ctx) => recoveries.push(ctx);
  const last = () => sockets[sockets.length - 1];
  last().serverOpen();
  return { client, clock, sockets, received, recoveries, last };
}

/** A history message as the node stamps it: channel, offset, epoch, prev, then the publisher's. */
function stamped(channel, offset, epoch, prev, body, extra = []) {
  const headers = [["lhttp-node", "position"], ["channel", channel], ["offset", String(offset)], ["epoch", epoch]];
  if (prev !== null) headers.push(["prev", String(prev)]);
  return encode("chat", headers.concat([["publish", channel]], extra), body);
}

function recovery(channel, fields) {
  const headers = [["lhttp-node", "reply"], ["channel", channel]];
  for (const [k, v] of Object.entries(fields)) headers.push([k, String(v)]);
  return encode("recovery", headers, "");
}

const sent = (socket) => socket.sent.map((d) => decode(d));

function chain(socket, channel, epoch, offsets, prefix = "m") {
  // Each message's prev is the one before it in the list.
  for (let i = 0; i < offsets.length; i++) {
    socket.serverSend(stamped(channel, offsets[i], epoch, i ? offsets[i - 1] : 0, prefix + offsets[i]));
  }
}

test("a live gap: re-subscribe from the last offset, hold until the recovery reply, then each message once, in order", () => {
  const { client, last, sockets, received, recoveries } = makeClient();
  client.subscribe("room.a other", null, { user: "ann" });
  const socket = last();
  chain(socket, "room.a", "e1", [3, 5]);
  socket.sent.length = 0;
  // 7 and 9 were lost between the node and this client: 11 says its predecessor is 9.
  socket.serverSend(stamped("room.a", 11, "e1", 9, "m11"));
  const [resubscribe, ...more] = sent(socket);
  assert.equal(more.length, 0);
  assert.equal(resubscribe.command, "subscribe");
  assert.equal(resubscribe.getHeader("subscribe"), "room.a");
  assert.equal(resubscribe.getHeader("since"), "room.a=5");
  assert.equal(resubscribe.getHeader("epoch"), "room.a=e1");
  assert.equal(resubscribe.getHeader("user"), "ann", "subscribed again with the headers it was subscribed with");
  assert.equal(client.gaps, 1);
  assert.deepEqual(client.getPosition("room.a"), { offset: 5, epoch: "e1" }, "the position does not move");

  // Live ones before the node's reply are not delivered (the node sends them again).
  socket.serverSend(stamped("room.a", 13, "e1", 11, "m13"));
  socket.serverSend(encode("chat", [["publish", "other"]], "plain meanwhile"));
  assert.deepEqual(received, ["m3", "m5", "plain meanwhile"]);

  socket.serverSend(recovery("room.a", { recovered: "true", epoch: "e1", since: 5, count: 4, offset: 13 }));
  for (const [offset, prev] of [[7, 5], [9, 7], [11, 9], [13, 11]]) {
    socket.serverSend(stamped("room.a", offset, "e1", prev, "m" + offset));
  }
  socket.serverSend(stamped("room.a", 13, "e1", 11, "m13 live copy"));
  socket.serverSend(stamped("room.a", 15, "e1", 13, "m15"));
  assert.deepEqual(received, ["m3", "m5", "plain meanwhile", "m7", "m9", "m11", "m13", "m15"]);
  assert.equal(recoveries.length, 1);
  assert.equal(recoveries[0].gap, true);
  assert.equal(recoveries[0].recovered, true);
  assert.equal(recoveries[0].since, 5);
  assert.equal(client.gapsRecovered, 1);
  assert.equal(client.gaps, 1);
  assert.equal(sockets.length, 1, "no reconnect");
  assert.equal(socket.sent.length, 1, "one re-subscribe");
  assert.deepEqual(client.getPosition("room.a"), { offset: 15, epoch: "e1" });
});

test("no gap: prev not past the last offset, no prev (an older node), another epoch", () => {
  const { client, last, received } = makeClient();
  client.subscribe("room.a");
  const socket = last();
  socket.sent.length = 0;
  socket.serverSend(stamped("room.a", 4, "e1", 0, "first"));       // no position yet
  socket.serverSend(stamped("room.a", 6, "e1", 4, "next"));
  socket.serverSend(stamped("room.a", 8, "e1", 2, "prev behind")); // not a gap
  socket.serverSend(stamped("room.a", 20, "e1", null, "no prev"));  // an older node
  socket.serverSend(stamped("room.a", 3, "e2", 1, "new epoch"));    // offsets start again
  assert.deepEqual(received, ["first", "next", "prev behind", "no prev", "new epoch"]);
  assert.equal(socket.sent.length, 0);
  assert.equal(client.gaps, 0);
});

test("a prev a client put in its own message is not the node's: only a position stamp counts", () => {
  const { client, last, received } = makeClient();
  client.subscribe("room.a plain");
  const socket = last();
  socket.sent.length = 0;
  chain(socket, "room.a", "e1", [1, 2]);
  // Relayed on a plain channel: no lhttp-node header, so no position at all.
  socket.serverSend(encode("chat", [["channel", "room.a"], ["offset", "99"], ["epoch", "e1"], ["prev", "98"], ["publish", "plain"]], "forged"));
  // On a history channel the node's headers come first: the publisher's later prev is not read.
  socket.serverSend(stamped("room.a", 3, "e1", 2, "honest", [["prev", "1000"]]));
  assert.deepEqual(received, ["m1", "m2", "forged", "honest"]);
  assert.equal(socket.sent.length, 0);
  assert.equal(client.gaps, 0);
  assert.deepEqual(client.getPosition("room.a"), { offset: 3, epoch: "e1" });
});

test("a malformed prev is ignored, with a line in the console", (t) => {
  const warned = [];
  t.mock.method(console, "warn", (line) => warned.push(line));
  const { client, last, received } = makeClient();
  client.subscribe("room.a");
  const socket = last();
  socket.sent.length = 0;
  socket.serverSend(stamped("room.a", 1, "e1", 0, "one"));
  socket.serverSend(stamped("room.a", 5, "e1", "-3", "minus"));
  socket.serverSend(stamped("room.a", 9, "e1", "８", "wide digit"));
  assert.deepEqual(received, ["one", "minus", "wide digit"]);
  assert.equal(socket.sent.length, 0);
  assert.equal(warned.length, 2);
  assert.match(warned[0], /malformed prev header: "-3"/);
});

test("no recovery reply in time: reported as not recovered, held messages delivered in order, no loop", () => {
  const { client, clock, last, received, recoveries } = makeClient({ recoveryTimeout: 2000 });
  client.subscribe("room.a");
  const socket = last();
  chain(socket, "room.a", "e1", [1, 2]);
  socket.sent.length = 0;
  socket.serverSend(stamped("room.a", 5, "e1", 4, "m5"));
  socket.serverSend(stamped("room.a", 6, "e1", 5, "m6"));
  socket.serverSend(stamped("room.a", 6, "e1", 5, "m6 again"));
  assert.equal(socket.sent.length, 1);
  assert.deepEqual(received, ["m1", "m2"]);
  clock.advance(1999);
  assert.equal(recoveries.length, 0);
  clock.advance(1);
  assert.equal(recoveries.length, 1);
  assert.deepEqual([recoveries[0].gap, recoveries[0].timedOut, recoveries[0].recovered, recoveries[0].since],
    [true, true, false, 2]);
  assert.deepEqual(received, ["m1", "m2", "m5", "m6"]);
  assert.equal(client.duplicates, 1);
  assert.equal(client.gaps, 1);
  assert.equal(client.gapsRecovered, 0);
  assert.equal(socket.sent.length, 1, "the same gap is not asked for twice");
  // A later gap is recovered again.
  socket.serverSend(stamped("room.a", 9, "e1", 8, "m9"));
  assert.equal(client.gaps, 2);
  assert.equal(sent(socket)[1].getHeader("since"), "room.a=6");
});

test("a recovery that says recovered:false: the next message is taken whatever its prev", () => {
  const { client, last, received, recoveries } = makeClient();
  client.subscribe("room.a");
  const socket = last();
  chain(socket, "room.a", "e1", [1, 2]);
  socket.serverSend(stamped("room.a", 50, "e1", 40, "m50"));
  // The node no longer keeps 3..40: it says so, and sends what it has.
  socket.serverSend(recovery("room.a", { recovered: "false", epoch: "e1", since: 2, count: 1, offset: 50 }));
  socket.serverSend(stamped("room.a", 50, "e1", 40, "m50"));
  socket.serverSend(stamped("room.a", 51, "e1", 50, "m51"));
  assert.deepEqual(received, ["m1", "m2", "m50", "m51"]);
  assert.deepEqual([recoveries[0].gap, recoveries[0].recovered], [true, false]);
  assert.equal(client.gapsRecovered, 0);
  assert.equal(socket.sent.length, 2, "the subscribe, one re-subscribe");
});

test("the connection drops while a gap is recovered: the reconnect recovers from the same offset", () => {
  const { client, clock, sockets, last, received, recoveries } = makeClient({ recoveryTimeout: 150 });
  client.subscribe("room.a");
  chain(last(), "room.a", "e1", [1, 2]);
  last().serverSend(stamped("room.a", 5, "e1", 4, "m5"));
  last().serverClose(1006);
  clock.advance(200);
  assert.equal(recoveries.length, 0, "no timeout while away");
  last().serverOpen();
  const [resubscribe] = sent(last());
  assert.equal(resubscribe.getHeader("since"), "room.a=2");
  last().serverSend(recovery("room.a", { recovered: "true", epoch: "e1", since: 2, count: 3, offset: 5 }));
  last().serverSend(stamped("room.a", 3, "e1", 2, "m3"));
  last().serverSend(stamped("room.a", 4, "e1", 3, "m4"));
  last().serverSend(stamped("room.a", 5, "e1", 4, "m5"));
  assert.deepEqual(received, ["m1", "m2", "m3", "m4", "m5"]);
  assert.deepEqual([recoveries[0].gap, recoveries[0].recovered], [true, true]);
  assert.equal(client.gapsRecovered, 1);
  assert.equal(sockets.length, 2);
});

test("unsubscribing from a channel being recovered forgets the gap", () => {
  const { client, clock, last, recoveries } = makeClient();
  client.subscribe("room.a");
  chain(last(), "room.a", "e1", [1]);
  last().serverSend(stamped("room.a", 5, "e1", 4, "m5"));
  client.unsubscribe("room.a");
  clock.advance(60000);
  assert.equal(recoveries.length, 0);
  assert.equal(clock.pendingDelays().length, 0, "no timer left behind");
});
