//! librdkafka (through the `rdkafka` crate) helpers for process tests: produce with delivery
//! reports, and read a partition from the start up to its high watermark.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// One record as acknowledged or as read: (partition, offset) -> (key, value).
pub type Records = BTreeMap<(i32, i64), (String, String)>;

pub fn producer(bootstrap: &str, settings: &[(&str, &str)]) -> FutureProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    for (k, v) in settings {
        c.set(*k, *v);
    }
    c.create().expect("producer")
}

/// Sends `n` keyed records and waits for every delivery report; panics on a failed delivery.
pub async fn produce(p: &FutureProducer, topic: &str, prefix: &str, n: usize) -> Records {
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("{prefix}-k{}", i % 17);
        let value = format!("{prefix}-v{i}");
        let fut = p
            .send_result(FutureRecord::to(topic).key(&key).payload(&value))
            .map_err(|(e, _)| e)
            .expect("enqueue");
        pending.push((key, value, fut));
    }
    let mut acked = Records::new();
    for (key, value, fut) in pending {
        let d = fut
            .await
            .expect("delivery future")
            .unwrap_or_else(|(e, _)| panic!("delivery of {value} failed: {e}"));
        assert!(
            acked
                .insert((d.partition, d.offset), (key, value))
                .is_none(),
            "two records acknowledged at one offset"
        );
    }
    acked
}

pub fn consumer(bootstrap: &str) -> BaseConsumer {
    consumer_with(bootstrap, &[])
}

/// A consumer with extra librdkafka `settings`.
pub fn consumer_with(bootstrap: &str, settings: &[(&str, &str)]) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        // librdkafka needs a group id even for assign(); nothing is committed.
        .set("group.id", "strand-tests")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    config.create().expect("consumer")
}

/// Reads `partitions` of `topic` from the beginning to their high watermarks.
pub fn consume_all(bootstrap: &str, topic: &str, partitions: &[i32]) -> Records {
    consume_all_with(bootstrap, &[], topic, partitions)
}

/// [`consume_all`] by a consumer with extra librdkafka `settings`.
pub fn consume_all_with(
    bootstrap: &str,
    settings: &[(&str, &str)],
    topic: &str,
    partitions: &[i32],
) -> Records {
    let c = consumer_with(bootstrap, settings);
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        let (_, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(20))
            .expect("watermarks");
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Records::new();
    let mut next: BTreeMap<i32, i64> = partitions.iter().map(|p| (*p, 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while next.iter().any(|(p, n)| *n < ends[p]) {
        assert!(
            Instant::now() < deadline,
            "timed out reading {topic}: at {next:?}, want {ends:?}"
        );
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("consume");
        let key = m
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let value = m
            .payload()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        assert!(
            out.insert((m.partition(), m.offset()), (key, value))
                .is_none(),
            "offset served twice"
        );
        next.insert(m.partition(), m.offset() + 1);
    }
    out
}

/// Every acknowledged record is read back at its offset (or, when the client did not learn the
/// offset, somewhere in its partition).
pub fn assert_acked_read_back(acked: &Records, read: &Records) {
    for (at, rec) in acked {
        if at.1 < 0 {
            let found = read.iter().any(|((p, _), r)| *p == at.0 && r == rec);
            assert!(
                found,
                "acknowledged record {rec:?} (offset not reported) missing from partition {}",
                at.0
            );
            continue;
        }
        assert_eq!(
            read.get(at),
            Some(rec),
            "acknowledged record at {at:?} missing or different"
        );
    }
}

/// Jepsen-style check: every acknowledged record is read back at its offset (or, when the
/// client did not learn the offset, somewhere in its partition), no offset holds two values,
/// and no value appears twice.
pub fn assert_acked_present(acked: &Records, read: &Records) {
    assert_acked_read_back(acked, read);
    if let Some(d) = duplicates(read).first() {
        let acked_at: Vec<_> = acked
            .iter()
            .filter(|(_, r)| r.1 == d.value)
            .map(|(a, _)| *a)
            .collect();
        panic!(
            "value {:.60} stored twice: at {:?} and {:?} (partition, offset); acknowledged at {acked_at:?}",
            d.value, d.first, d.second
        );
    }
}

/// A value read back at two places, (partition, offset) each.
#[derive(Debug, Clone)]
pub struct Duplicate {
    pub value: String,
    pub first: (i32, i64),
    pub second: (i32, i64),
}

/// Every value `read` holds more than once (the load's values are unique).
pub fn duplicates(read: &Records) -> Vec<Duplicate> {
    let mut values = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (at, rec) in read {
        if let Some(first) = values.insert(&rec.1, *at) {
            out.push(Duplicate {
                value: rec.1.clone(),
                first,
                second: *at,
            });
        }
    }
    out
}

/// Producer settings of the load in fault tests: Kafka's defaults for Java clients
/// (idempotent, acks=all), and patience through failovers.
pub const ACKS_ALL_IDEMPOTENT: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "2"),
    ("message.timeout.ms", "120000"),
];

