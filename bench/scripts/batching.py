#!/usr/bin/env python3
"""The batching table: aggregate decode tok/s and bytes read from SSD per generated token when
1, 2, 4 and 8 clients stream answers from one `floe serve` at once (each its own prompt, greedy,
max_tokens each). Starts the server itself on a free port. Decode figures cover the window from
the moment every client has its first token (the prompts are admitted together, in one prefill
pass) to the last token; the prefill is reported apart (seconds to the last first token, and
what it read).

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
import threading
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
ap.add_argument("--cache", default="lru")
a = ap.parse_args()

args = [a.floe, "serve", "--model", a.model, "--port", "0", "--cache", a.cache, "--ctx", str(a.ctx),
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


def ask(i, n, firsts, first_read):
    """Streams one answer; returns (tokens, time of the first token, time of the last)."""
    body = json.dumps({"prompt": f"Client {i} asks about the {i * 7 + 3} ships of the harbour",
                       "max_tokens": n, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(base + "/v1/completions", data=body, headers={"content-type": "application/json"})
    tokens, first, last = 0, None, None
    with urllib.request.urlopen(req, timeout=3600) as r:
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            now = time.time()
            if first is None:
                first = now
                with lock:
                    firsts.append(now)
                    if len(firsts) == expected[0]:
                        first_read.append(metric("read_bytes_total"))
            last = now
    return tokens, first, last


lock = threading.Lock()
expected = [0]


def round_of(clients, n, offset):
    read0, t0 = metric("read_bytes_total"), time.time()
    firsts, first_read = [], []
    expected[0] = clients
    with cf.ThreadPoolExecutor(clients) as pool:
        res = list(pool.map(lambda i: ask(offset + i, n, firsts, first_read), range(clients)))
    read_end = metric("read_bytes_total")
    start = max(r[1] for r in res)
    end = max(r[2] for r in res)
    # Tokens made after every client had its first (each client's first is not a decode token).
    decoded = sum(r[0] - 1 for r in res)
    assert decoded > 0, "no usage in the stream: the token counts come from it"
    return {
        "tok_s": decoded / (end - start),
        "mb_per_token": (read_end - first_read[0]) / decoded / 1e6,
        "prefill_s": start - t0,
        "prefill_gb": (first_read[0] - read0) / 1e9,
    }


counts = [int(c) for c in a.clients.split(",")]
results = {c: [] for c in counts}
try:
    round_of(2, 4, 1000)  # warm-up: the slab cache and the buffers
    for r in range(a.runs):
        order = counts if r % 2 == 0 else list(reversed(counts))
        for c in order:
            results[c].append(round_of(c, a.tokens, 100 * r + 10 * c))
finally:
    srv.terminate()
print("| clients | aggregate decode tok/s | per client | MB read per decoded token | prefill: s to every first token, GB read | runs (decode tok/s) |")
print("|---|---|---|---|---|---|")
for c in counts:
    runs = results[c]
    med = lambda k: statistics.median(x[k] for x in runs)
    each = " / ".join("%.2f" % x["tok_s"] for x in runs)
    print(f"| {c} | {med('tok_s'):.2f} | {med('tok_s') / c:.2f} | {med('mb_per_token'):.0f} | "
          f"{med('prefill_s'):.1f} s, {med('prefill_gb'):.1f} GB | {each} |")
