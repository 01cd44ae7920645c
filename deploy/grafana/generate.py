#!/usr/bin/env python3
"""Writes the Grafana dashboards of deploy/grafana/dashboards/ from the panel
lists below, so every panel has the same shape and the PromQL lives in one
reviewed place. Run after editing: python3 deploy/grafana/generate.py

Every expression here is evaluated against a live router, workers and
Prometheus by tests/deploy (the test reads the JSON files, not this script).
"""
import json
import os

DS = {"type": "prometheus", "uid": "${datasource}"}
W = 'job="memshare-worker"'
R = 'job="memshare-router"'


def q(h, expr):
    return f'histogram_quantile({h}, sum by (le) (rate({expr}[$__rate_interval])))'


SERVING = ("memshare-serving", "MemShare / Serving overview", [
    ("Output tokens/s", "tokens/s", [
        ("generated", f'sum(rate(memshare_generation_tokens_total{{{R}}}[$__rate_interval]))'),
        ("prompt", f'sum(rate(memshare_prompt_tokens_total{{{R}}}[$__rate_interval]))')]),
    ("Requests/s by status", "reqps", [
        ("{{status}}", f'sum by (status) (rate(memshare_requests_total{{{R}}}[$__rate_interval]))')]),
    ("Time to first token", "s", [
        ("p50", q(0.5, f'memshare_time_to_first_token_seconds_bucket{{{R}}}')),
        ("p90", q(0.9, f'memshare_time_to_first_token_seconds_bucket{{{R}}}')),
        ("p99", q(0.99, f'memshare_time_to_first_token_seconds_bucket{{{R}}}'))]),
    ("Inter-token latency", "s", [
        ("p50", q(0.5, f'memshare_inter_token_latency_seconds_bucket{{{R}}}')),
        ("p90", q(0.9, f'memshare_inter_token_latency_seconds_bucket{{{R}}}')),
        ("p99", q(0.99, f'memshare_inter_token_latency_seconds_bucket{{{R}}}'))]),
    ("End-to-end latency", "s", [
        ("p50", q(0.5, f'memshare_e2e_request_latency_seconds_bucket{{{R}}}')),
        ("p90", q(0.9, f'memshare_e2e_request_latency_seconds_bucket{{{R}}}')),
        ("p99", q(0.99, f'memshare_e2e_request_latency_seconds_bucket{{{R}}}'))]),
    ("Running and waiting requests", "short", [
        ("running {{instance}}", f'sum by (instance) (memshare_requests_running{{{W}}})'),
        ("waiting {{instance}}", f'sum by (instance) (memshare_requests_waiting{{{W}}})')]),
    ("Error ratio", "percentunit", [
        ("errors", f'sum(rate(memshare_requests_total{{{R}, status!~"ok|cancelled"}}[$__rate_interval])) / '
                   f'clamp_min(sum(rate(memshare_requests_total{{{R}}}[$__rate_interval])), 1e-9)')]),
    ("Step time by phase (p90)", "s", [
        ("{{phase}}", f'histogram_quantile(0.9, sum by (le, phase) '
                      f'(rate(memshare_step_duration_seconds_bucket{{{W}}}[$__rate_interval])))')]),
])

KV = ("memshare-kv", "MemShare / KV memory and sharing", [
    ("Physical vs logical KV blocks", "short", [
        ("physical (used)", f'sum(memshare_kv_blocks_used{{{W}}})'),
        ("logical (without sharing)", f'sum(memshare_kv_blocks_logical{{{W}}})'),
        ("pool total", f'sum(memshare_kv_blocks_total{{{W}}})')]),
    ("Shared blocks", "short", [
        ("{{instance}}", f'sum by (instance) (memshare_kv_blocks_shared{{{W}}})')]),
    ("Memory saved by sharing", "bytes", [
        ("{{instance}}", f'sum by (instance) (memshare_kv_bytes_saved{{{W}}})')]),
    ("Saved share of logical blocks", "percentunit", [
        ("saved", f'1 - sum(memshare_kv_blocks_used{{{W}}}) / clamp_min(sum(memshare_kv_blocks_logical{{{W}}}), 1)')]),
    ("Dedup funnel (pairs/s)", "ops", [
        ("candidates", f'sum(rate(memshare_dedup_candidates_total{{{W}}}[$__rate_interval]))'),
        ("verified", f'sum(rate(memshare_dedup_verified_total{{{W}}}[$__rate_interval]))'),
        ("rejected", f'sum(rate(memshare_dedup_rejected_total{{{W}}}[$__rate_interval]))'),
        ("remapped", f'sum(rate(memshare_dedup_remapped_blocks_total{{{W}}}[$__rate_interval]))')]),
    ("KV usage", "percentunit", [
        ("{{instance}}", f'max by (instance) (memshare_kv_usage_ratio{{{W}}})')]),
    ("Prefix-cache hit ratio", "percentunit", [
        ("hits / queries", f'sum(rate(memshare_prefix_cache_hits_total{{{W}}}[$__rate_interval])) / '
                           f'clamp_min(sum(rate(memshare_prefix_cache_queries_total{{{W}}}[$__rate_interval])), 1e-9)')]),
    ("Preemptions/s", "ops", [
        ("{{instance}}", f'sum by (instance) (rate(memshare_preemptions_total{{{W}}}[$__rate_interval]))')]),
])

ROUTER = ("memshare-router", "MemShare / Router", [
    ("Routed requests/s per worker", "reqps", [
        ("{{worker}}", f'sum by (worker) (rate(memshare_router_routed_requests_total{{{R}}}[$__rate_interval]))')]),
    ("Retries/s", "ops", [
        ("retries", f'sum(rate(memshare_router_retries_total{{{R}}}[$__rate_interval]))')]),
    ("Worker health (1 = routed to)", "short", [
        ("{{worker}}", f'max by (worker) (memshare_router_worker_healthy{{{R}}})')]),
    ("Client latency p50 / p99", "s", [
        ("e2e p50", q(0.5, f'memshare_e2e_request_latency_seconds_bucket{{{R}}}')),
        ("e2e p99", q(0.99, f'memshare_e2e_request_latency_seconds_bucket{{{R}}}')),
        ("ttft p99", q(0.99, f'memshare_time_to_first_token_seconds_bucket{{{R}}}'))]),
    ("Requests/s by status", "reqps", [
        ("{{status}}", f'sum by (status) (rate(memshare_requests_total{{{R}}}[$__rate_interval]))')]),
    ("Worker KV usage as the router sees it", "percentunit", [
        ("{{worker}}", f'max by (worker) (memshare_router_worker_kv_usage_ratio{{{R}}})')]),
])


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
        "templating": {"list": [{
            "name": "datasource", "type": "datasource", "query": "prometheus",
            "label": "Prometheus", "current": {}, "hide": 0}]},
        "panels": out,
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for uid, title, panels in (SERVING, KV, ROUTER):
        path = os.path.join(here, "dashboards", uid + ".json")
        with open(path, "w") as f:
            json.dump(dashboard(uid, title, panels), f, indent=2)
            f.write("\n")
        print("wrote", os.path.relpath(path))


if __name__ == "__main__":
    main()
