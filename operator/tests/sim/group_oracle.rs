//! The consumer group invariants, as Kafka's classic protocol guarantees them:
//!
//! G1. An acknowledged OffsetCommit is never lost: once a member got an OffsetCommit answered
//!     without error, every coordinator that loads the group afterwards (and the settled
//!     coordinator at the end) serves, for that partition, that commit or one whose record
//!     lies later in the offsets log. A later commit may lower the offset (a member of a new
//!     generation may commit below an older one's position, as Kafka allows); what may not
//!     happen is serving a record older than the acknowledged one, or none. As invariant 4,
//!     the one loss excused is the coordinator's own page cache losing the record.
//! G2. Within one generation no partition is assigned to two members, and no member gets two
//!     different assignments (SyncGroup answers, from whichever coordinator gave them).
//! G3. The generation of committed group metadata never goes back, and a coordinator that
//!     loads the group loads at least the last committed metadata record (same excuse as G1;
//!     after such a loss the generations past the loaded one are handed out again, so G2-G4
//!     forget them).
//! G4. Within one generation, OffsetCommits for a partition are acknowledged to one member
//!     only (members commit only what they were assigned, so with G2 this is the generation
//!     fencing of zombie members).

use std::collections::{BTreeMap, HashMap};

use super::coordinator::GroupNote;
use super::members::MemberNote;
use super::oracle::Oracle;

#[derive(Default)]
pub struct GroupOracle {
    /// (member, incarnation, request) -> (base, record values) of appended commits.
    appended: HashMap<(u8, u32, u64), (i64, Vec<u64>)>,
    /// Per partition, the acknowledged commit latest in the log: (log offset, value, offset).
    acked: BTreeMap<i32, (i64, u64, i64)>,
    /// The committed group metadata record latest in the log: (log offset, value, generation).
    stored: Option<(i64, u64, i32)>,
    assigned: BTreeMap<i32, BTreeMap<String, Vec<i32>>>,
    committers: BTreeMap<(i32, i32), String>,
    pub commits_acked: u64,
    pub loads: u64,
}

impl GroupOracle {
    /// A coordinator's event; Ok(Some) names the records of a commit to count as acknowledged.
    pub fn coordinator(&mut self, note: GroupNote, oracle: &Oracle) -> Result<(), String> {
        match note {
            GroupNote::Loaded {
                broker,
                epoch,
                offsets,
                metadata,
            } => {
                self.loads += 1;
                self.check_served(broker, epoch, &offsets, oracle)?;
                if let Some((at, value, generation)) = self.stored
                    && metadata.is_none_or(|(m_at, _)| m_at < at)
                {
                    if !oracle.lost_by(value, broker) {
                        return Err(format!(
                            "broker {broker} loaded the group in epoch {epoch} without its committed metadata of generation {generation} at log offset {at} (loaded {metadata:?})"
                        ));
                    }
                    // The excused loss: the generations after the loaded one will be handed
                    // out again, so G2-G4 start over from what was loaded.
                    let loaded = metadata.map_or(0, |(_, g)| g);
                    self.stored = None;
                    self.assigned.retain(|g, _| *g <= loaded);
                    self.committers.retain(|(g, _), _| *g <= loaded);
                }
                Ok(())
            }
            GroupNote::CommitAppended {
                member,
                incarnation,
                request,
                base,
                values,
            } => {
                self.appended
                    .insert((member, incarnation, request), (base, values));
                Ok(())
            }
            GroupNote::StoreCommitted {
                base,
                value,
                generation,
            } => {
                if let Some((_, _, before)) = self.stored
                    && generation < before
                {
                    return Err(format!(
                        "committed group metadata went back from generation {before} to {generation} (log offset {base})"
                    ));
                }
                if self.stored.is_none_or(|(at, _, _)| at < base) {
                    self.stored = Some((base, value, generation));
                }
                Ok(())
            }
        }
    }

    /// A member's event; returns the (base, values) of an acknowledged commit's records.
    pub fn member(&mut self, note: MemberNote) -> Result<Option<(i64, Vec<u64>)>, String> {
        match note {
            MemberNote::Assigned {
                member_id,
                generation,
                partitions,
            } => {
                let gen_map = self.assigned.entry(generation).or_default();
                if let Some(before) = gen_map.get(&member_id) {
                    if *before != partitions {
                        return Err(format!(
                            "member {member_id} assigned {before:?}, then {partitions:?} in generation {generation}"
                        ));
                    }
                    return Ok(None);
                }
                for (other, theirs) in gen_map.iter() {
                    if let Some(p) = partitions.iter().find(|p| theirs.contains(p)) {
                        return Err(format!(
                            "partition {p} assigned to both {other} and {member_id} in generation {generation}"
                        ));
                    }
                }
                gen_map.insert(member_id, partitions);
                Ok(None)
            }
            MemberNote::CommitAcked {
                member,
                incarnation,
                request,
                member_id,
                generation,
                offsets,
            } => {
                self.commits_acked += 1;
                let Some((base, values)) = self.appended.remove(&(member, incarnation, request))
                else {
                    return Err(format!(
                        "member {member_id}'s commit {offsets:?} acknowledged but never appended"
                    ));
                };
                for (i, (p, offset)) in offsets.iter().enumerate() {
                    let log_offset = base + i as i64;
                    if self.acked.get(p).is_none_or(|(at, _, _)| *at < log_offset) {
                        self.acked.insert(*p, (log_offset, values[i], *offset));
                    }
                    let who = self
                        .committers
                        .entry((generation, *p))
                        .or_insert_with(|| member_id.clone());
                    if *who != member_id {
                        return Err(format!(
                            "commits for partition {p} acknowledged to both {who} and {member_id} in generation {generation}"
                        ));
                    }
                }
                Ok(Some((base, values)))
            }
        }
    }

    /// G1 against what `broker` serves (loaded, or at the end): partition -> (offset, log
    /// offset of its record).
    pub fn check_served(
        &mut self,
        broker: i32,
        epoch: i32,
        served: &BTreeMap<i32, (i64, i64)>,
        oracle: &Oracle,
    ) -> Result<(), String> {
        let mut excused = Vec::new();
        for (p, (at, value, offset)) in &self.acked {
            let kept = served.get(p).is_some_and(|(_, s_at)| s_at >= at);
            if kept {
                continue;
            }
            if !oracle.lost_by(*value, broker) {
                return Err(format!(
                    "acknowledged commit lost: partition {p} offset {offset} (log offset {at}); broker {broker} coordinating in epoch {epoch} serves {:?}",
                    served.get(p)
                ));
            }
            excused.push(*p);
        }
        // After the excused loss the partition's history starts over from the next
        // acknowledged commit (what was served may itself be an unreplicated tail).
        for p in excused {
            self.acked.remove(&p);
        }
        Ok(())
    }
}
