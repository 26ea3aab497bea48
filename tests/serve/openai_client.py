#!/usr/bin/env python3
"""Drives a running `floe serve` with the official `openai` package and checks it against
`floe run` (greedy, the same model): chat and completions, streamed and not; 8 concurrent
clients each get exactly their single-request text; the error cases; a bounded load test
(200 requests from 8 clients) with no errors and the server's RSS back within 5 % of where it
started; and the chat page in headless Chromium.

Usage: openai_client.py FLOE_BINARY MODEL_DIR BASE_URL SERVER_PID
"""
import concurrent.futures as cf
import html
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import openai

FLOE, MODEL, BASE, PID = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = openai.OpenAI(base_url=BASE + "/v1", api_key="unused", max_retries=0, timeout=120)
NAME = client.models.list().data[0].id
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def floe_run(prompt, n, chat):
    args = [FLOE, "run", "--model", MODEL, "-p", prompt, "-n", str(n), "--temperature", "0", "--json"]
    if chat:
        args.append("--chat")
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["text"]


def chat(prompt, n, stream=False):
    msgs = [{"role": "user", "content": prompt}]
    if not stream:
        r = client.chat.completions.create(model=NAME, messages=msgs, max_tokens=n, temperature=0)
        return r.choices[0].message.content, r.choices[0].finish_reason, r.usage
    text, finish = "", None
    for chunk in client.chat.completions.create(
        model=NAME, messages=msgs, max_tokens=n, temperature=0, stream=True
    ):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish, None


def complete(prompt, n, stream=False):
    if not stream:
        r = client.completions.create(model=NAME, prompt=prompt, max_tokens=n, temperature=0)
        return r.choices[0].text, r.choices[0].finish_reason
    text, finish = "", None
    for chunk in client.completions.create(model=NAME, prompt=prompt, max_tokens=n, temperature=0, stream=True):
        text += chunk.choices[0].text
        finish = chunk.choices[0].finish_reason or finish
    return text, finish


def rss_kib():
    with open(f"/proc/{PID}/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS:")).split()[1])


# 1. Chat and completions, streamed and not, equal `floe run` greedy.
N = 16
want_chat = floe_run("Tell me about the sea", N, chat=True)
for stream in (False, True):
    text, finish, usage = chat("Tell me about the sea", N, stream)
    check(text == want_chat, f"chat stream={stream} equals floe run --chat ({text!r} vs {want_chat!r})")
    check(finish == "length", f"chat stream={stream} finish_reason length ({finish})")
    if usage:
        check(usage.completion_tokens == N and usage.prompt_tokens > 0, f"chat usage {usage}")
want_cmpl = floe_run("Once upon a time", N, chat=False)
for stream in (False, True):
    text, finish = complete("Once upon a time", N, stream)
    check(text == want_cmpl, f"completions stream={stream} equals floe run ({text!r} vs {want_cmpl!r})")

# 2. Eight concurrent clients, each with its own prompt, get exactly their single-request text.
prompts = [f"question {i}: what of the {'old ' * i}house" for i in range(8)]
refs = [floe_run(p, 8 + i, chat=True) for i, p in enumerate(prompts)]
with cf.ThreadPoolExecutor(8) as pool:
    got = list(pool.map(lambda ip: chat(ip[1], 8 + ip[0], stream=ip[0] % 2 == 1)[0], enumerate(prompts)))
for i, (g, w) in enumerate(zip(got, refs)):
    check(g == w, f"concurrent client {i} equals its single request")

# 3. Error cases: OpenAI-style bodies and codes.
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    check(False, "unknown model refused")
except openai.NotFoundError as e:
    check(e.status_code == 404 and e.code == "model_not_found", f"unknown model: 404 model_not_found ({e.code})")
try:
    client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "x " * 5000}], max_tokens=4)
    check(False, "a prompt past the context refused")
except openai.BadRequestError as e:
    check(e.status_code == 400 and e.code == "context_length_exceeded", f"prompt past the context: 400 {e.code}")
try:
    client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "x"}], temperature=7)
    check(False, "temperature 7 refused")
except openai.BadRequestError as e:
    check(e.status_code == 400 and "temperature" in str(e), "bad temperature: 400")
req = urllib.request.Request(BASE + "/v1/chat/completions", data=b"{not json", headers={"content-type": "application/json"})
try:
    urllib.request.urlopen(req)
    check(False, "malformed JSON refused")
except urllib.error.HTTPError as e:
    body = json.loads(e.read())
    check(e.code == 400 and "error" in body and body["error"]["message"], "malformed JSON: 400 with an error body")

# 3b. Structured output and sampling parameters, as agents and apps use them.
from typing import List, Literal

import pydantic


class Pet(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=10)
    legs: int = pydantic.Field(ge=0, le=8)
    colors: List[Literal["black", "white", "brown"]] = pydantic.Field(max_length=3)


msgs = [{"role": "user", "content": "Describe a pet"}]
for seed in range(3):
    r = client.beta.chat.completions.parse(model=NAME, messages=msgs, response_format=Pet, temperature=1,
                                           seed=seed, max_tokens=200)
    pet = r.choices[0].message.parsed
    check(isinstance(pet, Pet), f"chat.completions.parse returns a Pet (seed {seed}: {r.choices[0].message.content!r})")
