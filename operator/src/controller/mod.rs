//! The cluster controller: model (`state`), replica placement (`placement`), decisions
//! (`decisions`: registration, heartbeats, loss, AlterPartition, leader moves, reassignment),
//! rebalancing onto new brokers (`balance` plans, `rebalance` carries it out), and where the
//! state is kept (`store`).

pub mod balance;
pub mod decisions;
pub mod http;
pub mod placement;
pub mod rebalance;
pub mod service;
pub mod state;
pub mod store;

pub use decisions::ControllerError;
pub use state::ControllerState;
