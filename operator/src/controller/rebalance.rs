//! Rebalancing onto new brokers, as pure decisions over [`ControllerState`]: when the set of
//! brokers grows, `balance::plan` computes every partition's new replicas once, the plan is
//! kept in the state (so a restarted controller resumes it, never replans halfway), and each
//! `advance` starts at most `max_in_flight` of its moves with the ordinary reassignment (grow,
//! catch up into the ISR, shrink: a partition never has fewer replicas than its RF, nor fewer
//! in-sync ones than before). Once every move is over, a preferred-leader election spreads
//! leadership as planned.
//!
//! A move starts only on a partition that is fully in sync and led, onto live brokers; one
//! whose partition changed underneath (deleted, reassigned by someone else) is abandoned, not
//! forced. A broker of the plan leaving the set (a scale-down) cancels the rest.

use std::collections::BTreeSet;

use broker::metadata::PartitionMeta;
use serde::{Deserialize, Serialize};

use super::balance::{self, Assignment};
use super::decisions;
use super::placement::Candidate;
use super::state::ControllerState;

/// A rebalance under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebalance {
    /// The brokers balanced over.
    pub brokers: Vec<i32>,
    /// Those that gain replicas: the new ones, in a scale-up.
    pub onto: Vec<i32>,
    pub moves: Vec<Move>,
}

/// One partition's planned change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    /// Replicas when planned; the move starts only from exactly these.
    pub from: Vec<i32>,
    pub to: Vec<i32>,
    pub state: MoveState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveState {
    Pending,
    /// The reassignment is in flight.
    Started,
    Done,
    /// The partition changed underneath (deleted, reassigned by someone else); left alone.
    Abandoned,
}

impl MoveState {
    fn over(self) -> bool {
        matches!(self, Self::Done | Self::Abandoned)
    }
}

/// How far a rebalance is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub onto: Vec<i32>,
    /// Moves over (done or abandoned).
    pub done: usize,
    pub total: usize,
    pub in_flight: usize,
    pub abandoned: usize,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rebalancing onto brokers {:?}: {} of {} partition moves done",
            self.onto, self.done, self.total
        )?;
        if self.abandoned > 0 {
            write!(
                f,
                " ({} abandoned: the partition changed underneath)",
                self.abandoned
            )?;
        }
        Ok(())
    }
}

/// What one `advance` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing changed.
    Nothing,
    /// The broker set changed but nothing needs to move; it is recorded as balanced.
    Balanced { brokers: Vec<i32> },
    /// A new plan; its first moves may have started too.
    Started(Progress),
    /// Moves started or finished.
    Progressed(Progress),
    /// Every move is over; `leaders_moved` partitions changed leader in the final election.
    Finished {
        progress: Progress,
        leaders_moved: usize,
    },
    /// A broker of the plan left the set; the moves not started were dropped.
    Cancelled { onto: Vec<i32>, left: Vec<i32> },
}

/// The rebalance's progress, if one is under way.
pub fn progress(state: &ControllerState) -> Option<Progress> {
    state.rebalance.as_ref().map(progress_of)
}

fn progress_of(r: &Rebalance) -> Progress {
    let count = |f: fn(MoveState) -> bool| r.moves.iter().filter(|m| f(m.state)).count();
    Progress {
        onto: r.onto.clone(),
        done: count(MoveState::over),
        total: r.moves.len(),
        in_flight: count(|s| s == MoveState::Started),
        abandoned: count(|s| s == MoveState::Abandoned),
    }
}

