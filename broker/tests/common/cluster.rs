//! A replicated cluster of real processes for fault tests: a controller and brokers on
//! loopback, started by e2e/local-cluster, with the signals, restarts, iptables cuts and admin
//! calls the tests use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

/// The cluster tests run one at a time: each runs four to five processes and a load on two
/// cores, and timing assertions (session timeouts) need the CPU.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Appends a line to the record of fault schedules run (printed by e2e/run-tests).
pub fn record(line: &str) {
    use std::io::Write;
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-schedules.log");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Every broker of a test cluster: a short ISR lag, and a small offsets topic whose groups
/// rebalance without the initial delay.
pub const BROKER_ARGS: &str = "--replica-lag-time-max-ms 4000 --offsets-topic-partitions 3 \
    --group-initial-rebalance-delay-ms 0";

/// A test's cluster directory (logs, data, pids); kept for a look afterwards with
/// STRAND_KEEP_TEST_DIRS=1 (its path is printed).
pub fn test_dir() -> tempfile::TempDir {
    let keep = std::env::var_os("STRAND_KEEP_TEST_DIRS").is_some_and(|v| v == "1");
    let dir = tempfile::Builder::new()
        .prefix("strand-cluster-")
        .disable_cleanup(keep)
        .tempdir()
        .unwrap();
    if keep {
        eprintln!("cluster directory (kept): {}", dir.path().display());
    }
    dir
}

/// The base port of test `slot`'s cluster (controller base, brokers base+10+i and
/// base+50+i). Every port stays in 18000-32767: below the kernel's ephemeral range, where a
/// client socket (or bash's connect loop connecting to itself) can take a port a broker is
/// about to listen on, and clear of the control plane's 14000-17999. The process id spreads
/// concurrent runs apart.
pub fn base_port(slot: u16) -> u16 {
    assert!(slot < 10);
    18000 + (std::process::id() % 70) as u16 * 200 + slot * 20
}

pub struct Cluster {
    pub dir: PathBuf,
    pub distinct_ips: bool,
    pub base: u16,
    pub bootstrap: String,
    /// The controller's token, when the cluster has a secret.
    pub token: Option<String>,
}

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/local-cluster")
}

/// The directory holding the broker and operator binaries (building the operator if needed).
pub fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_broker"))
        .parent()
        .unwrap()
        .to_path_buf();
    if !dir.join("operator").exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-p", "operator"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "building the operator failed");
    }
    dir
}

impl Cluster {
    pub fn up(dir: &Path, base: u16, brokers: usize) -> Self {
        Self::up_with(dir, base, brokers, false)
    }

    /// With `distinct_ips`, each broker uses its own loopback address (STRAND_DISTINCT_IPS).
    pub fn up_with(dir: &Path, base: u16, brokers: usize, distinct_ips: bool) -> Self {
        Self::up_full(
            dir,
            base,
            brokers,
            distinct_ips,
            "--session-timeout-ms 4000",
        )
    }

    /// With a cluster secret: brokers authenticate to each other and to the controller.
    pub fn up_secured(dir: &Path, base: u16, brokers: usize) -> Self {
        Self::launch(dir, base, brokers, false, "--session-timeout-ms 4000", true)
    }

    /// Broker N in rack `rack-N`, consumers sent to a replica in their rack (KIP-392).
    pub fn up_in_racks(dir: &Path, base: u16, brokers: usize) -> Self {
        let racks: Vec<String> = (0..brokers).map(|b| format!("rack-{b}")).collect();
        Self::launch_env(
            dir,
            base,
            brokers,
            false,
            "--session-timeout-ms 4000",
            false,
            &[
                ("STRAND_RACKS", racks.join(" ")),
                (
                    "STRAND_BROKER_ARGS",
                    format!(
                        "{BROKER_ARGS} --replica-selector-class \
                         org.apache.kafka.common.replica.RackAwareReplicaSelector"
                    ),
                ),
            ],
        )
    }

    pub fn up_full(
        dir: &Path,
        base: u16,
        brokers: usize,
        distinct_ips: bool,
        controller_args: &str,
    ) -> Self {
        Self::launch(dir, base, brokers, distinct_ips, controller_args, false)
    }

