//! Client for the controller's internal HTTP API (JSON over HTTP/1.1).

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
    #[serde(default)]
    pub rack: Option<String>,
    /// The extra listeners' advertised addresses (absent from older brokers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<crate::listener::Endpoint>,
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
        let http = reqwest::Client::builder()
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
        configs: &std::collections::BTreeMap<String, String>,
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
