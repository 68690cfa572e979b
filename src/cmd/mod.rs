//! The subcommands: each turns parsed arguments into a run of the library and
//! an exit code, so `main.rs` only parses and dispatches.

pub mod check_config;
pub mod is_bot;
pub mod render;
pub mod serve;
