//! One attack of `bench/abuse.sh` against a running broker (Strand or Kafka), with a
//! well-behaved client measured beside it. Not a test: it prints figures, it asserts nothing.
//!
//!   cargo run --release -p broker --example abuse -- BOOTSTRAP PID ATTACK SECONDS
//!
//! ATTACK: half-sent (20 connections each announce a ~100 MiB request, send half, go silent),
//! pipelined-fetch (5 connections each pipeline 150 fetches of 10 MiB and never read),
//! parked-fetch (100 long polls with min bytes 2^31-1 and max bytes 50 MiB while records
//! arrive), zstd-bomb (2 connections producing batches that inflate past 256 MiB),
//! wide-topic (CreateTopics of one topic with 10,000 partitions), greedy (4 connections of
//! client id `abuse-greedy` producing 512 KiB batches, acks=1, as fast as they are answered),
//! greedy-quota (the same after an AlterClientQuotas of producer_byte_rate 1 MiB/s for that
//! client id), or none (baseline). The greedy attacks also report the bytes/s the attacker got
//! written.
//!
//! Meanwhile the well-behaved client, on connections of its own, times an ApiVersions round
//! trip and a produce (acks=1, one 1 KiB record) followed by a fetch of that record, every
//! 20 ms; a sampler reads the broker's resident set (VmRSS of PID) every 100 ms. Prints one
//! line of JSON: the attack, peak and starting RSS in MiB, p50/p99/max of both timings in ms,
//! and how many probes failed (no answer within 10 s, or an error code).

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use broker::protocol::batch::test_support::batch;
use broker::protocol::frames::{call, consumer_fetch, frame, frame_as, read_response};
use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, CreateTopicsRequest, FetchRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const PROBE_TOPIC: &str = "abuse-probe";
const DATA_TOPIC: &str = "abuse-data";
const BOMB_TOPIC: &str = "abuse-bomb";
const GREEDY_TOPIC: &str = "abuse-greedy";
const GREEDY_CLIENT: &str = "abuse-greedy";
/// What greedy-quota allows the greedy client id.
const GREEDY_QUOTA: f64 = MIB as f64;
const MIB: usize = 1 << 20;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn create_topic(addr: SocketAddr, name: &str, partitions: i32, timeout: Duration) -> i16 {
    let mut t = CreatableTopic::default();
    t.name = topic_name(name);
    t.num_partitions = partitions;
    t.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = timeout.as_millis() as i32;
    call(addr, &req, 5, timeout).map_or(-1, |r| r.topics[0].error_code)
}

fn produce_request(topic: &str, partition: i32, records: Bytes) -> ProduceRequest {
    let mut data = PartitionProduceData::default();
    data.index = partition;
    data.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = topic_name(topic);
    t.partition_data = vec![data];
    let mut req = ProduceRequest::default();
    req.acks = 1;
    req.timeout_ms = 10_000;
    req.topic_data = vec![t];
    req
}

/// Produces one batch on `s`; the base offset, or None on an error or no answer.
fn produce_on(s: &mut TcpStream, req: &ProduceRequest, cid: i32) -> Option<i64> {
    s.write_all(&frame(req, 8, cid)).ok()?;
    let r = read_response::<ProduceRequest>(s, 8)?;
    let p = &r.responses.first()?.partition_responses.first()?;
    (p.error_code == 0).then_some(p.base_offset)
}

fn now_ms() -> i64 {
    broker::clock::now_ms()
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The well-behaved client: ApiVersions, and produce then fetch, every 20 ms.
struct Probe {
    api_ms: Vec<f64>,
    produce_fetch_ms: Vec<f64>,
    failures: u64,
}

fn probe(addr: SocketAddr, stop: Arc<AtomicBool>) -> Probe {
    let mut out = Probe {
        api_ms: Vec::new(),
        produce_fetch_ms: Vec::new(),
        failures: 0,
    };
    let timeout = Some(Duration::from_secs(10));
    let connect = || -> Option<TcpStream> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).ok()?;
        s.set_read_timeout(timeout).ok()?;
        s.set_nodelay(true).ok()?;
        Some(s)
    };
    let (mut api, mut data) = (connect(), connect());
    let value = 1024;
    let mut cid = 0;
    while !stop.load(Ordering::Relaxed) {
        cid += 1;
        let started = Instant::now();
        let ok = api.as_mut().is_some_and(|s| {
            s.write_all(&frame(&ApiVersionsRequest::default(), 3, cid))
                .is_ok()
                && read_response::<ApiVersionsRequest>(s, 3).is_some()
        });
        if ok {
            out.api_ms.push(started.elapsed().as_secs_f64() * 1e3);
        } else {
            out.failures += 1;
            api = connect();
        }
        let started = Instant::now();
        let records = Bytes::from(batch(1, now_ms(), (-1, -1, -1), value));
        let ok = data.as_mut().is_some_and(|s| {
            let Some(offset) = produce_on(s, &produce_request(PROBE_TOPIC, 0, records), cid) else {
                return false;
            };
            let req = consumer_fetch(PROBE_TOPIC, 0, offset, 1, 5_000, MIB as i32, "");
            s.write_all(&frame(&req, 4, cid)).is_ok()
                && read_response::<FetchRequest>(s, 4).is_some_and(|r| {
                    r.responses[0].partitions[0]
                        .records
                        .as_ref()
                        .is_some_and(|b| !b.is_empty())
                })
        });
        if ok {
            out.produce_fetch_ms
                .push(started.elapsed().as_secs_f64() * 1e3);
        } else {
            out.failures += 1;
            data = connect();
        }
        thread::sleep(Duration::from_millis(20));
    }
    out
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}

