//! Server-side assignors of the consumer group protocol (KIP-848), pure: given each member's
//! subscribed topics and its current target, and each topic's partition count, the next
//! target assignment.
//!
//! - `uniform` (the default, as in Kafka): every partition of a subscribed topic goes to one
//!   subscribed member. With identical subscriptions (the common case) each member gets
//!   `partitions / members` or one more and keeps what it had up to that, in linear time;
//!   otherwise members keep what they had, the rest go to the least loaded subscriber, and
//!   partitions move from a member to a subscriber holding two fewer until none can.
//! - `range`: per topic, its subscribed members in member id order get contiguous ranges,
//!   the first `partitions % members` of them one more (co-partitioned topics line up).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use uuid::Uuid;

/// Partitions by topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

pub const UNIFORM: &str = "uniform";
pub const RANGE: &str = "range";
/// The assignors this broker runs, the default first (Kafka's group.consumer.assignors).
pub const ASSIGNORS: &[&str] = &[UNIFORM, RANGE];

/// One member as an assignor sees it.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub subscribed: BTreeSet<Uuid>,
    /// Its current target, which `uniform` keeps where it can.
    pub current: Assignment,
}

/// The new target of every member under the assignor `name` (one of [`ASSIGNORS`]; anything
/// else is `uniform`). `partitions` is each topic's partition count; a topic missing from it
/// does not exist and is assigned to nobody.
pub fn assign(
    name: &str,
    members: &BTreeMap<String, Spec>,
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    if name == RANGE {
        range(members, partitions)
    } else {
        uniform(members, partitions)
    }
}

fn subscribers(members: &BTreeMap<String, Spec>, topic: &Uuid) -> Vec<String> {
    members
        .iter()
        .filter(|(_, s)| s.subscribed.contains(topic))
        .map(|(id, _)| id.clone())
        .collect()
}

