//! Crash tests with real processes and real signals: kill -9 under acks=all load, torn and
//! garbage tails, a flipped byte in a middle batch, a clean restart that skips recovery, and a
//! full disk. Every acknowledged record must survive; damaged data must be cut, never served.

mod common;

use std::time::Duration;

use common::BrokerProcess;
use common::kafka::{
    ACKS_ALL_IDEMPOTENT, Load, Records, assert_acked_present, consume_all, produce, producer,
};
use rdkafka::producer::FutureRecord;

fn metric(broker: &BrokerProcess, name: &str) -> f64 {
    let (_, body) = broker.http_get("/metrics");
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} not found in:\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("data"), &["--num-partitions", "2"]);
    let bootstrap = broker.bootstrap();
    let settings = [
        ACKS_ALL_IDEMPOTENT,
        &[
            ("retry.backoff.ms", "50"),
            ("reconnect.backoff.max.ms", "200"),
        ],
    ]
    .concat();
    let load = Load::start(&bootstrap, &settings, "load");
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = load.acked_count();
        broker.kill9();
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker.spawn();
        eprintln!("round {round}: killed with {before} acknowledged");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (sent, acked, read) = load.finish(&bootstrap, "load", &[0, 1]).await;
    assert!(
        acked.len() > 1000,
        "too little load: {} acknowledged of {sent}",
        acked.len()
    );
    assert!(metric(&broker, "strand_recovery_segments_scanned_total") >= 1.0);
    eprintln!(
        "sent {sent}, acknowledged {}, stored {}",
        acked.len(),
        read.len()
    );
}

