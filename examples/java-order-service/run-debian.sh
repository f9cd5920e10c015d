#!/bin/sh
# Runs the order service built by build-debian.sh. Settings come from the
# arguments ([grpc-addr [api-key [merchant-id]]]) or from PUSHGATE_GRPC_ADDR,
# PUSHGATE_API_KEY and MERCHANT_ID.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${BUILD_DIR:-$here/build}
. "$here/classpath-debian.sh"

[ -d "$build/classes/io/pushgate/example" ] || { echo "not built: run ./build-debian.sh first" >&2; exit 1; }
cp=$(classpath runtime)
exec java -cp "$build/classes:$cp" io.pushgate.example.OrderService "$@"
