//! The broker's shared state: configuration, the data directory, hosted topics and their
//! partitions, producer ids, metrics. Topic creation and deletion are serialised here; in
//! standalone mode the broker is the controller of its own topics.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::cluster::runtime::{ClusterRuntime, assignment};
use crate::group::{Coordinator as GroupCoordinator, GroupConfig};
use crate::metadata::ClusterMetadata;
use crate::metrics::{Metrics, PartitionLabels};
use crate::partition::{IsrProposal, Leadership, Partition, PartitionId, Signals};
use crate::producer_ids::ProducerIdAllocator;
use crate::replication::state::{Assignment, Settings as ReplicationSettings};
use crate::storage::StorageError;
use crate::storage::checkpoint::OffsetMap;
use crate::storage::log::Log;
use crate::storage::log_dir::{LogDir, TopicRecord};
use crate::topic_config::{ConfigError, TopicConfig};
use crate::topic_name::{self, InvalidTopicName};

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub data_dir: PathBuf,
    /// Host and port put in Metadata responses on the default listener.
    pub advertised_host: String,
    pub advertised_port: i32,
    /// The extra listeners' advertised addresses (`--advertised-listener`).
    pub listeners: Vec<crate::listener::Endpoint>,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    pub topic_defaults: TopicConfig,
    /// Largest request frame accepted (Kafka's socket.request.max.bytes).
    pub max_request_bytes: usize,
    /// Topics come from a controller (cluster mode) instead of topics.json (standalone).
    pub cluster_mode: bool,
    /// Replication factor of auto-created topics in cluster mode (capped by live brokers).
    pub default_replication_factor: i16,
    /// Consumer groups and `__consumer_offsets`.
    pub groups: GroupConfig,
    /// What clients may hold: memory, connections, idle and stall times.
    pub limits: crate::server::limits::Limits,
    /// Idempotent producers with no append for this long are forgotten (Kafka's
    /// producer.id.expiration.ms).
    pub producer_id_expiration_ms: i64,
    /// The secret the cluster's brokers and controller share (`auth`): when set, brokers
    /// authenticate to each other and only they may fetch as replicas.
    pub cluster_secret: Option<Arc<crate::auth::ClusterSecret>>,
    /// Fetch sessions (KIP-227): how many, and how many partitions they may hold.
    pub fetch_sessions: crate::api::fetch_session::Settings,
    /// Which replica a consumer that names its rack is sent to (Kafka's
    /// replica.selector.class, KIP-392).
    pub replica_selector: crate::replication::read_replica::ReplicaSelector,
    /// Kafka's authorizer (`authorizer.class.name`): when set, every request is checked
    /// against the ACLs (`auth::authorize`).
    pub authorizer: Option<Arc<crate::auth::acl::Settings>>,
}

impl BrokerConfig {
    /// What this broker advertises on `listener`; None when it has no such listener.
    pub fn advertised(&self, listener: &str) -> Option<(String, i32)> {
        if listener == crate::listener::DEFAULT_LISTENER {
            return Some((self.advertised_host.clone(), self.advertised_port));
        }
        self.listeners
            .iter()
            .find(|e| e.name == listener)
            .map(|e| (e.host.clone(), i32::from(e.port)))
    }
}

/// Most partitions one topic may have (CreateTopics, CreatePartitions).
pub const MAX_PARTITIONS: i32 = 100_000;

/// Replication settings of a standalone partition: acks=all still needs min.insync.replicas
/// in-sync replicas, so a topic asking for 2 refuses acks=all writes, as Kafka would.
fn standalone_settings(config: &TopicConfig) -> ReplicationSettings {
    ReplicationSettings {
        min_insync_replicas: config.min_insync_replicas.max(1) as usize,
        ..ReplicationSettings::default()
    }
}

pub struct Topic {
    pub record: TopicRecord,
    pub config: TopicConfig,
    /// Every partition of the topic; None where this broker holds no replica.
    pub partitions: Vec<Option<Arc<Partition>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic '{0}' already exists")]
    AlreadyExists(String),
    #[error(transparent)]
    InvalidName(#[from] InvalidTopicName),
    /// Kafka's `.`/`_` collision rule; answered INVALID_TOPIC_EXCEPTION, as Kafka does.
    #[error(
        "topic '{name}' collides with existing topic '{existing}' ('.' and '_' are the same in metric names)"
    )]
    Collision { name: String, existing: String },
    #[error("invalid number of partitions {0}: must be between 1 and 100000")]
    InvalidPartitions(i32),
    /// Kafka's wording (CreatePartitions can only add).
    #[error(
        "topic currently has {have} partitions, which is higher than or equal to the requested {asked}"
    )]
    PartitionCount { have: i32, asked: i32 },
    #[error("replication factor {0} is not possible on a single broker")]
    InvalidReplicationFactor(i16),
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    #[error("unknown topic '{0}'")]
    Unknown(String),
    /// A compare-and-set of a topic's configs found them changed (see `set_topic_configs`).
    #[error("the configs of topic '{0}' changed meanwhile")]
    ConfigsChanged(String),
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
}

impl From<io::Error> for TopicError {
    fn from(e: io::Error) -> Self {
        Self::Storage(StorageError::Io(e))
    }
}

/// Topic records of one metadata version that this broker refused; everything else in that
/// version was applied.
#[derive(Debug, thiserror::Error)]
#[error("{} topic record(s) not applied (the rest of the metadata was): {}", .0.len(), .0.join("; "))]
pub struct Unapplied(pub Vec<String>);

pub struct Broker {
    pub config: BrokerConfig,
    log_dir: LogDir,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises topic creation and deletion (and the topics.json rewrite).
    topic_changes: Mutex<()>,
    producer_ids: ProducerIdAllocator,
    pub metrics: Metrics,
    /// Request and response bytes held for clients (see `server::limits`).
    pub memory: crate::server::limits::Memory,
    pub signals: Arc<Signals>,
    ready: AtomicBool,
    cluster: OnceLock<Arc<ClusterRuntime>>,
    /// The consumer-group coordinator (`Coordinator::run` drives its timers).
    pub groups: GroupCoordinator,
    /// Client quotas in force and each client's measured rates (`quota`).
    pub quotas: crate::quota::Quotas,
    /// Client users' SCRAM credentials in force (`auth::users`).
    pub scram_users: Arc<crate::auth::users::ScramUsers>,
    /// ACLs in force (`auth::acl`); enforced when the config has an authorizer.
    pub acls: crate::auth::acl::Acls,
    /// Whether the ACLs are known yet: standalone from the start, in a cluster once the
    /// controller's metadata has been applied. Until then only super users are served.
    pub acls_ready: AtomicBool,
    /// Incremental fetch sessions (`api::fetch_session`).
    pub fetch_sessions: Mutex<crate::api::fetch_session::SessionCache>,
}

