// The lhttp admin page: polls /admin/api/cluster and draws what it says.
// Every name in the document (channels, nodes) is client- or operator-
// chosen text: it is only ever set as textContent, never as HTML.
"use strict";

const RATES = ["in", "out", "deliveries", "publishes"];
const SVG = "http://www.w3.org/2000/svg";
const API = new URL("api/cluster", document.baseURI).href;
const token = new URLSearchParams(location.hash.slice(1)).get("token");

let interval = 2;
let lastGood = 0;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function number(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (Math.abs(value) >= 1e6) return (value / 1e6).toFixed(1) + "M";
  if (Math.abs(value) >= 1e4) return (value / 1e3).toFixed(1) + "k";
  if (Number.isInteger(value)) return String(value);
  return value >= 100 ? value.toFixed(0) : value.toFixed(1);
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

// Draws series [[time, in, out, deliveries, publishes]...] as SVG lines.
function drawChart(box, points, span) {
  box.replaceChildren();
  if (points.length < 2) {
    box.append(el("div", {class: "empty"}, "collecting…"));
    return;
  }
  const end = points[points.length - 1][0];
  span = Math.min(span, Math.max(60, end - points[0][0]));
  const start = end - span;
  let top = 0;
  for (const point of points) for (let i = 1; i <= RATES.length; i++) top = Math.max(top, point[i]);
  top = niceMax(top);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 1000 100");
  svg.setAttribute("preserveAspectRatio", "none");
  for (const y of [25, 50, 75]) {
    const line = document.createElementNS(SVG, "line");
    Object.entries({x1: 0, x2: 1000, y1: y, y2: y, class: "grid"}).forEach(([k, v]) => line.setAttribute(k, v));
    svg.append(line);
  }
  RATES.forEach((name, index) => {
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", name);
    line.setAttribute("points", points
      .filter((p) => p[0] >= start)
      .map((p) => `${((p[0] - start) / span * 1000).toFixed(1)},${(100 - p[index + 1] / top * 100).toFixed(2)}`)
      .join(" "));
    svg.append(line);
  });
  box.append(svg, el("span", {class: "ymax"}, number(top) + "/s"));
}

// The cluster's rates: each node's series summed per heartbeat slot.
function clusterSeries(nodes) {
  const slots = new Map();
  for (const node of nodes) {
    for (const point of node.series || []) {
      const slot = Math.round(point[0] / interval);
      const sum = slots.get(slot) || [slot * interval, 0, 0, 0, 0];
      for (let i = 1; i <= RATES.length; i++) sum[i] += point[i];
      slots.set(slot, sum);
    }
  }
  return [...slots.values()].sort((a, b) => a[0] - b[0]);
}

function spanText(seconds) {
  return seconds < 90 ? `${Math.round(seconds || 0)} s` : `${Math.round(seconds / 60)} min`;
}

function figure(name, label, value, bad) {
  return el("div", {"data-figure": name},
    el("span", {class: "value" + (bad ? " bad" : "")}, number(value)),
    el("span", {class: "label"}, label));
}

function topTable(title, rows, key, unit) {
  const body = el("tbody");
  for (const row of rows || []) {
    body.append(el("tr", {}, el("td", {class: "channel"}, row.channel), el("td", {class: "num"}, number(row[key]) + unit)));
  }
  if (!body.children.length) body.append(el("tr", {}, el("td", {class: "muted", colspan: "2"}, "none")));
  return el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, title), el("th", {class: "num"}, key))), body);
}

