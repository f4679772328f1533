//! `operator`: the Strand operator. With no subcommand it runs against the Kubernetes cluster in
//! KUBECONFIG (or in-cluster config): leader election, the LogCluster and ReplicatedTopic
//! reconcilers and each cluster's controller. `operator local` runs one cluster controller
//! without Kubernetes, its state in a local file (tests, bare metal, the local cluster).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use operator::controller::http;
use operator::controller::service::{Controller, DEFAULT_REBALANCE_MAX_MOVES, Settings};
use operator::controller::store::FileStore;
use tracing::info;

#[derive(Parser)]
#[command(version, about = "Strand operator and cluster controller")]
struct Cli {
    /// Log format: text or json (use json in containers).
    #[arg(long, global = true, default_value = "text", env = "STRAND_LOG_FORMAT")]
    log_format: String,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    kube: KubeArgs,
}

/// Running on Kubernetes (no subcommand).
#[derive(clap::Args)]
struct KubeArgs {
    /// Address of the brokers' controller API (every cluster under /clusters/<ns>/<name>).
    #[arg(long, default_value = "0.0.0.0:9190")]
    listen: SocketAddr,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http: SocketAddr,
    /// The controller API's URL as brokers reach it (the Helm chart sets it to its Service).
    /// Default outside a pod: http://127.0.0.1:<listen port>.
    #[arg(long, env = "STRAND_CONTROLLER_URL")]
    controller_url: Option<String>,
    /// Name of the leader-election Lease (the Helm chart sets it to the release's name).
    #[arg(long, env = "STRAND_LEASE_NAME", default_value = "strand-operator")]
    lease_name: String,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// A leader that stops renewing is replaced after this long.
    #[arg(long, default_value_t = 15)]
    lease_duration_secs: u64,
    /// Manage only this namespace's LogClusters and ReplicatedTopics (default: all).
    #[arg(long, env = "WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    #[command(flatten)]
    controller: ControllerArgs,
}

/// How a cluster controller fences brokers and moves partitions, in either mode.
#[derive(clap::Args)]
struct ControllerArgs {
    /// A broker that misses heartbeats this long is fenced.
    #[arg(long, env = "STRAND_SESSION_TIMEOUT_MS", default_value_t = 9000)]
    session_timeout_ms: i64,
    /// The crash fast path: a broker whose metadata watch closed from its side (its process
    /// died, so its kernel closed the socket) and was not reopened within this many ms is
    /// fenced without waiting for its session. A stopped or cut-off broker still waits out the
    /// session. 0 turns it off.
    #[arg(long, env = "STRAND_CRASH_FENCE_GRACE_MS", default_value_t = 300)]
    crash_fence_grace_ms: u64,
    /// Partitions a rebalance moves at once: a scale-up on Kubernetes, POST
    /// /v1/admin/rebalance or --auto-rebalance locally; 0 leaves new brokers empty.
    #[arg(long, default_value_t = DEFAULT_REBALANCE_MAX_MOVES)]
    rebalance_max_moves: usize,
}

