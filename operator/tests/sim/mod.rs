//! A deterministic simulation of the cluster's decision cores; see `tests/simulation.rs`.

pub mod broker;
pub mod log;
pub mod net;
pub mod oracle;
pub mod world;
