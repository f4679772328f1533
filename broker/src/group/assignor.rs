//! Server-side assignors of the consumer group protocol (KIP-848), pure: given each member's
//! subscribed topics and its current target, and each topic's partition count, the next
//! target assignment.
//!
//! - `uniform` (the default, as in Kafka): every partition of a subscribed topic goes to one
//!   subscribed member; members keep what they had where they still may, then partitions
//!   move from the fullest to the emptiest member until no subscribed member has two fewer
//!   than another that holds a partition it could take. With identical subscriptions the
//!   counts differ by at most one and a member loses partitions only to balance.
//! - `range`: per topic, its subscribed members in member id order get contiguous ranges,
//!   the first `partitions % members` of them one more (co-partitioned topics line up).

use std::collections::{BTreeMap, BTreeSet};

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
    // Owner of every partition, and each member's partitions.
    let mut owner: BTreeMap<(Uuid, i32), String> = BTreeMap::new();
    let mut held: BTreeMap<String, BTreeSet<(Uuid, i32)>> = members
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    let valid = |m: &Spec, t: &Uuid, p: i32| {
        m.subscribed.contains(t) && partitions.get(t).is_some_and(|&n| (0..n).contains(&p))
    };
    // 1. Stickiness: members keep what they may still have (first claim wins).
    for (id, spec) in members {
        for (t, ps) in &spec.current {
            for &p in ps {
                if valid(spec, t, p) && !owner.contains_key(&(*t, p)) {
                    owner.insert((*t, p), id.clone());
                    held.entry(id.clone()).or_default().insert((*t, p));
                }
            }
        }
    }
    // 2. Every other partition to its least loaded subscriber, the most constrained first.
    let subs: BTreeMap<Uuid, Vec<String>> = partitions
        .keys()
        .map(|t| (*t, subscribers(members, t)))
        .collect();
    let mut free: Vec<(Uuid, i32)> = partitions
        .iter()
        .flat_map(|(t, &n)| (0..n.max(0)).map(move |p| (*t, p)))
        .filter(|tp| !owner.contains_key(tp) && subs.get(&tp.0).is_some_and(|s| !s.is_empty()))
        .collect();
    free.sort_by_key(|(t, p)| (subs.get(t).map_or(0, Vec::len), *t, *p));
    for tp in free {
        let Some(to) = subs.get(&tp.0).and_then(|s| {
            s.iter()
                .min_by_key(|m| (held.get(*m).map_or(0, BTreeSet::len), *m))
        }) else {
            continue;
        };
        owner.insert(tp, to.clone());
        held.entry(to.clone()).or_default().insert(tp);
    }
    // 3. Balance: move a partition from a member to a subscriber holding at least two fewer.
    //    Each move lowers the sum of squared counts, so this ends.
    loop {
        let mut order: Vec<(usize, String)> =
            held.iter().map(|(m, s)| (s.len(), m.clone())).collect();
        order.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut moved = None;
        'search: for (count, from) in &order {
            // Newest-numbered partitions move first, so low partitions stay put.
            for tp in held[from].iter().rev() {
                let target = subs[&tp.0]
                    .iter()
                    .filter(|m| *m != from)
                    .map(|m| (held[m].len(), m))
                    .filter(|(n, _)| n + 2 <= *count)
                    .min();
                if let Some((_, to)) = target {
                    moved = Some((*tp, from.clone(), to.clone()));
                    break 'search;
                }
            }
        }
        let Some((tp, from, to)) = moved else { break };
        held.get_mut(&from).map(|s| s.remove(&tp));
        held.get_mut(&to).map(|s| s.insert(tp));
    }
    held.into_iter()
        .map(|(m, tps)| {
            let mut a = Assignment::new();
            for (t, p) in tps {
                a.entry(t).or_default().insert(p);
            }
            (m, a)
        })
        .collect()
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
