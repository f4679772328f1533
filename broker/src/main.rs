//! `broker`: a standalone Kafka-compatible broker (the embedded default). Leader of every
//! partition, no controller, topics auto-created on first use.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use broker::auth::sasl::{ListenerSasl, SaslMechanism};
use broker::replication::read_replica::ReplicaSelector;
use broker::state::{Broker, BrokerConfig};
use broker::tls::SecurityProtocol;
use broker::topic_config::TopicConfig;
use clap::Parser;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

#[global_allocator]
static ALLOC: broker::alloc_guard::GuardedAlloc = broker::alloc_guard::GuardedAlloc;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Standalone Kafka-compatible broker with durable segment storage"
)]
struct Cli {
    /// Directory holding the logs and checkpoints.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Address for Kafka clients.
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: SocketAddr,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// host:port given to clients in Metadata (default: the listen address). --listen and
    /// --advertised are the listener named "internal": brokers replicate over it and the
    /// controller hands it to the other brokers.
    #[arg(long)]
    advertised: Option<String>,
    /// An extra named listener, NAME=IP:PORT (repeatable), e.g. external=0.0.0.0:9094. A client
    /// connected on it gets every broker's address on that listener in Metadata and
    /// FindCoordinator (brokers without it are left out), as Kafka's listeners. NAME: 1-15 of
    /// a-z, 0-9 and '-', not "internal". PORT may be BASE+id: BASE plus --node-id.
    #[arg(long = "listener", value_name = "NAME=IP:PORT")]
    listeners: Vec<String>,
    /// What a --listener advertises, NAME=HOST:PORT (repeatable; default: its bind address).
    /// PORT may be BASE+id, BASE plus --node-id, e.g. external=$(NODE_IP):30100+id in a
    /// StatefulSet whose brokers get NodePorts 30100, 30101, ... (Kubernetes' $(VAR) cannot
    /// add).
    #[arg(long = "advertised-listener", value_name = "NAME=HOST:PORT")]
    advertised_listeners: Vec<String>,
    /// The host other brokers dial to replicate from this one (on the internal listener's
    /// port; default: its advertised host). On Kubernetes the pod's IP: followers then need no
    /// DNS record for a broker that just started, which a resolver may have cached as missing.
    #[arg(long, env = "STRAND_INTER_BROKER_HOST")]
    inter_broker_host: Option<String>,
    /// This broker's id (stamped into the data directory). On Kubernetes: the pod ordinal.
    #[arg(long, default_value_t = 0, env = "STRAND_NODE_ID")]
    node_id: i32,
    /// Cluster id this broker belongs to: stamped into a new data directory, and a directory
    /// stamped with another cluster id is refused. Unset: any (a new directory gets a random id).
    #[arg(long, env = "STRAND_CLUSTER_ID")]
    cluster_id: Option<String>,
    /// Broker settings in Kafka's properties format (`key=value` lines, `#` comments): topic
    /// defaults by their topic or broker names (`retention.ms` or `log.retention.ms`,
    /// `min.insync.replicas`, ...) and `num.partitions`, `default.replication.factor`,
    /// `auto.create.topics.enable`, `replica.lag.time.max.ms`, the limits' Kafka names and
    /// `max.incremental.fetch.session.cache.slots`, and TLS's `listener.security.protocol.map`,
    /// `ssl.keystore.*`, `ssl.truststore.*` and `ssl.client.auth`. The file wins over those
    /// flags.
    #[arg(long, value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Create unknown topics when clients first use them.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topics: bool,
    /// Partitions of auto-created topics (and CreateTopics with -1).
    #[arg(long, default_value_t = 1)]
    num_partitions: i32,
    /// Default topic config, Kafka names, e.g. --topic-config retention.ms=3600000 (repeatable).
    #[arg(long = "topic-config", value_name = "KEY=VALUE")]
    topic_config: Vec<String>,
    /// Largest request accepted, in bytes (Kafka's socket.request.max.bytes).
    #[arg(long, default_value_t = 104_857_600)]
    max_request_bytes: usize,
    /// Bytes of requests over 1 MiB read (or waited for) but not yet handled, over all
    /// connections (Kafka's queued.max.request.bytes; Kafka's default is unbounded): a
    /// connection whose next request does not fit is not read until it does. Requests up to
    /// 1 MiB have a 32 MiB pool of their own. Also bounds response bytes built but not yet
    /// written: a fetch reads less (at least one batch) when they are near it.
    #[arg(long, default_value_t = 256 << 20)]
    queued_max_request_bytes: usize,
    /// Most open client connections (Kafka's max.connections); past it, new ones wait in the
    /// kernel's backlog until one closes.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Most open connections from one address (Kafka's max.connections.per.ip); past it, a new
    /// one is closed at once.
    #[arg(long, default_value_t = i32::MAX as usize)]
    max_connections_per_ip: usize,
    /// A connection that sends nothing for this long is closed (Kafka's connections.max.idle.ms).
    #[arg(long, default_value_t = 600_000)]
    connections_max_idle_ms: u64,
    /// How long a SASL login lasts before the client must log in again on its connection
    /// (Kafka's connections.max.reauth.ms, KIP-368), so a deleted user or changed password
    /// ends open connections too; 0 (the default, as Kafka's): for the connection's life.
    #[arg(long, default_value_t = 0, env = "STRAND_CONNECTIONS_MAX_REAUTH_MS")]
    connections_max_reauth_ms: u64,
    /// A request body that does not arrive whole within this, or a response the client does
    /// not take within it, closes the connection and frees what it held.
    #[arg(long, default_value_t = 30_000)]
    socket_stall_timeout_ms: u64,
    /// Idempotent producers with no batch appended for this long are forgotten, checked as
    /// retention runs (Kafka's producer.id.expiration.ms, 1 day).
    #[arg(long, default_value_t = 86_400_000)]
    producer_id_expiration_ms: i64,
    /// How often retention runs.
    #[arg(long, default_value_t = 30_000)]
    retention_check_interval_ms: u64,
    /// How often recovery points and high watermarks are checkpointed.
    #[arg(long, default_value_t = 5_000)]
    checkpoint_interval_ms: u64,
    /// Run as a member of a cluster: the controller's URL (e.g. http://127.0.0.1:9190).
    /// Without it the broker runs standalone.
    #[arg(long)]
    controller: Option<String>,
    /// A file holding the secret this cluster's brokers and controller share (at least 32
    /// printable characters, e.g. `openssl rand -hex 32`). With it, brokers authenticate to
    /// each other (SASL SCRAM-SHA-512) and to the controller, and only they may fetch as
    /// replicas. Without it anyone who reaches a port may (see the README's security section).
    #[arg(long, env = "STRAND_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Rack of this broker (cluster mode), for rack-aware replica placement.
    #[arg(long)]
    rack: Option<String>,
    /// Replication factor of auto-created topics in cluster mode (capped by live brokers).
    #[arg(long, default_value_t = 3)]
    default_replication_factor: i16,
    /// A follower that has not caught up for this long leaves the ISR.
    #[arg(long, default_value_t = 30_000)]
    replica_lag_time_max_ms: i64,
    /// On SIGTERM, how long to keep serving while asking the controller to move this broker's
    /// leaderships away, when no controller answers (one is restarting, or on Kubernetes the
    /// operator's leader is moving). Keep it under the pod's termination grace period.
    #[arg(long, default_value_t = 30_000)]
    controlled_shutdown_timeout_ms: u64,
    /// Source address for this broker's own connections (to the controller and leaders), for
    /// hosts with several addresses.
    #[arg(long)]
    source_address: Option<std::net::IpAddr>,
    /// Partitions of `__consumer_offsets` when this broker creates it (Kafka's
    /// offsets.topic.num.partitions).
    #[arg(long, default_value_t = 50)]
    offsets_topic_partitions: i32,
    /// Replication factor of `__consumer_offsets` in a cluster; it is not created (groups get
    /// COORDINATOR_NOT_AVAILABLE) until this many brokers are alive.
    #[arg(long, default_value_t = 3)]
    offsets_topic_replication_factor: i16,
    /// How long the first rebalance of an empty group waits for more members (Kafka's
    /// group.initial.rebalance.delay.ms).
    #[arg(long, default_value_t = 3_000)]
    group_initial_rebalance_delay_ms: i64,
    /// Smallest and largest session timeout a consumer may ask for.
    #[arg(long, default_value_t = 6_000)]
    group_min_session_timeout_ms: i32,
    #[arg(long, default_value_t = 1_800_000)]
    group_max_session_timeout_ms: i32,
    /// Members a group may hold (Kafka's group.max.size).
    #[arg(long, default_value_t = 1_000)]
    group_max_size: usize,
    /// Consumer group protocol (KIP-848) members are removed after this long without a
    /// heartbeat (Kafka's group.consumer.session.timeout.ms).
    #[arg(long, default_value_t = 45_000)]
    group_consumer_session_timeout_ms: i64,
    /// How often those members heartbeat (Kafka's group.consumer.heartbeat.interval.ms).
    #[arg(long, default_value_t = 5_000)]
    group_consumer_heartbeat_interval_ms: i32,
    /// The offsets log is snapshotted (and older segments deleted) once it grows by this many
    /// bytes and by twice its live state.
    #[arg(long, default_value_t = 16 << 20)]
    offsets_snapshot_min_bytes: u64,
    /// Committed offsets expire this long after their group emptied, or after their commit
    /// for offsets committed without a group membership (Kafka's offsets.retention.minutes,
    /// 7 days; that name works in --config-file).
    #[arg(long, default_value_t = 7 * 24 * 3_600_000)]
    offsets_retention_ms: u64,
    /// How often expired offsets are looked for (offsets.retention.check.interval.ms).
    #[arg(long, default_value_t = 600_000)]
    offsets_retention_check_interval_ms: u64,
    /// Most fetch sessions (KIP-227) kept (Kafka's max.incremental.fetch.session.cache.slots;
    /// 0: none, every fetch is a full one). Sessions hold at most 250000 partitions in all;
    /// a fetch that does not fit gets no session.
    #[arg(
        long,
        default_value_t = 1000,
        env = "STRAND_MAX_INCREMENTAL_FETCH_SESSION_CACHE_SLOTS"
    )]
    max_incremental_fetch_session_cache_slots: usize,
    /// Which replica a consumer that names its rack (client.rack) reads from (Kafka's
    /// replica.selector.class): org.apache.kafka.common.replica.RackAwareReplicaSelector sends
    /// it to an in-sync replica in its rack; the default, LeaderSelector, to the leader.
    /// Followers serve consumers that come to them (Fetch v11+) either way, as in Kafka.
    #[arg(long, default_value = "")]
    replica_selector_class: String,
    /// Each listener's security protocol (Kafka's listener.security.protocol.map), e.g.
    /// external:SASL_SSL,internal:PLAINTEXT. Protocols: PLAINTEXT (the default), SSL,
    /// SASL_PLAINTEXT and SASL_SSL. In a cluster the internal listener stays PLAINTEXT
    /// (brokers and the controller dial it).
    #[arg(
        long,
        default_value = "",
        env = "STRAND_LISTENER_SECURITY_PROTOCOL_MAP"
    )]
    listener_security_protocol_map: String,
    /// The SASL mechanisms of SASL_PLAINTEXT and SASL_SSL listeners (Kafka's
    /// sasl.enabled.mechanisms): SCRAM-SHA-256 and SCRAM-SHA-512, whose users are made with
    /// kafka-configs --entity-type users (AlterUserScramCredentials), and PLAIN, whose users
    /// are listed in --config-file's listener.name.<listener>.plain.sasl.jaas.config.
    #[arg(
        long,
        default_value = "SCRAM-SHA-256,SCRAM-SHA-512",
        env = "STRAND_SASL_ENABLED_MECHANISMS"
    )]
    sasl_enabled_mechanisms: String,
    /// Kafka's authorizer (authorizer.class.name):
    /// org.apache.kafka.metadata.authorizer.StandardAuthorizer switches on ACLs, made with
    /// kafka-acls (CreateAcls). Empty (the default): no authorization, as in Kafka.
    #[arg(long, default_value = "", env = "STRAND_AUTHORIZER_CLASS_NAME")]
    authorizer_class_name: String,
    /// Principals allowed everything (super.users), e.g. User:admin;User:CN=ops.
    #[arg(long, default_value = "", env = "STRAND_SUPER_USERS")]
    super_users: String,
    /// Whether a resource no ACL names is open to everyone (allow.everyone.if.no.acl.found).
    #[arg(long, env = "STRAND_ALLOW_EVERYONE_IF_NO_ACL_FOUND")]
    allow_everyone_if_no_acl_found: bool,
    /// Per-listener sasl.enabled.mechanisms, from --config-file's
    /// listener.name.<listener>.sasl.enabled.mechanisms.
    #[arg(skip)]
    listener_sasl_mechanisms: Vec<(String, String)>,
    /// PLAIN's users per listener, from --config-file's
    /// listener.name.<listener>.plain.sasl.jaas.config.
    #[arg(skip)]
    plain_users: Vec<(String, broker::auth::plain::PlainUsers)>,
    /// PEM file with the private key and certificate chain of SSL listeners
    /// (ssl.keystore.location, ssl.keystore.type=PEM); read again when it changes.
    #[arg(long, env = "STRAND_SSL_KEYSTORE_LOCATION")]
    ssl_keystore_location: Option<PathBuf>,
    /// PEM file with the CAs client certificates must chain to (ssl.truststore.location).
    #[arg(long, env = "STRAND_SSL_TRUSTSTORE_LOCATION")]
    ssl_truststore_location: Option<PathBuf>,
    /// Client certificates on SSL listeners (ssl.client.auth): none, requested or required.
    #[arg(long, default_value = "none", env = "STRAND_SSL_CLIENT_AUTH")]
    ssl_client_auth: String,
    /// How often key and certificate files are checked for a change, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    ssl_reload_check_ms: u64,
    /// Kafka's other ssl.* settings, from --config-file (inline PEM, store types).
    #[arg(skip)]
    ssl_extra: broker::tls::SslSettings,
    /// Log format: text or json (use json in containers).
    #[arg(long, default_value = "text", env = "STRAND_LOG_FORMAT")]
    log_format: String,
}