# Any JSON object: every answer that ends by itself parses as one (a random model may also
# write one long string until max_tokens, so some must end, and all that end must parse).
ended = 0
for seed in range(8):
    r = client.chat.completions.create(model=NAME, messages=msgs, response_format={"type": "json_object"},
                                       temperature=1, seed=seed, max_tokens=120)
    if r.choices[0].finish_reason == "stop":
        ended += 1
        text = r.choices[0].message.content
        try:
            ok = isinstance(json.loads(text), dict)
        except ValueError:
            ok = False
        check(ok, f"json_object answer {seed} is a JSON object ({text!r})")
check(ended >= 2, f"json_object answers that ended by themselves: {ended} of 8")
r = client.chat.completions.create(model=NAME, messages=msgs, temperature=0, max_tokens=8, logprobs=True, top_logprobs=2)
lp = r.choices[0].logprobs.content
check(len(lp) == r.usage.completion_tokens and all(e.top_logprobs[0].logprob == e.logprob for e in lp),
      "logprobs: one per token, the greedy token is the top one")
draws = [client.completions.create(model=NAME, prompt="Once", temperature=1, max_tokens=16).choices[0].text for _ in range(2)]
check(draws[0] != draws[1], "two unseeded requests at temperature 1 differ")
draws = [client.completions.create(model=NAME, prompt="Once", temperature=1, max_tokens=16, seed=4).choices[0].text for _ in range(2)]
check(draws[0] == draws[1], "two seeded requests agree")
usage_chunks = [c for c in client.chat.completions.create(model=NAME, messages=msgs, max_tokens=4, stream=True,
                                                          stream_options={"include_usage": True}) if not c.choices]
check(len(usage_chunks) == 1 and usage_chunks[0].usage.completion_tokens == 4, "include_usage: one final chunk with usage")
try:
    client.chat.completions.create(model=NAME, messages=msgs, max_tokens=4, extra_body={"mirostat": 2})
    check(False, "an unknown parameter refused")
except openai.BadRequestError as e:
    check("mirostat" in str(e), "an unknown parameter: 400 naming it")

# 4. Load: 200 requests from 8 clients, no errors, RSS back within 5 % of where it started
# (measured after one warm-up round, which sizes the buffers and fills the kept sessions).
def one(i):
    p = f"load {i % 13}: tell me about {'the ' * (i % 7)}ships"
    if i % 3 == 0:
        return complete(p, 4 + i % 9, stream=i % 2 == 0)[0]
    return chat(p, 4 + i % 9, stream=i % 2 == 0)[0]


with cf.ThreadPoolExecutor(8) as pool:
    list(pool.map(one, range(16)))
time.sleep(0.5)
start = rss_kib()
errors = 0
t0 = time.time()
with cf.ThreadPoolExecutor(8) as pool:
    for f in cf.as_completed([pool.submit(one, i) for i in range(200)]):
        try:
            f.result()
        except Exception as e:  # noqa: BLE001 - every failure counts
            errors += 1
            print("load error:", e)
secs = time.time() - t0
time.sleep(0.5)
end = rss_kib()
check(errors == 0, f"200 requests from 8 clients in {secs:.1f} s without an error ({errors})")
check(abs(end - start) <= 0.05 * start, f"RSS {start} KiB before, {end} KiB after ({100 * (end - start) / start:+.1f} %)")
metrics = urllib.request.urlopen(BASE + "/metrics").read().decode()
passes = float(re.search(r"^floe_decode_passes_total (\S+)", metrics, re.M).group(1))
tokens = float(re.search(r"^floe_decode_batch_tokens_total (\S+)", metrics, re.M).group(1))
check(tokens > passes, f"decode passes ran several sequences at once (mean batch {tokens / passes:.2f})")

# 5. The chat page in headless Chromium: it streams the answer the API gives, and shows the
# live figures.
ask = "hello there"
want, _, _ = chat(ask, 12)
url = f"{BASE}/?ask={urllib.parse.quote(ask)}&max_tokens=12&temperature=0"
# Headless Chromium's virtual clock can run out before a slow stream ends (a loaded machine):
# up to three tries, each a fresh browser.
for attempt in range(3):
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=100000000", "--dump-dom", url],
        check=True, capture_output=True, text=True, timeout=180,
    ).stdout
    m = re.search(r'<div class="msg assistant" data-state="(\w+)"[^>]*>(.*?)</div>', dom, re.S)
    if m and m.group(1) == "done":
        break
    print(f"the page had not finished streaming on try {attempt + 1}", flush=True)
check(m is not None and m.group(1) == "done", f"the page finished streaming ({m.group(1) if m else 'no answer'})")
if m:
    check(html.unescape(m.group(2)) == want, f"the page shows the API's answer ({html.unescape(m.group(2))!r} vs {want!r})")
check('data-stats="loaded"' in dom, "the page loaded the live figures")
batch = re.search(r'<dd id="batch">([^<]*)</dd>', dom)
check(batch is not None and re.fullmatch(r"[0-9.]+", batch.group(1) or "") is not None, f"mean batch shown ({batch and batch.group(1)})")

if failures:
    print(f"{len(failures)} check(s) failed", file=sys.stderr)
    sys.exit(1)
print("all floe serve checks passed")
