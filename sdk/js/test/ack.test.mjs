// publish(..., {ack: true}) in the SDK's client, against a fake WebSocket and
// a manual clock: the promise settles on the node's ack (only in its own
// word), a 503 or a lost connection sends it again with the same key.
import { test } from "node:test";
import assert from "node:assert/strict";
import Lhttp from "../lhttp.js";
import { fakeClient } from "./fakes.mjs";

const { decode, encode, LhttpError } = Lhttp;

function makeClient(options = {}) {
  const { client, clock, sockets } = fakeClient({ minDelay: 100, requestTimeout: 5000, ...options });
  const received = [];
  const errors = [];
  client.on_message = (ctx) => received.push(ctx.getCommand());
  client.on_error = (ctx) => errors.push(ctx.error);
  return { client, clock, sockets, received, errors, last: () => sockets[sockets.length - 1] };
}

const sent = (socket) => socket.sent.map((d) => decode(d));
const nodeReply = (command, headers) => encode(command, [["lhttp-node", "reply"], ...headers], "");
const settled = () => new Promise((resolve) => setImmediate(resolve));

test("publish with ack resolves on the node's ack, with its offsets", async () => {
  const { client, last, received } = makeClient();
  last().serverOpen();
  const answer = client.publish("room.1 plain", "chat", [["nick", "ann"]], "hi", { ack: true, key: "k1" });
  assert.ok(answer instanceof Promise);
  const [message] = sent(last());
  assert.equal(message.command, "chat");
  assert.equal(message.getHeader("publish"), "room.1 plain");
  assert.equal(message.getHeader("idempotency-key"), "k1");
  assert.equal(message.getHeader("nick"), "ann");
  const id = message.getHeader("publish-ack");
  last().serverSend(nodeReply("ack", [["publish-ack", id], ["status", "200"], ["channel", "room.1"],
                                      ["offset", "42"], ["epoch", "e1"]]));
  const ack = await answer;
  assert.deepEqual(ack, { positions: { "room.1": { offset: 42, epoch: "e1" } }, duplicate: false, attempts: 1 });
  assert.deepEqual(received, []);
});

test("without ack, publish returns a boolean as before and sends no publish-ack", () => {
  const { client, last } = makeClient();
  last().serverOpen();
  assert.equal(client.publish("room", "chat", [], "hi"), true);
  const [message] = sent(last());
  assert.equal(message.getHeader("publish-ack"), null);
  assert.equal(message.getHeader("idempotency-key"), null);
});

test("an ack a client published (not the node's word) is not taken", async () => {
  const { client, last, received } = makeClient();
  last().serverOpen();
  let done = false;
  client.publish("room", "chat", [], "hi", { ack: true }).then(() => { done = true; });
  const id = sent(last())[0].getHeader("publish-ack");
  last().serverSend(encode("ack", [["publish-ack", id], ["status", "200"]], ""));
  last().serverSend(encode("ack", [["x", "y"], ["lhttp-node", "reply"], ["publish-ack", id]], ""));
  await settled();
  assert.equal(done, false);
  assert.deepEqual(received, ["ack", "ack"]);
});

test("a 503 is sent again with the same key, and the duplicate ack resolves", async () => {
  const { client, clock, last, errors } = makeClient();
  last().serverOpen();
  const answer = client.publish("room", "chat", [], "hi", { ack: true });
  const first = sent(last())[0];
  last().serverSend(nodeReply("error", [["status", "503"], ["reason", "broker unavailable"],
                                        ["command", "chat"], ["publish-ack", first.getHeader("publish-ack")]]));
  assert.equal(sent(last()).length, 1);
  clock.advance(250);
  const second = sent(last())[1];
  assert.equal(second.getHeader("idempotency-key"), first.getHeader("idempotency-key"));
  assert.match(first.getHeader("idempotency-key"), /^[0-9a-f]{32}$/);
  assert.notEqual(second.getHeader("publish-ack"), first.getHeader("publish-ack"));
  last().serverSend(nodeReply("ack", [["publish-ack", second.getHeader("publish-ack")], ["status", "200"],
                                      ["duplicate", "true"]]));
  const ack = await answer;
  assert.equal(ack.duplicate, true);
  assert.equal(ack.attempts, 2);
  assert.deepEqual(errors, []);
});

test("a lost connection sends it again on the next one, with the same key", async () => {
  const { client, clock, last } = makeClient();
  last().serverOpen();
  const answer = client.publish("room", "chat", [], "hi", { ack: true });
  const key = sent(last())[0].getHeader("idempotency-key");
  last().serverClose(1006);
  clock.advance(300);  // reconnecting (after 75 ms), and the publish queued again (after 250 ms)
  last().serverOpen();
  const again = sent(last()).find((m) => m.command === "chat");
  assert.equal(again.getHeader("idempotency-key"), key);
  last().serverSend(nodeReply("ack", [["publish-ack", again.getHeader("publish-ack")], ["status", "200"]]));
  assert.equal((await answer).attempts, 2);
});

test("another error rejects at once; retries run out on 503", async () => {
  const { client, clock, last } = makeClient();
  last().serverOpen();
  const refused = client.publish("room", "chat", [], "hi", { ack: true });
  const id = sent(last())[0].getHeader("publish-ack");
  last().serverSend(nodeReply("error", [["status", "400"], ["reason", "bad channel"], ["publish-ack", id]]));
  await assert.rejects(refused, (e) => e instanceof LhttpError && e.status === 400);

  const given = client.publish("room", "chat", [], "hi", { ack: true, retries: 1 });
  for (let i = 0; i < 2; i++) {
    const m = sent(last()).at(-1);
    last().serverSend(nodeReply("error", [["status", "503"], ["reason", "broker unavailable"],
                                          ["publish-ack", m.getHeader("publish-ack")]]));
    clock.advance(1000);
  }
  await assert.rejects(given, (e) => e instanceof LhttpError && e.status === 503);
});

test("no answer within the timeout is sent again", async () => {
  const { client, clock, last } = makeClient();
  last().serverOpen();
  const answer = client.publish("room", "chat", [], "hi", { ack: true, timeout: 1000 });
  clock.advance(1000 + 250);
  const messages = sent(last());
  assert.equal(messages.length, 2);
  last().serverSend(nodeReply("ack", [["publish-ack", messages[1].getHeader("publish-ack")], ["status", "200"]]));
  assert.equal((await answer).attempts, 2);
});
