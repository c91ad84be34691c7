"""
What authentication and channel permissions cost, measured in one run
against a control: fan-out deliveries/s with them on and off, and
handshakes/s (WebSocket opening plus the C{connect} round trip) for each
way a connection proves who it is.

    python bench/auth.py                       # about a minute on 2 CPUs
    python bench/auth.py --repeat 5 --handshakes 2000
    python bench/auth.py --only handshakes

It starts everything itself on free loopback ports, with a scratch folder
for the keys, and reads nothing outside this repository:

- B{off}: C{twistd -n lhttp}, no auth, no rules (the control);
- B{hs256}: C{--auth-jwt-secret-file} and C{--channel 'bench=sub:users,pub:users'};
- B{rs256}: C{--auth-jwt-public-key} (a 2048-bit RSA key) and the same rule;
- B{proxy}: C{--auth-proxy} to a local backend (a small asyncio HTTP
  server in its own process answering C{{"user": "bench"}}), same rule.

B{Throughput}: C{bench/loadgen.py} with C{--shape} (100 subscribers x 1,000
messages), off and hs256 interleaved (off, on, off, on...), every
connection of the on runs authenticated (C{-token}) and every subscribe and
publish checked against the rule. C{on/off} is the median over the repeats
of each on run's deliveries/s divided by the off run's just before it; the
target is C{>= 0.95}. Each run also gives the node's own CPU time
(C{node_cpu_ms}, from C{/proc}, in 10 ms ticks), and the summary the
medians of both: steadier than deliveries/s on a shared machine.

B{Handshakes}: C{--handshakes} connections per method, 32 at a time, each
timed from the TCP connect to the node's C{connect} reply
(C{status:200}); the control (off) is timed to the WebSocket upgrade, as
there is nothing to prove. Every connection must succeed.

Output: one C{run ...} line per throughput run, then C{auth_throughput
...} and one C{auth_handshakes method=... per_s=...} line per method, as
C{key=value} fields. It exits 1 if a delivery was missing or duplicated, a
handshake failed, or a run failed.
"""

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import WebSocketClient, clientFrame, connect  # noqa: E402
from bench.cluster_history import cpuSeconds  # noqa: E402
from bench.run import (  # noqa: E402
    Servers, findDriver, freePort, measure, median, number, raiseOpenFilesLimit,
)

RULE = "bench=sub:users,pub:users"
USER = "bench"
CONCURRENCY = 32


def keys(folder):
    """
    Write an HMAC secret and an RSA key pair into C{folder}.

    @return: C{(secretFile, publicKeyFile, hsToken, rsToken)}.
    """
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    secret = "bench-secret-of-at-least-32-bytes!!"
    secretFile = folder / "secret"
    secretFile.write_text(secret)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    publicFile = folder / "public.pem"
    publicFile.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    claims = {"sub": USER, "exp": int(time.time()) + 3600}
    return (secretFile, publicFile, jwt.encode(claims, secret, algorithm="HS256"),
            jwt.encode(claims, private, algorithm="RS256"))


