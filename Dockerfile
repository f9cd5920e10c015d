# pushgate container image.
#
#   docker build -t pushgate .
#   docker run -p 8080:8080 -p 9090:9090 \
#     -e PUSHGATE_AUTH=jwt \
#     -e PUSHGATE_JWT_SECRET=... \
#     -e PUSHGATE_API_KEYS=orders:... \
#     pushgate
#
# The default arguments listen on 0.0.0.0 (WebSocket and demo page on 8080,
# gRPC on 9090, metrics/health/admin on 9100), so protected mode refuses to
# start unless clients and callers are authenticated: set PUSHGATE_AUTH=jwt
# with PUSHGATE_JWT_SECRET (at least 32 bytes, e.g. openssl rand -base64 48;
# or PUSHGATE_JWT_PUBLIC_KEY / PUSHGATE_JWT_JWKS pointing at a mounted file)
# and PUSHGATE_API_KEYS (name:key,...; keys of 16 characters or more, e.g.
# openssl rand -hex 24). Placeholders such as change-me... and values of
# fewer than 5 different characters are refused. For a local trial only,
# with no authentication at all:
#
#   docker run --rm -p 8080:8080 -p 9090:9090 pushgate \
#     --http-addr 0.0.0.0:8080 --grpc-addr 0.0.0.0:9090 --insecure
#
# Arguments given to "docker run" replace the default CMD below entirely, so
# repeat the listener addresses when you pass any. Every flag can also be set
# with its PUSHGATE_* environment variable (pushgate --help lists them).

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when go.mod or
# go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# What "pushgate version" and the pushgate_build_info metric report (the
# build context has no .git to take them from), e.g.
#   docker build --build-arg VERSION=0.1.0 --build-arg COMMIT=$(git rev-parse HEAD) \
#     --build-arg BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) -t pushgate:0.1.0 .
# Left empty, they read "devel" and "unknown".
ARG VERSION= COMMIT= BUILD_DATE=
RUN CGO_ENABLED=0 go build -trimpath \
    -ldflags="-s -w -X pushgate/internal/version.version=${VERSION} -X pushgate/internal/version.commit=${COMMIT} -X pushgate/internal/version.date=${BUILD_DATE}" \
    -o /out/pushgate ./cmd/pushgate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pushgate /pushgate
USER nonroot:nonroot
# 8080: WebSocket (/ws) and demo page; 9090: gRPC API; 9100: /metrics,
# /healthz, /readyz, /admin (and /debug/pprof with --pprof).
EXPOSE 8080 9090 9100
ENTRYPOINT ["/pushgate"]
CMD ["--http-addr", "0.0.0.0:8080", "--grpc-addr", "0.0.0.0:9090", "--ops-addr", "0.0.0.0:9100", "--log-format", "json"]
