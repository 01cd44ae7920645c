#!/bin/sh
# Runs Debian's protoc (protobuf-compiler). A wrapper so that BUILD files name
# the compiler by label and a missing package gives a clear message.
command -v protoc >/dev/null 2>&1 || { echo "protoc not found: run scripts/install-deps.sh" >&2; exit 1; }
exec protoc "$@"
