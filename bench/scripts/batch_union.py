#!/usr/bin/env python3
"""How much batched decode shares expert reads on real routing: from a real trace (`route_trace
v1`, ../shared/traces), the distinct experts a decode step over B sequences needs per MoE layer,
against B x top-k for B separate steps. B sequences are B disjoint stretches of the trace's
decode tokens stepped side by side (the trace holds one generation; its stretches stand in for
concurrent requests). Without any cache this is the read volume per token relative to one
sequence; a cache changes both sides.

Usage: batch_union.py TRACE.csv [B ...]   (default B: 1 2 4 8)
"""
import collections
import sys

path = sys.argv[1]
sizes = [int(b) for b in sys.argv[2:]] or [1, 2, 4, 8]
steps = collections.defaultdict(lambda: collections.defaultdict(set))  # step -> layer -> experts
top_k = 0
for line in open(path):
    if line.startswith("#") or line.startswith("turn"):
        continue
    turn, phase, step, layer, slot, expert = line.split(",")[:6]
    if phase != "1":  # decode rows only
        continue
    steps[int(step)][int(layer)].add(int(expert))
    top_k = max(top_k, int(slot) + 1)
order = sorted(steps)
print(f"{path}: {len(order)} decode steps, top-{top_k}")
print("| sequences B | distinct experts per layer per step | reads per token vs B=1 |")
print("|---|---|---|")
base = None
for b in sizes:
    span = len(order) // b
    if span == 0:
        continue
    total, count = 0, 0
    for i in range(span):
        layers = collections.defaultdict(set)
        for s in range(b):
            for layer, experts in steps[order[s * span + i]].items():
                layers[layer] |= experts
        total += sum(len(e) for e in layers.values())
        count += len(layers)
    per_layer = total / count
    per_token = per_layer / b
    base = base or per_token
    print(f"| {b} | {per_layer:.2f} (of {b * top_k} chosen) | {per_token / base:.2f} |")
