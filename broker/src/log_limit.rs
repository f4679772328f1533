//! Rate limits for log lines a client can cause: a misbehaving client must not fill the disk
//! with warnings. Each site keeps one `Limit`, a token bucket (GCRA: a burst, then one line
//! per interval); what it held back is counted and reported with the next line it lets through.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Limit {
    interval_ms: i64,
    /// How far ahead of now the theoretical arrival time may run: (burst - 1) intervals.
    tolerance_ms: i64,
    /// The theoretical arrival time of the next line (GCRA's TAT).
    tat_ms: AtomicI64,
    suppressed: AtomicU64,
}

impl Limit {
    /// `burst` lines at once, then one per `interval`.
    pub const fn new(burst: u32, interval: Duration) -> Self {
        let interval_ms = interval.as_millis() as i64;
        Self {
            interval_ms,
            tolerance_ms: interval_ms * (burst.saturating_sub(1) as i64),
            tat_ms: AtomicI64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one let through)` when a line may be written now.
    pub fn allow(&self) -> Option<u64> {
        // A monotonic clock: a wall-clock step back must not silence the warnings.
        static START: OnceLock<Instant> = OnceLock::new();
        self.allow_at(START.get_or_init(Instant::now).elapsed().as_millis() as i64)
    }

    fn allow_at(&self, now_ms: i64) -> Option<u64> {
        let mut tat = self.tat_ms.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now_ms);
            if start - now_ms > self.tolerance_ms {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self.tat_ms.compare_exchange_weak(
                tat,
                start + self.interval_ms,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.suppressed.swap(0, Ordering::Relaxed)),
                Err(now_tat) => tat = now_tat,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_line_per_interval_and_the_rest_counted() {
        let l = Limit::new(3, Duration::from_secs(1));
        let t = 1_000_000;
        assert_eq!(l.allow_at(t), Some(0));
        assert_eq!(l.allow_at(t), Some(0));
        assert_eq!(l.allow_at(t), Some(0));
        for _ in 0..100 {
            assert_eq!(l.allow_at(t + 10), None);
        }
        assert_eq!(l.allow_at(t + 999), None);
        assert_eq!(l.allow_at(t + 1_000), Some(101));
        assert_eq!(l.allow_at(t + 1_001), None);
        // After a quiet spell the whole burst is there again.
        for _ in 0..3 {
            assert!(l.allow_at(t + 60_000).is_some());
        }
        assert_eq!(l.allow_at(t + 60_000), None);
    }
}
