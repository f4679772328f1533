//! The Kafka listener: accepts connections and runs each on its own task until shutdown.

pub mod connection;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;
use tracing::{info, warn};

use crate::state::Broker;

/// Serves Kafka clients on `listener` until `shutdown` completes, then stops accepting, tells
/// every connection to finish and waits for them.
pub async fn run(listener: TcpListener, broker: Arc<Broker>, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let broker = Arc::clone(&broker);
                    let stop = stop_rx.clone();
                    // Every log line of a connection says which client it is about.
                    let span = tracing::info_span!("connection", %peer, client_id = tracing::field::Empty);
                    connections.spawn(
                        async move {
                            broker.metrics.connections.inc();
                            connection::serve(socket, peer, Arc::clone(&broker), stop).await;
                            broker.metrics.connections.dec();
                        }
                        .instrument(span),
                    );
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    info!(
        open = connections.len(),
        "listener stopping; closing connections"
    );
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}
