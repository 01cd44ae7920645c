"""Structural checks of deploy/docker/ (no Docker engine runs on the build
machines, so the images are not built here; deploy/docker/build.sh builds
them where one does):

- each Dockerfile starts from the intended base (Debian of the build machine
  for the router and the CPU worker; NVIDIA's CUDA runtime image of the
  toolkit's major version for the GPU worker);
- runs as a non-root numeric user, the uid deploy/k8s runs pods as;
- copies only what build.sh stages (bin/, lib/, lib-cuda/, models/), the
  binary its ENTRYPOINT runs and memshare_health_probe;
- its HEALTHCHECK runs memshare_health_probe against the binary's default
  gRPC port, with flags the probe has; EXPOSE lists the binary's default
  ports (parsed from --help); CMD flags are flags of the binary;
- build.sh is valid bash and builds exactly the images deploy/k8s names.

Run by //deploy/docker:dockerfiles_test.
"""
import json
import os
import re
import subprocess
import unittest

import yaml

ROOT = os.getcwd()
DOCKER = os.path.join(ROOT, "deploy", "docker")
BINARIES = {
    "memshare_router": os.path.join(ROOT, "router", "memshare_router"),
    "memshare_worker": os.path.join(ROOT, "engine", "server", "memshare_worker"),
    "memshare_health_probe": os.path.join(ROOT, "deploy", "health_probe", "memshare_health_probe"),
}
# Dockerfile -> (image name, binary it runs, port flags it serves)
IMAGES = {
    "Dockerfile.router": ("memshare-router", "memshare_router",
                          ["address", "http_address", "metrics_address"]),
    "Dockerfile.worker": ("memshare-worker", "memshare_worker", ["address", "metrics_address"]),
    "Dockerfile.worker-cpu": ("memshare-worker-cpu", "memshare_worker",
                              ["address", "metrics_address"]),
}
STAGED = ("bin/", "lib/", "lib-cuda/", "models/")


def help_flags(binary):
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    starts = list(re.finditer(r"^\s+--([a-z0-9_]+) \(", text, re.MULTILINE))
    flags = {}
    for i, m in enumerate(starts):
        chunk = text[m.end():starts[i + 1].start() if i + 1 < len(starts) else len(text)]
        d = re.search(r"\);\s+default: (.*?);\s*$", chunk, re.MULTILINE | re.DOTALL)
        flags[m.group(1)] = d.group(1).strip().strip('"') if d else None
    assert flags, f"no flags parsed from {binary} --help"
    return flags


def instructions(path):
    """[(INSTRUCTION, arguments)] with continuation lines joined."""
    out, pending = [], ""
    with open(path) as f:
        for line in f:
            stripped = line.strip()
            if not pending and (not stripped or stripped.startswith("#")):
                continue
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            full = (pending + stripped).strip()
            pending = ""
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def flag_name(arg):
    m = re.fullmatch(r"--([a-z0-9_]+)(=.*)?", arg)
    assert m, f"not a flag: {arg}"
    return m.group(1)


def os_codename():
    with open("/etc/os-release") as f:
        for line in f:
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return None


class DockerfilesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.flags = {name: help_flags(path) for name, path in BINARIES.items()}
        with open(os.path.join(ROOT, "deploy", "k8s", "base", "router.yaml")) as f:
            router = next(d for d in yaml.safe_load_all(f) if d["kind"] == "Deployment")
        with open(os.path.join(ROOT, "deploy", "k8s", "base", "worker-group", "worker.yaml")) as f:
            worker = yaml.safe_load(f)
        cls.k8s_uids = {router["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
                        worker["spec"]["template"]["spec"]["securityContext"]["runAsUser"]}

    def parse(self, dockerfile):
        ins = instructions(os.path.join(DOCKER, dockerfile))
        args = {}
        for word, rest in ins:
            if word == "ARG" and "=" in rest:
                k, v = rest.split("=", 1)
                args[k] = v
        return ins, args

    def test_base_images(self):
        for dockerfile in IMAGES:
            ins, args = self.parse(dockerfile)
            with self.subTest(dockerfile=dockerfile):
                froms = [rest for word, rest in ins if word == "FROM"]
                self.assertEqual(len(froms), 1)
                base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], froms[0])
                if dockerfile == "Dockerfile.worker":
                    m = re.fullmatch(r"nvidia/cuda:(\d+)\.\d+\.\d+-runtime-ubuntu\d+\.\d+", base)
                    self.assertIsNotNone(m, base)
                    nvcc = "/usr/local/cuda/bin/nvcc"
                    if os.path.exists(nvcc):
                        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True)
                        release = re.search(r"release (\d+)\.", out.stdout)
                        self.assertIsNotNone(release, out.stdout)
                        self.assertEqual(m.group(1), release.group(1),
                                         "CUDA runtime image of another major version")
                else:
                    self.assertRegex(base, r"^debian:[a-z]+-slim$")
                    codename = os_codename()
                    if codename:
                        self.assertEqual(base, f"debian:{codename}-slim",
                                         "not the Debian release the binaries are built on")

    def test_non_root_user_matching_kubernetes(self):
        for dockerfile in IMAGES:
            ins, _ = self.parse(dockerfile)
            with self.subTest(dockerfile=dockerfile):
                users = [rest for word, rest in ins if word == "USER"]
                self.assertEqual(len(users), 1)
                uid, _, gid = users[0].partition(":")
                self.assertTrue(uid.isdigit(), "numeric uid (runAsNonRoot checks it)")
                self.assertNotEqual(int(uid), 0)
                self.assertNotEqual(int(gid or 1), 0)
                self.assertEqual({int(uid)}, self.k8s_uids)
                # Nothing runs as root after the image is built.
                last_user = max(i for i, (w, _) in enumerate(ins) if w == "USER")
                self.assertFalse([w for w, _ in ins[last_user:] if w == "RUN"])

    def test_copies_staged_outputs_and_runs_its_binary(self):
        for dockerfile, (_, binary, _) in IMAGES.items():
            ins, _ = self.parse(dockerfile)
            with self.subTest(dockerfile=dockerfile):
                copied = []
                for word, rest in ins:
                    if word in ("COPY", "ADD"):
                        self.assertEqual(word, "COPY")
                        parts = rest.split()
                        for src in parts[:-1]:
                            self.assertTrue(src.startswith(STAGED), f"{src}: not staged by build.sh")
                            copied.append(src)
                self.assertIn(f"bin/{binary}", copied)
                self.assertIn("bin/memshare_health_probe", copied)
                self.assertIn("lib/", copied)
                for src in copied:
                    if src.startswith("bin/"):
                        self.assertIn(src[4:], BINARIES)
                entry = [json.loads(rest) for word, rest in ins if word == "ENTRYPOINT"]
                self.assertEqual(entry, [[f"/opt/memshare/bin/{binary}"]])
                for word, rest in ins:
                    if word == "CMD":
                        for arg in json.loads(rest):
                            if arg == "--help":
                                continue
                            self.assertIn(flag_name(arg), self.flags[binary], arg)
                            if arg.startswith("--model="):
                                self.assertIn("COPY models/tiny-reasoner/ " + arg[8:] + "/",
                                              [f"{w} {r}" for w, r in ins])

    def test_healthcheck_and_ports(self):
        probe_flags = self.flags["memshare_health_probe"]
        for dockerfile, (_, binary, port_flags) in IMAGES.items():
            ins, _ = self.parse(dockerfile)
            with self.subTest(dockerfile=dockerfile):
                checks = [rest for word, rest in ins if word == "HEALTHCHECK"]
                self.assertEqual(len(checks), 1)
                m = re.search(r"CMD (\[.*\])$", checks[0])
                self.assertIsNotNone(m, "HEALTHCHECK CMD in exec form")
                cmd = json.loads(m.group(1))
                self.assertEqual(cmd[0], "/opt/memshare/bin/memshare_health_probe")
                for arg in cmd[1:]:
                    self.assertIn(flag_name(arg), probe_flags)
                default_grpc = self.flags[binary]["address"]
                self.assertIn(f"--address=127.0.0.1:{default_grpc.rsplit(':', 1)[1]}", cmd)
                exposed = {int(p) for word, rest in ins if word == "EXPOSE" for p in rest.split()}
                defaults = {int(self.flags[binary][f].rsplit(":", 1)[1]) for f in port_flags}
                self.assertEqual(exposed, defaults)
                self.assertIn(("STOPSIGNAL", "SIGTERM"), ins)

    def test_build_script(self):
        script = os.path.join(DOCKER, "build.sh")
        subprocess.run(["bash", "-n", script], check=True)
        with open(script) as f:
            text = f.read()
        images = dict(re.findall(r'^\s+"(memshare-[a-z-]+) (Dockerfile\.[a-z-]+)"$', text,
                                 re.MULTILINE))
        self.assertEqual(images, {n: d for d, (n, _, _) in IMAGES.items()})
        for label in ("//router:memshare_router", "//engine/server:memshare_worker",
                      "//deploy/health_probe:memshare_health_probe"):
            self.assertIn(label, text)
        for d in STAGED:
            self.assertIn(f'"$stage/{d.rstrip("/")}"', text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