/// Starts a producer (with `settings`) writing keyed values `v<i>` (key `k<i % 50>`) to
/// `topic` until `stop`; acknowledged records are collected in `acked`; any failed delivery is
/// recorded. Returns how many records were handed to the producer.
pub fn start_load(
    bootstrap: &str,
    settings: &[(&str, &str)],
    topic: &'static str,
    acked: Arc<Mutex<Records>>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let p = producer(bootstrap, settings);
    tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let (key, value) = (format!("k{}", i % 50), format!("v{i}"));
            match p.send_result(FutureRecord::to(topic).key(&key).payload(&value)) {
                Ok(fut) => pending.push(tokio::spawn({
                    let (acked, failures) = (acked.clone(), failures.clone());
                    let index = i as i64;
                    async move {
                        match fut.await {
                            Ok(Ok(d)) => {
                                // librdkafka reports some retried deliveries as persisted with
                                // an unknown offset (-1001); they are keyed by a unique negative
                                // number and looked up by value.
                                let offset = if d.offset >= 0 { d.offset } else { -2 - index };
                                let prev = acked
                                    .lock()
                                    .unwrap()
                                    .insert((d.partition, offset), (key.clone(), value.clone()));
                                assert!(
                                    prev.is_none(),
                                    "two acknowledgements for {}-{}: {prev:?} and {value}",
                                    d.partition,
                                    d.offset
                                );
                            }
                            Ok(Err((e, _))) => failures.lock().unwrap().push(e.to_string()),
                            Err(_) => failures
                                .lock()
                                .unwrap()
                                .push("delivery future cancelled".into()),
                        }
                    }
                })),
                Err(_) => {
                    // The producer's queue is full: let it drain.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            }
            i += 1;
            if i.is_multiple_of(100) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        for t in pending {
            t.await.unwrap();
        }
        i
    })
}

/// A running load (see [`start_load`]) and what it has seen so far.
pub struct Load {
    pub acked: Arc<Mutex<Records>>,
    pub failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<u64>,
}

impl Load {
    pub fn start(bootstrap: &str, settings: &[(&str, &str)], topic: &'static str) -> Self {
        let (acked, failures, stop) = (
            Arc::<Mutex<Records>>::default(),
            Arc::<Mutex<Vec<String>>>::default(),
            Arc::new(AtomicBool::new(false)),
        );
        let handle = start_load(
            bootstrap,
            settings,
            topic,
            acked.clone(),
            failures.clone(),
            stop.clone(),
        );
        Self {
            acked,
            failures,
            stop,
            handle,
        }
    }

    /// The flag that stops the producer (for a guard that stops it if a test fails first).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops the load and waits for every delivery, then checks the Jepsen way: no delivery
    /// failed, every acknowledged record is read back at its offset, no value is stored
    /// twice, every stored load record was sent. Returns (records sent, acknowledged, read back).
    pub async fn finish(
        self,
        bootstrap: &str,
        topic: &str,
        partitions: &[i32],
    ) -> (u64, Records, Records) {
        let (sent, acked, read, twice) = self
            .finish_listing_duplicates(bootstrap, topic, partitions)
            .await;
        if !twice.is_empty() {
            assert_acked_present(&acked, &read);
        }
        (sent, acked, read)
    }

    /// `finish`, except that values stored twice are returned instead of failing the check,
    /// for a caller that tells a client's re-send from a broker's double append.
    pub async fn finish_listing_duplicates(
        self,
        bootstrap: &str,
        topic: &str,
        partitions: &[i32],
    ) -> (u64, Records, Records, Vec<Duplicate>) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = tokio::time::timeout(Duration::from_secs(150), self.handle)
            .await
            .expect("producer drained")
            .unwrap();
        let acked = self.acked.lock().unwrap().clone();
        let failures = self.failures.lock().unwrap().clone();
        if !failures.is_empty() {
            // A failed delivery can hide a lost acknowledged write (an idempotent producer
            // gets OUT_OF_ORDER_SEQUENCE_NUMBER past a hole): say which were read back.
            let read = consume_all(bootstrap, topic, partitions);
            let missing: Vec<_> = acked
                .iter()
                .filter(|(at, rec)| match at.1 {
                    o if o < 0 => !read.iter().any(|((p, _), r)| *p == at.0 && r == *rec),
                    _ => read.get(at) != Some(*rec),
                })
                .take(5)
                .collect();
            panic!(
                "{} deliveries failed, e.g. {:?}; of {} acknowledged records, these (first 5) were not read back: {missing:?}",
                failures.len(),
                &failures[..failures.len().min(3)],
                acked.len()
            );
        }
        assert!(
            acked.len() > 100,
            "too little load: {} acknowledged of {sent}",
            acked.len()
        );
        let read = consume_all(bootstrap, topic, partitions);
        assert_acked_read_back(&acked, &read);
        // Every stored value was sent by the load: nothing invented, torn or doubled.
        for (key, value) in read.values().filter(|(k, _)| k.starts_with('k')) {
            let i: u64 = value
                .get(1..)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("garbage value {value:?}"));
            assert!(
                i < sent && *key == format!("k{}", i % 50),
                "unexpected record {key}={value}"
            );
        }
        let twice = duplicates(&read);
        (sent, acked, read, twice)
    }
}
