/*
 * The LHTTP chat-room demo. It needs no server code: every room is one
 * channel, and the page only uses the reserved subscribe/publish/unsubscribe
 * headers of a plain `twistd lhttp`.
 *
 * Wire format of what it sends (the nickname and time are headers, so a
 * value with ':' in it, like the time, exercises the codec):
 *
 *   LHTTP/1.0 chat                       LHTTP/1.0 join / leave
 *   publish:room-<name>                  subscribe / unsubscribe:room-<name>
 *   nick:<nickname>                      publish:room-<name>
 *   time:<ISO 8601>                      nick:..., time:..., id:...
 *   id:<random id>
 *
 *   <text>
 *
 * Query parameters: ?nick=ann&room=blue (rooms: comma-separated) and
 * server=ws://host:port/ to talk to another lhttp server.
 */
(function () {
  "use strict";

  var ROOM_PREFIX = "room-";
  var params = new URLSearchParams(location.search);
  var $ = function (id) { return document.getElementById(id); };

  var ui = {
    nick: $("nick"), status: $("status"), roomList: $("room-list"),
    joinForm: $("join-form"), roomInput: $("room-input"), roomTitle: $("room-title"),
    leave: $("leave"), notice: $("notice"), messages: $("messages"), empty: $("empty"),
    sendForm: $("send-form"), messageInput: $("message-input"), send: $("send"),
  };

  /** name -> {messages: [{...}], unread: n}; insertion order is display order. */
  var rooms = new Map();
  var active = null;
  var pending = new Map();   // id -> the <li> of an own message not yet echoed

  function serverURL() {
    if (params.get("server")) return params.get("server");
    if (!location.host) return "ws://localhost:8081/";
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/";
  }

  function cleanNick(text) {
    return String(text).replace(/[\x00-\x1f\x7f]/g, "").trim().slice(0, 32);
  }

  function cleanRoom(text) {
    return String(text).trim().toLowerCase().replace(/[^a-z0-9_-]+/g, "-")
      .replace(/^-+|-+$/g, "").slice(0, 40);
  }

  function randomId() {
    var bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, function (b) { return b.toString(16).padStart(2, "0"); }).join("");
  }

  function storedNick() {
    try { return localStorage.getItem("lhttp-chat-nick"); } catch (e) { return null; }
  }

  function storeNick(nick) {
    try { localStorage.setItem("lhttp-chat-nick", nick); } catch (e) { /* private mode */ }
  }

  var nick = cleanNick(params.get("nick") || storedNick() || "") ||
    "guest-" + Math.floor(1000 + Math.random() * 9000);
  ui.nick.value = nick;

  var client = new Lhttp(serverURL());

  // ------------------------------------------------------------- rendering

  function formatTime(date) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function messageElement(entry) {
    var li = document.createElement("li");
    li.className = "message " + entry.kind + (entry.own ? " own" : "");
    if (entry.id) li.dataset.id = entry.id;
    var meta = document.createElement("div");
    meta.className = "meta";
    var sender = document.createElement("span");
    sender.className = "sender";
    sender.textContent = entry.nick;
    var time = document.createElement("time");
    time.className = "time";
    time.dateTime = entry.time.toISOString();
    time.title = entry.time.toLocaleString();
    time.textContent = formatTime(entry.time);
    meta.append(sender, time);
    var text = document.createElement("div");
    text.className = "text";
    text.textContent = entry.text;
    li.append(meta, text);
    return li;
  }

  function scrollToEnd() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function renderRooms() {
    ui.roomList.replaceChildren();
    rooms.forEach(function (room, name) {
      var li = document.createElement("li");
      li.dataset.room = name;
      if (name === active) li.className = "active";
      var button = document.createElement("button");
      button.type = "button";
      var label = document.createElement("span");
      label.textContent = "# " + name;
      button.append(label);
      if (room.unread) {
        var badge = document.createElement("span");
        badge.className = "unread";
        badge.textContent = String(room.unread);
        button.append(badge);
      }
      button.addEventListener("click", function () { show(name); });
      li.append(button);
      ui.roomList.append(li);
    });
  }

  function show(name) {
    active = name;
    var room = name && rooms.get(name);
    if (room) room.unread = 0;
    ui.roomTitle.textContent = name || "No room";
    ui.roomTitle.classList.toggle("none", !room);
    ui.messages.replaceChildren();
    if (room) room.entries.forEach(function (entry) { ui.messages.append(entry.element); });
    ui.messages.hidden = !room;
    ui.empty.hidden = !!room;
    ui.leave.disabled = ui.messageInput.disabled = ui.send.disabled = !room;
    renderRooms();
    scrollToEnd();
    if (room) ui.messageInput.focus();
  }

  function addEntry(name, entry) {
    var room = rooms.get(name);
    if (!room) return;
    entry.element = messageElement(entry);
    room.entries.push(entry);
    if (name === active) {
      ui.messages.append(entry.element);
      scrollToEnd();
    } else if (entry.kind === "chat") {
      room.unread += 1;
      renderRooms();
    }
  }

  function setNotice(text) {
    ui.notice.textContent = text || "";
    ui.notice.hidden = !text;
  }

  // ---------------------------------------------------------------- actions

  function headersFor(id) {
    return [["nick", nick], ["time", new Date().toISOString()], ["id", id]];
  }

  function join(name) {
    name = cleanRoom(name);
    if (!name) return;
    if (!rooms.has(name)) {
      rooms.set(name, { entries: [], unread: 0 });
      // One message: the server subscribes before it publishes, so we see
      // our own join, and after a reconnect the SDK subscribes us again.
      var channel = ROOM_PREFIX + name;
      client.send("join", [["subscribe", channel], ["publish", channel]].concat(headersFor(randomId())), "");
    }
    show(name);
  }

  function leave(name) {
    if (!rooms.has(name)) return;
    // publish runs before unsubscribe: the others see us leave.
    var channel = ROOM_PREFIX + name;
    client.send("leave", [["publish", channel], ["unsubscribe", channel]].concat(headersFor(randomId())), "");
    rooms.delete(name);
    var names = Array.from(rooms.keys());
    show(names.length ? names[names.length - 1] : null);
  }

  function say(text) {
    if (!active || !text.trim()) return;
    var id = randomId();
    var entry = { kind: "chat", nick: nick, text: text, time: new Date(), id: id, own: true };
    addEntry(active, entry);
    entry.element.classList.add("pending");
    pending.set(id, entry.element);
    client.publish(ROOM_PREFIX + active, "chat", headersFor(id), text);
  }

  // ---------------------------------------------------------- from the wire

  function roomOf(ctx) {
    var channels = (ctx.getHeader("publish") || "").split(/[ \t]+/);
    for (var i = 0; i < channels.length; i++) {
      var name = channels[i].slice(ROOM_PREFIX.length);
      if (channels[i].indexOf(ROOM_PREFIX) === 0 && rooms.has(name)) return name;
    }
    return null;
  }

  client.on_message = function (ctx) {
    var name = roomOf(ctx);
    if (!name) return;
    var command = ctx.getCommand();
    var sender = cleanNick(ctx.getHeader("nick") || "") || "anonymous";
    var time = new Date(ctx.getHeader("time") || Date.now());
    if (isNaN(time.getTime())) time = new Date();
    var id = ctx.getHeader("id");
    var body = ctx.getBody();
    if (typeof body !== "string") body = new TextDecoder().decode(body);

    if (command === "chat") {
      if (id && pending.has(id)) {
        // Our own message, back from the server: delivered.
        pending.get(id).classList.remove("pending");
        pending.delete(id);
        return;
      }
      addEntry(name, { kind: "chat", nick: sender, text: body, time: time, id: id });
    } else if (command === "join" || command === "leave") {
      var verb = command === "join" ? " joined #" : " left #";
      addEntry(name, { kind: "system", nick: sender, text: sender + verb + name, time: time });
    }
  };

  client.on_open = function (ctx) {
    ui.status.dataset.state = "open";
    ui.status.textContent = ctx.reconnected ? "connected (reconnected)" : "connected";
    setNotice("");
  };

  client.on_close = function (ctx) {
    ui.status.dataset.state = ctx.willReconnect ? "reconnecting" : "closed";
    ui.status.textContent = ctx.willReconnect ?
      "reconnecting in " + Math.max(1, Math.round(ctx.delay / 1000)) + "s…" : "disconnected";
  };

  client.on_error = function (ctx) {
    if (ctx.error && ctx.error.name === "LhttpError") {
      setNotice("Server: " + ctx.error.reason + (ctx.error.body ? " — " + ctx.error.body : ""));
    }
  };

  // ------------------------------------------------------------------ forms

  ui.nick.addEventListener("change", function () {
    var value = cleanNick(ui.nick.value);
    if (value) {
      nick = value;
      storeNick(nick);
    }
    ui.nick.value = nick;
  });

  ui.joinForm.addEventListener("submit", function (event) {
    event.preventDefault();
    join(ui.roomInput.value);
    ui.roomInput.value = "";
  });

  ui.leave.addEventListener("click", function () { leave(active); });

  ui.sendForm.addEventListener("submit", function (event) {
    event.preventDefault();
    say(ui.messageInput.value);
    ui.messageInput.value = "";
  });

  (params.get("room") || "lobby").split(",").forEach(join);
  var first = cleanRoom((params.get("room") || "lobby").split(",")[0]);
  if (first) show(first);
})();
