//! One cluster controller per LogCluster, all behind one HTTP listener: a broker of cluster
//! `ns/name` calls `/clusters/<ns>/<name>/v1/...`, which is handed to that cluster's controller
//! router with the prefix stripped. Only the replica holding the leader Lease has entries, so a
//! broker that reaches the other replica gets 503 and retries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use kube::Api;
use tokio::sync::{Mutex, RwLock, watch};
use tokio::task::AbortHandle;
use tower::ServiceExt;

use super::store::KubeStore;
use crate::controller::http::{self, ApiError};
use crate::controller::service::{Controller, Settings};
use crate::controller::store::StoreError;
use crate::crd::LogCluster;

pub type KubeController = Controller<KubeStore>;

/// `(namespace, name)` of a LogCluster.
pub type ClusterKey = (String, String);

pub struct ClusterEntry {
    pub controller: Arc<KubeController>,
    /// The LogCluster's uid: a recreated LogCluster of the same name is another cluster.
    uid: String,
    /// The controller token its router asks for (None: an open cluster).
    token: Option<String>,
    router: Router,
    tasks: Vec<AbortHandle>,
    active: Arc<AtomicBool>,
}

impl ClusterEntry {
    /// Stops the cluster's background tasks and refuses every later commit, even from requests
    /// still holding this entry.
    fn stop(&self) {
        self.active.store(false, Ordering::Release);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for ClusterEntry {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Clone)]
pub struct Registry {
    clusters: Arc<RwLock<BTreeMap<ClusterKey, Arc<ClusterEntry>>>>,
    opening: Arc<Mutex<()>>,
    /// Bumped whenever any cluster's controller commits a new version, so topic statuses follow.
    changes: watch::Sender<u64>,
    leading: watch::Receiver<bool>,
    /// Every cluster's controller runs with these.
    settings: Settings,
    /// False once `clear` ran: no cluster is (re)opened while shutting down.
    open: Arc<AtomicBool>,
}

impl Registry {
    pub fn new(leading: watch::Receiver<bool>, settings: Settings) -> Self {
        Self {
            clusters: Arc::default(),
            opening: Arc::default(),
            changes: watch::Sender::new(0),
            leading,
            settings,
            open: Arc::new(AtomicBool::new(true)),
        }
    }

