//! Client for the controller's internal HTTP API (JSON over HTTP/1.1).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metadata::{ClusterMetadata, PartitionMeta};

#[derive(Debug, thiserror::Error)]
pub enum ControllerCallError {
    #[error("controller unreachable: {0}")]
    Unreachable(String),
    /// The controller refused: `kind` is its stable error kind (e.g. "fenced").
    #[error("controller refused ({kind}): {message}")]
    Refused {
        status: u16,
        kind: String,
        message: String,
    },
    #[error("unexpected controller response: {0}")]
    BadResponse(String),
}

/// A broker registering (at start, or after being fenced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub id: i32,
    /// Unique per process start: a new one means the broker restarted.
    pub incarnation: String,
    /// The default listener's advertised address.
    pub host: String,
    pub port: u16,
    /// Where followers dial this broker, if not `host` (`BrokerMeta::replication_host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_host: Option<String>,
    #[serde(default)]
    pub rack: Option<String>,
    /// The extra listeners' advertised addresses (absent from older brokers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<crate::listener::Endpoint>,
    /// The process started after an unclean shutdown (no clean-shutdown marker in its data
    /// directory): a log may have lost a tail that was acknowledged (unsynced writes, a torn
    /// segment), so the controller no longer counts it as holding every committed record.
    #[serde(default)]
    pub unclean_shutdown: bool,
    /// The broker's default min.insync.replicas (for topics without an override); absent
    /// from older brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_insync_replicas: Option<i32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Registered {
    pub cluster_id: String,
    pub epoch: i64,
}

/// AlterPartition from a partition leader: the ISR it asks for, at the epochs it knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartition {
    pub broker: i32,
    pub broker_epoch: i64,
    pub topic: String,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// What a preferred-leader election did for one partition (`POST /v1/admin/elect-leaders`;
/// Kafka's ElectLeaders with the PREFERRED type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElectionOutcome {
    /// The preferred replica leads now (a new leader epoch).
    Elected,
    /// The preferred replica already leads.
    ElectionNotNeeded,
    /// The preferred replica cannot lead: not alive, not in the ISR, or drained.
    PreferredLeaderNotAvailable,
    UnknownTopicOrPartition,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionResult {
    pub topic: String,
    pub partition: i32,
    pub outcome: ElectionOutcome,
    /// Why, when the outcome is not `Elected`; for an unclean election outside the ISR and
    /// ELR, that it was one.
    #[serde(default)]
    pub message: Option<String>,
}

/// Answer of the topic admin routes that change a topic (`{"changed": bool}`).
#[derive(Deserialize)]
struct Changed {
    changed: bool,
}

#[derive(Deserialize)]
struct ApiError {
    kind: String,
    error: String,
}

/// Dialing the controller (its Service or a pod address).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One call, answer included; well under the broker session timeout (9 s by default), so a
/// hung heartbeat is retried in time. The metadata long poll sets its own, longer one.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct ControllerClient {
    base: String,
    http: reqwest::Client,
    /// The bearer token of a cluster with a secret (`auth::ClusterSecret::controller_token`).
    token: Option<String>,
}

impl ControllerClient {
    pub fn new(base: &str) -> Self {
        Self::new_from(base, None)
    }

    /// A client whose connections leave from `source` when given.
    pub fn new_from(base: &str, source: Option<std::net::IpAddr>) -> Self {
        Self::with_timeouts(base, source, CONNECT_TIMEOUT, REQUEST_TIMEOUT)
    }