/// A zstd batch whose records inflate to 300 MiB from a few hundred KiB.
fn zstd_bomb() -> Bytes {
    const HEADER_LEN: usize = 61;
    let plain = batch(300, now_ms(), (-1, -1, -1), MIB);
    let compressed = zstd::encode_all(&plain[HEADER_LEN..], 1).expect("zstd");
    let mut b = plain[..HEADER_LEN].to_vec();
    b.extend(compressed);
    b[21..23].copy_from_slice(&4i16.to_be_bytes());
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// Sets `producer_byte_rate` for the greedy client id (Kafka's AlterClientQuotas, v0).
fn limit_greedy(addr: SocketAddr) {
    use kafka_protocol::messages::AlterClientQuotasRequest;
    use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
    let mut entity = EntityData::default();
    entity.entity_type = StrBytes::from_static_str("client-id");
    entity.entity_name = Some(StrBytes::from_static_str(GREEDY_CLIENT));
    let mut op = OpData::default();
    op.key = StrBytes::from_static_str("producer_byte_rate");
    op.value = GREEDY_QUOTA;
    let mut entry = EntryData::default();
    entry.entity = vec![entity];
    entry.ops = vec![op];
    let mut req = AlterClientQuotasRequest::default();
    req.entries = vec![entry];
    let code = call(addr, &req, 0, Duration::from_secs(30)).map(|r| r.entries[0].error_code);
    assert_eq!(code, Some(0), "AlterClientQuotas for {GREEDY_CLIENT}");
}

/// Record bytes the greedy attackers got written.
static GREEDY_BYTES: AtomicU64 = AtomicU64::new(0);

/// Starts the attack's threads; they run until `stop`.
fn attack(name: &str, addr: SocketAddr, stop: Arc<AtomicBool>) -> Vec<thread::JoinHandle<()>> {
    let spawn = |n: usize, f: Arc<dyn Fn(Arc<AtomicBool>) + Send + Sync>| -> Vec<_> {
        (0..n)
            .map(|_| {
                let (f, stop) = (Arc::clone(&f), Arc::clone(&stop));
                thread::spawn(move || f(stop))
            })
            .collect()
    };
    let hold = |stop: &AtomicBool| {
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(100));
        }
    };
    match name {
        "none" => Vec::new(),
        "half-sent" => spawn(
            20,
            Arc::new(move |stop| {
                let Ok(mut s) = TcpStream::connect(addr) else {
                    return;
                };
                let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                // Just under Kafka's socket.request.max.bytes default (100 MiB).
                let _ = s.write_all(&(100 * MIB as i32 - 1024).to_be_bytes());
                let chunk = vec![0u8; MIB];
                for _ in 0..50 {
                    if stop.load(Ordering::Relaxed) || s.write_all(&chunk).is_err() {
                        break;
                    }
                }
                hold(&stop);
            }),
        ),
        "pipelined-fetch" => spawn(
            5,
            Arc::new(move |stop| {
                let Ok(mut s) = TcpStream::connect(addr) else {
                    return;
                };
                let req = consumer_fetch(DATA_TOPIC, 0, 0, 1, 0, 10 * MIB as i32, "");
                let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                for cid in 0..150 {
                    if s.write_all(&frame(&req, 4, cid)).is_err() {
                        break;
                    }
                }
                hold(&stop);
            }),
        ),
        "parked-fetch" => {
            let mut threads = spawn(
                100,
                Arc::new(move |stop| {
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        return;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(40)));
                    let req =
                        consumer_fetch(DATA_TOPIC, 0, 0, i32::MAX, 30_000, 50 * MIB as i32, "");
                    let mut cid = 0;
                    while !stop.load(Ordering::Relaxed) {
                        cid += 1;
                        if s.write_all(&frame(&req, 4, cid)).is_err()
                            || read_response::<FetchRequest>(&mut s, 4).is_none()
                        {
                            break;
                        }
                    }
                }),
            );
            // Records keep arriving, so the high watermark keeps moving under the polls.
            threads.extend(spawn(
                1,
                Arc::new(move |stop| {
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        return;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut cid = 0;
                    while !stop.load(Ordering::Relaxed) {
                        cid += 1;
                        let records = Bytes::from(batch(1, now_ms(), (-1, -1, -1), 1024));
                        produce_on(&mut s, &produce_request(DATA_TOPIC, 0, records), cid);
                        thread::sleep(Duration::from_millis(5));
                    }
                }),
            ));
            threads
        }
        "zstd-bomb" => {
            let bomb = zstd_bomb();
            spawn(
                2,
                Arc::new(move |stop| {
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        return;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                    let req = produce_request(BOMB_TOPIC, 0, bomb.clone());
                    let mut cid = 0;
                    while !stop.load(Ordering::Relaxed) {
                        cid += 1;
                        if s.write_all(&frame(&req, 8, cid)).is_err()
                            || read_response::<ProduceRequest>(&mut s, 8).is_none()
                        {
                            break;
                        }
                    }
                }),
            )
        }
        "greedy" | "greedy-quota" => {
            if name == "greedy-quota" {
                limit_greedy(addr);
            }
            // Under max.message.bytes (1 MiB on both brokers).
            let records = Bytes::from(batch(1, now_ms(), (-1, -1, -1), MIB / 2));
            spawn(
                4,
                Arc::new(move |stop| {
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        return;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                    let req = produce_request(GREEDY_TOPIC, 0, records.clone());
                    let mut cid = 0;
                    while !stop.load(Ordering::Relaxed) {
                        cid += 1;
                        if s.write_all(&frame_as(&req, 8, cid, GREEDY_CLIENT)).is_err() {
                            break;
                        }
                        match read_response::<ProduceRequest>(&mut s, 8) {
                            Some(r) if r.responses[0].partition_responses[0].error_code == 0 => {
                                GREEDY_BYTES.fetch_add(records.len() as u64, Ordering::Relaxed);
                            }
                            Some(_) => {}
                            None => break,
                        }
                    }
                }),
            )
        }
        "wide-topic" => spawn(
            1,
            Arc::new(move |_stop| {
                let code = create_topic(addr, "abuse-wide", 10_000, Duration::from_secs(120));
                eprintln!("abuse: CreateTopics of 10,000 partitions answered with code {code}");
            }),
        ),
        other => {
            eprintln!("abuse: unknown attack {other}");
            std::process::exit(2);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: abuse BOOTSTRAP PID ATTACK SECONDS");
        std::process::exit(2);
    }
    let addr = args[1]
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("bad bootstrap address {}", args[1]));
    let pid: u32 = args[2].parse().expect("PID");
    let name = args[3].clone();
    let seconds: u64 = args[4].parse().expect("SECONDS");

    // Topics, and data for the fetch attacks (12 MiB in 100 KiB batches).
    for (topic, partitions) in [
        (PROBE_TOPIC, 1),
        (DATA_TOPIC, 1),
        (BOMB_TOPIC, 1),
        (GREEDY_TOPIC, 1),
    ] {
        create_topic(addr, topic, partitions, Duration::from_secs(30));
    }
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut written = 0;
    while written < 120 {
        let records = Bytes::from(batch(1, now_ms(), (-1, -1, -1), 100 * 1024));
        if produce_on(&mut s, &produce_request(DATA_TOPIC, 0, records), written).is_some() {
            written += 1;
        } else {
            assert!(Instant::now() < deadline, "cannot produce to {DATA_TOPIC}");
            thread::sleep(Duration::from_millis(200));
            s = TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        }
    }
    drop(s);

    let start_rss = rss_mib(pid).unwrap_or(f64::NAN);
    let stop = Arc::new(AtomicBool::new(false));
    let peak_kib = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak_kib));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(mib) = rss_mib(pid) {
                    peak.fetch_max((mib * 1024.0) as u64, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let prober = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || probe(addr, stop))
    };
    let attackers = attack(&name, addr, Arc::clone(&stop));
    thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let p = prober.join().expect("probe");
    let _ = sampler.join();
    // Attack threads blocked in a read or write end with their sockets when this exits.
    drop(attackers);
    let (a50, a99, amax) = percentiles(p.api_ms);
    let (f50, f99, fmax) = percentiles(p.produce_fetch_ms);
    let greedy = GREEDY_BYTES.load(Ordering::Relaxed) as f64 / MIB as f64 / seconds as f64;
    println!(
        "{{\"attack\":\"{name}\",\"rss_start_mib\":{start_rss:.0},\"rss_peak_mib\":{:.0},\"api_versions_ms\":[{a50:.1},{a99:.1},{amax:.1}],\"produce_fetch_ms\":[{f50:.1},{f99:.1},{fmax:.1}],\"probe_failures\":{},\"attacker_mib_per_s\":{greedy:.2}}}",
        peak_kib.load(Ordering::Relaxed) as f64 / 1024.0,
        p.failures
    );
    std::process::exit(0);
}
