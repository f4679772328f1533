//! The data directory: `meta.properties` (cluster id and node id stamp), `topics.json` (topic
//! names, ids, partition counts and configs for a broker without a controller), Kafka's offset
//! checkpoints (`recovery-point-offset-checkpoint`, `log-start-offset-checkpoint`,
//! `replication-offset-checkpoint` for high watermarks) and the clean-shutdown marker.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::info;

use super::StorageError;
use super::checkpoint::{self, OffsetMap, sync_dir, write_atomic};
use super::log::OpenHints;

pub const CLEAN_SHUTDOWN_MARKER: &str = ".kafka_cleanshutdown";
/// The boot id of the machine when the broker last started in a cluster (`same_boot_as_recorded`).
const BOOT_ID_FILE: &str = "boot-id";
const RECOVERY_POINTS: &str = "recovery-point-offset-checkpoint";
const LOG_START_OFFSETS: &str = "log-start-offset-checkpoint";
const HIGH_WATERMARKS: &str = "replication-offset-checkpoint";
const TOPICS: &str = "topics.json";
const PARTITION_METADATA: &str = "partition.metadata";

/// A topic as stored in `topics.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub id: uuid::Uuid,
    pub partitions: i32,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TopicsFile {
    topics: Vec<TopicRecord>,
}

pub struct LogDir {
    path: PathBuf,
    /// Held for the life of the process: one broker per data directory.
    _lock: fs::File,
    cluster_id: String,
    node_id: i32,
    clean_shutdown: bool,
    /// The checkpoints as read at start, for logs opened later. Checkpoints are keyed by
    /// topic name, so an entry can outlive its topic: see [`LogDir::claim_partition_dir`].
    recovery_points: Mutex<OffsetMap>,
    high_watermarks: Mutex<OffsetMap>,
    /// The partitions named in the checkpoint files on disk; held while they are written.
    checkpointed: Mutex<BTreeSet<(String, i32)>>,
}

