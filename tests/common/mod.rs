//! Shared pieces of the integration tests: the real binary as a child
//! process, local origin servers, Redis, and Chromium helpers.
#![allow(dead_code)]

pub mod claims;
pub mod handler_origin;
pub mod layout;
pub mod origin;
pub mod ports;
pub mod proxy;
pub mod redis;
pub mod redis_cluster;
pub mod spa;

pub use ports::free_port;
use std::path::PathBuf;
use std::time::Duration;

use prerender_proxy::render::PoolConfig;

/// The browser used by the tests.
pub fn chrome() -> PathBuf {
    PoolConfig::find_chrome().unwrap_or_else(|| PathBuf::from("/usr/lib/chromium/chromium"))
}

/// A small pool for a 2-core machine.
pub fn small_pool_config() -> PoolConfig {
    let mut cfg = PoolConfig::with_chrome(chrome());
    cfg.browsers = 1;
    cfg.tabs_per_browser = 2;
    cfg.render_timeout = Duration::from_secs(20);
    cfg.ready_timeout = Duration::from_secs(3);
    cfg
}

/// Processes whose command line mentions `marker` (a pool's user-data root),
/// and zombies whose parent is this process.
pub fn count_pool_processes(marker: &str) -> (usize, usize) {
    let me = std::process::id();
    let mut alive = 0;
    let mut zombies = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut fields = stat[close + 1..].split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if state == "Z" {
            if ppid == me {
                zombies += 1;
            }
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            alive += 1;
        }
    }
    (alive, zombies)
}

/// Chromium processes (alive, not zombies) in process group `pgid`: the
/// browsers a proxy started in its own group.
pub fn chromium_in_group(pgid: u32) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let name = &stat[stat.find('(').map_or(0, |i| i + 1)..close];
        let mut fields = stat[close + 1..].split_whitespace();
        let state = fields.next().unwrap_or("");
        let _ppid = fields.next();
        let pgrp: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if pgrp == pgid && state != "Z" && name.contains("chrom") {
            count += 1;
        }
    }
    count
}
