//! The invariants, as Kafka states them for acks=all, min.insync.replicas=2, replication
//! factor 3 and no unclean leader election, checked after every event:
//!
//! 1. The controller never empties an ISR.
//! 2. At most one broker leads each leader epoch (as the controller publishes it, and as
//!    brokers actually take leadership).
//! 3. Within a leader epoch the high watermark a leader exposes never goes back.
//! 4. No acknowledged write is lost: the settled leader (the broker the controller names,
//!    leading that epoch) holds every acknowledged record at its offset, and no offset is
//!    acknowledged with two values. One loss is counted, not failed: under
//!    `fsync.policy=none`, the leader lost the write in a power loss before its copy reached
//!    the disk, and no other replica the controller could elect (in its ISR or ELR) holds it
//!    (see `kept_by_an_electable_replica`). A leader that lost the write itself while another copy
//!    survives fails: the restarted broker reports its unclean shutdown and the controller's
//!    eligible leader replicas (KIP-966) must elect a replica that kept it (Kafka's rules
//!    before KIP-966 lose it: the last ISR member leads again; see the old-bug test with
//!    `Behaviour::report_unclean_shutdown` off). Under `before-ack`
//!    any such loss fails: the leader fsyncs before its own copy counts and a follower before
//!    its next fetch reports what it took in, so every copy an ack counted is on disk.
//! 5. Below the leader's high watermark, every in-sync follower's log equals the leader's.
//! 6. An acknowledged write had reached at least min.insync.replicas replicas when the ack
//!    was sent (counting copies a power loss took since).
//! 7. A broker acknowledges only writes appended in a leadership it still holds; a broker the
//!    controller fenced may still acknowledge (its followers may not have heard yet, as in
//!    Kafka), but never a write the next leaders lack, which 4 checks.
//!
//! After the faults end, the network heals and every broker is back, a quiet period later
//! the controller's leader must lead its epoch, and 4 and 5 are checked once more there.

use std::collections::{BTreeMap, BTreeSet};

use broker::metadata::PartitionMeta;

use super::broker::{Note, SimBroker};

/// The topic's min.insync.replicas.
pub const MIN_INSYNC_REPLICAS: usize = 2;

#[derive(Default)]
pub struct Oracle {
    leader_of_epoch: BTreeMap<i32, i32>,
    published_leader_of_epoch: BTreeMap<i32, i32>,
    hw_of_epoch: BTreeMap<i32, i64>,
    /// Acknowledged offset -> value.
    acked: BTreeMap<i64, u64>,
    /// The same, in the order the acks arrived.
    ack_order: Vec<(i64, u64)>,
    /// How many of `ack_order` the current leadership (broker, incarnation, epoch) is known
    /// to hold: a leader's log only grows while it leads, so each is checked once.
    leader_checked: Option<((i32, u32, i32), usize)>,
    /// Per (follower, its incarnation, the leader's incarnation, epoch): the offset below
    /// which the follower's log is known to equal the leader's.
    follower_checked: BTreeMap<(i32, u32, u32, i32), i64>,
    /// Which brokers held each acknowledged value when its ack was sent.
    holders: BTreeMap<u64, BTreeSet<i32>>,
    /// Values each broker lost from its page cache in a power loss.
    power_lost: BTreeMap<u64, BTreeSet<i32>>,
    /// Acknowledged writes a leader lost with its own page cache (reported, not failures).
    pub page_cache_losses: BTreeSet<u64>,
    /// `fsync.policy=before-ack`: a page-cache loss of an acknowledged write fails (see 4).
    every_ack_fsynced: bool,
}

impl Oracle {
    pub fn new(every_ack_fsynced: bool) -> Self {
        Self {
            every_ack_fsynced,
            ..Self::default()
        }
    }

    pub fn acked_count(&self) -> usize {
        self.acked.len()
    }

