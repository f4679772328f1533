//! Leader-side replication state of one partition, with no I/O and no clock: inputs are local
//! appends, follower fetches, ticks and controller decisions (each with the time in ms); outputs
//! are effects for the caller to carry out. Rules follow Kafka's `Partition` and `Replica`:
//!
//! - A follower's log end offset is the offset it fetches from (it has everything below).
//! - A follower is caught up at a fetch if it reached the leader's log end, or the log end the
//!   leader had at its previous fetch (so a steady stream of appends does not count as lag).
//! - The high watermark is the minimum log end offset over the ISR (plus replicas a pending
//!   expansion adds), never moves back, and stays put while the committed ISR is smaller than
//!   min.insync.replicas (KIP-966: replicas that left it meanwhile may be elected).
//! - ISR shrink: a follower not caught up for `replica_lag_time_max_ms`. Expand: a follower
//!   whose end offset reached both the high watermark and the start of this leader epoch.
//! - The leader only proposes ISR changes (AlterPartition, one at a time, with the partition
//!   epoch); the controller commits them and bumps the partition epoch.

use std::collections::BTreeMap;

/// What the controller says about a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub replica_lag_time_max_ms: i64,
    pub min_insync_replicas: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerState {
    pub log_end_offset: i64,
    /// Its log start offset as its last valid fetch reported it (-1: not yet).
    pub log_start_offset: i64,
    pub last_caught_up_ms: i64,
    pub last_fetch_ms: i64,
    /// The leader's log end offset at this follower's previous fetch.
    pub last_fetch_leader_leo: i64,
}

/// What the caller must do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The high watermark moved: wake waiting acks=all producers and consumers, checkpoint.
    HighWatermark(i64),
    /// Ask the controller to set the ISR (AlterPartition) at this partition epoch.
    ProposeIsr { isr: Vec<i32>, partition_epoch: i32 },
}

/// What a follower's fetch showed, once the leader read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerFetch {
    pub replica: i32,
    /// The leader epoch the fetch was sent for (a follower always names it).
    pub leader_epoch: i32,
    pub fetch_offset: i64,
    /// The follower's log start offset (-1: not given).
    pub log_start_offset: i64,
    /// The leader's log end when the read ran.
    pub leader_log_end: i64,
    /// The read found `fetch_offset` inside this leader's log and (Fetch v12+) the follower's
    /// last fetched epoch in agreement with this log there (no diverging epoch). Only then
    /// does the follower hold this leader's records below `fetch_offset`.
    pub valid: bool,
    pub now_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchRejected {
    #[error("broker {0} is not a replica of this partition")]
    NotAReplica(i32),
    #[error("a fetch for leader epoch {fetched}, not the current {current}")]
    OtherLeaderEpoch { fetched: i32, current: i32 },
    #[error("a fetch at offset {0} that the read did not validate proves nothing")]
    Unproven(i64),
}

#[derive(Debug, Clone)]
pub struct LeaderState {
    local_id: i32,
    settings: Settings,
    assignment: Assignment,
    /// Log end offset when this broker became leader for this epoch (Kafka's
    /// leaderEpochStartOffset): a follower must reach it before it can rejoin the ISR.
    epoch_start_offset: i64,
    local_leo: i64,
    high_watermark: i64,
    followers: BTreeMap<i32, FollowerState>,
    /// The ISR asked of the controller and not yet answered.
    pending_isr: Option<Vec<i32>>,
}

impl LeaderState {
    /// Becomes leader. Followers get a full lag period of grace, as in Kafka.
    pub fn new(
        local_id: i32,
        settings: Settings,
        assignment: Assignment,
        local_leo: i64,
        high_watermark: i64,
        now_ms: i64,
    ) -> Self {
        Self::counting(
            local_id,
            settings,
            assignment,
            local_leo,
            local_leo,
            high_watermark,
            now_ms,
        )
    }

