//! The Kafka listeners: accept connections on every named listener and run each connection
//! on its own task until shutdown, within `max.connections` and `max.connections.per.ip`.

pub mod connection;
pub mod limits;
pub mod throttle;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;
use tracing::{info, warn};

use crate::state::Broker;

/// A bound socket and the name of its listener (see `crate::listener`).
pub struct NamedListener {
    pub name: Arc<str>,
    pub socket: TcpListener,
}

type Accepted = (TcpStream, SocketAddr, Arc<str>, OwnedSemaphorePermit);

/// Accepts on one listener and hands each connection over, until the receiver is gone. At
/// `max.connections` it stops accepting (new clients wait in the kernel's backlog, as Kafka's
/// do) until a connection closes.
async fn accept_loop(listener: NamedListener, slots: Arc<Semaphore>, tx: mpsc::Sender<Accepted>) {
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        match listener.socket.accept().await {
            Ok((socket, peer)) => {
                if tx
                    .send((socket, peer, Arc::clone(&listener.name), slot))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                // Out of file descriptors and the like: back off briefly rather than spin.
                warn!(listener = %listener.name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves Kafka clients on every listener until `shutdown` completes, then stops accepting,
/// tells every connection to finish and waits for them.
pub async fn run(
    listeners: Vec<NamedListener>,
    broker: Arc<Broker>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (accepted_tx, mut accepted) = mpsc::channel(16);
    let limits = &broker.config.limits;
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let per_ip = limits::PerIp::new(limits.max_connections_per_ip);
    let refused = crate::log_limit::Limit::new(10, std::time::Duration::from_secs(10));
    let mut acceptors = JoinSet::new();
    for l in listeners {
        acceptors.spawn(accept_loop(l, Arc::clone(&slots), accepted_tx.clone()));
    }
    drop(accepted_tx);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            next = accepted.recv() => {
                let Some((socket, peer, listener, slot)) = next else { break };
                // Over max.connections.per.ip: closed at once, as Kafka does.
                let Some(ip_slot) = per_ip.admit(peer.ip()) else {
                    broker.metrics.connections_refused.inc();
                    if let Some(suppressed) = refused.allow() {
                        warn!(%peer, suppressed, "connection refused: max.connections.per.ip reached for this address");
                    }
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let broker = Arc::clone(&broker);
                let stop = stop_rx.clone();
                // Every log line of a connection says which client it is about.
                let span = tracing::info_span!("connection", %peer, %listener, client_id = tracing::field::Empty);
                connections.spawn(
                    async move {
                        broker.metrics.connections.inc();
                        connection::serve(socket, peer, listener, Arc::clone(&broker), stop).await;
                        broker.metrics.connections.dec();
                        drop((slot, ip_slot));
                    }
                    .instrument(span),
                );
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    acceptors.abort_all();
    info!(
        open = connections.len(),
        "listeners stopping; closing connections"
    );
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}