/// stderr that drops what it cannot write: a full disk under a redirected stderr must not
/// bring the broker down (tracing-subscriber panics when its writer fails).
struct LossyStderr;

impl std::io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

fn init_tracing(format: &str) -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr);
    match format {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => bail!("--log-format must be text or json, not {other:?}"),
    }
    Ok(())
}

/// Folds a Kafka-style properties file into the flags (see `--config-file`).
fn apply_config_file(cli: &mut Cli, path: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --config-file {}", path.display()))?;
    for (n, line) in logical_lines(&text) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (k, v) = line.split_once('=').with_context(|| {
            format!(
                "{}:{}: expected key=value, got {line:?}",
                path.display(),
                n + 1
            )
        })?;
        let (k, v) = (k.trim(), v.trim());
        let bad = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!("{}:{}: {k}={v}: {e}", path.display(), n + 1)
        };
        match k {
            "num.partitions" => cli.num_partitions = v.parse().map_err(|e| bad(&e))?,
            "default.replication.factor" => {
                cli.default_replication_factor = v.parse().map_err(|e| bad(&e))?
            }
            "auto.create.topics.enable" => {
                cli.auto_create_topics = v.parse().map_err(|e| bad(&e))?
            }
            "replica.lag.time.max.ms" => {
                cli.replica_lag_time_max_ms = v.parse().map_err(|e| bad(&e))?
            }
            "offsets.retention.minutes" => {
                let minutes: u64 = v.parse().map_err(|e| bad(&e))?;
                cli.offsets_retention_ms = minutes
                    .checked_mul(60_000)
                    .ok_or_else(|| bad(&"too large"))?;
            }
            "offsets.retention.check.interval.ms" => {
                cli.offsets_retention_check_interval_ms = v.parse().map_err(|e| bad(&e))?
            }
            "socket.request.max.bytes" => cli.max_request_bytes = v.parse().map_err(|e| bad(&e))?,
            "queued.max.request.bytes" => {
                cli.queued_max_request_bytes = v.parse().map_err(|e| bad(&e))?
            }
            "max.connections" => cli.max_connections = v.parse().map_err(|e| bad(&e))?,
            "producer.id.expiration.ms" => {
                cli.producer_id_expiration_ms = v.parse().map_err(|e| bad(&e))?
            }
            "max.connections.per.ip" => {
                cli.max_connections_per_ip = v.parse().map_err(|e| bad(&e))?
            }
            "connections.max.reauth.ms" => {
                cli.connections_max_reauth_ms = v.parse().map_err(|e| bad(&e))?
            }
            "connections.max.idle.ms" => {
                cli.connections_max_idle_ms = v.parse().map_err(|e| bad(&e))?
            }
            "replica.selector.class" => cli.replica_selector_class = v.to_string(),
            "listener.security.protocol.map" => cli.listener_security_protocol_map = v.into(),
            "sasl.enabled.mechanisms" => cli.sasl_enabled_mechanisms = v.into(),
            "authorizer.class.name" => cli.authorizer_class_name = v.into(),
            "super.users" => cli.super_users = v.into(),
            "allow.everyone.if.no.acl.found" => {
                cli.allow_everyone_if_no_acl_found = v.parse().map_err(|e| bad(&e))?
            }
            k if k.starts_with("listener.name.") && k.ends_with(".sasl.enabled.mechanisms") => {
                let listener =
                    &k["listener.name.".len()..k.len() - ".sasl.enabled.mechanisms".len()];
                cli.listener_sasl_mechanisms
                    .push((listener.to_ascii_lowercase(), v.to_string()));
            }
            // Passwords: never echoed in an error.
            k if k.starts_with("listener.name.") && k.ends_with(".plain.sasl.jaas.config") => {
                let listener =
                    &k["listener.name.".len()..k.len() - ".plain.sasl.jaas.config".len()];
                let users = broker::auth::plain::parse_jaas(v)
                    .map_err(|e| anyhow::anyhow!("{}:{}: {k}: {e}", path.display(), n + 1))?;
                cli.plain_users.push((listener.to_ascii_lowercase(), users));
            }
            "ssl.keystore.location" => cli.ssl_keystore_location = Some(v.into()),
            "ssl.truststore.location" => cli.ssl_truststore_location = Some(v.into()),
            "ssl.client.auth" => cli.ssl_client_auth = v.into(),
            "ssl.keystore.type" => cli.ssl_extra.keystore_type = Some(v.into()),
            "ssl.truststore.type" => cli.ssl_extra.truststore_type = Some(v.into()),
            // Inline PEM: Kafka writes it on one line, with literal \n or none.
            "ssl.keystore.key" => cli.ssl_extra.keystore_key = Some(unescape_pem(v)),
            "ssl.keystore.certificate.chain" => {
                cli.ssl_extra.keystore_certificate_chain = Some(unescape_pem(v))
            }
            "ssl.truststore.certificates" => {
                cli.ssl_extra.truststore_certificates = Some(unescape_pem(v))
            }
            k if k.starts_with("ssl.")
                || k.starts_with("listener.name.")
                || k == "listeners"
                || k == "advertised.listeners"
                || k.starts_with("sasl.")
                || k == "security.inter.broker.protocol"
                || k == "inter.broker.listener.name" =>
            {
                return Err(bad(
                    &"not served: listeners are --listen/--listener, TLS takes ssl.keystore.*, ssl.truststore.*, ssl.client.auth and listener.security.protocol.map, SASL takes sasl.enabled.mechanisms and listener.name.<listener>.plain.sasl.jaas.config",
                ));
            }
            "broker.rack" => cli.rack = Some(v.to_string()),
            "max.incremental.fetch.session.cache.slots" => {
                cli.max_incremental_fetch_session_cache_slots = v.parse().map_err(|e| bad(&e))?
            }
            // Broker-level names of topic defaults (Kafka's `log.retention.ms` is the default
            // of the topic's `retention.ms`); unknown keys are refused by the topic config.
            _ => {
                let topic_key = k.strip_prefix("log.").unwrap_or(k);
                cli.topic_config.push(format!("{topic_key}={v}"));
            }
        }
    }
    Ok(())
}

