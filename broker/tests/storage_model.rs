//! Property test of the storage engine against a model: random appends, rolls, retention,
//! truncation, clean and unclean reopen, and reads at random offsets. The model is the list of
//! batches that must be in the log; every read must return exactly those bytes.

use std::collections::BTreeMap;
use std::path::Path;

use broker::protocol::batch::{self, BatchHeader, test_support::batch as make_batch};
use broker::storage::log::{Log, OpenHints};
use broker::topic_config::TopicConfig;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: i32,
        value_len: usize,
    },
    Roll,
    Retain {
        keep_bytes: u64,
    },
    Truncate {
        back: u8,
    },
    ReopenClean,
    ReopenUnclean,
    Read {
        at: u16,
        max_bytes: u16,
    },
    /// DeleteRecords: the log start moves up, to any offset up to the log end.
    DeleteRecords {
        ahead: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1..20i32, 0..300usize).prop_map(|(records, value_len)| Op::Append { records, value_len }),
        1 => Just(Op::Roll),
        1 => (0..20_000u64).prop_map(|keep_bytes| Op::Retain { keep_bytes }),
        1 => any::<u8>().prop_map(|back| Op::Truncate { back }),
        1 => Just(Op::ReopenClean),
        1 => Just(Op::ReopenUnclean),
        4 => (any::<u16>(), any::<u16>()).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => any::<u16>().prop_map(|ahead| Op::DeleteRecords { ahead }),
    ]
}

fn config() -> TopicConfig {
    TopicConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        ..TopicConfig::default()
    }
}

/// The model: base offset -> stored bytes (with the offset already patched).
struct Model {
    batches: BTreeMap<i64, Vec<u8>>,
    leo: i64,
}

fn check_read(log: &Log, model: &Model, at: i64, max_bytes: usize) {
    let start = log.log_start_offset();
    let got = match log.read(at, max_bytes, i64::MAX) {
        Ok(b) => b,
        Err(e) => {
            assert!(at < start || at > model.leo, "read at {at} failed: {e}");
            return;
        }
    };
    if at >= model.leo {
        assert!(got.is_empty());
        return;
    }
    // The first batch returned must contain `at`; all batches must match the model exactly.
    let mut first = true;
    let mut n = 0;
    for (h, range) in batch::Batches::new(&got) {
        let expected = model
            .batches
            .get(&h.base_offset)
            .unwrap_or_else(|| panic!("unknown batch {}", h.base_offset));
        assert_eq!(
            &got[range.clone()],
            &expected[..],
            "batch at {}",
            h.base_offset
        );
        if first {
            assert!(
                h.base_offset <= at && at <= h.last_offset(),
                "first batch {h:?} does not hold {at}"
            );
            first = false;
        }
        n += range.len();
    }
    assert_eq!(n, got.len(), "read returned a partial batch");
    assert!(
        !got.is_empty(),
        "read at {at} < leo {} returned nothing",
        model.leo
    );
    assert!(got.len() <= max_bytes.max(model.batches.range(..=at).next_back().unwrap().1.len()));
}

fn reopen(dir: &Path, log: Log, clean: bool) -> Log {
    let (recovery_point, start) = (log.recovery_point(), log.log_start_offset());
    let epoch = log.latest_epoch();
    let mut log = log;
    if clean {
        log.close().unwrap();
    }
    drop(log);
    let hints = OpenHints {
        clean_shutdown: clean,
        recovery_point: Some(recovery_point),
    };
    let (log, report) = Log::open(dir, config(), hints).unwrap();
    assert_eq!(
        log.log_start_offset(),
        start,
        "log start offset changed across a reopen"
    );
    // An epoch that starts at the log end (every record deleted) holds no batch, and opening
    // drops it, as Kafka's log loading does (`truncate_to` explains why).
    if log.log_start_offset() < log.log_end_offset() {
        assert_eq!(log.latest_epoch(), epoch);
    }
    assert_eq!(
        report.truncated_bytes, 0,
        "nothing may be cut from an intact log: {report:?}"
    );
    log
}

