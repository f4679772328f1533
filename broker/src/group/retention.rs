//! Offsets retention (Kafka's offsets.retention.minutes, KIP-211), pure: when a committed
//! offset expires.
//!
//! - A group that ever had members (it has a protocol type) keeps its offsets while it has
//!   members; once it is Empty, all of them expire together a retention period after it
//!   became Empty.
//! - Offsets committed without membership (a "standalone" consumer that assigns partitions
//!   itself) expire one by one, a retention period after their commit.
//!
//! Kafka also expires, in a Stable consumer group, the offsets of topics it no longer
//! subscribes to; that needs the members' subscriptions decoded and is not done here.
//! Nor is the per-commit `retention_time_ms` of OffsetCommit v2-v4 (pre-2.1 clients) honoured.

use super::records::OffsetValue;
use super::state::{Group, State};

/// Has `committed`, an offset of `group`, expired at `now`?
pub fn offset_expired(group: &Group, committed: &OffsetValue, now: i64, retention_ms: i64) -> bool {
    let since = match (group.protocol_type(), group.state()) {
        (Some(_), State::Empty) => group.state_since_ms(),
        (Some(_), _) => return false,
        (None, _) => committed.commit_timestamp_ms,
    };
    now.saturating_sub(since) >= retention_ms
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::group::state::{GroupMetadata, Limits, MemberMetadata};

    const RETENTION: i64 = 1_000;

    fn offset(commit_timestamp_ms: i64) -> OffsetValue {
        OffsetValue {
            offset: 5,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms,
        }
    }

    fn metadata(members: usize, state_timestamp_ms: i64) -> GroupMetadata {
        GroupMetadata {
            protocol_type: "consumer".into(),
            generation: 3,
            protocol_name: Some("range".into()),
            leader: (members > 0).then(|| "m0".to_string()),
            state_timestamp_ms,
            members: (0..members)
                .map(|i| MemberMetadata {
                    member_id: format!("m{i}"),
                    instance_id: None,
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 10_000,
                    session_timeout_ms: 10_000,
                    subscription: Bytes::new(),
                    assignment: Bytes::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn standalone_offsets_expire_one_by_one_after_their_commit() {
        let g = Group::new("g", 0, Limits::default());
        assert!(!offset_expired(&g, &offset(500), 1_499, RETENTION));
        assert!(offset_expired(&g, &offset(500), 1_500, RETENTION));
        assert!(!offset_expired(&g, &offset(900), 1_500, RETENTION));
    }

    #[test]
    fn a_group_with_members_keeps_its_offsets() {
        let g = Group::from_metadata("g", &metadata(2, 0), 0, Limits::default());
        assert_eq!(g.state(), State::Stable);
        assert!(!offset_expired(&g, &offset(0), i64::MAX, RETENTION));
    }

    #[test]
    fn an_empty_group_loses_all_its_offsets_a_retention_after_it_emptied() {
        // Emptied at 2_000 (as its metadata record says, so this survives a failover), with
        // offsets committed long before and just before.
        let g = Group::from_metadata("g", &metadata(0, 2_000), 5_000, Limits::default());
        assert_eq!(g.state(), State::Empty);
        for committed in [offset(0), offset(1_999)] {
            assert!(!offset_expired(&g, &committed, 2_999, RETENTION));
            assert!(offset_expired(&g, &committed, 3_000, RETENTION));
        }
    }
}
