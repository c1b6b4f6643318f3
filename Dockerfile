# iam-key-revoker: a minimal, non-root runtime image.
#
#   docker build -t iam-key-revoker .
#   docker run --rm -e IAM_KEY_REVOKER__SQS__QUEUE_URL=... iam-key-revoker
#
# Configuration comes from IAM_KEY_REVOKER__* variables, or a TOML file given with
# `run --config FILE` (config/ is in the image under /etc/iam-key-revoker/).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src

# Dependencies first, in a layer of their own: rebuilt only when Cargo.toml or
# Cargo.lock change, not on every source edit. build.rs and link/ set how the binary is
# linked (see build.rs).
COPY Cargo.toml Cargo.lock build.rs ./
COPY link ./link
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

COPY src ./src
# Newer mtimes than the placeholder build, so cargo rebuilds the crate itself.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked

# glibc, CA certificates and a non-root user, nothing else: no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/iam-key-revoker /usr/local/bin/iam-key-revoker
COPY config/ /etc/iam-key-revoker/
# 65532 is distroless's nonroot user; numeric so the kubelet can verify runAsNonRoot.
USER 65532:65532
# metrics.listen: /metrics, /healthz, /readyz
EXPOSE 9090
# Exec form: the worker is PID 1 and receives SIGTERM directly, so it drains in-flight
# jobs within worker.shutdown_grace_seconds before the container stops.
ENTRYPOINT ["/usr/local/bin/iam-key-revoker"]
CMD ["run"]
