//! The roll planner: from broker pods, the target revision and the controller's partition state
//! to the one next step of a rolling upgrade. Pure: no I/O, no clock; the LogCluster reconciler
//! carries the step out and asks again.
//!
//! The rules (see the team brief, "Rolling upgrade"):
//! - one broker at a time; a pod already on the target revision must be ready, registered and back
//!   in every ISR it belongs to before the next broker is touched;
//! - unready pods first (they serve nothing; a restart may fix them), then highest ordinal down;
//! - a live broker restarts only if every partition whose ISR it is in keeps
//!   `min.insync.replicas` live in-sync replicas without it;
//! - leadership is drained first (`DrainBroker` until it leads nothing and is marked drained, so
//!   no election hands leadership back), then the pod is deleted;
//! - once every pod is updated and caught up, one preferred-leader election restores leadership.
//!
//! The planner works from current state, never from memory of what it did: it asks for the
//! election exactly while the election would change something (a drained broker, or a partition
//! whose preferred leader is live and in sync but not leading), so after one election it answers
//! `Done`. That also rebalances leadership after a failover once the failed broker is back, as
//! Kafka's `auto.leader.rebalance.enable` does.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use broker::metadata::{ClusterMetadata, PartitionMeta};

/// Topic (and broker default) config naming the smallest ISR that accepts acks=all writes.
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";

/// One broker pod as the StatefulSet reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodState {
    /// Pod ordinal = broker id.
    pub ordinal: i32,
    pub ready: bool,
    /// The pod's `controller-revision-hash`.
    pub revision: String,
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct RollInput<'a> {
    pub pods: &'a [PodState],
    /// The StatefulSet's update revision: the revision every pod should run.
    pub target_revision: &'a str,
    /// The controller's current metadata: brokers (alive, drained) and partitions (ISR, leader).
    pub metadata: &'a ClusterMetadata,
    /// `min.insync.replicas` for topics that do not set it: the cluster's, i.e.
    /// `min_insync_replicas(&spec.broker_config, 1, "spec.brokerConfig")`.
    pub default_min_insync: i32,
    /// `spec.paused`.
    pub paused: bool,
    /// The broker this rollout is draining or restarting (`status.rollout.rollingBroker`).
    pub rolling_broker: Option<i32>,
}

/// The one next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollAction {
    /// Nothing to do now; ask again later.
    Wait { reason: String },
    /// Move leadership off this broker (the controller's drain).
    DrainBroker(i32),
    /// Delete this pod; the StatefulSet recreates it on the target revision.
    DeletePod(i32),
    /// Run a preferred-leader election.
    RestorePreferredLeaders,
    /// Restarting the next broker is unsafe; the reason names what blocks it.
    Blocked { reason: String },
    /// Every broker runs the target revision, is caught up, and leadership is restored.
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollError {
    #[error("{scope} has min.insync.replicas={value:?}, which is not a positive integer")]
    InvalidMinInsync { scope: String, value: String },
}

/// `min.insync.replicas` from `configs`, else `default`. `scope` names the config's owner in the
/// error ("topic orders", "spec.brokerConfig").
pub fn min_insync_replicas(
    configs: &BTreeMap<String, String>,
    default: i32,
    scope: &str,
) -> Result<i32, RollError> {
    match configs.get(MIN_INSYNC_REPLICAS) {
        None => Ok(default),
        Some(value) => match value.trim().parse::<i32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(RollError::InvalidMinInsync {
                scope: scope.to_string(),
                value: value.clone(),
            }),
        },
    }
}

/// The next step of the rollout.
pub fn plan(input: &RollInput<'_>) -> RollAction {
    if input.paused {
        return wait("rollout paused (spec.paused is true)".into());
    }
    if input.pods.is_empty() {
        return wait("no broker pods yet".into());
    }
    if let Some(b) = input.rolling_broker
        && !input.pods.iter().any(|p| p.ordinal == b)
    {
        return wait(format!("pod {b} is being recreated"));
    }
    let mut updated: Vec<&PodState> = input
        .pods
        .iter()
        .filter(|p| p.revision == input.target_revision)
        .collect();
    updated.sort_by_key(|p| p.ordinal);
    for pod in updated {
        if let Some(reason) = not_back(input.metadata, pod) {
            return wait(reason);
        }
    }
    match next_broker(input) {
        None if leadership_to_restore(input.metadata) => RollAction::RestorePreferredLeaders,
        None => RollAction::Done,
        Some(b) => {
            if let Some(reason) = unsafe_to_stop(input, b) {
                return RollAction::Blocked {
                    reason: format!("restarting broker {b}: {reason}"),
                };
            }
            if needs_drain(input.metadata, b) {
                RollAction::DrainBroker(b)
            } else {
                RollAction::DeletePod(b)
            }
        }
    }
}

