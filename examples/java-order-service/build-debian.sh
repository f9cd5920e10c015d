#!/bin/sh
# Builds the order service with Debian's packaged gRPC and protobuf, no Maven:
#
#   sudo apt-get install protobuf-compiler libprotobuf-dev \
#     protobuf-compiler-grpc-java-plugin libgrpc-java libprotobuf-java \
#     libnetty-java libperfmark-java libguava-java \
#     libgeronimo-annotation-1.3-spec-java default-jdk-headless
#   ./build-debian.sh            # classes land in build/classes
#   ./run-debian.sh              # runs them
#
# BUILD_DIR=/some/dir puts the build elsewhere (run-debian.sh reads it too).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${BUILD_DIR:-$here/build}
. "$here/classpath-debian.sh"

for tool in protoc javac; do
	command -v "$tool" >/dev/null || { echo "$tool not found: $install_hint" >&2; exit 1; }
done
[ -x "$grpc_plugin" ] || { echo "$grpc_plugin not found: $install_hint" >&2; exit 1; }
[ -f /usr/include/google/protobuf/duration.proto ] ||
	{ echo "google/protobuf/*.proto not found: sudo apt-get install libprotobuf-dev" >&2; exit 1; }

cp=$(classpath compile)
rm -rf "$build/generated" "$build/classes"
mkdir -p "$build/generated" "$build/classes"

# Stubs: protoc finds google/protobuf/*.proto in /usr/include by itself.
protoc --java_out="$build/generated" --grpc-java_out="$build/generated" \
	--plugin=protoc-gen-grpc-java="$grpc_plugin" \
	-I "$here/../../proto" pushgate/v1/push.proto

find "$build/generated" "$here/src/main/java" -name '*.java' >"$build/sources.txt"
javac -encoding UTF-8 --release 11 -nowarn -d "$build/classes" -cp "$cp" @"$build/sources.txt"
echo "built $build/classes"
