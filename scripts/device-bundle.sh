#!/usr/bin/env bash
# Builds Bazel targets and bundles them for the GPU machine, which has the
# CUDA toolkit and PyTorch but no Bazel, gRPC or Abseil.
#
#   scripts/device-bundle.sh //tests/gpu:block_distance_test //bench:foo ...
#
# Writes .device/ (ignored by git): bin/ (the binaries), lib/ (every shared
# library they load that the GPU machine lacks, found with ldd), data/ (test
# data the binaries read, when --data DIR is given) and run.sh, which runs one
# of the binaries with LD_LIBRARY_PATH set:
#
#   .device/run.sh block_distance_test --gtest_brief=1
#
# --xz packs bin/ and lib/ into bundle.tar.xz (statically linked test
# binaries shrink about 7x), which run.sh unpacks on its first use (scripts
# that list bin/ first: tar xJf DIR/bundle.tar.xz -C DIR): the device tool
# carries at most 64 MiB with the working tree.
#
# Left out of lib/: the C/C++ runtime (present on every Linux machine, newer
# there) and the CUDA toolkit's libraries (cudart, cuBLAS, NCCL: hundreds of
# MB; the GPU machine has CUDA 13 and run.sh finds them there).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
[[ $# -ge 1 ]] || { usage; exit 2; }
case "$1" in -h|--help) usage; exit 0;; esac

out=.device
xz=0
data_dirs=()
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data) data_dirs+=("$2"); shift 2;;
    --out) out="$2"; shift 2;;
    --xz) xz=1; shift;;
    *) targets+=("$1"); shift;;
  esac
done

echo "[device-bundle] building ${targets[*]}"
# Static linking of the project's own code: one file per binary.
bazel build -c opt --dynamic_mode=off "${targets[@]}"

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
system_lib='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libnccl|libnvrtc|libnvJitLink)\.so'
for t in "${targets[@]}"; do
  # bazel cquery gives the output path of each target.
  for f in $(bazel cquery -c opt --dynamic_mode=off --output=starlark --starlark:expr='"\n".join([f.path for f in target.files.to_list()])' "$t" 2>/dev/null); do
    [[ -x "$f" && -f "$f" ]] || continue
    cp -f "$f" "$out/bin/"
    echo "[device-bundle] bin/$(basename "$f")"
    ldd "$f" | awk '/=> \//{print $1, $3}' | while read -r name path; do
      if [[ "$name" =~ $system_lib ]]; then continue; fi
      [[ -e "$out/lib/$name" ]] || cp -L "$path" "$out/lib/$name"
    done
  done
done
for d in "${data_dirs[@]}"; do
  mkdir -p "$out/data"
  cp -r "$d" "$out/data/"
done

cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs a bundled binary: .device/run.sh NAME [ARGS...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cuda_dirs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [[ -d "$d" ]] && cuda_dirs="$cuda_dirs:$d"
done
# PyTorch's wheels carry cuBLAS and NCCL where the toolkit lacks them.
py_nvidia=$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null || true)
if [[ -n "$py_nvidia" ]]; then
  for d in "$py_nvidia"/nvidia/*/lib; do cuda_dirs="$cuda_dirs:$d"; done
fi
export LD_LIBRARY_PATH="$here/lib${cuda_dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NCCL_NVLS_ENABLE=0
if [[ ! -d "$here/bin" && -f "$here/bundle.tar.xz" ]]; then
  tar xJf "$here/bundle.tar.xz" -C "$here"
fi
name="$1"; shift
exec "$here/bin/$name" "$@"
RUN
chmod +x "$out/run.sh"
if [[ $xz == 1 ]]; then
  tar cJf "$out/bundle.tar.xz" -C "$out" bin lib
  rm -rf "$out/bin" "$out/lib"
fi
du -sh "$out" | awk '{print "[device-bundle] " $1 " in '"$out"'"}'
