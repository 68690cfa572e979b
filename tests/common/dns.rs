//! A local DNS server for crawler verification tests: Debian's `dnsmasq`
//! on a free loopback port, answering only from the records it is given
//! (`--no-resolv --no-hosts`: it never forwards a query anywhere, and names
//! it does not know are NXDOMAIN). Killed when dropped.
#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// How long dnsmasq may take to listen.
const STARTUP_DEADLINE: Duration = Duration::from_secs(10);

pub struct DnsServer {
    port: u16,
    child: Child,
}

/// `66.249.66.1` → `1.66.249.66.in-addr.arpa`.
fn reverse_name(ip: &str) -> String {
    let ip: Ipv4Addr = ip.parse().expect("an IPv4 address");
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa")
}

impl DnsServer {
    /// Serves `ptr` (address → name) and `a` (name → address) records. An
    /// A record also answers the reverse lookup of its address, as
    /// dnsmasq's `host-record` does.
    pub fn start(ptr: &[(&str, &str)], a: &[(&str, &str)]) -> DnsServer {
        let port = free_port();
        // Debian installs it in /usr/sbin, which a user's PATH may lack.
        let binary = if std::path::Path::new("/usr/sbin/dnsmasq").exists() {
            "/usr/sbin/dnsmasq"
        } else {
            "dnsmasq"
        };
        let mut cmd = Command::new(binary);
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            // Everything below these is answered locally (NXDOMAIN when unknown).
            "--local=/in-addr.arpa/",
            "--local=/ip6.arpa/",
            "--local=/com/",
            "--local=/net/",
            "--local=/test/",
        ])
        .arg(format!("--port={port}"));
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // As root, dnsmasq would switch to a `dnsmasq`/`nobody` user
            // that may not exist in a container.
            cmd.arg("--user=root");
        }
        for (ip, name) in ptr {
            cmd.arg(format!("--ptr-record={},{name}", reverse_name(ip)));
        }
        for (name, ip) in a {
            cmd.arg(format!("--host-record={name},{ip}"));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq must be installed (apt install dnsmasq-base)");
        let mut server = DnsServer { port, child };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("dnsmasq exited at start: {status}");
            }
            assert!(
                started.elapsed() < STARTUP_DEADLINE,
                "dnsmasq did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// `IP:PORT` for `--dns-resolver`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
