//! Rebalance planning, pure: from the replicas partitions hold now and the brokers that should
//! share them, the replica lists they should hold instead. Replica counts per broker end within
//! 1 of each other and preferred leaders (first replicas) within 1, where racks allow; no
//! partition ever gets fewer distinct racks than it has; and as few replicas as possible move
//! (each move copies a whole partition over the network, a reordering costs nothing).
//!
//! Replicas: while some broker holds at least 2 more than another, one replica moves from the
//! fullest broker that can give to the emptiest that can take. Without racks that pair always
//! has a partition to move (the fuller broker holds more partitions than the emptier, so one
//! it holds lacks the emptier), each move is forced by the counts, and the number of moves is
//! the lower bound `minimal_moves`. Leaders: preferred leadership is handed along shortest
//! chains (a leads p which b also holds, b leads q which c holds, ...) from a broker leading at
//! least 2 more than another, as in an augmenting path, so only the partitions on the chain
//! change order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::placement::Candidate;

/// One partition's replicas (the first is the preferred leader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    /// False for a partition that must not change now (a reassignment in flight): it counts as
    /// load only. A partition holding a broker outside the candidates, or a broker twice, is
    /// left alone too.
    pub movable: bool,
}

/// The partitions whose replica list should change, with their new lists.
pub fn plan(current: &[Assignment], brokers: &[Candidate]) -> Vec<Assignment> {
    let racks: BTreeMap<i32, Option<&str>> =
        brokers.iter().map(|c| (c.id, c.rack.as_deref())).collect();
    if racks.is_empty() {
        return Vec::new();
    }
    let mut w = Work {
        sets: current.iter().map(|a| a.replicas.clone()).collect(),
        movable: current
            .iter()
            .map(|a| {
                a.movable
                    && !a.replicas.is_empty()
                    && distinct(&a.replicas)
                    && a.replicas.iter().all(|r| racks.contains_key(r))
            })
            .collect(),
        topics: current.iter().map(|a| a.topic.as_str()).collect(),
        racks,
    };
    w.balance_replicas();
    w.balance_leaders();
    current
        .iter()
        .zip(w.sets)
        .filter(|(a, set)| a.replicas != *set)
        .map(|(a, replicas)| Assignment {
            topic: a.topic.clone(),
            partition: a.partition,
            replicas,
            movable: true,
        })
        .collect()
}

/// Replicas on brokers not yet holding them: what a plan costs in copies.
pub fn replica_moves(before: &[i32], after: &[i32]) -> usize {
    after.iter().filter(|r| !before.contains(r)).count()
}

/// The fewest replica moves that make `counts` (replicas per broker) differ by at most 1: with
/// `R` replicas over `N` brokers, at most `R mod N` brokers keep `R/N + 1`, the rest `R/N`.
pub fn minimal_moves(counts: &[usize]) -> usize {
    let n = counts.len();
    if n == 0 {
        return 0;
    }
    let total: usize = counts.iter().sum();
    let (q, k) = (total / n, total % n);
    if k == 0 {
        return counts.iter().map(|c| c.saturating_sub(q)).sum();
    }
    let over: usize = counts.iter().map(|c| c.saturating_sub(q + 1)).sum();
    let at_ceiling = counts.iter().filter(|c| **c > q).count();
    over + at_ceiling.saturating_sub(k)
}

/// Distinct racks of a replica set; a broker without a rack counts as its own.
pub fn rack_spread(set: &[i32], racks: &BTreeMap<i32, Option<&str>>) -> usize {
    let named: BTreeSet<&str> = set
        .iter()
        .filter_map(|r| racks.get(r).copied().flatten())
        .collect();
    named.len()
        + set
            .iter()
            .filter(|r| racks.get(r).copied().flatten().is_none())
            .count()
}

fn distinct(set: &[i32]) -> bool {
    set.iter().collect::<BTreeSet<_>>().len() == set.len()
}

struct Work<'a> {
    sets: Vec<Vec<i32>>,
    movable: Vec<bool>,
    topics: Vec<&'a str>,
    racks: BTreeMap<i32, Option<&'a str>>,
}

