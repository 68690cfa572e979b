//! The notice subscription: one connection subscribed to `render-done`
//! and `render-purge`, kept alive across outages and failovers, whose
//! messages feed the store's broadcast channels.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, watch};

use super::{cluster, Names, RedisOptions};
use crate::cache::PurgeEvent;

/// First and longest pause before the notice subscriber reconnects.
const SUBSCRIBER_RETRY_MIN: Duration = Duration::from_millis(100);
const SUBSCRIBER_RETRY_MAX: Duration = Duration::from_secs(2);
/// The notice connection is pinged this often to notice a dead server
/// that never closed the socket.
const SUBSCRIBER_PING_INTERVAL: Duration = Duration::from_secs(5);

/// Where the notice subscription connects: the configured nodes and, on
/// a cluster, every node the cluster reports, so that it can move on when
/// its node fails even if only one was configured.
pub(super) struct NoticeNodes {
    pub(super) configured: Vec<redis::Client>,
    pub(super) cluster: Option<Arc<cluster::LazyCluster>>,
}

impl NoticeNodes {
    /// The nodes to try in turn, configured ones first.
    async fn candidates(&self) -> Vec<redis::Client> {
        let mut nodes = self.configured.clone();
        if let (Some(cluster), Some(template)) = (&self.cluster, self.configured.first()) {
            match cluster::node_clients(cluster, template).await {
                Ok(found) => {
                    for node in found {
                        let addr = node.get_connection_info().addr();
                        if !nodes.iter().any(|n| n.get_connection_info().addr() == addr) {
                            nodes.push(node);
                        }
                    }
                }
                Err(error) => tracing::debug!(%error, "redis cluster nodes not listed"),
            }
        }
        nodes
    }
}

/// Keeps one subscription to `render-done` and `render-purge` alive,
/// reconnecting with backoff (to the next of `nodes` each time); after a
/// reconnect it announces [`PurgeEvent::All`] because purges may have been
/// missed meanwhile.
pub(super) async fn run_subscriber(
    names: Names,
    nodes: NoticeNodes,
    done_tx: broadcast::Sender<String>,
    purge_tx: broadcast::Sender<PurgeEvent>,
    connected: watch::Sender<bool>,
    options: RedisOptions,
) {
    let (done_channel, purge_channel) = (names.done_channel(), names.purge_channel());
    let mut retry = SUBSCRIBER_RETRY_MIN;
    let mut was_connected = false;
    let mut candidates = Vec::new();
    let mut next = 0;
    loop {
        if next >= candidates.len() {
            candidates = nodes.candidates().await;
            next = 0;
        }
        let Some(client) = candidates.get(next) else {
            return;
        };
        next += 1;
        let subscribed = async {
            let pubsub = tokio::time::timeout(options.connect_timeout, client.get_async_pubsub())
                .await
                .map_err(|_| "connect timeout".to_owned())?
                .map_err(|e| e.to_string())?;
            let (mut sink, stream) = pubsub.split();
            tokio::time::timeout(
                options.response_timeout,
                sink.subscribe(&[&done_channel, &purge_channel]),
            )
            .await
            .map_err(|_| "subscribe timeout".to_owned())?
            .map_err(|e| e.to_string())?;
            Ok::<_, String>((sink, stream))
        }
        .await;
        let (mut sink, mut stream) = match subscribed {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "redis notice subscription failed; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(SUBSCRIBER_RETRY_MAX);
                continue;
            }
        };
        connected.send_replace(true);
        if was_connected {
            tracing::info!("redis notice subscription restored");
            let _ = purge_tx.send(PurgeEvent::All);
        }
        was_connected = true;
        retry = SUBSCRIBER_RETRY_MIN;
        let mut ping = tokio::time::interval(SUBSCRIBER_PING_INTERVAL);
        ping.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { break };
                    let Ok(payload) = message.get_payload::<String>() else { continue };
                    let channel = message.get_channel_name();
                    if channel == done_channel {
                        let _ = done_tx.send(payload);
                    } else if channel == purge_channel {
                        if let Some(event) = PurgeEvent::from_message(&payload) {
                            let _ = purge_tx.send(event);
                        }
                    }
                }
                _ = ping.tick() => {
                    let answered = tokio::time::timeout(
                        options.response_timeout,
                        sink.ping::<redis::Value>(),
                    )
                    .await;
                    if !matches!(answered, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        connected.send_replace(false);
        tracing::warn!("redis notice subscription lost; reconnecting");
    }
}