    /// Every call is bounded: a pooled connection to a controller pod that is gone (its IP
    /// dead, no RST ever coming) would otherwise hang a heartbeat or an AlterPartition until
    /// TCP gives up, minutes later, and the broker's session would expire meanwhile. A call
    /// that times out drops its connection; the next one dials again.
    fn with_timeouts(
        base: &str,
        source: Option<std::net::IpAddr>,
        connect: Duration,
        request: Duration,
    ) -> Self {
        // No proxy from the environment: a proxy that cuts a metadata long poll would look to
        // the controller like this broker's death (the crash fast path).
        let http = reqwest::Client::builder()
            .no_proxy()
            .local_address(source)
            .connect_timeout(connect)
            .timeout(request)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            base: base.trim_end_matches('/').to_string(),
            http,
            token: None,
        }
    }

    /// Every call carries the cluster's controller token.
    pub fn with_secret(mut self, secret: Option<&crate::auth::ClusterSecret>) -> Self {
        self.token = secret.map(|s| s.controller_token());
        self
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<Option<T>, ControllerCallError> {
        let req = match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| ControllerCallError::Unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        if status == 204 {
            return Ok(None);
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| ControllerCallError::Unreachable(e.to_string()))?;
        if !(200..300).contains(&status) {
            let err: ApiError = serde_json::from_slice(&body).unwrap_or(ApiError {
                kind: "unknown".into(),
                error: String::from_utf8_lossy(&body).into_owned(),
            });
            // A controller that is starting, failing over (another operator replica took the
            // Lease) or has not reconciled this cluster yet is a wait, not a refusal.
            if status >= 500 || err.kind == "unknown_cluster" {
                return Err(ControllerCallError::Unreachable(format!(
                    "controller unavailable ({}, HTTP {status}): {}",
                    err.kind, err.error
                )));
            }
            return Err(ControllerCallError::Refused {
                status,
                kind: err.kind,
                message: err.error,
            });
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| ControllerCallError::BadResponse(e.to_string()))
    }

    fn some<T>(v: Option<T>) -> Result<T, ControllerCallError> {
        v.ok_or_else(|| ControllerCallError::BadResponse("empty response".into()))
    }

    pub async fn register(&self, reg: &Registration) -> Result<Registered, ControllerCallError> {
        Self::some(
            self.call(
                self.http
                    .post(format!("{}/v1/brokers/register", self.base))
                    .json(reg),
            )
            .await?,
        )
    }

    pub async fn heartbeat(&self, broker: i32, epoch: i64) -> Result<(), ControllerCallError> {
        let url = format!("{}/v1/brokers/{broker}/heartbeat", self.base);
        self.call::<serde_json::Value>(
            self.http
                .post(url)
                .json(&serde_json::json!({ "epoch": epoch })),
        )
        .await?;
        Ok(())
    }

    /// The metadata once it is newer than `after` (or after `wait`). A broker names itself
    /// (id and epoch): the controller takes its watch closing unanswered, and not reopened,
    /// as a sign its process died.
    pub async fn metadata(
        &self,
        after: Option<u64>,
        wait: Duration,
        watcher: Option<(i32, i64)>,
    ) -> Result<ClusterMetadata, ControllerCallError> {
        let mut url = format!("{}/v1/metadata?wait_ms={}", self.base, wait.as_millis());
        if let Some(v) = after {
            url.push_str(&format!("&after={v}"));
        }
        if let Some((broker, epoch)) = watcher {
            url.push_str(&format!("&broker={broker}&epoch={epoch}"));
        }
        Self::some(
            self.call(self.http.get(url).timeout(wait + Duration::from_secs(10)))
                .await?,
        )
    }

    pub async fn alter_partition(
        &self,
        req: &AlterPartition,
    ) -> Result<PartitionMeta, ControllerCallError> {
        Self::some(
            self.call(
                self.http
                    .post(format!("{}/v1/alter-partition", self.base))
                    .json(req),
            )
            .await?,
        )
    }

    /// A block of producer ids: [start, end).
    pub async fn producer_ids(&self, count: i64) -> Result<(i64, i64), ControllerCallError> {
        #[derive(Deserialize)]
        struct Block {
            start: i64,
            end: i64,
        }
        let url = format!("{}/v1/producer-ids", self.base);
        let b: Block = Self::some(
            self.call(
                self.http
                    .post(url)
                    .json(&serde_json::json!({ "count": count })),
            )
            .await?,
        )?;
        Ok((b.start, b.end))
    }

    /// Creates a topic; the controller places its replicas.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: usize,
        replication_factor: usize,
        configs: &BTreeMap<String, String>,
    ) -> Result<crate::metadata::TopicMeta, ControllerCallError> {
        let body = serde_json::json!({ "name": name, "partitions": partitions, "replication_factor": replication_factor, "configs": configs });
        Self::some(
            self.call(
                self.http
                    .post(format!("{}/v1/topics", self.base))
                    .json(&body),
            )
            .await?,
        )
    }

    /// `{base}/v1/topics/{name}/{rest}`. A name goes into the path only once it is a legal
    /// Kafka name (`[a-zA-Z0-9._-]`, not `.` or `..`), so it needs no encoding and cannot
    /// name another route; anything else a client sent is refused here, as the controller
    /// would refuse to create it.
    fn topic_url(&self, name: &str, rest: &str) -> Result<String, ControllerCallError> {
        crate::topic_name::validate(name).map_err(|e| ControllerCallError::Refused {
            status: 400,
            kind: "invalid_topic_name".into(),
            message: e.to_string(),
        })?;
        Ok(format!("{}/v1/topics/{name}/{rest}", self.base))
    }

    /// POSTs `body` to a route that answers whether it changed anything.
    async fn post_changed(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<bool, ControllerCallError> {
        let url = format!("{}{path}", self.base);
        let c: Changed = Self::some(self.call(self.http.post(url).json(&body)).await?)?;
        Ok(c.changed)
    }

    /// Applies checked client-quota alterations (Kafka's AlterClientQuotas), all or none.
    /// Returns whether anything changed.
    pub async fn alter_client_quotas(
        &self,
        alterations: &[crate::quota::config::Alteration],
    ) -> Result<bool, ControllerCallError> {
        let body = serde_json::json!({ "alterations": alterations });
        self.post_changed("/v1/client-quotas", body).await
    }

    /// Applies checked SCRAM credential alterations (Kafka's AlterUserScramCredentials), all
    /// or none. Returns whether anything changed.
    pub async fn alter_scram_credentials(
        &self,
        alterations: &[crate::auth::users::Alteration],
    ) -> Result<bool, ControllerCallError> {
        let body = serde_json::json!({ "alterations": alterations });
        self.post_changed("/v1/scram-credentials", body).await
    }

    /// Adds and removes exact ACL bindings (Kafka's CreateAcls and DeleteAcls).
    pub async fn alter_acls(
        &self,
        add: &[crate::auth::acl::Acl],
        remove: &[crate::auth::acl::Acl],
    ) -> Result<bool, ControllerCallError> {
        let body = serde_json::json!({ "add": add, "remove": remove });
        self.post_changed("/v1/acls", body).await
    }

    /// Grows `topic` to `partitions` partitions (Kafka's CreatePartitions); the controller
    /// places the new ones. Returns whether it changed (false: it already had that many).
    pub async fn add_partitions(
        &self,
        topic: &str,
        partitions: usize,
    ) -> Result<bool, ControllerCallError> {
        let url = self.topic_url(topic, "partitions")?;
        let body = serde_json::json!({ "partitions": partitions });
        let c: Changed = Self::some(self.call(self.http.post(url).json(&body)).await?)?;
        Ok(c.changed)
    }

    /// Grows `topic` to `partitions` with the new partitions' replicas chosen by the caller
    /// (one list per new partition).
    pub async fn add_partitions_assigned(
        &self,
        topic: &str,
        partitions: usize,
        assignments: &[Vec<i32>],
    ) -> Result<bool, ControllerCallError> {
        let url = self.topic_url(topic, "partitions")?;
        let body = serde_json::json!({ "partitions": partitions, "assignments": assignments });
        let c: Changed = Self::some(self.call(self.http.post(url).json(&body)).await?)?;
        Ok(c.changed)
    }

    /// Replaces `topic`'s config overrides with `configs` (its complete override map, as
    /// AlterConfigs sets it). Returns whether anything changed.
    pub async fn set_topic_configs(
        &self,
        topic: &str,
        configs: &BTreeMap<String, String>,
    ) -> Result<bool, ControllerCallError> {
        self.set_topic_configs_if(topic, None, configs).await
    }

    /// As [`Self::set_topic_configs`], but only while the overrides are still `expected`
    /// (refused as `config_conflict` otherwise).
    pub async fn set_topic_configs_if(
        &self,
        topic: &str,
        expected: Option<&BTreeMap<String, String>>,
        configs: &BTreeMap<String, String>,
    ) -> Result<bool, ControllerCallError> {
        let url = self.topic_url(topic, "configs")?;
        let mut body = serde_json::json!({ "configs": configs });
        if let Some(e) = expected {
            body["expected"] = serde_json::json!(e);
        }
        let c: Changed = Self::some(self.call(self.http.put(url).json(&body)).await?)?;
        Ok(c.changed)
    }

    /// Preferred-leader election for `partitions`, or for every partition when None (then
    /// every partition has a result; the caller filters). Drained brokers stay drained.
    pub async fn elect_preferred(
        &self,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<Vec<ElectionResult>, ControllerCallError> {
        self.elect_leaders(partitions, false).await
    }

    /// Kafka's ElectLeaders: PREFERRED, or UNCLEAN with `unclean`.
    pub async fn elect_leaders(
        &self,
        partitions: Option<&[(String, i32)]>,
        unclean: bool,
    ) -> Result<Vec<ElectionResult>, ControllerCallError> {
        #[derive(Deserialize)]
        struct Results {
            results: Vec<ElectionResult>,
        }
        let body = serde_json::json!({ "partitions": partitions, "unclean": unclean });
        let r: Results = Self::some(
            self.call(
                self.http
                    .post(format!("{}/v1/admin/elect-leaders", self.base))
                    .json(&body),
            )
            .await?,
        )?;
        Ok(r.results)
    }

    /// Starts moving a partition to `replicas` (KIP-455); the answer is the partition with
    /// its adding and removing sets (empty when the move completed at once).
    pub async fn reassign(
        &self,
        topic: &str,
        partition: i32,
        replicas: &[i32],
    ) -> Result<PartitionMeta, ControllerCallError> {
        let body =
            serde_json::json!({ "topic": topic, "partition": partition, "replicas": replicas });
        Self::some(
            self.call(
                self.http
                    .post(format!("{}/v1/admin/reassign", self.base))
                    .json(&body),
            )
            .await?,
        )
    }

    /// Cancels a reassignment in progress: the partition goes back to its original replicas.
    pub async fn cancel_reassignment(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<PartitionMeta, ControllerCallError> {
        let body = serde_json::json!({ "topic": topic, "partition": partition });
        Self::some(
            self.call(
                self.http
                    .post(format!("{}/v1/admin/reassign/cancel", self.base))
                    .json(&body),
            )
            .await?,
        )
    }

    /// Creates a topic on replicas the caller chose: one list per partition.
    pub async fn create_topic_assigned(
        &self,
        name: &str,
        assignments: &[Vec<i32>],
        configs: &std::collections::BTreeMap<String, String>,
    ) -> Result<crate::metadata::TopicMeta, ControllerCallError> {
        let rf = assignments.first().map_or(0, Vec::len);
        let body = serde_json::json!({ "name": name, "partitions": assignments.len(), "replication_factor": rf, "configs": configs, "assignments": assignments });
        Self::some(
            self.call(
                self.http
                    .post(format!("{}/v1/topics", self.base))
                    .json(&body),
            )
            .await?,
        )
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ControllerCallError> {
        self.call::<serde_json::Value>(self.http.delete(format!("{}/v1/topics/{name}", self.base)))
            .await?;
        Ok(())
    }

    pub async fn controlled_shutdown(
        &self,
        broker: i32,
        epoch: i64,
    ) -> Result<Vec<(String, i32)>, ControllerCallError> {
        #[derive(Deserialize)]
        struct Still {
            partitions: Vec<(String, i32)>,
        }
        let url = format!("{}/v1/brokers/{broker}/controlled-shutdown", self.base);
        let still: Still = Self::some(
            self.call(
                self.http
                    .post(url)
                    .json(&serde_json::json!({ "epoch": epoch })),
            )
            .await?,
        )?;
        Ok(still.partitions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name that is not a legal Kafka name never reaches a URL path (`../x` would name
    /// another route): refused before any connection, as the controller refuses it.
    #[tokio::test]
    async fn topic_admin_calls_refuse_illegal_names_before_calling() {
        // Nothing listens on port 1: a call that went out would be Unreachable.
        let client = ControllerClient::new("http://127.0.0.1:1");
        for bad in crate::topic_name::REFUSED_EXAMPLES
            .into_iter()
            .chain(["a/b", "x?y", "a b", "t%2F"])
        {
            let r = client.add_partitions(bad, 2).await;
            assert!(
                matches!(&r, Err(ControllerCallError::Refused { status: 400, kind, .. }) if kind == "invalid_topic_name"),
                "{bad:?}: {r:?}"
            );
            let r = client.set_topic_configs(bad, &BTreeMap::new()).await;
            assert!(
                matches!(&r, Err(ControllerCallError::Refused { status: 400, kind, .. }) if kind == "invalid_topic_name"),
                "{bad:?}: {r:?}"
            );
        }
        let r = client.add_partitions("legal.name_1-x", 2).await;
        assert!(
            matches!(r, Err(ControllerCallError::Unreachable(_))),
            "{r:?}"
        );
    }

    #[test]
    fn election_results_have_a_stable_wire_format() {
        let r = ElectionResult {
            topic: "t".into(),
            partition: 3,
            outcome: ElectionOutcome::PreferredLeaderNotAvailable,
            message: Some("why".into()),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"topic": "t", "partition": 3, "outcome": "preferred_leader_not_available", "message": "why"})
        );
        let back: ElectionResult =
            serde_json::from_str(r#"{"topic":"t","partition":0,"outcome":"election_not_needed"}"#)
                .unwrap();
        assert_eq!(back.outcome, ElectionOutcome::ElectionNotNeeded);
        assert_eq!(back.message, None);
    }

    /// A controller that accepts and then never answers (what a dead pod behind a pooled
    /// connection looks like): the call fails as Unreachable at the request timeout.
    #[tokio::test]
    async fn a_silent_controller_is_unreachable_at_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                open.push(sock);
            }
        });
        let client = ControllerClient::with_timeouts(
            &format!("http://{addr}"),
            None,
            Duration::from_secs(1),
            Duration::from_millis(300),
        );
        let started = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(10), client.heartbeat(1, 1))
            .await
            .expect("the call was not bounded");
        assert!(
            matches!(r, Err(ControllerCallError::Unreachable(_))),
            "{r:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        held.abort();
    }
}
