//! The controller's HTTP API (axum, JSON). Internal routes serve brokers (register,
//! heartbeat, metadata long-poll, AlterPartition, controlled shutdown, topics, producer ids);
//! admin routes serve users and the operator (drain, preferred-leader election, reassign,
//! decommission, rebalance, describe). The topic and partition admin routes (add partitions,
//! set configs, elect leaders, reassign and cancel) also serve brokers answering Kafka's
//! CreatePartitions, AlterConfigs, ElectLeaders and AlterPartitionReassignments.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::decisions::{self, AlterPartition, ControllerError, Registration};
use super::service::{Controller, ServiceError};
use super::store::Store;

/// Longest metadata long-poll.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub fn router<S: Store + Send + Sync + 'static>(controller: Arc<Controller<S>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/brokers/register", post(register::<S>))
        .route("/v1/brokers/{id}/heartbeat", post(heartbeat::<S>))
        .route(
            "/v1/brokers/{id}/controlled-shutdown",
            post(controlled_shutdown::<S>),
        )
        .route("/v1/metadata", get(metadata::<S>))
        .route("/v1/alter-partition", post(alter_partition::<S>))
        .route("/v1/topics", post(create_topic::<S>))
        .route("/v1/topics/{name}", delete(delete_topic::<S>))
        .route("/v1/topics/{name}/partitions", post(add_partitions::<S>))
        .route("/v1/topics/{name}/configs", put(set_topic_configs::<S>))
        .route("/v1/producer-ids", post(producer_ids::<S>))
        .route("/v1/client-quotas", post(alter_client_quotas::<S>))
        .route("/v1/scram-credentials", post(alter_scram_credentials::<S>))
        .route("/v1/acls", post(alter_acls::<S>))
        .route("/v1/admin/brokers/{id}/drain", post(drain::<S>))
        .route(
            "/v1/admin/brokers/{id}/decommission",
            post(decommission::<S>),
        )
        .route("/v1/admin/preferred-leader-election", post(preferred::<S>))
        .route("/v1/admin/elect-leaders", post(elect_leaders::<S>))
        .route("/v1/admin/reassign", post(reassign::<S>))
        .route("/v1/admin/reassign/cancel", post(cancel_reassignment::<S>))
        .route("/v1/admin/rebalance", post(rebalance::<S>))
        .route("/v1/admin/describe", get(describe::<S>))
        .with_state(controller)
}

/// With a cluster secret, every route but `/healthz` and the read-only describe needs the
/// controller token (`Authorization: Bearer`, see `broker::auth::ClusterSecret::
/// controller_token`): brokers' calls (register, heartbeat, AlterPartition, the metadata
/// watch the crash fast path reads) and admin calls change who leads and who is in sync.
/// Without this, anyone who reaches the port could, say, put a lagging replica into the ISR
/// and have it elected. Describe stays open (as Kafka's Metadata is), with broker epochs
/// hidden from callers without the token.
pub fn require_token(router: Router, secret: Arc<broker::auth::ClusterSecret>) -> Router {
    use axum::extract::Request;
    use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
    use axum::middleware::Next;
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let secret = Arc::clone(&secret);
            async move {
                let token = req
                    .headers()
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                let open = match req.uri().path() {
                    "/healthz" => true,
                    "/v1/admin/describe" => req.method() == axum::http::Method::GET,
                    _ => false,
                };
                if secret.authorizes(token) {
                    return next.run(req).await;
                }
                if open {
                    // Read-only, but without the token broker epochs are hidden (KIP-903:
                    // a replica's epoch is a broker's to know, not a client's).
                    let mut req = req;
                    req.extensions_mut().insert(Anonymous);
                    return next.run(req).await;
                }
                let body = ApiError {
                    kind: "unauthorized".into(),
                    error: "this controller needs the cluster's token: Authorization: Bearer \
                        <token> (`operator controller-token --cluster-secret-file FILE` prints it)"
                        .into(),
                };
                (
                    StatusCode::UNAUTHORIZED,
                    [(WWW_AUTHENTICATE, "Bearer")],
                    Json(body),
                )
                    .into_response()
            }
        },
    ))
}

/// Marks a request that came without the controller token on a route open to anyone.
#[derive(Debug, Clone, Copy)]
struct Anonymous;

/// Error body: a stable `kind` for programs and a sentence for people.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub kind: String,
    pub error: String,
}

pub struct Failure(ServiceError);

