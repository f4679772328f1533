//! Deterministic simulation of the cluster's decision cores (issue 12): the real
//! replication state machine (`broker::replication::state::LeaderState`), the broker's
//! follower rules (`broker::partition::{diverging_in, truncation_offset_in}` over an in-memory
//! log model) and the real controller decisions (`operator::controller::decisions`), composed
//! in one process with a simulated network (delay, drop, reorder, partitions), crashes (kill
//! -9, or a power loss that takes the unflushed tail per `fsync.policy`), restarts with new
//! broker epochs, and virtual time, all drawn from one seed. `sim::oracle` states the
//! invariants, checked after every event and once more after healing and a quiet period.
//! In one schedule of two the partition is also a consumer group's `__consumer_offsets`
//! partition: the real group state machine (`broker::group::state`) behind a coordinator on
//! each broker that mirrors `broker::group::coordinator` (`sim::coordinator`), with 2-4
//! consumers (`sim::members`) and the group invariants of `sim::group_oracle`.
//!
//! A harness of our own rather than turmoil or madsim: those simulate tokio's sockets and
//! clocks under the real async code, while these cores are pure functions with the time
//! passed in, so a plain event queue drives them directly, runs thousands of schedules a
//! second in a debug build, and replays one exactly from its seed. Not simulated yet:
//! reassignment, the controller's own restarts, and of the groups static members, offsets
//! expiry, group deletion and snapshots of the offsets log.
//!
//! - `cargo test -p operator --test simulation`: 10,000 schedules (seeds 0..10000).
//! - `STRAND_SIM_SCHEDULES=200000` runs more; `STRAND_SIM_FIRST_SEED=n` starts elsewhere.
//! - `STRAND_SIM_SEED=n` replays one schedule and prints its event trace.
//! - `STRAND_SIM_GROUPS_ONE_IN=n`: a consumer group in one schedule of n (default 2).

mod sim;

use std::time::Instant;

use sim::broker::Behaviour;
use sim::coordinator::Glue;
use sim::world::World;

const DEFAULT_SCHEDULES: u64 = 10_000;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn replay_command(seed: u64, test: &str) -> String {
    format!(
        "STRAND_SIM_SEED={seed} cargo test -p operator --test simulation {test} -- --nocapture --include-ignored"
    )
}

/// Replays one seed with its trace (`STRAND_SIM_SEED`), or runs the seeded schedules.
fn run(mut behaviour: Behaviour, default_first_seed: u64, test: &str) {
    if let (Some(n), Some((glue, _))) = (env_u64("STRAND_SIM_GROUPS_ONE_IN"), behaviour.groups) {
        behaviour.groups = Some((glue, n.max(1)));
    }
    if let Some(seed) = env_u64("STRAND_SIM_SEED") {
        let outcome = World::new(seed, behaviour, true).run();
        for line in &outcome.trace {
            println!("{line}");
        }
        println!(
            "seed {seed}: {} events, {} acknowledged records, {} lost with a leader's page cache; group: {}, {} commits acknowledged, {} loads",
            outcome.events,
            outcome.acked,
            outcome.page_cache_losses,
            outcome.groups,
            outcome.commits_acked,
            outcome.group_loads
        );
        if let Err(e) = outcome.result {
            panic!("seed {seed} failed: {e}");
        }
        return;
    }
    let schedules = env_u64("STRAND_SIM_SCHEDULES").unwrap_or(DEFAULT_SCHEDULES);
    let first = env_u64("STRAND_SIM_FIRST_SEED").unwrap_or(default_first_seed);
    let started = Instant::now();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let total = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                s.spawn(move || {
                    let mut sum = Summary::default();
                    let mut seed = first + w;
                    while seed < first + schedules {
                        sum.add(seed, World::new(seed, behaviour, false).run());
                        seed += workers;
                    }
                    sum
                })
            })
            .collect();
        let mut total = Summary::default();
        for h in handles {
            match h.join() {
                Ok(sum) => total.merge(sum),
                Err(_) => total.failures.push((u64::MAX, "a worker panicked".into())),
            }
        }
        total
    });
    let mut failures = total.failures;
    failures.sort();
    println!(
        "{schedules} schedules (seeds {first}..{}) in {:.1} s: {} events, {} acknowledged records ({} acks from fenced brokers); lost with the last in-sync replica's page cache under fsync.policy=none (under before-ack that fails): {}; {} schedules with a consumer group: {} commits acknowledged, {} coordinator loads; {} failed",
        first + schedules,
        started.elapsed().as_secs_f64(),
        total.events,
        total.acked,
        total.fenced_acks,
        total.page_cache_losses_none,
        total.group_schedules,
        total.commits_acked,
        total.group_loads,
        failures.len()
    );
    // Failures by kind: the message with its numbers blanked, cut after the first clause.
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, e) in &failures {
        let kind: String = e
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        let kind = kind.split(" (").next().unwrap_or_default();
        let kind: String = kind.split(';').next().unwrap_or_default().replace('#', "");
        *kinds.entry(kind).or_default() += 1;
    }
    for (kind, n) in &kinds {
        println!("{n:>6} x {kind}");
    }
    for (seed, e) in failures.iter().take(10) {
        println!(
            "seed {seed} failed: {e}\n  replay: {}",
            replay_command(*seed, test)
        );
    }
    if let Some((seed, e)) = failures.first() {
        panic!(
            "{} of {schedules} schedules failed; first: seed {seed}: {e}\nreplay: {}",
            failures.len(),
            replay_command(*seed, test)
        );
    }
}

