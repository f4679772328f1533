//! Leader election with a `coordination.k8s.io/v1` Lease, so two operator replicas can run and
//! exactly one acts as the clusters' controller. Same rules as client-go's leaderelection:
//! expiry is judged by how long the record has gone unchanged on *this* replica's clock (never by
//! comparing the holder's renewTime with our clock), every write is compare-and-swap on the
//! resourceVersion, and a leader that cannot renew within the renew deadline steps down.
//! [`next_step`] is the pure decision; [`Elector`] does the I/O.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// What a replica does next with the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No Lease exists: create it holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free, released, or its holder stopped renewing: take it over.
    TakeOver,
    /// Someone else holds a live Lease.
    Follow { holder: String },
}

/// The next step for `me`, given the Lease (if any) and how long its record has gone unchanged
/// as this replica observed it.
pub fn next_step(
    lease: Option<&LeaseSpec>,
    me: &str,
    unchanged_for: Duration,
    lease_duration: Duration,
) -> Step {
    let Some(spec) = lease else {
        return Step::Create;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => Step::TakeOver,
        Some(h) if h == me => Step::Renew,
        Some(_) if unchanged_for >= lease_duration => Step::TakeOver,
        Some(h) => Step::Follow {
            holder: h.to_string(),
        },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lost the leader Lease to {0}")]
    Lost(String),
    #[error("could not renew the leader Lease within {0:?}; stepping down")]
    RenewDeadline(Duration),
}

pub struct Elector {
    pub api: Api<Lease>,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long steps down (shorter than the lease duration,
    /// so it stops acting before anyone may take over).
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// The record fields whose change proves the holder is alive.
fn record_key(spec: Option<&LeaseSpec>) -> Option<(Option<String>, Option<String>)> {
    spec.map(|s| {
        (
            s.holder_identity.clone(),
            s.renew_time.as_ref().map(|t| t.0.to_string()),
        )
    })
}

impl Elector {
    /// Runs until leadership is lost (an error) or `stop` fires (then releases the Lease so the
    /// other replica takes over at once). `leading` is true exactly while we hold the Lease.
    pub async fn run(
        &self,
        leading: watch::Sender<bool>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), LeaseError> {
        let mut observed = None;
        let mut observed_at = Instant::now();
        let mut last_renew: Option<Instant> = None;
        loop {
            if *stop.borrow() {
                if *leading.borrow() {
                    self.release().await;
                    leading.send_replace(false);
                }
                return Ok(());
            }
            // A hung API call must not keep a leader acting past its renew deadline.
            let round = tokio::time::timeout(
                self.renew_deadline / 2,
                self.try_once(&mut observed, &mut observed_at),
            )
            .await
            .unwrap_or_else(|_| Err(kube::Error::Service("Lease request timed out".into())));
            match round {
                Ok(None) => {
                    if !*leading.borrow() {
                        info!(identity = %self.identity, lease = %self.name, "became leader");
                    }
                    last_renew = Some(Instant::now());
                    leading.send_replace(true);
                }
                Ok(Some(holder)) => {
                    if *leading.borrow() {
                        leading.send_replace(false);
                        return Err(LeaseError::Lost(holder));
                    }
                }
                Err(e) => warn!(error = %e, lease = %self.name, "leader Lease update failed"),
            }
            if *leading.borrow() && last_renew.is_some_and(|t| t.elapsed() > self.renew_deadline) {
                leading.send_replace(false);
                return Err(LeaseError::RenewDeadline(self.renew_deadline));
            }
            tokio::select! {
                _ = tokio::time::sleep(self.retry_period) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// One round: `Ok(None)` if we hold the Lease afterwards, `Ok(Some(holder))` if another does.
    async fn try_once(
        &self,
        observed: &mut Option<(Option<String>, Option<String>)>,
        observed_at: &mut Instant,
    ) -> Result<Option<String>, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let key = record_key(spec);
        if key != *observed {
            *observed = key;
            *observed_at = Instant::now();
        }
        let now = MicroTime(Timestamp::now());
        let duration_s = i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX);
        match next_step(
            spec,
            &self.identity,
            observed_at.elapsed(),
            self.lease_duration,
        ) {
            Step::Follow { holder } => Ok(Some(holder)),
            Step::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(duration_s),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await?;
                Ok(None)
            }
            step @ (Step::Renew | Step::TakeOver) => {
                // `current` is Some here; replace() carries its resourceVersion, so a concurrent
                // writer makes this fail with 409 instead of both believing they lead.
                let mut lease = current.unwrap_or_default();
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if step == Step::TakeOver {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(now.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(duration_s);
                spec.renew_time = Some(now);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await?;
                Ok(None)
            }
        }
    }

    /// Gives the Lease up (clean shutdown), so the next replica need not wait for it to expire.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.name, "released the leader Lease"),
            Err(e) => warn!(error = %e, "could not release the leader Lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(h: Option<&str>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: h.map(String::from),
            ..LeaseSpec::default()
        }
    }

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn steps() {
        let cases: &[(Option<LeaseSpec>, u64, Step)] = &[
            (None, 0, Step::Create),
            (Some(held_by(None)), 0, Step::TakeOver),
            (Some(held_by(Some(""))), 0, Step::TakeOver),
            (Some(held_by(Some("me"))), 0, Step::Renew),
            // Our own lease is renewed even if we were slow: nobody else took it.
            (Some(held_by(Some("me"))), 100, Step::Renew),
            (
                Some(held_by(Some("other"))),
                14,
                Step::Follow {
                    holder: "other".into(),
                },
            ),
            (Some(held_by(Some("other"))), 15, Step::TakeOver),
            (Some(held_by(Some("other"))), 60, Step::TakeOver),
        ];
        for (lease, secs, want) in cases {
            let got = next_step(lease.as_ref(), "me", Duration::from_secs(*secs), D);
            assert_eq!(&got, want, "lease {lease:?} unchanged for {secs}s");
        }
    }

    #[test]
    fn record_changes_are_what_restarts_the_expiry_clock() {
        let a = held_by(Some("a"));
        let mut a2 = a.clone();
        a2.renew_time = Some(MicroTime(Timestamp::UNIX_EPOCH));
        assert_ne!(record_key(Some(&a)), record_key(Some(&a2)));
        // Fields other than holder and renew time (e.g. lease duration) are not proof of life.
        let mut a3 = a.clone();
        a3.lease_duration_seconds = Some(99);
        assert_eq!(record_key(Some(&a)), record_key(Some(&a3)));
    }
}