def proxyBackend(port):
    """
    The connect proxy's backend: answers every POST with the user, over
    keep-alive HTTP/1.1 (C{--proxy-backend PORT}: a process of its own).
    """
    body = json.dumps({"user": USER}).encode()
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
              % len(body)) + body

    class Backend(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.buffer = transport, b""

        def data_received(self, data):
            self.buffer += data
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buffer[:end].lower()
                length = 0
                at = head.find(b"content-length:")
                if at >= 0:
                    length = int(head[at + 15:].split(b"\r\n", 1)[0])
                if len(self.buffer) < end + 4 + length:
                    return
                self.buffer = self.buffer[end + 4 + length:]
                self.transport.write(answer)

    async def main():
        server = await asyncio.get_running_loop().create_server(Backend, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


class Handshake(WebSocketClient):
    """
    A connection that notes when the node's first message (the C{connect}
    reply) arrives.
    """

    def __init__(self, host, path):
        super().__init__(host, path)
        self.replied = asyncio.get_running_loop().create_future()

    def message(self, data, start, end):
        if not self.replied.done():
            self.replied.set_result(bytes(data[start:end]))

    def connection_lost(self, exc):
        super().connection_lost(exc)
        if not self.replied.done():
            self.replied.set_exception(ConnectionError("closed before the connect reply"))


async def handshakes(url, count, token=None, reply=True):
    """
    Open C{count} connections, C{CONCURRENCY} at a time, each timed to
    the node's C{connect} reply (C{status:200}).

    @param token: sent in a C{connect} first; L{None} sends nothing (the
        connect proxy answers by itself once the connection opens).
    @param reply: wait for the reply; L{False} times the upgrade only.
    @return: C{(connections per second, failures)}.
    """
    gate = asyncio.Semaphore(CONCURRENCY)
    failures = 0
    clients = []

    async def one():
        nonlocal failures
        async with gate:
            try:
                client = await connect(url, asyncio.Semaphore(1), protocol=Handshake)
                clients.append(client)
                if token is not None:
                    client.transport.write(
                        clientFrame(b"LHTTP/1.0 connect\r\ntoken:" + token.encode() + b"\r\n\r\n"))
                if not reply:
                    return
                answer = await asyncio.wait_for(client.replied, 20)
            except Exception:
                failures += 1
                return
            if b"\r\nstatus:200\r\n" not in answer:
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    elapsed = time.perf_counter() - started
    for client in clients:
        client.replied.cancel()
        client.transport.abort()
    return count / elapsed, failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--only", choices=["throughput", "handshakes"], action="append")
    add("--shape", default="-subs 100 -msgs 1000", help="loadgen shape for throughput")
    add("--repeat", type=int, default=3, help="off/on pairs (default 3)")
    add("--handshakes", type=int, default=1000, help="connections per method (default 1000)")
    add("--driver", default=None, help="a load driver instead of bench/loadgen.py")
    add("--timeout", type=float, default=300)
    add("--proxy-backend", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.proxy_backend:
        proxyBackend(args.proxy_backend)
        return
    parts = args.only or ["throughput", "handshakes"]
    raiseOpenFilesLimit()
    failed = False
    with tempfile.TemporaryDirectory(prefix="lhttp-bench-auth-") as scratch:
        scratch = Path(scratch)
        secretFile, publicFile, hsToken, rsToken = keys(scratch)
        servers = Servers(scratch)
        try:
            rule = ("--channel", RULE)
            off = servers.node("off")
            hs = servers.node("hs256", "--auth-jwt-secret-file", str(secretFile), *rule)
            if "throughput" in parts:
                driver = findDriver("loadgen", args.driver, [], scratch)
                runs = {"off": [], "on": []}
                for run in range(args.repeat):
                    for mode, node, extra in (("off", off, ""), ("on", hs, f" -token {hsToken}")):
                        before = cpuSeconds(node.process.pid)
                        fields = measure(driver, args.shape + extra, node.url, None, args.timeout)
                        # The node's own CPU for the run (connections,
                        # subscribes, fan-out), steadier than deliveries/s
                        # on a shared machine; in 10 ms ticks.
                        fields["node_cpu_ms"] = f"{(cpuSeconds(node.process.pid) - before) * 1000:.0f}"
                        runs[mode].append(fields)
                        shown = " ".join(f"{k}={v}" for k, v in fields.items()
                                         if k in ("delivered", "deliveries_per_s", "p50_ms", "p99_ms",
                                                  "missing", "duplicates", "elapsed_s", "node_cpu_ms"))
                        print(f"run auth={mode} run={run + 1} {shown}", flush=True)
                pairs = [number(on, "deliveries_per_s") / number(before, "deliveries_per_s")
                         for on, before in zip(runs["on"], runs["off"])
                         if number(on, "deliveries_per_s") and number(before, "deliveries_per_s")]
                ratio = median(pairs)
                cpu = {mode: median(number(f, "node_cpu_ms") for f in runs[mode]) for mode in runs}
                missing = sum(int(number(f, "missing") or 0) + (f.get("lost") == "true")
                              for f in runs["off"] + runs["on"])
                duplicates = sum(int(number(f, "duplicates") or 0) for f in runs["off"] + runs["on"])
                print(f"auth_throughput shape={args.shape!r} "
                      f"off_deliveries_per_s={median(number(f, 'deliveries_per_s') for f in runs['off']) or 0:.0f} "
                      f"on_deliveries_per_s={median(number(f, 'deliveries_per_s') for f in runs['on']) or 0:.0f} "
                      f"pairs={','.join(f'{p:.2f}' for p in pairs) or '?'} "
                      f"on_off={'?' if ratio is None else f'{ratio:.2f}'} target='>= 0.95' "
                      f"ok={ratio is not None and ratio >= 0.95} missing={missing} duplicates={duplicates} "
                      f"node_cpu_ms_off={cpu['off'] or 0:.0f} node_cpu_ms_on={cpu['on'] or 0:.0f}",
                      flush=True)
                failed |= bool(missing or duplicates or ratio is None)
            if "handshakes" in parts:
                rs = servers.node("rs256", "--auth-jwt-public-key", str(publicFile), *rule)
                port = freePort()
                servers.start("backend", [sys.executable, __file__, "--proxy-backend", str(port)], port)
                proxy = servers.node("proxy", "--auth-proxy", f"http://127.0.0.1:{port}/auth", *rule)
                for method, node, token in (("none", off, None), ("hs256", hs, hsToken),
                                            ("rs256", rs, rsToken), ("proxy", proxy, None)):
                    # The proxy node asks the backend when a connection
                    # opens: its connect reply comes without a message.
                    rate, failures = asyncio.run(
                        handshakes(node.url, args.handshakes, token, reply=method != "none"))
                    print(f"auth_handshakes method={method} connections={args.handshakes} "
                          f"per_s={rate:.0f} failures={failures}", flush=True)
                    failed |= bool(failures)
        finally:
            servers.stopAll()
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
