//! A proxy killed with SIGKILL cannot close its browsers; the next instance
//! started on the machine kills them (and removes their profiles) before it
//! launches its own.

mod common;

use std::time::{Duration, Instant};

use common::proxy::ProxyProcess;

/// Browser processes whose parent is `pid`.
fn browsers_of(pid: u32) -> Vec<u32> {
    common::processes()
        .into_iter()
        .filter(|p| p.ppid == pid && p.cmdline_contains("prerender-browsers-"))
        .map(|p| p.pid)
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rfind(')')
                .and_then(|c| s[c + 1..].split_whitespace().next().map(|st| st != "Z"))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

#[test]
fn browsers_of_a_killed_instance_are_reaped_by_the_next_one() {
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = tmp.path().to_str().unwrap().to_string();
    let env = [("TMPDIR", tmpdir.as_str())];
    let args = ["--origin", "http://127.0.0.1:9", "--browsers", "1"];
    let first = ProxyProcess::start_with_env(&args, &env);
    let mut first = first;
    first.wait_until("/readyz", Duration::from_secs(30));
    let browsers = browsers_of(first.pid());
    assert!(
        !browsers.is_empty(),
        "no browser found under the first instance"
    );
    // SIGKILL the proxy alone: its browsers are orphaned.
    unsafe {
        libc::kill(first.pid() as i32, libc::SIGKILL);
    }
    let _ = first.child.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        browsers.iter().any(|&b| alive(b)),
        "the browsers died with the proxy; nothing to reap"
    );

    let mut second = ProxyProcess::start_with_env(&args, &env);
    second.wait_until("/readyz", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(10);
    while browsers.iter().any(|&b| alive(b)) {
        assert!(
            Instant::now() < deadline,
            "orphaned browsers still alive: {browsers:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let profiles: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("prerender-browsers-"))
        .collect();
    assert_eq!(
        profiles.len(),
        1,
        "only the live instance's profile directory remains: {profiles:?}"
    );
    second.stop();
}
