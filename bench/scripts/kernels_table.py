#!/usr/bin/env python3
"""The kernels bench's results as a table: per type, matvec GB/s on one thread and on every
thread beside the plain memory read of the same bytes (one thread), with the ratios, from
criterion's latest estimates (target/criterion/kernels_<shape>/...).

  FLOE_BENCH_SHAPES=small cargo bench -p floe-bench --bench kernels -- kernels/2048x768
  python3 bench/scripts/kernels_table.py 2048x768
"""
import json, os, sys

shape = sys.argv[1] if len(sys.argv) > 1 else "2048x768"
root = os.path.join(os.path.dirname(__file__), "..", "..", "target", "criterion", f"kernels_{shape}")
if not os.path.isdir(root):
    root = os.path.join("target", "criterion", f"kernels_{shape}")


def gbps(d):
    est = os.path.join(root, d, "new", "estimates.json")
    bench = os.path.join(root, d, "new", "benchmark.json")
    if not os.path.exists(est):
        return None
    t = json.load(open(est))["mean"]["point_estimate"]  # ns
    b = json.load(open(bench))["throughput"]["Bytes"]
    return b / t


print(f"| type | 1 thread GB/s | all threads GB/s | memory read GB/s | 1t / read | all / read |")
print("|---|---|---|---|---|---|")
for ty in sorted({d.rsplit("_", 1)[0] for d in os.listdir(root) if d.endswith(("_1t", "_all", "_memread"))}):
    one, allt, mem = gbps(f"{ty}_1t"), gbps(f"{ty}_all"), gbps(f"{ty}_memread")
    if None in (one, allt, mem):
        continue
    print(f"| {ty} | {one:.2f} | {allt:.2f} | {mem:.2f} | {one/mem:.2f} | {allt/mem:.2f} |")
