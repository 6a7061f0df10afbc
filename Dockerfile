# A static sojourn in a small image:
#   docker build -t sojourn .
# Stage 1 builds against musl (fully static: no libc in the image); stage 2
# is scratch plus CA certificates (for HTTPS probes) and the binary, which
# carries CAP_SYS_ADMIN, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH as file
# capabilities so that it can run as nobody (why each: see
# deploy/kubernetes/base/daemonset.yaml).
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev libcap
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
RUN cargo build --release --locked \
 && cp target/release/sojourn /sojourn \
 && setcap cap_sys_admin,cap_sys_ptrace,cap_dac_read_search+ep /sojourn

FROM alpine:3.22 AS certs
RUN apk add --no-cache ca-certificates

FROM scratch
COPY --from=certs /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /sojourn /sojourn
USER 65534:65534
EXPOSE 9818
ENTRYPOINT ["/sojourn"]