function stateList(node) {
  const list = el("dl", {class: "state"});
  const add = (term, text) => list.append(el("dt", {}, term), el("dd", {}, text));
  const broker = node.broker || {};
  add("broker", `${broker.kind || "?"}${broker.connected ? " · " + broker.connected : ""}` +
      (broker.reconnects ? ` · ${broker.reconnects} reconnects` : ""));
  const history = broker.history;
  if (history) {
    const parts = [history.stream ? `stream ${history.stream}` : "in memory",
                   history.ready === false ? "NOT READY" : "ready"];
    if (history.delivered !== undefined) parts.push(`${history.delivered} delivered`);
    if (history.unfilled) parts.push(`${history.unfilled} gaps unfilled`);
    add("history", parts.join(" · "));
  } else add("history", "off");
  const presence = node.presence;
  if (presence) {
    const parts = [presence.kind, presence.bucket ? `bucket ${presence.bucket}` : null,
                   presence.ready === false ? "NOT READY" : "ready"];
    if (presence.written !== undefined) parts.push(`${presence.written} written`);
    if (presence.failed) parts.push(`${presence.failed} failed`);
    if (presence.problem) parts.push(presence.problem);
    add("presence", parts.filter((p) => p).join(" · "));
  } else add("presence", "off");
  if (node.listen && node.listen.length) add("listen", node.listen.join(", "));
  return list;
}

function nodeCard(node, span) {
  const rates = node.rates || {};
  const recent = node.recent || {};
  const chart = el("div", {class: "chart"});
  const card = el("article", {class: "node", "data-node": node.node},
    el("header", {},
      el("h3", {}, node.name || node.node, node.self ? el("span", {class: "muted"}, " · this node") : ""),
      el("span", {class: "badge " + (node.ready ? "ready" : "unready")}, node.ready ? "ready" : "not ready")),
    el("div", {class: "muted age"}, node.self ? "serving this page" : `heard ${node.age.toFixed(1)} s ago`),
    el("div", {class: "figures"},
      figure("connections", "connections", node.connections),
      figure("subscriptions", "subscriptions", node.subscriptions),
      figure("channels", "channels", node.channels),
      figure("deliveries", "deliveries /s", rates.deliveries),
      figure("in", "in /s", rates.in),
      figure("out", "out /s", rates.out),
      figure("slow", `slow closed, ${spanText(recent.seconds)}`, recent.slowConsumerCloses, recent.slowConsumerCloses > 0),
      figure("errors", `error replies, ${spanText(recent.seconds)}`, recent.errors, recent.errors > 0)),
    chart,
    el("div", {class: "tops"},
      topTable("busiest channels", node.topByRate, "rate", "/s"),
      topTable("most subscribers", node.topBySubscribers, "subscribers", "")),
    stateList(node));
  drawChart(chart, node.series || [], span);
  return card;
}

function show(doc) {
  interval = doc.interval || 2;
  // The nodes keep five minutes of rates.
  const span = 300;
  const totals = doc.totals;
  const set = (id, value) => { document.getElementById(id).textContent = number(value); };
  set("total-nodes", totals.nodes);
  set("total-connections", totals.connections);
  set("total-subscriptions", totals.subscriptions);
  set("total-in", totals.rates.in);
  set("total-out", totals.rates.out);
  set("total-deliveries", totals.rates.deliveries);
  set("total-slow", totals.slowConsumerCloses);
  set("total-errors", totals.errors);
  const series = clusterSeries(doc.nodes);
  drawChart(document.getElementById("cluster-chart"), series, span);
  const covered = series.length > 1 ? series[series.length - 1][0] - series[0][0] : 0;
  document.getElementById("window").textContent = `(last ${spanText(Math.min(300, Math.max(60, covered)))})`;
  document.getElementById("nodes").replaceChildren(...doc.nodes.map((node) => nodeCard(node, span)));
  document.title = `lhttp · ${totals.nodes} node${totals.nodes === 1 ? "" : "s"}`;
}

function status(text, down) {
  const line = document.getElementById("status");
  line.textContent = text;
  line.classList.toggle("down", Boolean(down));
}

async function poll() {
  try {
    const response = await fetch(API, {cache: "no-store", headers: token ? {authorization: "Bearer " + token} : {}});
    if (!response.ok) {
      let detail = "";
      try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
      throw new Error(`${response.status} ${detail || response.statusText}`);
    }
    const doc = await response.json();
    show(doc);
    lastGood = Date.now();
    status(`live · ${doc.cluster ? "cluster over NATS" : "one node, no NATS"} · updated ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    const since = lastGood ? ` (last answer ${Math.round((Date.now() - lastGood) / 1000)} s ago)` : "";
    status(`this node does not answer: ${error.message}${since}`, true);
  }
  setTimeout(poll, interval * 1000);
}

poll();
