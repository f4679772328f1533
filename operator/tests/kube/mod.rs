//! Helpers for tests against a real kube-apiserver (`e2e/control-plane up`, whose kubeconfig
//! `e2e/run-tests` passes in STRAND_TEST_KUBECONFIG): a client, a fresh namespace per test, the
//! CRDs applied from `crds/`, the operator and brokers as real processes.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{ApiResource, Discovery, Scope};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::Value;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The test cluster's kubeconfig, or None when the caller opted out of these tests.
pub fn kubeconfig() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STRAND_TEST_KUBECONFIG") {
        return Some(PathBuf::from(p));
    }
    if std::env::var_os("STRAND_SKIP_KUBE_TESTS").is_some() {
        eprintln!("STRAND_SKIP_KUBE_TESTS is set: skipping a test that needs a kube-apiserver");
        return None;
    }
    panic!(
        "this test needs a real kube-apiserver: run it through e2e/run-tests, or start one with \
         `e2e/control-plane up --dir DIR` and set STRAND_TEST_KUBECONFIG=DIR/kubeconfig \
         (STRAND_SKIP_KUBE_TESTS=1 skips it)"
    );
}

/// A scratch directory for logs and data; kept (and its path printed) when
/// STRAND_KEEP_TEST_DIRS is set, for looking at the logs of a failed run.
pub fn test_dir() -> tempfile::TempDir {
    let keep = std::env::var_os("STRAND_KEEP_TEST_DIRS").is_some();
    let dir = tempfile::Builder::new()
        .prefix("strand-kube-")
        .disable_cleanup(keep)
        .tempdir()
        .unwrap();
    if keep {
        eprintln!("test directory: {}", dir.path().display());
    }
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn client(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// Polls `check` until it returns Some, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every YAML document in `path`, as JSON values.
pub fn read_yaml(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// Applies the CRDs in `crds/` (as a user would with `kubectl apply -f crds/`) and waits until
/// the API server serves them.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut dir: Vec<_> = std::fs::read_dir(repo_root().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    dir.sort();
    assert!(!dir.is_empty(), "no CRDs in crds/");
    for path in dir {
        for doc in read_yaml(&path) {
            let name = doc["metadata"]["name"].as_str().unwrap().to_string();
            api.patch(
                &name,
                &PatchParams::apply("strand-tests").force(),
                &Patch::Apply(&doc),
            )
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
            wait_for(
                &format!("CRD {name} established"),
                Duration::from_secs(30),
                || {
                    let api = api.clone();
                    let name = name.clone();
                    async move {
                        let crd = api.get(&name).await.ok()?;
                        let established = crd
                            .status?
                            .conditions?
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True");
                        established.then_some(())
                    }
                },
            )
            .await;
        }
    }
}

/// A fresh namespace for one test.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name }
    }))
    .unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
    name
}

/// Creates (server-side apply) every object in `docs` in namespace `ns`.
pub async fn apply_docs(client: &Client, ns: &str, docs: &[Value]) -> Result<(), kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    for doc in docs {
        let api = dynamic_api(client, &discovery, ns, doc);
        let name = doc["metadata"]["name"].as_str().unwrap();
        api.patch(
            name,
            &PatchParams::apply("strand-tests").force(),
            &Patch::Apply(doc),
        )
        .await?;
    }
    Ok(())
}

/// Creates `doc` in `ns` (POST, so the API server validates it as new).
pub async fn create_doc(
    client: &Client,
    ns: &str,
    doc: &Value,
) -> Result<DynamicObject, kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let api = dynamic_api(client, &discovery, ns, doc);
    let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
    api.create(&PostParams::default(), &obj).await
}

pub async fn delete_doc(client: &Client, ns: &str, doc: &Value) -> Result<(), kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let api = dynamic_api(client, &discovery, ns, doc);
    api.delete(
        doc["metadata"]["name"].as_str().unwrap(),
        &DeleteParams::default(),
    )
    .await?;
    Ok(())
}

fn dynamic_api(
    client: &Client,
    discovery: &Discovery,
    ns: &str,
    doc: &Value,
) -> Api<DynamicObject> {
    let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            doc["apiVersion"].as_str().unwrap().to_string(),
        ),
    };
    let kind = doc["kind"].as_str().unwrap();
    let (ar, caps): (ApiResource, _) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.group == group && ar.version == version && ar.kind == kind)
        .unwrap_or_else(|| panic!("API server does not serve {group}/{version} {kind}"));
    match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), ns, &ar),
        Scope::Cluster => Api::all_with(client.clone(), &ar),
    }
}

