//! Client users' SCRAM credentials, as Kafka's AlterUserScramCredentials and
//! DescribeUserScramCredentials (`kafka-configs --entity-type users`) change and show them.
//! What is kept per user and mechanism is what RFC 5802 asks a server to keep (salt,
//! iteration count, StoredKey, ServerKey): never the password, nor even the salted password
//! the client sends. Standalone they are this broker's, in its data directory; in a cluster
//! they are the controller's, and every broker authenticates with what its metadata carries.
//!
//! The rules here are pure, so the broker (to answer `validate_only` and per-user errors)
//! and the controller (to commit) apply the same ones.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::BROKER_USER;
use super::scram::{Credential, MAX_ITERATIONS, MIN_ITERATIONS, Mechanism};

/// One user's credential for one mechanism, as stored and carried in cluster metadata.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCredential {
    pub user: String,
    #[serde(with = "mechanism_name")]
    pub mechanism: Mechanism,
    pub iterations: u32,
    #[serde(with = "base64_bytes")]
    pub salt: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub stored_key: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for UserCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCredential")
            .field("user", &self.user)
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl UserCredential {
    pub fn new(user: impl Into<String>, c: Credential) -> Self {
        Self {
            user: user.into(),
            mechanism: c.mechanism,
            iterations: c.iterations,
            salt: c.salt,
            stored_key: c.stored_key,
            server_key: c.server_key,
        }
    }

    /// A new credential for `password`, with a fresh random salt and Kafka's minimum
    /// iteration count (what `kafka-configs --add-config 'SCRAM-SHA-512=[password=...]'`
    /// makes).
    pub fn for_password(user: impl Into<String>, mechanism: Mechanism, password: &str) -> Self {
        use rand::Rng;
        let salt: [u8; 16] = rand::rng().random();
        let c = Credential::from_password(mechanism, password.as_bytes(), &salt, MIN_ITERATIONS);
        Self::new(user, c)
    }

    /// Whether `password` logs in with this credential (its StoredKey and ServerKey are the
    /// ones `password` gives with this salt and iteration count).
    pub fn accepts(&self, password: &str) -> bool {
        let c = Credential::from_password(
            self.mechanism,
            password.as_bytes(),
            &self.salt,
            self.iterations,
        );
        c.stored_key == self.stored_key && c.server_key == self.server_key
    }

    pub fn credential(&self) -> Credential {
        Credential {
            mechanism: self.mechanism,
            salt: self.salt.clone(),
            iterations: self.iterations,
            stored_key: self.stored_key.clone(),
            server_key: self.server_key.clone(),
        }
    }

    fn key(&self) -> (&str, i8) {
        (&self.user, self.mechanism.wire_type())
    }
}

/// One change to the stored credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Alteration {
    Upsert(UserCredential),
    Delete {
        user: String,
        #[serde(with = "mechanism_name")]
        mechanism: Mechanism,
    },
}

impl Alteration {
    pub fn user(&self) -> &str {
        match self {
            Alteration::Upsert(c) => &c.user,
            Alteration::Delete { user, .. } => user,
        }
    }
}

/// Why a user's alterations, or a description, are refused: Kafka's error for each (see
/// `api::scram_credentials`) and its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// UNACCEPTABLE_CREDENTIAL.
    #[error("{0}")]
    Unacceptable(String),
    /// UNSUPPORTED_SASL_MECHANISM.
    #[error("Unknown SCRAM mechanism")]
    UnknownMechanism,
    /// RESOURCE_NOT_FOUND.
    #[error("Attempt to delete a user credential that does not exist")]
    NoSuchCredential,
    /// RESOURCE_NOT_FOUND.
    #[error("Attempt to describe nonexistent user")]
    NoSuchUser,
    /// DUPLICATE_RESOURCE.
    #[error("A user credential cannot be altered twice in the same request")]
    AlteredTwice,
    /// DUPLICATE_RESOURCE.
    #[error("Cannot describe SCRAM credentials for the same user twice in a single request")]
    DescribedTwice,
}