/// Stamps a new data directory with `cluster_id` (and `node_id`), or checks an existing stamp:
/// a volume that belongs to another cluster is refused, so a reused or mis-attached volume never
/// joins the wrong cluster. Run before [`LogDir::open`], which checks the node id.
pub fn stamp_cluster_id(path: &Path, node_id: i32, cluster_id: &str) -> Result<(), StorageError> {
    fs::create_dir_all(path)?;
    let meta_path = path.join("meta.properties");
    match fs::read_to_string(&meta_path) {
        Ok(text) => {
            let stamped = text
                .lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == "cluster.id")
                .map(|(_, v)| v.trim().to_string());
            if stamped.as_deref() != Some(cluster_id) {
                return Err(StorageError::Refused(format!(
                    "data directory {} belongs to cluster.id {:?}, but this broker joins cluster {cluster_id}; \
                     refusing to start on another cluster's data (wrong volume attached?)",
                    path.display(),
                    stamped.unwrap_or_default()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
            write_atomic(&meta_path, text.as_bytes())?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

impl LogDir {
    /// Opens the data directory, creating it and its `meta.properties` stamp on first use. A
    /// directory stamped with another node id is refused: it holds another broker's data.
    pub fn open(path: &Path, node_id: i32) -> Result<Self, StorageError> {
        fs::create_dir_all(path)?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join(".lock"))?;
        if lock.try_lock().is_err() {
            return Err(StorageError::Refused(format!(
                "data directory {} is in use by another process",
                path.display()
            )));
        }
        let meta_path = path.join("meta.properties");
        let cluster_id = match fs::read_to_string(&meta_path) {
            Ok(text) => {
                let props: BTreeMap<&str, &str> = text
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.trim(), v.trim()))
                    .collect();
                let stamped: Option<i32> = props.get("node.id").and_then(|v| v.parse().ok());
                if stamped != Some(node_id) {
                    return Err(StorageError::Refused(format!(
                        "data directory {} belongs to node.id {:?}, but this broker is node.id {node_id}; \
                         refusing to start on another broker's data",
                        path.display(),
                        props.get("node.id")
                    )));
                }
                props
                    .get("cluster.id")
                    .map(|s| s.to_string())
                    .ok_or_else(|| StorageError::Corrupt {
                        path: meta_path.clone(),
                        reason: "no cluster.id".into(),
                    })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let cluster_id = uuid::Uuid::new_v4().simple().to_string();
                let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
                write_atomic(&meta_path, text.as_bytes())?;
                cluster_id
            }
            Err(e) => return Err(e.into()),
        };
        let marker = path.join(CLEAN_SHUTDOWN_MARKER);
        let clean_shutdown = marker.exists();
        if clean_shutdown {
            // From here on the logs may change: a crash must not look clean.
            fs::remove_file(&marker)?;
            sync_dir(path)?;
        }
        let recovery_points = checkpoint::read_offsets(&path.join(RECOVERY_POINTS))?;
        let high_watermarks = checkpoint::read_offsets(&path.join(HIGH_WATERMARKS))?;
        let checkpointed = [RECOVERY_POINTS, LOG_START_OFFSETS, HIGH_WATERMARKS]
            .iter()
            .map(|f| checkpoint::read_offsets(&path.join(f)))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flat_map(|m| m.into_keys())
            .collect();
        let dir = Self {
            path: path.to_path_buf(),
            _lock: lock,
            cluster_id,
            node_id,
            clean_shutdown,
            recovery_points: Mutex::new(recovery_points),
            high_watermarks: Mutex::new(high_watermarks),
            checkpointed: Mutex::new(checkpointed),
        };
        info!(dir = %path.display(), cluster_id = %dir.cluster_id, clean_shutdown, "opened data directory");
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }
    pub fn node_id(&self) -> i32 {
        self.node_id
    }
    pub fn was_clean_shutdown(&self) -> bool {
        self.clean_shutdown
    }

    /// `<data-dir>/<topic>-<partition>`. Refused for a name that is not a legal topic name or
    /// a negative partition: whatever a record says, no path outside the data directory (and
    /// none that is another topic's directory, like `./victim-0`) is ever created or opened.
    pub fn partition_dir(&self, topic: &str, partition: i32) -> Result<PathBuf, StorageError> {
        let refuse = |why: String| {
            Err(StorageError::Refused(format!(
                "no partition directory for {topic:?} partition {partition}: {why}"
            )))
        };
        if let Err(e) = crate::topic_name::validate(topic) {
            return refuse(e.to_string());
        }
        if partition < 0 {
            return refuse("negative partition".into());
        }
        let leaf = format!("{topic}-{partition}");
        // A legal name is always one plain file name; checked again, as the last line.
        let mut parts = Path::new(&leaf).components();
        if !matches!(
            (parts.next(), parts.next()),
            (Some(std::path::Component::Normal(_)), None)
        ) {
            return refuse("not a plain directory name".into());
        }
        Ok(self.path.join(leaf))
    }

    pub fn hints(&self, topic: &str, partition: i32) -> OpenHints {
        let key = (topic.to_string(), partition);
        OpenHints {
            clean_shutdown: self.clean_shutdown,
            recovery_point: lock(&self.recovery_points).get(&key).copied(),
        }
    }

    pub fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        lock(&self.high_watermarks)
            .get(&(topic.to_string(), partition))
            .copied()
    }

    pub fn load_topics(&self) -> Result<Vec<TopicRecord>, StorageError> {
        let path = self.path.join(TOPICS);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<TopicsFile>(&bytes)
                .map(|f| f.topics)
                .map_err(|e| StorageError::Corrupt {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn save_topics(&self, topics: &[TopicRecord]) -> io::Result<()> {
        let file = TopicsFile {
            topics: topics.to_vec(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        write_atomic(&self.path.join(TOPICS), &bytes)
    }

    /// Writes the three offset checkpoints.
    pub fn write_checkpoints(
        &self,
        recovery: &OffsetMap,
        start: &OffsetMap,
        hw: &OffsetMap,
    ) -> io::Result<()> {
        let mut named = lock(&self.checkpointed);
        // Whatever was named before stays named until all three files are written.
        named.extend(
            recovery
                .keys()
                .chain(start.keys())
                .chain(hw.keys())
                .cloned(),
        );
        checkpoint::write_offsets(&self.path.join(RECOVERY_POINTS), recovery)?;
        checkpoint::write_offsets(&self.path.join(LOG_START_OFFSETS), start)?;
        checkpoint::write_offsets(&self.path.join(HIGH_WATERMARKS), hw)?;
        *named = recovery
            .keys()
            .chain(start.keys())
            .chain(hw.keys())
            .cloned()
            .collect();
        Ok(())
    }

    /// Drops `topic`-`partition` from the checkpoints, in memory and on disk, before a new log
    /// takes that name. Checkpoints are keyed by name: a deleted topic's entry, left there
    /// until the next checkpoint, would otherwise be read for its successor after a crash (a
    /// recovery point past what the new log synced, so a torn tail would be trusted; a high
    /// watermark over records never committed).
    fn forget_checkpoints(&self, topic: &str, partition: i32) -> io::Result<()> {
        let key = (topic.to_string(), partition);
        lock(&self.recovery_points).remove(&key);
        lock(&self.high_watermarks).remove(&key);
        let mut named = lock(&self.checkpointed);
        if !named.contains(&key) {
            return Ok(());
        }
        for file in [RECOVERY_POINTS, LOG_START_OFFSETS, HIGH_WATERMARKS] {
            let path = self.path.join(file);
            let mut offsets = checkpoint::read_offsets(&path).map_err(io::Error::other)?;
            if offsets.remove(&key).is_some() {
                checkpoint::write_offsets(&path, &offsets)?;
            }
        }
        named.remove(&key);
        Ok(())
    }

    /// Written last on a clean stop, after every log is flushed and checkpointed.
    pub fn mark_clean_shutdown(&self) -> io::Result<()> {
        write_atomic(&self.path.join(CLEAN_SHUTDOWN_MARKER), b"")
    }

    /// Which topic a partition directory belongs to (Kafka's `partition.metadata`).
    pub fn stamp(&self, dir: &Path) -> io::Result<Option<uuid::Uuid>> {
        match fs::read_to_string(dir.join(PARTITION_METADATA)) {
            Ok(text) => Ok(text
                .lines()
                .find_map(|l| l.strip_prefix("topic_id:"))
                .and_then(|id| id.trim().parse().ok())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn write_stamp(&self, dir: &Path, topic_id: uuid::Uuid) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        write_atomic(
            &dir.join(PARTITION_METADATA),
            format!("version: 0\ntopic_id: {topic_id}\n").as_bytes(),
        )
    }

    /// Makes `dir` (partition `partition` of `topic`) the directory of topic `topic_id`: a
    /// directory stamped with another topic id is a deleted topic's leftover and is removed,
    /// never adopted; an unstamped one is adopted and stamped. A new directory, or one taken
    /// from a deleted topic, starts with no checkpointed offsets.
    pub fn claim_partition_dir(
        &self,
        dir: &Path,
        topic_id: uuid::Uuid,
        topic: &str,
        partition: i32,
    ) -> io::Result<()> {
        match self.stamp(dir)? {
            Some(id) if id == topic_id => Ok(()),
            Some(id) => {
                tracing::warn!(dir = %dir.display(), stale_topic_id = %id, "removing a deleted topic's leftover directory");
                self.remove_partition_dir(dir)?;
                self.forget_checkpoints(topic, partition)?;
                self.write_stamp(dir, topic_id)
            }
            None if !dir.exists() => {
                self.forget_checkpoints(topic, partition)?;
                self.write_stamp(dir, topic_id)
            }
            // A log from before directories were stamped: its checkpoints are its own.
            None => self.write_stamp(dir, topic_id),
        }
    }

    /// Removes a partition directory that belongs to no live topic (renamed first, so a crash
    /// midway never leaves a directory that looks live; the name is shortened to fit).
    pub fn remove_partition_dir(&self, dir: &Path) -> io::Result<()> {
        if !dir.exists() {
            return Ok(());
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let short: String = name.chars().take(150).collect();
        let doomed = self
            .path
            .join(format!("{short}.{}-delete", uuid::Uuid::new_v4().simple()));
        fs::rename(dir, &doomed)?;
        sync_dir(&self.path)?;
        fs::remove_dir_all(&doomed)
    }

    /// Partition directories stamped with a topic id that is not in `live`: leftovers of
    /// deleted topics.
    pub fn orphans(&self, live: &[uuid::Uuid]) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            let p = entry?.path();
            if p.is_dir()
                && let Some(id) = self.stamp(&p)?
                && !live.contains(&id)
            {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// The machine's boot id now (Linux), if it has one.
    fn boot_id() -> Option<String> {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// Whether the machine runs the same boot as when `record_boot` last ran here (Linux's
    /// boot id). A process killed within one boot left its unsynced writes in the page cache,
    /// which the kernel still writes out; after a reboot (a power loss, a node crash) they may
    /// be gone. No boot id, or none recorded, counts as a new boot.
    pub fn same_boot_as_recorded(&self) -> bool {
        let recorded = fs::read_to_string(self.path.join(BOOT_ID_FILE))
            .ok()
            .map(|s| s.trim().to_string());
        Self::boot_id().is_some_and(|now| recorded.as_deref() == Some(now.as_str()))
    }

    /// Records this boot's id for the next start's `same_boot_as_recorded`.
    pub fn record_boot(&self) -> io::Result<()> {
        match Self::boot_id() {
            Some(now) if !self.same_boot_as_recorded() => {
                write_atomic(&self.path.join(BOOT_ID_FILE), format!("{now}\n").as_bytes())
            }
            _ => Ok(()),
        }
    }

    /// The partition directories in the data directory, as (topic, partition, path).
    pub fn partition_dirs(&self) -> io::Result<Vec<(String, i32, PathBuf)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !path.is_dir() || name.ends_with("-delete") {
                continue;
            }
            if let Some((topic, p)) = name.rsplit_once('-')
                && let Ok(p) = p.parse::<i32>()
                && !topic.is_empty()
            {
                out.push((topic.to_string(), p, path.clone()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Finishes deletions interrupted by a crash.
    pub fn remove_leftover_deletions(&self) -> io::Result<()> {
        for entry in fs::read_dir(&self.path)? {
            let path = entry?.path();
            if path.is_dir() && path.to_string_lossy().ends_with("-delete") {
                fs::remove_dir_all(&path)?;
            }
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_locks_and_refuses_another_nodes_directory() {
        let dir = tempfile::tempdir().unwrap();
        let a = LogDir::open(dir.path(), 1).unwrap();
        assert!(!a.was_clean_shutdown());
        match LogDir::open(dir.path(), 1) {
            Err(StorageError::Refused(msg)) => assert!(msg.contains("in use"), "{msg}"),
            other => panic!(
                "a second broker on one directory must be refused: {:?}",
                other.map(|_| ())
            ),
        }
        a.mark_clean_shutdown().unwrap();
        let cluster_id = a.cluster_id().to_string();
        drop(a);
        let b = LogDir::open(dir.path(), 1).unwrap();
        assert!(b.was_clean_shutdown());
        assert_eq!(b.cluster_id(), cluster_id);
        assert!(!dir.path().join(CLEAN_SHUTDOWN_MARKER).exists());
        drop(b);
        match LogDir::open(dir.path(), 2) {
            Err(StorageError::Refused(msg)) => assert!(msg.contains("node.id"), "{msg}"),
            other => panic!("expected refusal, got {:?}", other.map(|_| ())),
        }
    }

    /// Checkpoints are keyed by topic name. A topic deleted and created again under its name
    /// must not inherit the old one's recovery point or high watermark, in memory or (after a
    /// crash before the next checkpoint) on disk; a directory of the same topic keeps them.
    #[test]
    fn a_new_topic_under_an_old_name_inherits_no_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let key = |p: i32| ("t".to_string(), p);
        let offsets = |v: i64| OffsetMap::from([(key(0), v), (key(1), v)]);
        let (old, new) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        {
            let d = LogDir::open(dir.path(), 1).unwrap();
            for p in [0, 1] {
                d.claim_partition_dir(&d.partition_dir("t", p).unwrap(), old, "t", p)
                    .unwrap();
            }
            d.write_checkpoints(&offsets(5000), &offsets(0), &offsets(1000))
                .unwrap();
        }
        let d = LogDir::open(dir.path(), 1).unwrap();
        // Partition 1 is still the old topic's: its checkpoints stay.
        d.claim_partition_dir(&d.partition_dir("t", 1).unwrap(), old, "t", 1)
            .unwrap();
        assert_eq!(d.high_watermark("t", 1), Some(1000));
        // Partition 0's directory belongs to a deleted topic: taken over, checkpoints dropped.
        d.claim_partition_dir(&d.partition_dir("t", 0).unwrap(), new, "t", 0)
            .unwrap();
        assert_eq!(d.high_watermark("t", 0), None);
        assert_eq!(d.hints("t", 0).recovery_point, None);
        for file in [RECOVERY_POINTS, LOG_START_OFFSETS, HIGH_WATERMARKS] {
            let on_disk = checkpoint::read_offsets(&dir.path().join(file)).unwrap();
            assert!(!on_disk.contains_key(&key(0)), "{file}: {on_disk:?}");
            assert!(on_disk.contains_key(&key(1)), "{file}: {on_disk:?}");
        }
        // A directory that was removed (the topic deleted) and is created again: the same.
        d.remove_partition_dir(&d.partition_dir("t", 1).unwrap())
            .unwrap();
        d.claim_partition_dir(&d.partition_dir("t", 1).unwrap(), new, "t", 1)
            .unwrap();
        assert_eq!(d.high_watermark("t", 1), None);
        drop(d);
        let reopened = LogDir::open(dir.path(), 1).unwrap();
        assert_eq!(reopened.high_watermark("t", 0), None);
        assert_eq!(reopened.high_watermark("t", 1), None);
    }

    #[test]
    fn a_volume_of_another_cluster_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        stamp_cluster_id(dir.path(), 3, "c1").unwrap();
        stamp_cluster_id(dir.path(), 3, "c1").unwrap();
        let d = LogDir::open(dir.path(), 3).unwrap();
        assert_eq!(d.cluster_id(), "c1");
        drop(d);
        match stamp_cluster_id(dir.path(), 3, "c2") {
            Err(StorageError::Refused(msg)) => {
                assert!(msg.contains("\"c1\"") && msg.contains("c2"), "{msg}")
            }
            other => panic!("expected refusal, got {other:?}"),
        }
        assert!(matches!(
            LogDir::open(dir.path(), 4),
            Err(StorageError::Refused(_))
        ));
    }

    #[test]
    fn stamped_directories_of_unknown_topics_are_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let d = LogDir::open(dir.path(), 1).unwrap();
        let (live, dead) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let (a, b) = (
            d.partition_dir("a", 0).unwrap(),
            d.partition_dir("b", 0).unwrap(),
        );
        d.write_stamp(&a, live).unwrap();
        d.write_stamp(&b, dead).unwrap();
        fs::create_dir_all(dir.path().join("unrelated")).unwrap();
        assert_eq!(d.stamp(&a).unwrap(), Some(live));
        let orphans = d.orphans(&[live]).unwrap();
        assert_eq!(orphans, vec![b]);
        d.remove_partition_dir(&orphans[0]).unwrap();
        assert!(!orphans[0].exists());
        assert!(dir.path().join("unrelated").exists());
    }

    /// Issue part 2: `../ESCAPED` made a directory outside the data directory and `./victim`
    /// opened `victim`'s. Such names get no partition directory at all.
    #[test]
    fn partition_directories_stay_inside_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = LogDir::open(&dir.path().join("data"), 1).unwrap();
        assert_eq!(
            d.partition_dir("orders.v1", 3).unwrap(),
            dir.path().join("data").join("orders.v1-3")
        );
        assert_eq!(
            d.partition_dir("...", 0).unwrap(),
            dir.path().join("data").join("...-0")
        );
        for bad in crate::topic_name::REFUSED_EXAMPLES
            .into_iter()
            .chain(["/etc/x", "a/../../b"])
        {
            match d.partition_dir(bad, 0) {
                Err(StorageError::Refused(msg)) => {
                    assert!(msg.contains("invalid topic name"), "{bad:?}: {msg}")
                }
                other => panic!("{bad:?} got a directory: {other:?}"),
            }
        }
        assert!(matches!(
            d.partition_dir("orders", -1),
            Err(StorageError::Refused(_))
        ));
    }
}
