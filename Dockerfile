# ai-gateway container image: the `dist` release binary on a distroless runtime (glibc, CA certificates,
# tzdata; no shell, no OpenSSL: TLS is rustls) plus libgcc_s, the one other library the binary links,
# running as the unprivileged user 65532. About 35 MB, 20 of them the binary.
#
#   docker build -t ai-gateway .
#   docker run --rm -p 8080:8080 ai-gateway                          # no config: the echo backend
#   docker run --rm -p 8080:8080 -v "$PWD/config.yaml:/etc/ai-gateway/config.yaml:ro" ai-gateway
#   docker run --rm --network host -e LLM_URL=http://localhost:8080/v1/completions -e GATEWAY_PORT=9001 ai-gateway
#
# Config: /etc/ai-gateway/config.yaml when it exists (mount a file or a directory there; edits are
# reloaded), else LLM_URL (seed 004's setup), else the embedded default (an echo backend on 8080).
# The working directory is the /data volume, so relative paths such as request_log.dir land there.
# SIGTERM (the binary is PID 1 and handles it) lets requests and streams in flight finish for up to
# server.shutdown_grace_s (30 s): give `docker stop` more than that (`--stop-timeout 35`).
#
# Build arguments:
#   RUST_IMAGE     the builder. Debian 12 (bookworm), like the runtime: a binary linked against a newer
#                  glibc would not start there.
#   RUNTIME_IMAGE  the runtime base: glibc without OpenSSL (distroless cc-debian12, with OpenSSL and
#                  libstdc++, would make the image 43 MB).
#   LIBGCC_IMAGE   where libgcc_s.so.1 comes from: Debian 12's, as in distroless cc-debian12.
#   LIBDIR         its directory: /lib/x86_64-linux-gnu (arm64: /lib/aarch64-linux-gnu).
#   BINARY         build   (default) compile with `cargo build --profile dist` in the builder stage;
#                  context take a binary already built on the host, target/dist/ai-gateway, from the
#                  build context (deploy/test.sh does, with a runtime base made offline). Needs
#                  BuildKit, which skips the stage not asked for.

ARG RUST_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/base-nossl-debian12:nonroot
ARG LIBGCC_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARY=build
ARG LIBDIR=/lib/x86_64-linux-gnu

FROM ${RUST_IMAGE} AS build
# jemalloc's build runs make.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --profile dist --locked --bin ai-gateway \
    && mkdir -p /out/data \
    && cp target/dist/ai-gateway /out/ai-gateway

FROM scratch AS context
WORKDIR /out/data
COPY target/dist/ai-gateway /out/ai-gateway

FROM ${BINARY} AS binary

FROM ${LIBGCC_IMAGE} AS libgcc

FROM ${RUNTIME_IMAGE} AS runtime
ARG LIBDIR
COPY --from=libgcc ${LIBDIR}/libgcc_s.so.1 ${LIBDIR}/libgcc_s.so.1
COPY --from=binary /out/ai-gateway /usr/local/bin/ai-gateway
COPY --from=binary --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=4s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/ai-gateway", "health"]
ENTRYPOINT ["/usr/local/bin/ai-gateway"]
