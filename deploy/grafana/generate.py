#!/usr/bin/env python3
"""Writes the Grafana dashboards of deploy/grafana/dashboards/ from the panel
lists below, so every panel has the same shape and the PromQL lives in one
reviewed place. Run after editing:

    python3 deploy/grafana/generate.py           # rewrites dashboards/*.json
    python3 deploy/grafana/generate.py --check   # exit 1 if the JSON is stale

Metric names: common/serving_metrics.h (router and workers) and
router/router_metrics.h (router only). Jobs: `memshare-router` and
`memshare-worker`, as deploy/prometheus/prometheus.yml and the
ServiceMonitors of deploy/k8s/monitoring/ name them.

Every expression is evaluated against a live router, two workers and a real
Prometheus by //tests/deploy:prometheus_test, which reads the JSON files
(with $__rate_interval and $namespace substituted), not this script.
"""
import argparse
import json
import os
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace=~"$namespace"'
W = f'job="memshare-worker", {NS}'
R = f'job="memshare-router", {NS}'
RATE = "[$__rate_interval]"


def quantile(qv, metric, sel, by="le"):
    return f"histogram_quantile({qv}, sum by ({by}) (rate({metric}_bucket{{{sel}}}{RATE})))"


def percentiles(metric, sel):
    return [(f"p{int(qv * 100)}", quantile(qv, metric, sel)) for qv in (0.5, 0.9, 0.99)]


# (title, unit, [(legend, expr), ...]) per panel, two panels a row.
SERVING = ("memshare-serving", "MemShare / Serving overview", [
    ("Tokens/s (router)", "short", [
        ("generated", f"sum(rate(memshare_generation_tokens_total{{{R}}}{RATE}))"),
        ("prompt", f"sum(rate(memshare_prompt_tokens_total{{{R}}}{RATE}))")]),
    ("Requests/s by status (router)", "reqps", [
        ("{{status}}", f"sum by (status) (rate(memshare_requests_total{{{R}}}{RATE}))")]),
    ("Time to first token (router)", "s",
     percentiles("memshare_time_to_first_token_seconds", R)),
    ("Inter-token latency (router)", "s",
     percentiles("memshare_inter_token_latency_seconds", R)),
    ("End-to-end latency (router)", "s",
     percentiles("memshare_e2e_request_latency_seconds", R)),
    ("Running and queued requests", "short", [
        ("running {{instance}}", f"sum by (instance) (memshare_requests_running{{{W}}})"),
        ("queued in engine {{instance}}", f"sum by (instance) (memshare_requests_waiting{{{W}}})"),
        ("queued in router", f"sum(memshare_router_queue_depth{{{R}}})")]),
    ("Error ratio (router; not ok, not cancelled)", "percentunit", [
        ("errors", f'sum(rate(memshare_requests_total{{{R}, status!~"ok|cancelled"}}{RATE})) / '
                   f"clamp_min(sum(rate(memshare_requests_total{{{R}}}{RATE})), 1e-9)")]),
    ("Engine step time by phase (p90)", "s", [
        ("{{phase}}", quantile(0.9, "memshare_step_duration_seconds", W, by="le, phase"))]),
])

KV = ("memshare-kv", "MemShare / KV memory and sharing", [
    ("Physical vs logical KV blocks", "short", [
        ("physical (used)", f"sum(memshare_kv_blocks_used{{{W}}})"),
        ("logical (block-table entries)", f"sum(memshare_kv_blocks_logical{{{W}}})"),
        ("pool total", f"sum(memshare_kv_blocks_total{{{W}}})")]),
    ("Shared physical blocks", "short", [
        ("{{instance}}", f"sum by (instance) (memshare_kv_blocks_shared{{{W}}})")]),
    ("KV memory saved by sharing", "bytes", [
        ("{{instance}}", f"sum by (instance) (memshare_kv_bytes_saved{{{W}}})")]),
    ("Logical blocks without their own physical block", "percentunit", [
        ("saved", f"clamp_min(sum(memshare_kv_blocks_logical{{{W}}}) - sum(memshare_kv_blocks_used{{{W}}}), 0)"
                  f" / clamp_min(sum(memshare_kv_blocks_logical{{{W}}}), 1)")]),
    ("Dedup funnel: candidates > verified > remapped (pairs/s)", "ops", [
        ("candidates", f"sum(rate(memshare_dedup_candidates_total{{{W}}}{RATE}))"),
        ("verified", f"sum(rate(memshare_dedup_verified_total{{{W}}}{RATE}))"),
        ("rejected", f"sum(rate(memshare_dedup_rejected_total{{{W}}}{RATE}))"),
        ("remapped", f"sum(rate(memshare_dedup_remapped_blocks_total{{{W}}}{RATE}))")]),
    ("KV usage (physical used / total)", "percentunit", [
        ("{{instance}}", f"max by (instance) (memshare_kv_usage_ratio{{{W}}})")]),
    ("Prefix-cache hit ratio", "percentunit", [
        ("hits / queries", f"sum(rate(memshare_prefix_cache_hits_total{{{W}}}{RATE})) / "
                           f"clamp_min(sum(rate(memshare_prefix_cache_queries_total{{{W}}}{RATE})), 1e-9)")]),
    ("Preemptions/s", "ops", [
        ("{{instance}}", f"sum by (instance) (rate(memshare_preemptions_total{{{W}}}{RATE}))")]),
])