/// A properties file's logical lines, with their first line's index: a line ending in an odd
/// number of backslashes continues on the next (leading blanks dropped), as Java's Properties
/// reads it; Kafka's docs write JAAS configs that way.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut open = false;
    for (n, line) in text.lines().enumerate() {
        let piece = if open { line.trim_start() } else { line };
        let trailing = piece.len() - piece.trim_end_matches('\\').len();
        let continues = trailing % 2 == 1 && !piece.trim_start().starts_with('#');
        let piece = if continues {
            &piece[..piece.len() - 1]
        } else {
            piece
        };
        match (open, out.last_mut()) {
            (true, Some((_, last))) => last.push_str(piece),
            _ => out.push((n, piece.to_string())),
        }
        open = continues;
    }
    out
}

/// Inline PEM from a properties file: `\n` escapes become line breaks.
fn unescape_pem(v: &str) -> String {
    v.replace("\\n", "\n")
}

/// The TLS server side of every SSL listener, or `None` when every listener is plaintext.
/// Names in the protocol map must be listeners of this broker; in a cluster the internal
/// listener stays plaintext.
fn tls_from(cli: &Cli) -> anyhow::Result<Option<(Arc<broker::tls::Tls>, Vec<String>)>> {
    let map = broker::tls::parse_protocol_map(&cli.listener_security_protocol_map)?;
    let extra = broker::listener::resolve(&cli.listeners, &cli.advertised_listeners, cli.node_id)?;
    let names: Vec<String> = std::iter::once(broker::listener::DEFAULT_LISTENER.to_string())
        .chain(extra.into_iter().map(|l| l.name))
        .collect();
    if let Some(unknown) = map.keys().find(|k| !names.contains(k)) {
        bail!(
            "listener.security.protocol.map names {unknown:?}, which is not a listener of this broker (listeners: {})",
            names.join(", ")
        );
    }
    if cli.controller.is_some()
        && map
            .get(broker::listener::DEFAULT_LISTENER)
            .is_some_and(|p| *p != SecurityProtocol::Plaintext)
    {
        bail!(
            "listener {:?} must stay PLAINTEXT in a cluster: brokers replicate over it and the controller dials it, and inter-broker TLS is not built yet; put TLS and SASL on an extra --listener",
            broker::listener::DEFAULT_LISTENER
        );
    }
    let ssl: Vec<String> = map
        .iter()
        .filter(|(_, p)| p.tls())
        .map(|(n, _)| n.clone())
        .collect();
    if ssl.is_empty() {
        return Ok(None);
    }
    let settings = broker::tls::SslSettings {
        keystore_location: cli.ssl_keystore_location.clone(),
        truststore_location: cli.ssl_truststore_location.clone(),
        client_auth: cli.ssl_client_auth.parse()?,
        ..cli.ssl_extra.clone()
    };
    let tls = broker::tls::Tls::load(settings).context("TLS for the SSL listeners")?;
    Ok(Some((tls, ssl)))
}