fn range(
    members: &BTreeMap<String, Spec>,
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for (topic, &count) in partitions {
        let subs = subscribers(members, topic);
        if subs.is_empty() || count <= 0 {
            continue;
        }
        let n = subs.len() as i32;
        let (each, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in subs.iter().enumerate() {
            let take = each + i32::from((i as i32) < extra);
            if take > 0 {
                let set: BTreeSet<i32> = (next..next + take).collect();
                out.entry(m.clone()).or_default().insert(*topic, set);
            }
            next += take;
        }
    }
    out
}

fn uniform(
    members: &BTreeMap<String, Spec>,
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    // Members and topics by index, so the work below is on integers.
    let specs: Vec<&Spec> = members.values().collect();
    let n = specs.len();
    if n == 0 {
        return BTreeMap::new();
    }
    let topics: Vec<(Uuid, i32)> = partitions.iter().map(|(t, c)| (*t, (*c).max(0))).collect();
    let index: HashMap<Uuid, usize> = topics.iter().enumerate().map(|(i, t)| (t.0, i)).collect();
    let subs: Vec<Vec<usize>> = topics
        .iter()
        .map(|(t, _)| {
            (0..n)
                .filter(|&m| specs[m].subscribed.contains(t))
                .collect()
        })
        .collect();
    // Each member's still valid current partitions, in order; first claim wins.
    let mut owned: HashSet<(usize, i32)> = HashSet::new();
    let mut current: Vec<Vec<(usize, i32)>> = vec![Vec::new(); n];
    for (m, spec) in specs.iter().enumerate() {
        for (t, ps) in &spec.current {
            let Some(&ti) = index.get(t) else { continue };
            if !spec.subscribed.contains(t) {
                continue;
            }
            for &p in ps {
                if (0..topics[ti].1).contains(&p) && owned.insert((ti, p)) {
                    current[m].push((ti, p));
                }
            }
        }
    }
    let homogeneous = subs.iter().all(|s| s.is_empty() || s.len() == n);
    let held = if homogeneous {
        uniform_homogeneous(&topics, &subs, current)
    } else {
        uniform_heterogeneous(&topics, &subs, current)
    };
    members
        .keys()
        .zip(held)
        .map(|(m, tps)| {
            let mut a = Assignment::new();
            for (t, p) in tps {
                a.entry(topics[t].0).or_default().insert(p);
            }
            (m.clone(), a)
        })
        .collect()
}

/// Identical subscriptions (Kafka's quota approach): every member gets `total / n`, and
/// `total % n` of them one more; members keep what they had up to that.
fn uniform_homogeneous(
    topics: &[(Uuid, i32)],
    subs: &[Vec<usize>],
    current: Vec<Vec<(usize, i32)>>,
) -> Vec<Vec<(usize, i32)>> {
    let n = current.len();
    let all: Vec<(usize, i32)> = topics
        .iter()
        .enumerate()
        .filter(|(t, _)| !subs[*t].is_empty())
        .flat_map(|(t, (_, c))| (0..*c).map(move |p| (t, p)))
        .collect();
    let (min, mut extra) = (all.len() / n, all.len() % n);
    let mut held: Vec<Vec<(usize, i32)>> = Vec::with_capacity(n);
    let mut taken: HashSet<(usize, i32)> = HashSet::new();
    for mut mine in current {
        let quota = if mine.len() > min && extra > 0 {
            extra -= 1;
            min + 1
        } else {
            min
        };
        mine.truncate(quota);
        taken.extend(mine.iter().copied());
        held.push(mine);
    }
    let mut free = all.into_iter().filter(|tp| !taken.contains(tp));
    for mine in held.iter_mut() {
        while mine.len() < min {
            match free.next() {
                Some(tp) => mine.push(tp),
                None => break,
            }
        }
    }
    for mine in held.iter_mut() {
        if mine.len() == min {
            match free.next() {
                Some(tp) => mine.push(tp),
                None => break,
            }
        }
    }
    held
}

/// Different subscriptions: best effort. Members keep what they had, every other partition
/// goes to its least loaded subscriber (the most constrained partitions first), then
/// partitions move from a member to a subscriber holding at least two fewer until none can.
fn uniform_heterogeneous(
    topics: &[(Uuid, i32)],
    subs: &[Vec<usize>],
    current: Vec<Vec<(usize, i32)>>,
) -> Vec<Vec<(usize, i32)>> {
    let mut held: Vec<BTreeSet<(usize, i32)>> = current
        .into_iter()
        .map(|c| c.into_iter().collect())
        .collect();
    let taken: HashSet<(usize, i32)> = held.iter().flatten().copied().collect();
    let mut free: Vec<(usize, i32)> = topics
        .iter()
        .enumerate()
        .filter(|(t, _)| !subs[*t].is_empty())
        .flat_map(|(t, (_, c))| (0..*c).map(move |p| (t, p)))
        .filter(|tp| !taken.contains(tp))
        .collect();
    free.sort_by_key(|&(t, p)| (subs[t].len(), t, p));
    for (t, p) in free {
        if let Some(&to) = subs[t].iter().min_by_key(|&&m| (held[m].len(), m)) {
            held[to].insert((t, p));
        }
    }
    // Each move lowers the sum of squared counts, so this ends.
    loop {
        let mut moved = false;
        let mut order: Vec<usize> = (0..held.len()).collect();
        order.sort_by_key(|&m| std::cmp::Reverse(held[m].len()));
        for from in order {
            let mine: BTreeSet<usize> = held[from].iter().map(|(t, _)| *t).collect();
            for t in mine {
                let Some(&to) = subs[t]
                    .iter()
                    .filter(|&&m| m != from)
                    .min_by_key(|&&m| (held[m].len(), m))
                else {
                    continue;
                };
                if held[to].len() + 2 <= held[from].len() {
                    // The highest partition of the topic moves, so low ones stay put.
                    let Some(&tp) = held[from].range((t, 0)..=(t, i32::MAX)).next_back() else {
                        continue;
                    };
                    held[from].remove(&tp);
                    held[to].insert(tp);
                    moved = true;
                }
            }
        }
        if !moved {
            break;
        }
    }
    held.into_iter().map(|h| h.into_iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topic(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn spec(topics: &[u8], current: &[(u8, &[i32])]) -> Spec {
        Spec {
            subscribed: topics.iter().map(|t| topic(*t)).collect(),
            current: current
                .iter()
                .map(|(t, ps)| (topic(*t), ps.iter().copied().collect()))
                .collect(),
        }
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    #[test]
    fn range_gives_contiguous_ranges_extra_to_the_first_members() {
        let members = BTreeMap::from([
            ("b".to_string(), spec(&[1, 2], &[])),
            ("a".to_string(), spec(&[1, 2], &[])),
            ("c".to_string(), spec(&[1], &[])),
        ]);
        let parts = BTreeMap::from([(topic(1), 7), (topic(2), 3)]);
        let out = assign(RANGE, &members, &parts);
        assert_eq!(out["a"][&topic(1)], BTreeSet::from([0, 1, 2]));
        assert_eq!(out["b"][&topic(1)], BTreeSet::from([3, 4]));
        assert_eq!(out["c"][&topic(1)], BTreeSet::from([5, 6]));
        assert_eq!(out["a"][&topic(2)], BTreeSet::from([0, 1]));
        assert_eq!(out["b"][&topic(2)], BTreeSet::from([2]));
        assert!(!out["c"].contains_key(&topic(2)));
    }

    #[test]
    fn uniform_keeps_partitions_and_moves_only_to_balance() {
        // Two members held 3 partitions each; a third joins and takes one from each.
        let members = BTreeMap::from([
            ("a".to_string(), spec(&[1], &[(1, &[0, 1, 2])])),
            ("b".to_string(), spec(&[1], &[(1, &[3, 4, 5])])),
            ("c".to_string(), spec(&[1], &[])),
        ]);
        let parts = BTreeMap::from([(topic(1), 6)]);
        let out = assign(UNIFORM, &members, &parts);
        for m in ["a", "b", "c"] {
            assert_eq!(count(&out[m]), 2, "{m}: {out:?}");
        }
        assert!(out["a"][&topic(1)].is_subset(&BTreeSet::from([0, 1, 2])));
        assert!(out["b"][&topic(1)].is_subset(&BTreeSet::from([3, 4, 5])));
    }

    #[test]
    fn unknown_assignor_names_fall_back_to_uniform_and_missing_topics_go_to_nobody() {
        let members = BTreeMap::from([("a".to_string(), spec(&[1, 9], &[(9, &[0])]))]);
        let parts = BTreeMap::from([(topic(1), 2)]);
        let out = assign("other", &members, &parts);
        assert_eq!(
            out["a"],
            BTreeMap::from([(topic(1), BTreeSet::from([0, 1]))])
        );
    }

    fn arb_case() -> impl Strategy<Value = (BTreeMap<String, Spec>, BTreeMap<Uuid, i32>)> {
        let parts = prop::collection::vec(0i32..12, 1..5);
        let members = prop::collection::vec(
            (
                prop::collection::btree_set(0u8..5, 0..5),
                prop::collection::vec((0u8..5, 0i32..14), 0..10),
            ),
            0..7,
        );
        (parts, members).prop_map(|(parts, members)| {
            let parts: BTreeMap<Uuid, i32> = parts
                .into_iter()
                .enumerate()
                .map(|(i, n)| (topic(i as u8), n))
                .collect();
            let members = members
                .into_iter()
                .enumerate()
                .map(|(i, (subs, cur))| {
                    let mut current = Assignment::new();
                    for (t, p) in cur {
                        current.entry(topic(t)).or_default().insert(p);
                    }
                    (
                        format!("m{i}"),
                        Spec {
                            subscribed: subs.into_iter().map(topic).collect(),
                            current,
                        },
                    )
                })
                .collect();
            (members, parts)
        })
    }

    proptest! {
        /// Both assignors: every existing partition of a subscribed topic has exactly one
        /// owner, who subscribes to it; nothing else is assigned. Uniform with identical
        /// subscriptions is balanced to within one.
        #[test]
        fn every_partition_once_to_a_subscriber((members, parts) in arb_case()) {
            for name in ASSIGNORS {
                let out = assign(name, &members, &parts);
                let mut seen = BTreeSet::new();
                for (m, a) in &out {
                    for (t, ps) in a {
                        prop_assert!(members[m].subscribed.contains(t));
                        for p in ps {
                            prop_assert!((0..parts[t]).contains(p));
                            prop_assert!(seen.insert((*t, *p)), "{:?} twice", (t, p));
                        }
                    }
                }
                let wanted: usize = parts
                    .iter()
                    .filter(|(t, _)| members.values().any(|s| s.subscribed.contains(t)))
                    .map(|(_, n)| *n as usize)
                    .sum();
                prop_assert_eq!(seen.len(), wanted);
            }
            let same = members.values().all(|s| Some(&s.subscribed) == members.values().next().map(|f| &f.subscribed));
            if same {
                let counts: Vec<usize> = assign(UNIFORM, &members, &parts).values().map(count).collect();
                if let (Some(lo), Some(hi)) = (counts.iter().min(), counts.iter().max()) {
                    prop_assert!(hi - lo <= 1, "{counts:?}");
                }
            }
        }
    }
}
