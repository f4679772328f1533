//! The operator process on Kubernetes: health and metrics at once, the brokers' controller API,
//! then leader election; only while this replica holds the Lease do the reconcilers and the
//! cluster controllers run. Losing the Lease ends the process (the Deployment restarts it as a
//! follower), so a deposed leader never acts on stale state; SIGTERM releases the Lease first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry as Metrics;
use serde_json::json;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::controller::service::Settings;

use super::lease::Elector;
use super::registry::Registry;
use super::{Context, cluster, topic, user};
use crate::crd::{LogCluster, LogUser, ReplicatedTopic};

/// Label on the operator pod that holds the Lease; the controller Service selects it.
pub const LEADER_LABEL: &str = "strand.dev/controller-leader";

pub struct Options {
    /// Brokers' controller API (all clusters, under /clusters/<ns>/<name>).
    pub listen: SocketAddr,
    /// /healthz, /readyz, /metrics.
    pub http: SocketAddr,
    /// Controller URL as brokers reach it.
    pub controller_url: String,
    /// Lease name and namespace.
    pub lease_name: String,
    pub lease_namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// The pod to label while leading (needs POD_NAME/POD_NAMESPACE).
    pub pod: Option<(String, String)>,
    pub lease_duration: Duration,
    /// Each LogCluster's controller: session timeout, crash fast path, rebalance moves at
    /// once (0 turns scale-up rebalancing off).
    pub controller: Settings,
    /// Watch only this namespace (a namespaced install); None: every namespace.
    pub watch_namespace: Option<String>,
}

