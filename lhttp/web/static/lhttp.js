/*
 * lhttp.js: the JavaScript SDK for LHTTP, an HTTP-like text protocol over
 * WebSocket (see SPEC.md section 1 for the wire format).
 *
 * One file, no build step, no dependencies. It is a classic script that
 * defines exactly one global, Lhttp, and so it loads in every way a browser
 * or Node loads JavaScript:
 *
 *   <script src="/demo/lhttp.js"></script>        then use Lhttp
 *   import "/demo/lhttp.js";                        (ES module, side effect)
 *   const { Lhttp } = globalThis;
 *   const { Lhttp } = require("./lhttp.js");        (CommonJS / Node)
 *   import Lhttp from "./lhttp.js";                 (Node ESM, via CommonJS)
 *
 * A file cannot both be a classic script and contain `export`, so the ES
 * module form imports it for its effect and reads the global.
 *
 * Lhttp.decode / Lhttp.encode / Lhttp.splitMultipart / Lhttp.buildMultipart
 * are the pure codec; new Lhttp(url, options) is the client: reconnect with
 * backoff and jitter, channels re-subscribed after a reconnect, sends queued
 * while connecting, error replies surfaced as errors.
 *
 * History channels (a server run with --history): the client remembers the
 * last offset and epoch it saw on each channel, re-subscribes with since and
 * epoch after a reconnect so the server sends what was missed, drops any
 * message it has already seen (same epoch, offset not newer), and reports
 * each recovery to on_recovery. A live gap (a message whose `prev`, the
 * offset of the message before it on the channel, is past the last offset
 * seen) is recovered without reconnecting: the channel is subscribed again
 * from the last offset, and on_recovery gets ctx.gap = true.
 * client.history(channel, limit) reads the last messages of a channel.
 *
 * Authentication (a node run with --auth-*, docs/protocol.rst): with
 * options.token or options.getToken the first message of every connection
 * is `LHTTP/1.0 connect` with a `token` header, and nothing else is sent
 * before the node's reply; the token is refreshed before its `expires`
 * and on the node's refresh notice; close codes 4401, 4403, 4000, 4419
 * and 4503 are acted on; subscribe(channels, {token}) sends subscription
 * tokens; the node's `unsubscribed` drops a channel.
 */
