//! The operator on Kubernetes: the controller's store in the LogCluster status (`store`), leader
//! election with a Lease (`lease`), the children of a LogCluster (`resources`), one controller
//! per LogCluster behind one HTTP listener (`registry`), the reconcilers (`cluster`, `topic`)
//! and the process that wires them together (`run`).

pub mod cluster;
pub mod lease;
pub mod registry;
pub mod resources;
pub mod run;
pub mod store;
pub mod topic;

use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;

use crate::crd::ReplicatedTopic;

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub registry: registry::Registry,
    pub recorder: Recorder,
    /// Base URL of the controller API as brokers reach it.
    pub controller_url: String,
    /// Every ReplicatedTopic, for conflict detection.
    pub topics: Store<ReplicatedTopic>,
}
