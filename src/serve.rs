//! `prerender-proxy serve`: binds the listeners, wires the parts together and
//! runs until SIGTERM/SIGINT, then shuts down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::{Admin, Health};
use crate::config::{Config, Role};
use crate::listener::{self, ListenerLimits};
use crate::proxy::PublicProxy;

/// A running server: its bound addresses and the handle to stop it.
pub struct Running {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub health: Arc<Health>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

pub async fn start(config: Arc<Config>) -> anyhow::Result<Running> {
    raise_fd_limit();
    let public = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (listen)", config.listen))?;
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin_listen)", config.admin_listen))?;
    let public_addr = public.local_addr()?;
    let admin_addr = admin.local_addr()?;

    let health = Arc::new(Health::new(false));
    let proxy = Arc::new(PublicProxy::new(config.clone()));
    let admin_api = Arc::new(Admin::new(health.clone()));
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let limits = ListenerLimits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
    };
    tasks.spawn(listener::serve(
        "public",
        public,
        limits.clone(),
        move |req, peer| proxy.clone().handle(req, peer),
        stop_rx.clone(),
        config.shutdown_timeout,
    ));
    tasks.spawn(listener::serve(
        "admin",
        admin,
        limits,
        move |req, peer| admin_api.clone().handle(req, peer),
        stop_rx,
        config.shutdown_timeout,
    ));
    health.set_listeners_up();
    tracing::info!(%public_addr, %admin_addr, role = ?config.role, "listening");
    if config.role != Role::All {
        tracing::info!("role {:?}", config.role);
    }
    Ok(Running {
        public_addr,
        admin_addr,
        health,
        stop,
        tasks,
    })
}

impl Running {
    /// Stops accepting and waits for in-flight requests (bounded by
    /// `shutdown_timeout` inside each listener).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let running = start(Arc::new(config)).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Idle crawler connections are cheap but each is a file descriptor: lift
/// the soft limit to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
