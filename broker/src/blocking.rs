//! Work that can take long on a request's path (decompressing a client's batch, creating or
//! deleting thousands of partition directories) must not hold one of the async runtime's few
//! worker threads, or every connection scheduled there waits behind it. `off_runtime` hands the
//! current worker's other tasks to another thread for the duration (tokio's `block_in_place`)
//! and runs the work here, so the request keeps its place: it is still handled before its
//! connection reads the next one.

use std::sync::{Condvar, Mutex, OnceLock};

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

/// At most so many callers inside `run` at once; the rest wait on their own threads (already
/// off the runtime). Bounds memory when each may hold a lot: `block_in_place` alone would let
/// hundreds of blocking-pool threads inflate batches at the same time.
pub struct Gate {
    busy: Mutex<usize>,
    free: Condvar,
    max: OnceLock<usize>,
}

impl Gate {
    pub const fn new() -> Self {
        Self {
            busy: Mutex::new(0),
            free: Condvar::new(),
            max: OnceLock::new(),
        }
    }

    fn max(&self) -> usize {
        *self.max.get_or_init(|| {
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2)
        })
    }

    pub fn run<R>(&self, work: impl FnOnce() -> R) -> R {
        let max = self.max();
        {
            let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
            while *busy >= max {
                busy = self.free.wait(busy).unwrap_or_else(|p| p.into_inner());
            }
            *busy += 1;
        }
        // Released on the way out even if `work` panics.
        struct Release<'a>(&'a Gate);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                let mut busy = self.0.busy.lock().unwrap_or_else(|p| p.into_inner());
                *busy -= 1;
                self.0.free.notify_one();
            }
        }
        let _release = Release(self);
        work()
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_gate_lets_no_more_than_its_maximum_in() {
        static GATE: Gate = Gate::new();
        let max = GATE.max();
        let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..max * 4)
            .map(|_| {
                let (inside, most) = (Arc::clone(&inside), Arc::clone(&most));
                std::thread::spawn(move || {
                    GATE.run(|| {
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= max);
        assert!(
            most.load(Ordering::SeqCst) >= 2,
            "the gate let only one in at a time"
        );
    }
}
