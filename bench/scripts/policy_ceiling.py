#!/usr/bin/env python3
"""How close can an eviction policy that only knows the past get to Belady on a route trace?

Replays the decode rows of a `route_trace v1` CSV (../shared/traces), or the rows of a floe
`--trace-out` JSON-lines trace (decode rows, or every row with `--phase all`), with unit-size
slabs, the way `floe sim` does (a layer's whole routing is pinned while it runs), at 5, 10 and
25 % of the experts or at the slots given with `--slots N`, through:

  lru        the reference;
  static     keeps the experts with the largest count over the WHOLE trace (it knows the future
             popularity of every expert exactly);
  hindsight  evicts the resident with the largest expected distance to its next use, where the
             chance of use at its layer's next visit is looked up by (log2 visits since last
             use, the expert's true whole-trace count / 4), with the probabilities fitted on the
             whole trace first: recency and popularity known perfectly, in hindsight;
  belady     the offline optimum.

`static` and `hindsight` are not online policies: they bound from above what any policy built on
popularity and recency can reach. Standard library only.

Each policy's hit ratio, its share of Belady's, and its misses (slab reads) over Belady's.

usage: policy_ceiling.py [--phase decode|all] [--slots N] TRACE [TRACE ...]
"""
import collections
import heapq
import json
import math
import sys


def load_jsonl(path, phase):
    lines = open(path)
    head = json.loads(next(lines))
    hdr = {"n_layer": head["layers"], "n_expert": head["experts"]}
    groups = []
    for line in lines:
        if line.strip():
            row = json.loads(line)
            if phase == "all" or row["phase"] == "decode":
                groups.append((row["layer"], row["experts"]))
    return groups, hdr


def load(path, phase="decode"):
    if path.endswith(".jsonl"):
        return load_jsonl(path, phase)
    rows, hdr = [], {}
    for line in open(path):
        if line.startswith("#"):
            for tok in line[1:].split():
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    hdr.setdefault(k, v)
            continue
        if line.startswith("turn"):
            continue
        turn, phase, step, layer, slot, expert = line.strip().split(",")[:6]
        if phase == "1":
            rows.append((int(turn), int(step), int(layer), int(slot), int(expert)))
    rows.sort()
    groups = collections.OrderedDict()
    for turn, step, layer, _slot, expert in rows:
        groups.setdefault((turn, step, layer), []).append(expert)
    return [(layer, experts) for (_t, _s, layer), experts in groups.items()], hdr


def belady(keys, cap):
    nxt, last = [0] * len(keys), {}
    for i in range(len(keys) - 1, -1, -1):
        nxt[i] = last.get(keys[i], math.inf)
        last[keys[i]] = i
    res, heap, hits = {}, [], 0
    for i, k in enumerate(keys):
        if k in res:
            hits += 1
        elif len(res) >= cap:
            while True:
                nu, kk = heapq.heappop(heap)
                if res.get(kk) == -nu:
                    del res[kk]
                    break
        res[k] = nxt[i]
        heapq.heappush(heap, (-nxt[i], k))
    return hits / len(keys)


def replay(groups, cap, n_layer, n_expert, score, learn=None):
    """score(key, layer_now, visits) -> larger is evicted first; learn(layer, chosen, visits)."""
    res, hits, n = set(), 0, 0
    visits = [0] * n_layer
    for layer, chosen in groups:
        pinned = {(layer, e) for e in chosen}
        for e in chosen:
            k, n = (layer, e), n + 1
            if k in res:
                hits += 1
                continue
            if len(res) >= cap:
                res.remove(max((r for r in res if r not in pinned), key=lambda r: score(r, layer, visits)))
            res.add(k)
        if learn:
            learn(layer, chosen, visits)
        visits[layer] += 1
    return hits / n


class Hindsight:
    def __init__(self, true_count, n_layer, n_expert, fitted=None):
        self.tc, self.L, self.E = true_count, n_layer, n_expert
        self.last, self.fitted = {}, fitted
        self.hit, self.obs = collections.Counter(), collections.Counter()

    def cls(self, k, visits):
        age = visits[k[0]] - self.last[k] if k in self.last else None
        return (min(7, int(math.log2(age))) if age else 8, min(15, self.tc[k] // 4))

    def score(self, k, layer, visits):
        h, o = self.fitted
        p = (h[self.cls(k, visits)] + 0.5) / (o[self.cls(k, visits)] + 1)
        ahead = (k[0] - layer) % self.L or self.L
        return ahead + self.L * (1 - p) / p

    def learn(self, layer, chosen, visits):
        for e in range(self.E):
            c = self.cls((layer, e), visits)
            self.obs[c] += 1
            self.hit[c] += e in chosen
        for e in chosen:
            self.last[(layer, e)] = visits[layer] + 1


def main(args):
    phase, slots, paths = "decode", None, []
    it = iter(args)
    for a in it:
        if a == "--phase":
            phase = next(it)
        elif a == "--slots":
            slots = int(next(it))
        else:
            paths.append(a)
    print("| trace | capacity | lru | static | hindsight | belady | lru / belady | static / belady "
          "| hindsight / belady | reads / Belady's: lru, static, hindsight |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        groups, hdr = load(path, phase)
        L, E = int(hdr["n_layer"]), int(hdr["n_expert"])
        keys = [(layer, e) for layer, chosen in groups for e in chosen]
        tc = collections.Counter(keys)
        caps = [(f"{slots} slots", slots)] if slots else [
            (f"{f:.0%}", math.floor(L * E * f)) for f in (0.05, 0.10, 0.25)]
        for label, cap in caps:
            b = belady(keys, cap)
            stamp = {}

            def lru_score(k, layer, visits):
                return -stamp.get(k, -1)

            def lru_learn(layer, chosen, visits):
                for e in chosen:
                    stamp[(layer, e)] = len(stamp) + sum(visits)

            lru = replay(groups, cap, L, E, lru_score, lru_learn)
            static = replay(groups, cap, L, E, lambda k, layer, v: -tc[k])
            first = Hindsight(tc, L, E)
            replay(groups, cap, L, E, lambda k, layer, v: 0, first.learn)
            second = Hindsight(tc, L, E, (first.hit, first.obs))
            hind = replay(groups, cap, L, E, second.score, second.learn)
            name = path.rsplit("/", 1)[-1]
            reads = ", ".join(f"{(1 - h) / (1 - b):.2f}x" for h in (lru, static, hind))
            print(f"| {name} | {label} | {lru:.3f} | {static:.3f} | {hind:.3f} | {b:.3f} "
                  f"| {lru / b:.0%} | {static / b:.0%} | {hind / b:.0%} | {reads} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
