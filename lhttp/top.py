"""
C{lhttp top}: the admin page's figures in a terminal, for an operator over
SSH. L{snapshot} turns the JSON of C{/admin/api/cluster}
(L{lhttp.roster.Roster.document}) into lines of text; the command
(L{lhttp.cli}) fetches it every few seconds and prints them.
"""

from urllib.parse import urlsplit, urlunsplit

API = "admin/api/cluster"
COLUMNS = (
    ("NODE", "<", 22), ("READY", "<", 5), ("CONNS", ">", 7), ("SUBS", ">", 7),
    ("CHANS", ">", 6), ("IN/s", ">", 8), ("OUT/s", ">", 8), ("DELIV/s", ">", 9),
    ("SLOW", ">", 5), ("ERRS", ">", 5), ("HEARD", ">", 6),
)


def clusterURL(url):
    """
    @param url: the admin port's URL, as the operator typed it:
        C{http://127.0.0.1:9101}, C{.../admin/} or the JSON's own URL.
    @return: the URL of the JSON.
    """
    if "://" not in url:
        url = "http://" + url
    scheme, netloc, path, query, fragment = urlsplit(url)
    path = path.rstrip("/")
    if path.endswith("/admin/api/cluster"):
        pass
    elif path.endswith("/admin"):
        path += "/api/cluster"
    else:
        path += "/" + API
    return urlunsplit((scheme, netloc, path, query, ""))


def rate(value):
    """
    @return: a rate, short: C{0}, C{2.5}, C{120}, C{12.3k}.
    """
    value = float(value or 0)
    if value >= 10000:
        return f"{value / 1000:.1f}k"
    if value >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.1f}"


def _row(values):
    cells = []
    for (title, align, width), value in zip(COLUMNS, values):
        text = str(value)
        if len(text) > width:
            text = text[:width - 1] + "…"
        cells.append(f"{text:{align}{width}}")
    return " ".join(cells).rstrip()


def _merged(nodes, key, field):
    """
    The busiest channels across the nodes: each node's figure of a
    channel summed.
    """
    totals = {}
    for node in nodes:
        for entry in node.get(key) or ():
            channel = entry.get("channel")
            if isinstance(channel, str):
                totals[channel] = totals.get(channel, 0) + (entry.get(field) or 0)
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:5]


def _state(node, safe):
    broker = node.get("broker") or {}
    history = broker.get("history")
    presence = node.get("presence")
    parts = []
    if history is not None:
        where = f"stream {history['stream']}" if history.get("stream") else "in memory"
        parts.append(f"history {safe(where)} {'ready' if history.get('ready', True) else 'NOT READY'}")
    if presence is not None:
        where = f"bucket {presence['bucket']}" if presence.get("bucket") else presence.get("kind", "")
        text = f"presence {safe(str(where))} {'ready' if presence.get('ready', True) else 'NOT READY'}"
        if presence.get("problem"):
            text += f" ({safe(str(presence['problem']))})"
        parts.append(text)
    return ", ".join(parts)


def snapshot(document, url, safe=str):
    """
    @param document: the JSON of C{/admin/api/cluster}.
    @param url: where it came from, for the title line.
    @param safe: makes a text from the node (a channel name, say) safe to
        print: L{lhttp.cli.terminalSafe}.
    @return: the lines to print.
    """
    totals = document["totals"]
    nodes = document["nodes"]
    rates = totals["rates"]
    minutes = max((node.get("recent", {}).get("seconds") or 0 for node in nodes), default=0) / 60
    lines = [
        f"lhttp {safe(url)}: {totals['nodes']} node{'s' if totals['nodes'] != 1 else ''}"
        f"{' (cluster)' if document.get('cluster') else ' (no NATS)'}, "
        f"{totals['connections']} connections, {totals['subscriptions']} subscriptions; "
        f"in {rate(rates['in'])}/s, out {rate(rates['out'])}/s, "
        f"deliveries {rate(rates['deliveries'])}/s; last {minutes:.0f} min: "
        f"{totals['slowConsumerCloses']} slow consumers closed, {totals['errors']} error replies",
        "",
        _row(title for title, align, width in COLUMNS),
    ]
    for node in nodes:
        nodeRates = node.get("rates") or {}
        recent = node.get("recent") or {}
        lines.append(_row([
            safe(str(node.get("name") or node.get("node"))) + (" *" if node.get("self") else ""),
            "yes" if node.get("ready") else "NO",
            node.get("connections", 0), node.get("subscriptions", 0), node.get("channels", 0),
            rate(nodeRates.get("in")), rate(nodeRates.get("out")),
            rate(nodeRates.get("deliveries")),
            recent.get("slowConsumerCloses", 0), recent.get("errors", 0),
            "self" if node.get("self") else f"{float(node.get('age') or 0):.1f}s",
        ]))
    lines.append("")
    busiest = _merged(nodes, "topByRate", "rate")
    lines.append("busiest channels: " + (", ".join(
        f"{safe(channel)} {rate(value)}/s" for channel, value in busiest) or "none"))
    crowded = _merged(nodes, "topBySubscribers", "subscribers")
    lines.append("most subscribers: " + (", ".join(
        f"{safe(channel)} {value}" for channel, value in crowded) or "none"))
    for node in nodes:
        state = _state(node, safe)
        if state:
            lines.append(f"{safe(str(node.get('name') or node.get('node')))}: {state}")
    # Whatever else the document held (it is the answer of whatever URL
    # was given) cannot act on the terminal either.
    return [safe(line) for line in lines]
