//! Admin HTTP (axum): /healthz (the process is up), /readyz (logs loaded, Kafka listener
//! bound), /metrics (Prometheus text), /v1/partitions (per hosted partition: role, offsets,
//! ISR, follower lag) and /v1/if-stopped (what breaks if this broker stops now).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::Broker;

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/partitions", get(partitions))
        .route("/v1/if-stopped", get(if_stopped))
        .with_state(broker)
}

async fn ready(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    if broker.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    broker.update_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        broker.metrics.render(),
    )
}

async fn partitions(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let now = crate::clock::now_ms();
    let statuses: Vec<_> = broker
        .hosted_partitions()
        .iter()
        .map(|p| p.status(now))
        .collect();
    axum::Json(statuses)
}

/// One partition's fate if this broker stopped now.
#[derive(serde::Serialize)]
struct Impact {
    topic: String,
    partition: i32,
    /// "offline" (no other in-sync replica), "below-min-isr" (acks=all writes refused), or
    /// "leader-moves" (a short failover, nothing refused).
    outcome: &'static str,
    isr_without_this_broker: Vec<i32>,
    min_insync_replicas: i32,
}

async fn if_stopped(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let node = broker.config.node_id;
    let mut impacts = Vec::new();
    let Some(rt) = broker.cluster() else {
        // Standalone: every partition goes offline.
        for t in broker.topics() {
            for i in 0..t.record.partitions {
                impacts.push(Impact {
                    topic: t.record.name.clone(),
                    partition: i,
                    outcome: "offline",
                    isr_without_this_broker: Vec::new(),
                    min_insync_replicas: t.config.min_insync_replicas,
                });
            }
        }
        return axum::Json(impacts);
    };
    let meta = rt.membership.metadata();
    for t in meta.topics.values() {
        let min_isr = broker
            .topic(&t.name)
            .map_or(1, |local| local.config.min_insync_replicas);
        for p in &t.partitions {
            if !p.isr.contains(&node) {
                continue;
            }
            let rest: Vec<i32> = p
                .isr
                .iter()
                .copied()
                .filter(|r| *r != node && meta.is_alive(*r))
                .collect();
            let outcome = if rest.is_empty() {
                "offline"
            } else if (rest.len() as i32) < min_isr {
                "below-min-isr"
            } else if p.leader == node {
                "leader-moves"
            } else {
                continue;
            };
            impacts.push(Impact {
                topic: t.name.clone(),
                partition: p.partition,
                outcome,
                isr_without_this_broker: rest,
                min_insync_replicas: min_isr,
            });
        }
    }
    axum::Json(impacts)
}
