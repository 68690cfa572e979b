# prerender-proxy container image.
#
#   docker build -t prerender-proxy .
#   docker run --rm -p 3000:3000 -e PRERENDER_ORIGIN=http://origin.internal:8080 prerender-proxy
#
# Build stage: the official Rust image. Runtime: Debian slim with Debian's
# Chromium, so the browser is patched by the distribution, not pinned here.

FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first: this layer is rebuilt only when Cargo.toml/Cargo.lock
# change, not on every source edit. Placeholder sources satisfy the manifest's
# targets: every [[bench]] it names must exist for the manifest to load, so
# their names are read from it (.ci/check-deploy runs this step's placeholders
# against the manifest).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && for bench in $(sed -n '/^\[\[bench\]\]/,/^name/s/^name = "\(.*\)"/\1/p' Cargo.toml); do \
      echo 'fn main() {}' > "benches/$bench.rs"; \
    done \
 && cargo build --release --locked --bin prerender-proxy \
 && rm -rf src benches \
      target/release/prerender-proxy* \
      target/release/deps/prerender_proxy-* target/release/deps/libprerender_proxy-* \
      target/release/.fingerprint/prerender-proxy-*

# The real sources (bot-patterns/ is compiled into the binary).
COPY . .
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin prerender-proxy \
 && cp target/release/prerender-proxy /usr/local/bin/prerender-proxy


FROM debian:bookworm-slim AS runtime

# chromium: the renderer. Fonts: Liberation (metric-compatible with Arial,
# Times, Courier) and Noto (wide script coverage) so pages lay out and
# measure as they do on desktops. tini: PID 1 that forwards signals and reaps
# Chromium's helper processes. curl: the HEALTHCHECK below — a few MB next to
# Chromium's ~300 MB, and a real HTTP client with a timeout is sturdier than
# a hand-written request over bash's /dev/tcp; it also helps when debugging
# from inside the container.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      chromium \
      fonts-liberation \
      fonts-noto-core \
      fonts-noto-color-emoji \
      ca-certificates \
      tini \
      curl \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*

# A dedicated unprivileged user; Chromium's profile directories go to /tmp.
# Chromium's own sandbox cannot start here (Docker's default seccomp profile
# refuses user namespaces and the image ships no setuid helper), so the
# browser runs with --no-sandbox and the container is the isolation boundary.
RUN groupadd --system --gid 10001 prerender \
 && useradd --system --uid 10001 --gid prerender --home-dir /home/prerender --create-home \
      --shell /usr/sbin/nologin prerender

COPY --from=build /usr/local/bin/prerender-proxy /usr/local/bin/prerender-proxy

# The real Chromium binary: /usr/bin/chromium is a wrapper script that adds
# its own flags. The admin listener binds all interfaces inside the container
# so the orchestrator's probes can reach it; publish port 3001 only to
# trusted networks (see docker-compose.yml).
ENV CHROME_PATH=/usr/lib/chromium/chromium \
    PRERENDER_LISTEN=0.0.0.0:3000 \
    PRERENDER_ADMIN_LISTEN=0.0.0.0:3001

USER prerender
WORKDIR /home/prerender
EXPOSE 3000 3001

# /readyz answers 200 once the listeners are up and a browser has launched,
# and stays 200 (naming the degraded part) during a store outage. The start
# period covers the first browser launch. Assumes the admin port stays 3001.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:3001/readyz || exit 1

ENTRYPOINT ["/usr/bin/tini", "--", "prerender-proxy"]
CMD ["serve"]

LABEL org.opencontainers.image.title="prerender-proxy" \
      org.opencontainers.image.description="A reverse proxy that serves JavaScript websites to crawlers as rendered HTML" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.source="https://github.com/prerender-proxy/prerender-proxy"