fn check_user(user: &str) -> Result<(), Refused> {
    if user.is_empty() {
        return Err(Refused::Unacceptable("Username must not be empty".into()));
    }
    if user == BROKER_USER {
        return Err(Refused::Unacceptable(format!(
            "user {BROKER_USER} is reserved for the cluster's brokers (its credential is derived from the cluster secret)"
        )));
    }
    Ok(())
}

/// Applies one alteration to `creds` (kept in (user, mechanism) order); answers whether
/// anything changed.
pub fn apply(creds: &mut Vec<UserCredential>, a: &Alteration) -> Result<bool, Refused> {
    check_user(a.user())?;
    match a {
        Alteration::Upsert(c) => {
            check_iterations(i64::from(c.iterations))?;
            match creds.binary_search_by(|x| x.key().cmp(&c.key())) {
                Ok(i) if creds[i] == *c => Ok(false),
                Ok(i) => {
                    creds[i] = c.clone();
                    Ok(true)
                }
                Err(i) => {
                    creds.insert(i, c.clone());
                    Ok(true)
                }
            }
        }
        Alteration::Delete { user, mechanism } => {
            match creds.binary_search_by(|x| x.key().cmp(&(user.as_str(), mechanism.wire_type()))) {
                Ok(i) => {
                    creds.remove(i);
                    Ok(true)
                }
                Err(_) => Err(Refused::NoSuchCredential),
            }
        }
    }
}

/// Whether `creds` already show `a` (a committed alteration has reached this broker).
pub fn shows(creds: &[UserCredential], a: &Alteration) -> bool {
    match a {
        Alteration::Upsert(c) => creds.contains(c),
        Alteration::Delete { user, mechanism } => !creds
            .iter()
            .any(|c| c.user == *user && c.mechanism == *mechanism),
    }
}

fn check_iterations(i: i64) -> Result<(), Refused> {
    if i < i64::from(MIN_ITERATIONS) {
        return Err(Refused::Unacceptable(format!(
            "Iterations {i} is less than the minimum of {MIN_ITERATIONS}"
        )));
    }
    if i > i64::from(MAX_ITERATIONS) {
        return Err(Refused::Unacceptable(format!(
            "Iterations {i} is more than the maximum of {MAX_ITERATIONS}"
        )));
    }
    Ok(())
}

/// One entry of an AlterUserScramCredentials request, as the wire has it.
#[derive(Clone)]
pub struct Requested<'a> {
    pub user: &'a str,
    pub mechanism: i8,
    /// None: a deletion. Some: iterations, salt and SaltedPassword.
    pub upsert: Option<(i32, &'a [u8], &'a [u8])>,
}

impl std::fmt::Debug for Requested<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The salted password logs in (it gives ClientKey): never printed.
        f.debug_struct("Requested")
            .field("user", &self.user)
            .field("mechanism", &self.mechanism)
            .field("upsert", &self.upsert.is_some())
            .finish()
    }
}

