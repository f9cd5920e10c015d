# Sourced by build-debian.sh and run-debian.sh: the jars of Debian's gRPC,
# protobuf and Netty packages, each by its unversioned name in /usr/share/java.

grpc_plugin=/usr/bin/grpc_java_plugin
install_hint="sudo apt-get install protobuf-compiler libprotobuf-dev protobuf-compiler-grpc-java-plugin libgrpc-java libprotobuf-java libnetty-java libperfmark-java libguava-java libgeronimo-annotation-1.3-spec-java default-jdk-headless"

# What the code and the generated stubs compile against.
compile_jars="grpc-api grpc-stub grpc-protobuf grpc-protobuf-lite grpc-context
	protobuf guava jsr305 geronimo-annotation-1.3-spec"

# What runs the calls on top of that: grpc-core, the Netty transport and
# what grpc-netty loads in a plain run (found by running it: common, buffer,
# resolver, transport, codec, handler, codec-http, codec-http2), plus
# handler-proxy and codec-socks, which grpc-netty declares as runtime
# dependencies for when a proxy is configured. Without the epoll jars
# grpc-netty uses Java NIO, which is all an order service needs.
runtime_jars="grpc-core grpc-netty perfmark-api
	netty-common netty-buffer netty-resolver netty-transport netty-codec
	netty-handler netty-codec-http netty-codec-http2
	netty-handler-proxy netty-codec-socks"

# classpath compile|runtime prints the jars, joined with ':'; it fails,
# naming the packages to install, when one is missing.
classpath() {
	jars=$compile_jars
	[ "$1" = runtime ] && jars="$compile_jars $runtime_jars"
	cp=
	for j in $jars; do
		f=/usr/share/java/$j.jar
		[ -f "$f" ] || { echo "$f not found: $install_hint" >&2; return 1; }
		cp=$cp${cp:+:}$f
	done
	# Newer Debian releases split failureaccess out of guava.
	[ -f /usr/share/java/failureaccess.jar ] && cp=$cp:/usr/share/java/failureaccess.jar
	echo "$cp"
}
