#!/usr/bin/env python3
"""Anthropic's Messages API through `floe serve`, with the official `anthropic` package: a
plain answer (equal to the OpenAI endpoint's greedy answer), streamed text equal to it, the key
as `x-api-key`, forced tool use whose input validates, a tool_result round trip, errors in
Anthropic's shape.

Usage: anthropic_client.py BASE_URL KEY
"""
import json
import sys
import urllib.request

import anthropic

BASE, KEY = sys.argv[1], sys.argv[2]
client = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0, timeout=120)
failures = []
models = urllib.request.Request(BASE + "/v1/models", headers={"authorization": "Bearer " + KEY})
NAME = json.loads(urllib.request.urlopen(models).read())["data"][0]["id"]


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + "[messages] " + what, flush=True)
    if not cond:
        failures.append(what)


msgs = [{"role": "user", "content": "Hello there"}]
r = client.messages.create(model=NAME, max_tokens=12, messages=msgs, system="Be brief.", extra_body={"temperature": 0})
text = "".join(b.text for b in r.content if b.type == "text")
req = urllib.request.Request(BASE + "/v1/chat/completions", headers={"content-type": "application/json",
                             "authorization": "Bearer " + KEY},
                             data=json.dumps({"model": NAME, "messages": [{"role": "system", "content": "Be brief."}] + msgs,
                                              "max_tokens": 12, "temperature": 0}).encode())
want = json.loads(urllib.request.urlopen(req).read())["choices"][0]["message"]["content"]
check(text == want and r.stop_reason in ("max_tokens", "end_turn") and r.usage.output_tokens > 0,
      f"a plain answer equals the chat endpoint's ({text!r} vs {want!r}, {r.stop_reason})")
with client.messages.stream(model=NAME, max_tokens=12, messages=msgs, system="Be brief.", extra_body={"temperature": 0}) as s:
    streamed = "".join(s.text_stream)
    final = s.get_final_message()
check(streamed == want and final.stop_reason == r.stop_reason, f"streamed text equals it ({streamed!r})")

TOOLS = [{"name": "add", "description": "Add two numbers", "input_schema": {"type": "object",
          "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                         "b": {"type": "integer", "minimum": 0, "maximum": 99}}, "required": ["a", "b"]}}]
r = client.messages.create(model=NAME, max_tokens=300, messages=[{"role": "user", "content": "2 + 3?"}],
                           tools=TOOLS, tool_choice={"type": "any"}, extra_body={"temperature": 1})
uses = [b for b in r.content if b.type == "tool_use"]
ok = r.stop_reason == "tool_use" and uses and all(
    b.name == "add" and set(b.input) == {"a", "b"} and all(isinstance(b.input[k], int) for k in "ab") for b in uses)
check(ok, f"tool_choice any: tool_use blocks that validate ({[(b.name, b.input) for b in uses]}, {r.stop_reason})")
turn = [{"role": "user", "content": "2 + 3?"}, {"role": "assistant", "content": [b.model_dump() for b in r.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "5"}] if uses else "5"}]
r2 = client.messages.create(model=NAME, max_tokens=8, messages=turn, tools=TOOLS, extra_body={"temperature": 0})
check(r2.usage.input_tokens > 0, f"a tool_result round trip answers ({r2.stop_reason})")
with client.messages.stream(model=NAME, max_tokens=300, messages=[{"role": "user", "content": "2 + 3?"}],
                            tools=TOOLS, tool_choice={"type": "tool", "name": "add"}) as s:
    final = s.get_final_message()
uses = [b for b in final.content if b.type == "tool_use"]
check(final.stop_reason == "tool_use" and len(uses) >= 1 and set(uses[0].input) == {"a", "b"},
      f"streamed tool use assembles ({[(b.name, b.input) for b in uses]})")
try:
    client.messages.create(model=NAME, max_tokens=8, messages=msgs, extra_body={"top_k": 3, "mirostat": 1})
    check(False, "an unknown field refused")
except anthropic.BadRequestError as e:
    check("mirostat" in str(e) and e.body["type"] == "error", "an unknown field: 400 naming it, Anthropic's error shape")
try:
    anthropic.Anthropic(base_url=BASE, api_key="wrong", max_retries=0).messages.create(model=NAME, max_tokens=8, messages=msgs)
    check(False, "a wrong key refused")
except anthropic.AuthenticationError:
    check(True, "a wrong key: 401 authentication_error")
sys.exit(1 if failures else 0)