/// In the data directory while a start that may have lost records has not registered yet
/// (`Broker::may_have_lost_records`).
const LOST_RECORDS_MARKER: &str = "lost-records-unreported";

impl Broker {
    /// Opens the data directory and every log in it (recovering after an unclean stop).
    /// Must run inside a tokio runtime.
    pub fn open(config: BrokerConfig) -> Result<Arc<Self>, StorageError> {
        let started = Instant::now();
        let log_dir = LogDir::open(&config.data_dir, config.node_id)?;
        log_dir.remove_leftover_deletions()?;
        let producer_ids = ProducerIdAllocator::open(config.data_dir.join("producer-id-block"))?;
        let broker = Self {
            log_dir,
            topics: RwLock::new(BTreeMap::new()),
            topic_changes: Mutex::new(()),
            producer_ids,
            metrics: Metrics::default(),
            memory: crate::server::limits::Memory::new(&config.limits),
            signals: Arc::new(Signals::default()),
            ready: AtomicBool::new(false),
            cluster: OnceLock::new(),
            groups: GroupCoordinator::new(config.groups.clone()),
            quotas: crate::quota::Quotas::default(),
            scram_users: Arc::default(),
            acls: Default::default(),
            acls_ready: AtomicBool::new(!config.cluster_mode),
            fetch_sessions: Mutex::new(crate::api::fetch_session::SessionCache::new(
                config.fetch_sessions,
            )),
            config,
        };
        if !broker.config.cluster_mode {
            // In a cluster they come with the controller's metadata.
            broker.quotas.set(crate::quota::load(&broker.quota_file())?);
            broker
                .scram_users
                .set(crate::auth::users::load(&broker.scram_file())?);
            broker
                .acls
                .set(crate::auth::acl::AclSet::new(crate::auth::acl::load(
                    &broker.acl_file(),
                )?));
        }
        let records = if broker.config.cluster_mode {
            Vec::new()
        } else {
            broker.log_dir.load_topics()?
        };
        let live: Vec<uuid::Uuid> = records.iter().map(|r| r.id).collect();
        // In cluster mode the controller's metadata decides what is live.
        let orphans = if broker.config.cluster_mode {
            Vec::new()
        } else {
            broker.log_dir.orphans(&live)?
        };
        for orphan in orphans {
            warn!(dir = %orphan.display(), "removing the directory of a deleted topic");
            broker.log_dir.remove_partition_dir(&orphan)?;
        }
        let mut topics = BTreeMap::new();
        for record in records {
            let topic = broker.open_topic(record).map_err(|e| match e {
                TopicError::Storage(s) => s,
                other => StorageError::Refused(format!("topics.json: {other}")),
            })?;
            topics.insert(topic.record.name.clone(), topic);
        }
        *broker.topics.write().unwrap_or_else(|p| p.into_inner()) = topics;
        broker
            .metrics
            .recovery_seconds
            .set(started.elapsed().as_secs_f64());
        if let Err(e) = broker.checkpoint() {
            // Not fatal (e.g. a full disk): the previous checkpoints still hold.
            warn!(error = %e, "writing checkpoints at startup failed");
        }
        info!(ms = started.elapsed().as_millis() as u64, "logs loaded");
        Ok(Arc::new(broker))
    }

    /// Where a standalone broker keeps its client quotas.
    pub fn quota_file(&self) -> PathBuf {
        self.config.data_dir.join("client-quotas.json")
    }

    /// Where a standalone broker keeps its ACLs.
    pub fn acl_file(&self) -> PathBuf {
        self.config.data_dir.join("acls.json")
    }

    /// Where a standalone broker keeps its client users' SCRAM credentials.
    pub fn scram_file(&self) -> PathBuf {
        self.config.data_dir.join("scram-credentials.json")
    }

    fn open_topic(&self, record: TopicRecord) -> Result<Arc<Topic>, TopicError> {
        topic_name::validate(&record.name)?;
        let config = self.config.topic_defaults.with_overrides(&record.configs)?;
        let partitions = (0..record.partitions)
            .map(|p| {
                self.open_standalone_partition(&record, p, &config)
                    .map(Some)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Topic {
            record,
            config,
            partitions,
        }))
    }

    /// Opens partition `p` of a standalone topic, this broker its only replica and leader.
    fn open_standalone_partition(
        &self,
        record: &TopicRecord,
        p: i32,
        config: &TopicConfig,
    ) -> Result<Arc<Partition>, TopicError> {
        let dir = self.log_dir.partition_dir(&record.name, p)?;
        self.log_dir
            .claim_partition_dir(&dir, record.id, &record.name, p)?;
        let (mut log, report) =
            Log::open(&dir, config.clone(), self.log_dir.hints(&record.name, p))?;
        // Standalone, every start is a new leadership: a new epoch, as Kafka's controller
        // gives a restarted leader, so clients can detect any truncation (KIP-320).
        log.assign_leader_epoch(log.latest_epoch().map_or(0, |e| e + 1));
        self.metrics
            .recovery_segments
            .inc_by(report.segments_scanned as u64);
        self.metrics
            .recovery_truncated_bytes
            .inc_by(report.truncated_bytes);
        let node = self.config.node_id;
        let assignment = Assignment {
            leader: node,
            leader_epoch: log.latest_epoch().unwrap_or(0),
            partition_epoch: 0,
            replicas: vec![node],
            isr: vec![node],
        };
        let id = PartitionId {
            topic: record.name.clone(),
            index: p,
            topic_id: record.id,
        };
        let lead = Leadership {
            assignment,
            settings: standalone_settings(config),
            high_watermark: self.log_dir.high_watermark(&record.name, p),
        };
        Ok(Partition::new(
            id,
            node,
            log,
            lead,
            Arc::clone(&self.signals),
            crate::clock::now_ms(),
        ))
    }

    pub fn cluster_id(&self) -> &str {
        self.log_dir.cluster_id()
    }