/// The SASL listeners (SASL_PLAINTEXT, SASL_SSL) and what each offers. In a cluster the
/// credentials come with the controller's metadata, so that must be authenticated: a cluster
/// secret is required.
fn sasl_from(cli: &Cli) -> anyhow::Result<BTreeMap<String, Arc<ListenerSasl>>> {
    let map = broker::tls::parse_protocol_map(&cli.listener_security_protocol_map)?;
    let sasl: Vec<(&String, SecurityProtocol)> = map
        .iter()
        .filter(|(_, p)| p.sasl())
        .map(|(n, p)| (n, *p))
        .collect();
    let mechanisms = parse_mechanisms("sasl.enabled.mechanisms", &cli.sasl_enabled_mechanisms)?;
    let mut per_listener: BTreeMap<&str, Vec<SaslMechanism>> = BTreeMap::new();
    for (listener, value) in &cli.listener_sasl_mechanisms {
        let key = format!("listener.name.{listener}.sasl.enabled.mechanisms");
        if !sasl.iter().any(|(n, _)| *n == listener) {
            bail!("{key}: {listener:?} is not a SASL_PLAINTEXT or SASL_SSL listener");
        }
        if per_listener
            .insert(listener, parse_mechanisms(&key, value)?)
            .is_some()
        {
            bail!("{key} is given twice");
        }
    }
    if !sasl.is_empty() && cli.controller.is_some() && cli.cluster_secret_file.is_none() {
        bail!(
            "SASL listeners in a cluster need --cluster-secret-file: client users' credentials come with the controller's metadata, which is open to anyone without it"
        );
    }
    let mut plain: BTreeMap<&str, &broker::auth::plain::PlainUsers> = BTreeMap::new();
    for (listener, users) in &cli.plain_users {
        if !sasl.iter().any(|(n, _)| *n == listener) {
            bail!(
                "listener.name.{listener}.plain.sasl.jaas.config: {listener:?} is not a SASL_PLAINTEXT or SASL_SSL listener"
            );
        }
        if plain.insert(listener, users).is_some() {
            bail!("listener.name.{listener}.plain.sasl.jaas.config is given twice");
        }
    }
    let mut out = BTreeMap::new();
    for (name, protocol) in sasl {
        let mechanisms = per_listener
            .get(name.as_str())
            .unwrap_or(&mechanisms)
            .clone();
        if mechanisms.is_empty() {
            bail!("listener {name:?} speaks SASL but its sasl.enabled.mechanisms is empty");
        }
        let plain_users = plain
            .get(name.as_str())
            .map(|u| (*u).clone())
            .unwrap_or_default();
        if mechanisms.contains(&SaslMechanism::Plain) {
            if plain_users.is_empty() {
                bail!(
                    "PLAIN is in sasl.enabled.mechanisms but listener {name:?} has no users: give listener.name.{name}.plain.sasl.jaas.config with user_NAME=\"PASSWORD\" entries"
                );
            }
            if protocol == SecurityProtocol::SaslPlaintext {
                warn!(listener = %name, "PLAIN on a SASL_PLAINTEXT listener sends passwords unencrypted; use SASL_SSL");
            }
        }
        let names: Vec<&str> = mechanisms.iter().map(|m| m.name()).collect();
        info!(listener = %name, mechanisms = %names.join(","), "SASL on");
        out.insert(
            name.clone(),
            Arc::new(ListenerSasl {
                mechanisms,
                plain_users,
                reauth_ms: cli.connections_max_reauth_ms,
            }),
        );
    }
    Ok(out)
}

