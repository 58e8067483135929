# syntax=docker/dockerfile:1
#
# Images of the docker-compose demo (docker-compose.yml), all from one build:
#   control-plane  the decision service (default target): distroless, non-root
#   demo-upstream  the demo API behind Envoy: distroless, non-root
#   envoy          the official Envoy image with the filter at /etc/envoy/rate_limit_filter.wasm
#
#   docker build -t rate-limit-control-plane .
#   docker build --target envoy -t rate-limit-envoy .
#
# The Rust version matches the toolchain the workspace is tested with; the Envoy version the
# one the tests run (1.40).
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG ENVOY_IMAGE=envoyproxy/envoy:v1.40-latest

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
RUN rustup target add wasm32-wasip1
# The whole workspace: cargo reads every member's manifest (and target paths) even when
# building only some packages, and --locked needs the lock file.
COPY Cargo.toml Cargo.lock ./
COPY wire wire
COPY control-plane control-plane
COPY filter filter
COPY demo-upstream demo-upstream
COPY tests tests
COPY benches benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p control-plane -p demo-upstream \
 && cargo build --locked --release -p rate-limit-filter --target wasm32-wasip1 \
 && mkdir -p /out \
 && cp target/release/control-plane target/release/demo-upstream \
       target/wasm32-wasip1/release/rate_limit_filter.wasm /out/

FROM ${ENVOY_IMAGE} AS envoy
COPY --from=builder /out/rate_limit_filter.wasm /etc/envoy/rate_limit_filter.wasm
# The compose file mounts envoy/envoy.compose.yaml over this default.
COPY envoy/envoy.compose.yaml /etc/envoy/envoy.yaml

FROM ${RUNTIME_IMAGE} AS demo-upstream
COPY --from=builder /out/demo-upstream /usr/local/bin/demo-upstream
USER nonroot
ENV DEMO_UPSTREAM_LISTEN=0.0.0.0:8081
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/demo-upstream"]

FROM ${RUNTIME_IMAGE} AS control-plane
COPY --from=builder /out/control-plane /usr/local/bin/control-plane
COPY rate_limit_config.yaml /etc/rate-limit/rate_limit_config.yaml
USER nonroot
ENV RATE_LIMIT_LISTEN=0.0.0.0:8080 \
    RATE_LIMIT_CONFIG_PATH=/etc/rate-limit/rate_limit_config.yaml
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/control-plane"]