impl From<ServiceError> for Failure {
    fn from(e: ServiceError) -> Self {
        Self(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, kind) = match &self.0 {
            ServiceError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store"),
            ServiceError::Refused(e) => match e {
                ControllerError::UnknownBroker(_) => (StatusCode::NOT_FOUND, "unknown_broker"),
                ControllerError::UnknownTopic(_) | ControllerError::UnknownPartition(..) => {
                    (StatusCode::NOT_FOUND, "unknown_topic_or_partition")
                }
                ControllerError::StaleBrokerEpoch { .. } => {
                    (StatusCode::CONFLICT, "stale_broker_epoch")
                }
                ControllerError::Fenced(_) => (StatusCode::CONFLICT, "fenced"),
                ControllerError::TopicExists(_) => (StatusCode::CONFLICT, "topic_exists"),
                ControllerError::InvalidTopicName(_) => {
                    (StatusCode::BAD_REQUEST, "invalid_topic_name")
                }
                ControllerError::TopicCollision { .. } => {
                    (StatusCode::BAD_REQUEST, "topic_collision")
                }
                ControllerError::NotLeader { .. } => (StatusCode::CONFLICT, "not_leader"),
                ControllerError::StalePartitionEpoch { .. } => {
                    (StatusCode::CONFLICT, "stale_partition_epoch")
                }
                ControllerError::InvalidIsr { .. } => (StatusCode::BAD_REQUEST, "invalid_isr"),
                ControllerError::Placement(_) => {
                    (StatusCode::BAD_REQUEST, "invalid_replication_factor")
                }
                ControllerError::InvalidReassignment { .. } => {
                    (StatusCode::BAD_REQUEST, "invalid_reassignment")
                }
                ControllerError::ReassignmentInProgress(..) => {
                    (StatusCode::CONFLICT, "reassignment_in_progress")
                }
                ControllerError::CannotMove { .. } => (StatusCode::CONFLICT, "cannot_move"),
                ControllerError::PartitionDecrease { .. } => {
                    (StatusCode::BAD_REQUEST, "partition_decrease")
                }
                ControllerError::TooManyPartitions { .. } => {
                    (StatusCode::BAD_REQUEST, "invalid_partitions")
                }
                ControllerError::InvalidConfig(_) => (StatusCode::BAD_REQUEST, "invalid_config"),
                ControllerError::InvalidClientQuota(_) => {
                    (StatusCode::BAD_REQUEST, "invalid_client_quota")
                }
                ControllerError::InvalidScramCredential(r) => {
                    use broker::auth::users::Refused;
                    match r {
                        Refused::NoSuchCredential | Refused::NoSuchUser => {
                            (StatusCode::NOT_FOUND, "resource_not_found")
                        }
                        Refused::UnknownMechanism => {
                            (StatusCode::BAD_REQUEST, "unsupported_sasl_mechanism")
                        }
                        Refused::AlteredTwice | Refused::DescribedTwice => {
                            (StatusCode::BAD_REQUEST, "duplicate_resource")
                        }
                        Refused::Unacceptable(_) => {
                            (StatusCode::BAD_REQUEST, "unacceptable_credential")
                        }
                    }
                }
                ControllerError::NoReassignmentInProgress(..) => {
                    (StatusCode::CONFLICT, "no_reassignment_in_progress")
                }
                ControllerError::CannotCancel { .. } => (StatusCode::CONFLICT, "cannot_cancel"),
                ControllerError::ManagedTopic { .. } => (StatusCode::CONFLICT, "policy_violation"),
                ControllerError::ConfigConflict(_) => (StatusCode::CONFLICT, "config_conflict"),
                ControllerError::InvalidAssignment { .. } => {
                    (StatusCode::BAD_REQUEST, "invalid_replica_assignment")
                }
            },
        };
        (
            status,
            Json(ApiError {
                kind: kind.into(),
                error: self.0.to_string(),
            }),
        )
            .into_response()
    }
}

type Ctl<S> = State<Arc<Controller<S>>>;

#[derive(Debug, Serialize, Deserialize)]
pub struct Registered {
    pub cluster_id: String,
    pub epoch: i64,
}