/// Kafka's authorizer settings: on when `authorizer.class.name` names Kafka's ACL authorizer.
fn authorizer_from(cli: &Cli) -> anyhow::Result<Option<Arc<broker::auth::acl::Settings>>> {
    use broker::auth::acl;
    let class = cli.authorizer_class_name.trim();
    if class.is_empty() {
        if !cli.super_users.trim().is_empty() {
            bail!("super.users is set but authorizer.class.name is not: nothing would be checked");
        }
        return Ok(None);
    }
    if !acl::AUTHORIZER_CLASSES.contains(&class) {
        bail!(
            "authorizer.class.name {class:?} is not served; {} switches on Kafka's ACLs",
            acl::AUTHORIZER_CLASSES[0]
        );
    }
    if cli.controller.is_some() && cli.cluster_secret_file.is_none() {
        bail!(
            "an authorizer in a cluster needs --cluster-secret-file: brokers replicate as the user {} (a super user), which they can only prove with it",
            broker::auth::BROKER_USER
        );
    }
    let mut super_users =
        acl::parse_super_users(&cli.super_users).map_err(|e| anyhow::anyhow!(e))?;
    // The brokers themselves (replication, the controller's calls) are never refused.
    super_users.insert(format!("User:{}", broker::auth::BROKER_USER));
    Ok(Some(Arc::new(acl::Settings {
        super_users,
        allow_if_no_acl: cli.allow_everyone_if_no_acl_found,
    })))
}

