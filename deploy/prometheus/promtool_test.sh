#!/bin/bash
# promtool (Debian's `prometheus` package) on the shipped files: the scrape
# configuration (which loads alerts.yml), the rules, and the rule unit tests.
set -euo pipefail
command -v promtool >/dev/null || {
  echo "promtool not found: install Debian's prometheus package (scripts/install-deps.sh)" >&2
  exit 1
}
dir=deploy/prometheus
promtool check config "$dir/prometheus.yml"
promtool check rules "$dir/alerts.yml"
promtool test rules "$dir/alerts_test.yml"
echo "promtool: config, rules and rule unit tests pass"
