# syntax=docker/dockerfile:1
# Countersign: multi-stage build. The builder compiles the wasm bundle and the server in release
# mode with the same script the README uses; the runtime image holds only the binary, the site
# folder and the default policy, and runs as an unprivileged user.

FROM rust:1.95-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY . .
RUN scripts/setup.sh build && scripts/build-site.sh --release

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/countersign --create-home countersign
WORKDIR /app
COPY --from=builder /build/target/release/countersign /app/countersign
COPY --from=builder /build/target/site /app/site
COPY --from=builder /build/policies /app/policies
ENV LEPTOS_SITE_ROOT=/app/site \
    COUNTERSIGN_BIND=0.0.0.0:3000 \
    COUNTERSIGN_DATABASE_URL=sqlite:///var/lib/countersign/countersign.db \
    COUNTERSIGN_LOG_FORMAT=json
USER countersign
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:3000/healthz || exit 1
ENTRYPOINT ["/app/countersign"]
CMD ["serve"]
