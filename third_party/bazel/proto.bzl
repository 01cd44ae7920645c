"""C++ message and gRPC service libraries from .proto files.

Runs Debian's protoc with grpc_cpp_plugin (no Bazel proto rules needed, so the
build stays offline). Imports are written from the workspace root, e.g.
`import "proto/memshare/v1/common.proto";`, and generated headers are included
the same way: `#include "proto/memshare/v1/inference.grpc.pb.h"`.
"""

def memshare_proto_library(name, srcs, deps = [], grpc = True, visibility = None):
    """Declares `<name>` (messages, and gRPC stubs when grpc is set).

    Args:
      name: the cc_library that holds the generated code.
      srcs: .proto files of this package.
      deps: other memshare_proto_library targets whose .proto files srcs import.
      grpc: whether to generate service stubs (.grpc.pb.*) too.
      visibility: of the cc_library and of the .proto sources.
    """
    pkg = native.package_name()
    prefix = pkg + "/" if pkg else ""
    native.filegroup(
        name = name + "_proto_srcs",
        srcs = srcs + [d + "_proto_srcs" for d in deps],
        visibility = visibility,
    )
    outs = []
    for s in srcs:
        base = s[:-len(".proto")]
        outs += [base + ".pb.h", base + ".pb.cc"]
        if grpc:
            outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    grpc_flags = ""
    if grpc:
        grpc_flags = "--grpc_out=$(GENDIR) --plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin) "
    native.genrule(
        name = name + "_gen",
        srcs = [name + "_proto_srcs"],
        outs = outs,
        cmd = ("$(location //third_party/protobuf:protoc) -I. --cpp_out=$(GENDIR) " + grpc_flags +
               " ".join([prefix + s for s in srcs])),
        tools = ["//third_party/protobuf:protoc"],
    )
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        # Generated code is not held to the project's warning flags.
        copts = ["-Wno-error", "-Wno-unused-parameter"],
        deps = deps + [
            "//third_party/grpc:grpc++",
            "//third_party/protobuf",
        ],
        visibility = visibility,
    )
