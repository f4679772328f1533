//! The controller's store on Kubernetes: the state lives in the LogCluster's
//! `status.controllerState`, so it survives operator restarts and moves with the leader Lease.
//! A save is a compare-and-swap twice over: on the controller's metadata version (another
//! controller's commit is a conflict) and on the object's resourceVersion (the write only lands
//! on the exact object that was checked). Other status writers (the LogCluster reconciler)
//! change the resourceVersion too; such a race is retried, since it did not touch the state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::controller::state::ControllerState;
use crate::controller::store::{Store, StoreError};
use crate::crd::LogCluster;

/// Retries after resourceVersion races with other status writers before giving up.
const RACE_RETRIES: usize = 20;

pub struct KubeStore {
    api: Api<LogCluster>,
    name: String,
    /// The LogCluster this state belongs to: a recreated one of the same name is another
    /// cluster, and this store must never write into it.
    uid: String,
    /// Cleared when this replica stops serving the cluster (LogCluster gone, Lease lost or
    /// released): a request still in flight can then no longer commit.
    active: Arc<AtomicBool>,
}

impl KubeStore {
    pub fn new(
        api: Api<LogCluster>,
        name: impl Into<String>,
        uid: impl Into<String>,
        active: Arc<AtomicBool>,
    ) -> Self {
        Self {
            api,
            name: name.into(),
            uid: uid.into(),
            active,
        }
    }

    async fn get(&self) -> Result<LogCluster, StoreError> {
        let gone = || StoreError::Gone(format!("LogCluster {} (uid {})", self.name, self.uid));
        let lc = self.api.get_opt(&self.name).await?.ok_or_else(gone)?;
        if lc.metadata.uid.as_deref() != Some(self.uid.as_str()) {
            return Err(gone());
        }
        Ok(lc)
    }
}

/// The controller state stored in `lc`, if any.
pub fn stored_state(lc: &LogCluster) -> Result<Option<ControllerState>, StoreError> {
    match lc.status.as_ref().and_then(|s| s.controller_state.clone()) {
        None => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("status.controllerState: {e}"))),
    }
}

impl Store for KubeStore {
    async fn load(&self) -> Result<Option<ControllerState>, StoreError> {
        stored_state(&self.get().await?)
    }

    async fn save(&self, state: &ControllerState, expected_version: u64) -> Result<(), StoreError> {
        let value = serde_json::to_value(state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        for _ in 0..RACE_RETRIES {
            if !self.active.load(Ordering::Acquire) {
                return Err(StoreError::Gone(format!(
                    "LogCluster {}: this operator replica no longer serves it",
                    self.name
                )));
            }
            let lc = self.get().await?;
            let stored = stored_state(&lc)?.map_or(0, |s| s.metadata.version);
            if stored != expected_version {
                return Err(StoreError::Conflict {
                    stored,
                    expected: expected_version,
                });
            }
            // Naming the resourceVersion makes the API server refuse (409) a write to any other
            // version of the object. A JSON patch replaces the state whole; a merge patch would
            // merge maps and keep deleted topics.
            let mut ops = vec![
                json!({"op": "test", "path": "/metadata/uid", "value": self.uid}),
                json!({
                    "op": "replace",
                    "path": "/metadata/resourceVersion",
                    "value": lc.metadata.resource_version,
                }),
            ];
            if lc.status.is_none() {
                ops.push(json!({"op": "add", "path": "/status", "value": {}}));
            }
            ops.push(json!({"op": "add", "path": "/status/controllerState", "value": value}));
            let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            match self
                .api
                .patch_status(
                    &self.name,
                    &PatchParams::default(),
                    &Patch::Json::<()>(patch),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    return Err(StoreError::Gone(format!("LogCluster {}", self.name)));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Contended(format!(
            "LogCluster {} changed {RACE_RETRIES} times while saving; giving up this write",
            self.name
        )))
    }
}
