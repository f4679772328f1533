//! Who a connection is. Today one principal exists besides anonymous clients: the cluster's
//! brokers, who share a secret (`--cluster-secret-file`) with each other and the controller.
//!
//! - On the Kafka wire a broker proves it with SASL SCRAM-SHA-512 as [`BROKER_USER`]
//!   (SaslHandshake v1, SaslAuthenticate v0-2, as Kafka's inter-broker SASL does); only that
//!   principal may fetch as a replica, so a client claiming a follower's id cannot advance
//!   the high watermark (Kafka's ClusterAction on replica fetches).
//! - On the controller's HTTP API a broker sends a bearer token derived from the secret
//!   ([`ClusterSecret::controller_token`]), never the secret itself.
//!
//! - Client users (`users`) have SCRAM credentials made with Kafka's AlterUserScramCredentials.
//!   On a SASL_PLAINTEXT or SASL_SSL listener a client must authenticate as one of them (or as
//!   the broker user) before anything but ApiVersions; on PLAINTEXT and SSL listeners only the
//!   broker user may authenticate, and anonymous clients are served.
//!
//! The controller's HTTP API is not encrypted: put it on a network only the cluster reaches.

pub mod acl;
pub mod plain;
pub mod sasl;
pub mod scram;
pub mod users;

use std::path::Path;
use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

use scram::{Credential, Mechanism};

/// The SCRAM user brokers authenticate as.
pub const BROKER_USER: &str = "strand-broker";
/// The mechanism brokers use with each other (Kafka's sasl.mechanism.inter.broker.protocol).
pub const INTER_BROKER_MECHANISM: Mechanism = Mechanism::Sha512;
/// Shortest secret accepted: 128 bits written as hex.
pub const MIN_SECRET_BYTES: usize = 32;
/// The iteration count of the broker's stored credentials (Kafka's minimum).
const ITERATIONS: u32 = scram::MIN_ITERATIONS;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the cluster secret {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the cluster secret must be at least {MIN_SECRET_BYTES} printable characters (e.g. `openssl rand -hex 32`); got {0}"
    )]
    TooShort(usize),
    #[error("the cluster secret may hold only printable ASCII (no spaces)")]
    NotPrintable,
}

/// The secret the cluster's brokers and controller share, and what is derived from it.
pub struct ClusterSecret {
    secret: Vec<u8>,
    /// The broker user's stored credentials, one per mechanism: salted and derived (4096
    /// PBKDF2 rounds each) at first use, so the operator, which only needs the token, never
    /// pays for them.
    credentials: OnceLock<Vec<Credential>>,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// Reads the secret from a file (a trailing newline is ignored, as `kubectl create
    /// secret --from-file` and `echo` leave one).
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        let secret = bytes.trim_ascii_end();
        if !secret.iter().all(|b| b.is_ascii_graphic()) {
            return Err(SecretError::NotPrintable);
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort(secret.len()));
        }
        Ok(Self {
            secret: secret.to_vec(),
            credentials: OnceLock::new(),
        })
    }

    /// A fresh random secret (the controller of `operator local` writes one when asked).
    pub fn generate() -> String {
        let bytes: [u8; 32] = rand::rng().random();
        hex(&bytes)
    }

    /// The password brokers use as [`BROKER_USER`].
    pub fn password(&self) -> &[u8] {
        &self.secret
    }

    /// The stored credential of `user` for `mechanism`, if that user exists.
    pub fn credential(&self, user: &str, mechanism: Mechanism) -> Option<Credential> {
        if user != BROKER_USER {
            return None;
        }
        self.credentials
            .get_or_init(|| {
                Mechanism::ALL
                    .into_iter()
                    .map(|m| {
                        let salt: [u8; 16] = rand::rng().random();
                        Credential::from_password(m, &self.secret, &salt, ITERATIONS)
                    })
                    .collect()
            })
            .iter()
            .find(|c| c.mechanism == mechanism)
            .cloned()
    }

    /// The bearer token for the controller's HTTP API: an HMAC of a fixed label, so the
    /// token on the wire is not the SCRAM password.
    pub fn controller_token(&self) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(b"strand controller api v1");
        hex(&mac.finalize().into_bytes())
    }

    /// A short public name for this value (the first 8 bytes of a SHA-256 of the token, hex),
    /// so the operator can tell which value a broker started with without storing it.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(self.controller_token().as_bytes())[..8])
    }

    /// Whether `header` (an Authorization header's value) carries the controller token;
    /// compared in constant time.
    pub fn authorizes(&self, header: Option<&str>) -> bool {
        use subtle::ConstantTimeEq;
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        bool::from(token.as_bytes().ct_eq(self.controller_token().as_bytes()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh SCRAM nonce: 24 random alphanumerics.
pub fn nonce() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn secrets_are_checked_and_trimmed() {
        assert!(matches!(
            ClusterSecret::from_bytes(b"short"),
            Err(SecretError::TooShort(5))
        ));
        assert!(matches!(
            ClusterSecret::from_bytes(b"0123456789abcdef 0123456789abcdef"),
            Err(SecretError::NotPrintable)
        ));
        let a = ClusterSecret::from_bytes(format!("{SECRET}\n").as_bytes()).unwrap();
        let b = ClusterSecret::from_bytes(SECRET.as_bytes()).unwrap();
        assert_eq!(a.password(), SECRET.as_bytes());
        // Same token from both ends, whatever the salts.
        assert_eq!(a.controller_token(), b.controller_token());
        assert_ne!(a.controller_token().as_bytes(), SECRET.as_bytes());
        assert_eq!(ClusterSecret::generate().len(), 64);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
        let other = ClusterSecret::from_bytes(&[b'x'; 40]).unwrap();
        assert_ne!(a.fingerprint(), other.fingerprint());
    }

    #[test]
    fn only_the_controller_token_authorizes() {
        let s = ClusterSecret::from_bytes(SECRET.as_bytes()).unwrap();
        let good = format!("Bearer {}", s.controller_token());
        assert!(s.authorizes(Some(&good)));
        let other = ClusterSecret::from_bytes(&[b'x'; 40]).unwrap();
        for bad in [
            None,
            Some(""),
            Some(s.controller_token().as_str()),
            Some(&format!("Bearer {SECRET}")),
            Some(&format!("Bearer {}", other.controller_token())),
            Some(&good[..good.len() - 1]),
        ] {
            assert!(!s.authorizes(bad), "{bad:?}");
        }
    }

    #[test]
    fn only_the_broker_user_has_credentials() {
        let s = ClusterSecret::from_bytes(SECRET.as_bytes()).unwrap();
        for m in Mechanism::ALL {
            assert_eq!(s.credential(BROKER_USER, m).unwrap().mechanism, m);
            assert!(s.credential("alice", m).is_none());
        }
    }
}
