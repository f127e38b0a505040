# syntax=docker/dockerfile:1
# Strangler at the edge: a small, non-root runtime image.
#
#   docker build -t strangler .
#   docker run --rm -p 8443:8443 -v $PWD/deploy/example:/etc/strangler:ro strangler
#
# Build stage: the toolchain this repository is tested with.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p strangler --bin strangler \
 && strip target/release/strangler

# Runtime: glibc and the CA bundle (for https:// upstreams verified against the system
# roots), no shell, no package manager, user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/strangler /usr/local/bin/strangler
USER 65532:65532
# 8443: clients (TLS), 8080: the HTTP -> HTTPS redirect, 9901: the admin API.
EXPOSE 8443 8080 9901
# /healthz is open without the admin token; `strangler health` needs no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/strangler", "health", "--admin", "127.0.0.1:9901"]
ENTRYPOINT ["/usr/local/bin/strangler"]
CMD ["run", "--config", "/etc/strangler/routes.yaml"]
