//! One client connection: the only code that touches the socket. Frames are length-prefixed;
//! a frame's bytes are reserved from the broker's request pool, then it is read whole before it
//! is parsed. Requests are handled in arrival order (so appends keep their order) and their
//! responses are written in the same order, while later requests can be read and handled as
//! earlier responses wait (pipelining), up to `MAX_IN_FLIGHT` responses or one large one (see
//! `super::limits` for every bound and why).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::Instrument;
use tracing::{debug, warn};

use super::limits::{CONNECTION_RESPONSE_BYTES, ResponseHold, TINY_FRAME};
use super::throttle::{Metered, Mute, counted_bytes, set_throttle};
use crate::api::{self, Reply};
use crate::auth::sasl::ListenerSasl;
use crate::auth::sasl::SaslSession;
use crate::state::Broker;

/// Responses that may be outstanding on one connection before reading pauses.
const MAX_IN_FLIGHT: usize = 64;

/// How long a connection may take to flush its responses once the broker is stopping.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A response waiting its turn.
struct Pending {
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    started: Instant,
    reply: Reply,
    /// A built response's bytes, counted broker-wide and against this connection's room
    /// (which stops reading while it is spent) until the response is written.
    held: Option<(ResponseHold, OwnedSemaphorePermit)>,
    /// What it counts against its client's quotas, when any quota is set.
    metered: Option<Metered>,
}

/// Why a connection is closed by the broker.
#[derive(Debug, thiserror::Error)]
enum Close {
    #[error("request frame of {0} bytes is outside 0..={1}")]
    FrameSize(i64, usize),
    #[error("request of {0} bytes is shorter than a request header")]
    ShortHeader(usize),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error(
        "{0:?} before SASL authentication on a SASL listener (is the client configured with security.protocol=SASL_*?)"
    )]
    Unauthenticated(ApiKey),
    #[error("{0:?} after the SASL session expired (connections.max.reauth.ms) without a new login")]
    SessionExpired(ApiKey),
    #[error("unsupported version {1} of {0:?}")]
    UnsupportedVersion(ApiKey, i16),
    #[error("malformed {0:?} v{1} request: {2}")]
    Malformed(ApiKey, i16, String),
    #[error("idle for {0:?} (connections.max.idle.ms)")]
    Idle(std::time::Duration),
    #[error("a request of {0} bytes stopped arriving for {1:?}")]
    StalledRequest(usize, std::time::Duration),
}