/// The brokers as they behave: a restarted broker acts only on metadata from after its
/// registration (`Membership::join`).
#[test]
fn seeded_schedules_keep_kafkas_invariants() {
    run(Behaviour::FIXED, 0, "seeded_schedules");
}

/// A bug this simulation found, kept as a check that it still would: before the fix in
/// `broker::cluster::membership::Membership::join`, a restarted broker applied the metadata
/// it saved before it crashed right after registering, so for a moment it led an epoch it led
/// in its previous life, with a new `LeaderState` and possibly a shorter log. Its high
/// watermark went back within that epoch (seed 0; 2828 of seeds 0..10000 fail), and it
/// appended its own records in that epoch, so two different logs carried it: with the
/// high-watermark check set aside, seeds 770, 1329 and 1525 ended with in-sync logs that
/// differ below the high watermark, 535 with a follower that cannot append the leader's
/// batches, 1683 with an acknowledged write lost. Run it with `--ignored`: it must fail.
#[test]
#[ignore = "the old behaviour, fixed; run with --ignored to see the simulation catch it"]
fn old_bug_restarted_broker_applied_saved_metadata() {
    let old = Behaviour {
        apply_saved_metadata: true,
        groups: None,
        report_unclean_shutdown: true,
    };
    run(old, 0, "old_bug_restarted");
}

/// The loss eligible leader replicas (KIP-966) close, kept as a check that the simulation
/// still sees it: with restarted brokers not reporting an unclean shutdown, a last ISR member
/// that lost its unsynced tail in a power loss leads again, and a replica that left the ISR
/// with the records (while it was below min.insync.replicas) truncates to it. Run it with
/// `--ignored`: it must fail.
#[test]
#[ignore = "the old behaviour, fixed; run with --ignored to see the simulation catch it"]
fn old_bug_unclean_last_isr_member_led_again() {
    let old = Behaviour {
        report_unclean_shutdown: false,
        groups: None,
        ..Behaviour::FIXED
    };
    run(old, 0, "old_bug_unclean_last_isr");
}

/// The group coordinator's glue broken on purpose (sim-side only, `sim::coordinator::Glue`),
/// with a consumer group in every schedule: an OffsetCommit answered as soon as it is
/// appended rather than once the high watermark passes it. Run with `--ignored`: it must fail
/// (5759 of seeds 0..10000 did: 710 with the commit's record missing from the next leader's
/// log, 5049 with the settled coordinator not serving an acknowledged commit at the end).
#[test]
#[ignore = "a broken coordinator rule; run with --ignored to see the simulation catch it"]
fn broken_glue_commit_answered_before_committed() {
    let broken = Behaviour {
        groups: Some((Glue::AnswerCommitOnAppend, 1)),
        ..Behaviour::FIXED
    };
    run(broken, 0, "broken_glue_commit_answered");
}

/// The same, with a new coordinator that does not load the group from the log (2672 of seeds
/// 0..10000 fail: 1531 lose an acknowledged commit, 1141 the committed group metadata).
#[test]
#[ignore = "a broken coordinator rule; run with --ignored to see the simulation catch it"]
fn broken_glue_coordinator_skips_load() {
    let broken = Behaviour {
        groups: Some((Glue::SkipLoad, 1)),
        ..Behaviour::FIXED
    };
    run(broken, 0, "broken_glue_coordinator_skips");
}

#[derive(Default)]
struct Summary {
    events: u64,
    acked: u64,
    fenced_acks: u64,
    page_cache_losses_none: u64,
    group_schedules: u64,
    commits_acked: u64,
    group_loads: u64,
    failures: Vec<(u64, String)>,
}

impl Summary {
    fn add(&mut self, seed: u64, o: sim::world::Outcome) {
        self.events += o.events;
        self.acked += o.acked as u64;
        self.fenced_acks += o.fenced_acks;
        self.group_schedules += u64::from(o.groups);
        self.commits_acked += o.commits_acked;
        self.group_loads += o.group_loads;
        self.page_cache_losses_none += o.page_cache_losses as u64;
        if let Err(e) = o.result {
            self.failures.push((seed, e));
        }
    }

    fn merge(&mut self, other: Summary) {
        self.events += other.events;
        self.acked += other.acked;
        self.fenced_acks += other.fenced_acks;
        self.page_cache_losses_none += other.page_cache_losses_none;
        self.group_schedules += other.group_schedules;
        self.commits_acked += other.commits_acked;
        self.group_loads += other.group_loads;
        self.failures.extend(other.failures);
    }
}
