#!/usr/bin/env python3
"""Summarizes an Nsight Compute CSV of decode steps (bench/run_decode_profile_device.sh).

Reads `ncu --csv --metrics gpu__time_duration.sum --print-units base` output for
the kernels of --steps decode steps and prints, per kernel name, how many
launches a step has and how long they take, with the sum over a step. The sum is
of kernels timed one at a time (ncu serializes them), so the graph's step time
minus this sum is what the launches, gaps and overlaps between kernels cost.

    decode_profile_summary.py PROFILE.csv --steps N [--step_ms MS]
"""
import argparse
import collections
import csv
import re
import sys


def short_name(name: str) -> str:
    """Kernel name without template arguments and parameters."""
    name = re.sub(r"\(.*$", "", name)
    depth, out = 0, []
    for ch in name:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    name = "".join(out).strip()
    return name.split("::")[-1] or name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--steps", type=int, required=True, help="decode steps in the profile")
    ap.add_argument("--step_ms", type=float, default=0.0,
                    help="the graph-timed step, for the line 'not in kernels'")
    a = ap.parse_args()
    if a.steps < 1:
        sys.exit("--steps: at least 1")
    rows = []
    with open(a.csv, newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # ncu's own log lines start with ==
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(r["Metric Value"].replace(",", ""))
        unit = r.get("Metric Unit", "ns")
        ns = value * {"ns": 1, "nsecond": 1, "us": 1e3, "usecond": 1e3, "ms": 1e6,
                      "msecond": 1e6}.get(unit, 1)
        rows.append((short_name(r["Kernel Name"]), r.get("Grid Size", ""), ns))
    if not rows:
        sys.exit(f"{a.csv}: no gpu__time_duration.sum rows")
    by = collections.OrderedDict()
    for name, grid, ns in rows:
        e = by.setdefault(name, [0, 0.0, set()])
        e[0] += 1
        e[1] += ns
        e[2].add(grid)
    total_us = sum(ns for _, _, ns in rows) / 1e3 / a.steps
    print(f"{len(rows) / a.steps:.0f} kernels a step, {total_us:.1f} us of kernel time a step")
    print(f"{'kernel':<44} {'per step':>8} {'us/step':>9} {'us each':>8} {'share':>6}  grids")
    for name, (n, ns, grids) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        us = ns / 1e3 / a.steps
        print(f"{name[:44]:<44} {n / a.steps:8.1f} {us:9.1f} {ns / 1e3 / n:8.2f} "
              f"{us / total_us:6.1%}  {' '.join(sorted(grids))[:60]}")
    if a.step_ms > 0:
        print(f"graph-timed step {a.step_ms * 1e3:.1f} us; not in kernels (launches, gaps, "
              f"minus overlap): {a.step_ms * 1e3 - total_us:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
