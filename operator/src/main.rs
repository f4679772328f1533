//! `operator`: the Strand operator. `operator local` runs the cluster controller without
//! Kubernetes, its state in a local file (tests, bare metal, the local cluster).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use operator::controller::http;
use operator::controller::service::{Controller, Settings};
use operator::controller::store::FileStore;
use tracing::info;

#[derive(Parser)]
#[command(version, about = "Strand operator and cluster controller")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        /// A broker that misses heartbeats this long is fenced.
        #[arg(long, default_value_t = 9000)]
        session_timeout_ms: i64,
        /// Cluster id for a new cluster (default: random).
        #[arg(long)]
        cluster_id: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Local {
            state_dir,
            listen,
            session_timeout_ms,
            cluster_id,
        } => {
            std::fs::create_dir_all(&state_dir)
                .with_context(|| format!("cannot create {}", state_dir.display()))?;
            let store = FileStore::new(state_dir.join("controller.json"));
            let cluster_id =
                cluster_id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
            let controller = Arc::new(Controller::open(
                store,
                cluster_id,
                Settings { session_timeout_ms },
            )?);
            let ticker = tokio::spawn({
                let c = controller.clone();
                async move {
                    let mut every = tokio::time::interval(Duration::from_millis(500));
                    loop {
                        every.tick().await;
                        c.tick();
                    }
                }
            });
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            info!(%listen, state_dir = %state_dir.display(), "controller ready");
            axum::serve(listener, http::router(controller))
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