/// The operator binary, run against the test cluster and watching one namespace.
pub struct OperatorProcess {
    child: Option<Child>,
    pub listen: SocketAddr,
    pub http: SocketAddr,
    pub identity: String,
    pub log: PathBuf,
}

impl OperatorProcess {
    pub fn start(kubeconfig: &Path, ns: &str, identity: &str, dir: &Path) -> Self {
        Self::start_on(kubeconfig, ns, identity, dir, None)
    }

    /// Starts with the controller API on `listen` (default: a free port).
    pub fn start_on(
        kubeconfig: &Path,
        ns: &str,
        identity: &str,
        dir: &Path,
        listen: Option<SocketAddr>,
    ) -> Self {
        let listen = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.join(format!("operator-{identity}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_operator"))
            .args(["--listen", &listen.to_string(), "--http", &http.to_string()])
            .args(["--watch-namespace", ns, "--lease-namespace", ns])
            .args(["--identity", identity, "--lease-duration-secs", "6"])
            .args(["--session-timeout-ms", "3000"])
            .env("KUBECONFIG", kubeconfig)
            .env_remove("POD_NAME")
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start operator");
        let p = Self {
            child: Some(child),
            listen,
            http,
            identity: identity.into(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(p.http).is_err() {
            assert!(
                Instant::now() < deadline,
                "operator did not start:\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    pub fn controller_url(&self, ns: &str, cluster: &str) -> String {
        format!("http://{}/clusters/{ns}/{cluster}", self.listen)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; true if it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        signal(c.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// The broker binary, built next to the operator by `cargo test --workspace`.
pub fn broker_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_operator")).with_file_name("broker");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p broker` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// A broker process on the host, member of a cluster through `controller`.
pub struct HostBroker {
    child: Option<Child>,
    pub id: i32,
    pub kafka: SocketAddr,
    pub http: SocketAddr,
    pub log: PathBuf,
}

/// A LogCluster's secret as a host broker needs it: a file, and the controller token.
pub struct ClusterSecretFile {
    pub path: PathBuf,
    pub token: String,
}

/// Waits for the Secret the operator creates with LogCluster `cluster` and writes it to a
/// file in `dir`.
pub async fn cluster_secret(c: &Client, ns: &str, cluster: &str, dir: &Path) -> ClusterSecretFile {
    use k8s_openapi::api::core::v1::Secret;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), ns);
    let name = format!("{cluster}-cluster-secret");
    let deadline = Instant::now() + Duration::from_secs(60);
    let value = loop {
        let found = secrets
            .get_opt(&name)
            .await
            .ok()
            .flatten()
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove("secret"));
        if let Some(v) = found {
            break v.0;
        }
        assert!(Instant::now() < deadline, "no Secret {ns}/{name}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let path = dir.join(format!("{cluster}-cluster-secret"));
    std::fs::write(&path, &value).unwrap();
    let token = broker::auth::ClusterSecret::from_bytes(&value)
        .expect("a valid cluster secret")
        .controller_token();
    ClusterSecretFile { path, token }
}

/// GET from a cluster's controller API with its token.
pub async fn controller_get(url: &str, token: &str) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
}

impl HostBroker {
    pub fn start(dir: &Path, id: i32, controller: &str, secret: &Path) -> Self {
        Self::start_with(dir, id, controller, secret, &[])
    }

    /// With `extra` flags (listeners, security settings).
    pub fn start_with(
        dir: &Path,
        id: i32,
        controller: &str,
        secret: &Path,
        extra: &[String],
    ) -> Self {
        let kafka = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.join(format!("broker-{id}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(broker_bin())
            .arg("--data-dir")
            .arg(dir.join(format!("broker-{id}")))
            .args(["--listen", &kafka.to_string(), "--http", &http.to_string()])
            .args(["--node-id", &id.to_string(), "--controller", controller])
            .args(["--replica-lag-time-max-ms", "3000"])
            .arg("--cluster-secret-file")
            .arg(secret)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start broker");
        Self {
            child: Some(child),
            id,
            kafka,
            http,
            log,
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for HostBroker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Condition `type_` of an object's status as (status, reason, message).
pub fn condition(obj: &Value, type_: &str) -> Option<(String, String, String)> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// Reads one object as JSON.
pub async fn get_json<K>(api: &Api<K>, name: &str) -> Option<Value>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let o = api.get_opt(name).await.ok()??;
    let _ = o.name_any();
    serde_json::to_value(o).ok()
}
