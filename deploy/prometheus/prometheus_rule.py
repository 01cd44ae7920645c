#!/usr/bin/env python3
"""Writes deploy/k8s/monitoring/prometheus-rule.yaml, the Prometheus
operator's PrometheusRule holding the groups of deploy/prometheus/alerts.yml
(one source for both). Run after editing alerts.yml:

    python3 deploy/prometheus/prometheus_rule.py           # rewrite
    python3 deploy/prometheus/prometheus_rule.py --check   # exit 1 if stale
"""
import argparse
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "alerts.yml")
TARGET = os.path.join(HERE, "..", "k8s", "monitoring", "prometheus-rule.yaml")

HEADER = """\
# Written by deploy/prometheus/prometheus_rule.py from deploy/prometheus/alerts.yml:
# edit that file and run the script. The Prometheus operator loads this rule
# if its ruleSelector matches the labels below (kube-prometheus-stack: add
# the label `release: <your Helm release>`).
"""


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(source=SOURCE):
    with open(source) as f:
        rules = yaml.safe_load(f)
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "memshare",
            "labels": {"app.kubernetes.io/name": "memshare"},
        },
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.dump(rule, Dumper=_Dumper, sort_keys=False, width=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render()
    if args.check:
        try:
            with open(TARGET) as f:
                same = f.read() == text
        except FileNotFoundError:
            same = False
        if not same:
            print("stale: run python3 deploy/prometheus/prometheus_rule.py", file=sys.stderr)
            return 1
        return 0
    with open(TARGET, "w") as f:
        f.write(text)
    print("wrote", os.path.relpath(TARGET))
    return 0


if __name__ == "__main__":
    sys.exit(main())