fn last_offset(stored: &[u8]) -> i64 {
    BatchHeader::parse(stored).unwrap().last_offset()
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let (mut log, _) = Log::open(&path, config(), OpenHints::default()).unwrap();
    let mut model = Model {
        batches: BTreeMap::new(),
        leo: 0,
    };
    let mut ts = 1_000;
    for op in ops {
        match op {
            Op::Append { records, value_len } => {
                ts += 1;
                let b = make_batch(records, ts, (-1, -1, -1), value_len);
                let h = BatchHeader::parse(&b).unwrap();
                let info = log.append_as_leader(&b, &h, 3, ts).unwrap();
                assert_eq!(info.base_offset, model.leo);
                let mut stored = b.clone();
                stored[..16].copy_from_slice(&batch::patched_prefix(&b, info.base_offset, 3));
                model.batches.insert(info.base_offset, stored);
                model.leo = info.last_offset + 1;
            }
            Op::Roll => log.roll().unwrap(),
            Op::Retain { keep_bytes } => {
                let mut c = config();
                c.retention_bytes = keep_bytes as i64;
                log.set_config(c);
                log.apply_retention(ts, i64::MAX).unwrap();
                log.set_config(config());
                let start = log.log_start_offset();
                model.batches.retain(|_, b| last_offset(b) >= start);
            }
            Op::Truncate { back } => {
                let bases: Vec<i64> = model.batches.keys().copied().collect();
                if bases.is_empty() {
                    continue;
                }
                let to = bases[bases.len().saturating_sub(1 + back as usize % 4)];
                // Replicas truncate only above the high watermark, so never below the start.
                if to < log.log_start_offset() {
                    continue;
                }
                log.truncate_to(to).unwrap();
                model.batches.retain(|b, _| *b < to);
                model.leo = to;
            }
            Op::ReopenClean => log = reopen(&path, log, true),
            Op::ReopenUnclean => log = reopen(&path, log, false),
            Op::Read { at, max_bytes } => {
                let span = (model.leo - log.log_start_offset() + 2).max(1);
                let at = log.log_start_offset() + i64::from(at) % span;
                check_read(&log, &model, at, usize::from(max_bytes) + 1);
            }
            Op::DeleteRecords { ahead } => {
                let start = log.log_start_offset();
                let to = start + i64::from(ahead) % (model.leo - start + 1);
                log.advance_log_start(to).unwrap();
                assert_eq!(log.log_start_offset(), to);
                // Batches wholly below the new start are gone; the one holding it stays.
                model.batches.retain(|_, b| last_offset(b) >= to);
                assert!(
                    log.read(to - 1, 1 << 20, i64::MAX).is_err() || to == 0,
                    "a read below the new start {to} succeeded"
                );
            }
        }
        assert_eq!(log.log_end_offset(), model.leo);
        let start = log.log_start_offset();
        assert!(start <= model.leo);
        assert!(
            model.batches.values().all(|b| last_offset(b) >= start),
            "the model holds a batch below the log start {start}"
        );
    }
    // Finally the whole log, read batch by batch, equals the model.
    let mut at = log.log_start_offset();
    while at < model.leo {
        check_read(&log, &model, at, 1);
        let (h, _) = batch::Batches::new(&log.read(at, 1, i64::MAX).unwrap())
            .next()
            .unwrap();
        at = h.next_offset();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops);
    }
}

/// Recovery cuts a torn tail, a garbage tail and a corrupted middle batch, and keeps the
/// valid prefix byte for byte.
#[test]
fn recovery_cuts_bad_tails_and_keeps_the_prefix() {
    for damage in ["torn", "garbage", "flip"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let (mut log, _) = Log::open(&path, config(), OpenHints::default()).unwrap();
        let mut sizes = Vec::new();
        for i in 0..10 {
            let b = make_batch(3, 10 + i, (-1, -1, -1), 100);
            sizes.push(b.len() as u64);
            let h = BatchHeader::parse(&b).unwrap();
            log.append_as_leader(&b, &h, 0, 10).unwrap();
        }
        drop(log); // unclean: no close
        let seg = path.join(format!("{:020}.log", 0));
        let len = std::fs::metadata(&seg).unwrap().len();
        let kept_batches = match damage {
            "torn" => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&seg)
                    .unwrap()
                    .set_len(len - 7)
                    .unwrap();
                9
            }
            "garbage" => {
                use std::io::Write;
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&seg)
                    .unwrap()
                    .write_all(&[0xAB; 300])
                    .unwrap();
                10
            }
            _ => {
                // Flip a byte inside batch 4's records.
                let pos: u64 = sizes[..4].iter().sum::<u64>() + 70;
                let mut bytes = std::fs::read(&seg).unwrap();
                bytes[pos as usize] ^= 0x40;
                std::fs::write(&seg, bytes).unwrap();
                4
            }
        };
        let (log, report) = Log::open(
            &path,
            config(),
            OpenHints {
                recovery_point: Some(0),
                ..OpenHints::default()
            },
        )
        .unwrap();
        assert_eq!(
            log.log_end_offset(),
            kept_batches * 3,
            "{damage}: {report:?}"
        );
        assert!(report.truncated_bytes > 0, "{damage}");
        assert!(report.truncated_at.is_some(), "{damage}");
        let all = log.read(0, 1 << 20, i64::MAX).unwrap();
        assert_eq!(
            batch::Batches::new(&all).count() as i64,
            kept_batches,
            "{damage}"
        );
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            sizes[..kept_batches as usize].iter().sum::<u64>()
        );
    }
}