/// Serves one connection accepted on the listener named `listener`, given as its two halves
/// (a TCP socket's, or a TLS session's); `certified` is the principal of a verified client
/// certificate; `sasl` the settings of a SASL listener, where a client must authenticate
/// before anything but ApiVersions is served.
#[allow(clippy::too_many_arguments)]
pub async fn serve<R, W>(
    mut reader: R,
    writer: W,
    peer: SocketAddr,
    listener: Arc<str>,
    certified: Option<Arc<str>>,
    sasl: Option<Arc<ListenerSasl>>,
    broker: Arc<Broker>,
    mut stop: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    debug!(%peer, "connection opened");
    let (tx, rx) = mpsc::channel::<Pending>(MAX_IN_FLIGHT);
    // Requests read whose responses have not gone out yet (an idle timeout waits for them).
    let unanswered = Arc::new(AtomicUsize::new(0));
    // Set by the writer when a response carries a throttle; the reader waits it out.
    let mute = Arc::new(Mute::default());
    let writer_task = tokio::spawn(
        write_responses(
            writer,
            rx,
            Arc::clone(&broker),
            peer,
            Arc::clone(&unanswered),
            Arc::clone(&mute),
        )
        .in_current_span(),
    );
    let room = Arc::new(Semaphore::new(CONNECTION_RESPONSE_BYTES));
    let secret = broker.config.cluster_secret.clone();
    let mut sasl = match sasl {
        Some(mechanisms) => {
            SaslSession::for_clients(secret, Arc::clone(&broker.scram_users), mechanisms)
        }
        None => SaslSession::brokers_only(secret),
    };
    // The span has the connection's client id (recorded at its first request that names one).
    let mut named = false;
    loop {
        // A client over its quota is not read from until its throttle has passed (KIP-219).
        if !waited_out(&mute, &mut stop, &tx).await {
            break;
        }
        // Every wait is raced against shutdown and the writer's end (a client that stopped
        // taking its responses), so a silent or half-sent client cannot hold the broker up.
        let frame = tokio::select! {
            f = read_frame(&mut reader, &broker, &unanswered) => f,
            _ = stopped(&mut stop) => break,
            _ = tx.closed() => break,
        };
        let (frame, reservation) = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break, // peer closed or reset
            Err(close) => {
                warn_closing(&peer, &close);
                break;
            }
        };
        // A request read while the previous response was being throttled waits its turn too.
        if !waited_out(&mute, &mut stop, &tx).await {
            break;
        }
        let started = Instant::now();
        let handled = parse_and_handle(
            &broker,
            frame,
            &peer,
            &listener,
            certified.as_ref(),
            &mut sasl,
            &mut named,
        );
        // The request is handled (or failed); its frame is gone. Only a built response still
        // holds memory, and that is counted below.
        drop(reservation);
        match handled {
            Ok(Some((_, api_key, version, Reply::Close, _))) => {
                debug!(%peer, api = ?api_key, version, "closing connection after a failed acks=0 request");
                break;
            }
            Ok(Some((correlation_id, api_key, version, reply, metered))) => {
                let held = match &reply {
                    Reply::Now(body) => {
                        let bytes = response_bytes(body);
                        let hold = broker.memory.hold_response(bytes);
                        // A large response unwritten stops this connection reading more.
                        let want = bytes.clamp(1, CONNECTION_RESPONSE_BYTES) as u32;
                        let permit = tokio::select! {
                            p = Arc::clone(&room).acquire_many_owned(want) => p.ok(),
                            _ = stopped(&mut stop) => None,
                            _ = tx.closed() => None,
                        };
                        let Some(permit) = permit else { break };
                        Some((hold, permit))
                    }
                    _ => None,
                };
                let pending = Pending {
                    correlation_id,
                    api_key,
                    version,
                    started,
                    reply,
                    held,
                    metered,
                };
                unanswered.fetch_add(1, Ordering::Relaxed);
                let queued = tokio::select! {
                    r = tx.send(pending) => r.is_ok(),
                    _ = stopped(&mut stop) => false,
                };
                if !queued {
                    break;
                }
                if sasl.must_close() {
                    // A failed authentication: its answer goes out, then the connection ends.
                    debug!(%peer, "closing connection after a failed SASL exchange");
                    break;
                }
            }
            Ok(None) => {}
            Err(close) => {
                warn_closing(&peer, &close);
                break;
            }
        }
    }
    drop(tx);
    // Queued responses still go out, but at shutdown a client that does not read them gets
    // a short grace period and is then cut off.
    let mut writer_task = writer_task;
    tokio::select! {
        _ = &mut writer_task => {}
        _ = stopped(&mut stop) => {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut writer_task).await.is_err() {
                writer_task.abort();
            }
        }
    }
    debug!(%peer, "connection closed");
}

/// Bytes written per step when sending a response; each step gets the whole stall timeout.
const WRITE_CHUNK: usize = 64 * 1024;

/// Why a response write ended early.
enum Stalled {
    Io,
    Timeout,
}

impl From<std::io::Error> for Stalled {
    fn from(_: std::io::Error) -> Self {
        Self::Io
    }
}

impl From<tokio::time::error::Elapsed> for Stalled {
    fn from(_: tokio::time::error::Elapsed) -> Self {
        Self::Timeout
    }
}

/// Counts a request as answered when its turn in the writer ends.
struct Answered<'a>(&'a AtomicUsize);

impl Drop for Answered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// About how many bytes a response holds: its record bytes (a fetch's), the rest counted as
/// a small constant. Only fetches carry enough to matter.
fn response_bytes(body: &ResponseKind) -> usize {
    const SMALL: usize = 256;
    match body {
        ResponseKind::Fetch(r) => r
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| SMALL + p.records.as_ref().map_or(0, |b| b.len()))
            .sum(),
        _ => SMALL,
    }
}

/// Closing warnings clients can cause: 100 at once, then one a second, with how many were
/// held back.
static CLOSE_WARNINGS: crate::log_limit::Limit =
    crate::log_limit::Limit::new(100, std::time::Duration::from_secs(1));