    /// Whether this start may have lost records the cluster counts on (cluster mode, for the
    /// registration: the controller then no longer counts this broker's logs as whole). Only
    /// after an unclean shutdown, and then if the machine rebooted since (unsynced writes may
    /// be gone with the page cache) or recovery cuts any log (a damaged segment). Recovery
    /// runs here, before registering, over every partition directory on disk; what it cuts
    /// stays cut, and the logs open again when the controller's metadata names them. The
    /// answer is kept on disk until a registration carried it (`lost_records_reported`): a
    /// start that stops before that would otherwise find nothing left to cut and no reboot,
    /// and register as whole.
    pub fn may_have_lost_records(&self) -> Result<bool, StorageError> {
        let marker = self.config.data_dir.join(LOST_RECORDS_MARKER);
        if marker.exists() {
            warn!(
                "a previous start may have lost records and did not register since: this broker registers as such"
            );
            self.log_dir.record_boot()?;
            return Ok(true);
        }
        if self.log_dir.was_clean_shutdown() {
            self.log_dir.record_boot()?;
            return Ok(false);
        }
        // Presumed lost until shown whole, on disk before the evidence can go (the boot id
        // recorded, a torn tail cut): a start that dies in between must still report it.
        let same_boot = self.log_dir.same_boot_as_recorded();
        crate::storage::checkpoint::write_atomic(&marker, b"")?;
        self.log_dir.record_boot()?;
        let mut cut = Vec::new();
        if same_boot {
            for (topic, p, dir) in self.log_dir.partition_dirs()? {
                let config = self.config.topic_defaults.clone();
                match Log::open(&dir, config, self.log_dir.hints(&topic, p)) {
                    Ok((_log, report)) if report.truncated_at.is_some() => {
                        cut.push(format!("{topic}-{p}"))
                    }
                    Ok(_) => {}
                    // Opened again (and refused then) if the metadata names it; counted as cut.
                    Err(e) => {
                        warn!(dir = %dir.display(), error = %e, "cannot recover a partition directory before registering");
                        cut.push(format!("{topic}-{p}"));
                    }
                }
            }
        }
        if same_boot && cut.is_empty() {
            std::fs::remove_file(&marker)?;
            info!("unclean shutdown within this boot and no log cut: nothing written was lost");
            return Ok(false);
        }
        warn!(rebooted = !same_boot, cut = ?cut, "unclean shutdown that may have lost records: this broker registers as such, and leads no partition while another replica is known to hold every committed record");
        Ok(true)
    }