/// Idempotent producer state survives clean and unclean restarts: a retried batch is still
/// recognised as a duplicate with its original offsets.
#[test]
fn producer_state_survives_restart() {
    use broker::storage::producer_state::SequenceCheck;
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let (mut log, _) = Log::open(&path, config(), OpenHints::default()).unwrap();
        for seq in 0..20 {
            let b = make_batch(2, 5, (42, 0, seq * 2), 300);
            let h = BatchHeader::parse(&b).unwrap();
            log.append_as_leader(&b, &h, 0, 5).unwrap();
        }
        let rp = log.recovery_point();
        if clean {
            log.close().unwrap();
        }
        drop(log);
        let (log, _) = Log::open(
            &path,
            config(),
            OpenHints {
                clean_shutdown: clean,
                recovery_point: Some(rp),
            },
        )
        .unwrap();
        let retry = make_batch(2, 5, (42, 0, 38), 300);
        match log
            .check_producer(&BatchHeader::parse(&retry).unwrap())
            .unwrap()
        {
            SequenceCheck::Duplicate(m) => assert_eq!((m.first_offset, m.last_offset), (38, 39)),
            other => panic!("clean={clean}: expected duplicate, got {other:?}"),
        }
        let next = make_batch(1, 5, (42, 0, 40), 1);
        assert_eq!(
            log.check_producer(&BatchHeader::parse(&next).unwrap())
                .unwrap(),
            SequenceCheck::Append
        );
    }
}

/// Retention by time deletes whole inactive segments whose newest record is older than
/// retention.ms, never the active one, and moves the log start offset.
#[test]
fn time_retention_deletes_old_inactive_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let cfg = TopicConfig {
        retention_ms: 1_000,
        ..config()
    };
    let (mut log, _) = Log::open(&path, cfg, OpenHints::default()).unwrap();
    for (i, ts) in [(0, 10_000), (1, 10_000), (2, 20_000)] {
        let b = make_batch(2, ts, (-1, -1, -1), 10);
        log.append_as_leader(&b, &BatchHeader::parse(&b).unwrap(), 0, ts)
            .unwrap();
        if i < 2 {
            log.roll().unwrap();
        }
    }
    assert_eq!(log.segment_count(), 3);
    assert_eq!(
        log.apply_retention(10_500, i64::MAX).unwrap(),
        0,
        "nothing is old enough yet"
    );
    assert_eq!(
        log.apply_retention(30_000, i64::MAX).unwrap(),
        2,
        "both old segments go"
    );
    assert_eq!(
        log.segment_count(),
        1,
        "the active segment stays even when old"
    );
    assert_eq!(log.log_start_offset(), 4);
    assert!(matches!(
        log.read(0, 100, i64::MAX),
        Err(broker::storage::log::ReadError::OutOfRange { .. })
    ));
    assert_eq!(
        batch::Batches::new(&log.read(4, 1000, i64::MAX).unwrap()).count(),
        1
    );
}

/// Size-based rolling keeps each segment under segment.bytes (a batch never spans segments).
#[test]
fn rolls_by_size_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let cfg = TopicConfig {
        segment_bytes: 2048,
        segment_ms: 60_000,
        ..config()
    };
    let (mut log, _) = Log::open(&path, cfg, OpenHints::default()).unwrap();
    for _ in 0..20 {
        let b = make_batch(1, 1_000, (-1, -1, -1), 400);
        log.append_as_leader(&b, &BatchHeader::parse(&b).unwrap(), 0, 1_000)
            .unwrap();
    }
    assert!(log.segment_count() >= 5, "{} segments", log.segment_count());
    for entry in std::fs::read_dir(&path).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "log") {
            assert!(
                std::fs::metadata(&p).unwrap().len() <= 2048,
                "{} too big",
                p.display()
            );
        }
    }
    let before = log.segment_count();
    // The active segment's first batch is older than segment.ms: the next append rolls.
    let b = make_batch(1, 100_000, (-1, -1, -1), 10);
    log.append_as_leader(&b, &BatchHeader::parse(&b).unwrap(), 0, 100_000)
        .unwrap();
    assert_eq!(log.segment_count(), before + 1);
}

