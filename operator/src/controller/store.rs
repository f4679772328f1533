//! Where controller state is kept. Writes are compare-and-swap on the metadata version, so two
//! controllers (or a stale one) can never both win. Here: a local state file replaced
//! atomically; the Kubernetes store (custom resources' status, resourceVersion) comes with the
//! operator.

use std::fs;
use std::io;
use std::path::PathBuf;

use broker::storage::checkpoint::write_atomic_private;

use super::state::ControllerState;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "stored state is at version {stored}, expected {expected}: another controller wrote it"
    )]
    Conflict { stored: u64, expected: u64 },
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("stored state is corrupt: {0}")]
    Corrupt(String),
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("{0} no longer exists")]
    Gone(String),
    #[error("{0}")]
    Contended(String),
}

pub trait Store: Send + Sync + 'static {
    /// The stored state, if any.
    fn load(&self) -> impl Future<Output = Result<Option<ControllerState>, StoreError>> + Send;
    /// Saves `state` if the stored version is still `expected_version`.
    fn save(
        &self,
        state: &ControllerState,
        expected_version: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A JSON file written with write-fsync-rename.
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

// A small file on local disk: read and written in place, not worth a blocking-pool hop.
impl Store for FileStore {
    async fn load(&self) -> Result<Option<ControllerState>, StoreError> {
        self.load_now()
    }

    async fn save(&self, state: &ControllerState, expected_version: u64) -> Result<(), StoreError> {
        self.save_now(state, expected_version)
    }
}

impl FileStore {
    fn load_now(&self) -> Result<Option<ControllerState>, StoreError> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(e.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn save_now(&self, state: &ControllerState, expected_version: u64) -> Result<(), StoreError> {
        let stored = self.load_now()?.map_or(0, |s| s.metadata.version);
        if stored != expected_version {
            return Err(StoreError::Conflict {
                stored,
                expected: expected_version,
            });
        }
        let bytes =
            serde_json::to_vec_pretty(state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        write_atomic_private(&self.path, &bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn compare_and_swap_on_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("controller.json"));
        assert!(store.load().await.unwrap().is_none());
        let mut s = ControllerState::new("c1".into());
        s.metadata.version = 1;
        store.save(&s, 0).await.unwrap();
        s.metadata.version = 2;
        store.save(&s, 1).await.unwrap();
        let stale = store.save(&s, 1).await;
        assert!(
            matches!(
                stale,
                Err(StoreError::Conflict {
                    stored: 2,
                    expected: 1
                })
            ),
            "{stale:?}"
        );
        assert_eq!(store.load().await.unwrap().unwrap(), s);
    }
}
