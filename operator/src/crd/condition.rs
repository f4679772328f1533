//! Status conditions shared by every Strand resource (`Ready`, `Progressing`, `Degraded`), in
//! the shape of Kubernetes' `metav1.Condition`, and the pure helpers that set them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The condition types Strand reports, following the Kubernetes API conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionType {
    /// The resource is usable: a cluster serves clients, a topic exists with a leader per partition.
    Ready,
    /// The operator is changing something: a rolling upgrade, a scale, a reassignment.
    Progressing,
    /// Something is wrong that the operator cannot fix alone; the message says what.
    Degraded,
}

/// Whether a condition holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One observation about a resource, as in Kubernetes' `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type: Ready, Progressing or Degraded.
    #[serde(rename = "type")]
    pub type_: ConditionType,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// Machine-readable reason in CamelCase, e.g. `RollBlocked` or `ReplicationFactorTooHigh`.
    pub reason: String,
    /// Human-readable explanation, e.g. which partition blocks a roll and why.
    pub message: String,
    /// When `status` last changed (not when the condition was last written).
    pub last_transition_time: Time,
    /// The `metadata.generation` this condition was computed from; older than the resource's
    /// generation means the operator has not caught up with the latest spec yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Sets `new` in `conditions`, replacing the condition of the same type. The last transition
/// time is kept when the status does not change, so it records when the status last flipped.
/// Returns whether anything changed (so callers can skip a needless status write).
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            let changed = *old != new;
            *old = new;
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// The condition of type `type_`, if set.
pub fn find_condition(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of type `type_` is set and True.
pub fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).expect("valid timestamp"))
    }

    fn cond(type_: ConditionType, status: ConditionStatus, reason: &str, t: i64) -> Condition {
        Condition {
            type_,
            status,
            reason: reason.to_string(),
            message: format!("{reason} message"),
            last_transition_time: at(t),
            observed_generation: Some(t),
        }
    }

    #[test]
    fn adds_a_missing_condition() {
        let mut cs = vec![];
        assert!(set_condition(
            &mut cs,
            cond(ConditionType::Ready, ConditionStatus::True, "Up", 1)
        ));
        assert_eq!(cs.len(), 1);
        assert!(is_true(&cs, ConditionType::Ready));
        assert!(!is_true(&cs, ConditionType::Degraded));
    }

    #[test]
    fn same_status_keeps_the_transition_time_but_takes_the_rest() {
        let mut cs = vec![cond(
            ConditionType::Ready,
            ConditionStatus::False,
            "Starting",
            1,
        )];
        assert!(set_condition(
            &mut cs,
            cond(ConditionType::Ready, ConditionStatus::False, "Waiting", 5)
        ));
        let c = find_condition(&cs, ConditionType::Ready).unwrap();
        assert_eq!(c.last_transition_time, at(1));
        assert_eq!(c.reason, "Waiting");
        assert_eq!(c.observed_generation, Some(5));
    }

    #[test]
    fn a_status_change_moves_the_transition_time() {
        let mut cs = vec![cond(
            ConditionType::Ready,
            ConditionStatus::False,
            "Starting",
            1,
        )];
        assert!(set_condition(
            &mut cs,
            cond(ConditionType::Ready, ConditionStatus::True, "Up", 7)
        ));
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, at(7));
        assert_eq!(cs[0].status, ConditionStatus::True);
    }

    #[test]
    fn rewriting_the_same_condition_is_no_change() {
        let mut cs = vec![cond(ConditionType::Ready, ConditionStatus::True, "Up", 1)];
        let mut again = cond(ConditionType::Ready, ConditionStatus::True, "Up", 1);
        again.last_transition_time = at(99); // a later "now": ignored, the status did not flip
        assert!(!set_condition(&mut cs, again));
        assert_eq!(cs[0].last_transition_time, at(1));
    }

    #[test]
    fn other_types_are_left_alone_and_order_is_kept() {
        let mut cs = vec![
            cond(ConditionType::Ready, ConditionStatus::True, "Up", 1),
            cond(
                ConditionType::Progressing,
                ConditionStatus::False,
                "Idle",
                1,
            ),
        ];
        set_condition(
            &mut cs,
            cond(ConditionType::Degraded, ConditionStatus::True, "Bad", 2),
        );
        set_condition(
            &mut cs,
            cond(
                ConditionType::Progressing,
                ConditionStatus::True,
                "Rolling",
                3,
            ),
        );
        let types: Vec<_> = cs.iter().map(|c| c.type_).collect();
        assert_eq!(
            types,
            [
                ConditionType::Ready,
                ConditionType::Progressing,
                ConditionType::Degraded
            ]
        );
        assert_eq!(cs[0].reason, "Up");
        assert_eq!(cs[1].reason, "Rolling");
    }

    #[test]
    fn serializes_like_metav1_condition() {
        let c = cond(ConditionType::Ready, ConditionStatus::True, "Up", 0);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["type"], "Ready");
        assert_eq!(v["status"], "True");
        assert_eq!(v["lastTransitionTime"], "1970-01-01T00:00:00Z");
        assert_eq!(v["observedGeneration"], 0);
    }
}
