#!/usr/bin/env python3
"""Tool calls through `floe serve` with a family's real chat template (the random model's
calls are forced with tool_choice, so they exist; their arguments must validate against the
tool schemas): the openai package streamed and not, a full round trip (call, tool result,
next turn), a named function, parallel_tool_calls false, and LangChain's bind_tools.

Usage: tools_client.py BASE_URL TEMPLATE_NAME
"""
import json
import sys

import openai

BASE, TEMPLATE = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=BASE + "/v1", api_key="unused", max_retries=0, timeout=120)
NAME = client.models.list().data[0].id
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + f"[{TEMPLATE}] " + what, flush=True)
    if not cond:
        failures.append(what)


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
     "parameters": {"type": "object", "properties": {
         "city": {"type": "string", "maxLength": 12}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
         "required": ["city", "days"]}}},
    {"type": "function", "function": {"name": "add", "description": "Add two numbers",
     "parameters": {"type": "object", "properties": {
         "a": {"type": "integer", "minimum": 0, "maximum": 99}, "b": {"type": "integer", "minimum": 0, "maximum": 99}},
         "required": ["a", "b"]}}},
]


def valid(name, args):
    """The schemas above, checked by hand."""
    try:
        a = json.loads(args)
    except ValueError:
        return False
    if name == "get_weather":
        return (set(a) == {"city", "days"} and isinstance(a["city"], str) and len(a["city"]) <= 12
                and isinstance(a["days"], int) and 1 <= a["days"] <= 7)
    if name == "add":
        return set(a) == {"a", "b"} and all(isinstance(a[k], int) and 0 <= a[k] <= 99 for k in "ab")
    return False


msgs = [{"role": "user", "content": "What is the weather in Paris, and 2 + 3?"}]
for seed in range(3):
    r = client.chat.completions.create(model=NAME, messages=msgs, tools=TOOLS, tool_choice="required",
                                       temperature=1, seed=seed, max_tokens=300)
    ch = r.choices[0]
    calls = ch.message.tool_calls or []
    check(ch.finish_reason == "tool_calls" and calls and all(valid(c.function.name, c.function.arguments) for c in calls),
          f"required: tool_calls that validate (seed {seed}: {[(c.function.name, c.function.arguments) for c in calls]}, {ch.finish_reason})")

# Streamed: the deltas assemble into the same kind of calls.
stream = client.chat.completions.create(model=NAME, messages=msgs, tools=TOOLS, tool_choice="required",
                                        temperature=1, seed=7, max_tokens=300, stream=True)
acc, finish = {}, None
for chunk in stream:
    if chunk.choices:
        d = chunk.choices[0].delta
        for t in d.tool_calls or []:
            e = acc.setdefault(t.index, {"name": "", "args": ""})
            e["name"] += (t.function.name or "") if t.function else ""
            e["args"] += (t.function.arguments or "") if t.function else ""
        finish = chunk.choices[0].finish_reason or finish
check(finish == "tool_calls" and acc and all(valid(e["name"], e["args"]) for e in acc.values()),
      f"streamed: delta.tool_calls assemble into valid calls ({acc}, {finish})")

# A named function, one call only.
r = client.chat.completions.create(model=NAME, messages=msgs, tools=TOOLS, parallel_tool_calls=False,
                                   tool_choice={"type": "function", "function": {"name": "add"}},
                                   temperature=1, seed=3, max_tokens=300)
calls = r.choices[0].message.tool_calls or []
check(len(calls) == 1 and calls[0].function.name == "add" and valid("add", calls[0].function.arguments),
      f"named function: one call of add ({[(c.function.name, c.function.arguments) for c in calls]})")

# Round trip: the assistant's call and the tool's result rendered back, then the next turn.
first = client.chat.completions.create(model=NAME, messages=msgs, tools=TOOLS, tool_choice="required",
                                       temperature=1, seed=1, max_tokens=300).choices[0].message
turn = msgs + [first.model_dump(exclude_none=True)] + [
    {"role": "tool", "tool_call_id": c.id, "content": json.dumps({"result": "sunny"})} for c in first.tool_calls]
r = client.chat.completions.create(model=NAME, messages=turn, tools=TOOLS, temperature=0, max_tokens=8)
check(r.choices[0].finish_reason in ("length", "stop", "tool_calls") and r.usage.prompt_tokens > 0,
      f"round trip: the next turn after tool results answers ({r.choices[0].finish_reason})")

# LangChain: bind_tools(...).invoke returns tool calls.
try:
    from langchain_openai import ChatOpenAI
    llm = ChatOpenAI(base_url=BASE + "/v1", api_key="unused", model=NAME, temperature=1, max_tokens=300,
                     max_retries=0, seed=5)
    out = llm.bind_tools(TOOLS, tool_choice="required").invoke("What is the weather in Paris?")
    check(len(out.tool_calls) >= 1 and all(valid(t["name"], json.dumps(t["args"])) for t in out.tool_calls),
          f"LangChain bind_tools(...).invoke returns tool calls ({out.tool_calls})")
except ImportError:
    check(False, "langchain-openai is installed")

sys.exit(1 if failures else 0)