/// A follower copies the leader's batches byte for byte: same offsets, epochs and producer
/// state (so de-duplication survives a leader change); a response that does not continue
/// the log, or is corrupt, writes nothing; after divergence the follower truncates and
/// catches up again.
#[test]
fn follower_append_copies_the_leader_and_refuses_gaps() {
    use broker::storage::log::AppendError;
    use broker::storage::producer_state::SequenceCheck;
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, _) =
        Log::open(&dir.path().join("l-0"), config(), OpenHints::default()).unwrap();
    let (mut follower, _) =
        Log::open(&dir.path().join("f-0"), config(), OpenHints::default()).unwrap();
    for (i, epoch) in [(0, 1), (1, 1), (2, 2), (3, 2), (4, 3)] {
        let b = make_batch(3, 10, (9, 0, i * 3), 200);
        leader
            .append_as_leader(&b, &BatchHeader::parse(&b).unwrap(), epoch, 10)
            .unwrap();
    }
    let all = leader.read(0, 1 << 20, i64::MAX).unwrap();
    // A gap (starting past the follower's end) and a corrupt batch are refused whole.
    let second = batch::Batches::new(&all).nth(1).unwrap().1;
    assert!(matches!(
        follower.append_replicated(&all[second.start..], 10),
        Err(AppendError::Replication(_))
    ));
    let mut corrupt = all.clone();
    let n = corrupt.len();
    corrupt[n - 1] ^= 1;
    assert!(follower.append_replicated(&corrupt, 10).is_err());
    assert_eq!(
        follower.log_end_offset(),
        0,
        "nothing written from a bad response"
    );
    // Partial trailing batches are ignored (fetched again later).
    let leo = follower
        .append_replicated(&all[..all.len() - 5], 10)
        .unwrap();
    assert_eq!(leo, 12);
    let fifth = batch::Batches::new(&all).nth(4).unwrap().1;
    assert_eq!(
        follower.append_replicated(&all[fifth.clone()], 10).unwrap(),
        15
    );
    assert_eq!(
        follower.read(0, 1 << 20, i64::MAX).unwrap(),
        all,
        "follower differs from leader"
    );
    assert_eq!(follower.epochs().entries(), leader.epochs().entries());
    let retry = make_batch(3, 10, (9, 0, 12), 200);
    assert!(matches!(
        follower.check_producer(&BatchHeader::parse(&retry).unwrap()),
        Ok(SequenceCheck::Duplicate(_))
    ));
    // Divergence: the follower truncates to the end of epoch 2 and takes the leader's data.
    follower.truncate_to(12).unwrap();
    assert_eq!(follower.latest_epoch(), Some(2));
    assert_eq!(follower.append_replicated(&all[fifth], 10).unwrap(), 15);
    assert_eq!(follower.read(0, 1 << 20, i64::MAX).unwrap(), all);
}

/// A follower whose log end is below the leader's log start restarts its log, empty, at the
/// leader's log start (Kafka's truncateFullyAndStartAt): no old segment, epoch or producer
/// state survives, it then takes the leader's batches from there, and a reopen agrees.
#[test]
fn truncate_fully_restarts_the_log_at_the_leaders_start() {
    use broker::storage::producer_state::SequenceCheck;
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, _) =
        Log::open(&dir.path().join("l-0"), config(), OpenHints::default()).unwrap();
    let path = dir.path().join("f-0");
    let (mut follower, _) = Log::open(&path, config(), OpenHints::default()).unwrap();
    for i in 0..10 {
        let b = make_batch(3, 10, (9, 0, i * 3), 200);
        leader
            .append_as_leader(&b, &BatchHeader::parse(&b).unwrap(), 1 + i / 5, 10)
            .unwrap();
        if i == 0 {
            follower
                .append_replicated(&leader.read(0, 1 << 20, i64::MAX).unwrap(), 10)
                .unwrap();
            follower.roll().unwrap();
        }
        leader.roll().unwrap();
    }
    leader.delete_segments_below(18).unwrap();
    assert_eq!(leader.log_start_offset(), 18);
    assert_eq!(follower.log_end_offset(), 3);

    follower.truncate_fully_and_start_at(18).unwrap();
    assert_eq!(
        (
            follower.log_start_offset(),
            follower.log_end_offset(),
            follower.recovery_point(),
            follower.segment_count()
        ),
        (18, 18, 18, 1)
    );
    assert_eq!(follower.latest_epoch(), None);
    let old = make_batch(3, 10, (9, 0, 0), 200);
    assert_eq!(
        follower
            .check_producer(&BatchHeader::parse(&old).unwrap())
            .unwrap(),
        SequenceCheck::Append,
        "producer state from the discarded log is gone"
    );
    let read_all = |log: &Log| {
        let mut out = Vec::new();
        let mut at = 18;
        while at < log.log_end_offset() {
            let data = log.read(at, 1 << 20, i64::MAX).unwrap();
            at = batch::Batches::new(&data).last().unwrap().0.next_offset();
            out.extend_from_slice(&data);
        }
        out
    };
    let rest = read_all(&leader);
    assert_eq!(follower.append_replicated(&rest, 10).unwrap(), 30);
    assert_eq!(read_all(&follower), rest);
    assert_eq!(follower.epochs().entries(), leader.epochs().entries());
    drop(follower);
    for clean in [false, true] {
        let (mut reopened, _) = Log::open(
            &path,
            config(),
            OpenHints {
                clean_shutdown: clean,
                recovery_point: None,
            },
        )
        .unwrap();
        assert_eq!(
            (reopened.log_start_offset(), reopened.log_end_offset()),
            (18, 30),
            "clean={clean}"
        );
        assert_eq!(read_all(&reopened), rest);
        reopened.close().unwrap();
    }
}