    pub fn power_loss(&mut self, broker: i32, values: Vec<u64>) {
        for v in values {
            self.power_lost.entry(v).or_default().insert(broker);
        }
    }

    pub fn note(&mut self, note: &Note, brokers: &[SimBroker]) -> Result<(), String> {
        match *note {
            Note::BecameLeader {
                broker,
                epoch,
                high_watermark,
            } => {
                if let Some(other) = self.leader_of_epoch.insert(epoch, broker)
                    && other != broker
                {
                    return Err(format!(
                        "two leaders in epoch {epoch}: broker {other} and broker {broker}"
                    ));
                }
                self.high_watermark(broker, epoch, high_watermark)
            }
            Note::HighWatermark {
                broker,
                epoch,
                high_watermark,
            } => self.high_watermark(broker, epoch, high_watermark),
            Note::Acked {
                broker,
                epoch,
                base,
                end,
                ..
            } => {
                let b = &brokers[broker as usize];
                if b.leading().map(|(e, _)| e) != Some(epoch) {
                    return Err(format!(
                        "broker {broker} acknowledged [{base}, {end}) of epoch {epoch} without leading it"
                    ));
                }
                for offset in base..end {
                    let Some(v) = b.log.value_at(offset) else {
                        return Err(format!(
                            "broker {broker} acknowledged offset {offset} it does not hold"
                        ));
                    };
                    let holders: BTreeSet<i32> = brokers
                        .iter()
                        .filter(|o| o.log.value_at(offset) == Some(v))
                        .map(|o| o.id)
                        .collect();
                    // Copies a power loss took since the followers fetched them still count.
                    let lost = self.power_lost.get(&v).cloned().unwrap_or_default();
                    let copies = holders.union(&lost).count();
                    if copies < MIN_INSYNC_REPLICAS {
                        return Err(format!(
                            "broker {broker} acknowledged offset {offset} (value {v}) held by {holders:?} only"
                        ));
                    }
                    self.holders.insert(v, holders);
                }
                Ok(())
            }
        }
    }

    fn high_watermark(&mut self, broker: i32, epoch: i32, hw: i64) -> Result<(), String> {
        let seen = self.hw_of_epoch.entry(epoch).or_insert(hw);
        if hw < *seen {
            return Err(format!(
                "the high watermark of epoch {epoch} went back from {seen} to {hw} (broker {broker})"
            ));
        }
        *seen = hw;
        Ok(())
    }

    /// The producer got an ack for `values` written from `base`.
    pub fn acked(&mut self, base: i64, values: &[u64]) -> Result<(), String> {
        for (i, v) in values.iter().enumerate() {
            let offset = base + i as i64;
            match self.acked.insert(offset, *v) {
                // The offset was written again after that loss.
                Some(old) if self.page_cache_losses.contains(&old) => {
                    self.ack_order.push((offset, *v))
                }
                Some(old) if old != *v => {
                    return Err(format!(
                        "offset {offset} acknowledged twice: value {old}, then value {v}"
                    ));
                }
                Some(_) => {}
                None => self.ack_order.push((offset, *v)),
            }
        }
        Ok(())
    }

    /// `broker` lost `value` with its page cache, as a leader (see 4 above) or not yet known.
    pub fn lost_by(&self, value: u64, broker: i32) -> bool {
        self.page_cache_losses.contains(&value) || self.lost_with_page_cache(value, broker)
    }

    /// The leader lost `value` itself with its page cache (see 4 above).
    fn lost_with_page_cache(&self, value: u64, leader: i32) -> bool {
        self.power_lost
            .get(&value)
            .is_some_and(|l| l.contains(&leader))
    }