ROUTER = ("memshare-router", "MemShare / Router", [
    ("Requests routed to each worker (attempts/s)", "reqps", [
        ("{{worker}}", f"sum by (worker) (rate(memshare_router_routed_requests_total{{{R}}}{RATE}))")]),
    ("Generated tokens/s per worker", "short", [
        ("{{instance}}", f"sum by (instance) (rate(memshare_generation_tokens_total{{{W}}}{RATE}))")]),
    ("Time to first token per worker (p99)", "s", [
        ("{{instance}}", quantile(0.99, "memshare_time_to_first_token_seconds", W, by="le, instance"))]),
    ("End-to-end latency per worker (p99)", "s", [
        ("{{instance}}", quantile(0.99, "memshare_e2e_request_latency_seconds", W, by="le, instance"))]),
    ("Retries/s by reason", "ops", [
        ("{{reason}}", f"sum by (reason) (rate(memshare_router_retries_total{{{R}}}{RATE}))")]),
    ("Worker health as the router sees it (1 = routed to)", "short", [
        ("{{worker}}", f"min by (worker) (memshare_router_worker_healthy{{{R}}})")]),
    ("Rejected at the router (req/s by reason)", "reqps", [
        ("{{reason}}", f"sum by (reason) (rate(memshare_router_rejected_requests_total{{{R}}}{RATE}))")]),
    ("Router queue and requests in flight", "short", [
        ("queued", f"sum(memshare_router_queue_depth{{{R}}})"),
        ("in flight", f"sum(memshare_router_in_flight_requests{{{R}}})")]),
    ("Scrape targets up", "short", [
        ("{{job}}", f'sum by (job) (up{{job=~"memshare-router|memshare-worker", {NS}}})')]),
    ("Client latency (router): e2e p50 / p99, TTFT p99", "s", [
        ("e2e p50", quantile(0.5, "memshare_e2e_request_latency_seconds", R)),
        ("e2e p99", quantile(0.99, "memshare_e2e_request_latency_seconds", R)),
        ("ttft p99", quantile(0.99, "memshare_time_to_first_token_seconds", R))]),
])

DASHBOARDS = (SERVING, KV, ROUTER)


def dashboard(uid, title, panels):
    out = []
    for i, (ptitle, unit, targets) in enumerate(panels):
        out.append({
            "id": i + 1,
            "type": "timeseries",
            "title": ptitle,
            "datasource": DS,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [{"refId": chr(ord("A") + j), "datasource": DS, "expr": expr,
                         "legendFormat": legend} for j, (legend, expr) in enumerate(targets)],
        })
    return {
        "uid": uid,
        "title": title,
        "tags": ["memshare"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus",
             "label": "Prometheus", "current": {}, "hide": 0},
            # Deployments in several namespaces: pick one or all. Series
            # without a namespace label (a Prometheus outside Kubernetes)
            # match "All" (.*).
            {"name": "namespace", "type": "query", "label": "Namespace", "datasource": DS,
             "query": {"query": 'label_values(up{job=~"memshare-router|memshare-worker"}, namespace)',
                       "refId": "namespace"},
             "definition": 'label_values(up{job=~"memshare-router|memshare-worker"}, namespace)',
             "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
             "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "hide": 0,
             "sort": 1},
        ]},
        "panels": out,
    }


def render(uid, title, panels):
    return json.dumps(dashboard(uid, title, panels), indent=2) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the files instead of writing them")
    parser.add_argument("--dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "dashboards"))
    args = parser.parse_args()
    stale = []
    for uid, title, panels in DASHBOARDS:
        path = os.path.join(args.dir, uid + ".json")
        text = render(uid, title, panels)
        if args.check:
            try:
                with open(path) as f:
                    if f.read() != text:
                        stale.append(path)
            except FileNotFoundError:
                stale.append(path)
            continue
        with open(path, "w") as f:
            f.write(text)
        print("wrote", os.path.relpath(path))
    if stale:
        print("stale (run python3 deploy/grafana/generate.py):", *stale, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
