// Test doubles shared by the SDK's tests: a manual clock and a WebSocket
// class recording every socket made and every frame sent.
import assert from "node:assert/strict";
import Lhttp from "../lhttp.js";

/** A manual clock: timers run only when the test advances time. */
export class Clock {
  constructor() { this.now = 0; this.timers = new Map(); this.nextId = 1; }
  setTimeout = (fn, ms) => { const id = this.nextId++; this.timers.set(id, { at: this.now + ms, fn }); return id; };
  clearTimeout = (id) => { this.timers.delete(id); };
  pendingDelays() { return [...this.timers.values()].map((t) => t.at - this.now).sort((a, b) => a - b); }
  advance(ms) {
    const until = this.now + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at);
      if (!due.length) break;
      const [id, timer] = due[0];
      this.timers.delete(id);
      this.now = timer.at;
      timer.fn();
    }
    this.now = until;
  }
}

/** A WebSocket double recording every socket made and every frame sent. */
export function fakeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      sockets.push(this);
    }
    send(data) {
      assert.equal(this.readyState, 1, "send on a socket that is not open");
      this.sent.push(data);
    }
    close(code, reason) { this.closedWith = [code, reason]; this.readyState = 3; }
    // What the browser would do:
    serverOpen() { this.readyState = 1; this.onopen({}); }
    serverSend(data) { this.onmessage({ data }); }
    serverClose(code = 1006, reason = "") { this.readyState = 3; this.onclose({ code, reason }); }
    serverError() { this.onerror({}); }
  }
  return { FakeWebSocket, sockets };
}

/**
 * An Lhttp client on the fake WebSocket class and a manual clock, with no
 * jitter: {client, clock, sockets, last}. `options` add to its options.
 */
export function fakeClient(options = {}) {
  const clock = new Clock();
  const { FakeWebSocket, sockets } = fakeWebSocketClass();
  const client = new Lhttp("ws://example.test/", {
    WebSocket: FakeWebSocket, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout,
    random: () => 0.5, ...options,
  });
  return { client, clock, sockets, last: () => sockets[sockets.length - 1] };
}
