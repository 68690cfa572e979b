//! prerender-proxy: a reverse proxy that serves JavaScript websites to
//! crawlers as rendered HTML and passes humans straight through.
//!
//! Layout (one module per concept; see `docs/ARCHITECTURE.md`):
//! - `config`: command line, environment and TOML resolved into one `Config`.
//! - `bot`: who is a crawler (pattern families + woothee) and which requests render.
//! - `proxy`: the public listener — host checks, human passthrough, bot path.
//! - `cache`: cache keys and the page store (Redis or embedded).
//! - `http`: the body type and the small answers the proxy writes itself.
//! - `domain`: the one parse of a public host (config, routing, cache keys).
//! - `render`: the Chromium pool and one page render.
//! - `pipeline`: the render job, the in-process and shared render queues,
//!   the renderer's job consumer and the refresher.
//! - `cmd`: the subcommands (`serve`, `render`, `is-bot`, `check-config`).
//! - `state`: readiness and per-domain figures, written by the pipeline and
//!   the proxy, read by `admin`.
//! - `admin`: the admin listener (health, readiness, API, metrics, dashboard).
//! - `verify`: crawler verification (reverse DNS, published IP ranges) and
//!   the render budget of unverified bots.

pub mod address;
pub mod admin;
pub mod bot;
pub mod cache;
pub mod certificates;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod domain;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod pipeline;
pub mod proxy;
pub mod render;
pub mod state;
pub mod telemetry;
pub mod upstream;
pub mod verify;
