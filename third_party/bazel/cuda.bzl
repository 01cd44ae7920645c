"""CUDA kernels compiled by nvcc into a cc_library.

Each .cu file becomes one position-independent object file
(`-gencode=arch=compute_90a,code=sm_90a`, C++20, `-Xcompiler -fPIC`). Host
code includes only the plain C++ launcher headers given in `hdrs`; `.cuh`
files are private to the kernels (`textual_hdrs`).
"""

NVCC_FLAGS = [
    "-std=c++20",
    "-O3",
    "-gencode=arch=compute_90a,code=sm_90a",
    "-Xcompiler=-fPIC",
    "-Xcompiler=-Wall",
    "-Werror=all-warnings",
    "--expt-relaxed-constexpr",
    "-lineinfo",
]

def cuda_library(name, srcs, hdrs = [], textual_hdrs = [], deps = [], nvcc_flags = [], **kwargs):
    """Declares cc_library `name` holding the compiled kernels of `srcs`.

    Args:
      name: the cc_library.
      srcs: .cu files.
      hdrs: plain C++ launcher headers (no CUDA syntax), public.
      textual_hdrs: .cuh headers the .cu files include.
      deps: cc_library targets the launchers' users need at link time. nvcc
        sees only this target's own headers and system headers (CUDA,
        Abseil under /usr/include).
      nvcc_flags: extra nvcc flags.
      **kwargs: passed to the cc_library (visibility, tags, testonly).
    """
    objs = []
    for src in srcs:
        obj = src[:-len(".cu")] + ".pic.o"
        native.genrule(
            name = name + "_" + src.replace("/", "_").replace(".", "_"),
            srcs = [src] + hdrs + textual_hdrs,
            outs = [obj],
            cmd = " ".join([
                "$(location //third_party/cuda:nvcc)",
                "-c",
                "-o $@",
                "-I.",
                "-I$(GENDIR)",
            ] + NVCC_FLAGS + nvcc_flags + ["$(location " + src + ")"]),
            tools = ["//third_party/cuda:nvcc"],
            tags = kwargs.get("tags", []),
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        textual_hdrs = textual_hdrs,
        deps = deps + ["//third_party/cuda:cudart"],
        **kwargs
    )