    pub fn launch(
        dir: &Path,
        base: u16,
        brokers: usize,
        distinct_ips: bool,
        controller_args: &str,
        secret: bool,
    ) -> Self {
        Self::launch_env(
            dir,
            base,
            brokers,
            distinct_ips,
            controller_args,
            secret,
            &[],
        )
    }

    /// `env` is set last, so it may replace the defaults (STRAND_BROKER_ARGS).
    pub fn launch_env(
        dir: &Path,
        base: u16,
        brokers: usize,
        distinct_ips: bool,
        controller_args: &str,
        secret: bool,
        env: &[(&str, String)],
    ) -> Self {
        let out = Command::new(script())
            .args([
                "up",
                "--brokers",
                &brokers.to_string(),
                "--base-port",
                &base.to_string(),
                "--dir",
            ])
            .arg(dir)
            .env("STRAND_BIN_DIR", bin_dir())
            .env("STRAND_DISTINCT_IPS", if distinct_ips { "1" } else { "0" })
            .env("STRAND_CONTROLLER_ARGS", controller_args)
            .env("STRAND_BROKER_ARGS", BROKER_ARGS)
            .env("STRAND_CLUSTER_SECRET", if secret { "1" } else { "0" })
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "cluster did not start: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bootstrap = stdout
            .lines()
            .last()
            .unwrap()
            .trim_start_matches("BOOTSTRAP=")
            .to_string();
        let token = secret.then(|| {
            std::fs::read_to_string(dir.join("controller-token"))
                .unwrap()
                .trim()
                .to_string()
        });
        Self {
            dir: dir.to_path_buf(),
            distinct_ips,
            base,
            bootstrap,
            token,
        }
    }

    pub fn pid(&self, broker: i32) -> u32 {
        std::fs::read_to_string(self.dir.join(format!("broker-{broker}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub fn kill9(&self, broker: i32) {
        super::signal(self.pid(broker), "KILL");
    }

    pub fn signal(&self, broker: i32, sig: &str) {
        super::signal(self.pid(broker), sig);
    }

    pub fn kill9_controller(&self) {
        let pid: u32 = std::fs::read_to_string(self.dir.join("controller.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        super::signal(pid, "KILL");
    }

    pub fn start_controller(&self) {
        self.start_controller_with("--session-timeout-ms 4000");
    }

    pub fn start_controller_with(&self, controller_args: &str) {
        let ok = Command::new(script())
            .args(["start-controller", "--dir"])
            .arg(&self.dir)
            .env("STRAND_BIN_DIR", bin_dir())
            .env("STRAND_CONTROLLER_ARGS", controller_args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "restarting the controller failed");
    }

    pub fn start_broker(&self, broker: i32) {
        let ok = Command::new(script())
            .args(["start-broker", "--id", &broker.to_string(), "--dir"])
            .arg(&self.dir)
            .env("STRAND_BIN_DIR", bin_dir())
            .env(
                "STRAND_DISTINCT_IPS",
                if self.distinct_ips { "1" } else { "0" },
            )
            .env("STRAND_BROKER_ARGS", BROKER_ARGS)
            .status()
            .unwrap()
            .success();
        assert!(ok, "restarting broker {broker} failed");
    }

    /// GET from broker `id`'s admin HTTP port.
    pub async fn broker_http(&self, id: i32, path: &str) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}{path}", self.base + 50 + id as u16);
        reqwest::get(url).await.unwrap().json().await.unwrap()
    }

    /// A counter or gauge from broker `id`'s /metrics (0 when absent or unreachable).
    pub async fn broker_metric(&self, id: i32, name: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.base + 50 + id as u16);
        let Ok(r) = reqwest::get(url).await else {
            return 0.0;
        };
        let body = r.text().await.unwrap_or_default();
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// A topic with replication factor 3 and min.insync.replicas 2.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        self.create_topic_with(name, partitions, 2).await
    }

    /// A topic with replication factor 3 and `min_insync` min.insync.replicas.
    pub async fn create_topic_with(&self, name: &str, partitions: i32, min_insync: i32) {
        self.create_topic_configured(name, partitions, min_insync, &[])
            .await
    }

    /// A topic with replication factor 3, `min_insync` min.insync.replicas and `configs`.
    pub async fn create_topic_configured(
        &self,
        name: &str,
        partitions: i32,
        min_insync: i32,
        configs: &[(&str, &str)],
    ) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let min_insync = min_insync.to_string();
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(3))
            .set("min.insync.replicas", &min_insync);
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        let res = admin
            .create_topics([&topic], &AdminOptions::new())
            .await
            .unwrap();
        assert!(res[0].is_ok(), "{res:?}");
    }