    pub async fn get(&self, ns: &str, name: &str) -> Option<Arc<ClusterEntry>> {
        self.clusters
            .read()
            .await
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    pub async fn keys(&self) -> Vec<ClusterKey> {
        self.clusters.read().await.keys().cloned().collect()
    }

    /// The controller of `ns/name` with this `uid`, opened from the state in its status (or
    /// started as a new cluster with `cluster_id`) on first use. An entry of an earlier
    /// LogCluster of the same name is dropped, never reused; so is one whose cluster secret
    /// changed. With `secret`, the cluster's API asks for its token.
    pub async fn ensure(
        &self,
        api: Api<LogCluster>,
        ns: &str,
        name: &str,
        uid: &str,
        cluster_id: &str,
        secret: Option<Arc<broker::auth::ClusterSecret>>,
    ) -> Result<Arc<ClusterEntry>, StoreError> {
        let token = secret.as_ref().map(|s| s.controller_token());
        let _one_at_a_time = self.opening.lock().await;
        if !self.open.load(Ordering::Acquire) {
            return Err(StoreError::Gone(format!(
                "LogCluster {ns}/{name}: this operator replica is shutting down"
            )));
        }
        if let Some(e) = self.get(ns, name).await {
            if e.uid == uid && e.token == token {
                return Ok(e);
            }
            self.remove(ns, name).await;
        }
        let active = Arc::new(AtomicBool::new(true));
        let controller = Arc::new(
            Controller::open(
                KubeStore::new(api, name, uid, active.clone()),
                cluster_id.to_string(),
                self.settings.clone(),
            )
            .await?,
        );
        let ticker = tokio::spawn({
            let c = controller.clone();
            async move {
                let mut every = tokio::time::interval(Duration::from_millis(500));
                loop {
                    every.tick().await;
                    c.tick().await;
                }
            }
        });
        let forwarder = tokio::spawn({
            let mut versions = controller.versions();
            let changes = self.changes.clone();
            async move {
                while versions.changed().await.is_ok() {
                    changes.send_modify(|n| *n += 1);
                }
            }
        });
        let router = match secret {
            Some(secret) => http::require_token(http::router(controller.clone()), secret),
            None => http::router(controller.clone()),
        };
        let entry = Arc::new(ClusterEntry {
            uid: uid.to_string(),
            token,
            router,
            controller,
            tasks: vec![ticker.abort_handle(), forwarder.abort_handle()],
            active,
        });
        self.clusters
            .write()
            .await
            .insert((ns.to_string(), name.to_string()), entry.clone());
        self.changes.send_modify(|n| *n += 1);
        Ok(entry)
    }

    /// Stops serving a cluster (its LogCluster is gone).
    pub async fn remove(&self, ns: &str, name: &str) {
        let gone = self
            .clusters
            .write()
            .await
            .remove(&(ns.to_string(), name.to_string()));
        if let Some(e) = gone {
            e.stop();
        }
    }

    /// Stops serving every cluster (shutdown, or the Lease is about to be released).
    pub async fn clear(&self) {
        self.open.store(false, Ordering::Release);
        let _no_opening = self.opening.lock().await;
        let all = std::mem::take(&mut *self.clusters.write().await);
        for e in all.values() {
            e.stop();
        }
    }

    /// Drops every cluster for which `exists` says no (deleted LogClusters: no reconcile runs
    /// for an object that is gone, so they are swept instead).
    pub async fn retain(&self, exists: impl Fn(&str, &str) -> bool) {
        self.clusters.write().await.retain(|(ns, name), e| {
            let keep = exists(ns, name);
            if !keep {
                e.stop();
            }
            keep
        });
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The brokers' controller API for every cluster.
    pub fn router(&self) -> Router {
        Router::new().fallback(dispatch).with_state(self.clone())
    }
}

/// `/clusters/<ns>/<name>/<rest>` split into its parts.
fn split_path(path: &str) -> Option<(&str, &str, &str)> {
    let rest = path.strip_prefix("/clusters/")?;
    let (ns, rest) = rest.split_once('/')?;
    let (name, rest) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    (!ns.is_empty() && !name.is_empty()).then_some((ns, name, rest))
}

fn refuse(status: StatusCode, kind: &str, error: String) -> Response {
    (
        status,
        axum::Json(ApiError {
            kind: kind.into(),
            error,
        }),
    )
        .into_response()
}

async fn dispatch(State(reg): State<Registry>, mut req: Request<Body>) -> Response {
    let path = req.uri().path().to_string();
    let Some((ns, name, rest)) = split_path(&path) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no such endpoint {path}; cluster APIs live under /clusters/<namespace>/<name>/"
            ),
        );
    };
    if !*reg.leading.borrow() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
            "this operator replica does not hold the leader Lease".into(),
        );
    }
    let Some(entry) = reg.get(ns, name).await else {
        return refuse(
            StatusCode::NOT_FOUND,
            "unknown_cluster",
            format!("no LogCluster {ns}/{name} is managed by this operator (yet)"),
        );
    };
    let rewritten = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    match rewritten.parse::<Uri>() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "bad_path", e.to_string()),
    }
    match entry.router.clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::split_path;

    #[test]
    fn paths() {
        assert_eq!(
            split_path("/clusters/prod/demo/v1/metadata"),
            Some(("prod", "demo", "/v1/metadata"))
        );
        assert_eq!(
            split_path("/clusters/prod/demo"),
            Some(("prod", "demo", "/"))
        );
        assert_eq!(split_path("/clusters/prod/"), None);
        assert_eq!(split_path("/clusters//demo/x"), None);
        assert_eq!(split_path("/v1/metadata"), None);
    }
}
