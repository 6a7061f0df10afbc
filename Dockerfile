# A static sojourn in a small image:
#   docker build -t sojourn .
# Stage 1 builds against musl (fully static: no libc in the image); stage 2
# is scratch plus CA certificates (for HTTPS probes) and the binary. The
# binary carries no file capabilities: each manifest grants what its mode
# needs (the node DaemonSet two capabilities, see
# deploy/kubernetes/base/daemonset.yaml; a proxy sidecar none), and a file
# capability would stop the binary from starting at all in a container
# that drops it or sets no_new_privs (allowPrivilegeEscalation: false).
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
RUN cargo build --release --locked \
 && cp target/release/sojourn /sojourn

FROM alpine:3.22 AS certs
RUN apk add --no-cache ca-certificates

FROM scratch
COPY --from=certs /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /sojourn /sojourn
USER 65534:65534
EXPOSE 9818
ENTRYPOINT ["/sojourn"]