impl Work<'_> {
    /// Replicas per candidate broker.
    fn replica_counts(&self) -> BTreeMap<i32, usize> {
        let mut counts: BTreeMap<i32, usize> = self.racks.keys().map(|b| (*b, 0)).collect();
        for r in self.sets.iter().flatten() {
            if let Some(c) = counts.get_mut(r) {
                *c += 1;
            }
        }
        counts
    }

    fn balance_replicas(&mut self) {
        let mut counts = self.replica_counts();
        let mut leads = self.leader_counts();
        // (topic, broker) -> replicas, so each topic spreads too.
        let mut per_topic: BTreeMap<(&str, i32), usize> = BTreeMap::new();
        for (set, topic) in self.sets.iter().zip(&self.topics) {
            for r in set {
                *per_topic.entry((*topic, *r)).or_default() += 1;
            }
        }
        loop {
            let mut by_load: Vec<(usize, i32)> = counts.iter().map(|(b, c)| (*c, *b)).collect();
            by_load.sort_unstable();
            let found = by_load.iter().rev().find_map(|&(from_load, from)| {
                by_load
                    .iter()
                    .take_while(|(to_load, _)| to_load + 2 <= from_load)
                    .find_map(|&(_, to)| {
                        self.partition_to_move(from, to, &per_topic, &leads)
                            .map(|i| (i, from, to))
                    })
            });
            let Some((i, from, to)) = found else {
                return;
            };
            if let Some(slot) = self.sets[i].iter().position(|r| *r == from) {
                // The newcomer takes the leaver's slot; leaders are balanced afterwards.
                self.sets[i][slot] = to;
                if slot == 0 {
                    *leads.entry(from).or_default() -= 1;
                    *leads.entry(to).or_default() += 1;
                }
                *counts.entry(from).or_default() -= 1;
                *counts.entry(to).or_default() += 1;
                let topic = self.topics[i];
                *per_topic.entry((topic, from)).or_default() -= 1;
                *per_topic.entry((topic, to)).or_default() += 1;
            }
        }
    }

    /// The partition whose replica on `from` should move to `to`: one that may move and loses
    /// no rack spread; preferring one that gains spread, then one whose preferred leadership
    /// should move along (or else where `from` is a follower), then one whose topic has the
    /// fewest replicas on `to`.
    fn partition_to_move(
        &self,
        from: i32,
        to: i32,
        per_topic: &BTreeMap<(&str, i32), usize>,
        leads: &BTreeMap<i32, usize>,
    ) -> Option<usize> {
        let lead = |b: i32| leads.get(&b).copied().unwrap_or(0);
        // Moving a leader replica moves its preferred leadership too: good while `from` leads
        // at least 2 more than `to` (a partition with one replica has no other way to move it).
        let leadership = |set: &[i32]| match set.first() {
            Some(l) if *l == from && lead(from) >= lead(to) + 2 => 0,
            Some(l) if *l == from => 2,
            _ => 1,
        };
        self.sets
            .iter()
            .enumerate()
            .filter(|(i, set)| self.movable[*i] && set.contains(&from) && !set.contains(&to))
            .filter_map(|(i, set)| {
                let before = rack_spread(set, &self.racks);
                let moved: Vec<i32> = set
                    .iter()
                    .map(|r| if *r == from { to } else { *r })
                    .collect();
                let after = rack_spread(&moved, &self.racks);
                (after >= before).then(|| {
                    let on_to = per_topic.get(&(self.topics[i], to)).copied().unwrap_or(0);
                    ((after == before, leadership(set), on_to, i), i)
                })
            })
            .min()
            .map(|(_, i)| i)
    }

    /// Preferred leaderships per candidate broker.
    fn leader_counts(&self) -> BTreeMap<i32, usize> {
        let mut leads: BTreeMap<i32, usize> = self.racks.keys().map(|b| (*b, 0)).collect();
        for set in &self.sets {
            if let Some(c) = set.first().and_then(|l| leads.get_mut(l)) {
                *c += 1;
            }
        }
        leads
    }

    fn balance_leaders(&mut self) {
        let mut leads = self.leader_counts();
        loop {
            let mut by_load: Vec<(usize, i32)> = leads.iter().map(|(b, c)| (*c, *b)).collect();
            by_load.sort_unstable_by(|a, b| b.cmp(a));
            let Some((from, chain)) = by_load
                .iter()
                .find_map(|&(_, from)| self.leader_chain(from, &leads).map(|c| (from, c)))
            else {
                return;
            };
            for &(i, to) in &chain {
                if let Some(slot) = self.sets[i].iter().position(|r| *r == to) {
                    self.sets[i].swap(0, slot);
                }
            }
            if let Some(&(_, last)) = chain.last() {
                *leads.entry(from).or_default() -= 1;
                *leads.entry(last).or_default() += 1;
            }
        }
    }

    /// The shortest chain handing one preferred leadership from `from` to a broker leading at
    /// least 2 fewer: (partition, its new first replica) per step, in order.
    fn leader_chain(&self, from: i32, leads: &BTreeMap<i32, usize>) -> Option<Vec<(usize, i32)>> {
        let limit = leads.get(&from)?.checked_sub(2)?;
        let mut led: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (i, set) in self.sets.iter().enumerate() {
            if self.movable[i]
                && let Some(l) = set.first()
            {
                led.entry(*l).or_default().push(i);
            }
        }
        let mut came_from: BTreeMap<i32, (i32, usize)> = BTreeMap::new();
        let mut queue = VecDeque::from([from]);
        while let Some(a) = queue.pop_front() {
            for &i in led.get(&a).into_iter().flatten() {
                for &b in &self.sets[i][1..] {
                    if b == from || came_from.contains_key(&b) || !leads.contains_key(&b) {
                        continue;
                    }
                    came_from.insert(b, (a, i));
                    if leads.get(&b).is_some_and(|n| *n <= limit) {
                        let mut chain = vec![(i, b)];
                        let mut at = a;
                        while at != from {
                            let (prev, p) = came_from[&at];
                            chain.push((p, at));
                            at = prev;
                        }
                        chain.reverse();
                        return Some(chain);
                    }
                    queue.push_back(b);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::placement::{self, Load};
    use proptest::prelude::*;

    fn brokers(racks: &[&str]) -> Vec<Candidate> {
        racks
            .iter()
            .enumerate()
            .map(|(i, r)| Candidate {
                id: i as i32,
                rack: (!r.is_empty()).then(|| r.to_string()),
            })
            .collect()
    }

    /// A topic placed by the controller's own placement over `on`.
    fn placed(topic: &str, on: &[Candidate], partitions: usize, rf: usize) -> Vec<Assignment> {
        let mut load = Load::default();
        placement::assign(on, partitions, rf, &mut load)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(i, replicas)| Assignment {
                topic: topic.into(),
                partition: i as i32,
                replicas,
                movable: true,
            })
            .collect()
    }

    fn apply(current: &[Assignment], changes: &[Assignment]) -> Vec<Assignment> {
        current
            .iter()
            .map(|a| {
                changes
                    .iter()
                    .find(|c| c.topic == a.topic && c.partition == a.partition)
                    .cloned()
                    .unwrap_or_else(|| a.clone())
            })
            .collect()
    }

    fn counts(sets: &[Assignment], brokers: &[Candidate], leaders: bool) -> Vec<usize> {
        brokers
            .iter()
            .map(|b| {
                sets.iter()
                    .filter(|a| {
                        if leaders {
                            a.replicas.first() == Some(&b.id)
                        } else {
                            a.replicas.contains(&b.id)
                        }
                    })
                    .count()
            })
            .collect()
    }

    fn spread(c: &[usize]) -> usize {
        c.iter().max().unwrap_or(&0) - c.iter().min().unwrap_or(&0)
    }

    fn total_moves(before: &[Assignment], after: &[Assignment]) -> usize {
        before
            .iter()
            .zip(after)
            .map(|(a, b)| replica_moves(&a.replicas, &b.replicas))
            .sum()
    }

    fn rack_map(b: &[Candidate]) -> BTreeMap<i32, Option<&str>> {
        b.iter().map(|c| (c.id, c.rack.as_deref())).collect()
    }

    #[test]
    fn scale_up_from_three_to_five_brokers() {
        let all = brokers(&["", "", "", "", ""]);
        let before = placed("t", &all[..3], 12, 3);
        let changes = plan(&before, &all);
        let after = apply(&before, &changes);
        let replicas = counts(&after, &all, false);
        let leaders = counts(&after, &all, true);
        assert!(spread(&replicas) <= 1, "{replicas:?}");
        assert!(spread(&leaders) <= 1, "{leaders:?}");
        // 36 replicas over 5 brokers: 7 or 8 each, so the new brokers take 14 or 15.
        assert_eq!(
            total_moves(&before, &after),
            minimal_moves(&counts(&before, &all, false))
        );
        assert!(replicas[3] >= 7 && replicas[4] >= 7, "{replicas:?}");
        assert!(leaders[3] >= 2 && leaders[4] >= 2, "{leaders:?}");
        assert!(
            plan(&after, &all).is_empty(),
            "a balanced cluster plans nothing"
        );
    }

    #[test]
    fn a_balanced_cluster_plans_nothing() {
        let all = brokers(&["a", "b", "c", "a", "b", "c"]);
        let mut current = placed("x", &all, 12, 3);
        current.extend(placed("y", &all, 7, 2));
        assert!(plan(&current, &all).is_empty());
        assert!(plan(&[], &all).is_empty());
        assert!(plan(&current, &[]).is_empty());
    }

    #[test]
    fn racks_stay_spread_when_brokers_join_each_rack() {
        let old = brokers(&["a", "b", "c"]);
        let all = brokers(&["a", "b", "c", "a", "b", "c"]);
        let before = placed("t", &old, 10, 3);
        let after = apply(&before, &plan(&before, &all));
        let racks = rack_map(&all);
        for a in &after {
            assert_eq!(rack_spread(&a.replicas, &racks), 3, "{a:?}");
        }
        assert!(spread(&counts(&after, &all, false)) <= 1);
        assert!(spread(&counts(&after, &all, true)) <= 1);
    }

    #[test]
    fn a_lone_rack_keeps_its_replicas_rather_than_doubling_a_rack() {
        // Rack b has one broker: every RF-2 partition keeps its replica there.
        let old = brokers(&["a", "b"]);
        let all = brokers(&["a", "b", "a", "a"]);
        let before = placed("t", &old, 6, 2);
        let after = apply(&before, &plan(&before, &all));
        let racks = rack_map(&all);
        for a in &after {
            assert_eq!(rack_spread(&a.replicas, &racks), 2, "{a:?}");
        }
        assert_eq!(counts(&after, &all, false)[1], 6);
    }

    #[test]
    fn partitions_that_may_not_move_count_but_stay() {
        let all = brokers(&["", "", "", ""]);
        let mut before = placed("t", &all[..2], 4, 2);
        before[0].movable = false;
        before[1].replicas = vec![0, 9]; // a broker outside the candidates
        let changes = plan(&before, &all);
        assert!(changes.iter().all(|c| c.partition >= 2), "{changes:?}");
    }

    #[test]
    fn minimal_moves_bound() {
        assert_eq!(minimal_moves(&[3, 3, 0]), 2);
        assert_eq!(minimal_moves(&[3, 3, 1, 0]), 2);
        assert_eq!(minimal_moves(&[2, 2, 2, 0]), 1);
        assert_eq!(minimal_moves(&[1, 1, 1]), 0);
        assert_eq!(minimal_moves(&[]), 0);
    }

    /// Brokers (some new and empty, racks optional) and partitions placed on a random subset.
    fn case() -> impl Strategy<Value = (Vec<Candidate>, Vec<Assignment>)> {
        (1usize..7, 0usize..4, 0usize..3).prop_flat_map(|(old, new, racks)| {
            let n = old + new;
            let parts = proptest::collection::vec(
                (1..=old.min(3)).prop_flat_map(move |rf| {
                    (
                        proptest::sample::subsequence((0..n as i32).collect::<Vec<_>>(), rf),
                        any::<bool>(),
                        0..3u8,
                        Just(old),
                    )
                }),
                0..24,
            );
            (Just(n), Just(racks), parts, any::<u64>()).prop_map(|(n, racks, parts, shuffle)| {
                let brokers: Vec<Candidate> = (0..n as i32)
                    .map(|id| Candidate {
                        id,
                        rack: (racks > 0).then(|| format!("r{}", id as usize % (racks + 1))),
                    })
                    .collect();
                let assignments = parts
                    .into_iter()
                    .enumerate()
                    .map(|(i, (set, on_old, topic, old))| {
                        // Mostly on the old brokers (a scale-up), sometimes anywhere.
                        let mut replicas: Vec<i32> = if on_old {
                            set.iter().map(|r| r % old as i32).collect()
                        } else {
                            set
                        };
                        replicas.sort_unstable();
                        replicas.dedup();
                        let rot = (shuffle as usize + i) % replicas.len();
                        replicas.rotate_left(rot);
                        Assignment {
                            topic: format!("t{topic}"),
                            partition: i as i32,
                            replicas,
                            movable: (shuffle >> (i % 64)) & 7 != 0,
                        }
                    })
                    .collect();
                (brokers, assignments)
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn plans_are_safe_minimal_and_stable((all, before) in case()) {
            let changes = plan(&before, &all);
            let after = apply(&before, &changes);
            let racks = rack_map(&all);
            let no_racks = all.iter().all(|c| c.rack.is_none());
            for (b, a) in before.iter().zip(&after) {
                prop_assert_eq!(b.replicas.len(), a.replicas.len(), "RF kept");
                prop_assert!(distinct(&a.replicas), "{:?}", a);
                if !b.movable || b.replicas.iter().any(|r| !racks.contains_key(r)) {
                    prop_assert_eq!(&b.replicas, &a.replicas, "an unmovable partition changed");
                }
                prop_assert!(rack_spread(&a.replicas, &racks) >= rack_spread(&b.replicas, &racks),
                    "rack spread lost: {:?} -> {:?}", b, a);
            }
            for c in &changes {
                prop_assert!(c.replicas.iter().all(|r| racks.contains_key(r)));
            }
            let all_movable = before.iter().all(|a| a.movable);
            if no_racks && all_movable {
                let replicas = counts(&after, &all, false);
                prop_assert!(spread(&replicas) <= 1, "replicas {:?}", replicas);
                prop_assert_eq!(
                    total_moves(&before, &after),
                    minimal_moves(&counts(&before, &all, false)),
                    "not minimal"
                );
                // Mixed replication factors can make the two goals conflict (two one-replica
                // partitions on one broker: balanced replicas, unbalanced leaders); then the
                // fewest copies win. With one factor, leaders always balance too.
                let rfs: BTreeSet<usize> = before.iter().map(|a| a.replicas.len()).collect();
                if rfs.len() <= 1 {
                    let leaders = counts(&after, &all, true);
                    prop_assert!(spread(&leaders) <= 1, "leaders {:?} in {:?}", leaders, after);
                }
            }
            // Stable: the plan's result plans nothing more.
            prop_assert!(plan(&after, &all).is_empty(), "replanned: {:?}", plan(&after, &all));
        }

        /// The common case: topics placed by the controller on the old brokers, then brokers
        /// join (with racks, one more per rack each time).
        #[test]
        fn scale_ups_balance_replicas_and_leaders(
            old in 1usize..7,
            new in 1usize..5,
            rf in 1usize..4,
            racks in 0usize..4,
            topics in proptest::collection::vec(1usize..20, 1..4),
        ) {
            let rf = rf.min(old);
            let all: Vec<Candidate> = (0..(old + new) as i32)
                .map(|id| Candidate {
                    id,
                    rack: (racks > 0).then(|| format!("r{}", id as usize % racks)),
                })
                .collect();
            let mut load = Load::default();
            let mut before = Vec::new();
            for (t, partitions) in topics.iter().enumerate() {
                let sets = placement::assign(&all[..old], *partitions, rf, &mut load).unwrap();
                before.extend(sets.into_iter().enumerate().map(|(i, replicas)| Assignment {
                    topic: format!("t{t}"),
                    partition: i as i32,
                    replicas,
                    movable: true,
                }));
            }
            let after = apply(&before, &plan(&before, &all));
            let map = rack_map(&all);
            for (b, a) in before.iter().zip(&after) {
                prop_assert_eq!(b.replicas.len(), a.replicas.len());
                prop_assert!(distinct(&a.replicas));
                prop_assert!(rack_spread(&a.replicas, &map) >= rack_spread(&b.replicas, &map));
            }
            // Racks of equal size (every broker id taken mod the rack count) leave room to
            // balance; a lopsided rack may not.
            if racks <= 1 || (old + new) % racks == 0 && old % racks == 0 {
                let replicas = counts(&after, &all, false);
                prop_assert!(spread(&replicas) <= 1, "replicas {:?}", replicas);
                let leaders = counts(&after, &all, true);
                prop_assert!(spread(&leaders) <= 1, "leaders {:?}", leaders);
            }
            if racks <= 1 {
                prop_assert_eq!(
                    total_moves(&before, &after),
                    minimal_moves(&counts(&before, &all, false))
                );
            }
            prop_assert!(plan(&after, &all).is_empty());
        }
    }
}
