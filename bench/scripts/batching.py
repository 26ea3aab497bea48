#!/usr/bin/env python3
"""The batching table: aggregate decode tok/s and bytes read from SSD per generated token when
1, 2, 4 and 8 clients stream answers from one `floe serve` at once (each its own prompt, greedy,
ignoring nothing: max_tokens each). Starts the server itself on a free port.

Usage: batching.py FLOE_BINARY MODEL [--cache-mb MB] [--tokens N] [--clients 1,2,4,8] [--runs R]
Prints a Markdown table. Every client count runs R times (alternating orders), each after a
warm-up round, and the table gives the median run.
"""
import argparse
import concurrent.futures as cf
import json
import re
import statistics
import subprocess
import time
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("floe")
ap.add_argument("model")
ap.add_argument("--cache-mb", type=int, default=None)
ap.add_argument("--tokens", type=int, default=32)
ap.add_argument("--clients", default="1,2,4,8")
ap.add_argument("--runs", type=int, default=2)
ap.add_argument("--ctx", type=int, default=512)
a = ap.parse_args()

args = [a.floe, "serve", "--model", a.model, "--port", "0", "--cache", "lru", "--ctx", str(a.ctx),
        "--keep-sessions", "0"]
if a.cache_mb:
    args += ["--cache-mb", str(a.cache_mb)]
srv = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
base = None
for line in srv.stderr:
    m = re.search(r"listening on (http://\S+)", line)
    if m:
        base = m.group(1)
        break
assert base, "the server did not start"


def metric(name):
    text = urllib.request.urlopen(base + "/metrics").read().decode()
    return float(re.search(rf"^floe_{name} (\S+)", text, re.M).group(1))


def ask(i, n):
    body = json.dumps({"prompt": f"Client {i} asks about the {i * 7 + 3} ships of the harbour",
                       "max_tokens": n, "temperature": 0}).encode()
    req = urllib.request.Request(base + "/v1/completions", data=body, headers={"content-type": "application/json"})
    r = json.loads(urllib.request.urlopen(req, timeout=3600).read())
    return r["usage"]["completion_tokens"]


def round_of(clients, n, offset):
    read0, t0 = metric("read_bytes_total"), time.time()
    with cf.ThreadPoolExecutor(clients) as pool:
        tokens = sum(pool.map(lambda i: ask(offset + i, n), range(clients)))
    secs = time.time() - t0
    read = metric("read_bytes_total") - read0
    return tokens / secs, read / tokens, tokens


counts = [int(c) for c in a.clients.split(",")]
results = {c: [] for c in counts}
round_of(2, 8, 1000)  # warm-up: the slab cache and the buffers
for r in range(a.runs):
    order = counts if r % 2 == 0 else list(reversed(counts))
    for c in order:
        results[c].append(round_of(c, a.tokens, 100 * r + 10 * c))
srv.terminate()
print(f"| clients | aggregate tok/s | per-client tok/s | MB read per token | runs (tok/s) |")
print(f"|---|---|---|---|---|")
for c in counts:
    runs = results[c]
    tps = statistics.median(x[0] for x in runs)
    mb = statistics.median(x[1] for x in runs) / 1e6
    print(f"| {c} | {tps:.2f} | {tps / c:.2f} | {mb:.1f} | {' / '.join(f'{x[0]:.2f}' for x in runs)} |")
