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

use crate::auth::sasl::ListenerSasl;
use crate::state::Broker;
use crate::tls::Tls;

/// The TLS handshake of a connection on an SSL listener, within the stall timeout (a client
/// that connects and says nothing holds nothing for long). A failed one (plaintext Kafka on a
/// TLS port, an untrusted or missing client certificate) closes the connection; its log line
/// is rate-limited, as a misbehaving client can cause it at will.
async fn handshake(
    tls: &Tls,
    socket: TcpStream,
    broker: &Broker,
    failed: &crate::log_limit::Limit,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let wait = broker.config.limits.stall_timeout;
    let error = match tokio::time::timeout(wait, tls.acceptor().accept(socket)).await {
        Ok(Ok(session)) => return Some(session),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no handshake within {wait:?}"),
    };
    broker.metrics.tls_handshakes_failed.inc();
    if let Some(suppressed) = failed.allow() {
        warn!(error = %error, suppressed, "TLS handshake failed; connection closed");
    }
    None
}

/// A bound socket and the name of its listener (see `crate::listener`), with its TLS server
/// side when the listener speaks SSL.
pub struct NamedListener {
    pub name: Arc<str>,
    pub socket: TcpListener,
    pub tls: Option<Arc<Tls>>,
    /// A SASL_PLAINTEXT or SASL_SSL listener: how its clients authenticate before anything
    /// else is served.
    pub sasl: Option<Arc<ListenerSasl>>,
}

type Accepted = (
    TcpStream,
    SocketAddr,
    Arc<str>,
    Option<Arc<Tls>>,
    Option<Arc<ListenerSasl>>,
    OwnedSemaphorePermit,
);

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
                    .send((
                        socket,
                        peer,
                        Arc::clone(&listener.name),
                        listener.tls.clone(),
                        listener.sasl.clone(),
                        slot,
                    ))
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
    let handshakes_failed = Arc::new(crate::log_limit::Limit::new(
        10,
        std::time::Duration::from_secs(10),
    ));
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
                let Some((socket, peer, listener, tls, sasl, slot)) = next else { break };
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
                let handshakes_failed = Arc::clone(&handshakes_failed);
                // Every log line of a connection says which client it is about.
                let span = tracing::info_span!("connection", %peer, %listener, client_id = tracing::field::Empty);
                connections.spawn(
                    async move {
                        broker.metrics.connections.inc();
                        match tls {
                            None => {
                                let (reader, writer) = socket.into_split();
                                connection::serve(reader, writer, peer, listener, None, sasl, Arc::clone(&broker), stop).await;
                            }
                            Some(tls) => {
                                // A handshake in progress does not hold up a shutdown.
                                let mut stopping = stop.clone();
                                let session = tokio::select! {
                                    s = handshake(&tls, socket, &broker, &handshakes_failed) => s,
                                    _ = stopping.wait_for(|s| *s) => None,
                                };
                                if let Some(session) = session {
                                    // A verified client certificate names the client (Kafka's
                                    // principal for quotas; ACLs will use it too).
                                    let certificate = session.get_ref().1.peer_certificates().and_then(|c| c.first());
                                    let principal = certificate.and_then(crate::tls::principal_of).map(Arc::from);
                                    if certificate.is_some() && principal.is_none() {
                                        // Verified, but its subject is empty or unreadable:
                                        // refused rather than served as ANONYMOUS.
                                        broker.metrics.tls_handshakes_failed.inc();
                                        if let Some(suppressed) = handshakes_failed.allow() {
                                            warn!(suppressed, "client certificate without a readable subject; connection closed");
                                        }
                                        broker.metrics.connections.dec();
                                        return;
                                    }
                                    tracing::debug!(principal = ?principal, "TLS session established");
                                    let (reader, writer) = tokio::io::split(session);
                                    connection::serve(reader, writer, peer, listener, principal, sasl, Arc::clone(&broker), stop).await;
                                }
                            }
                        }
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
