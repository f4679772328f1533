//! Work that can take long on a request's path (decompressing a client's batch, creating or
//! deleting thousands of partition directories) must not hold one of the async runtime's few
//! worker threads, or every connection scheduled there waits behind it. `off_runtime` hands the
//! current worker's other tasks to another thread for the duration (tokio's `block_in_place`)
//! and runs the work here, so the request keeps its place: it is still handled before its
//! connection reads the next one.

use tokio::runtime::{Handle, RuntimeFlavor};

pub fn off_runtime<R>(work: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        // block_in_place needs the multi-thread runtime; elsewhere (a current-thread test
        // runtime, a plain thread) the work simply runs.
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}
