//! Which replica a consumer should read from (KIP-392, fetch from follower), pure. Kafka's
//! `RackAwareReplicaSelector` as `ReplicaManager.findPreferredReadReplica` feeds it: a consumer
//! that names its rack (`client.rack`) is sent to a replica in that rack, the leader if it is
//! one, otherwise the most caught-up follower there. A follower qualifies only if it holds the
//! fetch offset (its log start at or below it, its log end at or above it), is in the ISR and
//! is alive: stricter than Kafka (which checks offsets and liveness), so a consumer is never
//! sent to a replica that has fallen behind and would keep it waiting.

/// Kafka's `replica.selector.class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicaSelector {
    /// `org.apache.kafka.common.replica.LeaderSelector` (Kafka's default): consumers read from
    /// the leader. A follower still serves a consumer that comes to it (Fetch v11+).
    #[default]
    Leader,
    /// `org.apache.kafka.common.replica.RackAwareReplicaSelector`.
    RackAware,
}

impl ReplicaSelector {
    pub const LEADER_CLASS: &str = "org.apache.kafka.common.replica.LeaderSelector";
    pub const RACK_AWARE_CLASS: &str = "org.apache.kafka.common.replica.RackAwareReplicaSelector";

    /// From Kafka's class name; empty means the default.
    pub fn from_class(class: &str) -> Result<Self, String> {
        match class.trim() {
            "" | Self::LEADER_CLASS => Ok(Self::Leader),
            Self::RACK_AWARE_CLASS => Ok(Self::RackAware),
            other => Err(format!(
                "replica.selector.class {other:?} is not supported; use {} or {}",
                Self::RACK_AWARE_CLASS,
                Self::LEADER_CLASS
            )),
        }
    }

    pub fn class(self) -> &'static str {
        match self {
            Self::Leader => Self::LEADER_CLASS,
            Self::RackAware => Self::RACK_AWARE_CLASS,
        }
    }
}

/// A follower as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: i32,
    pub rack: Option<String>,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub last_caught_up_ms: i64,
    pub in_isr: bool,
    pub alive: bool,
}

/// The follower a consumer in `client_rack` fetching at `fetch_offset` should read from, or
/// None for the leader. Among several, the one with the highest log end, then the most
/// recently caught up, then the lowest id (so the answer is stable).
pub fn select(
    selector: ReplicaSelector,
    client_rack: &str,
    leader_rack: Option<&str>,
    fetch_offset: i64,
    followers: &[Candidate],
) -> Option<i32> {
    if selector != ReplicaSelector::RackAware
        || client_rack.is_empty()
        || leader_rack == Some(client_rack)
    {
        return None;
    }
    followers
        .iter()
        .filter(|f| f.rack.as_deref() == Some(client_rack))
        .filter(|f| f.in_isr && f.alive)
        // A follower's log start is -1 until its first valid fetch reports it.
        .filter(|f| f.log_start_offset >= 0 && f.log_start_offset <= fetch_offset)
        .filter(|f| f.log_end_offset >= fetch_offset)
        .max_by_key(|f| (f.log_end_offset, f.last_caught_up_ms, -f.id))
        .map(|f| f.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower(id: i32, rack: &str, leo: i64) -> Candidate {
        Candidate {
            id,
            rack: Some(rack.into()),
            log_start_offset: 0,
            log_end_offset: leo,
            last_caught_up_ms: 100,
            in_isr: true,
            alive: true,
        }
    }

    const RACK: ReplicaSelector = ReplicaSelector::RackAware;

    #[test]
    fn a_consumer_reads_in_its_rack() {
        let f = [follower(2, "b", 10), follower(3, "c", 10)];
        assert_eq!(select(RACK, "b", Some("a"), 5, &f), Some(2));
        assert_eq!(select(RACK, "c", Some("a"), 5, &f), Some(3));
        // The leader's own rack, no rack, a rack nobody is in, or the leader selector: the
        // leader serves.
        assert_eq!(select(RACK, "a", Some("a"), 5, &f), None);
        assert_eq!(select(RACK, "", Some("a"), 5, &f), None);
        assert_eq!(select(RACK, "z", Some("a"), 5, &f), None);
        let leader = ReplicaSelector::Leader;
        assert_eq!(select(leader, "b", Some("a"), 5, &f), None);
        // A leader without a rack is in no client's rack.
        assert_eq!(select(RACK, "b", None, 5, &f), Some(2));
    }

    #[test]
    fn only_a_live_in_sync_follower_holding_the_offset_qualifies() {
        let ok = follower(2, "b", 10);
        assert_eq!(
            select(RACK, "b", None, 10, std::slice::from_ref(&ok)),
            Some(2)
        );
        let cases = [
            Candidate {
                in_isr: false,
                ..ok.clone()
            },
            Candidate {
                alive: false,
                ..ok.clone()
            },
            Candidate {
                log_end_offset: 9,
                ..ok.clone()
            },
            Candidate {
                log_start_offset: 11,
                ..ok.clone()
            },
            Candidate {
                log_start_offset: -1,
                ..ok.clone()
            },
        ];
        for c in cases {
            assert_eq!(
                select(RACK, "b", None, 10, std::slice::from_ref(&c)),
                None,
                "{c:?}"
            );
        }
    }

    #[test]
    fn the_most_caught_up_follower_in_the_rack_wins() {
        let mut f = [
            follower(2, "b", 10),
            follower(3, "b", 12),
            follower(4, "b", 12),
        ];
        assert_eq!(select(RACK, "b", None, 5, &f), Some(3));
        f[2].last_caught_up_ms = 200;
        assert_eq!(select(RACK, "b", None, 5, &f), Some(4));
    }

    #[test]
    fn selector_classes_are_kafkas() {
        for s in [ReplicaSelector::Leader, ReplicaSelector::RackAware] {
            assert_eq!(ReplicaSelector::from_class(s.class()), Ok(s));
        }
        assert_eq!(ReplicaSelector::from_class(""), Ok(ReplicaSelector::Leader));
        let e = ReplicaSelector::from_class("com.example.Mine").unwrap_err();
        assert!(
            e.contains("com.example.Mine") && e.contains("RackAwareReplicaSelector"),
            "{e}"
        );
    }
}
