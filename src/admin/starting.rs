//! The admin listener while the process starts, before the first browser
//! has launched (which takes seconds, more on a busy machine): `/healthz`
//! answers 200 (the process runs) and `/readyz` 503 with what it waits for
//! (SPEC §5), so probes get an answer instead of a connection that hangs
//! in the accept queue. Any other request waits for the full admin server
//! and is answered by it, as it would have been from the accept queue.
//! Each connection is closed after one answer, so none outlives the
//! hand-over.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use super::{probe, Admin};
use crate::http::respond;
use crate::state::Health;

/// Bound of one connection while starting: a client that sends nothing,
/// or a request waiting for the full admin server (a launch is bounded by
/// the pool's own launch timeout, well below this).
const CONNECTION_BOUND: Duration = Duration::from_secs(120);
/// Pause after a failed accept (out of file descriptors), not to spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Answers on `listener` until `done` fires (or its sender is dropped),
/// then gives the listener back. `admin` gets the full admin server once
/// it exists.
pub async fn answer_until(
    listener: TcpListener,
    health: Arc<Health>,
    admin: watch::Receiver<Option<Arc<Admin>>>,
    mut done: oneshot::Receiver<()>,
) -> TcpListener {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut done => return listener,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(ACCEPT_RETRY).await;
            continue;
        };
        let health = health.clone();
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let health = health.clone();
                let mut admin = admin.clone();
                async move {
                    if let Some(answer) = probe(&req, &health) {
                        return Ok::<_, Infallible>(answer);
                    }
                    let full = admin
                        .wait_for(Option::is_some)
                        .await
                        .ok()
                        .and_then(|a| a.clone());
                    Ok(match full {
                        Some(full) => full.handle(req, peer).await,
                        None => respond::json(
                            StatusCode::SERVICE_UNAVAILABLE,
                            &serde_json::json!({"error": "the admin server did not start"}),
                        ),
                    })
                }
            });
            let connection = http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_BOUND, connection).await;
        });
    }
}