    /// A request to the controller, with its token when the cluster has one.
    pub fn controller(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("http://127.0.0.1:{}{path}", self.base);
        let req = reqwest::Client::new().request(method, url);
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    pub async fn metadata(&self) -> broker::metadata::ClusterMetadata {
        self.controller(reqwest::Method::GET, "/v1/metadata")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The controller's metadata, or None while it cannot answer (killed, restarting).
    pub async fn try_metadata(&self) -> Option<broker::metadata::ClusterMetadata> {
        let r = self
            .controller(reqwest::Method::GET, "/v1/metadata")
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// An admin call that may be refused (the reason is returned, nothing asserted).
    pub async fn try_admin(&self, path: &str, body: serde_json::Value) -> Result<(), String> {
        let r = self
            .controller(reqwest::Method::POST, &format!("/v1/admin/{path}"))
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "{}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ))
        }
    }

    pub async fn delete_topic(&self, name: &str) {
        let r = self
            .controller(reqwest::Method::DELETE, &format!("/v1/topics/{name}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "deleting {name}: {}", r.status());
    }

    /// Whether broker `id`'s process is alive (stopped counts as alive).
    pub fn is_running(&self, broker: i32) -> bool {
        process_alive(&self.dir.join(format!("broker-{broker}.pid")))
    }

    pub fn controller_running(&self) -> bool {
        process_alive(&self.dir.join("controller.pid"))
    }

    pub async fn leader_of(&self, topic: &str, partition: i32) -> i32 {
        self.metadata()
            .await
            .partition(topic, partition)
            .map_or(-1, |p| p.leader)
    }

    pub async fn admin(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let r = self
            .controller(reqwest::Method::POST, &format!("/v1/admin/{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "admin {path} failed: {}",
            r.text().await.unwrap()
        );
        r.json().await.unwrap()
    }

    /// Polls the controller's metadata until `f` holds (or panics after `secs`).
    pub async fn wait_for(
        &self,
        what: &str,
        secs: u64,
        f: impl Fn(&broker::metadata::ClusterMetadata) -> bool,
    ) {
        let started = std::time::Instant::now();
        let deadline = started + Duration::from_secs(secs);
        loop {
            let m = self.metadata().await;
            if f(&m) {
                eprintln!("{what}: after {} ms", started.elapsed().as_millis());
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}: {m:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["down", "--dir"])
            .arg(&self.dir)
            .status();
    }
}

/// iptables rules that cut one broker's address off from the controller and the other brokers
/// (both ways) while clients on 127.0.0.1 can still reach it. Removed on drop.
pub struct Isolation {
    rules: Vec<Vec<String>>,
}

impl Isolation {
    pub fn cut(ip: &str, others: &[String], controller_port: u16) -> Self {
        let mut rules = vec![
            [
                "INPUT",
                "-s",
                ip,
                "-d",
                "127.0.0.1",
                "-p",
                "tcp",
                "--dport",
                &controller_port.to_string(),
                "-j",
                "DROP",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for o in others {
            rules.push(
                ["INPUT", "-s", ip, "-d", o, "-j", "DROP"]
                    .map(String::from)
                    .to_vec(),
            );
            rules.push(
                ["INPUT", "-s", o, "-d", ip, "-j", "DROP"]
                    .map(String::from)
                    .to_vec(),
            );
        }
        for r in &rules {
            let ok = Command::new("iptables")
                .arg("-A")
                .args(r)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                ok,
                "iptables -A {r:?} failed (needs root and iptables; set STRAND_SKIP_ROOT_TESTS=1 to skip)"
            );
        }
        Self { rules }
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        for r in &self.rules {
            let _ = Command::new("iptables").arg("-D").args(r).status();
        }
    }
}

/// Whether the process whose id is in `pid_file` exists (`kill -0`; a zombie counts as gone
/// only once reaped, which the launching shell does).
fn process_alive(pid_file: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return false;
    };
    // A killed child of this process stays a zombie until waited for: read its state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