    /// The controller accepted a registration that said this broker may have lost records.
    pub fn lost_records_reported(&self) {
        let marker = self.config.data_dir.join(LOST_RECORDS_MARKER);
        match std::fs::remove_file(&marker) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(error = %e, "cannot remove the lost-records marker; the next start reports a loss again")
            }
        }
    }
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }
    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<Arc<Topic>> {
        self.topics().into_iter().find(|t| t.record.id == id)
    }
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let t = self.topic(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|i| t.partitions.get(i).cloned().flatten())
    }

    /// Creates a topic (or, with `validate_only`, checks that it could be created).
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        // Thousands of partitions are thousands of directories and fsyncs.
        crate::blocking::off_runtime(|| {
            self.create_topic_now(name, partitions, replication_factor, configs, validate_only)
        })
    }

    fn create_topic_now(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        topic_name::validate(name)?;
        let partitions = if partitions == -1 {
            self.config.default_partitions
        } else {
            partitions
        };
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(TopicError::InvalidPartitions(partitions));
        }
        if replication_factor != -1 && replication_factor != 1 {
            return Err(TopicError::InvalidReplicationFactor(replication_factor));
        }
        let config = self.config.topic_defaults.with_overrides(&configs)?;
        let _guard = self.topic_changes.lock().unwrap_or_else(|p| p.into_inner());
        if self.topic(name).is_some() {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        if let Some(existing) = self.colliding_topic(name) {
            return Err(TopicError::Collision {
                name: name.to_string(),
                existing,
            });
        }
        let record = TopicRecord {
            name: name.to_string(),
            id: uuid::Uuid::new_v4(),
            partitions,
            configs,
        };
        if validate_only {
            let partitions = Vec::new();
            return Ok(Arc::new(Topic {
                record,
                config,
                partitions,
            }));
        }
        // Directories first, then the topics file: a crash in between leaves unused
        // directories, never a topic without its logs.
        let topic = self.open_topic(record)?;
        let mut records: Vec<TopicRecord> =
            self.topics().iter().map(|t| t.record.clone()).collect();
        records.push(topic.record.clone());
        self.log_dir.save_topics(&records)?;
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Arc::clone(&topic));
        info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// An existing topic `name` collides with (Kafka's `.`/`_` rule), if any.
    pub fn colliding_topic(&self, name: &str) -> Option<String> {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        topic_name::find_collision(name, topics.keys().map(String::as_str)).map(str::to_string)
    }

    /// Auto-creates a topic on first use when allowed.
    pub fn get_or_auto_create(&self, name: &str) -> Option<Arc<Topic>> {
        if let Some(t) = self.topic(name) {
            return Some(t);
        }
        if !self.config.auto_create_topics {
            return None;
        }
        match self.create_topic(name, -1, -1, BTreeMap::new(), false) {
            Ok(t) => Some(t),
            Err(TopicError::AlreadyExists(_)) => self.topic(name),
            Err(e) => {
                warn!(topic = name, error = %e, "auto-creation failed");
                None
            }
        }
    }

    pub fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        crate::blocking::off_runtime(|| self.delete_topic_now(name))
    }

    fn delete_topic_now(&self, name: &str) -> Result<(), TopicError> {
        let _guard = self.topic_changes.lock().unwrap_or_else(|p| p.into_inner());
        let topic = self
            .topic(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let records: Vec<TopicRecord> = self
            .topics()
            .iter()
            .filter(|t| t.record.name != name)
            .map(|t| t.record.clone())
            .collect();
        // Stop the old logs first so nothing (retention, a late append) writes through them,
        // then forget the topic, then remove its directories. A crash after the topics file
        // is written leaves stamped directories that startup removes as orphans.
        for p in topic.partitions.iter().flatten() {
            p.remove();
        }
        self.log_dir.save_topics(&records)?;
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        for p in 0..topic.record.partitions {
            let removed = self
                .log_dir
                .partition_dir(name, p)
                .map_err(io::Error::other)
                .and_then(|dir| self.log_dir.remove_partition_dir(&dir));
            if let Err(e) = removed {
                warn!(topic = name, partition = p, error = %e, "cannot remove deleted partition directory; it is removed at the next start");
            }
        }
        if let Err(e) = self.checkpoint() {
            warn!(error = %e, "writing checkpoints failed");
        }
        info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Grows a standalone topic to `total` partitions (CreatePartitions). Kafka cannot
    /// remove partitions, and asking for the current count is an error there too.
    pub fn add_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        crate::blocking::off_runtime(|| {
            let _guard = self.topic_changes.lock().unwrap_or_else(|p| p.into_inner());
            let topic = self
                .topic(name)
                .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
            let have = topic.record.partitions;
            if total <= have {
                return Err(TopicError::PartitionCount { have, asked: total });
            }
            if total > MAX_PARTITIONS {
                return Err(TopicError::InvalidPartitions(total));
            }
            if validate_only {
                return Ok(());
            }
            let record = TopicRecord {
                partitions: total,
                ..topic.record.clone()
            };
            let mut partitions = topic.partitions.clone();
            for p in have..total {
                partitions.push(Some(self.open_standalone_partition(
                    &record,
                    p,
                    &topic.config,
                )?));
            }
            self.replace_topic(Topic {
                record,
                config: topic.config.clone(),
                partitions,
            })?;
            info!(topic = name, from = have, to = total, "added partitions");
            Ok(())
        })
    }

    /// Replaces a standalone topic's config overrides (AlterConfigs, IncrementalAlterConfigs);
    /// its live partitions take the new config at once.
    pub fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        expected: Option<&BTreeMap<String, String>>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let config = self.config.topic_defaults.with_overrides(&configs)?;
        crate::blocking::off_runtime(|| {
            let _guard = self.topic_changes.lock().unwrap_or_else(|p| p.into_inner());
            let topic = self
                .topic(name)
                .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
            if expected.is_some_and(|e| *e != topic.record.configs) {
                return Err(TopicError::ConfigsChanged(name.to_string()));
            }
            if validate_only || topic.record.configs == configs {
                return Ok(());
            }
            let record = TopicRecord {
                configs,
                ..topic.record.clone()
            };
            self.replace_topic(Topic {
                record,
                config: config.clone(),
                partitions: topic.partitions.clone(),
            })?;
            for p in topic.partitions.iter().flatten() {
                let proposal = p.reconfigure(config.clone(), standalone_settings(&config));
                self.propose_isr(p, proposal);
            }
            info!(topic = name, "topic configs changed");
            Ok(())
        })
    }

    /// Saves the topics file with `topic` in place of its namesake, then swaps it in.
    /// The caller holds `topic_changes`.
    fn replace_topic(&self, topic: Topic) -> Result<(), TopicError> {
        let records: Vec<TopicRecord> = self
            .topics()
            .iter()
            .map(|t| {
                if t.record.name == topic.record.name {
                    topic.record.clone()
                } else {
                    t.record.clone()
                }
            })
            .collect();
        self.log_dir.save_topics(&records)?;
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.record.name.clone(), Arc::new(topic));
        Ok(())
    }

    pub fn cluster(&self) -> Option<&Arc<ClusterRuntime>> {
        self.cluster.get()
    }

    pub fn start_cluster(&self, runtime: Arc<ClusterRuntime>) {
        let _ = self.cluster.set(runtime);
    }

    /// Every partition hosted here.
    pub fn hosted_partitions(&self) -> Vec<Arc<Partition>> {
        self.topics()
            .iter()
            .flat_map(|t| t.partitions.iter().flatten().cloned())
            .collect()
    }

    /// Sends an ISR change to the controller. Standalone, a partition has no followers, so
    /// there is never anything to propose.
    pub fn propose_isr(&self, partition: &Arc<Partition>, proposal: Option<IsrProposal>) {
        if let (Some(rt), Some(p)) = (self.cluster(), proposal.clone()) {
            rt.propose_isr(Arc::clone(partition), p);
            return;
        }
        if let Some(p) = proposal {
            warn!(topic = %partition.topic, partition = partition.index, isr = ?p.isr, "ISR change proposed without a controller; ignored");
            partition.proposal_rejected();
        }
    }

    /// Cluster mode: makes the hosted partitions and their roles match the controller's
    /// metadata. Opens logs for new replicas, moves leadership in and out, (re)points follower
    /// fetchers, and removes the logs of partitions that left this broker.
    ///
    /// A topic record this broker cannot apply (an illegal name, a name that differs from its
    /// key, partitions out of order) is refused on its own, logged with a warning naming it,
    /// and reported in the returned [`Unapplied`]; a replica whose log cannot be opened is
    /// left out and reported too ([`Broker::follow_metadata`] tries it again). Everything
    /// else in `meta` is applied
    /// regardless, so one bad record never stops this broker from following the controller.
    /// The controller refuses such names before they reach the metadata; this is the last line.
    pub fn apply_metadata(&self, meta: &ClusterMetadata) -> Result<(), Unapplied> {
        // A new topic of thousands of partitions opens thousands of logs.
        crate::blocking::off_runtime(|| self.apply_metadata_now(meta))
    }

    /// Applies each metadata version `metadata` publishes, until `stop`. When part of one
    /// could not be applied it is applied again after `retry` (doubling, up to 30 s) without
    /// waiting for the next version: a replica whose log could not be opened (its directory
    /// or first files not creatable on a full disk) used to wait for the next metadata change,
    /// and when nothing else changed (a reassignment adding this broker waits on exactly that
    /// replica) it was never opened, the reassignment never completed.
    pub async fn follow_metadata(
        self: Arc<Self>,
        mut metadata: tokio::sync::watch::Receiver<Arc<ClusterMetadata>>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        retry: Duration,
    ) {
        const MAX_RETRY: Duration = Duration::from_secs(30);
        let mut backoff = retry;
        loop {
            if *stop.borrow() {
                return;
            }
            let m = metadata.borrow_and_update().clone();
            let unapplied = self.apply_metadata(&m).is_err_and(|e| {
                error!(error = %e, version = m.version, retry_ms = backoff.as_millis() as u64, "cannot apply part of the cluster metadata; the rest is applied, and it is applied again");
                true
            });
            if !unapplied {
                backoff = retry;
            }
            tokio::select! {
                // Stopping wins over a change or a retry that is ready at the same time.
                biased;
                _ = stop.changed() => return,
                r = metadata.changed() => {
                    if r.is_err() {
                        return;
                    }
                    backoff = retry;
                }
                () = tokio::time::sleep(backoff), if unapplied => {
                    backoff = (backoff * 2).min(MAX_RETRY);
                }
            }
        }
    }

    fn apply_metadata_now(&self, meta: &ClusterMetadata) -> Result<(), Unapplied> {
        let Some(rt) = self.cluster().cloned() else {
            return Ok(());
        };
        if *self.quotas.current() != meta.client_quotas {
            self.quotas.set(meta.client_quotas.clone());
        }
        if *self.scram_users.current() != meta.scram_credentials {
            self.scram_users.set(meta.scram_credentials.clone());
        }
        if self.acls.current().list() != meta.acls.as_slice() {
            self.acls
                .set(crate::auth::acl::AclSet::new(meta.acls.clone()));
        }
        self.acls_ready.store(true, Ordering::Release);
        let node = self.config.node_id;
        let now = crate::clock::now_ms();
        let _guard = self.topic_changes.lock().unwrap_or_else(|p| p.into_inner());
        let current: BTreeMap<String, Arc<Topic>> = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut next = BTreeMap::new();
        let mut refused = Vec::new();
        for (key, tm) in &meta.topics {
            if let Err(why) = applicable(key, tm) {
                warn!(topic = ?key, version = meta.version, reason = %why, "refusing a topic record from the controller; the rest of the metadata is applied");
                refused.push(format!("{key:?}: {why}"));
                // Whatever this broker already hosts under that name stays as it is: a record
                // it cannot read is no reason to delete data.
                if let Some(old) = current.get(key) {
                    next.insert(key.clone(), Arc::clone(old));
                }
                continue;
            }
            let config = self.config.topic_defaults.with_overrides(&tm.configs).unwrap_or_else(|e| {
                warn!(topic = %tm.name, error = %e, "invalid topic config from the controller; using defaults");
                self.config.topic_defaults.clone()
            });
            let existing = current.get(&tm.name).filter(|t| t.record.id == tm.id);
            let settings = rt.settings(config.min_insync_replicas);
            let mut partitions = Vec::new();
            for pm in &tm.partitions {
                if !pm.replicas.contains(&node) {
                    partitions.push(None);
                    continue;
                }
                let found = existing
                    .and_then(|t| t.partitions.get(pm.partition as usize).cloned().flatten());
                let part = match found {
                    Some(p) => {
                        if existing.is_some_and(|t| t.config != config) {
                            let proposal = p.reconfigure(config.clone(), settings);
                            self.propose_isr(&p, proposal);
                        }
                        p
                    }
                    None => match self.open_replica(tm.id, &tm.name, pm, &config, settings) {
                        Ok(p) => p,
                        Err(e) => {
                            warn!(topic = %tm.name, partition = pm.partition, error = %e, "cannot open a replica; it is left out until metadata is applied again");
                            refused.push(format!("{:?} partition {}: {e}", tm.name, pm.partition));
                            partitions.push(None);
                            continue;
                        }
                    },
                };
                let a = assignment(pm);
                if pm.leader == node {
                    rt.fetchers.unfollow(&tm.name, pm.partition);
                    if part.is_leader() && part.leader_epoch() == pm.leader_epoch {
                        let proposal = part.assignment_committed(a, now);
                        self.propose_isr(&part, proposal);
                    } else {
                        part.become_leader(a, settings, now);
                    }
                } else {
                    if part.is_leader()
                        || part.leader_id() != pm.leader
                        || part.leader_epoch() != pm.leader_epoch
                    {
                        part.become_follower(pm.leader, pm.leader_epoch);
                    }
                    match meta.brokers.get(&pm.leader) {
                        Some(b) => rt.fetchers.follow(
                            Arc::clone(&part),
                            pm.leader,
                            b.replication_address(),
                        ),
                        None => rt.fetchers.unfollow(&tm.name, pm.partition),
                    }
                }
                partitions.push(Some(part));
            }
            let record = TopicRecord {
                name: tm.name.clone(),
                id: tm.id,
                partitions: tm.partitions.len() as i32,
                configs: tm.configs.clone(),
            };
            next.insert(
                tm.name.clone(),
                Arc::new(Topic {
                    record,
                    config,
                    partitions,
                }),
            );
        }
        // Replicas that left this broker (topic deleted or reassigned away).
        for (name, old) in &current {
            for p in old.partitions.iter().flatten() {
                let kept = next
                    .get(name)
                    .and_then(|t| t.partitions.get(p.index as usize).cloned().flatten())
                    .is_some_and(|q| Arc::ptr_eq(&q, p));
                if kept {
                    continue;
                }
                p.remove();
                // A topic deleted and created again under the same name, seen in one metadata
                // version: the new replica already holds this directory (opening it removed
                // the old topic's files) and its fetcher, so neither is touched here.
                let recreated = next
                    .get(name)
                    .and_then(|t| t.partitions.get(p.index as usize).cloned().flatten())
                    .is_some();
                if recreated {
                    info!(topic = %name, partition = p.index, "replica of a deleted topic replaced by its new namesake");
                    continue;
                }
                rt.fetchers.unfollow(name, p.index);
                info!(topic = %name, partition = p.index, "replica removed from this broker");
                let removed = self
                    .log_dir
                    .partition_dir(name, p.index)
                    .map_err(io::Error::other)
                    .and_then(|dir| self.log_dir.remove_partition_dir(&dir));
                if let Err(e) = removed {
                    warn!(topic = %name, partition = p.index, error = %e, "cannot remove a removed replica's directory");
                }
            }
        }
        *self.topics.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.signals.high_watermark_moved();
        if refused.is_empty() {
            Ok(())
        } else {
            Err(Unapplied(refused))
        }
    }

    fn open_replica(
        &self,
        topic_id: uuid::Uuid,
        name: &str,
        pm: &crate::metadata::PartitionMeta,
        config: &TopicConfig,
        settings: ReplicationSettings,
    ) -> Result<Arc<Partition>, StorageError> {
        let dir = self.log_dir.partition_dir(name, pm.partition)?;
        self.log_dir
            .claim_partition_dir(&dir, topic_id, name, pm.partition)?;
        let (mut log, report) =
            Log::open(&dir, config.clone(), self.log_dir.hints(name, pm.partition))?;
        self.metrics
            .recovery_segments
            .inc_by(report.segments_scanned as u64);
        self.metrics
            .recovery_truncated_bytes
            .inc_by(report.truncated_bytes);
        if pm.leader == self.config.node_id {
            log.assign_leader_epoch(pm.leader_epoch);
        }
        let id = PartitionId {
            topic: name.to_string(),
            index: pm.partition,
            topic_id,
        };
        let lead = Leadership {
            assignment: assignment(pm),
            settings,
            high_watermark: self.log_dir.high_watermark(name, pm.partition),
        };
        Ok(Partition::new(
            id,
            self.config.node_id,
            log,
            lead,
            Arc::clone(&self.signals),
            crate::clock::now_ms(),
        ))
    }

    pub fn next_producer_id(&self) -> io::Result<i64> {
        self.producer_ids.next()
    }

    /// Writes recovery points, log start offsets and high watermarks of every partition.
    pub fn checkpoint(&self) -> io::Result<()> {
        let (mut rp, mut start, mut hw) = (OffsetMap::new(), OffsetMap::new(), OffsetMap::new());
        for t in self.topics() {
            for p in t.partitions.iter().flatten() {
                let key = (t.record.name.clone(), p.index);
                let log = p.log();
                rp.insert(key.clone(), log.recovery_point());
                start.insert(key.clone(), log.log_start_offset());
                hw.insert(key, p.high_watermark());
            }
        }
        self.log_dir.write_checkpoints(&rp, &start, &hw)
    }

    /// Deletes segments past retention in every partition.
    /// Retention, and the expiry of idle producer ids, on every hosted partition.
    pub fn apply_retention(&self, now_ms: i64) {
        let mut expired = 0;
        for t in self.topics() {
            for p in t.partitions.iter().flatten() {
                let hw = p.high_watermark();
                let mut log = p.log();
                if let Err(e) = log.apply_retention(now_ms, hw) {
                    warn!(topic = %t.record.name, partition = p.index, error = %e, "retention failed");
                }
                expired +=
                    log.remove_expired_producers(now_ms, self.config.producer_id_expiration_ms);
            }
        }
        if expired > 0 {
            tracing::info!(
                expired,
                "forgot idle producer ids (producer.id.expiration.ms)"
            );
        }
    }

    /// Refreshes per-partition gauges (called before rendering metrics).
    pub fn update_gauges(&self) {
        let m = &self.metrics;
        m.request_bytes_queued
            .set(self.memory.request_bytes() as i64);
        m.response_bytes_unwritten
            .set(self.memory.response_bytes() as i64);
        for t in self.topics() {
            for p in t.partitions.iter().flatten() {
                let labels = PartitionLabels {
                    topic: t.record.name.clone(),
                    partition: p.index.to_string(),
                };
                self.metrics
                    .log_end_offset
                    .get_or_create(&labels)
                    .set(p.log().log_end_offset());
                self.metrics
                    .high_watermark
                    .get_or_create(&labels)
                    .set(p.high_watermark());
            }
        }
    }

    /// Clean stop: flush and close every log, checkpoint, then write the clean-shutdown marker
    /// (only if everything before it succeeded, so a failed flush forces recovery next time).
    pub fn close(&self) -> io::Result<()> {
        let mut result = Ok(());
        for t in self.topics() {
            for p in t.partitions.iter().flatten() {
                p.shutdown();
                if let Err(e) = p.log().close() {
                    warn!(topic = %t.record.name, partition = p.index, error = %e, "closing log failed");
                    result = Err(e);
                }
            }
        }
        result?;
        self.checkpoint()?;
        self.log_dir.mark_clean_shutdown()?;
        info!("all logs closed cleanly");
        Ok(())
    }
}