    /// A replica the controller could elect holds `value` at `offset`: one in its ISR or ELR, other than
    /// `leader`. A settled leader that lacks an acknowledged write while such a replica holds
    /// it means the controller chose the wrong copy. What is excused is a write no replica
    /// it can elect holds any more: its copies were lost, or sit on brokers it no longer
    /// counts (restarted after a power loss, so distrusted; or out of the ISR and ELR). It
    /// does not compare the logs of replicas it no longer counts (Kafka's KIP-966 "unclean
    /// recovery", not built), nor tell a restarted follower's fetches from its fenced
    /// incarnation's at a leader that has not heard of the restart yet (KIP-903, not built).
    fn kept_by_an_electable_replica(
        offset: i64,
        value: u64,
        leader: i32,
        pm: &PartitionMeta,
        brokers: &[SimBroker],
    ) -> Option<i32> {
        pm.isr
            .iter()
            .chain(&pm.elr)
            .copied()
            .filter(|b| *b != leader)
            .find(|b| {
                brokers
                    .get(*b as usize)
                    .is_some_and(|o| o.log.value_at(offset) == Some(value))
            })
    }

    pub fn check(
        &mut self,
        published: Option<&PartitionMeta>,
        brokers: &[SimBroker],
    ) -> Result<(), String> {
        let Some(pm) = published else { return Ok(()) };
        if pm.isr.is_empty() {
            return Err("the controller emptied the ISR".into());
        }
        if pm.leader >= 0
            && let Some(other) = self
                .published_leader_of_epoch
                .insert(pm.leader_epoch, pm.leader)
            && other != pm.leader
        {
            return Err(format!(
                "the controller published two leaders for epoch {}: {other} and {}",
                pm.leader_epoch, pm.leader
            ));
        }
        let Some(leader) = brokers.get(pm.leader as usize) else {
            return Ok(());
        };
        let Some((epoch, hw)) = leader.leading().filter(|(e, _)| *e == pm.leader_epoch) else {
            return Ok(()); // not settled yet
        };
        if !leader.up {
            return Ok(());
        }
        self.check_acked_on(leader, epoch, pm, brokers)?;
        for m in &pm.isr {
            let f = &brokers[*m as usize];
            if f.id == leader.id || !f.up || f.following() != Some(epoch) {
                continue;
            }
            let below = hw.min(f.log.end());
            let checked = self
                .follower_checked
                .entry((f.id, f.incarnation, leader.incarnation, epoch))
                .or_insert(0);
            // A truncation removes a suffix only: what is left was checked.
            let from = (*checked).min(f.log.end());
            for o in from..below {
                let (mine, theirs) = (f.log.value_at(o), leader.log.value_at(o));
                if mine != theirs {
                    return Err(format!(
                        "in-sync follower {} differs from leader {} below the high watermark {hw}: offset {o} holds {mine:?}, the leader {theirs:?}",
                        f.id, leader.id
                    ));
                }
            }
            *checked = from.max(below);
        }
        Ok(())
    }

    fn check_acked_on(
        &mut self,
        leader: &SimBroker,
        epoch: i32,
        pm: &PartitionMeta,
        brokers: &[SimBroker],
    ) -> Result<(), String> {
        let key = (leader.id, leader.incarnation, epoch);
        let from = match self.leader_checked {
            Some((k, n)) if k == key => n,
            _ => 0,
        };
        for (offset, value) in &self.ack_order[from..] {
            if leader.log.value_at(*offset) == Some(*value)
                || self.page_cache_losses.contains(value)
            {
                continue;
            }
            if self.lost_with_page_cache(*value, leader.id)
                && !self.every_ack_fsynced
                && Self::kept_by_an_electable_replica(*offset, *value, leader.id, pm, brokers)
                    .is_none()
            {
                self.page_cache_losses.insert(*value);
                continue;
            }
            return Err(format!(
                "acknowledged write lost: offset {offset} value {value} (held by {:?} at the ack; lost in power losses on {:?}); leader {} holds {:?} there (log end {})",
                self.holders.get(value),
                self.power_lost.get(value),
                leader.id,
                leader.log.value_at(*offset),
                leader.log.end()
            ));
        }
        self.leader_checked = Some((key, self.ack_order.len()));
        Ok(())
    }
}
