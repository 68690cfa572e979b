//! A real 3-primary Redis Cluster for tests: three `redis-server
//! --cluster-enabled yes` on free ports, joined with `redis-cli --cluster
//! create`, without persistence; every node is killed when dropped.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prerender_proxy::cache::{RedisOptions, RedisStore};

/// How long the nodes may take to start and agree on the slot map.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// How long a store may take to subscribe to the notice channel.
const NOTICES_DEADLINE: Duration = Duration::from_secs(10);
/// Primaries in the test cluster (the smallest cluster Redis accepts).
const PRIMARIES: usize = 3;
/// Redis listens for the cluster bus on the client port plus this.
const BUS_PORT_OFFSET: u16 = 10000;

pub struct RedisCluster {
    ports: Vec<u16>,
    nodes: Vec<Option<Child>>,
    dir: tempfile::TempDir,
    tls: Option<ClusterTls>,
}

/// PEM files of a cluster that speaks TLS only (clients, replication and
/// the cluster bus): the CA, and the nodes' certificate (for 127.0.0.1,
/// the address nodes announce) and key.
#[derive(Clone)]
pub struct ClusterTls {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(None)
    }

    /// Starts a cluster on fresh ports, trying again on other ports when a
    /// node cannot bind: a port found free can be taken (by another test's
    /// process or an outgoing connection on the bus port) before
    /// redis-server binds it.
    fn start_with(tls: Option<ClusterTls>) -> RedisCluster {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let mut cluster = RedisCluster::unstarted();
            cluster.tls = tls.clone();
            match cluster.try_create() {
                Ok(()) => return cluster,
                Err(why) if attempt < ATTEMPTS => {
                    eprintln!("test cluster: {why}; trying again on other ports")
                }
                Err(why) => panic!("test cluster: {why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// A cluster on reserved ports that is not running yet ([`create`]
    /// starts it): for clients that must cope with it coming up late.
    pub fn unstarted() -> RedisCluster {
        let ports = free_ports(PRIMARIES);
        RedisCluster {
            nodes: ports.iter().map(|_| None).collect(),
            ports,
            dir: tempfile::tempdir().expect("a temporary directory"),
            tls: None,
        }
    }

    /// A cluster that speaks TLS only.
    pub fn start_tls(tls: ClusterTls) -> RedisCluster {
        RedisCluster::start_with(Some(tls))
    }

    /// Starts the nodes, joins them into a cluster and waits until every
    /// node reports `cluster_state:ok`.
    pub fn create(&mut self) {
        if let Err(why) = self.try_create() {
            panic!("test cluster: {why}");
        }
    }

    /// [`create`], or why a node could not start (it exited: most likely
    /// its port or bus port was taken after it was found free).
    fn try_create(&mut self) -> Result<(), String> {
        for (node, &port) in self.nodes.iter_mut().zip(&self.ports) {
            *node = Some(start_node(port, self.dir.path(), self.tls.as_ref()));
        }
        for index in 0..self.ports.len() {
            let port = self.ports[index];
            let started = Instant::now();
            loop {
                if cli(port, self.tls.as_ref(), &["PING"]).is_some_and(|out| out.trim() == "PONG") {
                    break;
                }
                let exited = self.nodes[index]
                    .as_mut()
                    .and_then(|child| child.try_wait().ok().flatten());
                if let Some(status) = exited {
                    self.nodes[index] = None;
                    for node in 0..self.nodes.len() {
                        self.kill(node);
                    }
                    return Err(format!(
                        "the node on port {port} exited at start ({status})"
                    ));
                }
                assert!(
                    started.elapsed() < STARTUP_DEADLINE,
                    "cluster node on port {port} never answers PING"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let addresses: Vec<String> = self
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(tls_args(self.tls.as_ref()))
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli must be installed (apt install redis-tools)");
        assert!(created.success(), "redis-cli --cluster create failed");
        for &port in &self.ports {
            wait_until(port, "reports cluster_state:ok", || {
                cli(port, self.tls.as_ref(), &["CLUSTER", "INFO"])
                    .is_some_and(|out| out.contains("cluster_state:ok"))
            });
        }
        Ok(())
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// One `redis://127.0.0.1:P` URL per node (`rediss://` on a TLS
    /// cluster), as `--redis` lists them.
    pub fn urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        self.ports
            .iter()
            .map(|port| format!("{scheme}://127.0.0.1:{port}"))
            .collect()
    }

    /// A store on the cluster, given every node, its notice channel
    /// connected.
    pub async fn store(&self) -> Arc<RedisStore> {
        self.store_with(PRIMARIES, RedisOptions::default()).await
    }

    /// A store with `options`, given the first `seeds` nodes (it discovers
    /// the others), its notice channel connected.
    pub async fn store_with(&self, seeds: usize, options: RedisOptions) -> Arc<RedisStore> {
        let store = RedisStore::connect_cluster(&self.urls()[..seeds], options).unwrap();
        assert!(store.wait_notices_connected(NOTICES_DEADLINE).await);
        store
    }

    /// A plain synchronous cluster connection, for inspecting the raw
    /// layout.
    pub fn raw(&self) -> redis::cluster::ClusterConnection {
        let mut builder = redis::cluster::ClusterClientBuilder::new(self.urls());
        if let Some(tls) = &self.tls {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(&tls.ca).expect("the CA file")),
            });
        }
        builder
            .build()
            .expect("cluster urls")
            .get_connection()
            .expect("connect to the test cluster")
    }

    /// Kills one node (its slots become unavailable).
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in 0..self.nodes.len() {
            self.kill(node);
        }
    }
}

fn start_node(port: u16, dir: &std::path::Path, tls: Option<&ClusterTls>) -> Child {
    let config = dir.join(format!("nodes-{port}.conf"));
    let mut cmd = Command::new("redis-server");
    match tls {
        None => cmd.args(["--port", &port.to_string()]),
        Some(tls) => cmd
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
            .args(["--tls-auth-clients", "no"])
            .arg("--tls-cert-file")
            .arg(&tls.cert)
            .arg("--tls-key-file")
            .arg(&tls.key)
            .arg("--tls-ca-cert-file")
            .arg(&tls.ca),
    };
    cmd.args(["--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes", "--cluster-config-file"])
        .arg(&config)
        .arg("--dir")
        .arg(dir)
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (apt install redis-server)")
}

/// redis-cli's TLS arguments for a TLS cluster.
fn tls_args(tls: Option<&ClusterTls>) -> Vec<String> {
    match tls {
        None => Vec::new(),
        Some(tls) => vec![
            "--tls".into(),
            "--cacert".into(),
            tls.ca.display().to_string(),
        ],
    }
}

/// `redis-cli -p PORT ARGS…`'s output, `None` if it failed.
fn cli(port: u16, tls: Option<&ClusterTls>, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(tls_args(tls))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_until(port: u16, what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < STARTUP_DEADLINE,
            "cluster node on port {port} never {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Distinct free ports whose cluster bus ports are free too.
fn free_ports(count: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    while ports.len() < count {
        let port = super::free_port();
        let bus_free = port
            .checked_add(BUS_PORT_OFFSET)
            .is_some_and(|bus| TcpListener::bind(("127.0.0.1", bus)).is_ok());
        if bus_free {
            ports.push(port);
        }
    }
    ports
}