async fn register<S: Store>(
    State(c): Ctl<S>,
    Json(reg): Json<Registration>,
) -> Result<Json<Registered>, Failure> {
    let epoch = c
        .update(|s, now| Ok(decisions::register(s, reg, now)))
        .await?;
    Ok(Json(Registered {
        cluster_id: c.snapshot().await.metadata.cluster_id,
        epoch,
    }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EpochBody {
    pub epoch: i64,
}

async fn heartbeat<S: Store>(
    State(c): Ctl<S>,
    Path(id): Path<i32>,
    Json(b): Json<EpochBody>,
) -> Result<StatusCode, Failure> {
    c.heartbeat(id, b.epoch).map_err(ServiceError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StillLeading {
    pub partitions: Vec<(String, i32)>,
}

async fn controlled_shutdown<S: Store>(
    State(c): Ctl<S>,
    Path(id): Path<i32>,
    Json(b): Json<EpochBody>,
) -> Result<Json<StillLeading>, Failure> {
    let partitions = c
        .update(|s, _| decisions::controlled_shutdown(s, id, b.epoch))
        .await?;
    Ok(Json(StillLeading { partitions }))
}

#[derive(Debug, Deserialize)]
struct MetadataQuery {
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    wait_ms: Option<u64>,
    /// A broker's watch names the broker and its epoch (the crash fast path).
    #[serde(default)]
    broker: Option<i32>,
    #[serde(default)]
    epoch: Option<i64>,
}

async fn metadata<S: Store + Send + Sync + 'static>(
    State(c): Ctl<S>,
    Query(q): Query<MetadataQuery>,
) -> Json<broker::metadata::ClusterMetadata> {
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    // Dropped unanswered when the broker's side closes the connection (see Controller::watch).
    let watch = q.broker.zip(q.epoch).map(|(b, e)| c.watch(b, e));
    let metadata = match q.after {
        Some(after) => c.metadata_after(after, wait).await,
        None => c.snapshot().await.metadata,
    };
    if let Some(w) = watch {
        w.answered();
    }
    Json(metadata)
}

async fn alter_partition<S: Store>(
    State(c): Ctl<S>,
    Json(req): Json<AlterPartition>,
) -> Result<Json<broker::metadata::PartitionMeta>, Failure> {
    Ok(Json(
        c.update(|s, _| decisions::alter_partition(s, &req)).await?,
    ))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct NewTopic {
    pub name: String,
    pub partitions: usize,
    pub replication_factor: usize,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    /// Replicas chosen by the caller, one list per partition (then `partitions` and
    /// `replication_factor` are what it implies); absent, the controller places them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignments: Option<Vec<Vec<i32>>>,
}

async fn create_topic<S: Store>(
    State(c): Ctl<S>,
    Json(t): Json<NewTopic>,
) -> Result<Json<broker::metadata::TopicMeta>, Failure> {
    let id = uuid::Uuid::new_v4();
    Ok(Json(
        c.update(|s, _| match &t.assignments {
            Some(a) => {
                decisions::create_topic_assigned(s, &t.name, a.clone(), t.configs.clone(), id)
            }
            None => decisions::create_topic(
                s,
                &t.name,
                t.partitions,
                t.replication_factor,
                t.configs.clone(),
                id,
            ),
        })
        .await?,
    ))
}

async fn delete_topic<S: Store>(
    State(c): Ctl<S>,
    Path(name): Path<String>,
) -> Result<StatusCode, Failure> {
    c.update(|s, _| {
        decisions::check_unmanaged(s, &name)?;
        decisions::delete_topic(s, &name)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Answer of the routes that change a topic: false when it already was so.
#[derive(Debug, Serialize, Deserialize)]
pub struct Changed {
    pub changed: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PartitionCount {
    pub partitions: usize,
    /// Replicas for the new partitions, chosen by the caller (Kafka's CreatePartitions
    /// assignment); absent, the controller places them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignments: Option<Vec<Vec<i32>>>,
}

/// Grows a topic (Kafka's CreatePartitions); fewer partitions than now are refused.
async fn add_partitions<S: Store>(
    State(c): Ctl<S>,
    Path(name): Path<String>,
    Json(b): Json<PartitionCount>,
) -> Result<Json<Changed>, Failure> {
    let changed = c
        .update(|s, _| {
            decisions::check_unmanaged(s, &name)?;
            match &b.assignments {
                Some(a) => decisions::add_partitions_assigned(s, &name, b.partitions, a.clone()),
                None => decisions::add_partitions(s, &name, b.partitions),
            }
        })
        .await?;
    Ok(Json(Changed { changed }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TopicConfigs {
    /// The topic's complete override map.
    pub configs: BTreeMap<String, String>,
    /// The overrides the caller computed `configs` from: when given and no longer current
    /// (another change came first), nothing changes and the answer is 409 `config_conflict`,
    /// so the caller recomputes instead of undoing that change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<BTreeMap<String, String>>,
}

/// Replaces a topic's config overrides (Kafka's AlterConfigs; a broker answering
/// IncrementalAlterConfigs sends the merged map).
async fn set_topic_configs<S: Store>(
    State(c): Ctl<S>,
    Path(name): Path<String>,
    Json(b): Json<TopicConfigs>,
) -> Result<Json<Changed>, Failure> {
    let changed = c
        .update(|s, _| {
            decisions::check_unmanaged(s, &name)?;
            if let Some(expected) = &b.expected {
                decisions::check_topic_configs(s, &name, expected)?;
            }
            decisions::set_topic_configs(s, &name, b.configs.clone())
        })
        .await?;
    Ok(Json(Changed { changed }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct QuotaAlterations {
    pub alterations: Vec<broker::quota::config::Alteration>,
}

/// Alters client quotas (a broker answering Kafka's AlterClientQuotas sends the entities it
/// checked); brokers enforce them from the metadata.
async fn alter_client_quotas<S: Store>(
    State(c): Ctl<S>,
    Json(b): Json<QuotaAlterations>,
) -> Result<Json<Changed>, Failure> {
    let changed = c
        .update(|s, _| decisions::alter_client_quotas(s, &b.alterations))
        .await?;
    Ok(Json(Changed { changed }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ScramAlterations {
    pub alterations: Vec<broker::auth::users::Alteration>,
}

/// Alters client users' SCRAM credentials (a broker answering Kafka's
/// AlterUserScramCredentials sends what it checked); brokers authenticate from the metadata.
async fn alter_scram_credentials<S: Store>(
    State(c): Ctl<S>,
    Json(b): Json<ScramAlterations>,
) -> Result<Json<Changed>, Failure> {
    let changed = c
        .update(|s, _| decisions::alter_scram_credentials(s, &b.alterations))
        .await?;
    Ok(Json(Changed { changed }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AclAlterations {
    #[serde(default)]
    pub add: Vec<broker::auth::acl::Acl>,
    #[serde(default)]
    pub remove: Vec<broker::auth::acl::Acl>,
}

/// Adds and removes ACLs (a broker answering CreateAcls or DeleteAcls sends exact bindings);
/// brokers enforce them from the metadata.
async fn alter_acls<S: Store>(
    State(c): Ctl<S>,
    Json(b): Json<AclAlterations>,
) -> Result<Json<Changed>, Failure> {
    let changed = c
        .update(|s, _| decisions::alter_acls(s, &b.add, &b.remove))
        .await?;
    Ok(Json(Changed { changed }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IdBlock {
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Deserialize)]
struct IdRequest {
    count: i64,
}

async fn producer_ids<S: Store>(
    State(c): Ctl<S>,
    Json(r): Json<IdRequest>,
) -> Result<Json<IdBlock>, Failure> {
    let (start, end) = c
        .update(|s, _| {
            Ok(decisions::allocate_producer_ids(
                s,
                r.count.clamp(1, 1_000_000),
            ))
        })
        .await?;
    Ok(Json(IdBlock { start, end }))
}

async fn drain<S: Store>(
    State(c): Ctl<S>,
    Path(id): Path<i32>,
) -> Result<Json<StillLeading>, Failure> {
    Ok(Json(StillLeading {
        partitions: c.update(|s, _| decisions::drain(s, id)).await?,
    }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Moves {
    pub started: Vec<(String, i32, Vec<i32>)>,
}

async fn decommission<S: Store>(
    State(c): Ctl<S>,
    Path(id): Path<i32>,
) -> Result<Json<Moves>, Failure> {
    Ok(Json(Moves {
        started: c.update(|s, _| decisions::decommission(s, id)).await?,
    }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Elected {
    pub moved: usize,
}

async fn preferred<S: Store>(State(c): Ctl<S>) -> Result<Json<Elected>, Failure> {
    Ok(Json(Elected {
        moved: c
            .update(|s, _| Ok(decisions::preferred_leader_election(s)))
            .await?,
    }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Reassign {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
}

async fn reassign<S: Store>(
    State(c): Ctl<S>,
    Json(r): Json<Reassign>,
) -> Result<Json<broker::metadata::PartitionMeta>, Failure> {
    Ok(Json(
        c.update(|s, _| decisions::reassign(s, &r.topic, r.partition, r.replicas.clone()))
            .await?,
    ))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ElectLeaders {
    /// None: every partition.
    #[serde(default)]
    pub partitions: Option<Vec<(String, i32)>>,
    /// Kafka's UNCLEAN election type (`decisions::elect_unclean`); PREFERRED otherwise.
    #[serde(default)]
    pub unclean: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ElectionResults {
    pub results: Vec<decisions::ElectionResult>,
}

/// Preferred-leader election for some partitions or all (Kafka's ElectLeaders, PREFERRED);
/// unlike `/v1/admin/preferred-leader-election` it leaves drained brokers drained. With
/// `unclean`, Kafka's UNCLEAN type instead.
async fn elect_leaders<S: Store>(
    State(c): Ctl<S>,
    Json(b): Json<ElectLeaders>,
) -> Result<Json<ElectionResults>, Failure> {
    let results = c
        .update(|s, _| {
            Ok(if b.unclean {
                decisions::elect_unclean(s, b.partitions.as_deref())
            } else {
                decisions::elect_preferred(s, b.partitions.as_deref())
            })
        })
        .await?;
    if b.unclean {
        let unclean = results.iter().filter(|r| {
            r.message
                .as_deref()
                .is_some_and(|m| m.starts_with(decisions::UNCLEAN_ELECTED))
        });
        for r in unclean {
            tracing::warn!(topic = %r.topic, partition = r.partition, message = r.message.as_deref().unwrap_or_default(), "unclean leader election");
        }
    }
    Ok(Json(ElectionResults { results }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PartitionRef {
    pub topic: String,
    pub partition: i32,
}

/// Cancels a reassignment in progress (KIP-455): back to the original replicas.
async fn cancel_reassignment<S: Store>(
    State(c): Ctl<S>,
    Json(r): Json<PartitionRef>,
) -> Result<Json<broker::metadata::PartitionMeta>, Failure> {
    Ok(Json(
        c.update(|s, _| decisions::cancel_reassignment(s, &r.topic, r.partition))
            .await?,
    ))
}

/// A rebalance's progress (`POST /v1/admin/rebalance`).
#[derive(Debug, Serialize, Deserialize)]
pub struct RebalanceAnswer {
    /// False when nothing needs to move.
    pub under_way: bool,
    pub onto: Vec<i32>,
    pub done: usize,
    pub total: usize,
}

/// Begins a rebalance over the live brokers (or reports the one under way); the controller
/// carries it out in the background, at most `--rebalance-max-moves` partitions at a time.
async fn rebalance<S: Store>(State(c): Ctl<S>) -> Result<Json<RebalanceAnswer>, Failure> {
    let members = c.live_brokers();
    let max = c.settings.rebalance_max_moves;
    c.update(|s, _| Ok(super::rebalance::start(s, &members, max)))
        .await?;
    let progress = super::rebalance::progress(&c.snapshot().await);
    Ok(Json(match progress {
        Some(p) => RebalanceAnswer {
            under_way: true,
            onto: p.onto,
            done: p.done,
            total: p.total,
        },
        None => RebalanceAnswer {
            under_way: false,
            onto: Vec::new(),
            done: 0,
            total: 0,
        },
    }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Description {
    pub metadata: broker::metadata::ClusterMetadata,
    /// Milliseconds since each broker's last heartbeat.
    pub heartbeat_age_ms: BTreeMap<i32, i64>,
    /// The rebalance under way: every planned move and its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<super::rebalance::Rebalance>,
}

/// Broker epochs read -1 for a caller without the token (when the controller wants one).
async fn describe<S: Store>(
    State(c): Ctl<S>,
    anonymous: Option<axum::Extension<Anonymous>>,
) -> Json<Description> {
    let now = c.now_ms();
    let mut s = c.snapshot().await;
    // Never shown, token or not: salts and derived keys serve offline password guessing.
    s.metadata.scram_credentials.clear();
    if anonymous.is_some() {
        for b in s.metadata.brokers.values_mut() {
            b.epoch = -1;
        }
    }
    let heartbeat_age_ms = s
        .last_heartbeat_ms
        .iter()
        .map(|(id, t)| (*id, now - t))
        .collect();
    Json(Description {
        metadata: s.metadata,
        heartbeat_age_ms,
        rebalance: s.rebalance,
    })
}