/// DeleteRecords recorded a log start at the log end; then the unsynced tail was lost
/// (recovery cut the log below that start) and new records were acknowledged there. A later
/// reopen must not move the start back above them (it did, from the recorded file).
#[test]
fn a_recorded_log_start_beyond_the_recovered_end_does_not_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let (mut log, _) = Log::open(&path, config(), OpenHints::default()).unwrap();
    for i in 0..4 {
        let b = make_batch(3, 10 + i, (-1, -1, -1), 100);
        log.append_as_leader(&b, &BatchHeader::parse(&b).unwrap(), 1, 10)
            .unwrap();
    }
    assert!(log.advance_log_start(12).unwrap());
    drop(log);
    // The tail never reached the disk: half the segment survives the crash.
    let segment = path.join(format!("{:020}.log", 0));
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let unclean = OpenHints {
        clean_shutdown: false,
        recovery_point: Some(0),
    };
    let (mut log, _) = Log::open(&path, config(), unclean).unwrap();
    let end = log.log_end_offset();
    assert!(end < 12, "the cut kept {end}");
    assert_eq!(log.log_start_offset(), end);
    let b = make_batch(3, 20, (-1, -1, -1), 100);
    let info = log
        .append_as_leader(&b, &BatchHeader::parse(&b).unwrap(), 2, 20)
        .unwrap();
    assert_eq!(info.base_offset, end);
    log.close().unwrap();
    drop(log);
    let clean = OpenHints {
        clean_shutdown: true,
        recovery_point: None,
    };
    let (log, _) = Log::open(&path, config(), clean).unwrap();
    assert_eq!(
        log.log_start_offset(),
        end,
        "the start went back up over new records"
    );
    assert!(log.read(end, 1 << 20, i64::MAX).is_ok());
}

/// A leader-epoch checkpoint write that failed (a full disk) is not forgotten: recovery after
/// a crash rebuilds epochs only from the recovery point on, so the checkpoint must be written
/// before a roll moves the recovery point past the epoch's start. (It used to be only logged:
/// after a roll and a kill -9 epoch 5 started at the new segment instead of where it did.)
#[test]
fn an_epoch_whose_checkpoint_write_failed_survives_a_roll_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let (mut log, _) = Log::open(&path, config(), OpenHints::default()).unwrap();
    let append = |log: &mut Log, epoch: i32| {
        let b = make_batch(2, 1_000, (-1, -1, -1), 10);
        let h = BatchHeader::parse(&b).unwrap();
        log.append_as_leader(&b, &h, epoch, 1_000)
            .unwrap()
            .base_offset
    };
    append(&mut log, 3);
    append(&mut log, 3);
    // The checkpoint's temporary file cannot be created: every save fails from here on.
    let blocker = path.join("leader-epoch-checkpoint.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let epoch_5_start = append(&mut log, 5);
    append(&mut log, 5);
    std::fs::remove_dir(&blocker).unwrap();
    log.roll().unwrap();
    append(&mut log, 5);
    let recovery_point = log.recovery_point();
    assert!(recovery_point > epoch_5_start);
    // kill -9: no close.
    drop(log);
    let hints = OpenHints {
        clean_shutdown: false,
        recovery_point: Some(recovery_point),
    };
    let (log, _) = Log::open(&path, config(), hints).unwrap();
    let epochs: Vec<(i32, i64)> = log
        .epochs()
        .entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect();
    assert_eq!(epochs, vec![(3, 0), (5, epoch_5_start)]);
}
