//! A real `redis-server` for tests: started on a free port without
//! persistence, killed when dropped; can be stopped and restarted on the
//! same port to simulate an outage.
#![allow(dead_code)]

use std::net::TcpStream;
use std::sync::Arc;

use prerender_proxy::cache::{RedisOptions, RedisStore};

use super::free_port;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh server may take to accept connections.
const STARTUP_DEADLINE: Duration = Duration::from_secs(10);
/// How long a store may take to subscribe to the notice channel.
const NOTICES_DEADLINE: Duration = Duration::from_secs(10);

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

    /// Whether `key` exists.
    pub fn exists(&self, key: &str) -> bool {
        key_exists(self.raw(), key)
    }

    /// A store on this server, its notice channel connected.
    pub async fn store(&self) -> Arc<RedisStore> {
        self.store_with(RedisOptions::default()).await
    }

    /// A store on this server with `options`, its notice channel connected.
    pub async fn store_with(&self, options: RedisOptions) -> Arc<RedisStore> {
        let store = RedisStore::connect(&self.url(), options).unwrap();
        assert!(store.wait_notices_connected(NOTICES_DEADLINE).await);
        store
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

/// A real `redis-server` speaking TLS only (`--port 0 --tls-port`), its
/// certificate (for `localhost`, in PEM files) signed by a test CA, with
/// one ACL user (`default` is off).
pub struct TlsRedisServer {
    port: u16,
    child: Child,
    ca_pem: String,
    user: String,
    password: String,
    _dir: tempfile::TempDir,
}

impl TlsRedisServer {
    pub fn start(
        ca_pem: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
        user: &str,
        password: &str,
    ) -> TlsRedisServer {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(cert)
            .arg("--tls-key-file")
            .arg(key)
            .arg("--tls-ca-cert-file")
            .arg(&ca_file)
            .args(["--tls-auth-clients", "no"])
            .args(["--user", "default", "off"])
            .args([
                "--user",
                user,
                "on",
                &format!(">{password}"),
                "~*",
                "&*",
                "+@all",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt install redis-server)");
        let server = TlsRedisServer {
            port,
            child,
            ca_pem: ca_pem.to_string(),
            user: user.to_string(),
            password: password.to_string(),
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            if let Ok(mut conn) = server.try_raw() {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return server;
                }
            }
            assert!(
                started.elapsed() < STARTUP_DEADLINE,
                "redis-server did not start TLS on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `rediss://user:password@localhost:port/`.
    pub fn url(&self) -> String {
        format!(
            "rediss://{}:{}@localhost:{}/",
            self.user, self.password, self.port
        )
    }

    fn try_raw(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::build_with_tls(
            self.url(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(self.ca_pem.clone().into_bytes()),
            },
        )?
        .get_connection()
    }

    /// A synchronous TLS connection as the ACL user, for inspecting keys.
    pub fn raw(&self) -> redis::Connection {
        self.try_raw().expect("connect to test redis over TLS")
    }

    /// Whether `key` exists.
    pub fn exists(&self, key: &str) -> bool {
        key_exists(self.raw(), key)
    }
}

impl Drop for TlsRedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `key` exists, asked on `conn`.
fn key_exists(mut conn: redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query(&mut conn).unwrap()
}