fn warn_closing(peer: &SocketAddr, reason: &dyn std::fmt::Display) {
    if let Some(suppressed) = CLOSE_WARNINGS.allow() {
        warn!(%peer, suppressed, "closing connection: {reason}");
    }
}

/// Waits until the connection is no longer muted; false when it should close instead.
async fn waited_out(
    mute: &Mute,
    stop: &mut watch::Receiver<bool>,
    tx: &mpsc::Sender<Pending>,
) -> bool {
    let muted = mute.remaining();
    if muted.is_zero() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(muted) => true,
        _ = stopped(stop) => false,
        _ = tx.closed() => false,
    }
}

/// Completes once the broker is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Reads one length-prefixed frame once the request pool has room for it (frames up to
/// `TINY_FRAME` need none); the reservation is held until the request is handled. `Ok(None)`
/// when the peer closed. Idle (no byte of a next request for `connections.max.idle.ms` while
/// nothing is unanswered) and stalled (no byte of a started frame for the stall timeout)
/// connections are closed.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    broker: &Broker,
    unanswered: &AtomicUsize,
) -> Result<Option<(Bytes, Option<OwnedSemaphorePermit>)>, Close> {
    let max = broker.config.max_request_bytes;
    let limits = &broker.config.limits;
    let mut len_buf = [0u8; 4];
    let mut got = 0;
    while got < len_buf.len() {
        // `read` (not `read_exact`) so a timeout loses no byte already read.
        let wait = if got == 0 {
            limits.connections_max_idle
        } else {
            limits.stall_timeout
        };
        match tokio::time::timeout(wait, reader.read(&mut len_buf[got..])).await {
            Err(_) if got == 0 && unanswered.load(Ordering::Relaxed) > 0 => continue,
            Err(_) if got == 0 => return Err(Close::Idle(wait)),
            Err(_) => return Err(Close::StalledRequest(4, wait)),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
            Ok(Ok(n)) => got += n,
        }
    }
    let len = i32::from_be_bytes(len_buf);
    if len < 0 || len as usize > max {
        return Err(Close::FrameSize(i64::from(len), max));
    }
    let len = len as usize;
    // Not read until it fits: the client's bytes wait in its socket, not in our memory.
    let reservation = if len <= TINY_FRAME {
        None
    } else {
        match broker.memory.reserve_request(len).await {
            Some(r) => Some(r),
            None => return Err(Close::FrameSize(len as i64, max)),
        }
    };
    let mut frame = BytesMut::zeroed(len);
    let mut got = 0;
    while got < len {
        match tokio::time::timeout(limits.stall_timeout, reader.read(&mut frame[got..])).await {
            Err(_) => return Err(Close::StalledRequest(len, limits.stall_timeout)),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
            Ok(Ok(n)) => got += n,
        }
    }
    Ok(Some((frame.freeze(), reservation)))
}

type Handled = Option<(i32, ApiKey, i16, Reply, Option<Metered>)>;

