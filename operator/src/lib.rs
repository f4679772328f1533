//! Strand operator. Today: the cluster controller (`controller`), the only writer of
//! partition state: leaders, leader and partition epochs, ISR, reassignments. Its decisions
//! are pure functions over the metadata model; stores and the HTTP API are the I/O around them.

#![forbid(unsafe_code)]

pub mod controller;
pub mod crd;
pub mod k8s;
pub mod roll;
