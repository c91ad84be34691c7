/*
 * The LHTTP chat-room demo. It needs no server code: every room is one
 * channel, room.<name>, and the page only uses the reserved
 * subscribe/publish/unsubscribe headers of a plain `twistd lhttp`.
 *
 * Wire format of what it sends (the nickname and time are headers, so a
 * value with ':' in it, like the time, exercises the codec):
 *
 *   LHTTP/1.0 chat                       LHTTP/1.0 join / leave
 *   publish:room.<name>                  subscribe / unsubscribe:room.<name>
 *   nick:<nickname>                      since:0 (join: the room's history)
 *   time:<ISO 8601>                      publish:room.<name>
 *   id:<random id>                       nick:..., time:..., id:...
 *
 *   <text>
 *
 * With history on the server (twistd lhttp --demo --history 'room.*=100'),
 * a room shows its recent messages on join, and the SDK catches up on what
 * was said while the page was disconnected. Without it the chat works the
 * same, from the moment of joining. "Who is here" asks the server's
 * presence feature (`LHTTP/1.0 presence` with a channel header) and says
 * "presence off" when the server has none.
 *
 * Query parameters: ?nick=ann&room=blue (rooms: comma-separated) and
 * server=ws://host:port/ to talk to another lhttp server.
 *
 * Auth mode, ?auth=http://127.0.0.1:8090/token (a token backend such as
 * examples/demo_auth_backend.py, against a node with the same JWT secret):
 * the page asks for a nickname, gets a token for it from the backend
 * (POST {"nick": ...} -> {"token": ...}) and connects with getToken, so
 * the SDK sends `LHTTP/1.0 connect` with it first and refreshes it before
 * it expires. The node names the user from the token: the page shows the
 * node's word (client.user), and the node replaces the nick header of
 * what the page publishes. The page also subscribes to its inbox,
 * user.<nick>, and sends private messages to others' inboxes (channel
 * rules let anyone signed in write to an inbox, only its owner read it):
 *
 *   LHTTP/1.0 chat
 *   publish:user.<to>
 *   nick:..., time:..., id:...
 *
 *   <text>
 */