impl ControllerArgs {
    fn settings(&self) -> Settings {
        Settings {
            session_timeout_ms: self.session_timeout_ms,
            rebalance_max_moves: self.rebalance_max_moves,
            crash_fence_grace: (self.crash_fence_grace_ms > 0)
                .then(|| Duration::from_millis(self.crash_fence_grace_ms)),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the cluster controller without Kubernetes, state in a local file.
    Local {
        /// Directory for the controller state file (controller.json).
        #[arg(long, default_value = "./controller")]
        state_dir: PathBuf,
        /// Address of the controller's HTTP API (brokers and admin).
        #[arg(long, default_value = "127.0.0.1:9190")]
        listen: SocketAddr,
        /// Cluster id for a new cluster (default: random).
        #[arg(long)]
        cluster_id: Option<String>,
        #[command(flatten)]
        controller: ControllerArgs,
        /// Rebalance whenever a broker that was not live before registers (the set of live
        /// brokers is all this mode knows of the cluster, so a restarted broker counts too).
        #[arg(long)]
        auto_rebalance: bool,
        /// The secret this cluster's brokers and controller share (see the broker's flag of
        /// the same name): with it, every route but /healthz needs the controller token.
        #[arg(long, env = "STRAND_CLUSTER_SECRET_FILE")]
        cluster_secret_file: Option<PathBuf>,
    },
    /// Print the controller token derived from a cluster secret, for admin calls with curl
    /// (`-H "Authorization: Bearer $(operator controller-token --cluster-secret-file F)"`).
    ControllerToken {
        #[arg(long, env = "STRAND_CLUSTER_SECRET_FILE")]
        cluster_secret_file: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format.as_str() {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => anyhow::bail!("--log-format must be text or json, not {other:?}"),
    }
    match cli.command {
        None => run_on_kubernetes(cli.kube).await,
        Some(Command::ControllerToken {
            cluster_secret_file,
        }) => {
            let secret = broker::auth::ClusterSecret::load(&cluster_secret_file)?;
            println!("{}", secret.controller_token());
            Ok(())
        }
        Some(Command::Local {
            state_dir,
            listen,
            cluster_id,
            controller,
            auto_rebalance,
            cluster_secret_file,
        }) => {
            let secret = match &cluster_secret_file {
                Some(path) => Some(Arc::new(broker::auth::ClusterSecret::load(path)?)),
                None => None,
            };
            std::fs::create_dir_all(&state_dir)
                .with_context(|| format!("cannot create {}", state_dir.display()))?;
            let store = FileStore::new(state_dir.join("controller.json"));
            let cluster_id =
                cluster_id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
            let controller =
                Arc::new(Controller::open(store, cluster_id, controller.settings()).await?);
            let ticker = tokio::spawn({
                let c = controller.clone();
                async move {
                    let mut every = tokio::time::interval(Duration::from_millis(500));
                    loop {
                        every.tick().await;
                        c.tick().await;
                        c.rebalance_live_brokers(auto_rebalance).await;
                    }
                }
            });
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            info!(%listen, state_dir = %state_dir.display(), "controller ready");
            let router = match secret {
                Some(secret) => http::require_token(http::router(controller), secret),
                None => http::router(controller),
            };
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    use tokio::signal::unix::{SignalKind, signal};
                    match signal(SignalKind::terminate()) {
                        Ok(mut term) => {
                            tokio::select! {
                                _ = term.recv() => {}
                                _ = tokio::signal::ctrl_c() => {}
                            }
                        }
                        // Without a SIGTERM handler, Ctrl-C (and SIGKILL) still stop it.
                        Err(_) => {
                            let _ = tokio::signal::ctrl_c().await;
                        }
                    }
                    info!("shutting down");
                })
                .await?;
            ticker.abort();
            Ok(())
        }
    }
}

async fn run_on_kubernetes(a: KubeArgs) -> anyhow::Result<()> {
    let in_pod = std::env::var_os("POD_NAME").is_some();
    let controller_url = match a.controller_url {
        Some(u) => u,
        None if in_pod => anyhow::bail!(
            "STRAND_CONTROLLER_URL (or --controller-url) must name the controller Service the brokers use"
        ),
        None => format!("http://127.0.0.1:{}", a.listen.port()),
    };
    let identity = a.identity.unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "operator".into());
        format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
    });
    let pod = std::env::var("POD_NAME")
        .ok()
        .map(|p| (a.lease_namespace.clone(), p));
    operator::k8s::run::run(operator::k8s::run::Options {
        listen: a.listen,
        http: a.http,
        controller_url,
        lease_name: a.lease_name,
        lease_namespace: a.lease_namespace,
        identity,
        pod,
        lease_duration: Duration::from_secs(a.lease_duration_secs.max(3)),
        controller: a.controller.settings(),
        watch_namespace: a.watch_namespace.filter(|n| !n.is_empty()),
    })
    .await
}