/// One step, run periodically by whoever owns the broker set (the LogCluster reconciler, or
/// `operator local`). `members` is the broker set replicas should spread over; `may_move` is
/// false while something else moves brokers (a rolling restart, a scale-down): then no move
/// starts and no rebalance begins, but finished moves are still recorded. With `auto_start`
/// false a rebalance begins only through [`start`]. Idempotent: a second call with nothing
/// new to do changes nothing.
pub fn advance(
    state: &mut ControllerState,
    members: &[i32],
    may_move: bool,
    auto_start: bool,
    max_in_flight: usize,
) -> Outcome {
    let members = sorted(members);
    let all_alive = !members.is_empty() && members.iter().all(|b| state.metadata.is_alive(*b));
    let Some(mut r) = state.rebalance.take() else {
        if members == state.balanced_brokers || !all_alive {
            return Outcome::Nothing;
        }
        let grew = members.iter().any(|b| !state.balanced_brokers.contains(b));
        if !grew {
            // A scale-down: decommission already spread the leavers' replicas.
            return record_balanced(state, members);
        }
        if !auto_start || !may_move {
            return Outcome::Nothing;
        }
        return begin(state, members, max_in_flight);
    };
    let left: Vec<i32> = r
        .brokers
        .iter()
        .copied()
        .filter(|b| !members.contains(b))
        .collect();
    if !left.is_empty() {
        // Moves in flight finish on their own (their targets may still be drained by a
        // decommission); the rest are dropped.
        decisions::bump(state);
        return Outcome::Cancelled { onto: r.onto, left };
    }
    let mut changed = settle(state, &mut r);
    if may_move && all_alive {
        changed |= start_moves(state, &mut r, max_in_flight);
    }
    let progress = progress_of(&r);
    if progress.done == progress.total && may_move {
        let leaders_moved = decisions::preferred_leader_election(state);
        state.balanced_brokers = r.brokers;
        return Outcome::Finished {
            progress,
            leaders_moved,
        };
    }
    state.rebalance = Some(r);
    if changed {
        decisions::bump(state);
        Outcome::Progressed(progress)
    } else {
        Outcome::Nothing
    }
}

/// Begins a rebalance over `members` now, whether or not the set grew (the admin API's
/// "rebalance"). One already under way is left as it is.
pub fn start(state: &mut ControllerState, members: &[i32], max_in_flight: usize) -> Outcome {
    match &state.rebalance {
        Some(r) => Outcome::Progressed(progress_of(r)),
        None => begin(state, sorted(members), max_in_flight),
    }
}

