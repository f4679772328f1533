//! The cluster controller: model (`state`), replica placement (`placement`), decisions
//! (`decisions`: registration, heartbeats, loss, AlterPartition, leader moves, reassignment),
//! and where the state is kept (`store`).

pub mod decisions;
pub mod http;
pub mod placement;
pub mod service;
pub mod state;
pub mod store;

pub use decisions::ControllerError;
pub use state::ControllerState;