fn parse_and_handle(
    broker: &Arc<Broker>,
    mut frame: Bytes,
    peer: &SocketAddr,
    listener: &Arc<str>,
    certified: Option<&Arc<str>>,
    sasl: &mut SaslSession,
    named: &mut bool,
) -> Result<Handled, Close> {
    if frame.len() < 8 {
        return Err(Close::ShortHeader(frame.len()));
    }
    let request_bytes = frame.len();
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| Close::UnknownApi(raw_key))?;
    if !api::is_supported(api_key, version) {
        if api_key == ApiKey::ApiVersions {
            // KIP-511: answer in v0 so the client learns our range and retries.
            let body = api::api_versions::handle(ResponseError::UnsupportedVersion.code());
            return Ok(Some((
                correlation_id,
                api_key,
                0,
                Reply::now(ResponseKind::ApiVersions(body)),
                None,
            )));
        }
        return Err(Close::UnsupportedVersion(api_key, version));
    }
    // Kafka's SASL listeners serve nothing else before authentication, and close the
    // connection of a client that asks (it is misconfigured: no SASL settings).
    // A login that ran out (KIP-368) serves nothing but a new login: Kafka closes the
    // connection of a client that did not log in again in time.
    if sasl.expired(crate::clock::monotonic_ms())
        && !matches!(api_key, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate)
    {
        return Err(Close::SessionExpired(api_key));
    }
    if sasl.requires_authentication()
        && !sasl.authenticated()
        && !matches!(
            api_key,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        )
    {
        return Err(Close::Unauthenticated(api_key));
    }
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(|e| Close::Malformed(api_key, version, format!("header: {e}")))?;
    let request = RequestKind::decode(api_key, &mut frame, version)
        .map_err(|e| Close::Malformed(api_key, version, e.to_string()))?;
    let client = api::Client {
        id: header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        // An IPv4 client of a dual-stack listener as Java names it (10.0.0.5, not
        // ::ffff:10.0.0.5), so host ACLs and DescribeGroups see the address people know.
        host: format!("/{}", peer.ip().to_canonical()),
        listener: Arc::clone(listener),
        // The SASL user, else the client certificate's subject.
        principal: sasl.principal().or(certified).cloned(),
    };
    // Once per connection: the log formatter appends a field each time it is recorded.
    if !*named && !client.id.is_empty() {
        tracing::Span::current().record("client_id", client.id.as_str());
        *named = true;
    }
    let exempt = match &request {
        RequestKind::Fetch(f) => f.replica_id.0 >= 0 || f.replica_state.replica_id.0 >= 0,
        RequestKind::SaslHandshake(_) | RequestKind::SaslAuthenticate(_) => true,
        _ => false,
    };
    let mut metered = Metered::new(
        &broker.quotas,
        client.principal.as_ref(),
        &client.id,
        request_bytes,
        exempt,
    );
    let handling = Instant::now();
    let reply = match request {
        // These change the connection's state, so the connection answers them itself.
        RequestKind::SaslHandshake(r) => {
            Reply::now(ResponseKind::SaslHandshake(sasl_handshake(sasl, &r)))
        }
        RequestKind::SaslAuthenticate(r) => {
            Reply::now(ResponseKind::SaslAuthenticate(sasl_authenticate(sasl, &r)))
        }
        request => api::dispatch(broker, request, version, &client),
    };
    if let Some(m) = &mut metered {
        m.handler = handling.elapsed();
    }
    Ok(Some((
        header.correlation_id,
        api_key,
        version,
        reply,
        metered,
    )))
}

fn sasl_handshake(sasl: &mut SaslSession, r: &SaslHandshakeRequest) -> SaslHandshakeResponse {
    let mut resp = SaslHandshakeResponse::default();
    resp.error_code = sasl.handshake(r.mechanism.as_str()).map_or(0, |e| e.code());
    resp.mechanisms = sasl
        .mechanisms()
        .into_iter()
        .map(StrBytes::from_static_str)
        .collect();
    resp
}

fn sasl_authenticate(
    sasl: &mut SaslSession,
    r: &SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    let answer = sasl.authenticate(
        &r.auth_bytes,
        crate::auth::nonce,
        crate::clock::monotonic_ms(),
    );
    let done = answer.error.is_none() && sasl.logged_in();
    let mut resp = SaslAuthenticateResponse::default();
    resp.error_code = answer.error.map_or(0, |e| e.code());
    resp.error_message = answer.message.map(StrBytes::from_string);
    resp.auth_bytes = Bytes::from(answer.bytes);
    // KIP-368: how long the login lasts (0: the connection's life); clients log in again
    // before it ends.
    if done {
        resp.session_lifetime_ms = sasl.session_lifetime_ms();
    }
    resp
}