/// A list of SASL mechanism names (`key` names the setting in errors).
fn parse_mechanisms(key: &str, value: &str) -> anyhow::Result<Vec<SaslMechanism>> {
    let mut mechanisms = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match SaslMechanism::from_name(&name.to_ascii_uppercase()) {
            Some(m) if !mechanisms.contains(&m) => mechanisms.push(m),
            Some(_) => {}
            None => {
                bail!("{key}: {name:?} is not served; SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN are")
            }
        }
    }
    Ok(mechanisms)
}

fn config_from(cli: &Cli) -> anyhow::Result<BrokerConfig> {
    let mut overrides = BTreeMap::new();
    for kv in &cli.topic_config {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--topic-config expects KEY=VALUE, got {kv:?}"))?;
        overrides.insert(k.trim().to_string(), v.trim().to_string());
    }
    let topic_defaults = TopicConfig::default().with_overrides(&overrides)?;
    let (advertised_host, advertised_port) = match &cli.advertised {
        Some(a) => {
            let (h, p) = a
                .rsplit_once(':')
                .with_context(|| format!("--advertised expects HOST:PORT, got {a:?}"))?;
            (
                h.to_string(),
                p.parse()
                    .with_context(|| format!("bad port in --advertised {a:?}"))?,
            )
        }
        None => {
            if cli.listen.ip().is_unspecified() {
                bail!(
                    "--listen {} is a wildcard address; give --advertised HOST:PORT for clients",
                    cli.listen
                );
            }
            (cli.listen.ip().to_string(), i32::from(cli.listen.port()))
        }
    };
    let listeners =
        broker::listener::resolve(&cli.listeners, &cli.advertised_listeners, cli.node_id)?;
    if cli.num_partitions < 1 {
        bail!("--num-partitions must be at least 1");
    }
    if cli.offsets_topic_partitions < 1 {
        bail!("--offsets-topic-partitions must be at least 1");
    }
    if cli.group_consumer_heartbeat_interval_ms <= 0
        || i64::from(cli.group_consumer_heartbeat_interval_ms)
            >= cli.group_consumer_session_timeout_ms
    {
        bail!(
            "--group-consumer-heartbeat-interval-ms must be positive and below --group-consumer-session-timeout-ms"
        );
    }
    if cli.offsets_retention_ms == 0 || cli.offsets_retention_check_interval_ms == 0 {
        bail!("--offsets-retention-ms and --offsets-retention-check-interval-ms must be positive");
    }
    let groups = broker::group::GroupConfig {
        offsets_partitions: cli.offsets_topic_partitions,
        offsets_replication_factor: cli.offsets_topic_replication_factor,
        limits: broker::group::state::Limits {
            min_session_timeout_ms: cli.group_min_session_timeout_ms,
            max_session_timeout_ms: cli.group_max_session_timeout_ms,
            initial_rebalance_delay_ms: cli.group_initial_rebalance_delay_ms,
            max_size: cli.group_max_size,
            ..Default::default()
        },
        consumer: broker::group::consumer::Settings {
            session_timeout_ms: cli.group_consumer_session_timeout_ms,
            heartbeat_interval_ms: cli.group_consumer_heartbeat_interval_ms,
            max_size: cli.group_max_size,
        },
        snapshot_min_bytes: cli.offsets_snapshot_min_bytes,
        offsets_retention: Duration::from_millis(cli.offsets_retention_ms),
        offsets_retention_check_interval: Duration::from_millis(
            cli.offsets_retention_check_interval_ms,
        ),
        ..Default::default()
    };
    let limits = broker::server::limits::Limits {
        queued_max_request_bytes: cli.queued_max_request_bytes,
        max_connections: cli.max_connections,
        max_connections_per_ip: cli.max_connections_per_ip,
        connections_max_idle: Duration::from_millis(cli.connections_max_idle_ms),
        stall_timeout: Duration::from_millis(cli.socket_stall_timeout_ms),
    };
    limits.validate(cli.max_request_bytes)?;
    if cli.producer_id_expiration_ms <= 0 {
        bail!("--producer-id-expiration-ms must be positive");
    }
    let cluster_secret = match &cli.cluster_secret_file {
        Some(path) => {
            let secret = broker::auth::ClusterSecret::load(path)?;
            // Derive the stored credentials now, not in the first follower's login.
            let _ = secret.credential(
                broker::auth::BROKER_USER,
                broker::auth::INTER_BROKER_MECHANISM,
            );
            Some(std::sync::Arc::new(secret))
        }
        None => None,
    };
    Ok(BrokerConfig {
        node_id: cli.node_id,
        data_dir: cli.data_dir.clone(),
        advertised_host,
        advertised_port,
        listeners: listeners.into_iter().map(|l| l.advertised).collect(),
        auto_create_topics: cli.auto_create_topics,
        default_partitions: cli.num_partitions,
        topic_defaults,
        max_request_bytes: cli.max_request_bytes,
        cluster_mode: cli.controller.is_some(),
        default_replication_factor: cli.default_replication_factor,
        groups,
        limits,
        producer_id_expiration_ms: cli.producer_id_expiration_ms,
        cluster_secret,
        fetch_sessions: broker::api::fetch_session::Settings {
            slots: cli.max_incremental_fetch_session_cache_slots,
            ..Default::default()
        },
        replica_selector: ReplicaSelector::from_class(&cli.replica_selector_class)
            .map_err(|e| anyhow::anyhow!(e))?,
        authorizer: authorizer_from(cli)?,
    })
}

