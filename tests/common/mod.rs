//! Shared pieces of the integration tests: the real binary as a child
//! process, local origin servers, Redis, and Chromium helpers.
#![allow(dead_code)]

pub mod claims;
pub mod dashboard;
pub mod dns;
pub mod handler_origin;
pub mod layout;
pub mod origin;
pub mod ports;
pub mod proxy;
pub mod redis;
pub mod redis_cluster;
pub mod spa;
pub mod tls;

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

/// One entry of `/proc`: what `/proc/<pid>/stat` says of a process.
pub struct ProcessInfo {
    pub pid: u32,
    /// The command name, from between the parentheses.
    pub name: String,
    /// One letter: `R`, `S`, `Z` (zombie), `X` (dead), …
    pub state: String,
    pub ppid: u32,
    pub pgrp: u32,
}

impl ProcessInfo {
    /// The process's command line, NUL-separated (empty for a zombie).
    pub fn cmdline(&self) -> String {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        String::from_utf8_lossy(&cmdline).into_owned()
    }

    /// Whether the process's command line contains `marker`.
    pub fn cmdline_contains(&self, marker: &str) -> bool {
        self.cmdline().contains(marker)
    }
}

/// Every process whose `/proc/<pid>/stat` could be read.
pub fn processes() -> Vec<ProcessInfo> {
    let pids = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok());
    let mut found = Vec::new();
    for pid in pids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let name = stat[stat.find('(').map_or(0, |i| i + 1)..close].to_string();
        let mut fields = stat[close + 1..].split_whitespace();
        let state = fields.next().unwrap_or("").to_string();
        let ppid = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let pgrp = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        found.push(ProcessInfo {
            pid,
            name,
            state,
            ppid,
            pgrp,
        });
    }
    found
}

/// Processes whose command line mentions `marker` (a pool's user-data root),
/// and zombies whose parent is this process.
pub fn count_pool_processes(marker: &str) -> (usize, usize) {
    let me = std::process::id();
    let mut alive = 0;
    let mut zombies = 0;
    for p in processes() {
        if p.state == "Z" {
            if p.ppid == me {
                zombies += 1;
            }
        } else if p.cmdline_contains(marker) {
            alive += 1;
        }
    }
    (alive, zombies)
}

/// Live (neither zombie nor dead) processes whose command line contains
/// `marker`.
pub fn processes_with(marker: &str) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| !matches!(p.state.as_str(), "" | "Z" | "X") && p.cmdline_contains(marker))
        .map(|p| p.pid)
        .collect()
}

/// Chromium processes (alive, not zombies) in process group `pgid`: the
/// browsers a proxy started in its own group.
pub fn chromium_in_group(pgid: u32) -> usize {
    processes()
        .iter()
        .filter(|p| p.pgrp == pgid && p.state != "Z" && p.name.contains("chrom"))
        .count()
}
