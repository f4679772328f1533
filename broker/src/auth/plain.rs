//! SASL PLAIN (RFC 4616) with Kafka's static users: a listener's
//! `listener.name.<listener>.plain.sasl.jaas.config` names its users as `user_<name>="<password>"`
//! options of Kafka's PlainLoginModule, as Kafka's PlainServerCallbackHandler reads them.
//! PLAIN sends the password itself, so it belongs on SASL_SSL listeners (on SASL_PLAINTEXT the
//! broker warns at start).

use std::collections::BTreeMap;

use subtle::ConstantTimeEq;

/// Kafka's login module for PLAIN.
pub const PLAIN_LOGIN_MODULE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JaasError {
    #[error(
        "a JAAS config must be `{PLAIN_LOGIN_MODULE} required user_NAME=\"PASSWORD\" ...;`: {0}"
    )]
    Syntax(&'static str),
    #[error("the JAAS config names login module {0:?}; only {PLAIN_LOGIN_MODULE} is served")]
    Module(String),
    #[error(
        "the JAAS control flag must be required (or requisite, sufficient, optional), got {0:?}"
    )]
    Flag(String),
    #[error("the JAAS config names user {0:?} twice")]
    Duplicate(String),
    #[error("user {0:?} is reserved for the cluster's brokers")]
    Reserved(String),
}

/// A listener's PLAIN users and their passwords.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PlainUsers(BTreeMap<String, String>);

impl std::fmt::Debug for PlainUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl PlainUsers {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks `password` for `user` in constant time (for users that exist).
    pub fn verify(&self, user: &str, password: &str) -> bool {
        self.0
            .get(user)
            .is_some_and(|p| bool::from(p.as_bytes().ct_eq(password.as_bytes())))
    }
}

/// Reads a JAAS config line: `<module> <flag> key="value" ... ;`. Values may be quoted
/// (with `\"` and `\\` escapes) or bare.
pub fn parse_jaas(text: &str) -> Result<PlainUsers, JaasError> {
    let body = text
        .trim()
        .strip_suffix(';')
        .ok_or(JaasError::Syntax("it must end with `;`"))?;
    let mut rest = body.trim_start();
    let mut word = || -> Option<&str> {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (w, r) = rest.split_at(end);
        rest = r.trim_start();
        (!w.is_empty()).then_some(w)
    };
    let module = word().ok_or(JaasError::Syntax("no login module"))?;
    if module != PLAIN_LOGIN_MODULE {
        return Err(JaasError::Module(module.to_string()));
    }
    let flag = word().ok_or(JaasError::Syntax("no control flag"))?;
    if !["required", "requisite", "sufficient", "optional"].contains(&flag) {
        return Err(JaasError::Flag(flag.to_string()));
    }
    let mut users = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(JaasError::Syntax("options are key=value"));
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            loop {
                match chars.next() {
                    Some('\\') => v.push(chars.next().ok_or(JaasError::Syntax("dangling `\\`"))?),
                    Some('"') => break,
                    Some(c) => v.push(c),
                    None => return Err(JaasError::Syntax("unterminated quote")),
                }
            }
            v
        } else {
            chars.by_ref().take_while(|c| !c.is_whitespace()).collect()
        };
        if let Some(user) = key.strip_prefix("user_") {
            if user.is_empty() {
                return Err(JaasError::Syntax("`user_` needs a user name"));
            }
            if user == super::BROKER_USER {
                return Err(JaasError::Reserved(user.to_string()));
            }
            if users.insert(user.to_string(), value).is_some() {
                return Err(JaasError::Duplicate(user.to_string()));
            }
        }
        // Other options (username and password: what a Kafka broker itself logs in with) are
        // read and not used: brokers here authenticate with the cluster secret.
    }
    Ok(PlainUsers(users))
}

/// Why a PLAIN message is refused (logged at debug level only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    #[error("malformed PLAIN message: {0}")]
    Malformed(&'static str),
    #[error("an authorization id different from the user name is not supported")]
    AuthorizationId,
    #[error("unknown user or wrong password")]
    InvalidCredentials,
}

/// Checks a PLAIN message (`authzid NUL user NUL password`); the user on success.
pub fn authenticate(users: &PlainUsers, msg: &[u8]) -> Result<String, PlainError> {
    let msg = std::str::from_utf8(msg).map_err(|_| PlainError::Malformed("not UTF-8"))?;
    let mut parts = msg.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PlainError::Malformed("expected authzid, user and password"));
    };
    if user.is_empty() || password.is_empty() {
        return Err(PlainError::Malformed("empty user or password"));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(PlainError::AuthorizationId);
    }
    if users.verify(user, password) {
        Ok(user.to_string())
    } else {
        Err(PlainError::InvalidCredentials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAAS: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required
        username="admin" password="admin-secret"
        user_admin="admin-secret" user_alice="a \"quoted\" one" user_bob=bare;"#;

    #[test]
    fn kafkas_static_users_are_read() {
        let users = parse_jaas(JAAS).unwrap();
        assert!(users.verify("admin", "admin-secret"));
        assert!(users.verify("alice", "a \"quoted\" one"));
        assert!(users.verify("bob", "bare"));
        assert!(!users.verify("bob", "Bare"));
        assert!(!users.verify("username", "admin"));
        // Passwords never reach a log through Debug.
        assert!(!format!("{users:?}").contains("secret"));
    }

    #[test]
    fn bad_configs_are_refused_with_why() {
        for (bad, says) in [
            (
                "org.apache.kafka.common.security.plain.PlainLoginModule required user_a=\"x\"",
                "`;`",
            ),
            (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "ScramLoginModule",
            ),
            (
                "org.apache.kafka.common.security.plain.PlainLoginModule maybe;",
                "maybe",
            ),
            (
                "org.apache.kafka.common.security.plain.PlainLoginModule required user_a=\"x;",
                "quote",
            ),
            (
                "org.apache.kafka.common.security.plain.PlainLoginModule required user_a=x user_a=y;",
                "twice",
            ),
            (
                "org.apache.kafka.common.security.plain.PlainLoginModule required user_=x;",
                "user name",
            ),
            (";", "login module"),
            (
                "org.apache.kafka.common.security.plain.PlainLoginModule required user_strand-broker=x;",
                "reserved",
            ),
        ] {
            let e = parse_jaas(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn plain_messages_are_checked() {
        let users = parse_jaas(JAAS).unwrap();
        assert_eq!(
            authenticate(&users, b"\0admin\0admin-secret").unwrap(),
            "admin"
        );
        assert_eq!(
            authenticate(&users, b"admin\0admin\0admin-secret").unwrap(),
            "admin"
        );
        for (msg, want) in [
            (&b"\0admin\0wrong"[..], PlainError::InvalidCredentials),
            (b"\0nobody\0admin-secret", PlainError::InvalidCredentials),
            (b"bob\0admin\0admin-secret", PlainError::AuthorizationId),
            (
                b"\0admin",
                PlainError::Malformed("expected authzid, user and password"),
            ),
            (
                b"\0admin\0admin-secret\0x",
                PlainError::Malformed("expected authzid, user and password"),
            ),
            (
                b"\0\0admin-secret",
                PlainError::Malformed("empty user or password"),
            ),
            (b"\0admin\0\xff", PlainError::Malformed("not UTF-8")),
        ] {
            assert_eq!(authenticate(&users, msg), Err(want), "{msg:?}");
        }
    }
}
