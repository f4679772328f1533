//! A rate over a sliding window of samples, and the throttle time that brings it back under a
//! quota: Kafka's `Rate` over `SampledStat` (quota.window.num = 11 samples of
//! quota.window.size.seconds = 1) and `QuotaUtils.throttleTime`. Pure: time is an argument.

use std::collections::VecDeque;

/// Kafka's defaults: 11 samples of one second.
pub const SAMPLES: usize = 11;
pub const SAMPLE_MS: u64 = 1000;

#[derive(Debug, Clone, Copy)]
struct Sample {
    start_ms: u64,
    total: f64,
}

/// What was recorded in the last `SAMPLES` sample windows.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    samples: VecDeque<Sample>,
}

impl Rate {
    /// Adds `value` at `now_ms` and answers how long the client must wait for the rate to
    /// fall back to `quota` per second (0 when it is within it), at most `cap_ms`. The value
    /// counts whether or not the client is throttled, as in Kafka, so a client that ignores
    /// the throttle only makes its next one longer. Byte rates are not capped (a request far
    /// larger than the quota waits for all of it, or the rate would not hold); Kafka caps the
    /// request-time quota at one sample window.
    pub fn record(&mut self, now_ms: u64, value: f64, quota: f64, cap_ms: u64) -> u64 {
        self.expire(now_ms);
        match self.samples.back_mut() {
            Some(s) if now_ms < s.start_ms + SAMPLE_MS => s.total += value,
            _ => self.samples.push_back(Sample {
                start_ms: now_ms,
                total: value,
            }),
        }
        self.throttle_ms(now_ms, quota).min(cap_ms)
    }

    /// Per second, over the window (which counts as at least `SAMPLES - 1` whole samples, so a
    /// new client is not throttled by its first burst alone).
    pub fn per_second(&self, now_ms: u64) -> f64 {
        let total: f64 = self
            .samples
            .iter()
            .filter(|s| s.start_ms + (SAMPLES as u64) * SAMPLE_MS > now_ms)
            .map(|s| s.total)
            .sum();
        total / (self.window_ms(now_ms) as f64 / 1000.0)
    }

    fn window_ms(&self, now_ms: u64) -> u64 {
        let oldest = self.samples.front().map_or(now_ms, |s| s.start_ms);
        let elapsed = now_ms.saturating_sub(oldest);
        let full = elapsed / SAMPLE_MS;
        let min_full = SAMPLES as u64 - 1;
        elapsed + min_full.saturating_sub(full) * SAMPLE_MS
    }

    fn throttle_ms(&self, now_ms: u64, quota: f64) -> u64 {
        let rate = self.per_second(now_ms);
        if quota <= 0.0 || rate <= quota {
            return 0;
        }
        // As Kafka's QuotaUtils.throttleTime (rounded as Math.round).
        let ms = (rate - quota) / quota * self.window_ms(now_ms) as f64;
        ms.round() as u64
    }

    fn expire(&mut self, now_ms: u64) {
        while self
            .samples
            .front()
            .is_some_and(|s| s.start_ms + (SAMPLES as u64) * SAMPLE_MS <= now_ms)
        {
            self.samples.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_the_quota_nothing_is_throttled() {
        let mut r = Rate::default();
        // 900 bytes/s against a quota of 1000: never throttled, for a minute. (At exactly the
        // quota, the sample just started counts over a window of whole samples, so a client
        // right at it sees the occasional short throttle, as in Kafka.)
        for ms in (0..60_000).step_by(100) {
            assert_eq!(r.record(ms, 90.0, 1000.0, NO_CAP), 0, "at {ms}");
        }
        assert!((r.per_second(60_000) - 900.0).abs() < 100.0);
    }

    #[test]
    fn the_throttle_brings_the_rate_back_to_the_quota() {
        // A client that sends 1000 bytes whenever it may, and waits out every throttle: over
        // two minutes its average rate converges on the quota of 1000 bytes/s.
        let mut r = Rate::default();
        let mut now = 0;
        let mut sent = 0.0;
        while now < 120_000 {
            let wait = r.record(now, 1000.0, 1000.0, NO_CAP);
            sent += 1000.0;
            now += wait.max(1);
        }
        let average = sent / 120.0;
        assert!(
            (900.0..1300.0).contains(&average),
            "average {average} bytes/s"
        );
    }

    const NO_CAP: u64 = u64::MAX;

    #[test]
    fn a_burst_is_throttled_in_proportion_and_capped_only_when_asked() {
        let mut r = Rate::default();
        // 20 KB at once against 1 KB/s: the rate over the 10 s minimum window is 2 KB/s, so
        // the wait is (2 - 1) / 1 * 10 s.
        assert_eq!(r.record(0, 20_000.0, 1000.0, NO_CAP), 10_000);
        // The request-time quota's cap (Kafka's: one sample window).
        assert_eq!(r.record(1, 1e6, 1000.0, SAMPLE_MS), SAMPLE_MS);
        // Once the window has passed, the client starts afresh.
        assert_eq!(r.record(60_000, 10.0, 1000.0, NO_CAP), 0);
    }

    #[test]
    fn requests_far_larger_than_the_quota_still_average_to_it() {
        // 100 KB requests against 1 KB/s, each sent when the last throttle has passed: over
        // an hour the average holds (a throttle capped at the window let 9 KB/s through).
        let mut r = Rate::default();
        let (mut now, mut sent) = (0u64, 0.0);
        while now < 3_600_000 {
            let wait = r.record(now, 100_000.0, 1000.0, NO_CAP);
            sent += 100_000.0;
            now += wait.max(1);
        }
        let average = sent / (now as f64 / 1000.0);
        assert!(
            (900.0..1200.0).contains(&average),
            "average {average} bytes/s"
        );
    }
}
