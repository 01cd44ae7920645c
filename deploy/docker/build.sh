#!/usr/bin/env bash
# Builds the container images of deploy/docker/ from the Bazel outputs.
#
#   deploy/docker/build.sh [--tag TAG] [--registry PREFIX] [--stage DIR]
#                          [--no-docker] [--push]
#
# 1. bazel build -c opt of the router, the worker and memshare_health_probe;
# 2. stages them in DIR (default .docker-stage/, ignored by git): bin/ (the
#    binaries), lib/ (every shared library they load that is not part of the
#    C/C++ runtime or CUDA, found with ldd: gRPC, Protobuf, Abseil,
#    prometheus-cpp, ...), lib-cuda/ (the CUDA runtime libraries the worker
#    links, for the CPU image only: the CUDA image has its own), models/
#    (the bundled tiny reasoner, for the CPU image);
# 3. where a Docker engine answers (and without --no-docker), builds
#        PREFIXmemshare-router:TAG      Dockerfile.router
#        PREFIXmemshare-worker:TAG      Dockerfile.worker      (CUDA runtime base)
#        PREFIXmemshare-worker-cpu:TAG  Dockerfile.worker-cpu  (CPU backend, tiny model)
#    with the stage directory as context, and pushes them with --push.
#    Without an engine it prints the docker commands to run elsewhere.
#
# The images are the ones deploy/k8s/ names (memshare-router:local, ...):
# set your registry and tag there with `kustomize edit set image`.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }

# image name, Dockerfile (deploy/docker/...)
IMAGES=(
  "memshare-router Dockerfile.router"
  "memshare-worker Dockerfile.worker"
  "memshare-worker-cpu Dockerfile.worker-cpu"
)
TARGETS=(
  //router:memshare_router
  //engine/server:memshare_worker
  //deploy/health_probe:memshare_health_probe
)
MODEL=assets/models/tiny-reasoner

tag=local
registry=""
stage=.docker-stage
docker_build=1
push=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tag) tag="$2"; shift 2;;
    --registry) registry="$2"; shift 2;;
    --stage) stage="$2"; shift 2;;
    --no-docker) docker_build=0; shift;;
    --push) push=1; shift;;
    -h|--help) usage; exit 0;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2;;
  esac
done
[[ -z "$registry" || "$registry" == */ ]] || registry="$registry/"

echo "[docker] bazel build -c opt ${TARGETS[*]}"
bazel build -c opt "${TARGETS[@]}"

rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/lib" "$stage/lib-cuda" "$stage/models"
# Present in every base image (glibc, libstdc++ of Debian 12 or newer) or
# provided by the NVIDIA container toolkit (libcuda, the driver): never copied.
runtime_lib='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libresolv|libstdc\+\+|libgcc_s|libcuda|libnvidia-[a-z-]+)\.so'
# The CUDA toolkit's libraries: in the CUDA base image; lib-cuda/ for the CPU image.
cuda_lib='^(libcudart|libcublas|libcublasLt|libnccl|libnvrtc|libnvJitLink|libcusparse|libcufft|libcurand)\.so'
for t in "${TARGETS[@]}"; do
  for f in $(bazel cquery -c opt --output=starlark \
               --starlark:expr='"\n".join([f.path for f in target.files.to_list()])' "$t" 2>/dev/null); do
    [[ -x "$f" && -f "$f" ]] || continue
    cp -f "$f" "$stage/bin/"
    echo "[docker] bin/$(basename "$f")"
    ldd "$f" | awk '/=> \//{print $1, $3}' | while read -r name path; do
      if [[ "$name" =~ $runtime_lib ]]; then continue; fi
      dir=lib
      [[ "$name" =~ $cuda_lib ]] && dir=lib-cuda
      [[ -e "$stage/$dir/$name" ]] || cp -L "$path" "$stage/$dir/$name"
    done
    if ldd "$f" | grep -q "not found"; then
      echo "[docker] $f: unresolved shared libraries:" >&2
      ldd "$f" | grep "not found" >&2
      exit 1
    fi
  done
done
cp -rL "$MODEL" "$stage/models/"
du -sh "$stage"/* | sed 's/^/[docker] /'

# The CUDA runtime image of the toolkit the worker was built with
# ("release 13.0" -> nvidia/cuda:13.0.0-runtime-ubuntu24.04).
cuda_release=$(/usr/local/cuda/bin/nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')
cuda_args=()
if [[ -n "$cuda_release" ]]; then
  cuda_args=(--build-arg "CUDA_IMAGE=nvidia/cuda:${cuda_release}.0-runtime-ubuntu24.04")
fi

commands=()
for entry in "${IMAGES[@]}"; do
  read -r name dockerfile <<<"$entry"
  extra=()
  [[ "$dockerfile" == Dockerfile.worker ]] && extra=("${cuda_args[@]}")
  commands+=("docker build -f deploy/docker/$dockerfile ${extra[*]} -t ${registry}${name}:${tag} $stage")
done

if [[ $docker_build -eq 1 ]] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  for c in "${commands[@]}"; do
    echo "[docker] $c"
    $c
  done
  if [[ $push -eq 1 ]]; then
    for entry in "${IMAGES[@]}"; do
      read -r name _ <<<"$entry"
      docker push "${registry}${name}:${tag}"
    done
  fi
else
  echo "[docker] no Docker engine here (or --no-docker): staged in $stage; on a machine with"
  echo "[docker] Docker, copy the repository with $stage and run:"
  printf '  %s\n' "${commands[@]}"
fi