/// Whether a topic record from the controller can be applied at all: a legal name (so its
/// directories are plain names inside the data directory), the same as the record's key, and
/// partitions numbered 0..n in order (they are looked up by position).
fn applicable(key: &str, tm: &crate::metadata::TopicMeta) -> Result<(), String> {
    topic_name::validate(&tm.name).map_err(|e| e.to_string())?;
    if key != tm.name {
        return Err(format!(
            "the record is filed under {key:?} but names topic {:?}",
            tm.name
        ));
    }
    if let Some((i, p)) = tm
        .partitions
        .iter()
        .enumerate()
        .find(|(i, p)| i64::from(p.partition) != *i as i64)
    {
        return Err(format!(
            "partition {} is listed at position {i}; partitions must be numbered 0..n in order",
            p.partition
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::cluster::membership::Membership;
    use crate::metadata::{PartitionMeta, TopicMeta};
    use crate::replication::fetcher::{FetcherManager, FetcherSettings};

    const NODE: i32 = 1;

    fn cluster_broker_config(data: &Path) -> BrokerConfig {
        BrokerConfig {
            node_id: NODE,
            data_dir: data.to_path_buf(),
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            listeners: Vec::new(),
            auto_create_topics: false,
            default_partitions: 1,
            topic_defaults: TopicConfig::default(),
            max_request_bytes: 1 << 20,
            cluster_mode: true,
            default_replication_factor: 1,
            groups: GroupConfig::default(),
            limits: Default::default(),
            producer_id_expiration_ms: 86_400_000,
            cluster_secret: None,
            fetch_sessions: Default::default(),
            replica_selector: Default::default(),
            authorizer: None,
        }
    }

    fn cluster_broker(data: &Path) -> Arc<Broker> {
        let broker = Broker::open(cluster_broker_config(data)).unwrap();
        let fetchers = FetcherManager::new(NODE, FetcherSettings::default());
        broker.start_cluster(ClusterRuntime::new(
            Membership::offline(NODE, data),
            fetchers,
            10_000,
        ));
        broker
    }

    /// The registration's loss report: presumed on a first start (no boot recorded), kept
    /// until a registration carried it, then gone for a kill within one boot that cut nothing
    /// and after a clean shutdown.
    #[tokio::test]
    async fn a_possible_loss_is_reported_until_a_registration_carried_it() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Broker::open(cluster_broker_config(dir.path())).unwrap();
        let b = open();
        assert!(b.may_have_lost_records().unwrap(), "a first start");
        drop(b);
        let b = open();
        assert!(
            b.may_have_lost_records().unwrap(),
            "stopped before a registration carried it"
        );
        b.lost_records_reported();
        drop(b);
        let b = open();
        let boot_id = Path::new("/proc/sys/kernel/random/boot_id").exists();
        assert_eq!(
            b.may_have_lost_records().unwrap(),
            !boot_id,
            "killed within one boot, nothing cut"
        );
        b.close().unwrap();
        drop(b);
        let b = open();
        assert!(!b.may_have_lost_records().unwrap(), "a clean shutdown");
    }

    /// The directories directly under `path`, sorted.
    fn dirs_in(path: &Path) -> Vec<String> {
        let mut dirs: Vec<String> = std::fs::read_dir(path)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        dirs.sort();
        dirs
    }

    /// One partition led by this broker.
    fn led_here(name: &str) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            id: uuid::Uuid::new_v4(),
            configs: BTreeMap::new(),
            partitions: vec![PartitionMeta {
                partition: 0,
                replicas: vec![NODE],
                isr: vec![NODE],
                leader: NODE,
                leader_epoch: 1,
                partition_epoch: 0,
                adding: vec![],
                removing: vec![],
                elr: vec![],
            }],
            managed_by: None,
        }
    }

    /// Issue part 2: `../ESCAPED` made a directory outside the data directory, `./victim`
    /// took over (and emptied) `victim`'s directory, and `bad\0name` made every later apply
    /// fail, so no new topic was ever served. Now each such record is refused on its own and
    /// everything else in the same metadata is applied.
    #[tokio::test]
    async fn a_record_that_cannot_be_applied_never_stops_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let broker = cluster_broker(&data);
        let victim = led_here("victim");
        let mut meta = ClusterMetadata {
            version: 1,
            ..ClusterMetadata::default()
        };
        meta.topics.insert("victim".into(), victim.clone());
        broker.apply_metadata(&meta).unwrap();
        let victim_dir = data.join("victim-0");
        assert!(victim_dir.join("00000000000000000000.log").exists());

        meta.version = 2;
        let bad = crate::topic_name::REFUSED_EXAMPLES;
        for name in bad {
            meta.topics.insert(name.into(), led_here(name));
        }
        // A record whose key and name disagree is refused too, and leaves `victim` alone.
        meta.topics.insert("zz-mismatch".into(), led_here("victim"));
        meta.topics.insert("good".into(), led_here("good"));
        let applied = broker.apply_metadata(&meta);
        assert!(applied.is_err(), "refused records are reported");

        let good = broker.partition("good", 0).expect("good topic applied");
        assert!(good.is_leader());
        let kept = broker.partition("victim", 0).expect("victim kept");
        assert_eq!(kept.topic_id, victim.id);
        let stamp = std::fs::read_to_string(victim_dir.join("partition.metadata")).unwrap();
        assert!(stamp.contains(&victim.id.to_string()), "{stamp}");
        for name in bad {
            assert!(broker.topic(name).is_none(), "{name:?} was applied");
        }
        assert!(
            !root.path().join("ESCAPED-0").exists(),
            "escaped the data dir"
        );
        let dirs = dirs_in(&data);
        assert_eq!(dirs, ["good-0", "victim-0"]);

        // Later metadata still applies (the bad records are still in it).
        meta.version = 3;
        meta.topics.insert("later".into(), led_here("later"));
        let _ = broker.apply_metadata(&meta);
        assert!(
            broker.partition("later", 0).is_some(),
            "later topic applied"
        );
        assert!(broker.partition("good", 0).is_some());
    }

    /// A replica whose log could not be opened (here a file takes its directory's name; on a
    /// full disk its first files cannot be written) is opened once that is fixed, without
    /// another metadata version: nothing else may change (a reassignment adding this broker
    /// waits on exactly this replica).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_that_could_not_be_opened_is_opened_without_a_metadata_change() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let broker = cluster_broker(&data);
        let blocker = data.join("blocked-0");
        std::fs::write(&blocker, b"in the way").unwrap();
        let mut meta = ClusterMetadata {
            version: 1,
            ..ClusterMetadata::default()
        };
        meta.topics.insert("blocked".into(), led_here("blocked"));
        let (metadata, rx) = tokio::sync::watch::channel(Arc::new(meta));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let following = tokio::spawn(Arc::clone(&broker).follow_metadata(
            rx,
            stopped,
            Duration::from_millis(50),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(broker.partition("blocked", 0).is_none());
        std::fs::remove_file(&blocker).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while broker.partition("blocked", 0).is_none() {
            assert!(
                Instant::now() < deadline,
                "the replica was not opened again"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(broker.partition("blocked", 0).unwrap().is_leader());
        stop.send(true).unwrap();
        following.await.unwrap();
        drop(metadata);
    }

    /// A topic deleted and created again under the same name, both seen in one metadata
    /// version: the new replica keeps its directory (the cleanup of the old one used to remove
    /// it, leaving the new log writing into deleted files).
    #[tokio::test]
    async fn a_topic_recreated_in_one_metadata_step_keeps_its_directory() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let broker = cluster_broker(&data);
        let mut meta = ClusterMetadata {
            version: 1,
            ..ClusterMetadata::default()
        };
        let old = led_here("again");
        meta.topics.insert("again".into(), old.clone());
        broker.apply_metadata(&meta).unwrap();
        meta.version = 2;
        let new = led_here("again");
        meta.topics.insert("again".into(), new.clone());
        broker.apply_metadata(&meta).unwrap();
        let p = broker.partition("again", 0).unwrap();
        assert_eq!(p.topic_id, new.id);
        let stamp = std::fs::read_to_string(data.join("again-0/partition.metadata")).unwrap();
        assert!(stamp.contains(&new.id.to_string()), "{stamp}");
        assert!(data.join("again-0/00000000000000000000.log").exists());
    }

    /// A broker leading "followed" (replicas this one and 3, both in the ISR) with offsets 0-9
    /// written and not yet fetched by broker 3.
    fn leading_for_follower_3(data: &Path) -> (Arc<Broker>, Arc<crate::partition::Partition>) {
        use crate::protocol::batch::{BatchHeader, test_support::batch};
        let broker = cluster_broker(data);
        let mut topic = led_here("followed");
        topic.partitions[0].replicas = vec![NODE, 3];
        topic.partitions[0].isr = vec![NODE, 3];
        let mut meta = ClusterMetadata {
            version: 1,
            ..ClusterMetadata::default()
        };
        meta.topics.insert("followed".into(), topic);
        broker.apply_metadata(&meta).unwrap();
        let p = broker.partition("followed", 0).unwrap();
        let now = crate::clock::now_ms();
        let b = batch(10, now, (-1, -1, -1), 10);
        let h = BatchHeader::parse(&b).unwrap();
        p.append_as_leader(&b, &h, None, false, now).unwrap();
        assert_eq!(p.high_watermark(), 0, "follower 3 holds nothing yet");
        (broker, p)
    }

    /// Broker 3's Fetch v12 of "followed" (`at`: the partition named, at (offset, current
    /// leader epoch); None: left out), answered at once; returns the response and its record
    /// bytes.
    fn follower_3_fetch(
        broker: &Arc<Broker>,
        session_id: i32,
        epoch: i32,
        at: Option<(i64, i32)>,
    ) -> (kafka_protocol::messages::FetchResponse, usize) {
        use crate::api::{Client, Reply};
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        use kafka_protocol::messages::{FetchRequest, ResponseKind, TopicName};
        use kafka_protocol::protocol::StrBytes;
        let client = Client {
            id: "follower".into(),
            host: "/127.0.0.1".into(),
            listener: Arc::from("internal"),
            principal: None,
        };
        let mut r = FetchRequest::default();
        r.replica_id = 3.into();
        r.max_bytes = 1 << 20;
        r.session_id = session_id;
        r.session_epoch = epoch;
        if let Some((offset, leader_epoch)) = at {
            let mut fp = FetchPartition::default();
            fp.partition = 0;
            fp.fetch_offset = offset;
            fp.current_leader_epoch = leader_epoch;
            fp.partition_max_bytes = 1 << 20;
            let mut t = FetchTopic::default();
            t.topic = TopicName(StrBytes::from_static_str("followed"));
            t.partitions = vec![fp];
            r.topics = vec![t];
        }
        let resp = match crate::api::fetch::handle(broker, r, 12, &client) {
            Reply::Now(k) => match *k {
                ResponseKind::Fetch(f) => f,
                other => panic!("{other:?}"),
            },
            _ => panic!("a fetch with max wait 0 answers now"),
        };
        let records = resp
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
            .sum::<usize>();
        (resp, records)
    }

    /// Fetch sessions and follower progress: a follower's offset counts only as it names it. A
    /// partition it leaves out of an incremental fetch is read at the offset it last named,
    /// even after the session returned it records beyond that offset: had the cache advanced
    /// the offset from the response, this follower, which never said it holds offsets 0-9,
    /// would have moved the high watermark to 10 and acknowledged writes only the leader has.
    #[tokio::test]
    async fn an_omitted_partition_never_counts_as_progress_its_follower_did_not_name() {
        let root = tempfile::tempdir().unwrap();
        let (broker, p) = leading_for_follower_3(&root.path().join("data"));
        // A full fetch at 0 opens the session and returns offsets 0-9.
        let (r, records) = follower_3_fetch(&broker, 0, 0, Some((0, 1)));
        let id = r.session_id;
        assert!(id > 0);
        assert!(records > 0);
        assert_eq!(p.high_watermark(), 0);
        // Incremental fetches leaving the partition out: read at 0 again, never counted past it.
        for epoch in 1..=3 {
            let (r, records) = follower_3_fetch(&broker, id, epoch, None);
            assert_eq!((r.error_code, r.session_id), (0, id));
            assert!(records > 0, "the session still reads from 0");
            assert_eq!(p.high_watermark(), 0, "epoch {epoch}");
        }
        // Naming 10 proves it.
        let (r, _) = follower_3_fetch(&broker, id, 4, Some((10, 1)));
        assert_eq!(r.error_code, 0);
        assert_eq!(p.high_watermark(), 10);
        assert_eq!(follower_3_fetch(&broker, id, 5, None).1, 0);
        assert_eq!(p.high_watermark(), 10);
    }

    /// A partition left out of an incremental fetch keeps its follower caught up: a follower
    /// names only partitions whose position changed, so without this an idle follower would
    /// leave the ISR after replica.lag.time.max.ms.
    #[tokio::test]
    async fn an_omitted_partition_keeps_its_follower_caught_up() {
        let root = tempfile::tempdir().unwrap();
        let (broker, p) = leading_for_follower_3(&root.path().join("data"));
        let caught_up_ms_ago = || {
            let s = p.status(crate::clock::now_ms());
            s.followers
                .iter()
                .find(|f| f.broker == 3)
                .map(|f| f.caught_up_ms_ago)
                .unwrap()
        };
        let (r, _) = follower_3_fetch(&broker, 0, 0, Some((10, 1)));
        let id = r.session_id;
        assert!(id > 0);
        assert_eq!(p.high_watermark(), 10);
        for epoch in 1..=2 {
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert!(caught_up_ms_ago() >= 300);
            let (r, records) = follower_3_fetch(&broker, id, epoch, None);
            assert_eq!((r.error_code, records), (0, 0));
            assert!(
                caught_up_ms_ago() < 300,
                "the omitted partition did not count"
            );
        }
        assert_eq!(p.status(crate::clock::now_ms()).isr, vec![NODE, 3]);
    }

    /// Producer ids with no append for producer.id.expiration.ms are forgotten when retention
    /// runs (before, the table only grew).
    #[tokio::test]
    async fn idle_producer_ids_expire_as_retention_runs() {
        use crate::protocol::batch::{BatchHeader, test_support::batch};
        let root = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig {
            cluster_mode: false,
            producer_id_expiration_ms: 60_000,
            ..cluster_broker_config(&root.path().join("data"))
        })
        .unwrap();
        let topic = broker
            .create_topic("idempotent", 1, 1, BTreeMap::new(), false)
            .unwrap();
        let partition = topic.partitions[0].clone().unwrap();
        let now = crate::clock::now_ms();
        for pid in [7, 8] {
            let b = batch(1, now, (pid, 0, 0), 10);
            let h = BatchHeader::parse(&b).unwrap();
            partition.log().append_as_leader(&b, &h, 0, now).unwrap();
        }
        assert_eq!(partition.log().producer_count(), 2);
        broker.apply_retention(now + 59_000);
        assert_eq!(partition.log().producer_count(), 2);
        broker.apply_retention(now + 60_000);
        assert_eq!(partition.log().producer_count(), 0);
    }

    /// Standalone, CreateTopics and auto-creation go through `create_topic`: Kafka's name rule
    /// and its `.`/`_` collision rule, and nothing on disk for a refused name.
    #[tokio::test]
    async fn standalone_creation_follows_the_name_and_collision_rules() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let broker = Broker::open(BrokerConfig {
            cluster_mode: false,
            auto_create_topics: true,
            ..cluster_broker_config(&data)
        })
        .unwrap();
        let none = BTreeMap::new;
        for bad in crate::topic_name::REFUSED_EXAMPLES
            .into_iter()
            .chain([&*"x".repeat(250)])
        {
            let e = match broker.create_topic(bad, 1, 1, none(), false) {
                Ok(_) => panic!("{bad:?} was created"),
                Err(e) => e,
            };
            assert!(matches!(e, TopicError::InvalidName(_)), "{bad:?}: {e}");
            assert!(broker.get_or_auto_create(bad).is_none(), "{bad:?}");
        }
        broker.create_topic("a.b", 1, 1, none(), false).unwrap();
        for (name, validate_only) in [("a_b", true), ("a_b", false)] {
            match broker.create_topic(name, 1, 1, none(), validate_only) {
                Err(TopicError::Collision { name, existing }) => {
                    assert_eq!((name.as_str(), existing.as_str()), ("a_b", "a.b"))
                }
                other => panic!("a_b must collide with a.b: {:?}", other.map(|_| ())),
            }
        }
        assert!(broker.get_or_auto_create("a_b").is_none());
        assert_eq!(broker.colliding_topic("a_b").as_deref(), Some("a.b"));
        assert!(matches!(
            broker.create_topic("a.b", 1, 1, none(), false),
            Err(TopicError::AlreadyExists(_))
        ));
        let names: Vec<String> = broker
            .topics()
            .iter()
            .map(|t| t.record.name.clone())
            .collect();
        assert_eq!(names, ["a.b"]);
        let dirs = dirs_in(&data);
        assert_eq!(dirs, ["a.b-0"]);
        assert!(!root.path().join("ESCAPED-0").exists());
    }
}