fn sorted(members: &[i32]) -> Vec<i32> {
    members
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn record_balanced(state: &mut ControllerState, members: Vec<i32>) -> Outcome {
    state.balanced_brokers = members.clone();
    decisions::bump(state);
    Outcome::Balanced { brokers: members }
}

fn begin(state: &mut ControllerState, members: Vec<i32>, max_in_flight: usize) -> Outcome {
    let candidates: Vec<Candidate> = members
        .iter()
        .map(|id| Candidate {
            id: *id,
            rack: state.metadata.brokers.get(id).and_then(|b| b.rack.clone()),
        })
        .collect();
    let current: Vec<Assignment> = state
        .metadata
        .partitions()
        .map(|(t, p)| Assignment {
            topic: t.to_string(),
            partition: p.partition,
            replicas: p.target_replicas(),
            movable: !reassigning(p),
        })
        .collect();
    let moves: Vec<Move> = balance::plan(&current, &candidates)
        .into_iter()
        .filter_map(|a| {
            let from = current
                .iter()
                .find(|c| c.topic == a.topic && c.partition == a.partition)?
                .replicas
                .clone();
            Some(Move {
                topic: a.topic,
                partition: a.partition,
                from,
                to: a.replicas,
                state: MoveState::Pending,
            })
        })
        .collect();
    if moves.is_empty() {
        return record_balanced(state, members);
    }
    // The brokers that gain replicas (the new ones, in a scale-up).
    let onto: Vec<i32> = moves
        .iter()
        .flat_map(|m| m.to.iter().filter(|b| !m.from.contains(b)))
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut r = Rebalance {
        brokers: members,
        onto,
        moves,
    };
    start_moves(state, &mut r, max_in_flight);
    let progress = progress_of(&r);
    state.rebalance = Some(r);
    decisions::bump(state);
    Outcome::Started(progress)
}

fn reassigning(p: &PartitionMeta) -> bool {
    !p.adding.is_empty() || !p.removing.is_empty()
}

/// Records moves that finished, or whose partition changed underneath. Returns whether any did.
fn settle(state: &ControllerState, r: &mut Rebalance) -> bool {
    let mut changed = false;
    for m in r.moves.iter_mut().filter(|m| !m.state.over()) {
        let next = match state.metadata.partition(&m.topic, m.partition) {
            None => MoveState::Abandoned,
            Some(p) if !reassigning(p) && p.replicas == m.to => MoveState::Done,
            Some(p) => match m.state {
                MoveState::Started if reassigning(p) && p.target_replicas() == m.to => {
                    MoveState::Started
                }
                MoveState::Pending if !reassigning(p) && p.replicas == m.from => MoveState::Pending,
                // Someone else's reassignment, or ours ended elsewhere.
                _ => MoveState::Abandoned,
            },
        };
        if next != m.state {
            m.state = next;
            changed = true;
        }
    }
    changed
}

/// Starts pending moves while fewer than `max_in_flight` are in flight. Returns whether any
/// started.
fn start_moves(state: &mut ControllerState, r: &mut Rebalance, max_in_flight: usize) -> bool {
    let mut in_flight = r
        .moves
        .iter()
        .filter(|m| m.state == MoveState::Started)
        .count();
    let mut changed = false;
    for m in r.moves.iter_mut() {
        if in_flight >= max_in_flight {
            break;
        }
        if m.state != MoveState::Pending {
            continue;
        }
        let Some(p) = state.metadata.partition(&m.topic, m.partition) else {
            continue;
        };
        // Only a healthy partition moves: fully in sync and led, onto live brokers. Others
        // wait (a lagging replica may be the one that would keep min.insync.replicas).
        let healthy = p.has_leader() && p.isr.len() == p.replicas.len();
        if !healthy || !m.to.iter().all(|b| state.metadata.is_alive(*b)) {
            continue;
        }
        changed = true;
        match decisions::reassign(state, &m.topic, m.partition, m.to.clone()) {
            Ok(p) if reassigning(&p) => {
                m.state = MoveState::Started;
                in_flight += 1;
            }
            // A pure reordering completes at once.
            Ok(_) => m.state = MoveState::Done,
            Err(_) => m.state = MoveState::Abandoned,
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::controller::decisions::{AlterPartition, Registration};

    fn reg(id: i32, incarnation: &str) -> Registration {
        // From JSON, so fields added to registrations later take their defaults.
        serde_json::from_value(serde_json::json!({
            "id": id, "incarnation": incarnation, "host": "127.0.0.1", "port": 9000 + id,
        }))
        .unwrap()
    }

    /// `n` live brokers and topic "t" with `partitions` partitions, RF 3, on brokers 0-2.
    fn cluster(n: i32, partitions: usize) -> ControllerState {
        let mut s = ControllerState::new("c".into());
        for id in 0..3 {
            decisions::register(&mut s, reg(id, "a"), 0);
        }
        decisions::create_topic(
            &mut s,
            "t",
            partitions,
            3,
            BTreeMap::new(),
            uuid::Uuid::nil(),
        )
        .unwrap();
        assert_eq!(
            advance(&mut s, &[0, 1, 2], true, true, 2),
            Outcome::Balanced {
                brokers: vec![0, 1, 2]
            }
        );
        for id in 3..n {
            decisions::register(&mut s, reg(id, "a"), 0);
        }
        s
    }

    /// Every leader reports its adding replicas caught up, as brokers' fetchers would.
    fn catch_up(s: &mut ControllerState) {
        let reassigning: Vec<PartitionMeta> = s
            .metadata
            .partitions()
            .filter(|(_, p)| !p.adding.is_empty())
            .map(|(_, p)| p.clone())
            .collect();
        for p in reassigning {
            let mut isr = p.isr.clone();
            isr.extend(p.adding.iter().filter(|r| !p.isr.contains(r)));
            decisions::alter_partition(
                s,
                &AlterPartition {
                    broker: p.leader,
                    broker_epoch: s.metadata.brokers[&p.leader].epoch,
                    topic: "t".into(),
                    partition: p.partition,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    isr,
                },
            )
            .unwrap();
        }
    }

    fn per_broker(s: &ControllerState, leaders: bool) -> BTreeMap<i32, usize> {
        let mut n: BTreeMap<i32, usize> = s.metadata.brokers.keys().map(|b| (*b, 0)).collect();
        for (_, p) in s.metadata.partitions() {
            if leaders {
                *n.entry(p.leader).or_default() += 1;
            } else {
                for r in &p.replicas {
                    *n.entry(*r).or_default() += 1;
                }
            }
        }
        n
    }

    fn within_one(n: &BTreeMap<i32, usize>) -> bool {
        n.values().max().unwrap_or(&0) - n.values().min().unwrap_or(&0) <= 1
    }

    /// Runs the rebalance to its end, checking every step; returns the outcomes.
    fn run(s: &mut ControllerState, members: &[i32], max_in_flight: usize) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for _ in 0..100 {
            let o = advance(s, members, true, true, max_in_flight);
            for (_, p) in s.metadata.partitions() {
                assert_eq!(p.target_replicas().len(), 3, "RF kept: {p:?}");
                assert!(p.isr.len() >= 3, "an ISR shrank during a move: {p:?}");
            }
            let in_flight = s
                .metadata
                .partitions()
                .filter(|(_, p)| reassigning(p))
                .count();
            assert!(in_flight <= max_in_flight, "{in_flight} moves at once");
            let finished = matches!(o, Outcome::Finished { .. });
            outcomes.push(o);
            if finished {
                return outcomes;
            }
            // A restarted controller reads the state back from its store.
            *s = serde_json::from_value(serde_json::to_value(&*s).unwrap()).unwrap();
            catch_up(s);
        }
        panic!("the rebalance did not finish: {outcomes:?}");
    }

    #[test]
    fn scale_up_moves_replicas_and_leaders_onto_the_new_brokers() {
        let mut s = cluster(5, 12);
        let outcomes = run(&mut s, &[0, 1, 2, 3, 4], 2);
        let Outcome::Started(first) = &outcomes[0] else {
            panic!("{outcomes:?}");
        };
        assert_eq!(first.onto, vec![3, 4]);
        assert_eq!(first.in_flight, 2);
        let Some(Outcome::Finished { progress, .. }) = outcomes.last() else {
            unreachable!()
        };
        assert_eq!(progress.done, progress.total);
        assert_eq!(progress.abandoned, 0);
        let (replicas, leaders) = (per_broker(&s, false), per_broker(&s, true));
        assert!(within_one(&replicas), "{replicas:?}");
        assert!(within_one(&leaders), "{leaders:?}");
        assert!(leaders[&3] >= 2 && leaders[&4] >= 2, "{leaders:?}");
        assert!(s.rebalance.is_none());
        assert_eq!(s.balanced_brokers, vec![0, 1, 2, 3, 4]);
        for (_, p) in s.metadata.partitions() {
            assert_eq!(p.leader, p.replicas[0], "preferred leaders elected");
        }
        let v = s.metadata.version;
        assert_eq!(
            advance(&mut s, &[0, 1, 2, 3, 4], true, true, 2),
            Outcome::Nothing
        );
        assert_eq!(s.metadata.version, v, "nothing more to commit");
    }

    #[test]
    fn progress_reads_as_a_sentence() {
        let mut s = cluster(5, 12);
        advance(&mut s, &[0, 1, 2, 3, 4], true, true, 2);
        let p = progress(&s).unwrap();
        assert_eq!(
            p.to_string(),
            format!(
                "rebalancing onto brokers [3, 4]: {} of {} partition moves done",
                p.done, p.total
            )
        );
    }

    #[test]
    fn nothing_starts_while_other_moves_are_under_way_or_brokers_are_missing() {
        let mut s = cluster(5, 6);
        let v = s.metadata.version;
        assert_eq!(
            advance(&mut s, &[0, 1, 2, 3, 4], false, true, 2),
            Outcome::Nothing
        );
        assert_eq!(
            advance(&mut s, &[0, 1, 2, 3, 4, 5], true, true, 2),
            Outcome::Nothing
        );
        assert_eq!(
            advance(&mut s, &[0, 1, 2, 3, 4], true, false, 2),
            Outcome::Nothing
        );
        assert_eq!(s.metadata.version, v);
        // Started, then a roll begins: the moves in flight finish, no new one starts.
        assert!(matches!(
            advance(&mut s, &[0, 1, 2, 3, 4], true, true, 1),
            Outcome::Started(_)
        ));
        catch_up(&mut s);
        let Outcome::Progressed(p) = advance(&mut s, &[0, 1, 2, 3, 4], false, true, 1) else {
            panic!()
        };
        assert_eq!((p.done, p.in_flight), (1, 0));
        assert_eq!(
            advance(&mut s, &[0, 1, 2, 3, 4], false, true, 1),
            Outcome::Nothing
        );
    }

    #[test]
    fn a_balanced_cluster_plans_nothing_and_a_scale_down_is_recorded() {
        let mut s = ControllerState::new("c".into());
        for id in 0..5 {
            decisions::register(&mut s, reg(id, "a"), 0);
        }
        decisions::create_topic(&mut s, "t", 10, 3, BTreeMap::new(), uuid::Uuid::nil()).unwrap();
        assert!(matches!(
            advance(&mut s, &[0, 1, 2, 3, 4], true, true, 2),
            Outcome::Balanced { .. }
        ));
        assert!(s.rebalance.is_none());
        // Scaled down to 3 (decommission moved the replicas): recorded, nothing planned.
        assert_eq!(
            advance(&mut s, &[0, 1, 2], false, true, 2),
            Outcome::Balanced {
                brokers: vec![0, 1, 2]
            }
        );
    }

    #[test]
    fn a_scale_down_cancels_and_changed_partitions_are_abandoned() {
        let mut s = cluster(5, 12);
        advance(&mut s, &[0, 1, 2, 3, 4], true, true, 2);
        assert!(matches!(
            advance(&mut s, &[0, 1, 2, 3], true, true, 2),
            Outcome::Cancelled { left, .. } if left == vec![4]
        ));
        assert!(s.rebalance.is_none());

        let mut s = cluster(5, 12);
        advance(&mut s, &[0, 1, 2, 3, 4], true, true, 1);
        decisions::delete_topic(&mut s, "t").unwrap();
        let Outcome::Finished { progress, .. } = advance(&mut s, &[0, 1, 2, 3, 4], true, true, 1)
        else {
            panic!()
        };
        assert_eq!(progress.abandoned, progress.total);
    }

    #[test]
    fn an_out_of_sync_partition_waits_then_moves() {
        // 6 replicas on brokers 0-2, broker 3 new: one replica moves.
        let mut s = cluster(4, 2);
        let shrink = |s: &mut ControllerState, grow: bool| {
            for i in 0..2 {
                let p = s.metadata.partition("t", i).unwrap().clone();
                let isr = if grow {
                    p.replicas.clone()
                } else {
                    vec![p.leader]
                };
                decisions::alter_partition(
                    s,
                    &AlterPartition {
                        broker: p.leader,
                        broker_epoch: s.metadata.brokers[&p.leader].epoch,
                        topic: "t".into(),
                        partition: i,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                        isr,
                    },
                )
                .unwrap();
            }
        };
        shrink(&mut s, false);
        let Outcome::Started(p) = advance(&mut s, &[0, 1, 2, 3], true, true, 2) else {
            panic!()
        };
        assert_eq!(
            (p.total, p.in_flight),
            (1, 0),
            "an ISR short of its replicas waits"
        );
        assert_eq!(
            advance(&mut s, &[0, 1, 2, 3], true, true, 2),
            Outcome::Nothing
        );
        shrink(&mut s, true);
        let Outcome::Progressed(p) = advance(&mut s, &[0, 1, 2, 3], true, true, 2) else {
            panic!()
        };
        assert_eq!(p.in_flight, 1);
        // The explicit start reports the rebalance under way rather than planning another.
        assert_eq!(start(&mut s, &[0, 1, 2, 3], 2), Outcome::Progressed(p));
    }
}
