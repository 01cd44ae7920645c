"""Structural checks of deploy/k8s/ as `kubectl kustomize` renders it, against
the binaries as they are (their --help is parsed here, so a renamed or removed
flag fails this test):

- every overlay and deploy/k8s/monitoring render;
- every container: resource requests, gRPC readiness and liveness probes on
  its gRPC port (and a startup probe on workers), a non-root security
  context without privilege escalation, capabilities or a writable root;
- every flag in container args and in the flag files of the ConfigMaps they
  read (--flagfile) is a flag of that binary; the ports in --address,
  --http_address and --metrics_address are the container's named ports;
  terminationGracePeriodSeconds exceeds --drain_timeout (by at most a minute);
- Services select pods and name ports those pods have; the router's
  --workers_dns names a headless worker Service; StatefulSets are governed by
  a headless Service that publishes not-ready pods, start their pods in
  parallel and are covered by a PodDisruptionBudget;
- tensor-parallel groups: world size = replicas, rank = pod index, leader =
  <group>-0.<service>:<grpc port>, the group label = the StatefulSet's name,
  only rank 0 behind the router's Service;
- the ServiceMonitors select the Services deploy/prometheus/prometheus.yml
  scrapes, under the job names the dashboards and rules use, and the
  PrometheusRule carries exactly deploy/prometheus/alerts.yml.

Run by //deploy/k8s:manifests_test (needs kubectl with kustomize v4+).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

ROOT = os.getcwd()  # the runfiles tree of the workspace
K8S = os.path.join(ROOT, "deploy", "k8s")
ROUTER_BIN = os.path.join(ROOT, "router", "memshare_router")
WORKER_BIN = os.path.join(ROOT, "engine", "server", "memshare_worker")

OVERLAYS = {
    # overlay: (tensor-parallel size, GPU)
    "cpu-demo": (1, False),
    "gpu-tp1": (1, True),
    "gpu-tp2": (2, True),
    "gpu-tp4": (4, True),
}

# Flags of absl itself that --help does not list.
ABSL_FLAGS = {"flagfile", "fromenv", "tryfromenv", "undefok"}

POD_INDEX = "apps.kubernetes.io/pod-index"


def help_flags(binary):
    """name -> default (as --help prints it) of every flag the binary lists."""
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    flags = {}
    # Each flag starts a line "    --name (description...); default: value;".
    starts = list(re.finditer(r"^\s+--([a-z0-9_]+) \(", text, re.MULTILINE))
    for i, m in enumerate(starts):
        chunk = text[m.end():starts[i + 1].start() if i + 1 < len(starts) else len(text)]
        d = re.search(r"\);\s+default: (.*?);\s*$", chunk, re.MULTILINE | re.DOTALL)
        flags[m.group(1)] = d.group(1).strip().strip('"') if d else None
    if not flags:
        raise AssertionError(f"no flags parsed from {binary} --help:\n{text}")
    return flags


def duration_seconds(text):
    """'30s', '5m', '1m30s', '500ms' -> seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"([0-9.]+)(ms|us|ns|h|m|s)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(a) * units[b] for a, b in parts)


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def render(path):
    """Renders a kustomization from a copy of deploy/k8s (runfiles are
    symlinks, which kustomize's load restrictor refuses to follow)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise AssertionError("kubectl not found: scripts/install-deps.sh installs it")
    version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True)
    m = re.search(r"Kustomize Version: v(\d+)", version.stdout)
    if m and int(m.group(1)) < 4:
        raise AssertionError(f"kubectl's kustomize v{m.group(1)} predates components and labels: "
                             "install kubectl 1.27 or newer")
    tmp = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
    copy = os.path.join(tmp, "k8s")
    shutil.copytree(K8S, copy, symlinks=False)
    env = dict(os.environ)
    env.setdefault("HOME", tmp)
    out = subprocess.run([kubectl, "kustomize", os.path.join(copy, path)], capture_output=True,
                         text=True, env=env, timeout=120)
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def selects(selector, labels):
    """Whether a Service/PDB selector matches pod template labels (the pod
    index label is added to pods by the StatefulSet controller)."""
    return all(labels.get(k) == v or (k == POD_INDEX and v == "0") for k, v in selector.items())


class Container:
    """A container with its pod and workload, flags resolved."""

    def __init__(self, workload, container, configmaps):
        self.workload = workload
        self.pod = workload["spec"]["template"]
        self.spec = container
        self.name = container["name"]
        self.env = {e["name"]: e for e in container.get("env", [])}
        self.flags = {}  # name -> value (last wins, as absl does)
        self.flag_sources = {}
        for arg in container.get("args", []):
            self._add_flag(arg, "args")
            m = re.match(r"--flagfile=(.*)", arg)
            if m:
                for line in self._read_flagfile(m.group(1), configmaps).splitlines():
                    line = line.strip()
                    if line and not line.startswith("#"):
                        self._add_flag(line, m.group(1))

    def _add_flag(self, arg, source):
        m = re.fullmatch(r"--([a-z0-9_]+)(?:=(.*))?", arg, re.DOTALL)
        if not m:
            raise AssertionError(f"{self}: not a --flag: {arg!r} ({source})")
        self.flags[m.group(1)] = self.expand(m.group(2) or "")
        self.flag_sources[m.group(1)] = source

    def expand(self, value):
        """$(VAR) -> the env value, or <VAR> when it comes from a fieldRef."""
        def sub(m):
            e = self.env.get(m.group(1))
            if e is None:
                raise AssertionError(f"{self}: $({m.group(1)}) is not in env")
            return e["value"] if "value" in e else f"<{m.group(1)}>"
        return re.sub(r"\$\(([A-Z0-9_]+)\)", sub, value)

    def _read_flagfile(self, path, configmaps):
        for mount in self.spec.get("volumeMounts", []):
            if path.startswith(mount["mountPath"].rstrip("/") + "/"):
                volume = next(v for v in self.pod["spec"]["volumes"] if v["name"] == mount["name"])
                if "configMap" not in volume:
                    raise AssertionError(f"{self}: {path} is not on a ConfigMap volume")
                cm = configmaps.get(volume["configMap"]["name"])
                if cm is None:
                    raise AssertionError(f"{self}: ConfigMap {volume['configMap']['name']} "
                                         "is not rendered")
                key = path[len(mount["mountPath"].rstrip("/")) + 1:]
                if key not in cm["data"]:
                    raise AssertionError(f"{self}: {key} is not in ConfigMap {cm['metadata']['name']}")
                return cm["data"][key]
        raise AssertionError(f"{self}: --flagfile={path} is not on a mounted volume")

    def port(self, name):
        for p in self.spec.get("ports", []):
            if p["name"] == name:
                return p["containerPort"]
        return None

    def __str__(self):
        return f"{self.workload['kind']}/{self.workload['metadata']['name']}/{self.name}"


class ManifestsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.router_flags = help_flags(ROUTER_BIN)
        cls.worker_flags = help_flags(WORKER_BIN)
        cls.renders = {name: render(os.path.join("overlays", name)) for name in OVERLAYS}
        cls.monitoring = render("monitoring")

    def containers(self, docs):
        configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
        out = []
        for d in docs:
            if d["kind"] in ("Deployment", "StatefulSet"):
                for c in d["spec"]["template"]["spec"]["containers"]:
                    out.append(Container(d, c, configmaps))
        return out

    def of_kind(self, docs, kind):
        return [d for d in docs if d["kind"] == kind]

    def test_containers_have_requests_probes_and_a_non_root_security_context(self):
        for overlay, docs in self.renders.items():
            for c in self.containers(docs):
                with self.subTest(overlay=overlay, container=str(c)):
                    requests = c.spec.get("resources", {}).get("requests", {})
                    self.assertIn("cpu", requests)
                    self.assertIn("memory", requests)
                    self.assertIn("memory", c.spec["resources"].get("limits", {}))
                    grpc_port = c.port("grpc")
                    self.assertIsNotNone(grpc_port, "no container port named grpc")
                    probes = ["readinessProbe", "livenessProbe"]
                    if c.name == "worker":
                        probes.append("startupProbe")
                    for probe in probes:
                        self.assertIn(probe, c.spec)
                        self.assertEqual(c.spec[probe].get("grpc", {}).get("port"), grpc_port,
                                         f"{probe} is not a gRPC health probe on {grpc_port}")
                    pod_sc = c.pod["spec"].get("securityContext", {})
                    sc = c.spec.get("securityContext", {})
                    self.assertTrue(sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")))
                    self.assertNotEqual(sc.get("runAsUser", pod_sc.get("runAsUser", 0)), 0)
                    self.assertIs(sc.get("allowPrivilegeEscalation"), False)
                    self.assertIs(sc.get("readOnlyRootFilesystem"), True)
                    self.assertIn("ALL", sc.get("capabilities", {}).get("drop", []))
                    self.assertNotIn("privileged", sc)

    def test_flags_exist_in_the_binaries_and_match_the_ports(self):
        for overlay, docs in self.renders.items():
            for c in self.containers(docs):
                known = self.router_flags if c.name == "router" else self.worker_flags
                binary = "memshare_router" if c.name == "router" else "memshare_worker"
                with self.subTest(overlay=overlay, container=str(c)):
                    self.assertIn(c.name, ("router", "worker"))
                    for flag, source in c.flag_sources.items():
                        if flag in known or flag in ABSL_FLAGS:
                            continue
                        self.fail(f"--{flag} ({source}) is not a flag of {binary}")
                    self.assertEqual(port_of(c.flags["address"]), c.port("grpc"))
                    self.assertEqual(port_of(c.flags["metrics_address"]), c.port("metrics"))
                    if c.name == "router":
                        self.assertEqual(port_of(c.flags["http_address"]), c.port("http"))
                    drain = duration_seconds(c.flags["drain_timeout"])
                    grace = c.pod["spec"]["terminationGracePeriodSeconds"]
                    self.assertGreater(grace, drain, "SIGKILL before the drain deadline")
                    self.assertLessEqual(grace, drain + 60, "grace period far past the drain")

    def test_flag_values_parse_in_the_binaries(self):
        # absl parses every flag (and reports bad values) before it handles
        # --help; the pod-provided values (<MEMSHARE_RANK>) become 0.
        tmp = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
        for overlay, docs in self.renders.items():
            for i, c in enumerate(self.containers(docs)):
                binary = ROUTER_BIN if c.name == "router" else WORKER_BIN
                known = self.router_flags if c.name == "router" else self.worker_flags
                lines = [f"--{k}={re.sub(r'<[A-Z0-9_]+>', '0', v)}"
                         for k, v in c.flags.items() if k in known]
                path = os.path.join(tmp, f"{overlay}-{i}.flags")
                with open(path, "w") as f:
                    f.write("\n".join(lines) + "\n")
                out = subprocess.run([binary, f"--flagfile={path}", "--help"],
                                     capture_output=True, text=True, timeout=60)
                errors = [l for l in (out.stdout + out.stderr).splitlines()
                          if l.startswith("ERROR")]
                with self.subTest(overlay=overlay, container=str(c)):
                    self.assertEqual(errors, [], "\n".join(lines))

    def test_images_are_the_ones_build_sh_builds(self):
        for overlay, docs in self.renders.items():
            tp, gpu = OVERLAYS[overlay]
            for c in self.containers(docs):
                with self.subTest(overlay=overlay, container=str(c)):
                    image = c.spec["image"].rsplit("/", 1)[-1].split(":")[0]
                    expected = {"router": "memshare-router",
                                "worker": "memshare-worker" if gpu else "memshare-worker-cpu"}
                    self.assertEqual(image, expected[c.name])
                    limits = c.spec["resources"].get("limits", {})
                    if c.name == "worker" and gpu:
                        self.assertEqual(str(limits.get("nvidia.com/gpu")), "1")
                        self.assertEqual(str(c.spec["resources"]["requests"]["nvidia.com/gpu"]),
                                         "1")
                        mounts = {m["mountPath"]: m["name"] for m in c.spec["volumeMounts"]}
                        self.assertIn("/dev/shm", mounts, "NCCL needs shared memory")
                        self.assertTrue(c.flags["model"].startswith("/models/"))
                        self.assertIn("/models", mounts)
                    else:
                        self.assertNotIn("nvidia.com/gpu", limits)

    def test_services_pdbs_and_statefulsets_fit_together(self):
        for overlay, docs in self.renders.items():
            with self.subTest(overlay=overlay):
                services = {s["metadata"]["name"]: s for s in self.of_kind(docs, "Service")}
                pdbs = self.of_kind(docs, "PodDisruptionBudget")
                pvcs = {p["metadata"]["name"] for p in self.of_kind(docs, "PersistentVolumeClaim")}
                containers = self.containers(docs)
                pods = [(c.pod["metadata"]["labels"], c) for c in containers]
                for name, svc in services.items():
                    matched = [c for labels, c in pods if selects(svc["spec"]["selector"], labels)]
                    self.assertTrue(matched, f"Service {name} selects no pod")
                    for p in svc["spec"]["ports"]:
                        for c in matched:
                            self.assertIsNotNone(c.port(p["targetPort"]),
                                                 f"Service {name}: {c} has no port {p['targetPort']}")
                for labels, c in pods:
                    self.assertTrue(any(selects(p["spec"]["selector"]["matchLabels"], labels)
                                        for p in pdbs), f"no PodDisruptionBudget covers {c}")
                    for v in c.pod["spec"]["volumes"]:
                        if "persistentVolumeClaim" in v:
                            self.assertIn(v["persistentVolumeClaim"]["claimName"], pvcs)
                router = next(c for c in containers if c.name == "router")
                host, port = router.flags["workers_dns"].rsplit(":", 1)
                leaders = services.get(host.split(".")[0])
                self.assertIsNotNone(leaders, f"--workers_dns={host}: no such Service")
                self.assertEqual(leaders["spec"].get("clusterIP"), "None",
                                 "--workers_dns needs a headless Service (pod addresses)")
                self.assertNotIn("publishNotReadyAddresses", leaders["spec"])
                self.assertIn(int(port), [p["port"] for p in leaders["spec"]["ports"]])
                tp = OVERLAYS[overlay][0]
                sets = self.of_kind(docs, "StatefulSet")
                self.assertEqual(len(sets), 1 if tp == 1 else 2)
                for sts in sets:
                    governing = services[sts["spec"]["serviceName"]]
                    self.assertEqual(governing["spec"].get("clusterIP"), "None")
                    self.assertIs(governing["spec"].get("publishNotReadyAddresses"), True)
                    self.assertTrue(selects(governing["spec"]["selector"],
                                            sts["spec"]["template"]["metadata"]["labels"]))
                    self.assertEqual(sts["spec"]["podManagementPolicy"], "Parallel")
                self.assertEqual(POD_INDEX in leaders["spec"]["selector"], tp > 1)

    def test_tensor_parallel_groups(self):
        for overlay, docs in self.renders.items():
            tp = OVERLAYS[overlay][0]
            workers = [c for c in self.containers(docs) if c.name == "worker"]
            for c in workers:
                with self.subTest(overlay=overlay, container=str(c)):
                    if tp == 1:
                        for flag in ("rank", "world_size", "group_leader"):
                            self.assertNotIn(flag, c.flags)
                        continue
                    sts = c.workload
                    name = sts["metadata"]["name"]
                    self.assertEqual(sts["spec"]["replicas"], tp)
                    self.assertEqual(c.flags["world_size"], str(tp))
                    self.assertEqual(c.pod["metadata"]["labels"]["memshare.io/group"], name)
                    self.assertEqual(sts["spec"]["selector"]["matchLabels"]["memshare.io/group"],
                                     name)
                    self.assertEqual(
                        c.env["MEMSHARE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"],
                        f"metadata.labels['{POD_INDEX}']")
                    self.assertEqual(
                        c.env["MEMSHARE_GROUP"]["valueFrom"]["fieldRef"]["fieldPath"],
                        "metadata.labels['memshare.io/group']")
                    self.assertEqual(c.flags["rank"], "<MEMSHARE_RANK>")
                    self.assertEqual(
                        c.flags["group_leader"].replace("<MEMSHARE_GROUP>", name),
                        f"{name}-0.{sts['spec']['serviceName']}:{c.port('grpc')}")
            if tp > 1:
                groups = {c.workload["metadata"]["name"] for c in workers}
                self.assertEqual(len(groups), 2, overlay)

    def test_monitoring_selects_the_services_under_the_dashboard_job_names(self):
        base = self.renders["cpu-demo"]
        services = self.of_kind(base, "Service")
        monitors = self.of_kind(self.monitoring, "ServiceMonitor")
        self.assertEqual(len(monitors), 2)
        jobs = set()
        for m in monitors:
            label = m["spec"]["jobLabel"]
            matched = [s for s in services
                       if all(s["metadata"]["labels"].get(k) == v
                              for k, v in m["spec"]["selector"]["matchLabels"].items())]
            self.assertEqual(len(matched), 1, m["metadata"]["name"])
            svc = matched[0]
            jobs.add(svc["metadata"]["labels"][label])
            self.assertEqual(svc["spec"].get("clusterIP"), "None")
            for e in m["spec"]["endpoints"]:
                self.assertIn(e["port"], [p["name"] for p in svc["spec"]["ports"]])
        self.assertEqual(jobs, {"memshare-router", "memshare-worker"})

        # deploy/prometheus/prometheus.yml: same jobs, DNS SRV names of those
        # Services in the overlays' namespace.
        with open(os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml")) as f:
            prom = yaml.safe_load(f)
        namespace = next(d for d in base if d["kind"] == "Namespace")["metadata"]["name"]
        by_name = {s["metadata"]["name"]: s for s in services}
        prom_jobs = set()
        for job in prom["scrape_configs"]:
            prom_jobs.add(job["job_name"])
            for sd in job["dns_sd_configs"]:
                for name in sd["names"]:
                    m = re.fullmatch(r"_([a-z0-9-]+)\._tcp\.([a-z0-9-]+)\.([a-z0-9-]+)\.svc\..*",
                                     name)
                    self.assertIsNotNone(m, name)
                    port, svc, ns = m.groups()
                    self.assertEqual(ns, namespace)
                    self.assertEqual(by_name[svc]["metadata"]["labels"]["memshare.io/job"],
                                     job["job_name"])
                    self.assertIn(port, [p["name"] for p in by_name[svc]["spec"]["ports"]])
        self.assertEqual(prom_jobs, jobs)

        rule = self.of_kind(self.monitoring, "PrometheusRule")
        self.assertEqual(len(rule), 1)
        with open(os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")) as f:
            self.assertEqual(rule[0]["spec"]["groups"], yaml.safe_load(f)["groups"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
