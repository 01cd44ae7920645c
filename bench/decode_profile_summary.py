#!/usr/bin/env python3
"""Summarizes an Nsight Compute CSV of decode steps (bench/run_decode_profile_device.sh).

Reads `ncu --csv --metrics gpu__time_duration.sum --print-units base` output for
the kernels of --steps decode steps and prints, per kernel (name with template
arguments, and grid: the same instantiation serves several GEMMs), how many
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
    """Kernel name with its template arguments, without namespaces, return
    type and parameters: "SkinnyGemmKernel<8, 1>". ncu writes an anonymous
    namespace as "unnamed>::" (sic) or "(anonymous namespace)::"."""
    name = re.sub(r"\(anonymous namespace\)::|<?unnamed>::", "", name)
    name = re.sub(r"^void ", "", name)
    depth, end = 0, len(name)
    for i, ch in enumerate(name):  # the parameter list: the first "(" outside <>
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            end = i
            break
    name = name[:end].strip()
    depth, last = 0, 0
    for i, ch in enumerate(name):  # drop namespaces outside the template arguments
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0 and name.startswith("::", i):
            last = i + 2
    return name[last:] or name


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
        e = by.setdefault((name, grid), [0, 0.0])
        e[0] += 1
        e[1] += ns
    total_us = sum(ns for _, _, ns in rows) / 1e3 / a.steps
    print(f"{len(rows) / a.steps:.0f} kernels a step, {total_us:.1f} us of kernel time a step")
    print(f"{'kernel':<44} {'grid':<14} {'per step':>8} {'us/step':>9} {'us each':>8} "
          f"{'share':>6}")
    for (name, grid), (n, ns) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        us = ns / 1e3 / a.steps
        print(f"{name[:44]:<44} {grid[:14]:<14} {n / a.steps:8.1f} {us:9.1f} "
              f"{ns / 1e3 / n:8.2f} {us / total_us:6.1%}")
    if a.step_ms > 0:
        print(f"graph-timed step {a.step_ms * 1e3:.1f} us; not in kernels (launches, gaps, "
              f"minus overlap): {a.step_ms * 1e3 - total_us:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
