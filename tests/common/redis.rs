//! A real `redis-server` for tests: started on a free port without
//! persistence, killed when dropped; can be stopped and restarted on the
//! same port to simulate an outage.
#![allow(dead_code)]

use std::net::TcpStream;

use super::free_port;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh server may take to accept connections.
const STARTUP_DEADLINE: Duration = Duration::from_secs(10);

pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = free_port();
        let mut server = RedisServer { port, child: None };
        server.restart();
        server
    }

    /// A server on a reserved port that is not running yet ([`restart`]
    /// starts it): for clients that must cope with Redis coming up late.
    pub fn unstarted() -> RedisServer {
        RedisServer {
            port: free_port(),
            child: None,
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("server running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A plain synchronous connection, for inspecting the raw layout.
    pub fn raw(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_connection()
            .expect("connect to test redis")
    }

    /// Kills the server (connections drop, the data is gone).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL ends a paused (SIGSTOPped) server too.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`stop`]).
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt install redis-server)");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                if let Ok(mut conn) = redis::Client::open(self.url())
                    .expect("redis url")
                    .get_connection()
                {
                    if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                        return;
                    }
                }
            }
            assert!(
                started.elapsed() < STARTUP_DEADLINE,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