/// The API of `K` in the watched namespace, or in all of them.
fn scoped<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot configure a Kubernetes client (KUBECONFIG or in-cluster config)")?;
    let (leading_tx, leading) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let registry = Registry::new(leading.clone(), opts.controller.clone());

    // Health and metrics answer from the start, leader or not.
    let mut metrics = Metrics::default();
    let leader_gauge = Gauge::<i64, AtomicI64>::default();
    let clusters_gauge = Gauge::<i64, AtomicI64>::default();
    metrics.register(
        "strand_operator_leader",
        "1 while this replica holds the leader Lease",
        leader_gauge.clone(),
    );
    metrics.register(
        "strand_operator_clusters",
        "LogClusters whose controller runs in this replica",
        clusters_gauge.clone(),
    );
    let metrics = Arc::new(metrics);
    let http = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get({
                let metrics = metrics.clone();
                let registry = registry.clone();
                let leading = leading.clone();
                move || async move {
                    leader_gauge.set(i64::from(*leading.borrow()));
                    clusters_gauge.set(i64::try_from(registry.keys().await.len()).unwrap_or(0));
                    let mut out = String::new();
                    match encode(&mut out, &metrics) {
                        Ok(()) => out,
                        Err(e) => format!("# encoding failed: {e}\n"),
                    }
                }
            }),
        );
    let http_listener = tokio::net::TcpListener::bind(opts.http)
        .await
        .with_context(|| format!("cannot listen on {}", opts.http))?;
    let api_listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let mut s1 = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(http_listener, http)
            .with_graceful_shutdown(async move {
                let _ = s1.wait_for(|s| *s).await;
            })
            .await;
    });
    let mut s2 = stop.clone();
    let api_router = registry.router();
    tokio::spawn(async move {
        let _ = axum::serve(api_listener, api_router)
            .with_graceful_shutdown(async move {
                let _ = s2.wait_for(|s| *s).await;
            })
            .await;
    });
    info!(listen = %opts.listen, http = %opts.http, identity = %opts.identity, "operator started; waiting for the leader Lease");

    let elector = Elector {
        api: Api::namespaced(client.clone(), &opts.lease_namespace),
        name: opts.lease_name.clone(),
        identity: opts.identity.clone(),
        lease_duration: opts.lease_duration,
        renew_deadline: opts.lease_duration * 2 / 3,
        retry_period: opts.lease_duration / 7,
    };
    // A label left by an earlier process in this pod (killed while leading) would route
    // brokers here before we lead.
    if let Some((ns, pod)) = &opts.pod {
        label_pod(&client, ns, pod, false).await;
    }
    let mut election = tokio::spawn({
        let stop = stop.clone();
        async move { elector.run(leading_tx, stop).await }
    });

    let mut leading_rx = leading.clone();
    let stopped = tokio::select! {
        r = leading_rx.wait_for(|l| *l) => r.is_err(),
        _ = shutdown_signal() => true,
        r = &mut election => {
            anyhow::bail!("leader election ended before leading: {r:?}");
        }
    };
    if stopped {
        stop_tx.send_replace(true);
        let _ = election.await;
        return Ok(());
    }
    if let Some((ns, pod)) = &opts.pod {
        label_pod(&client, ns, pod, true).await;
    }

    let ctx_topics;
    let topic_controller = {
        let api: Api<ReplicatedTopic> = scoped(&client, &opts.watch_namespace);
        let c = Controller::new(api, watcher::Config::default());
        ctx_topics = c.store();
        c
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        registry: registry.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "strand-operator".into(),
                instance: Some(opts.identity.clone()),
            },
        ),
        controller_url: opts.controller_url.clone(),
        topics: ctx_topics,
    });
    let changes = || {
        futures::stream::unfold(registry.changes(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    };
    let cluster_controller = Controller::new(
        scoped::<LogCluster>(&client, &opts.watch_namespace),
        watcher::Config::default(),
    )
    .owns(
        scoped::<StatefulSet>(&client, &opts.watch_namespace),
        watcher::Config::default(),
    )
    .owns(
        scoped::<Service>(&client, &opts.watch_namespace),
        watcher::Config::default(),
    )
    .owns(
        scoped::<ConfigMap>(&client, &opts.watch_namespace),
        watcher::Config::default(),
    )
    .owns(
        scoped::<ServiceAccount>(&client, &opts.watch_namespace),
        watcher::Config::default(),
    )
    .owns(
        scoped::<PodDisruptionBudget>(&client, &opts.watch_namespace),
        watcher::Config::default(),
    );
    // Deleted LogClusters get no reconcile: sweep their controllers from the cache.
    let sweeper = tokio::spawn({
        let clusters = cluster_controller.store();
        let registry = registry.clone();
        async move {
            // Not `clusters.wait_until_ready()`: every clone of a store shares one readiness
            // oneshot with a single waker slot (kube-runtime 5.0), and the Controller's own wait
            // on it took that slot, so this wait was never woken and every deleted cluster's
            // controller ran on. Do not wait on a store a Controller also waits on. No wait is
            // needed: a controller is opened only by a reconcile of a LogCluster the store holds
            // (reconciles start once it is filled), and a re-list swaps the store whole.
            let mut every = tokio::time::interval(Duration::from_secs(10));
            loop {
                every.tick().await;
                registry
                    .retain(|ns, name| {
                        let keep = clusters
                            .get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
                            .is_some();
                        if !keep {
                            info!(logcluster = %format!("{ns}/{name}"), "LogCluster gone: its controller stopped");
                        }
                        keep
                    })
                    .await;
            }
        }
    });
    let cluster_loop = cluster_controller
        .reconcile_all_on(changes())
        .with_config(debounced())
        .graceful_shutdown_on(wait_stop(stop.clone()))
        .run(cluster::reconcile, cluster::error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                warn!(error = %e, "LogCluster reconcile error");
            }
        });
    let topic_loop = topic_controller
        .reconcile_all_on(changes())
        .with_config(debounced())
        .graceful_shutdown_on(wait_stop(stop.clone()))
        .run(topic::reconcile, topic::error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                warn!(error = %e, "ReplicatedTopic reconcile error");
            }
        });
    // A user's Secret is not watched (that needs list and watch on every Secret): a deleted
    // one is made again at the user's next periodic check. Nor are controller commits (unlike
    // topics, whose status shows leaders and ISRs): a user changes only with its resource.
    let user_loop = Controller::new(
        scoped::<LogUser>(&client, &opts.watch_namespace),
        watcher::Config::default(),
    )
    .with_config(debounced())
    .graceful_shutdown_on(wait_stop(stop.clone()))
    .run(user::reconcile, user::error_policy, ctx.clone())
    .for_each(|r| async move {
        if let Err(e) = r {
            warn!(error = %e, "LogUser reconcile error");
        }
    });
    let loops = tokio::spawn(async move {
        futures::join!(cluster_loop, topic_loop, user_loop);
    });
    info!("leading: reconciling LogClusters, ReplicatedTopics and LogUsers");

    let outcome = tokio::select! {
        _ = shutdown_signal() => Ok(()),
        r = &mut election => match r {
            Ok(Err(e)) => Err(anyhow::anyhow!(e)),
            other => Err(anyhow::anyhow!("leader election stopped: {other:?}")),
        },
    };
    if let Err(e) = &outcome {
        // Deposed: stop acting at once; the process exits and restarts as a follower.
        error!(error = %e, "lost leadership; exiting");
        return outcome;
    }
    info!("shutting down");
    // Stop serving and committing before the Lease is released, so the next leader never
    // overlaps with this one.
    registry.clear().await;
    if let Some((ns, pod)) = &opts.pod {
        label_pod(&client, ns, pod, false).await;
    }
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), loops).await;
    sweeper.abort();
    let _ = election.await;
    Ok(())
}

/// Bursts of controller commits (a failover moves many leaders) become one reconcile.
fn debounced() -> ControllerConfig {
    ControllerConfig::default().debounce(Duration::from_millis(500))
}

async fn wait_stop(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Marks (or unmarks) this pod as the leader, so the controller Service routes brokers to it.
async fn label_pod(client: &Client, ns: &str, pod: &str, leader: bool) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let value = if leader { json!("true") } else { json!(null) };
    let patch = json!({ "metadata": { "labels": { LEADER_LABEL: value } } });
    if let Err(e) = api
        .patch(pod, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        warn!(error = %e, %pod, "cannot label the operator pod");
    }
}