fn wait(reason: String) -> RollAction {
    RollAction::Wait { reason }
}

/// Why an updated pod is not back yet: not ready, not registered, or missing from an ISR it
/// belongs to (replicas still being added by a reassignment are not expected in the ISR yet).
fn not_back(md: &ClusterMetadata, pod: &PodState) -> Option<String> {
    let b = pod.ordinal;
    if !pod.ready {
        return Some(format!("pod {b} (updated) is not ready yet"));
    }
    if !md.is_alive(b) {
        return Some(format!(
            "broker {b} (updated) has not registered with the controller yet"
        ));
    }
    let missing: Vec<String> = md
        .partitions()
        .filter(|(_, p)| p.replicas.contains(&b) && !p.adding.contains(&b) && !p.isr.contains(&b))
        .map(|(t, p)| format!("{t}-{}", p.partition))
        .collect();
    let first = missing.first()?;
    Some(format!(
        "broker {b} (updated) is catching up: not yet in the ISR of {first}{}",
        and_more(missing.len())
    ))
}

/// The broker to roll next: the one in flight, else unready pods first, then highest ordinal.
fn next_broker(input: &RollInput<'_>) -> Option<i32> {
    let outdated = || {
        input
            .pods
            .iter()
            .filter(|p| p.revision != input.target_revision)
    };
    if let Some(b) = input.rolling_broker
        && outdated().any(|p| p.ordinal == b)
    {
        return Some(b);
    }
    outdated()
        .min_by_key(|p| (p.ready, Reverse(p.ordinal)))
        .map(|p| p.ordinal)
}

/// Why stopping broker `b` now would hurt availability, if it would. A broker that is not alive
/// in the controller serves nothing, so restarting it cannot take anything away.
fn unsafe_to_stop(input: &RollInput<'_>, b: i32) -> Option<String> {
    let md = input.metadata;
    if !md.is_alive(b) {
        return None;
    }
    let live_others =
        |p: &PartitionMeta| p.isr.iter().filter(|&&r| r != b && md.is_alive(r)).count();
    let mut short = Vec::new();
    for topic in md.topics.values() {
        let mut in_sync = topic
            .partitions
            .iter()
            .filter(|p| p.isr.contains(&b))
            .peekable();
        if in_sync.peek().is_none() {
            continue;
        }
        let scope = format!("topic {}", topic.name);
        let min = match min_insync_replicas(&topic.configs, input.default_min_insync, &scope) {
            Ok(min) => min,
            Err(e) => return Some(e.to_string()),
        };
        for p in in_sync {
            let left = live_others(p);
            if i32::try_from(left).unwrap_or(i32::MAX) < min {
                short.push(format!(
                    "partition {}-{} would fall to {left} in-sync replica{}, below {MIN_INSYNC_REPLICAS}={min}",
                    topic.name,
                    p.partition,
                    if left == 1 { "" } else { "s" },
                ));
            }
        }
    }
    if let Some(first) = short.first() {
        return Some(format!("{first}{}", and_more(short.len())));
    }
    // Drain must be able to hand each leadership to a live, undrained in-sync replica.
    let stuck = md.partitions().find(|(_, p)| {
        p.leader == b
            && !p.isr.iter().any(|&r| {
                r != b && md.brokers.get(&r).is_some_and(|o| !o.drained) && md.is_alive(r)
            })
    });
    stuck.map(|(t, p)| {
        format!(
            "it leads {t}-{} and no other live, undrained in-sync replica can take over",
            p.partition
        )
    })
}

/// A live broker is drained before its pod goes: it must lead nothing and be marked drained, so
/// no election between the drain and the delete gives it leadership back.
fn needs_drain(md: &ClusterMetadata, b: i32) -> bool {
    let Some(meta) = md.brokers.get(&b) else {
        return false;
    };
    md.is_alive(b) && (!meta.drained || md.partitions().any(|(_, p)| p.leader == b))
}