(function (root, factory) {
  "use strict";
  var Lhttp = factory();
  if (typeof module === "object" && module && module.exports) {
    module.exports = Lhttp;
  }
  root.Lhttp = Lhttp;
})(typeof globalThis !== "undefined" ? globalThis : this, function () {
  "use strict";

  var PROTOCOL = "LHTTP/1.0";
  var CRLF = "\r\n";
  // Close codes that mean the server refused something we sent (RFC 6455).
  var ERROR_CLOSE_CODES = [1002, 1003, 1007, 1008, 1009, 1010, 1011];
  // Headers a re-subscription does not repeat: what routes the message or
  // resumes a channel (it has its own), the body's framing, and the node's
  // own mark.
  // A channel's subscription token is its own (channel-token): kept apart.
  var ROUTING_HEADERS = new Set([
    "subscribe", "unsubscribe", "publish", "since", "epoch", "multipart", "lhttp-node",
    "channel-token",
  ]);
  // Close codes of an authenticating node (docs/protocol.rst).
  var CLOSE_UNAUTHORIZED = 4401;    // bad or missing credential
  var CLOSE_DISCONNECTED = 4403;    // /api/disconnect: do not reconnect
  var CLOSE_RECONNECT = 4000;       // /api/disconnect reconnect:true
  var CLOSE_EXPIRED = 4419;         // token expired, no refresh within the grace
  var CLOSE_UNAVAILABLE = 4503;     // keys or connect proxy unavailable: back off

  var utf8Encoder = new TextEncoder();
  var utf8Decoder = new TextDecoder("utf-8");

  // ------------------------------------------------------------------ errors

  /**
   * An error reply from the server (SPEC section 7): command `error`,
   * headers `status` and `reason`, a human-readable body. Also used for
   * close codes that mean "the server refused this" (status is the code).
   */
  class LhttpError extends Error {
    constructor(status, reason, body) {
      super(reason + (body ? ": " + body : "") + " (" + status + ")");
      this.name = "LhttpError";
      this.status = status;
      this.reason = reason;
      this.body = body === undefined ? "" : body;
    }
  }

  /** Bytes or text that are not a well-formed LHTTP message. */
  class LhttpParseError extends Error {
    constructor(message) {
      super(message);
      this.name = "LhttpParseError";
    }
  }

  // ------------------------------------------------------------------- codec

  function isBytes(value) {
    return value instanceof Uint8Array || value instanceof ArrayBuffer ||
      ArrayBuffer.isView(value);
  }

  function toBytes(value) {
    if (value instanceof Uint8Array) return value;
    if (value instanceof ArrayBuffer) return new Uint8Array(value);
    if (ArrayBuffer.isView(value)) {
      return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    }
    return utf8Encoder.encode(value === undefined || value === null ? "" : String(value));
  }

  function concatBytes(chunks) {
    var length = 0, i;
    for (i = 0; i < chunks.length; i++) length += chunks[i].length;
    var out = new Uint8Array(length), at = 0;
    for (i = 0; i < chunks.length; i++) {
      out.set(chunks[i], at);
      at += chunks[i].length;
    }
    return out;
  }

  function indexOfBlankLine(bytes, from) {
    for (var i = from; i + 3 < bytes.length; i++) {
      if (bytes[i] === 13 && bytes[i + 1] === 10 &&
          bytes[i + 2] === 13 && bytes[i + 3] === 10) {
        return i;
      }
    }
    return -1;
  }

  function isToken(text) {
    if (!text) return false;
    for (var i = 0; i < text.length; i++) {
      var c = text.charCodeAt(i);
      if (c <= 0x20 || c === 0x7f) return false;
    }
    return true;
  }

  function trimSpaces(text) {
    return text.replace(/^[ \t]+|[ \t]+$/g, "");
  }

  /** Header lines ("name:value", split at the first colon) to [name, value] pairs. */
  function parseHeaderLines(lines, first) {
    var headers = [];
    for (var i = first; i < lines.length; i++) {
      var line = lines[i];
      var colon = line.indexOf(":");
      if (colon <= 0) {
        throw new LhttpParseError("bad header line: " + JSON.stringify(line));
      }
      headers.push([line.slice(0, colon), trimSpaces(line.slice(colon + 1))]);
    }
    return headers;
  }

  function parseHead(head) {
    var lines = head.split(CRLF);
    var start = lines[0];
    if (start.slice(0, PROTOCOL.length + 1) !== PROTOCOL + " ") {
      throw new LhttpParseError("start line is not '" + PROTOCOL + " <command>'");
    }
    var command = start.slice(PROTOCOL.length + 1);
    if (!isToken(command)) {
      throw new LhttpParseError("bad command: " + JSON.stringify(command));
    }
    return { command: command, headers: parseHeaderLines(lines, 1) };
  }

  /**
   * Parse one LHTTP message. A string (text frame) gives a string body; a
   * Uint8Array or ArrayBuffer (binary frame) gives a Uint8Array body.
   *
   * @return {Message}
   * @throws {LhttpParseError}
   */
  function decode(data) {
    var head, body;
    if (typeof data === "string") {
      var end = data.indexOf(CRLF + CRLF);
      if (end < 0) throw new LhttpParseError("headers never end (no blank line)");
      head = data.slice(0, end);
      body = data.slice(end + 4);
    } else if (isBytes(data)) {
      var bytes = toBytes(data);
      var bend = indexOfBlankLine(bytes, 0);
      if (bend < 0) throw new LhttpParseError("headers never end (no blank line)");
      head = utf8Decoder.decode(bytes.subarray(0, bend));
      body = bytes.slice(bend + 4);
    } else {
      throw new TypeError("decode() takes a string or bytes");
    }
    var parsed = parseHead(head);
    return new Message(parsed.command, parsed.headers, body);
  }

  /** Normalise headers given as [[name, value], ...], a Map or a plain object. */
  function headerPairs(headers) {
    if (!headers) return [];
    var pairs = [];
    var source = Array.isArray(headers) ? headers :
      (typeof Map !== "undefined" && headers instanceof Map) ? Array.from(headers) :
      Object.keys(headers).map(function (k) { return [k, headers[k]]; });
    for (var i = 0; i < source.length; i++) {
      pairs.push([String(source[i][0]), String(source[i][1])]);
    }
    return pairs;
  }

  function checkHeader(name, value) {
    if (!name || /[:\r\n]/.test(name) || name !== trimSpaces(name)) {
      throw new TypeError("bad header name: " + JSON.stringify(name));
    }
    if (/[\r\n]/.test(value)) {
      throw new TypeError("header " + name + " has a line break in its value");
    }
  }

  /**
   * Serialise a message. A string body gives a string (text frame); a
   * Uint8Array/ArrayBuffer body, or binary=true, gives a Uint8Array.
   * Header names and values are checked so that no value can inject lines.
   */
  function encode(command, headers, body, binary) {
    if (!isToken(command)) {
      throw new TypeError("bad command: " + JSON.stringify(command));
    }
    var pairs = headerPairs(headers);
    var head = PROTOCOL + " " + command + CRLF;
    for (var i = 0; i < pairs.length; i++) {
      checkHeader(pairs[i][0], pairs[i][1]);
      head += pairs[i][0] + ":" + pairs[i][1] + CRLF;
    }
    head += CRLF;
    if (body === undefined || body === null) body = "";
    if (binary || isBytes(body)) {
      return concatBytes([utf8Encoder.encode(head), toBytes(body)]);
    }
    return head + String(body);
  }

  function isAscii(text) {
    return /^[\x00-\x7f]*$/.test(text);
  }

  function parsePart(data) {
    var head, body;
    if (typeof data === "string") {
      if (data.slice(0, 2) === CRLF) {
        return { headers: [], body: data.slice(2) };
      }
      var end = data.indexOf(CRLF + CRLF);
      if (end < 0) throw new LhttpParseError("multipart part has no blank line");
      head = data.slice(0, end);
      body = data.slice(end + 4);
    } else {
      if (data[0] === 13 && data[1] === 10) {
        return { headers: [], body: data.slice(2) };
      }
      var bend = indexOfBlankLine(data, 0);
      if (bend < 0) throw new LhttpParseError("multipart part has no blank line");
      head = utf8Decoder.decode(data.subarray(0, bend));
      body = data.slice(bend + 4);
    }
    return { headers: parseHeaderLines(head.split(CRLF), 0), body: body };
  }

  /**
   * Cut a body into parts at the byte offsets of a `multipart` header
   * (SPEC section 4). Each part is {headers: [[name, value]...], body,
   * getHeader(name)}; bodies are strings for a string body, Uint8Array
   * for bytes.
   *
   * @throws {LhttpParseError} offsets not integers, not ascending, outside the body.
   */
  function splitMultipart(body, offsetsHeader) {
    var text = typeof body === "string";
    var ascii = text && isAscii(body);
    var data = ascii ? body : toBytes(body);
    var tokens = trimSpaces(String(offsetsHeader)).split(/[ \t]+/);
    var offsets = [];
    for (var i = 0; i < tokens.length; i++) {
      if (!/^[0-9]+$/.test(tokens[i])) {
        throw new LhttpParseError("multipart offset is not an integer: " + JSON.stringify(tokens[i]));
      }
      var offset = parseInt(tokens[i], 10);
      if (offsets.length && offset <= offsets[offsets.length - 1]) {
        throw new LhttpParseError("multipart offsets are not ascending");
      }
      if (offset >= data.length) {
        throw new LhttpParseError("multipart offset " + offset + " is outside the body");
      }
      offsets.push(offset);
    }
    var parts = [];
    for (var j = 0; j < offsets.length; j++) {
      var end = j + 1 < offsets.length ? offsets[j + 1] : data.length;
      var chunk = data.slice(offsets[j], end);
      if (text && !ascii) chunk = utf8Decoder.decode(chunk);
      var part = parsePart(chunk);
      parts.push(new Part(part.headers, part.body));
    }
    return parts;
  }

  /**
   * The inverse of splitMultipart: parts ({headers, body}) to
   * {offsets: "0 14", body}. The body is a string unless a part's body is
   * bytes.
   */
  function buildMultipart(parts) {
    var binary = parts.some(function (p) { return isBytes(p.body); });
    var chunks = [], offsets = [], at = 0;
    for (var i = 0; i < parts.length; i++) {
      var pairs = headerPairs(parts[i].headers);
      var head = "";
      for (var k = 0; k < pairs.length; k++) {
        checkHeader(pairs[k][0], pairs[k][1]);
        head += pairs[k][0] + ":" + pairs[k][1] + CRLF;
      }
      var bytes = concatBytes([utf8Encoder.encode(head + CRLF), toBytes(parts[i].body)]);
      offsets.push(at);
      at += bytes.length;
      chunks.push(bytes);
    }
    var body = concatBytes(chunks);
    return {
      offsets: offsets.join(" "),
      body: binary ? body : utf8Decoder.decode(body),
    };
  }

  function findHeader(headers, name) {
    var wanted = String(name).toLowerCase();
    for (var i = 0; i < headers.length; i++) {
      if (headers[i][0].toLowerCase() === wanted) return headers[i][1];
    }
    return null;
  }

  /** A parsed LHTTP message: command, ordered [name, value] headers, body. */
  class Message {
    constructor(command, headers, body) {
      this.command = command;
      this.headers = headerPairs(headers);
      this.body = body === undefined || body === null ? "" : body;
    }

    /** The first header of that name (case-insensitive), or null. */
    getHeader(name) {
      return findHeader(this.headers, name);
    }

    /** The body cut at the offsets of the `multipart` header, or [] without one. */
    getMultipart() {
      var offsets = this.getHeader("multipart");
      return offsets === null ? [] : splitMultipart(this.body, offsets);
    }

    encode(binary) {
      return encode(this.command, this.headers, this.body, binary);
    }
  }

  class Part {
    constructor(headers, body) {
      this.headers = headers;
      this.body = body;
    }

    getHeader(name) {
      return findHeader(this.headers, name);
    }
  }

  function channelList(channels) {
    if (Array.isArray(channels)) return channels.map(String).filter(Boolean);
    return trimSpaces(String(channels)).split(/[ \t]+/).filter(Boolean);
  }

  // One subscription token per channel, in the channels' order.
  function tokenList(names, token) {
    var tokens;
    if (typeof token === "string") {
      if (names.length !== 1) throw new TypeError("one token string for " + names.length + " channels");
      tokens = [token];
    } else if (Array.isArray(token)) {
      tokens = token.map(String);
    } else {
      tokens = names.map(function (c) { return token[c]; });
    }
    if (tokens.length !== names.length || !tokens.every(function (t) { return isToken(t); })) {
      throw new TypeError("a subscription token per channel, without spaces");
    }
    return tokens;
  }

  // ----------------------------------------------------------------- context

  /**
   * What a callback gets: the received message (if any) to read, and a
   * reply to fill and send. Also what client.context is, for sending from
   * application code (the original SDK's API).
   */
  class Context {
    constructor(client, message, binary) {
      this.client = client;
      this.message = message || null;
      this.binary = !!binary;
      this.error = null;
      this._resetReply();
    }

    _resetReply() {
      this._command = null;
      this._headers = [];
      this._parts = [];
    }

    getCommand() { return this.message ? this.message.command : null; }
    getHeader(name) { return this.message ? this.message.getHeader(name) : null; }
    getHeaders() { return this.message ? this.message.headers.slice() : []; }
    getBody() { return this.message ? this.message.body : null; }
    getMultipart() { return this.message ? this.message.getMultipart() : []; }

    /** The reply's command (default: the received message's command). */
    setCommand(command) { this._command = command; return this; }

    /** Add a header to the reply (headers keep their order; names may repeat). */
    addHeader(name, value) { this._headers.push([String(name), String(value)]); return this; }

    /** Set a header of the reply, replacing any of the same name. */
    setHeader(name, value) {
      var wanted = String(name).toLowerCase();
      this._headers = this._headers.filter(function (h) { return h[0].toLowerCase() !== wanted; });
      return this.addHeader(name, value);
    }

    /** Add a multipart part to the reply; send() sets the `multipart` header. */
    appendPart(headers, body) { this._parts.push({ headers: headers, body: body }); return this; }

    /**
     * Send the reply with this body. A reply to a binary frame, or a
     * bytes body, goes as a binary frame. Queued while not connected.
     *
     * @return {boolean} true if sent or queued, false if refused (see on_error).
     */
    send(body) {
      var command = this._command || this.getCommand();
      var headers = this._headers;
      if (this._parts.length) {
        var multipart = buildMultipart(this._parts);
        headers = headers.concat([["multipart", multipart.offsets]]);
        body = multipart.body;
      }
      this._resetReply();
      if (!command) throw new TypeError("send(): no command (call setCommand first)");
      return this.client._transmit(encode(command, headers, body, this.binary), headers);
    }

    _channelMessage(header, channels, command, headers, body, after) {
      var names = channelList(channels);
      if (!names.length) throw new TypeError(header + "(): no channel given");
      if (command) this.setCommand(command);
      else if (!this._command) this.setCommand(header);
      var pairs = headerPairs(headers);
      for (var i = 0; i < pairs.length; i++) this.addHeader(pairs[i][0], pairs[i][1]);
      this.setHeader(header, names.join(" "));
      for (var k = 0; after && k < after.length; k++) this.addHeader(after[k][0], after[k][1]);
      if (header === "subscribe" && findHeader(this._headers, "since") === null) {
        // Channels with a known position resume from it.
        var resume = this.client._resumeHeaders(names);
        for (var j = 0; j < resume.length; j++) this.addHeader(resume[j][0], resume[j][1]);
      }
      return this.send(body);
    }

    /** Publish a message to channels (a space-separated string or an array). */
    publish(channels, command, headers, body) {
      return this._channelMessage("publish", channels, command, headers, body);
    }

    /**
     * Subscribe to channels; they are subscribed again after a reconnect.
     * Or subscribe(channels, {token, command, headers, body}): token is a
     * subscription token (a string for one channel; an array in the
     * channels' order, or an object channel -> token, for several), sent
     * as the channel-token header.
     */
    subscribe(channels, command, headers, body) {
      if (command !== null && typeof command === "object") {
        var o = command;
        var token = o.token === undefined || o.token === null ? [] :
          [["channel-token", tokenList(channelList(channels), o.token).join(" ")]];
        return this._channelMessage("subscribe", channels, o.command, o.headers, o.body, token);
      }
      return this._channelMessage("subscribe", channels, command, headers, body);
    }

    unsubscribe(channels, command, headers, body) {
      return this._channelMessage("unsubscribe", channels, command, headers, body);
    }

    close() { this.client.close(); }
  }

  // ------------------------------------------------------------------ client

  var DEFAULTS = {
    reconnect: true,      // reconnect after a close not asked for by close()
    minDelay: 250,        // ms before the first reconnect attempt
    maxDelay: 15000,      // ms, cap of the exponential backoff
    factor: 2,
    jitter: 0.5,          // delay is scaled by a random factor in [1-jitter, 1]
    connectTimeout: 10000,
    stableAfter: 5000,    // ms open before the backoff starts again from minDelay
    maxQueue: 1000,       // messages kept while not connected
    resubscribeBatch: 100, // channels per re-subscribe message
    requestTimeout: 15000, // ms a history() request waits for its reply
    recoveryTimeout: 10000, // ms a live gap's re-subscribe waits for the node's recovery reply
    maxHeld: 1000,        // messages of a channel kept while its gap is recovered
    token: null,          // a connection token (JWT), sent first in a connect message
    getToken: null,       // async () -> a fresh connection token
    getSubscriptionToken: null, // async (channel) -> a fresh subscription token
    WebSocket: null,      // the WebSocket class (default: the global one)
    setTimeout: null, clearTimeout: null, random: null,
    now: null,            // () -> ms since the epoch (default Date.now), for expires
  };

  function noop() {}

  // ms before a token's expiry at most at which it is refreshed (less for
  // a token valid less than 2 minutes: a quarter of its time left).
  var REFRESH_MARGIN = 30000;

  // A callback's value as a Promise, whether it returns one or throws.
  function callAsync(fn, args) {
    return new Promise(function (resolve) { resolve(fn.apply(null, args)); });
  }

  function bodyText(message) {
    return typeof message.body === "string" ? message.body : utf8Decoder.decode(message.body);
  }

  // An offset or a count: ASCII digits, a safe integer; anything else is
  // ignored (with a line in the console: the node never sends one).
  function parseOffset(text, name) {
    if (text === null) return null;
    if (/^[0-9]{1,15}$/.test(text)) return parseInt(text, 10);
    if (typeof console !== "undefined") {
      console.warn("lhttp: ignored a malformed " + (name || "offset") + " header: " +
        JSON.stringify(String(text).slice(0, 40)));
    }
    return null;
  }

  // The node's word (docs/protocol.rst): a message the node wrote has
  // lhttp-node as its first header, which no client can send. "reply" and
  // "event": the whole message is the node's; "position": a client's
  // message whose channel/offset/epoch headers the node added.
  function nodeKind(message) {
    var first = message.headers.length ? message.headers[0] : null;
    if (!first || String(first[0]).toLowerCase() !== "lhttp-node") return null;
    var kind = first[1];
    return kind === "reply" || kind === "event" || kind === "position" ? kind : null;
  }

  /**
   * A client connection. Callbacks (the original SDK's names) each get a
   * Context: on_open, on_message, on_close, on_error, on_recovery; or use
   * client.on("open" | "message" | "close" | "error" | "recovery", fn).
   *
   * on_open's context has .reconnected; on_close's has .code, .reason,
   * .willReconnect and .delay; on_error's has .error (an LhttpError for an
   * error reply, whose body/status/reason are also readable from the
   * context as for any message); on_recovery's (one per channel asked to
   * recover) has .channel, .recovered, .history, .epoch, .since, .count
   * and .offset, read from the server's `recovery` reply, and .gap (true
   * when it recovers a live gap) and .timedOut (true when no reply came
   * within options.recoveryTimeout: then .recovered is false).
   *
   * With options.token (a string) or options.getToken (a function
   * returning a token or a Promise of one), on_open comes once the node
   * accepted the connect message; its context (and the client) has .user
   * and .expires (Unix seconds, or null) from the node's reply. A 4401
   * close gets one more try with a token from getToken, then the client
   * stops and on_error gets an LhttpError with status 4401; 4403 stops it
   * too. on_unsubscribed's context has .channel and .reason: the node (or
   * a getSubscriptionToken that gave no token) dropped the channel.
   */
  class Lhttp {
    constructor(url, options) {
      var opts = {};
      Object.keys(DEFAULTS).forEach(function (k) { opts[k] = DEFAULTS[k]; });
      Object.keys(options || {}).forEach(function (k) { opts[k] = options[k]; });
      this.url = url;
      this.options = opts;
      this._WebSocket = opts.WebSocket || (typeof WebSocket !== "undefined" ? WebSocket : null);
      if (!this._WebSocket) throw new Error("no WebSocket class (pass options.WebSocket)");
      this._setTimeout = opts.setTimeout || function (fn, ms) { return setTimeout(fn, ms); };
      this._clearTimeout = opts.clearTimeout || function (id) { clearTimeout(id); };
      this._random = opts.random || Math.random;
      this._now = opts.now || function () { return Date.now(); };

      this.on_open = noop;
      this.on_message = noop;
      this.on_close = noop;
      this.on_error = noop;
      this.on_recovery = noop;
      this.on_unsubscribed = noop;
      this._listeners = { open: [], message: [], close: [], error: [], recovery: [], unsubscribed: [] };

      this.state = "connecting";   // connecting | open | reconnecting | closed
      this.attempts = 0;           // reconnects since the last stable connection
      this._everOpened = false;
      this._queue = [];            // [{data, subscribes: [channels]}]
      this._channels = new Set();  // what the application wants subscribed
      this._subscribedWith = new Map(); // channel -> the other headers it was subscribed with
      this._positions = new Map(); // channel -> {offset, epoch}: the last seen
      this._requests = [];         // history() requests waiting for a reply
      this._acks = new Map();      // publish-ack id -> publish waiting for its ack
      this._ackIds = 0;
      this.duplicates = 0;         // messages dropped as already seen
      this.gaps = 0;               // live gaps seen (a message whose prev is past the last offset)
      this.gapsRecovered = 0;      // of those, how many the node's recovery filled
      this._recovering = new Map(); // channel -> {since, epoch, held, timer}: a live gap being recovered
      this._gapAt = new Map();     // channel -> the offset a gap was last recovered from
      this._unchecked = new Set(); // channels whose next message is not gap-checked (loss already reported)
      this._channelTokens = new Map(); // channel -> the subscription token it was subscribed with
      // Authentication (options.token / options.getToken): the token the
      // next connect sends, whether it must come fresh from getToken, and
      // what the node's connect/refresh reply said.
      this._auth = !!(opts.token || opts.getToken);
      this._token = opts.token ? String(opts.token) : null;
      this._freshToken = !this._token;
      this._authRetried = false;   // a 4401 was retried with a fresh token
      this._authError = null;      // the node's last 401/403/503 reply to connect, an LhttpError
      this._authenticating = false; // connect sent, its reply not yet in
      this._refreshing = false;
      this._refreshTimer = null;
      this._preparing = 0;         // which connect attempt is getting its tokens
      this.user = null;            // the node's connect/refresh reply: user
      this.expires = null;         // and expires (Unix seconds), or null
      this._ws = null;
      this._timer = null;
      this._connectTimer = null;
      this._stableTimer = null;
      this.context = new Context(this, null, false);
      this._connect();
    }

    on(event, fn) {
      if (!this._listeners[event]) throw new TypeError("unknown event: " + event);
      this._listeners[event].push(fn);
      return this;
    }

    _emit(event, context) {
      var handlers = [this["on_" + event]].concat(this._listeners[event]);
      for (var i = 0; i < handlers.length; i++) {
        try {
          handlers[i].call(this, context);
        } catch (e) {
          // A throwing callback must not break the connection's bookkeeping.
          if (event !== "error") this._fail(e);
          else if (typeof console !== "undefined") console.error(e);
        }
      }
    }

    _fail(error, message, binary) {
      var ctx = new Context(this, message, binary);
      ctx.error = error;
      this._emit("error", ctx);
    }

    /** The channels this client subscribes to (and re-subscribes after a reconnect). */
    getChannels() { return Array.from(this._channels); }

    /**
     * The last position seen on a history channel, {offset, epoch}, or
     * null: what the client resumes from after a reconnect.
     */
    getPosition(channel) {
      var position = this._positions.get(String(channel));
      return position ? { offset: position.offset, epoch: position.epoch } : null;
    }

    /**
     * Resume a channel from a position saved earlier (say, in
     * localStorage): the next subscribe to it asks for what came after.
     */
    setPosition(channel, offset, epoch) {
      var at = Number(offset);
      if (!Number.isSafeInteger(at) || at < 0) throw new TypeError("an offset is a non-negative integer");
      this._positions.set(String(channel), { offset: at, epoch: epoch ? String(epoch) : null });
    }

    // since/epoch headers resuming those of `channels` with a known position.
    _resumeHeaders(channels) {
      var since = [], epochs = [];
      for (var i = 0; i < channels.length; i++) {
        var position = this._positions.get(channels[i]);
        if (!position) continue;
        since.push(channels[i] + "=" + position.offset);
        if (position.epoch) epochs.push(channels[i] + "=" + position.epoch);
      }
      var headers = [];
      if (since.length) headers.push(["since", since.join(" ")]);
      if (epochs.length) headers.push(["epoch", epochs.join(" ")]);
      return headers;
    }

    /**
     * The last `limit` messages of a history channel (the server's default
     * and cap without one), oldest first.
     *
     * @return {Promise<Message[]>} the messages, each with its channel,
     *   offset and epoch headers; the array also has .channel, .epoch,
     *   .offset (the channel's newest) and .complete (false: older ones
     *   are gone). Rejects with an LhttpError (404: the channel keeps no
     *   history), or an Error if the connection closes or no reply comes
     *   within options.requestTimeout.
     */
    history(channel, limit) {
      var self = this;
      return new Promise(function (resolve, reject) {
        var headers = [["channel", String(channel)]];
        if (limit !== undefined && limit !== null) headers.push(["limit", String(limit)]);
        var request = {
          channel: String(channel), resolve: resolve, reject: reject, ws: null, done: false,
        };
        request.timer = self._setTimeout(function () {
          // Kept in the list until its reply comes, so that a late reply
          // is not taken for the next request's.
          self._settle(request, new Error("no history reply within " + self.options.requestTimeout + " ms"));
        }, self.options.requestTimeout);
        self._requests.push(request);
        if (!self._transmit(encode("history", headers, ""), headers, request)) {
          self._requests.splice(self._requests.indexOf(request), 1);
          self._settle(request, new Error("history request not sent"));
        }
      });
    }

    _settle(request, error, value) {
      if (request.done) return;
      request.done = true;
      if (request.timer !== null) this._clearTimeout(request.timer);
      request.timer = null;
      if (error) request.reject(error);
      else request.resolve(value);
    }

    // The oldest request sent on the open socket that `message` answers, taken from the list.
    _takeRequest(message) {
      var error = message.command === "error";
      if (error && message.getHeader("command") !== "history") return null;
      var channel = message.getHeader("channel");
      for (var i = 0; i < this._requests.length; i++) {
        var request = this._requests[i];
        if (request.ws !== this._ws || request.ws === null) continue;
        if (error || request.channel === channel) {
          this._requests.splice(i, 1);
          return request;
        }
      }
      return null;
    }

    // Requests sent on `ws` get no reply once it is gone.
    _dropRequests(ws, error) {
      var self = this;
      this._requests = this._requests.filter(function (request) {
        if (ws !== undefined && request.ws !== ws) return true;
        self._settle(request, error);
        return false;
      });
    }

    /** Send a message built from parts; see Context.send. */
    send(command, headers, body) {
      var pairs = headerPairs(headers);
      return this._transmit(encode(command, pairs, body), pairs);
    }

    /**
     * Publish a message to channels.
     *
     * Without options (or with options.ack false) it returns true if sent
     * or queued, false if refused (see on_error), as before. With
     * {ack: true} it returns a Promise: the publish carries an
     * idempotency key (options.key, or a new random one) and asks the node
     * for an acknowledgement; it is sent again with the same key, after a
     * reconnect if need be, when the node answers 503 or 429, the
     * connection drops or no answer comes within options.timeout ms
     * (default: options.requestTimeout), up to options.retries (default 5)
     * more times. The node stores and delivers it once however many times
     * it is sent.
     *
     * @return {boolean|Promise<{positions, duplicate, attempts}>} with ack:
     *   resolves once the node confirmed it: positions maps each history
     *   channel to {offset, epoch}; duplicate is true when the node had it
     *   already. Rejects with an LhttpError (the node's error reply, or the
     *   last 503 after the retries) or an Error.
     */
    publish(channels, command, headers, body, options) {
      if (!options || !options.ack) {
        return new Context(this).publish(channels, command, headers, body);
      }
      return this._publishAcked(channels, command, headers, body, options);
    }

    _publishAcked(channels, command, headers, body, options) {
      var self = this;
      var names = channelList(channels);
      if (!names.length) throw new TypeError("publish(): no channel given");
      var key = options.key ? String(options.key) : newKey(this._random);
      var retries = options.retries === undefined ? 5 : options.retries;
      var timeout = options.timeout || this.options.requestTimeout;
      var extra = [["publish", names.join(" ")], ["idempotency-key", key]].concat(headerPairs(headers));
      var attempt = 0;
      return new Promise(function (resolve, reject) {
        function failed(error, retriable) {
          if (retriable && attempt <= retries && self.state !== "closed") {
            self._setTimeout(send, Math.min(250 * Math.pow(2, attempt - 1), 4000));
          } else {
            reject(error);
          }
        }
        function send() {
          attempt += 1;
          var id = String(++self._ackIds);
          var pending = { ws: null, done: false, timer: null };
          pending.settle = function (error, retriable, ack) {
            if (pending.done) return;
            pending.done = true;
            self._acks.delete(id);
            if (pending.timer !== null) self._clearTimeout(pending.timer);
            if (error) {
              failed(error, retriable);
            } else {
              ack.attempts = attempt;
              resolve(ack);
            }
          };
          self._acks.set(id, pending);
          pending.timer = self._setTimeout(function () {
            pending.timer = null;
            pending.settle(new Error("no acknowledgement within " + timeout + " ms"), true);
          }, timeout);
          var pairs = [["publish-ack", id]].concat(extra);
          if (!self._transmit(encode(command || "publish", pairs, body), pairs, pending)) {
            pending.settle(new Error("publish not sent"), false);
          }
        }
        send();
      });
    }

    // The node's answer to a publish that asked for one: an ack or error
    // in its own word (first header lhttp-node:reply) with a publish-ack id.
    _takeAck(message, binary) {
      if (nodeKind(message) !== "reply") return false;
      var pending = this._acks.get(message.getHeader("publish-ack"));
      if (!pending) return false;
      if (message.command === "ack") {
        pending.settle(null, false, parseAck(message));
      } else {
        var body = typeof message.body === "string" ? message.body : utf8Decoder.decode(message.body);
        var status = parseInt(message.getHeader("status"), 10);
        var error = new LhttpError(isNaN(status) ? 0 : status, message.getHeader("reason") || "error", body);
        pending.settle(error, status === 503 || status === 429);
      }
      return true;
    }

    // Publishes sent on `ws` get no answer once it is gone: sent again.
    _dropAcks(ws, error) {
      this._acks.forEach(function (pending) {
        if (ws === undefined || (pending.ws === ws && ws !== null)) pending.settle(error, ws !== undefined);
      });
    }

    subscribe(channels, command, headers, body) {
      return new Context(this).subscribe(channels, command, headers, body);
    }

    unsubscribe(channels, command, headers, body) {
      return new Context(this).unsubscribe(channels, command, headers, body);
    }

    /** Close for good: no reconnect; later sends fail. */
    close(code, reason) {
      if (this.state === "closed") return;
      var wasOpen = this._ws && this.state === "open";
      this.state = "closed";
      this._clearTimers();
      var ws = this._ws;
      this._ws = null;
      var dropped = this._queue.length;
      this._queue = [];
      if (ws) {
        try { ws.close(code || 1000, reason || ""); } catch (e) { /* already closing */ }
      }
      this._dropRequests(undefined, new Error("client closed"));
      this._dropAcks(undefined, new Error("client closed"));
      this._recovering.forEach(function (state) { state.held = []; });
      this._stopRecoveryTimers();
      if (dropped) {
        this._fail(new Error("client closed with " + dropped + " unsent message(s)"));
      }
      var ctx = new Context(this, null, false);
      ctx.code = code || 1000;
      ctx.reason = reason || "";
      ctx.willReconnect = false;
      ctx.wasOpen = !!wasOpen;
      this._emit("close", ctx);
    }

    // Everything sent goes through here: channel bookkeeping, then socket or queue.
    _transmit(data, headers, request) {
      if (this.state === "closed") {
        this._fail(new Error("send on a closed client"));
        return false;
      }
      var subscribes = this._track(headers);
      var ws = this._ws;
      if (this.state === "open" && ws && ws.readyState === 1) {
        ws.send(data);
        if (request) request.ws = ws;
        return true;
      }
      if (this._queue.length >= this.options.maxQueue) {
        this._fail(new Error("send queue full (" + this.options.maxQueue + " messages), message dropped"));
        return false;
      }
      this._queue.push({ data: data, subscribes: subscribes, request: request || null });
      return true;
    }

    // Update the wanted channel set from an outgoing message; return its subscribe channels.
    _track(headers) {
      var subscribes = [];
      var sub = findHeader(headers, "subscribe");
      var unsub = findHeader(headers, "unsubscribe");
      var channels = this._channels;
      var subscribedWith = this._subscribedWith;
      if (sub !== null) {
        subscribes = channelList(sub);
        // Sent again with the re-subscription (a filter may read them: the
        // user presence lists, say), but not what routes or resumes.
        var kept = headers.filter(function (h) { return !ROUTING_HEADERS.has(h[0].toLowerCase()); });
        subscribes.forEach(function (c) { channels.add(c); subscribedWith.set(c, kept); });
        // Subscription tokens, one per channel in order: sent again with
        // the channel after a reconnect (or fresh from getSubscriptionToken).
        var tokens = findHeader(headers, "channel-token");
        var list = tokens === null ? [] : channelList(tokens);
        var channelTokens = this._channelTokens;
        subscribes.forEach(function (c, i) {
          if (list.length === subscribes.length) channelTokens.set(c, list[i]);
          else channelTokens.delete(c);
        });
      }
      if (unsub !== null) {
        // A channel subscribed to again later starts afresh.
        var positions = this._positions;
        var self = this;
        channelList(unsub).forEach(function (c) { self._forgetChannel(c); });
      }
      return subscribes;
    }

    // A channel no longer wanted: nothing of it is kept.
    _forgetChannel(channel) {
      this._channels.delete(channel);
      this._positions.delete(channel);
      this._subscribedWith.delete(channel);
      this._channelTokens.delete(channel);
      this._forgetGap(channel);
    }

    _clearTimers() {
      var self = this;
      ["_timer", "_connectTimer", "_stableTimer", "_refreshTimer"].forEach(function (name) {
        if (self[name] !== null) self._clearTimeout(self[name]);
        self[name] = null;
      });
    }

    // A connect attempt: first the tokens it needs (a fresh connection
    // token from getToken when the last one was refused, expired or is
    // about to; fresh subscription tokens from getSubscriptionToken for a
    // reconnect), then the socket.
    _connect() {
      this._timer = null;
      var self = this;
      var o = this.options;
      var fetchToken = !!(this._auth && o.getToken && (this._freshToken || this._tokenStale()));
      var channels = o.getSubscriptionToken && this._everOpened ?
        this.getChannels().filter(function (c) { return self._channelTokens.has(c); }) : [];
      if (!fetchToken && !channels.length) {
        this._openSocket();
        return;
      }
      var attempt = ++this._preparing;
      var connectToken = fetchToken ? callAsync(o.getToken, []) : Promise.resolve(null);
      var channelTokens = Promise.all(channels.map(function (c) {
        return callAsync(o.getSubscriptionToken, [c]).then(
          function (t) { return [c, t, null]; }, function (e) { return [c, null, e]; });
      }));
      Promise.all([connectToken, channelTokens]).then(function (got) {
        if (self._preparing !== attempt || self.state === "closed") return;
        if (fetchToken) {
          if (typeof got[0] !== "string" || !isToken(got[0])) {
            self._tokenFailed(new Error("getToken() gave no token"));
            return;
          }
          self._token = got[0];
          self._freshToken = false;
        }
        got[1].forEach(function (r) { self._gotSubscriptionToken(r[0], r[1], r[2]); });
        self._openSocket();
      }, function (e) {
        if (self._preparing !== attempt || self.state === "closed") return;
        self._tokenFailed(e);
      });
    }

    // getToken failed: said to on_error, and tried again later (backoff).
    _tokenFailed(error) {
      this._fail(error instanceof Error ? error : new Error("getToken() failed: " + error));
      this.state = this._everOpened ? "reconnecting" : "connecting";
      var self = this;
      this._timer = this._setTimeout(function () { self._connect(); }, this._nextDelay());
    }

    // What getSubscriptionToken(channel) gave for a reconnect: a token to
    // subscribe with; nothing (null, ""): the channel is dropped (told to
    // on_unsubscribed); an error: said, and the channel's last token kept.
    _gotSubscriptionToken(channel, token, error) {
      if (!this._channels.has(channel)) return;
      if (error) {
        this._fail(error instanceof Error ? error : new Error("getSubscriptionToken() failed: " + error));
      } else if (typeof token === "string" && isToken(token)) {
        this._channelTokens.set(channel, token);
      } else {
        this._forgetChannel(channel);
        var ctx = new Context(this, null, false);
        ctx.channel = channel;
        ctx.reason = "no subscription token";
        this._emit("unsubscribed", ctx);
      }
    }

    // The token's expiry (from the node's last reply) is near or past.
    _tokenStale() {
      return this.expires !== null && this._now() >= this.expires * 1000 - REFRESH_MARGIN;
    }

    _openSocket() {
      var self = this;
      var ws;
      try {
        ws = new this._WebSocket(this.url);
      } catch (e) {
        // A malformed URL: retrying will not help.
        this.state = "closed";
        this._fail(e);
        return;
      }
      ws.binaryType = "arraybuffer";
      this._ws = ws;
      this._connectTimer = this._setTimeout(function () {
        self._connectTimer = null;
        if (self._ws === ws && self.state !== "open") {
          try { ws.close(); } catch (e) { /* ignore */ }
          self._onClose(ws, 1006, "connect timeout");
        }
      }, this.options.connectTimeout);
      ws.onopen = function () { if (self._ws === ws) self._onOpen(ws); };
      ws.onmessage = function (event) { if (self._ws === ws) self._onMessage(event.data); };
      ws.onerror = function () {
        if (self._ws === ws) self._fail(new Error("WebSocket error on " + self.url));
      };
      ws.onclose = function (event) {
        if (self._ws === ws) self._onClose(ws, event.code, event.reason);
      };
    }

    // The socket is open. With a token, the connect message goes first
    // and nothing else until the node's reply (the connect timeout
    // still runs); without one, the connection is ready at once.
    _onOpen(ws) {
      if (!this._auth) {
        this._ready(ws, null);
        return;
      }
      this._authenticating = true;
      this._authError = null;
      ws.send(encode("connect", [["token", this._token]], ""));
    }

    _ready(ws, reply) {
      if (this._connectTimer !== null) this._clearTimeout(this._connectTimer);
      this._connectTimer = null;
      var reconnected = this._everOpened;
      this._everOpened = true;
      this.state = "open";
      // A server that accepts and at once closes (say, over its connection
      // limit) must not be hammered: the backoff restarts only once the
      // connection has lasted.
      var self = this;
      this._stableTimer = this._setTimeout(function () {
        self._stableTimer = null;
        self.attempts = 0;
      }, this.options.stableAfter);
      var queue = this._queue;
      this._queue = [];
      // Re-subscribe what an earlier connection had, except what the queue
      // is about to subscribe anyway: the server must not see it twice.
      var pending = new Set();
      queue.forEach(function (item) { item.subscribes.forEach(function (c) { pending.add(c); }); });
      var again = this.getChannels().filter(function (c) { return !pending.has(c); });
      // With the headers each was subscribed with: channels that had the
      // same ones go together.
      var groups = new Map();
      var subscribedWith = this._subscribedWith;
      var channelTokens = this._channelTokens;
      again.forEach(function (c) {
        var kept = subscribedWith.get(c) || [];
        var key = JSON.stringify(kept) + (channelTokens.has(c) ? "+token" : "");
        if (!groups.has(key)) groups.set(key, { headers: kept, channels: [] });
        groups.get(key).channels.push(c);
      });
      groups.forEach(function (group) {
        for (var i = 0; i < group.channels.length; i += self.options.resubscribeBatch) {
          // History channels resume after the last message seen.
          var batch = group.channels.slice(i, i + self.options.resubscribeBatch);
          var headers = [["subscribe", batch.join(" ")]].concat(
            group.headers, self._tokenHeaders(batch), self._resumeHeaders(batch));
          ws.send(encode("subscribe", headers, ""));
        }
      });
      for (var j = 0; j < queue.length; j++) {
        ws.send(queue[j].data);
        if (queue[j].request) queue[j].request.ws = ws;
      }
      var ctx = new Context(this, reply, false);
      ctx.reconnected = reconnected;
      ctx.user = this.user;
      ctx.expires = this.expires;
      this._emit("open", ctx);
    }

    // The channel-token header of `channels` subscribed with one (all of
    // them or none: they are grouped so).
    _tokenHeaders(channels) {
      var tokens = this._channelTokens;
      if (!channels.length || !tokens.has(channels[0])) return [];
      return [["channel-token", channels.map(function (c) { return tokens.get(c); }).join(" ")]];
    }

    _onMessage(data) {
      var binary = typeof data !== "string";
      var message;
      try {
        message = decode(data);
      } catch (e) {
        this._fail(e, null, binary);
        return;
      }
      if (this._acks.size && (message.command === "ack" || message.command === "error") &&
          this._takeAck(message, binary)) {
        return;
      }
      var kind = nodeKind(message);
      var nodeWord = kind === "reply" || kind === "event";
      if (kind === "reply" && this._onAuthReply(message, binary)) return;
      if (message.command === "error" && nodeWord) {
        var body = message.body;
        if (typeof body !== "string") body = utf8Decoder.decode(body);
        var status = parseOffset(message.getHeader("status"), "status");
        var error = new LhttpError(status === null ? 0 : status,
          message.getHeader("reason") || "error", body);
        var failed = this._requests.length ? this._takeRequest(message) : null;
        if (failed) this._settle(failed, error);
        else this._fail(error, message, binary);
        return;
      }
      if (message.command === "recovery" && nodeWord) {
        this._onRecovery(message, binary);
        return;
      }
      if (message.command === "history" && nodeWord && this._requests.length) {
        var request = this._takeRequest(message);
        if (request) {
          this._onHistory(request, message);
          return;
        }
      }
      if (kind === "position" && this._isWithheld(message, binary)) return;
      this._emit("message", new Context(this, message, binary));
    }

    // A history channel's message (its position stamped by the node):
    // false to deliver it, its position noted; true when it is not
    // delivered now: seen already (a duplicate), or behind a live gap
    // being recovered. A gap: the node's `prev` (the offset of the
    // message before it on the channel) is past the last offset seen, in
    // the same epoch. The channel is then subscribed again from that
    // offset; until the node's recovery reply its messages are held, and
    // after it they come again from the node, in order.
    _isWithheld(message, binary) {
      var offset = parseOffset(message.getHeader("offset"));
      var channel = message.getHeader("channel");
      if (offset === null || channel === null || !this._channels.has(channel)) return false;
      var recovering = this._recovering.get(channel);
      if (recovering) {
        if (recovering.held.length < this.options.maxHeld) recovering.held.push([message, binary]);
        return true;
      }
      var epoch = message.getHeader("epoch");
      var position = this._positions.get(channel);
      if (position && position.epoch === epoch) {
        if (offset <= position.offset) {
          this.duplicates += 1;
          return true;
        }
        var prev = parseOffset(message.getHeader("prev"), "prev");
        // A gap is recovered once per position: a node that keeps saying
        // so (or a forged prev relayed by a node older than prev) cannot
        // make it loop.
        if (prev !== null && prev > position.offset && !this._unchecked.has(channel) &&
            this._gapAt.get(channel) !== position.offset) {
          this._recoverGap(channel, position, message, binary);
          return true;
        }
      }
      this._unchecked.delete(channel);
      this._positions.set(channel, { offset: offset, epoch: epoch });
      return false;
    }

    // Subscribe to `channel` again from the last offset seen: the node
    // answers with a recovery reply, then the messages after it.
    _recoverGap(channel, position, message, binary) {
      this.gaps += 1;
      this._gapAt.set(channel, position.offset);
      var state = { since: position.offset, epoch: position.epoch, held: [[message, binary]], timer: null };
      this._recovering.set(channel, state);
      var headers = [["subscribe", channel]].concat(
        this._subscribedWith.get(channel) || [], this._tokenHeaders([channel]),
        this._resumeHeaders([channel]));
      this._ws.send(encode("subscribe", headers, ""));
      var self = this;
      state.timer = this._setTimeout(function () {
        state.timer = null;
        self._giveUpGap(channel, state);
      }, this.options.recoveryTimeout);
    }

    // No recovery reply in time (a node that does not recover a channel
    // already subscribed to): reported as not recovered, and what was
    // held goes out, in order.
    _giveUpGap(channel, state) {
      if (this._recovering.get(channel) !== state) return;
      this._recovering.delete(channel);
      var ctx = new Context(this, null, false);
      ctx.channel = channel;
      ctx.recovered = false;
      ctx.history = true;
      ctx.epoch = state.epoch;
      ctx.since = state.since;
      ctx.count = 0;
      ctx.offset = null;
      ctx.gap = true;
      ctx.timedOut = true;
      this._emit("recovery", ctx);
      for (var i = 0; i < state.held.length; i++) {
        var held = state.held[i];
        if (this._channels.has(channel) && !this._isWithheld(held[0], held[1])) {
          this._emit("message", new Context(this, held[0], held[1]));
        }
      }
    }

    _forgetGap(channel) {
      var state = this._recovering.get(channel);
      if (state && state.timer !== null) this._clearTimeout(state.timer);
      this._recovering.delete(channel);
      this._gapAt.delete(channel);
      this._unchecked.delete(channel);
    }

    // A closed connection: the reconnect's re-subscribe recovers from the
    // same offset, and its recovery reply ends the gap.
    _stopRecoveryTimers() {
      var self = this;
      this._recovering.forEach(function (state) {
        if (state.timer !== null) self._clearTimeout(state.timer);
        state.timer = null;
      });
    }

    _onRecovery(message, binary) {
      var ctx = new Context(this, message, binary);
      ctx.channel = message.getHeader("channel");
      ctx.recovered = message.getHeader("recovered") === "true";
      ctx.history = message.getHeader("history") !== "none";
      ctx.epoch = message.getHeader("epoch");
      ctx.since = parseOffset(message.getHeader("since"), "since");
      ctx.count = parseOffset(message.getHeader("count"), "count");
      ctx.offset = parseOffset(message.getHeader("offset"));
      var gap = ctx.channel !== null ? this._recovering.get(ctx.channel) : undefined;
      ctx.gap = !!gap;
      ctx.timedOut = false;
      if (gap) {
        // What was held comes again after this reply.
        if (gap.timer !== null) this._clearTimeout(gap.timer);
        this._recovering.delete(ctx.channel);
        if (ctx.recovered) this.gapsRecovered += 1;
      }
      if (ctx.channel !== null && this._channels.has(ctx.channel)) {
        // Lost for good: the next message is taken whatever its prev.
        if (!ctx.recovered) this._unchecked.add(ctx.channel);
        var position = this._positions.get(ctx.channel);
        if (!ctx.history) {
          this._positions.delete(ctx.channel);
        } else if (!position || position.epoch !== ctx.epoch) {
          // A new epoch: its offsets start again, and what follows is
          // everything retained in it.
          this._positions.set(ctx.channel, { offset: 0, epoch: ctx.epoch });
        }
      }
      this._emit("recovery", ctx);
    }

    // The node's word about authentication (docs/protocol.rst): the reply
    // to connect or refresh, the refresh notice, an error reply to either,
    // a server-side unsubscribe. True when `message` was one.
    _onAuthReply(message, binary) {
      var command = message.command;
      var status = command === "connect" || command === "refresh" || command === "error" ?
        parseOffset(message.getHeader("status"), "status") : null;
      if (command === "connect" && status === 200) {
        this._noteCredential(message);
        if (this._authenticating) {
          this._authenticating = false;
          this._authRetried = false;
          this._ready(this._ws, message);
        }
        return true;
      }
      if (command === "refresh" && status === 200) {
        this._refreshing = false;
        this._noteCredential(message);
        return true;
      }
      if (command === "refresh") {
        // The notice: the token expired, the connection works for
        // `grace` seconds more; a fresh token now keeps it.
        if (this.options.getToken) {
          this._refresh();
        } else {
          this._fail(new LhttpError(status === null ? 401 : status,
            message.getHeader("reason") || "token expired",
            "no getToken option to refresh it with"), message, binary);
        }
        return true;
      }
      if (command === "unsubscribed") {
        var channel = message.getHeader("channel");
        if (channel === null) return true;
        this._forgetChannel(channel);
        var ctx = new Context(this, message, binary);
        ctx.channel = channel;
        ctx.reason = message.getHeader("reason") || "";
        this._emit("unsubscribed", ctx);
        return true;
      }
      var about = command === "error" ? message.getHeader("command") : null;
      if (about !== "connect" && about !== "refresh") return false;
      var error = new LhttpError(status === null ? 0 : status,
        message.getHeader("reason") || "error", bodyText(message));
      if (about === "connect") {
        // The node closes the connection next (4401, 4503): told with it.
        this._authError = error;
        return true;
      }
      // A refused refresh: the connection keeps its current token.
      this._refreshing = false;
      this._fail(error, message, binary);
      return true;
    }

    // user and expires from the node's connect or refresh reply; the next
    // refresh is due shortly before expires.
    _noteCredential(message) {
      this.user = message.getHeader("user");
      this.expires = parseOffset(message.getHeader("expires"), "expires");
      if (this._refreshTimer !== null) this._clearTimeout(this._refreshTimer);
      this._refreshTimer = null;
      if (this.expires === null || !this.options.getToken) return;
      var left = this.expires * 1000 - this._now();
      // Already past by this clock: the node's notice says when.
      if (left <= 0) return;
      var self = this;
      this._refreshTimer = this._setTimeout(function () {
        self._refreshTimer = null;
        self._refresh();
      }, left - Math.min(REFRESH_MARGIN, left / 4));
    }

    // A fresh token from getToken, sent in a refresh message.
    _refresh() {
      if (this._refreshing || !this.options.getToken) return;
      this._refreshing = true;
      var self = this;
      var ws = this._ws;
      callAsync(this.options.getToken, []).then(function (token) {
        if (self._ws !== ws || self.state !== "open") {
          self._refreshing = false;
          return;
        }
        if (!self.refresh(token)) self._refreshing = false;
      }, function (e) {
        self._refreshing = false;
        self._fail(e instanceof Error ? e : new Error("getToken() failed: " + e));
      });
    }

    /**
     * Send `LHTTP/1.0 refresh` with `token` now (the SDK does so by itself
     * with options.getToken). The node answers with a refresh reply
     * (client.expires is updated) or an error reply (to on_error).
     *
     * @return {boolean} false when not connected or not a token.
     */
    refresh(token) {
      var ws = this._ws;
      if (typeof token !== "string" || !isToken(token)) {
        this._fail(new TypeError("refresh(): not a token"));
        return false;
      }
      if (this.state !== "open" || !ws || ws.readyState !== 1) return false;
      this._token = token;
      ws.send(encode("refresh", [["token", token]], ""));
      return true;
    }

    _onHistory(request, reply) {
      var messages;
      try {
        messages = reply.getMultipart().map(function (part) { return decode(part.body); });
      } catch (e) {
        this._settle(request, e);
        return;
      }
      messages.channel = reply.getHeader("channel");
      messages.epoch = reply.getHeader("epoch");
      messages.offset = parseOffset(reply.getHeader("offset"));
      messages.complete = reply.getHeader("complete") === "true";
      this._settle(request, null, messages);
    }

    _onClose(ws, code, reason) {
      this._ws = null;
      this._clearTimers();
      this._dropRequests(ws, new Error("connection closed before the history reply"));
      this._dropAcks(ws, new Error("connection closed before the acknowledgement"));
      this._recovering.forEach(function (state) { state.held = []; });
      this._stopRecoveryTimers();
      this._authenticating = false;
      this._refreshing = false;
      if (this.state === "closed") return;
      var wasOpen = this.state === "open";
      if (ERROR_CLOSE_CODES.indexOf(code) >= 0) {
        this._fail(new LhttpError(code, reason || "connection closed by the server"));
      }
      var stop = this._closedByNode(code, reason);
      var ctx = new Context(this, null, false);
      ctx.code = code;
      ctx.reason = reason || "";
      ctx.wasOpen = wasOpen;
      ctx.error = this._authError;
      ctx.willReconnect = !!this.options.reconnect && !stop;
      if (ctx.willReconnect) {
        this.state = "reconnecting";
        ctx.delay = this._nextDelay();
        var self = this;
        this._timer = this._setTimeout(function () { self._connect(); }, ctx.delay);
      } else {
        this.state = "closed";
      }
      this._emit("close", ctx);
    }

    // An authenticating node's close codes: true to stop for good.
    _closedByNode(code, reason) {
      if (code === CLOSE_DISCONNECTED) {
        this._fail(new LhttpError(code, reason || "disconnected by the server"));
        return true;
      }
      if (code === CLOSE_UNAUTHORIZED) {
        if (this.options.getToken && !this._authRetried) {
          // Once more with a fresh token, then no more.
          this._authRetried = true;
          this._freshToken = true;
          return false;
        }
        var refused = this._authError;
        this._fail(new LhttpError(code, reason || (refused ? refused.reason : "unauthorized"),
          refused ? refused.body : ""));
        return true;
      }
      if (code === CLOSE_EXPIRED || code === CLOSE_RECONNECT) this._freshToken = true;
      return false;
    }

    _nextDelay() {
      var o = this.options;
      var base = Math.min(o.maxDelay, o.minDelay * Math.pow(o.factor, this.attempts));
      this.attempts += 1;
      return Math.round(base * (1 - o.jitter * this._random()));
    }
  }

  // What an ack says: {positions: {channel: {offset, epoch}}, duplicate}.
  function parseAck(message) {
    var positions = {};
    var channel = null;
    message.headers.forEach(function (h) {
      var name = h[0].toLowerCase();
      if (name === "channel") channel = h[1];
      else if (name === "offset" && channel !== null) {
        var offset = parseOffset(h[1]);
        if (offset !== null) positions[channel] = { offset: offset, epoch: null };
      } else if (name === "epoch" && channel !== null && positions[channel]) positions[channel].epoch = h[1];
    });
    return { positions: positions, duplicate: message.getHeader("duplicate") === "true" };
  }

  // A new idempotency key: 128 random bits as hex.
  function newKey(random) {
    var c = typeof globalThis !== "undefined" ? globalThis.crypto : undefined;
    if (c && typeof c.randomUUID === "function") return c.randomUUID().replace(/-/g, "");
    var key = "";
    for (var i = 0; i < 32; i++) key += Math.floor(random() * 16).toString(16);
    return key;
  }

  Lhttp.Lhttp = Lhttp;
  Lhttp.Context = Context;
  Lhttp.Message = Message;
  Lhttp.Part = Part;
  Lhttp.LhttpError = LhttpError;
  Lhttp.LhttpParseError = LhttpParseError;
  Lhttp.decode = decode;
  Lhttp.nodeKind = nodeKind;
  Lhttp.encode = encode;
  Lhttp.splitMultipart = splitMultipart;
  Lhttp.buildMultipart = buildMultipart;
  Lhttp.PROTOCOL = PROTOCOL;
  return Lhttp;
});
