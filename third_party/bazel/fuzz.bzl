"""libFuzzer targets, compiled by clang (Bazel's C++ toolchain here is gcc).

cc_fuzz_test(name, srcs, deps_srcs, linkopts, runs, max_total_time_s)
declares:
  - `<name>_bin`: a genrule that compiles every .cc of `srcs` and
    `deps_srcs` with `clang++ -fsanitize=fuzzer,address,undefined` into one
    executable (headers are found from the workspace root, system libraries
    through `linkopts`). libFuzzer comes from Debian's clang and
    libclang-rt-14-dev (scripts/install-deps.sh).
  - `<name>`: an sh_test that runs it for at most `runs` inputs and
    `max_total_time_s` seconds from a fixed seed, and prints the number of
    executions ("fuzz executions: N").
Run it longer by hand: bazel build //pkg:<name>_bin, then
  bazel-bin/pkg/<name>_bin -max_total_time=600 corpus_dir/
"""

FUZZ_COPTS = [
    "-std=c++20",
    "-g",
    "-O1",
    "-fsanitize=fuzzer,address,undefined",
    "-fno-sanitize-recover=undefined",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-sign-compare",
    "-Wno-missing-field-initializers",
]

def cc_fuzz_test(
        name,
        srcs,
        deps_srcs = [],
        copts = [],
        linkopts = [],
        runs = 10000,
        max_total_time_s = 10,
        max_len = 2048,
        **kwargs):
    """A libFuzzer binary built with clang and a bounded sh_test that runs it.

    Args:
      name: the test; the binary is `name + "_bin"`.
      srcs: the fuzz target (.cc defining LLVMFuzzerTestOneInput).
      deps_srcs: every other source and header it compiles (filegroups).
      copts: extra compiler flags.
      linkopts: libraries (-l...) the sources need.
      runs: most inputs the test runs.
      max_total_time_s: most seconds the test runs.
      max_len: longest generated input, in bytes.
      **kwargs: passed to the sh_test (tags, size, timeout).
    """
    binary = name + "_bin"
    native.genrule(
        name = binary + "_build",
        srcs = srcs + deps_srcs,
        outs = [binary],
        cmd = " ".join([
            "ccs=;",
            "for f in $(SRCS); do case $$f in *.cc) ccs=\"$$ccs $$f\";; esac; done;",
            "clang++",
            "-I.",
        ] + FUZZ_COPTS + copts + [
            "$$ccs",
            "-o $@",
        ] + linkopts),
        tags = kwargs.get("tags", []),
        testonly = True,
    )
    native.sh_test(
        name = name,
        srcs = ["//third_party/bazel:fuzz_test.sh"],
        data = [":" + binary],
        args = [
            "$(location :" + binary + ")",
            "-seed=1",
            "-runs=%d" % runs,
            "-max_total_time=%d" % max_total_time_s,
            "-max_len=%d" % max_len,
        ],
        **kwargs
    )
