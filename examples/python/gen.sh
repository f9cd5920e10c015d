#!/bin/sh
# Generates the Python stubs for pushgate.v1 into gen/ (Debian:
# sudo apt-get install python3-grpcio python3-grpc-tools; elsewhere:
# pip install grpcio grpcio-tools). PYTHON picks the interpreter.
set -eu
cd "$(dirname "$0")"
python=${PYTHON:-/usr/bin/python3}
"$python" -c 'import grpc_tools.protoc' 2>/dev/null || {
	echo "grpc_tools not found for $python: sudo apt-get install python3-grpcio python3-grpc-tools (or pip install grpcio grpcio-tools)" >&2
	exit 1
}
rm -rf gen
mkdir gen
"$python" -m grpc_tools.protoc -I ../../proto --python_out=gen --grpc_python_out=gen pushgate/v1/push.proto
echo "generated $(pwd)/gen/pushgate/v1"