/// Damage applied to the partition's segment while the broker is down.
#[derive(Debug, Clone, Copy)]
enum Damage {
    TornTail,
    GarbageTail,
    FlippedMiddleByte,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_segments_are_cut_at_the_first_bad_batch_and_never_served() {
    for damage in [
        Damage::TornTail,
        Damage::GarbageTail,
        Damage::FlippedMiddleByte,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut broker = BrokerProcess::start(&data, &[]);
        let bootstrap = broker.bootstrap();
        // linger 0 and one in flight: many small batches.
        let p = producer(
            &bootstrap,
            &[
                ("linger.ms", "0"),
                ("max.in.flight", "1"),
                ("enable.idempotence", "true"),
            ],
        );
        let mut acked = Records::new();
        for chunk in 0..20 {
            acked.extend(produce(&p, "dmg", &format!("c{chunk}"), 10).await);
        }
        drop(p);
        broker.kill9();
        let seg = data.join("dmg-0").join(format!("{:020}.log", 0));
        let len = std::fs::metadata(&seg).unwrap().len();
        match damage {
            Damage::TornTail => std::fs::OpenOptions::new()
                .write(true)
                .open(&seg)
                .unwrap()
                .set_len(len - 9)
                .unwrap(),
            Damage::GarbageTail => {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
                f.write_all(&[0x5A; 4096]).unwrap();
            }
            Damage::FlippedMiddleByte => {
                let mut bytes = std::fs::read(&seg).unwrap();
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x01;
                std::fs::write(&seg, bytes).unwrap();
            }
        }
        broker.spawn();
        let log = broker.log();
        assert!(
            log.contains("recovery truncated the log"),
            "{damage:?}: no truncation logged:\n{log}"
        );
        let read = consume_all(&bootstrap, "dmg", &[0]);
        // What is served is an unchanged prefix of what was acknowledged.
        let n = read.len() as i64;
        for (at, rec) in &read {
            assert!(at.1 < n, "{damage:?}: gap in served offsets");
            assert_eq!(
                acked.get(at),
                Some(rec),
                "{damage:?}: served record differs at {at:?}"
            );
        }
        match damage {
            Damage::GarbageTail => assert_eq!(
                read.len(),
                acked.len(),
                "garbage tail: acknowledged data lost"
            ),
            Damage::TornTail | Damage::FlippedMiddleByte => {
                assert!(
                    read.len() < acked.len(),
                    "{damage:?}: damaged batch was served"
                );
            }
        }
        // The log continues cleanly from the cut.
        let p = producer(&bootstrap, &[("enable.idempotence", "true")]);
        let more = produce(&p, "dmg", "after", 50).await;
        assert_eq!(
            more.keys().next().unwrap().1,
            n,
            "{damage:?}: new writes do not continue at the cut"
        );
        let read = consume_all(&bootstrap, "dmg", &[0]);
        assert_eq!(read.len() as i64, n + 50);
        assert_acked_present(&more, &read);
        assert!(
            broker.terminate(),
            "{damage:?}: SIGTERM did not stop cleanly"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_restart_skips_recovery() {
    let dir = tempfile::tempdir().unwrap();
    // The reading consumer has a group id, so `__consumer_offsets` appears too: one
    // partition, whose (empty) active segment is scanned after kill -9 as well.
    let mut broker = BrokerProcess::start(
        &dir.path().join("data"),
        &[
            "--topic-config",
            "segment.bytes=65536",
            "--offsets-topic-partitions",
            "1",
        ],
    );
    let p = producer(&broker.bootstrap(), &[("enable.idempotence", "true")]);
    let acked = produce(&p, "big", "x", 5000).await;
    drop(p);
    assert!(broker.terminate(), "SIGTERM did not stop cleanly");
    broker.spawn();
    assert_eq!(
        metric(&broker, "strand_recovery_segments_scanned_total"),
        0.0,
        "a clean restart must not rescan"
    );
    assert_acked_present(&acked, &consume_all(&broker.bootstrap(), "big", &[0]));
    broker.kill9();
    broker.spawn();
    // After kill -9 only segments from the recovery point on are scanned (the active one),
    // plus the offsets partition's one segment.
    let scanned = metric(&broker, "strand_recovery_segments_scanned_total");
    assert!((2.0..=3.0).contains(&scanned), "scanned {scanned} segments");
    assert_acked_present(&acked, &consume_all(&broker.bootstrap(), "big", &[0]));
}

/// A full disk: producers get KAFKA_STORAGE_ERROR, reads keep working, nothing is corrupted.
/// Needs root to mount a small tmpfs (CI runs as root); set STRAND_SKIP_ROOT_TESTS=1 to skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_writes_and_keeps_data() {
    if std::env::var_os("STRAND_SKIP_ROOT_TESTS").is_some() {
        eprintln!("skipped: STRAND_SKIP_ROOT_TESTS is set");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The data directory is the mount point, so the broker's log file (next to it) stays off
    // the full filesystem.
    let mnt = dir.path().join("data");
    std::fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "mounting a tmpfs failed (needs root); set STRAND_SKIP_ROOT_TESTS=1 to skip"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let mut broker = BrokerProcess::start(&mnt, &[]);
    let bootstrap = broker.bootstrap();
    let p = producer(
        &bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("message.timeout.ms", "3000"),
            ("linger.ms", "5"),
            ("retries", "2"),
        ],
    );
    let mut acked = Records::new();
    let mut failed = 0;
    let padding = "y".repeat(4000);
    for i in 0..2000 {
        let key = format!("k{i}");
        let value = format!("v{i}-{padding}");
        match p
            .send(
                FutureRecord::to("fill").key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
        {
            Ok(d) => {
                acked.insert((d.partition, d.offset), (key, value));
            }
            Err((e, _)) => {
                failed += 1;
                let msg = e.to_string();
                assert!(
                    msg.contains("storage") || msg.contains("Storage") || msg.contains("timed out"),
                    "unexpected error: {msg}"
                );
                if failed > 3 {
                    break;
                }
            }
        }
    }
    assert!(failed > 0, "the disk never filled");
    assert!(acked.len() > 100, "only {} writes succeeded", acked.len());
    assert!(
        broker.log().contains("append failed"),
        "no storage error logged"
    );
    // Reads keep working and return exactly what was acknowledged.
    let read = consume_all(&bootstrap, "fill", &[0]);
    assert_eq!(read.len(), acked.len());
    assert_acked_present(&acked, &read);
    assert!(broker.is_running());
    // Nothing on disk is corrupt: after kill -9, recovery cuts nothing acknowledged.
    broker.kill9();
    broker.spawn();
    let read = consume_all(&bootstrap, "fill", &[0]);
    assert_acked_present(&acked, &read);
    assert_eq!(read.len(), acked.len());
}
