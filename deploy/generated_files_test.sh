#!/bin/bash
# Fails when a generated file was edited by hand or its source changed
# without rerunning the generator.
set -euo pipefail
python3 deploy/grafana/generate.py --check
python3 deploy/prometheus/prometheus_rule.py --check
echo "generated files: up to date"