(function () {
  "use strict";

  var ROOM_PREFIX = "room.";
  var INBOX_PREFIX = "user.";
  var params = new URLSearchParams(location.search);
  // The token backend of the auth mode, or null.
  var authURL = params.get("auth");
  var $ = function (id) { return document.getElementById(id); };

  var ui = {
    nick: $("nick"), status: $("status"), roomList: $("room-list"),
    joinForm: $("join-form"), roomInput: $("room-input"), roomTitle: $("room-title"),
    leave: $("leave"), notice: $("notice"), messages: $("messages"), empty: $("empty"),
    sendForm: $("send-form"), messageInput: $("message-input"), send: $("send"),
    roomInfo: $("room-info"), people: $("people"), peopleList: $("people-list"),
    peopleNote: $("people-note"), user: $("user"), signin: $("signin"),
    signinNick: $("signin-nick"), signinBackend: $("signin-backend"), inbox: $("inbox"),
    inboxChannel: $("inbox-channel"), inboxList: $("inbox-list"), dmForm: $("dm-form"),
    dmTo: $("dm-to"), dmText: $("dm-text"),
  };

  /**
   * name -> {entries: [{...}], unread: n, history: null | true | false,
   * replayed: {epoch, offset} (what recovery sent is older than this),
   * people: null | [names], presence: "asking" | "on" | "off"};
   * insertion order is display order.
   */
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

  // Created by start(): at once, or in auth mode once a nickname is chosen.
  var client = null;
  var inbox = null;          // auth mode: our inbox channel, user.<nick>
  // For the curious (and the browser tests): the page's SDK client.
  window.lhttpChat = { client: null, rooms: rooms };

  /**
   * Auth mode: a token for our nickname from the backend. The SDK calls
   * it to connect, to reconnect after a refused or expired token, and to
   * refresh the token before it expires.
   */
  function fetchToken() {
    return fetch(authURL, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ nick: nick }),
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (answer) {
        if (!response.ok || typeof answer.token !== "string") {
          throw new Error("the token backend said " + response.status +
            (answer.error ? ": " + answer.error : ""));
        }
        return answer.token;
      });
    });
  }

  // ------------------------------------------------------------- rendering

  function formatTime(date) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function messageElement(entry) {
    var li = document.createElement("li");
    li.className = "message " + entry.kind + (entry.own ? " own" : "") +
      (entry.history ? " history" : "");
    if (entry.id) li.dataset.id = entry.id;
    if (entry.offset !== undefined) li.dataset.offset = entry.offset;
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
    renderRoomInfo();
    renderPeople();
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

  function renderRoomInfo() {
    var room = active && rooms.get(active);
    var state = !room ? "none" : room.history === null ? "unknown" : room.history ? "on" : "off";
    ui.roomInfo.dataset.history = state;
    ui.roomInfo.textContent = state === "on" ? "history on: recent messages are shown on join" :
      state === "off" ? "history off (start the server with --history 'room.*=100' to keep it)" : "";
    ui.roomInfo.hidden = !ui.roomInfo.textContent;
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
      rooms.set(name, {
        entries: [], unread: 0, history: null, replayed: null, people: null, presence: "asking",
      });
      // The server announces the join itself (--demo turns on join/leave
      // events for room.*, with our nick as the user): joins are not chat
      // messages and are not kept in the room's history. After a reconnect
      // the SDK subscribes us again, with the same nick, from the last
      // message seen. since:0 asks for the room's history (what the server
      // kept) first; a server without history for the channel says so and
      // the subscription is live at once.
      var channel = ROOM_PREFIX + name;
      client.send("join", [["subscribe", channel], ["since", "0"]].concat(headersFor(randomId())), "");
      askPresence(name);
    }
    show(name);
  }

  function leave(name) {
    if (!rooms.has(name)) return;
    // The server tells the others (a leave event).
    var channel = ROOM_PREFIX + name;
    client.send("leave", [["unsubscribe", channel]].concat(headersFor(randomId())), "");
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

  function roomOfChannel(channel) {
    if (!channel || channel.indexOf(ROOM_PREFIX) !== 0) return null;
    var name = channel.slice(ROOM_PREFIX.length);
    return rooms.has(name) ? name : null;
  }

  function roomOf(ctx) {
    // A history channel's messages say which channel delivered them.
    // (The node's own messages name the channel; a client's may say anything.)
    var kind = Lhttp.nodeKind(ctx.message);
    var stamped = kind === "position" || kind === "event" ? roomOfChannel(ctx.getHeader("channel")) : null;
    if (stamped) return stamped;
    var channels = (ctx.getHeader("publish") || "").split(/[ \t]+/);
    for (var i = 0; i < channels.length; i++) {
      var name = roomOfChannel(channels[i]);
      if (name) return name;
    }
    return null;
  }

  function textOf(body) {
    return typeof body === "string" ? body : new TextDecoder().decode(body);
  }

  // Whether a message is one a recovery sent (history), not a live one.
  function fromHistory(room, ctx) {
    if (Lhttp.nodeKind(ctx.message) !== "position") return false;
    var offset = parseInt(ctx.getHeader("offset"), 10);
    return !!room.replayed && !isNaN(offset) && room.replayed.epoch === ctx.getHeader("epoch") &&
      offset <= room.replayed.offset;
  }

  function onRecovery(ctx) {
    var name = roomOfChannel(ctx.channel);
    if (!name) return;
    var room = rooms.get(name);
    room.history = ctx.history;
    if (ctx.gap) {
      // A live gap the SDK filled without reconnecting: the messages
      // follow in order, as live ones; say something only if some are gone.
      if (!ctx.recovered) {
        addEntry(name, { kind: "system recovery", nick: "", text:
          "some messages of this room could not be recovered", time: new Date() });
      }
      return;
    }
    if (ctx.history) room.replayed = { epoch: ctx.epoch, offset: ctx.offset };
    if (ctx.since > 0 && ctx.history) {
      // A reconnect: the SDK asked for what came after the last message seen.
      var text = ctx.recovered ?
        (ctx.count ? "caught up: " + ctx.count + " message(s) while away" : "") :
        "the server restarted or no longer has all messages since you left: " +
        "some may be missing; showing what it kept";
      if (text) addEntry(name, { kind: "system recovery", nick: "", text: text, time: new Date() });
    }
    if (name === active) renderRoomInfo();
  }

  function onMessage(ctx) {
    var command = ctx.getCommand();
    var kind = Lhttp.nodeKind(ctx.message);
    if (command === "presence") {
      // Only the node's answer: a room member can publish a "presence" too.
      if (kind === "reply") onPresence(ctx);
      return;
    }
    var name = roomOf(ctx);
    if (!name) {
      if (inbox && command === "chat" && toInbox(ctx)) addPrivate(ctx);
      return;
    }
    var room = rooms.get(name);
    var history = fromHistory(room, ctx);
    var offset = ctx.getHeader("offset");
    var sender = cleanNick(ctx.getHeader("nick") || "") || "anonymous";
    var time = new Date(ctx.getHeader("time") || Date.now());
    if (isNaN(time.getTime())) time = new Date();
    var id = ctx.getHeader("id");
    var body = textOf(ctx.getBody());
    var position = offset === null ? {} : { offset: offset };

    if (command === "chat") {
      if (id && pending.has(id)) {
        // Our own message, back from the server: delivered.
        var element = pending.get(id);
        element.classList.remove("pending");
        if (offset !== null) element.dataset.offset = offset;
        pending.delete(id);
        return;
      }
      addEntry(name, Object.assign({
        kind: "chat", nick: sender, text: body, time: time, id: id,
        own: history && sender === nick, history: history,
      }, position));
    } else if ((command === "join" || command === "leave") && kind === "event") {
      // The node's event: who came or went is its word, not a sender's.
      var who = cleanNick(ctx.getHeader("user") || "") || "guest " + (ctx.getHeader("client") || "");
      var verb = command === "join" ? " joined #" : " left #";
      addEntry(name, { kind: "system", nick: who, text: who + verb + name, time: new Date() });
      askPresence(name);
    }
  }

  // ---------------------------------------------------------- who is here

  // Rooms whose presence request awaits its reply, oldest first: a reply
  // without a channel header answers the oldest.
  var presenceAsked = [];

  function askPresence(name) {
    presenceAsked.push(name);
    client.send("presence", [["channel", ROOM_PREFIX + name]], "");
  }

  /**
   * The names in a presence reply, read defensively: multipart parts (a
   * user, nick or client header each, else the part's body), a JSON array
   * or object (of strings, or of {user, nick, client, id}), or one name a
   * line.
   */
  function presenceNames(ctx) {
    var names = [];
    var nameOf = function (item) {
      if (item === null || item === undefined) return "";
      if (typeof item !== "object") return String(item);
      return String(item.user || item.nick || item.name || item.client || item.id || "");
    };
    var parts = [];
    try { parts = ctx.getMultipart(); } catch (e) { parts = []; }
    if (parts.length) {
      parts.forEach(function (part) {
        names.push(part.getHeader("user") || part.getHeader("nick") ||
          part.getHeader("client") || textOf(part.body).trim());
      });
    } else {
      var body = textOf(ctx.getBody()).trim();
      var parsed = null;
      if (body[0] === "[" || body[0] === "{") {
        try { parsed = JSON.parse(body); } catch (e) { parsed = null; }
      }
      if (parsed && !Array.isArray(parsed)) {
        parsed = parsed.members || parsed.clients || parsed.presence || parsed.users ||
          Object.keys(parsed).map(function (k) { return parsed[k]; });
      }
      if (Array.isArray(parsed)) names = parsed.map(nameOf);
      else if (body) {
        // The node's format: "CLIENTID[ USER]" a line; the demo's users
        // are nicknames (twistd lhttp --demo names them from the nick
        // header); a client without one shows as a guest.
        names = body.split(/\r?\n/).map(function (line) {
          var space = line.indexOf(" ");
          if (space >= 0) return line.slice(space + 1);
          return line ? "guest " + line.slice(-6) : "";
        });
      }
    }
    var seen = new Set();
    return names.map(function (n) { return cleanNick(n); }).filter(function (n) {
      if (!n || seen.has(n)) return false;
      seen.add(n);
      return true;
    }).sort();
  }

  function presenceRoom(ctx) {
    var name = roomOfChannel(ctx.getHeader("channel"));
    var at = presenceAsked.indexOf(name);
    if (name && at >= 0) presenceAsked.splice(at, 1);
    else if (!name) name = presenceAsked.shift() || null;
    return name && rooms.has(name) ? name : null;
  }

  function onPresence(ctx) {
    var name = presenceRoom(ctx);
    if (!name) return;
    var room = rooms.get(name);
    room.presence = "on";
    room.people = presenceNames(ctx);
    if (name === active) renderPeople();
  }

  function presenceFailed(ctx) {
    var name = presenceRoom(ctx);
    if (!name) return;
    rooms.get(name).presence = "off";
    if (name === active) renderPeople();
  }

  function renderPeople() {
    var room = active && rooms.get(active);
    var state = room ? room.presence : "none";
    ui.people.dataset.state = state;
    ui.people.hidden = !room;
    ui.peopleList.replaceChildren();
    if (state === "on") {
      room.people.forEach(function (person) {
        var li = document.createElement("li");
        li.textContent = person;
        ui.peopleList.append(li);
      });
    }
    ui.peopleNote.textContent = state === "off" ? "presence off" :
      state === "asking" ? "asking…" : state === "on" && !room.people.length ? "nobody listed" : "";
    ui.peopleNote.hidden = !ui.peopleNote.textContent;
  }

  function onOpen(ctx) {
    ui.status.dataset.state = "open";
    ui.status.textContent = ctx.reconnected ? "connected (reconnected)" : "connected";
    if (client.user !== null) showUser();
    setNotice("");
    if (ctx.reconnected) {
      presenceAsked = [];
      rooms.forEach(function (room, name) { askPresence(name); });
    }
  }

  function onClose(ctx) {
    ui.status.dataset.state = ctx.willReconnect ? "reconnecting" : "closed";
    ui.status.textContent = ctx.willReconnect ?
      "reconnecting in " + Math.max(1, Math.round(ctx.delay / 1000)) + "s…" : "disconnected";
  }

  function onError(ctx) {
    if (ctx.getHeader("command") === "presence") {
      // No presence on this server (or not for this room).
      presenceFailed(ctx);
      return;
    }
    if (ctx.error && ctx.error.name === "LhttpError") {
      setNotice("Server: " + ctx.error.reason + (ctx.error.body ? " — " + ctx.error.body : ""));
    } else if (authURL && ctx.error) {
      // getToken failed (the backend is down, or refused the nickname).
      setNotice("Sign-in: " + ctx.error.message);
    }
  }

  // ------------------------------------------------------- auth mode: you

  // The node's word on who we are (its connect/refresh reply).
  function showUser() {
    nick = client.user;
    ui.nick.value = nick;
    var until = client.expires ? new Date(client.expires * 1000) : null;
    ui.user.textContent = "signed in as " + nick;
    ui.user.title = until ? "token valid until " + until.toLocaleTimeString() +
      " (the page refreshes it by itself)" : "";
    ui.user.dataset.user = nick;
    ui.user.dataset.expires = client.expires || "";
    ui.user.hidden = false;
  }

  // ------------------------------------------------ auth mode: the inbox

  // Whether a message was published to our inbox.
  function toInbox(ctx) {
    if (Lhttp.nodeKind(ctx.message) === "position") return ctx.getHeader("channel") === inbox;
    return (ctx.getHeader("publish") || "").split(/[ \t]+/).indexOf(inbox) >= 0;
  }

  function privateElement(sender, text, own) {
    var li = document.createElement("li");
    li.className = "message chat private" + (own ? " own" : "");
    var meta = document.createElement("div");
    meta.className = "meta";
    var who = document.createElement("span");
    who.className = "sender";
    who.textContent = sender;
    meta.append(who);
    var body = document.createElement("div");
    body.className = "text";
    body.textContent = text;
    li.append(meta, body);
    ui.inboxList.append(li);
    return li;
  }

  function addPrivate(ctx) {
    // The nick header of a signed-in page's message is the node's word.
    var sender = cleanNick(ctx.getHeader("nick") || "") || "anonymous";
    privateElement(sender, textOf(ctx.getBody()), false);
  }

  function sendPrivate(to, text) {
    to = cleanNick(to);
    if (!to || !text.trim()) return;
    privateElement("you → " + to, text, true);
    client.publish(INBOX_PREFIX + to, "chat", headersFor(randomId()), text);
  }

  // ------------------------------------------------------------------ forms

  ui.nick.addEventListener("change", function () {
    if (authURL) {
      // The node names us from the token: sign in again to change it.
      ui.nick.value = nick;
      return;
    }
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

  ui.dmForm.addEventListener("submit", function (event) {
    event.preventDefault();
    sendPrivate(ui.dmTo.value, ui.dmText.value);
    ui.dmText.value = "";
  });

  function start() {
    client = new Lhttp(serverURL(), authURL ? { getToken: fetchToken } : undefined);
    window.lhttpChat.client = client;
    client.on_recovery = onRecovery;
    client.on_message = onMessage;
    client.on_open = onOpen;
    client.on_close = onClose;
    client.on_error = onError;
    if (authURL) {
      // Our inbox: anyone signed in may write to it, only we may read it.
      inbox = INBOX_PREFIX + nick;
      ui.inboxChannel.textContent = inbox;
      ui.inbox.hidden = false;
      client.subscribe(inbox);
    }
    (params.get("room") || "lobby").split(",").forEach(join);
    var first = cleanRoom((params.get("room") || "lobby").split(",")[0]);
    if (first) show(first);
  }

  if (!authURL) {
    start();
  } else {
    ui.nick.readOnly = true;
    ui.signinBackend.textContent = authURL;
    ui.signinNick.value = params.get("nick") ? nick : "";
    ui.status.dataset.state = "signin";
    ui.status.textContent = "not signed in";
    var signIn = function () {
      var value = cleanNick(ui.signinNick.value);
      if (!value) return;
      nick = value;
      storeNick(nick);
      ui.nick.value = nick;
      ui.signin.hidden = true;
      ui.status.dataset.state = "connecting";
      ui.status.textContent = "signing in…";
      start();
    };
    ui.signin.addEventListener("submit", function (event) {
      event.preventDefault();
      signIn();
    });
    if (params.get("nick")) signIn();
    else {
      ui.signin.hidden = false;
      ui.signinNick.focus();
    }
  }
})();