    /// As [`LeaderState::new`] for a log ending at `log_end` of which only what lies below
    /// `counted` counts as the leader's own copy (`fsync.policy=before-ack`: a new leader's
    /// tail, fetched as a follower, may not be fsynced yet; its group commit counts it once it
    /// is). The epoch still starts at `log_end`.
    pub fn counting(
        local_id: i32,
        settings: Settings,
        assignment: Assignment,
        log_end: i64,
        counted: i64,
        high_watermark: i64,
        now_ms: i64,
    ) -> Self {
        let local_leo = counted.min(log_end);
        let followers = assignment
            .replicas
            .iter()
            .filter(|r| **r != local_id)
            .map(|r| {
                (
                    *r,
                    FollowerState {
                        log_end_offset: -1,
                        log_start_offset: -1,
                        last_caught_up_ms: now_ms,
                        last_fetch_ms: -1,
                        last_fetch_leader_leo: -1,
                    },
                )
            })
            .collect();
        let mut s = Self {
            local_id,
            settings,
            assignment,
            epoch_start_offset: log_end,
            local_leo,
            high_watermark: high_watermark.min(log_end),
            followers,
            pending_isr: None,
        };
        s.recompute_high_watermark();
        s
    }

    /// The log end when this leadership began (Kafka's leaderEpochStartOffset): every record
    /// the previous leader acknowledged lies below it.
    pub fn epoch_start_offset(&self) -> i64 {
        self.epoch_start_offset
    }
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }
    pub fn isr(&self) -> &[i32] {
        &self.assignment.isr
    }
    pub fn assignment(&self) -> &Assignment {
        &self.assignment
    }
    pub fn follower(&self, id: i32) -> Option<&FollowerState> {
        self.followers.get(&id)
    }
    pub fn pending_isr(&self) -> Option<&[i32]> {
        self.pending_isr.as_deref()
    }
    pub fn settings(&self) -> Settings {
        self.settings
    }
    pub fn set_settings(&mut self, settings: Settings) -> Vec<Effect> {
        self.settings = settings;
        self.recompute_high_watermark().into_iter().collect()
    }

    /// acks=all writes are refused (NOT_ENOUGH_REPLICAS) while the committed ISR is smaller
    /// than min.insync.replicas.
    pub fn enough_replicas(&self) -> bool {
        self.assignment.isr.len() >= self.settings.min_insync_replicas
    }

    /// The set the high watermark is computed over: the ISR plus replicas a pending expansion
    /// adds (a pending shrink keeps its members until committed).
    fn maximal_isr(&self) -> Vec<i32> {
        let mut set = self.assignment.isr.clone();
        if let Some(p) = &self.pending_isr {
            for r in p {
                if !set.contains(r) {
                    set.push(*r);
                }
            }
        }
        set
    }

    fn recompute_high_watermark(&mut self) -> Option<Effect> {
        // Only while the committed ISR has min.insync.replicas members (KIP-966): the replicas
        // that left it meanwhile stay eligible to lead (the controller's ELR), and they lack
        // whatever the high watermark would pass from here, an expansion still pending
        // included (the controller may refuse it).
        if !self.enough_replicas() {
            return None;
        }
        let isr = self.maximal_isr();
        let mut hw = self.local_leo;
        for r in isr.iter().filter(|r| **r != self.local_id) {
            match self.followers.get(r) {
                Some(f) if f.log_end_offset >= 0 => hw = hw.min(f.log_end_offset),
                // An ISR member that has not fetched yet in this epoch holds the watermark.
                _ => return None,
            }
        }
        (hw > self.high_watermark).then(|| {
            self.high_watermark = hw;
            Effect::HighWatermark(hw)
        })
    }

    /// The local log grew (an append as leader).
    pub fn on_append(&mut self, local_leo: i64) -> Vec<Effect> {
        self.local_leo = self.local_leo.max(local_leo);
        self.recompute_high_watermark().into_iter().collect()
    }

    /// A follower's fetch, once the leader has read it (Kafka's `updateFollowerFetchState`,
    /// which runs only after `fetchRecords` validated the read). Only a fetch for this
    /// leadership whose read proved the follower holds this leader's records below
    /// `fetch_offset` counts; anything else (a diverged follower that must truncate first, an
    /// offset outside the log, another epoch) changes nothing.
    pub fn on_fetch(&mut self, fetch: FollowerFetch) -> Result<Vec<Effect>, FetchRejected> {
        let FollowerFetch {
            replica,
            leader_epoch,
            fetch_offset,
            log_start_offset,
            leader_log_end,
            valid,
            now_ms,
        } = fetch;
        let current = self.assignment.leader_epoch;
        let f = self
            .followers
            .get_mut(&replica)
            .ok_or(FetchRejected::NotAReplica(replica))?;
        if leader_epoch != current {
            return Err(FetchRejected::OtherLeaderEpoch {
                fetched: leader_epoch,
                current,
            });
        }
        if !valid || fetch_offset < 0 || fetch_offset > leader_log_end {
            return Err(FetchRejected::Unproven(fetch_offset));
        }
        // The log as the fetch read it; it can be ahead of `local_leo` (an append not yet
        // counted, or not yet fsynced). Clamping to `local_leo` instead would lose the
        // progress of a follower that fetched an append in that window: the high watermark
        // then waited for its next fetch, a whole fetch wait later (Kafka also takes the
        // log's own end here).
        let leader_leo = leader_log_end.max(self.local_leo);
        if fetch_offset >= leader_leo {
            f.last_caught_up_ms = f.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= f.last_fetch_leader_leo && f.last_fetch_ms >= 0 {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.log_end_offset = fetch_offset;
        f.log_start_offset = log_start_offset;
        f.last_fetch_leader_leo = leader_leo;
        f.last_fetch_ms = now_ms;
        let mut effects: Vec<Effect> = self.recompute_high_watermark().into_iter().collect();
        effects.extend(self.maybe_expand(replica));
        Ok(effects)
    }

    /// The lowest log start offset over the ISR, this leader's being `local_start`; -1 while
    /// a member has not reported one (DeleteRecords waits for this to reach its offset).
    pub fn low_watermark(&self, local_start: i64) -> i64 {
        self.assignment
            .isr
            .iter()
            .map(|r| {
                if *r == self.local_id {
                    local_start
                } else {
                    self.followers.get(r).map_or(-1, |f| f.log_start_offset)
                }
            })
            .min()
            .unwrap_or(local_start)
    }

    fn maybe_expand(&mut self, replica: i32) -> Option<Effect> {
        if self.pending_isr.is_some() || self.assignment.isr.contains(&replica) {
            return None;
        }
        let f = self.followers.get(&replica)?;
        if f.log_end_offset >= self.high_watermark && f.log_end_offset >= self.epoch_start_offset {
            let mut isr = self.assignment.isr.clone();
            isr.push(replica);
            return Some(self.propose(isr));
        }
        None
    }

    fn propose(&mut self, isr: Vec<i32>) -> Effect {
        self.pending_isr = Some(isr.clone());
        Effect::ProposeIsr {
            isr,
            partition_epoch: self.assignment.partition_epoch,
        }
    }

    /// Periodic check: propose dropping followers that have lagged too long.
    pub fn on_tick(&mut self, now_ms: i64) -> Vec<Effect> {
        if self.pending_isr.is_some() {
            return Vec::new();
        }
        let lag_max = self.settings.replica_lag_time_max_ms;
        let keep: Vec<i32> = self
            .assignment
            .isr
            .iter()
            .copied()
            .filter(|r| {
                *r == self.local_id
                    || self
                        .followers
                        .get(r)
                        .is_some_and(|f| now_ms - f.last_caught_up_ms <= lag_max)
            })
            .collect();
        if keep.len() == self.assignment.isr.len() {
            return Vec::new();
        }
        vec![self.propose(keep)]
    }

    /// The controller committed a new state for the partition (our proposal or its own change).
    /// Returns None if this broker is no longer the leader of this epoch: the caller steps down.
    pub fn on_assignment(&mut self, assignment: Assignment, now_ms: i64) -> Option<Vec<Effect>> {
        if assignment.leader != self.local_id
            || assignment.leader_epoch != self.assignment.leader_epoch
        {
            return None;
        }
        // Every change bumps the partition epoch, so the same epoch is the state already known
        // (the metadata carries every partition at every version): no news on a pending
        // proposal either, which must stay pending until the controller's answer or a newer
        // state settles it. Clearing it here let the high watermark run over a proposed ISR
        // while a change the controller had committed meanwhile was forgotten.
        if assignment.partition_epoch <= self.assignment.partition_epoch {
            return Some(Vec::new());
        }
        for r in &assignment.replicas {
            if *r != self.local_id {
                self.followers.entry(*r).or_insert(FollowerState {
                    log_end_offset: -1,
                    log_start_offset: -1,
                    last_caught_up_ms: now_ms,
                    last_fetch_ms: -1,
                    last_fetch_leader_leo: -1,
                });
            }
        }
        self.followers
            .retain(|r, _| assignment.replicas.contains(r));
        self.pending_isr = None;
        self.assignment = assignment;
        Some(self.recompute_high_watermark().into_iter().collect())
    }

    /// The controller refused our proposal (stale partition epoch, fenced broker...): forget it
    /// so the next fetch or tick can propose again from the current state.
    pub fn on_proposal_rejected(&mut self) {
        self.pending_isr = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(isr: &[i32]) -> Assignment {
        Assignment {
            leader: 1,
            leader_epoch: 5,
            partition_epoch: 10,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
        }
    }
    /// A fetch of this leadership (epoch 5) whose read was valid.
    fn valid(replica: i32, fetch_offset: i64, leader_log_end: i64, now_ms: i64) -> FollowerFetch {
        FollowerFetch {
            replica,
            leader_epoch: 5,
            fetch_offset,
            log_start_offset: 0,
            leader_log_end,
            valid: true,
            now_ms,
        }
    }
    /// DeleteRecords' low watermark: the lowest log start over the ISR, a follower's as its
    /// last valid fetch reported it; unknown (-1) until every member has reported one.
    #[test]
    fn the_low_watermark_is_the_lowest_start_in_the_isr() {
        let mut s = LeaderState::new(1, settings(1), assignment(&[1, 2, 3]), 10, 0, 0);
        assert_eq!(s.low_watermark(4), -1, "no follower has reported yet");
        let at = |replica, start| FollowerFetch {
            log_start_offset: start,
            ..valid(replica, 10, 10, 1)
        };
        s.on_fetch(at(2, 4)).unwrap();
        assert_eq!(s.low_watermark(4), -1, "replica 3 has not reported");
        s.on_fetch(at(3, 2)).unwrap();
        assert_eq!(s.low_watermark(4), 2);
        s.on_fetch(at(3, 6)).unwrap();
        assert_eq!(s.low_watermark(5), 4);
        // An invalid (unproven) fetch reports nothing.
        let forged = FollowerFetch {
            valid: false,
            ..at(2, 100)
        };
        assert!(s.on_fetch(forged).is_err());
        assert_eq!(s.low_watermark(100), 4, "replica 2 still reported 4");
    }

    fn settings(min_isr: usize) -> Settings {
        Settings {
            replica_lag_time_max_ms: 1000,
            min_insync_replicas: min_isr,
        }
    }

    #[test]
    fn high_watermark_is_the_minimum_over_the_isr() {
        let mut s = LeaderState::new(1, settings(2), assignment(&[1, 2, 3]), 0, 0, 0);
        assert!(s.on_append(10).is_empty(), "followers have not fetched yet");
        assert_eq!(s.on_fetch(valid(2, 10, 10, 1)).unwrap(), vec![]);
        assert_eq!(
            s.on_fetch(valid(3, 4, 4, 1)).unwrap(),
            vec![Effect::HighWatermark(4)]
        );
        assert_eq!(
            s.on_fetch(valid(3, 10, 10, 2)).unwrap(),
            vec![Effect::HighWatermark(10)]
        );
        // Never backwards, even if a follower reports less (e.g. after truncation).
        assert_eq!(s.on_fetch(valid(3, 7, 7, 3)).unwrap(), vec![]);
        assert_eq!(s.high_watermark(), 10);
    }

    #[test]
    fn a_follower_ahead_of_the_leaders_own_count_is_not_clamped_back() {
        // The append of offset 21 is in the log (both followers fetched it, and report 22)
        // before the leader's own progress counted it: once it does, the high watermark
        // moves at once, without waiting for the followers' next fetches.
        let mut s = LeaderState::new(1, settings(2), assignment(&[1, 2, 3]), 21, 21, 0);
        assert_eq!(s.on_fetch(valid(2, 22, 22, 1)).unwrap(), vec![]);
        assert_eq!(s.on_fetch(valid(3, 22, 22, 1)).unwrap(), vec![]);
        assert_eq!(s.on_append(22), vec![Effect::HighWatermark(22)]);
        // An offset beyond the log as read proves nothing and counts for nothing.
        assert_eq!(
            s.on_fetch(valid(2, 99, 23, 2)),
            Err(FetchRejected::Unproven(99))
        );
        s.on_fetch(valid(3, 23, 23, 2)).unwrap();
        assert_eq!(s.on_append(30), vec![]);
        assert_eq!(s.follower(2).unwrap().log_end_offset, 22);
    }

    #[test]
    fn only_a_validated_fetch_of_this_leadership_counts() {
        let mut s = LeaderState::new(1, settings(2), assignment(&[1, 3]), 0, 0, 0);
        s.on_append(20);
        // Broker 3 has a diverged tail: its fetch at 15 read a diverging epoch.
        let diverged = FollowerFetch {
            valid: false,
            ..valid(3, 15, 20, 1)
        };
        assert_eq!(s.on_fetch(diverged), Err(FetchRejected::Unproven(15)));
        // A fetch sent for another leader epoch, or for none, is about another log.
        for epoch in [-1, 4, 6] {
            let other = FollowerFetch {
                leader_epoch: epoch,
                ..valid(3, 20, 20, 2)
            };
            assert_eq!(
                s.on_fetch(other),
                Err(FetchRejected::OtherLeaderEpoch {
                    fetched: epoch,
                    current: 5
                })
            );
        }
        assert_eq!(s.high_watermark(), 0);
        assert_eq!(s.follower(3).unwrap().log_end_offset, -1);
        // Once truncated, its fetches are valid and count.
        s.on_fetch(valid(3, 10, 20, 3)).unwrap();
        assert_eq!(s.high_watermark(), 10);
    }

    #[test]
    fn high_watermark_freezes_below_min_isr() {
        let mut s = LeaderState::new(1, settings(2), assignment(&[1]), 0, 0, 0);
        assert!(!s.enough_replicas());
        assert!(
            s.on_append(5).is_empty(),
            "ISR of one with min.insync.replicas=2 must not commit"
        );
        let mut s = LeaderState::new(1, settings(1), assignment(&[1]), 0, 0, 0);
        assert_eq!(s.on_append(5), vec![Effect::HighWatermark(5)]);
    }

    #[test]
    fn lagging_follower_is_proposed_out_and_caught_up_one_back_in() {
        let mut s = LeaderState::new(1, settings(1), assignment(&[1, 2, 3]), 0, 0, 0);
        s.on_append(100);
        s.on_fetch(valid(2, 100, 100, 500)).unwrap();
        s.on_fetch(valid(3, 20, 20, 500)).unwrap();
        assert!(s.on_tick(900).is_empty(), "within the lag time");
        // Follower 3 last caught up at 0 (grace from becoming leader): out after 1000 ms.
        assert_eq!(
            s.on_tick(1001),
            vec![Effect::ProposeIsr {
                isr: vec![1, 2],
                partition_epoch: 10
            }]
        );
        assert!(s.on_tick(1002).is_empty(), "one proposal at a time");
        // The pending shrink still counts 3 for the high watermark until committed.
        assert_eq!(s.high_watermark(), 20);
        let committed = Assignment {
            partition_epoch: 11,
            isr: vec![1, 2],
            ..assignment(&[])
        };
        assert_eq!(
            s.on_assignment(committed, 1003),
            Some(vec![Effect::HighWatermark(100)])
        );
        // 3 catches up to the high watermark: proposed back in.
        let effects = s.on_fetch(valid(3, 100, 100, 1100)).unwrap();
        assert_eq!(
            effects,
            vec![Effect::ProposeIsr {
                isr: vec![1, 2, 3],
                partition_epoch: 11
            }]
        );
    }

    #[test]
    fn steady_appends_do_not_count_as_lag() {
        let mut s = LeaderState::new(1, settings(1), assignment(&[1, 2]), 0, 0, 0);
        let mut leo = 0;
        for t in 1..50 {
            // The follower always fetches what the leader had at its previous fetch.
            s.on_fetch(valid(2, leo, leo, t * 100)).unwrap();
            leo += 10;
            s.on_append(leo);
        }
        assert!(
            s.on_tick(5000).is_empty(),
            "a follower keeping pace stays in the ISR"
        );
    }

    #[test]
    fn rejoin_requires_reaching_the_epoch_start() {
        // Became leader with LEO 50 and HW 40: follower 3 at 45 is past the HW but not the
        // epoch start, so it may not rejoin yet.
        let mut s = LeaderState::new(1, settings(1), assignment(&[1, 2]), 50, 40, 0);
        assert!(
            s.on_fetch(valid(3, 45, 45, 1))
                .unwrap()
                .iter()
                .all(|e| !matches!(e, Effect::ProposeIsr { .. }))
        );
        assert!(
            s.on_fetch(valid(3, 50, 50, 2))
                .unwrap()
                .contains(&Effect::ProposeIsr {
                    isr: vec![1, 2, 3],
                    partition_epoch: 10
                })
        );
    }

    #[test]
    fn new_leadership_or_strangers_are_refused() {
        let mut s = LeaderState::new(1, settings(1), assignment(&[1, 2, 3]), 0, 0, 0);
        assert_eq!(
            s.on_fetch(valid(9, 0, 0, 1)),
            Err(FetchRejected::NotAReplica(9))
        );
        let moved = Assignment {
            leader: 2,
            leader_epoch: 6,
            ..assignment(&[1, 2, 3])
        };
        assert_eq!(
            s.on_assignment(moved, 2),
            None,
            "leadership moved: step down"
        );
        let stale = Assignment {
            partition_epoch: 3,
            ..assignment(&[1])
        };
        assert_eq!(s.on_assignment(stale, 2), Some(vec![]));
        assert_eq!(s.isr(), &[1, 2, 3]);
    }

    /// The metadata carries every partition at every version, so the leader sees its current
    /// state again whenever anything else changes. That is no answer to a pending proposal:
    /// forgetting it there let the leader propose another ISR from a stale view while the
    /// controller had committed the first, and run the high watermark over a set that left
    /// out a committed ISR member (found by `operator/tests/simulation.rs` in a long run).
    #[test]
    fn the_same_partition_epoch_again_keeps_a_pending_proposal() {
        let mut s = LeaderState::new(1, settings(2), assignment(&[1, 2]), 10, 0, 0);
        s.on_fetch(valid(2, 10, 10, 1)).unwrap();
        let proposed = s.on_fetch(valid(3, 10, 10, 2)).unwrap();
        let expand = Effect::ProposeIsr {
            isr: vec![1, 2, 3],
            partition_epoch: 10,
        };
        assert!(proposed.contains(&expand), "{proposed:?}");
        assert_eq!(s.on_assignment(assignment(&[1, 2]), 3), Some(vec![]));
        assert_eq!(s.pending_isr(), Some(&[1, 2, 3][..]), "still pending");
        assert_eq!(s.on_tick(4), vec![], "no second proposal");
        let committed = Assignment {
            partition_epoch: 11,
            ..assignment(&[1, 2, 3])
        };
        s.on_assignment(committed, 5);
        assert_eq!(s.pending_isr(), None, "a newer state settles it");
        assert_eq!(s.isr(), &[1, 2, 3]);
    }

    /// Exhaustive check over all schedules of up to 7 steps: the high watermark never
    /// decreases, whatever is below it is held by at least min.insync.replicas replicas, and
    /// every ISR member holds it. Follower 3 starts as an old leader with a diverged tail of
    /// 3 records, and a lying client may claim to be follower 2, so a replica's real holdings
    /// (the model's) can differ from what its fetches claim.
    #[test]
    fn high_watermark_safety_over_all_small_schedules() {
        // Each step: 0 = append 1; 1 = follower 2 fetches its next offset; 2 = follower 3
        // fetches (at its log end, diverged tail included; the read is valid only without
        // one); 3 = tick +600ms; 4 = follower 3 truncates its tail; 5 = a client claims to be
        // follower 2 at an offset past the log end; 6 = follower 2 fetches for an old epoch.
        const STEPS: u8 = 7;
        fn run(schedule: &[u8]) {
            let mut s = LeaderState::new(1, settings(2), assignment(&[1, 2, 3]), 0, 0, 0);
            let (mut leo, mut now, mut last_hw) = (0i64, 0i64, 0i64);
            // What each follower really holds of the leader's log, and its diverged tail.
            let (mut f2, mut f3, mut tail3) = (0i64, 0i64, 3i64);
            let commit = |s: &mut LeaderState, effects: Vec<Effect>, now: i64| {
                for e in effects {
                    if let Effect::ProposeIsr { isr, .. } = e {
                        let mut a = s.assignment().clone();
                        a.partition_epoch += 1;
                        a.isr = isr;
                        s.on_assignment(a, now);
                    }
                }
            };
            for step in schedule {
                now += 1;
                let effects = match step {
                    0 => {
                        leo += 1;
                        s.on_append(leo)
                    }
                    1 => {
                        let e = s.on_fetch(valid(2, f2, leo, now)).unwrap();
                        f2 = leo;
                        e
                    }
                    2 => {
                        let fetch = FollowerFetch {
                            valid: tail3 == 0,
                            ..valid(3, f3 + tail3, leo, now)
                        };
                        let e = s.on_fetch(fetch).unwrap_or_default();
                        if tail3 == 0 {
                            f3 = leo;
                        }
                        e
                    }
                    3 => {
                        now += 600;
                        s.on_tick(now)
                    }
                    4 => {
                        tail3 = 0;
                        Vec::new()
                    }
                    5 => {
                        let forged = FollowerFetch {
                            valid: false,
                            ..valid(2, leo + 1000, leo, now)
                        };
                        s.on_fetch(forged).unwrap_or_default()
                    }
                    _ => {
                        let stale = FollowerFetch {
                            leader_epoch: 4,
                            ..valid(2, leo, leo, now)
                        };
                        s.on_fetch(stale).unwrap_or_default()
                    }
                };
                commit(&mut s, effects, now);
                let hw = s.high_watermark();
                assert!(hw >= last_hw, "{schedule:?}: high watermark went back");
                last_hw = hw;
                let held = |r: i32| if r == 2 { f2 } else { f3 };
                if hw > 0 {
                    let holders = 1 + [2, 3].iter().filter(|r| held(**r) >= hw).count();
                    assert!(
                        holders >= 2,
                        "{schedule:?}: hw {hw} held by {holders} replicas"
                    );
                }
                for r in s.isr().iter().filter(|r| **r != 1) {
                    assert!(
                        held(*r) >= hw,
                        "{schedule:?}: ISR member {r} holds {} of hw {hw}",
                        held(*r)
                    );
                }
                if s.isr().len() < 2 {
                    assert!(!s.enough_replicas());
                }
            }
        }
        fn all(prefix: &mut Vec<u8>, depth: usize) {
            run(prefix);
            if depth == 0 {
                return;
            }
            for step in 0..STEPS {
                prefix.push(step);
                all(prefix, depth - 1);
                prefix.pop();
            }
        }
        all(&mut Vec::new(), 7);
    }
}
