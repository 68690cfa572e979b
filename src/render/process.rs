//! Linux process helpers for browser process trees: descendants, resident
//! memory, liveness and signals, all read from /proc.

use std::collections::HashMap;

/// Pid and parent pid of every process, read from /proc/*/stat.
fn parent_map() -> HashMap<u32, u32> {
    let mut parents = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return parents;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((_, ppid)) = read_stat(pid) {
            parents.insert(pid, ppid);
        }
    }
    parents
}

/// (state, ppid) from /proc/<pid>/stat; the command name may contain spaces
/// and parentheses, so fields are read after the last ')'.
fn read_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// `root` and all its descendants.
pub(crate) fn process_tree(root: u32) -> Vec<u32> {
    if root == 0 {
        return Vec::new();
    }
    let parents = parent_map();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &ppid) in &parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut tree = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if tree.contains(&pid) {
            continue;
        }
        tree.push(pid);
        if let Some(kids) = children.get(&pid) {
            stack.extend(kids);
        }
    }
    tree
}

/// Memory of a process, 0 when it is gone: its proportional set size (PSS),
/// so pages shared by a browser's processes are counted once across the
/// tree (summing plain RSS counts an idle Chromium's shared pages ≈ 2.5×).
/// Falls back to RSS where smaps_rollup is unavailable.
fn memory_bytes(pid: u32) -> u64 {
    if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        if let Some(kb) = rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            return kb * 1024;
        }
    }
    rss_bytes(pid)
}

/// Resident memory of a process, 0 when it is gone.
fn rss_bytes(pid: u32) -> u64 {
    let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page_size).unwrap_or(4096)
}

/// Memory of a process and all its descendants (see [`memory_bytes`]).
pub(crate) fn tree_rss_bytes(root: u32) -> u64 {
    if root == 0 {
        return 0;
    }
    process_tree(root).into_iter().map(memory_bytes).sum()
}

/// Whether the process exists and is not a zombie.
pub(crate) fn is_running(pid: u32) -> bool {
    pid != 0 && matches!(read_stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Sends a signal; a process that is already gone is not an error.
pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill has no memory-safety preconditions; pid is a process we launched.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Kills the browsers a previous instance left behind when it died without
/// closing them (SIGKILL, OOM): their top process was re-parented to init
/// (ppid 1) and its `--user-data-dir` lies under a `<prefix>*` directory in
/// `temp_dir`. Every process of such a browser (they all carry the
/// directory on their command line) is killed and the directory removed.
/// Browsers of live instances have their proxy as parent and are left
/// alone. Returns the number of processes killed.
pub(crate) fn reap_orphaned_browsers(temp_dir: &std::path::Path, prefix: &str) -> usize {
    let marker = format!("--user-data-dir={}/{prefix}", temp_dir.display());
    let cmdline = |pid: u32| -> Option<String> {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        Some(String::from_utf8_lossy(&raw).replace('\0', " "))
    };
    // The root directory (`<temp>/<prefix>XXXX`) named by a command line.
    let root_of = |line: &str| -> Option<String> {
        let start = line.find(&marker)? + "--user-data-dir=".len();
        let rest = &line[start..];
        let after_prefix = rest.find(prefix)? + prefix.len();
        let end = rest[after_prefix..]
            .find(['/', ' '])
            .map_or(rest.len(), |i| after_prefix + i);
        Some(rest[..end].to_string())
    };
    let parents = parent_map();
    let mut orphan_roots: std::collections::HashSet<String> = parents
        .iter()
        .filter(|(_, &ppid)| ppid == 1)
        .filter_map(|(&pid, _)| cmdline(pid))
        .filter(|line| !line.contains("--type="))
        .filter_map(|line| root_of(&line))
        .collect();
    // Roots named `<prefix><owner pid>-…` whose owner is gone: their
    // browsers may have been re-parented to a subreaper rather than init,
    // or have exited on their own and left the directory behind.
    orphan_roots.extend(roots_of_dead_owners(temp_dir, prefix));
    if orphan_roots.is_empty() {
        return 0;
    }
    let mut killed = 0;
    for &pid in parents.keys() {
        if let Some(line) = cmdline(pid) {
            if root_of(&line).is_some_and(|r| orphan_roots.contains(&r)) {
                signal(pid, libc::SIGKILL);
                killed += 1;
            }
        }
    }
    for root in &orphan_roots {
        let _ = std::fs::remove_dir_all(root);
    }
    killed
}

/// `<temp_dir>/<prefix><pid>-…` directories whose `pid` runs no more (nor
/// is this process).
fn roots_of_dead_owners(temp_dir: &std::path::Path, prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(temp_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let owner: u32 = name.strip_prefix(prefix)?.split_once('-')?.0.parse().ok()?;
            (owner != std::process::id() && !is_running(owner))
                .then(|| entry.path().to_string_lossy().into_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_of_dead_owners_are_found_and_live_ones_kept() {
        let temp = tempfile::tempdir().unwrap();
        let dead = temp.path().join(format!("p-{}-abc", u32::MAX - 1));
        let mine = temp.path().join(format!("p-{}-def", std::process::id()));
        let other = temp.path().join("p-notapid-ghi");
        for dir in [&dead, &mine, &other] {
            std::fs::create_dir(dir).unwrap();
        }
        assert_eq!(
            roots_of_dead_owners(temp.path(), "p-"),
            vec![dead.to_string_lossy().into_owned()]
        );
        reap_orphaned_browsers(temp.path(), "p-");
        assert!(!dead.exists() && mine.exists() && other.exists());
    }

    #[test]
    fn own_process_is_running_and_has_memory() {
        let me = std::process::id();
        assert!(is_running(me));
        assert!(tree_rss_bytes(me) > 0);
        assert!(process_tree(me).contains(&me));
        assert!(!is_running(u32::MAX - 1));
    }
}