/// SIGTERM and SIGINT (Ctrl-C), listened for once from the start, so that a signal sent
/// between two waits is not lost.
struct StopSignals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind, name| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                error!(error = %e, "cannot listen for {name}");
                None
            }
        };
        Self {
            term: listen(SignalKind::terminate(), "SIGTERM"),
            int: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// The next SIGTERM or SIGINT; its name.
    async fn recv(&mut self) -> &'static str {
        async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
            let received = match s {
                Some(s) => s.recv().await.is_some(),
                None => false,
            };
            if !received {
                std::future::pending::<()>().await;
            }
        }
        tokio::select! {
            _ = one(&mut self.term) => "SIGTERM",
            _ = one(&mut self.int) => "SIGINT",
        }
    }
}

/// Asks the controller to move this broker's leaderships away, while this broker still serves.
/// A controller that does not answer (unreachable, restarting, or on Kubernetes between two
/// operator leaders) is asked again until `timeout`: leaving with the leaderships in place
/// would stall their partitions until a controller fences this broker, which a controller that
/// just took over does only after a whole session timeout.
async fn controlled_shutdown(rt: &broker::cluster::runtime::ClusterRuntime, timeout: Duration) {
    use broker::cluster::controller_client::ControllerCallError;
    let m = &rt.membership;
    m.begin_shutdown();
    let now = tokio::time::Instant::now();
    let deadline = now.checked_add(timeout).unwrap_or(now);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let epoch = m.epoch();
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            m.client().controlled_shutdown(m.broker_id, epoch),
        )
        .await;
        let failure = match answer {
            Ok(Ok(still)) if !still.is_empty() => {
                info!(partitions = ?still, "still leading partitions no other replica can take");
                return;
            }
            Ok(Ok(_)) => {
                info!(attempts, "controlled shutdown: leadership moved away");
                return;
            }
            // A registration that landed just before this shutdown began: ask as it.
            Ok(Err(ControllerCallError::Refused { kind, .. }))
                if kind == "stale_broker_epoch" && m.epoch() != epoch =>
            {
                continue;
            }
            // A refusal names this incarnation as fenced or replaced: it leads nothing.
            Ok(Err(ControllerCallError::Refused { kind, .. }))
                if matches!(
                    kind.as_str(),
                    "fenced" | "stale_broker_epoch" | "unknown_broker"
                ) =>
            {
                info!(reason = %kind, "controlled shutdown: the controller no longer counts this broker");
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 5 s".to_string(),
        };
        if tokio::time::Instant::now() + Duration::from_millis(500) >= deadline {
            error!(error = %failure, attempts, "controlled shutdown failed; stopping with leaderships in place");
            return;
        }
        if attempts == 1 {
            warn!(error = %failure, "controlled shutdown: no controller answers yet; still serving and asking again");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Registers with the controller and starts the cluster-mode tasks: heartbeats, metadata
/// following, applying metadata to the hosted partitions, and the ISR check.
async fn join_cluster(
    broker: &std::sync::Arc<Broker>,
    cli: &Cli,
    url: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use broker::cluster::controller_client::{ControllerClient, Registration};
    use broker::cluster::membership::{Membership, Settings};
    use broker::cluster::runtime::ClusterRuntime;
    use broker::replication::fetcher::{FetcherManager, FetcherSettings};
    let unclean_shutdown = broker
        .may_have_lost_records()
        .context("recovering the logs before registering")?;
    let registration = Registration {
        id: broker.config.node_id,
        incarnation: uuid::Uuid::new_v4().simple().to_string(),
        host: broker.config.advertised_host.clone(),
        port: u16::try_from(broker.config.advertised_port)
            .context("advertised port out of range")?,
        replication_host: cli.inter_broker_host.clone(),
        rack: cli.rack.clone(),
        listeners: broker.config.listeners.clone(),
        unclean_shutdown,
        min_insync_replicas: Some(broker.config.topic_defaults.min_insync_replicas),
    };
    let mut s = stop.clone();
    let membership = Membership::join(
        ControllerClient::new_from(url, cli.source_address)
            .with_secret(broker.config.cluster_secret.as_deref()),
        registration,
        cli.data_dir.clone(),
        Settings::default(),
        &mut s,
    )
    .await
    .with_context(|| format!("cannot join the cluster at {url}"))?;
    if unclean_shutdown {
        broker.lost_records_reported();
    }
    let fetchers = FetcherManager::new(
        broker.config.node_id,
        FetcherSettings {
            source: cli.source_address,
            secret: broker.config.cluster_secret.clone(),
            ..FetcherSettings::default()
        },
    );
    let rt = ClusterRuntime::new(membership.clone(), fetchers, cli.replica_lag_time_max_ms);
    broker.start_cluster(rt.clone());
    tokio::spawn(membership.clone().heartbeat_loop(stop.clone()));
    tokio::spawn(membership.clone().metadata_loop(stop.clone()));
    let b = broker.clone();
    tokio::spawn(rt.tick_loop(move || b.hosted_partitions(), stop.clone()));
    tokio::spawn(broker.clone().follow_metadata(
        membership.subscribe(),
        stop,
        std::time::Duration::from_secs(1),
    ));
    info!(controller = url, "joined the cluster");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    init_tracing(&cli.log_format)?;
    if let Some(path) = cli.config_file.clone() {
        apply_config_file(&mut cli, &path)?;
    }
    if let Some(id) = &cli.cluster_id {
        broker::storage::log_dir::stamp_cluster_id(&cli.data_dir, cli.node_id, id)?;
    }
    let config = config_from(&cli)?;
    let tls = tls_from(&cli)?;
    let sasl = sasl_from(&cli)?;
    let sasl_for = |name: &str| sasl.get(name).cloned();
    let tls_for = |name: &str| {
        tls.as_ref()
            .filter(|(_, ssl)| ssl.iter().any(|n| n == name))
            .map(|(t, _)| Arc::clone(t))
    };
    if let Some((t, ssl)) = &tls {
        t.watch(std::time::Duration::from_millis(
            cli.ssl_reload_check_ms.max(100),
        ));
        info!(listeners = %ssl.join(","), "TLS on");
    }
    let broker = Broker::open(config)
        .with_context(|| format!("cannot open data directory {}", cli.data_dir.display()))?;
    let mut listeners = vec![broker::server::NamedListener {
        name: broker::listener::DEFAULT_LISTENER.into(),
        socket: TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cli.listen))?,
        tls: tls_for(broker::listener::DEFAULT_LISTENER),
        sasl: sasl_for(broker::listener::DEFAULT_LISTENER),
    }];
    // Resolved again (pure, and already checked by config_from) for the bind addresses.
    for l in broker::listener::resolve(&cli.listeners, &cli.advertised_listeners, cli.node_id)? {
        let socket = TcpListener::bind(l.bind)
            .await
            .with_context(|| format!("cannot listen on {} (listener {})", l.bind, l.name))?;
        info!(listener = %l.name, bind = %l.bind, advertised = %format!("{}:{}", l.advertised.host, l.advertised.port), "listener");
        listeners.push(broker::server::NamedListener {
            tls: tls_for(&l.name),
            sasl: sasl_for(&l.name),
            name: l.name.into(),
            socket,
        });
    }
    let http = TcpListener::bind(cli.http)
        .await
        .with_context(|| format!("cannot listen on {}", cli.http))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let admin = tokio::spawn({
        let router = broker::admin::router(broker.clone());
        let mut stop = stop_rx.clone();
        async move {
            let _ = axum::serve(http, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        }
    });
    let housekeeping = tokio::spawn({
        let broker = broker.clone();
        let mut stop = stop_rx.clone();
        let retention_every = Duration::from_millis(cli.retention_check_interval_ms.max(100));
        let checkpoint_every = Duration::from_millis(cli.checkpoint_interval_ms.max(100));
        async move {
            let mut retention = tokio::time::interval(retention_every);
            let mut checkpoint = tokio::time::interval(checkpoint_every);
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = retention.tick() => {
                        let b = broker.clone();
                        let _ = tokio::task::spawn_blocking(move || b.apply_retention(broker::clock::now_ms())).await;
                    }
                    _ = checkpoint.tick() => {
                        let b = broker.clone();
                        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || b.checkpoint()).await {
                            error!(error = %e, "writing checkpoints failed");
                        }
                    }
                }
            }
        }
    });

    if let Some(url) = &cli.controller {
        join_cluster(&broker, &cli, url, stop_rx.clone()).await?;
    }
    let group_timers = tokio::spawn(broker::group::Coordinator::run(
        broker.clone(),
        stop_rx.clone(),
    ));
    broker.set_ready();
    info!(kafka = %cli.listen, http = %cli.http, data_dir = %cli.data_dir.display(), "broker ready");
    // On SIGTERM a cluster member first moves its leadership away (controlled shutdown) while
    // it still serves, as Kafka does: its clients get NOT_LEADER_OR_FOLLOWER and find the new
    // leaders at once. Closing the listeners first left them retrying a dead address against
    // stale metadata until the move (a planned restart took 910 ms to the first ack).
    let stopping = {
        let broker = broker.clone();
        let shutdown_timeout = Duration::from_millis(cli.controlled_shutdown_timeout_ms);
        let mut signals = StopSignals::new();
        async move {
            let signal = signals.recv().await;
            info!("{signal} received, shutting down");
            if let Some(rt) = broker.cluster() {
                // A second signal stops at once: an operator who asks twice means it (the
                // wait for a controller lasts up to --controlled-shutdown-timeout-ms).
                tokio::select! {
                    _ = controlled_shutdown(rt, shutdown_timeout) => {}
                    _ = signals.recv() => {
                        warn!("second signal: stopping without waiting for the controlled shutdown; leaderships here move when the controller fences this broker");
                    }
                }
            }
        }
    };
    broker::server::run(listeners, broker.clone(), stopping).await;
    if let Some(rt) = broker.cluster() {
        rt.fetchers.shutdown();
    }
    let _ = stop_tx.send(true);
    let _ = housekeeping.await;
    let _ = group_timers.await;
    let _ = admin.await;
    let closing = broker.clone();
    tokio::task::spawn_blocking(move || closing.close()).await??;
    info!("stopped");
    Ok(())
}
