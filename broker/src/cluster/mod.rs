//! Cluster mode: the broker as a member of a controller-run cluster. `controller_client`
//! speaks the controller's HTTP API; `membership` registers, heartbeats, re-registers when
//! fenced, and follows the metadata (long poll by version, last copy kept on disk).

pub mod controller_client;
pub mod membership;
pub mod runtime;