/// A request's entries grouped by user (in the order users first appear) and checked against
/// `known`: each user's alterations, or the one error that refuses all of them (Kafka applies
/// a user's changes all or none).
pub fn plan(
    requested: &[Requested<'_>],
    known: &[UserCredential],
) -> Vec<(String, Result<Vec<Alteration>, Refused>)> {
    // Grouped in one pass (a request may list very many users: no per-user rescans).
    let mut order: Vec<&str> = Vec::new();
    let mut by_user: HashMap<&str, Vec<&Requested>> = HashMap::new();
    for r in requested {
        by_user
            .entry(r.user)
            .or_insert_with(|| {
                order.push(r.user);
                Vec::new()
            })
            .push(r);
    }
    // Users are independent, so one simulated copy serves them all: a refused user's partial
    // changes there touch only its own entries.
    let mut simulated = known.to_vec();
    order
        .into_iter()
        .map(|user| {
            let mine = by_user.remove(user).unwrap_or_default();
            (user.to_string(), plan_user(&mine, &mut simulated))
        })
        .collect()
}

fn plan_user(
    mine: &[&Requested<'_>],
    simulated: &mut Vec<UserCredential>,
) -> Result<Vec<Alteration>, Refused> {
    let mut mechanisms = BTreeSet::new();
    if !mine.iter().all(|r| mechanisms.insert(r.mechanism)) {
        return Err(Refused::AlteredTwice);
    }
    let mut out = Vec::with_capacity(mine.len());
    for r in mine {
        check_user(r.user)?;
        let mechanism = Mechanism::from_wire_type(r.mechanism).ok_or(Refused::UnknownMechanism)?;
        let alteration = match r.upsert {
            None => Alteration::Delete {
                user: r.user.to_string(),
                mechanism,
            },
            Some((iterations, salt, salted)) => {
                check_iterations(i64::from(iterations))?;
                if salt.is_empty() {
                    return Err(Refused::Unacceptable("Salt must not be empty".into()));
                }
                if salted.len() != mechanism.hash_len() {
                    return Err(Refused::Unacceptable(format!(
                        "a {} salted password is {} bytes, got {}",
                        mechanism.name(),
                        mechanism.hash_len(),
                        salted.len()
                    )));
                }
                let iterations = u32::try_from(iterations).unwrap_or(MIN_ITERATIONS);
                Alteration::Upsert(UserCredential::new(
                    r.user,
                    Credential::from_salted_password(mechanism, salted, salt, iterations),
                ))
            }
        };
        apply(simulated, &alteration)?;
        out.push(alteration);
    }
    Ok(out)
}

/// A described user's mechanisms and iteration counts, or why not.
pub type Described = Result<Vec<(Mechanism, u32)>, Refused>;

/// What DescribeUserScramCredentials answers: for every user with a credential (`asked`
/// None or empty), or for each user asked, its mechanisms and iteration counts.
pub fn describe(known: &[UserCredential], asked: Option<&[&str]>) -> Vec<(String, Described)> {
    // `known` is in (user, mechanism) order: a user's entries are found by binary search.
    let of = |user: &str| -> Vec<(Mechanism, u32)> {
        let start = known.partition_point(|c| c.user.as_str() < user);
        known[start..]
            .iter()
            .take_while(|c| c.user == user)
            .map(|c| (c.mechanism, c.iterations))
            .collect()
    };
    match asked {
        Some(asked) if !asked.is_empty() => {
            // One result per user, as Kafka; a user asked twice gets DUPLICATE_RESOURCE.
            let mut order: Vec<&str> = Vec::new();
            let mut times: HashMap<&str, usize> = HashMap::new();
            for user in asked {
                *times.entry(user).or_insert_with(|| {
                    order.push(user);
                    0
                }) += 1;
            }
            order
                .into_iter()
                .map(|user| {
                    let result = if times[user] > 1 {
                        Err(Refused::DescribedTwice)
                    } else {
                        Some(of(user))
                            .filter(|c| !c.is_empty())
                            .ok_or(Refused::NoSuchUser)
                    };
                    (user.to_string(), result)
                })
                .collect()
        }
        _ => {
            let users: BTreeSet<&str> = known.iter().map(|c| c.user.as_str()).collect();
            users
                .into_iter()
                .map(|u| (u.to_string(), Ok(of(u))))
                .collect()
        }
    }
}

/// The credentials in force on this broker.
pub type ScramUsers = crate::in_force::InForce<Vec<UserCredential>>;

impl ScramUsers {
    pub fn credential(&self, user: &str, mechanism: Mechanism) -> Option<Credential> {
        self.current()
            .iter()
            .find(|c| c.user == user && c.mechanism == mechanism)
            .map(UserCredential::credential)
    }
}

/// Reads a standalone broker's credentials (none when the file does not exist yet).
pub fn load(path: &Path) -> Result<Vec<UserCredential>, crate::storage::StorageError> {
    let Some(bytes) = crate::storage::checkpoint::read_if_exists(path)? else {
        return Ok(Vec::new());
    };
    let corrupt = |reason: String| crate::storage::StorageError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut creds: Vec<UserCredential> =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let n = creds.len();
    creds.sort_by(|a, b| a.key().cmp(&b.key()));
    creds.dedup_by(|a, b| a.key() == b.key());
    if creds.len() != n {
        return Err(corrupt("a user's credential is listed twice".into()));
    }
    Ok(creds)
}

pub fn save(path: &Path, creds: &[UserCredential]) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(creds).map_err(std::io::Error::other)?;
    crate::storage::checkpoint::write_atomic_private(path, &json)
}

mod mechanism_name {
    use super::Mechanism;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &Mechanism, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mechanism, D::Error> {
        let name = String::deserialize(d)?;
        Mechanism::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown SCRAM mechanism {name:?}")))
    }
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_accepts_its_password_only() {
        let c = UserCredential::for_password("alice", Mechanism::Sha512, "s3cret");
        assert!(c.accepts("s3cret"));
        assert!(!c.accepts("s3cret "));
        let again = UserCredential::for_password("alice", Mechanism::Sha512, "s3cret");
        assert_ne!(c.salt, again.salt, "a fresh salt each time");
        assert!(again.accepts("s3cret"));
        assert_eq!(c.iterations, MIN_ITERATIONS);
    }

    /// SaltedPassword as a client computes it (Hi(password, "salt", 4096)).
    fn salted(m: Mechanism, password: &[u8]) -> Vec<u8> {
        use sha2::{Sha256, Sha512};
        match m {
            Mechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, b"salt", MIN_ITERATIONS).to_vec()
            }
            Mechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, b"salt", MIN_ITERATIONS).to_vec()
            }
        }
    }

    fn upsert<'a>(user: &'a str, m: i8, salted: &'a [u8]) -> Requested<'a> {
        Requested {
            user,
            mechanism: m,
            upsert: Some((MIN_ITERATIONS as i32, b"salt", salted)),
        }
    }

    fn delete(user: &str, m: i8) -> Requested<'_> {
        Requested {
            user,
            mechanism: m,
            upsert: None,
        }
    }

    fn committed(requested: &[Requested<'_>], known: &[UserCredential]) -> Vec<UserCredential> {
        let mut creds = known.to_vec();
        for (_, r) in plan(requested, known) {
            for a in r.unwrap() {
                apply(&mut creds, &a).unwrap();
            }
        }
        creds
    }

    /// What a client's salted password becomes is what the password would make: a user
    /// created through the API logs in with the password.
    #[test]
    fn an_upserted_salted_password_stores_the_passwords_keys() {
        for m in Mechanism::ALL {
            let s = salted(m, b"alice-secret");
            let creds = committed(&[upsert("alice", m.wire_type(), &s)], &[]);
            assert_eq!(
                creds[0].credential(),
                Credential::from_password(m, b"alice-secret", b"salt", MIN_ITERATIONS)
            );
        }
    }

    #[test]
    fn each_users_changes_are_refused_or_applied_together() {
        let s256 = salted(Mechanism::Sha256, b"pw");
        let s512 = salted(Mechanism::Sha512, b"pw");
        let plans = plan(
            &[
                upsert("alice", 2, &s512),
                upsert("bob", 1, &s256),
                delete("alice", 1), // alice has no SHA-256 credential
                upsert("carol", 2, &s512),
                upsert("carol", 2, &s512),
                upsert("dave", 3, &s512),
                upsert("erin", 1, &s512), // a SHA-512-sized salted password for SHA-256
                upsert("", 2, &s512),
                upsert(BROKER_USER, 2, &s512),
            ],
            &[],
        );
        let errors: Vec<(&str, Option<Refused>)> = plans
            .iter()
            .map(|(u, r)| (u.as_str(), r.as_ref().err().cloned()))
            .collect();
        assert_eq!(errors[0], ("alice", Some(Refused::NoSuchCredential)));
        assert_eq!(errors[1], ("bob", None));
        assert_eq!(errors[2], ("carol", Some(Refused::AlteredTwice)));
        assert_eq!(errors[3], ("dave", Some(Refused::UnknownMechanism)));
        assert!(matches!(errors[4].1, Some(Refused::Unacceptable(_))));
        assert!(matches!(errors[5], ("", Some(Refused::Unacceptable(_)))));
        assert!(
            matches!(errors[6].1, Some(Refused::Unacceptable(ref m)) if m.contains("reserved"))
        );
    }

    #[test]
    fn iterations_salt_and_deletions_are_checked() {
        let s = salted(Mechanism::Sha512, b"pw");
        for (iterations, salt) in [
            (4095, &b"salt"[..]),
            (16385, b"salt"),
            (-1, b"salt"),
            (4096, b""),
        ] {
            let r = Requested {
                user: "alice",
                mechanism: 2,
                upsert: Some((iterations, salt, &s)),
            };
            assert!(
                matches!(plan(&[r], &[])[0].1, Err(Refused::Unacceptable(_))),
                "{iterations}"
            );
        }
        let known = committed(&[upsert("alice", 2, &s)], &[]);
        assert_eq!(known.len(), 1);
        // Changing and deleting it; deleting twice is refused.
        let after = committed(&[delete("alice", 2)], &known);
        assert!(after.is_empty());
        assert_eq!(
            plan(&[delete("alice", 2)], &after)[0].1,
            Err(Refused::NoSuchCredential)
        );
        // The same credential again changes nothing.
        let mut again = known.clone();
        assert!(!apply(&mut again, &Alteration::Upsert(known[0].clone())).unwrap());
    }

    #[test]
    fn descriptions_list_mechanisms_never_keys() {
        let s256 = salted(Mechanism::Sha256, b"pw");
        let s512 = salted(Mechanism::Sha512, b"pw");
        let known = committed(
            &[
                upsert("bob", 2, &s512),
                upsert("alice", 1, &s256),
                upsert("alice", 2, &s512),
            ],
            &[],
        );
        let all = describe(&known, None);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].0, "alice");
        assert_eq!(
            all[0].1,
            Ok(vec![(Mechanism::Sha256, 4096), (Mechanism::Sha512, 4096)])
        );
        assert_eq!(describe(&known, Some(&[])), all);
        let some = describe(&known, Some(&["bob", "zed", "bob2", "bob2"]));
        assert_eq!(some[0].1, Ok(vec![(Mechanism::Sha512, 4096)]));
        assert_eq!(some[1].1, Err(Refused::NoSuchUser));
        assert_eq!(some[2].1, Err(Refused::DescribedTwice));
        assert_eq!(some.len(), 3, "one result per user: {some:?}");
        // Stored as JSON without anything a client could log in with.
        let json = serde_json::to_string(&known).unwrap();
        assert!(json.contains("SCRAM-SHA-512") && !json.contains("pw"));
        let back: Vec<UserCredential> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, known);
    }

    #[test]
    fn a_saved_file_loads_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scram-credentials.json");
        assert!(load(&path).unwrap().is_empty());
        let s = salted(Mechanism::Sha512, b"pw");
        let known = committed(&[upsert("alice", 2, &s)], &[]);
        save(&path, &known).unwrap();
        assert_eq!(load(&path).unwrap(), known);
        let twice = [known.clone(), known].concat();
        save(&path, &twice).unwrap();
        assert!(load(&path).is_err());
        std::fs::write(&path, b"{").unwrap();
        assert!(load(&path).is_err());
    }
}
