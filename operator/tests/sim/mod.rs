//! A deterministic simulation of the cluster's decision cores; see `tests/simulation.rs`.

pub mod broker;
pub mod coordinator;
pub mod group_oracle;
pub mod log;
pub mod members;
pub mod net;
pub mod oracle;
pub mod world;
