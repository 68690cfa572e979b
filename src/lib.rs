//! prerender-proxy: a reverse proxy that serves JavaScript websites to
//! crawlers as rendered HTML and passes humans straight through.
//!
//! Layout (one module per concept; see `docs/ARCHITECTURE.md`):
//! - `config`: command line, environment and TOML resolved into one `Config`.
//! - `bot`: who is a crawler (pattern families + woothee) and which requests render.
//! - `proxy`: the public listener — host checks, human passthrough, bot path.
//! - `cache`: cache keys and the page store (Redis or embedded).
//! - `domain`: the one parse of a public host (config, routing, cache keys).
//! - `render`: the Chromium pool, one page render, and the render queue.
//! - `refresh`: the refresher (scheduled re-renders, origin polling).
//! - `admin`: the admin listener (health, readiness, API, metrics, dashboard).
//! - `verify`: crawler verification (reverse DNS, published IP ranges) and
//!   the render budget of unverified bots.

pub mod admin;
pub mod bot;
pub mod cache;
pub mod check_config;
pub mod cli;
pub mod config;
pub mod domain;
pub mod is_bot;
pub mod jobs;
pub mod listener;
pub mod listener_tls;
pub mod metrics;
pub mod prerender;
pub mod proxy;
pub mod proxy_protocol;
pub mod refresh;
pub mod render;
pub mod render_command;
pub mod serve;
pub mod telemetry;
pub mod upstream;
pub mod verify;
