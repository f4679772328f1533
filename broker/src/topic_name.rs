//! Kafka's topic name rule (`org.apache.kafka.common.internals.Topic`), the one copy every
//! entry point uses: the broker's Kafka API (CreateTopics, auto-creation), the metadata a
//! broker applies and its partition directories, and, in the operator, the controller's topic
//! creation, the `ReplicatedTopic` CRD schema and its reconciler.
//!
//! - A name is 1 to [`MAX_LENGTH`] characters of `[a-zA-Z0-9._-]`, and not `.` or `..`. So it
//!   is always a single plain file name: `<name>-<partition>` can never leave the data
//!   directory or name another topic's directory.
//! - Two different names collide when they are equal after replacing `.` with `_` (Kafka's
//!   metric names cannot tell them apart): a topic cannot be created while one it collides
//!   with exists. Kafka answers INVALID_TOPIC_EXCEPTION.

/// Kafka's longest topic name (`Topic.MAX_NAME_LENGTH`).
pub const MAX_LENGTH: usize = 249;

/// The rule as a regular expression, for schemas (Kubernetes' OpenAPI `pattern`, RE2 syntax):
/// legal characters only, and not `.` or `..` (at most two leading dots before a non-dot, or
/// at least three dots). The length is checked separately ([`MAX_LENGTH`]).
pub const PATTERN: &str = r"^(\.{0,2}[a-zA-Z0-9_-]|\.{3})[a-zA-Z0-9._-]*$";

/// Names every entry must refuse (the hostile-clients issue's three, then the empty name and
/// the two directory names), for tests across the workspace to share.
#[doc(hidden)]
pub const REFUSED_EXAMPLES: [&str; 6] = ["./victim", "../ESCAPED", "bad\0name", "", ".", ".."];

/// Why a name is not a legal topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
// Debug formatting shows control characters escaped (`"bad\0name"`), never raw, in logs.
#[error("invalid topic name {name:?}: {reason}")]
pub struct InvalidTopicName {
    pub name: String,
    pub reason: String,
}

fn is_legal(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Checks `name` against Kafka's rule (`Topic.validate`).
pub fn validate(name: &str) -> Result<(), InvalidTopicName> {
    let refuse = |reason: String| {
        Err(InvalidTopicName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("the name is empty".into());
    }
    if name == "." || name == ".." {
        return refuse("'.' and '..' are not allowed".into());
    }
    let chars = name.chars().count();
    if chars > MAX_LENGTH {
        return refuse(format!(
            "{chars} characters; at most {MAX_LENGTH} are allowed"
        ));
    }
    if let Some(c) = name.chars().find(|c| !is_legal(*c)) {
        return refuse(format!(
            "contains {c:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// The name with `.` replaced by `_` (`Topic.unifyCollisionChars`): two names collide when
/// their keys are equal.
pub fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

/// True when `a` and `b` are different names that collide (`a.b` and `a_b`).
pub fn collides(a: &str, b: &str) -> bool {
    a != b && has_collision_chars(a) && collision_key(a) == collision_key(b)
}

/// `Topic.hasCollisionChars`: only names with `.` or `_` can collide with another name.
pub fn has_collision_chars(name: &str) -> bool {
    name.contains(['.', '_'])
}

/// The first of `existing` that `name` collides with (never `name` itself: an existing topic
/// of the same name is "already exists", not a collision).
pub fn find_collision<'a>(
    name: &str,
    existing: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if !has_collision_chars(name) {
        return None;
    }
    existing.into_iter().find(|other| collides(name, other))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_names() {
        for ok in [
            "orders",
            "orders.v1_x-y",
            "A-Z_a-z.0-9",
            "__consumer_offsets",
            ".a",
            "..a",
            "...",
            "a..",
            "-",
            "_",
            &"x".repeat(MAX_LENGTH),
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok:?}");
        }
    }

    /// Issue part 2's names, and Kafka's other refusals.
    #[test]
    fn illegal_names() {
        for bad in REFUSED_EXAMPLES.into_iter().chain([
            "a/b",
            "/abs",
            "a\\b",
            "a b",
            "tab\t",
            "new\nline",
            "ümlaut",
            "a:b",
            &*"x".repeat(MAX_LENGTH + 1),
        ]) {
            let e = validate(bad).unwrap_err();
            assert_eq!(e.name, bad);
            assert!(e.to_string().starts_with("invalid topic name"), "{e}");
        }
        assert!(
            validate(&"é".repeat(200)).is_err(),
            "200 characters, illegal ones"
        );
    }

    #[test]
    fn refusals_say_why_and_escape_control_characters() {
        let e = validate("bad\0name").unwrap_err().to_string();
        assert!(e.contains(r#""bad\0name""#) && e.contains("'\\0'"), "{e}");
        assert!(!e.contains('\0'), "{e}");
        let e = validate(&"x".repeat(250)).unwrap_err().to_string();
        assert!(e.contains("250 characters") && e.contains("249"), "{e}");
        assert!(validate("..").unwrap_err().to_string().contains("'..'"));
        assert!(validate("").unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn dots_and_underscores_collide() {
        assert!(collides("a.b", "a_b"));
        assert!(collides("a_b", "a.b"));
        assert!(collides("a.b_c", "a_b.c"));
        assert!(!collides("a.b", "a.b"), "the same name is not a collision");
        assert!(!collides("a-b", "a_b"));
        assert!(!collides("ab", "a_b"));
        assert_eq!(collision_key("a.b.c_d"), "a_b_c_d");
        let existing = ["orders", "a.b", "x_y"];
        assert_eq!(find_collision("a_b", existing), Some("a.b"));
        assert_eq!(find_collision("x.y", existing), Some("x_y"));
        assert_eq!(find_collision("a.b", existing), None);
        assert_eq!(find_collision("orders", existing), None);
        assert_eq!(find_collision("a-b", existing), None);
    }
}