/// Whether a preferred-leader election would change anything: it undrains every broker and moves
/// leadership to each partition's first target replica where that one is live and in sync.
fn leadership_to_restore(md: &ClusterMetadata) -> bool {
    md.brokers.values().any(|b| b.drained)
        || md.partitions().any(|(_, p)| {
            p.target_replicas()
                .first()
                .is_some_and(|&r| r != p.leader && p.isr.contains(&r) && md.is_alive(r))
        })
}

fn and_more(total: usize) -> String {
    match total {
        0 | 1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker::metadata::{BrokerMeta, BrokerStatus, NO_LEADER, TopicMeta};

    const OLD: &str = "rev-1";
    const NEW: &str = "rev-2";

    /// A test cluster: brokers, pods, partitions; `plan_with` runs the planner over it.
    struct Case {
        md: ClusterMetadata,
        pods: Vec<PodState>,
        default_min_insync: i32,
        paused: bool,
        rolling: Option<i32>,
    }

    impl Case {
        /// `n` live brokers, each with a ready pod on the old revision, no topics.
        fn new(n: i32) -> Self {
            let mut md = ClusterMetadata::default();
            for id in 0..n {
                md.brokers.insert(
                    id,
                    BrokerMeta {
                        id,
                        epoch: 1,
                        host: "h".into(),
                        port: 9092,
                        replication_host: None,
                        rack: None,
                        listeners: Vec::new(),
                        status: BrokerStatus::Alive,
                        drained: false,
                    },
                );
            }
            let pods = (0..n)
                .map(|ordinal| PodState {
                    ordinal,
                    ready: true,
                    revision: OLD.into(),
                })
                .collect();
            Self {
                md,
                pods,
                default_min_insync: 1,
                paused: false,
                rolling: None,
            }
        }
        /// Adds a partition to `topic` (created on first use) with these replicas and ISR; the
        /// leader is `leader`.
        fn partition(mut self, topic: &str, replicas: &[i32], isr: &[i32], leader: i32) -> Self {
            let t = self
                .md
                .topics
                .entry(topic.into())
                .or_insert_with(|| TopicMeta {
                    name: topic.into(),
                    id: uuid::Uuid::nil(),
                    configs: BTreeMap::new(),
                    partitions: vec![],
                    managed_by: None,
                });
            t.partitions.push(PartitionMeta {
                partition: t.partitions.len() as i32,
                replicas: replicas.to_vec(),
                isr: isr.to_vec(),
                leader,
                leader_epoch: 0,
                partition_epoch: 0,
                adding: vec![],
                removing: vec![],
                elr: vec![],
            });
            self
        }
        fn topic_config(mut self, topic: &str, key: &str, value: &str) -> Self {
            let t = self.md.topics.get_mut(topic).expect("topic exists");
            t.configs.insert(key.into(), value.into());
            self
        }
        fn updated(mut self, ids: &[i32]) -> Self {
            for p in &mut self.pods {
                if ids.contains(&p.ordinal) {
                    p.revision = NEW.into();
                }
            }
            self
        }
        fn unready(mut self, ids: &[i32]) -> Self {
            for p in &mut self.pods {
                if ids.contains(&p.ordinal) {
                    p.ready = false;
                }
            }
            self
        }
        fn drained(mut self, ids: &[i32]) -> Self {
            for id in ids {
                self.md.brokers.get_mut(id).expect("broker").drained = true;
            }
            self
        }
        fn broker_status(mut self, id: i32, status: BrokerStatus) -> Self {
            self.md.brokers.get_mut(&id).expect("broker").status = status;
            self
        }
        fn unregistered(mut self, id: i32) -> Self {
            self.md.brokers.remove(&id);
            self
        }
        fn without_pod(mut self, id: i32) -> Self {
            self.pods.retain(|p| p.ordinal != id);
            self
        }
        fn min_insync(mut self, n: i32) -> Self {
            self.default_min_insync = n;
            self
        }
        fn paused(mut self) -> Self {
            self.paused = true;
            self
        }
        fn rolling(mut self, id: i32) -> Self {
            self.rolling = Some(id);
            self
        }
        fn plan(&self) -> RollAction {
            plan(&RollInput {
                pods: &self.pods,
                target_revision: NEW,
                metadata: &self.md,
                default_min_insync: self.default_min_insync,
                paused: self.paused,
                rolling_broker: self.rolling,
            })
        }
    }

    fn wait(reason: &str) -> RollAction {
        RollAction::Wait {
            reason: reason.into(),
        }
    }
    fn blocked(reason: &str) -> RollAction {
        RollAction::Blocked {
            reason: reason.into(),
        }
    }

    /// Three brokers, one topic `t` with RF 3, each broker the preferred leader of one
    /// partition, everything in sync.
    fn three() -> Case {
        Case::new(3)
            .partition("t", &[0, 1, 2], &[0, 1, 2], 0)
            .partition("t", &[1, 2, 0], &[1, 2, 0], 1)
            .partition("t", &[2, 0, 1], &[2, 0, 1], 2)
    }

    #[test]
    fn table() {
        use RollAction::*;
        let cases: Vec<(&str, Case, RollAction)> = vec![
            // Pause and emptiness.
            (
                "paused waits",
                three().paused(),
                wait("rollout paused (spec.paused is true)"),
            ),
            (
                "paused even mid-roll",
                three().drained(&[2]).rolling(2).paused(),
                wait("rollout paused (spec.paused is true)"),
            ),
            (
                "no pods",
                Case {
                    pods: vec![],
                    ..three()
                },
                wait("no broker pods yet"),
            ),
            // Order: highest ordinal first, unready first, the broker in flight first.
            (
                "highest ordinal first: drain its leadership",
                three(),
                DrainBroker(2),
            ),
            ("unready pods first", three().unready(&[0]), DrainBroker(0)),
            (
                "highest unready first",
                three().unready(&[0, 1]),
                DrainBroker(1),
            ),
            (
                "updated pods are skipped",
                Case::new(3).updated(&[2]),
                DrainBroker(1),
            ),
            (
                "the broker in flight stays first",
                three().unready(&[0]).rolling(1),
                DrainBroker(1),
            ),
            (
                "a finished in-flight broker does not pin the order",
                three().updated(&[1]).rolling(1),
                DrainBroker(2),
            ),
            // Drain before delete.
            (
                "leads nothing but not drained yet: drain",
                Case::new(3).partition("t", &[0, 1, 2], &[0, 1, 2], 0),
                DrainBroker(2),
            ),
            (
                "drained but still leads: drain again",
                three().drained(&[2]),
                DrainBroker(2),
            ),
            (
                "drained and leads nothing: delete",
                Case::new(3)
                    .partition("t", &[2, 0, 1], &[2, 0, 1], 0)
                    .drained(&[2]),
                DeletePod(2),
            ),
            (
                "no topics: drain marks it, then delete",
                Case::new(2).drained(&[1]),
                DeletePod(1),
            ),
            (
                "unregistered broker: nothing to drain",
                Case::new(3).unregistered(2).unready(&[2]),
                DeletePod(2),
            ),
            (
                "fenced broker: nothing to drain",
                Case::new(3)
                    .broker_status(2, BrokerStatus::Fenced)
                    .unready(&[2]),
                DeletePod(2),
            ),
            // The previous broker must be back first.
            (
                "pod recreating",
                three().drained(&[2]).without_pod(2).rolling(2),
                wait("pod 2 is being recreated"),
            ),
            (
                "updated pod not ready",
                three().updated(&[2]).unready(&[2]),
                wait("pod 2 (updated) is not ready yet"),
            ),
            (
                "updated pod not registered",
                Case::new(3).updated(&[2]).unregistered(2),
                wait("broker 2 (updated) has not registered with the controller yet"),
            ),
            (
                "updated broker fenced",
                Case::new(3)
                    .updated(&[2])
                    .broker_status(2, BrokerStatus::Fenced),
                wait("broker 2 (updated) has not registered with the controller yet"),
            ),
            (
                "updated broker not back in every ISR",
                Case::new(3)
                    .partition("t", &[0, 1, 2], &[0, 1], 0)
                    .partition("t", &[1, 2, 0], &[1, 0], 1)
                    .partition("u", &[2, 0, 1], &[2, 0, 1], 2)
                    .updated(&[2]),
                wait("broker 2 (updated) is catching up: not yet in the ISR of t-0 (and 1 more)"),
            ),
            (
                "a replica still being added is not expected in the ISR",
                {
                    let mut c = Case::new(3)
                        .partition("t", &[0, 1, 2], &[0, 1], 0)
                        .updated(&[2])
                        .drained(&[2]);
                    c.md.topics.get_mut("t").unwrap().partitions[0].adding = vec![2];
                    c
                },
                DrainBroker(1),
            ),
            // Safety: min.insync.replicas without the broker, counting live ISR members only.
            (
                "topic min ISR would be broken",
                Case::new(3)
                    .partition("t", &[0, 1, 2], &[0, 1, 2], 0)
                    .partition("t", &[0, 1, 2], &[0, 1, 2], 0)
                    .partition("t", &[0, 1, 2], &[0, 1, 2], 0)
                    .partition("t", &[1, 2, 0], &[1, 2], 1)
                    .topic_config("t", MIN_INSYNC_REPLICAS, "2"),
                blocked(
                    "restarting broker 2: partition t-3 would fall to 1 in-sync replica, below min.insync.replicas=2",
                ),
            ),
            (
                "cluster default min ISR applies to topics without one",
                Case::new(3)
                    .partition("t", &[1, 2, 0], &[1, 2], 1)
                    .min_insync(2),
                blocked(
                    "restarting broker 2: partition t-0 would fall to 1 in-sync replica, below min.insync.replicas=2",
                ),
            ),
            (
                "a topic setting overrides the default",
                Case::new(3)
                    .partition("t", &[1, 2, 0], &[1, 2], 1)
                    .min_insync(2)
                    .topic_config("t", MIN_INSYNC_REPLICAS, "1"),
                DrainBroker(2),
            ),
            (
                "several partitions short are counted",
                Case::new(2)
                    .partition("a", &[0, 1], &[0, 1], 0)
                    .partition("b", &[1, 0], &[1, 0], 1)
                    .partition("b", &[1, 0], &[1, 0], 1)
                    .min_insync(2),
                blocked(
                    "restarting broker 1: partition a-0 would fall to 1 in-sync replica, below min.insync.replicas=2 (and 2 more)",
                ),
            ),
            (
                "a dead ISR member does not count",
                Case::new(3)
                    .partition("t", &[2, 1, 0], &[2, 1, 0], 2)
                    .broker_status(0, BrokerStatus::ShuttingDown)
                    .min_insync(2),
                blocked(
                    "restarting broker 2: partition t-0 would fall to 1 in-sync replica, below min.insync.replicas=2",
                ),
            ),
            (
                "sole in-sync replica",
                Case::new(2).partition("solo", &[1], &[1], 1),
                blocked(
                    "restarting broker 1: partition solo-0 would fall to 0 in-sync replicas, below min.insync.replicas=1",
                ),
            ),
            (
                "partitions the broker is not in sync for do not block it",
                Case::new(3)
                    .partition("t", &[0, 1, 2], &[0, 1], 0)
                    .min_insync(2),
                DrainBroker(2),
            ),
            (
                "a broker that is down takes nothing away: restart it",
                Case::new(3)
                    .partition("t", &[2, 1, 0], &[2], NO_LEADER)
                    .broker_status(2, BrokerStatus::Fenced)
                    .unready(&[2])
                    .min_insync(2),
                DeletePod(2),
            ),
            (
                "invalid min.insync.replicas blocks with the reason",
                Case::new(3)
                    .partition("t", &[2, 1, 0], &[2, 1, 0], 2)
                    .topic_config("t", MIN_INSYNC_REPLICAS, "two"),
                blocked(
                    "restarting broker 2: topic t has min.insync.replicas=\"two\", which is not a positive integer",
                ),
            ),
            (
                "leadership with nowhere to go blocks",
                Case::new(3)
                    .partition("t", &[2, 1, 0], &[2, 1], 2)
                    .drained(&[1]),
                blocked(
                    "restarting broker 2: it leads t-0 and no other live, undrained in-sync replica can take over",
                ),
            ),
            // Finishing: restore leadership once, then done.
            (
                "all updated, drained broker left: restore",
                three().updated(&[0, 1, 2]).drained(&[0]),
                RestorePreferredLeaders,
            ),
            (
                "all updated, a leader off its preferred broker: restore",
                Case::new(3)
                    .partition("t", &[2, 0, 1], &[2, 0, 1], 0)
                    .updated(&[0, 1, 2]),
                RestorePreferredLeaders,
            ),
            (
                "an updated broker down: wait, do not restore",
                Case::new(3)
                    .partition("t", &[2, 0, 1], &[0, 1], 0)
                    .updated(&[0, 1, 2])
                    .broker_status(2, BrokerStatus::Fenced),
                wait("broker 2 (updated) has not registered with the controller yet"),
            ),
            (
                "all updated and balanced: done",
                three().updated(&[0, 1, 2]),
                Done,
            ),
        ];
        let mut failures = Vec::new();
        for (name, case, want) in cases {
            let got = case.plan();
            if got != want {
                failures.push(format!("{name}:\n  want {want:?}\n  got  {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn min_insync_parsing() {
        let mut c = BTreeMap::new();
        assert_eq!(min_insync_replicas(&c, 2, "x"), Ok(2));
        c.insert(MIN_INSYNC_REPLICAS.to_string(), " 3 ".to_string());
        assert_eq!(min_insync_replicas(&c, 2, "x"), Ok(3));
        for bad in ["0", "-1", "", "2.5", "99999999999"] {
            c.insert(MIN_INSYNC_REPLICAS.to_string(), bad.to_string());
            assert!(min_insync_replicas(&c, 1, "x").is_err(), "{bad:?} accepted");
        }
    }

    /// A whole roll against the real controller decisions: each step is applied, a deleted pod
    /// comes back on the new revision, re-registers (which fences it out of every ISR) and is
    /// re-admitted to the ISRs one planner call later. The roll must go 2, 1, 0, restart each
    /// broker once, never stop a broker while a partition would fall below min ISR, and end with
    /// the original leaders.
    #[test]
    fn a_full_roll_against_the_controller() {
        use crate::controller::ControllerState;
        use crate::controller::decisions::{
            Registration, create_topic, drain, preferred_leader_election, register,
        };

        let reg = |id: i32, incarnation: &str| Registration {
            id,
            incarnation: incarnation.into(),
            host: "127.0.0.1".into(),
            port: 9092,
            replication_host: None,
            rack: None,
            listeners: Vec::new(),
            unclean_shutdown: false,
            min_insync_replicas: None,
        };
        let mut s = ControllerState::new("c".into());
        for id in 0..3 {
            register(&mut s, reg(id, "old"), 0);
        }
        let min2 = BTreeMap::from([(MIN_INSYNC_REPLICAS.to_string(), "2".to_string())]);
        create_topic(&mut s, "t", 6, 3, min2, uuid::Uuid::nil()).unwrap();
        let leaders_before: Vec<i32> = s.metadata.partitions().map(|(_, p)| p.leader).collect();
        let mut pods: Vec<PodState> = (0..3)
            .map(|ordinal| PodState {
                ordinal,
                ready: true,
                revision: OLD.into(),
            })
            .collect();
        let mut rolling = None;
        let mut deleted = Vec::new();
        let mut restores = 0;
        for step in 0..100 {
            let action = plan(&RollInput {
                pods: &pods,
                target_revision: NEW,
                metadata: &s.metadata,
                default_min_insync: 1,
                paused: false,
                rolling_broker: rolling,
            });
            match action {
                RollAction::DrainBroker(b) => {
                    rolling = Some(b);
                    drain(&mut s, b).unwrap();
                }
                RollAction::DeletePod(b) => {
                    for (_, p) in s.metadata.partitions() {
                        assert_ne!(p.leader, b, "step {step}: deleting a leader");
                        let others = p.isr.iter().filter(|&&r| r != b).count();
                        assert!(p.isr.contains(&b) && others >= 2, "step {step}: {p:?}");
                    }
                    deleted.push(b);
                    // The pod comes back on the new revision and registers as a new incarnation.
                    pods[b as usize].revision = NEW.into();
                    register(&mut s, reg(b, "new"), 0);
                }
                RollAction::Wait { reason } => {
                    assert!(reason.contains("catching up"), "step {step}: {reason}");
                    // The leaders re-admit every caught-up follower.
                    for t in s.metadata.topics.values_mut() {
                        for p in &mut t.partitions {
                            p.isr = p.replicas.clone();
                            p.partition_epoch += 1;
                        }
                    }
                }
                RollAction::RestorePreferredLeaders => {
                    restores += 1;
                    preferred_leader_election(&mut s);
                }
                RollAction::Blocked { reason } => panic!("step {step}: blocked: {reason}"),
                RollAction::Done => break,
            }
        }
        assert_eq!(deleted, [2, 1, 0]);
        assert_eq!(restores, 1);
        let leaders_after: Vec<i32> = s.metadata.partitions().map(|(_, p)| p.leader).collect();
        assert_eq!(leaders_after, leaders_before);
    }
}
