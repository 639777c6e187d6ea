#!/bin/sh
# Generate the Python stubs of the DRA driver's gRPC APIs (src/vfioctl/dra/proto/*.proto)
# into src/vfioctl/dra/gen/ (not tracked: generated at setup time). Needs grpcio-tools
# (the `test` extra). The protos are mapped under the virtual path vfioctl/dra/gen so
# that the generated modules import each other as vfioctl.dra.gen.*.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-"$here/.venv/bin/python"}
[ -x "$python" ] || python=python3
src="$here/src/vfioctl/dra/proto"
out="$here/src/vfioctl/dra/gen"
mkdir -p "$out"
: > "$out/__init__.py"
cd "$src"
"$python" -m grpc_tools.protoc "-Ivfioctl/dra/gen=$src" \
    "--python_out=$here/src" "--grpc_python_out=$here/src" \
    vfioctl/dra/gen/pluginregistration_v1.proto \
    vfioctl/dra/gen/dra_v1.proto vfioctl/dra/gen/dra_v1beta1.proto
# Generated code is not ours to lint or type-check (protoc's style, no annotations).
for f in "$out"/*_pb2.py "$out"/*_pb2_grpc.py; do
    { printf '# ruff: noqa\n# mypy: ignore-errors\n'; cat "$f"; } > "$f.tmp"
    mv "$f.tmp" "$f"
done
echo "gen-proto: stubs in $out"
