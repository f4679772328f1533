//! Replica placement for new partitions: rack-aware (replicas of a partition on distinct racks
//! while racks remain), leaders spread evenly, replicas balanced, deterministic.

use std::collections::{BTreeMap, BTreeSet};

/// A broker that can take replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: i32,
    pub rack: Option<String>,
}

/// Replica and leader counts per broker, so placement balances across topics too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Load {
    pub replicas: BTreeMap<i32, usize>,
    pub leaders: BTreeMap<i32, usize>,
}

impl Load {
    pub fn add(&mut self, replicas: &[i32]) {
        for r in replicas {
            *self.replicas.entry(*r).or_default() += 1;
        }
        if let Some(l) = replicas.first() {
            *self.leaders.entry(*l).or_default() += 1;
        }
    }
    /// One more replica on `id`, not a leader (a replacement in an existing set).
    pub fn add_replica(&mut self, id: i32) {
        *self.replicas.entry(id).or_default() += 1;
    }
    fn replicas_of(&self, id: i32) -> usize {
        self.replicas.get(&id).copied().unwrap_or(0)
    }
    fn leaders_of(&self, id: i32) -> usize {
        self.leaders.get(&id).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("replication factor {rf} is larger than the {available} available brokers")]
    NotEnoughBrokers { rf: usize, available: usize },
    #[error("replication factor must be at least 1")]
    ZeroReplicationFactor,
}

/// Chooses replicas for `partitions` new partitions. The first replica of each is the leader.
pub fn assign(
    candidates: &[Candidate],
    partitions: usize,
    rf: usize,
    load: &mut Load,
) -> Result<Vec<Vec<i32>>, PlacementError> {
    if rf == 0 {
        return Err(PlacementError::ZeroReplicationFactor);
    }
    if rf > candidates.len() {
        return Err(PlacementError::NotEnoughBrokers {
            rf,
            available: candidates.len(),
        });
    }
    let mut out = Vec::with_capacity(partitions);
    for p in 0..partitions {
        let chosen = choose(candidates, rf, load, p);
        load.add(&chosen);
        out.push(chosen);
    }
    Ok(out)
}

/// One more replica for an existing set (decommission, reassignment): the least-loaded
/// candidate not in `existing`, preferring a rack the set does not use yet.
pub fn replacement(candidates: &[Candidate], existing: &[i32], load: &Load) -> Option<i32> {
    let racks: BTreeSet<Option<&str>> = existing
        .iter()
        .filter_map(|r| candidates.iter().find(|c| c.id == *r))
        .map(|c| c.rack.as_deref())
        .collect();
    candidates
        .iter()
        .filter(|c| !existing.contains(&c.id))
        .min_by_key(|c| {
            (
                c.rack.is_some() && racks.contains(&c.rack.as_deref()),
                load.replicas_of(c.id),
                c.id,
            )
        })
        .map(|c| c.id)
}

fn choose(candidates: &[Candidate], rf: usize, load: &Load, salt: usize) -> Vec<i32> {
    let n = candidates.len();
    // Rotate ties by partition so equal loads still spread.
    let rot = |id: i32| -> usize {
        let idx = candidates.iter().position(|c| c.id == id).unwrap_or(0);
        (idx + n - salt % n) % n
    };
    let leader = candidates
        .iter()
        .min_by_key(|c| (load.leaders_of(c.id), load.replicas_of(c.id), rot(c.id)))
        .map(|c| c.id)
        .expect("candidates is not empty");
    let mut chosen = vec![leader];
    while chosen.len() < rf {
        let used: BTreeSet<Option<&str>> = chosen
            .iter()
            .filter_map(|id| candidates.iter().find(|c| c.id == *id))
            .map(|c| c.rack.as_deref())
            .collect();
        let next = candidates
            .iter()
            .filter(|c| !chosen.contains(&c.id))
            .min_by_key(|c| {
                (
                    c.rack.is_some() && used.contains(&c.rack.as_deref()),
                    load.replicas_of(c.id),
                    rot(c.id),
                )
            })
            .map(|c| c.id)
            .expect("rf <= candidates");
        chosen.push(next);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn spreads_leaders_and_replicas_evenly() {
        let c = brokers(&["", "", ""]);
        let mut load = Load::default();
        let a = assign(&c, 6, 3, &mut load).unwrap();
        for set in &a {
            let unique: BTreeSet<_> = set.iter().collect();
            assert_eq!(unique.len(), 3, "{a:?}");
        }
        assert!(load.leaders.values().all(|n| *n == 2), "{load:?}");
        assert!(load.replicas.values().all(|n| *n == 6), "{load:?}");
    }

    #[test]
    fn replicas_land_on_distinct_racks() {
        let c = brokers(&["a", "a", "b", "b", "c", "c"]);
        let mut load = Load::default();
        let a = assign(&c, 12, 3, &mut load).unwrap();
        for set in &a {
            let racks: BTreeSet<_> = set.iter().map(|id| c[*id as usize].rack.clone()).collect();
            assert_eq!(racks.len(), 3, "partition {set:?} doubles up a rack");
        }
        assert!(load.leaders.values().all(|n| *n == 2), "{load:?}");
    }

    #[test]
    fn balances_across_topics_and_refuses_impossible_factors() {
        let c = brokers(&["", "", "", ""]);
        let mut load = Load::default();
        assign(&c, 1, 2, &mut load).unwrap();
        let second = assign(&c, 1, 2, &mut load).unwrap();
        // The second topic avoids the brokers the first one used.
        assert!(
            !second[0].contains(&0) || !second[0].contains(&1),
            "{second:?}"
        );
        assert_eq!(
            assign(&c, 1, 5, &mut load),
            Err(PlacementError::NotEnoughBrokers {
                rf: 5,
                available: 4
            })
        );
        assert_eq!(
            assign(&c, 1, 0, &mut load),
            Err(PlacementError::ZeroReplicationFactor)
        );
    }

    #[test]
    fn replacement_prefers_unused_racks_then_least_loaded() {
        let c = brokers(&["a", "b", "b", "c"]);
        let mut load = Load::default();
        load.add(&[3, 3, 3]);
        // Set {0 (a), 1 (b)} needs one more: rack c (broker 3) beats rack b (broker 2) even
        // though 3 is busier.
        assert_eq!(replacement(&c, &[0, 1], &load), Some(3));
        assert_eq!(replacement(&c, &[0, 1, 2, 3], &load), None);
    }
}