async fn write_responses<W: AsyncWrite + Unpin + Send + 'static>(
    writer: W,
    mut rx: mpsc::Receiver<Pending>,
    broker: Arc<Broker>,
    peer: SocketAddr,
    unanswered: Arc<AtomicUsize>,
    mute: Arc<Mute>,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    let mut buf = BytesMut::new();
    let stall = broker.config.limits.stall_timeout;
    while let Some(p) = rx.recv().await {
        // Whatever happens below, this request is answered (or the connection ends).
        let _answered = Answered(&unanswered);
        // A response finished now is counted while it is written, as a queued one was.
        let (mut body, _held, _late) = match p.reply {
            Reply::Now(body) => (*body, p.held, None),
            Reply::Later(fut) => {
                // What is already encoded goes out first, not after this one's wait. Flushed
                // even with the buffer empty: over TLS, bytes the buffer passed on may still
                // sit encrypted in the session until a flush.
                if !matches!(
                    tokio::time::timeout(stall, writer.flush()).await,
                    Ok(Ok(()))
                ) {
                    return;
                }
                let body = fut.await;
                let bytes = response_bytes(&body);
                (body, None, Some(broker.memory.hold_response(bytes)))
            }
            Reply::Nothing | Reply::Close => {
                // acks=0: no response to carry a throttle, so the mute alone enforces it.
                if let Some(m) = &p.metered {
                    mute.extend(m.throttle_ms(&broker.quotas, p.api_key, 0));
                }
                broker
                    .metrics
                    .observe(api_name(p.api_key), p.started.elapsed().as_secs_f64());
                continue;
            }
        };
        if let Some(m) = &p.metered {
            let ms = m.throttle_ms(&broker.quotas, p.api_key, counted_bytes(&body, p.version));
            if ms > 0 {
                set_throttle(&mut body, ms);
                mute.extend(ms);
                broker.metrics.throttled_responses.inc();
            }
        }
        buf.clear();
        buf.put_i32(0); // length, patched below
        let mut header = ResponseHeader::default();
        header.correlation_id = p.correlation_id;
        let encoded = header
            .encode(&mut buf, p.api_key.response_header_version(p.version))
            .and_then(|()| body.encode(&mut buf, p.version));
        if let Err(e) = encoded {
            warn_closing(
                &peer,
                &format!(
                    "cannot encode the {:?} v{} response: {e}",
                    p.api_key, p.version
                ),
            );
            break;
        }
        // The encoded copy is what goes out; the response itself is not kept beside it.
        drop(body);
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        // A client that does not take its response within the stall timeout is cut off, so
        // the response's memory is not held for as long as it likes.
        // The stall timeout is for no progress: each chunk (and the flush) gets all of it.
        let written = async {
            for chunk in buf.chunks(WRITE_CHUNK) {
                tokio::time::timeout(stall, writer.write_all(chunk)).await??;
            }
            // Flush when nothing else is ready to go out, so pipelined responses share a write.
            if rx.is_empty() {
                tokio::time::timeout(stall, writer.flush()).await??;
            }
            Ok::<(), Stalled>(())
        }
        .await;
        match written {
            Ok(()) => {}
            Err(Stalled::Io) => break,
            Err(Stalled::Timeout) => {
                let reason = format!(
                    "the client did not take a {:?} response of {} bytes within {stall:?}",
                    p.api_key,
                    buf.len()
                );
                warn_closing(&peer, &reason);
                return;
            }
        }
        broker
            .metrics
            .observe(api_name(p.api_key), p.started.elapsed().as_secs_f64());
    }
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
}

pub fn api_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "produce",
        ApiKey::Fetch => "fetch",
        ApiKey::ListOffsets => "list_offsets",
        ApiKey::Metadata => "metadata",
        ApiKey::ApiVersions => "api_versions",
        ApiKey::CreateTopics => "create_topics",
        ApiKey::DeleteTopics => "delete_topics",
        ApiKey::InitProducerId => "init_producer_id",
        ApiKey::OffsetForLeaderEpoch => "offset_for_leader_epoch",
        ApiKey::DescribeConfigs => "describe_configs",
        ApiKey::FindCoordinator => "find_coordinator",
        ApiKey::JoinGroup => "join_group",
        ApiKey::SyncGroup => "sync_group",
        ApiKey::Heartbeat => "heartbeat",
        ApiKey::LeaveGroup => "leave_group",
        ApiKey::OffsetCommit => "offset_commit",
        ApiKey::OffsetFetch => "offset_fetch",
        ApiKey::DescribeGroups => "describe_groups",
        ApiKey::ListGroups => "list_groups",
        ApiKey::DeleteGroups => "delete_groups",
        ApiKey::SaslHandshake => "sasl_handshake",
        ApiKey::SaslAuthenticate => "sasl_authenticate",
        ApiKey::DescribeTopicPartitions => "describe_topic_partitions",
        ApiKey::DescribeProducers => "describe_producers",
        _ => "other",
    }
}
