//! One connection's SASL state (SaslHandshake v1, then SaslAuthenticate rounds), pure: the
//! connection feeds it requests and writes what it answers. Kafka's rules: a handshake
//! first, a failed exchange ends the connection. With `connections.max.reauth.ms` (KIP-368)
//! a session lasts that long: the client logs in again on the same connection, as the same
//! principal, or the connection is closed at its next request (so a deleted user's
//! connections end).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use super::plain::{self, PlainUsers};
use super::scram::{Credential, Mechanism, ServerExchange};
use super::users::ScramUsers;
use super::{BROKER_USER, ClusterSecret};

/// A SASL mechanism a listener may offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Scram(Mechanism),
    /// RFC 4616, with the listener's static users.
    Plain,
}

impl SaslMechanism {
    pub const ALL: [SaslMechanism; 3] = [
        SaslMechanism::Scram(Mechanism::Sha256),
        SaslMechanism::Scram(Mechanism::Sha512),
        SaslMechanism::Plain,
    ];

    /// The name in `sasl.enabled.mechanisms` and SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Scram(m) => m.name(),
            SaslMechanism::Plain => "PLAIN",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// What a SASL_PLAINTEXT or SASL_SSL listener offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerSasl {
    pub mechanisms: Vec<SaslMechanism>,
    /// PLAIN's users (`listener.name.<listener>.plain.sasl.jaas.config`).
    pub plain_users: PlainUsers,
    /// How long a login lasts before the client must log in again (Kafka's
    /// `connections.max.reauth.ms`, KIP-368); 0: for the connection's life.
    pub reauth_ms: u64,
}

#[derive(Debug)]
enum State {
    /// Nothing asked yet.
    Start,
    /// Handshake done; the next SaslAuthenticate carries client-first (SCRAM) or the
    /// credentials (PLAIN).
    Handshaken(SaslMechanism),
    /// Server-first sent; the next carries client-final.
    Exchanging(ServerExchange),
    Authenticated,
    /// A refused exchange: the connection closes once the answer is out.
    Failed,
}

/// An answer for the client: its error (None = success), a message and SASL bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub error: Option<ResponseError>,
    pub message: Option<String>,
    pub bytes: Vec<u8>,
}

impl Answer {
    fn ok(bytes: Vec<u8>) -> Self {
        Self {
            error: None,
            message: None,
            bytes,
        }
    }

    fn refused(error: ResponseError, message: String) -> Self {
        Self {
            error: Some(error),
            message: Some(message),
            bytes: Vec::new(),
        }
    }
}

pub struct SaslSession {
    secret: Option<Arc<ClusterSecret>>,
    /// Client users: on SASL listeners only.
    users: Option<Arc<ScramUsers>>,
    /// The mechanisms offered (none: this listener has no SASL at all), and PLAIN's users.
    listener: Arc<ListenerSasl>,
    state: State,
    principal: Option<Arc<str>>,
    /// When the login stops being good (with re-authentication on).
    expires_at_ms: Option<u64>,
}

impl SaslSession {
    /// A PLAINTEXT or SSL listener: only the broker user may authenticate, and only when
    /// there is a cluster secret; otherwise every handshake is refused.
    pub fn brokers_only(secret: Option<Arc<ClusterSecret>>) -> Self {
        let mechanisms = match secret {
            Some(_) => Mechanism::ALL.map(SaslMechanism::Scram).to_vec(),
            None => Vec::new(),
        };
        Self {
            secret,
            users: None,
            listener: Arc::new(ListenerSasl {
                mechanisms,
                plain_users: PlainUsers::default(),
                reauth_ms: 0,
            }),
            state: State::Start,
            principal: None,
            expires_at_ms: None,
        }
    }

    /// A SASL_PLAINTEXT or SASL_SSL listener: client users (and, with SCRAM, the broker
    /// user), with the listener's mechanisms.
    pub fn for_clients(
        secret: Option<Arc<ClusterSecret>>,
        users: Arc<ScramUsers>,
        listener: Arc<ListenerSasl>,
    ) -> Self {
        Self {
            secret,
            users: Some(users),
            listener,
            state: State::Start,
            principal: None,
            expires_at_ms: None,
        }
    }

    /// Whether this is a SASL listener, where nothing but ApiVersions and the exchange is
    /// served before it succeeds.
    pub fn requires_authentication(&self) -> bool {
        self.users.is_some()
    }

    /// Whether an exchange has succeeded on this connection (and none has failed since; a
    /// re-authentication in progress keeps the first).
    pub fn authenticated(&self) -> bool {
        self.principal.is_some() && !matches!(self.state, State::Failed)
    }

    /// Whether the exchange in progress has just completed (its answer carries the
    /// session's lifetime).
    pub fn logged_in(&self) -> bool {
        matches!(self.state, State::Authenticated)
    }

    /// Whether the login has run out (KIP-368): only a new login is served, anything else
    /// closes the connection.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| now_ms >= at)
    }

    /// What SaslAuthenticate answers as `session_lifetime_ms`: 0 when logins last for the
    /// connection's life.
    pub fn session_lifetime_ms(&self) -> i64 {
        i64::try_from(self.listener.reauth_ms).unwrap_or(i64::MAX)
    }

    /// The authenticated user, if any.
    pub fn principal(&self) -> Option<&Arc<str>> {
        self.principal.as_ref()
    }

    /// The connection must close after its current answer.
    pub fn must_close(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    /// The mechanisms this listener offers.
    pub fn mechanisms(&self) -> Vec<&'static str> {
        self.listener.mechanisms.iter().map(|m| m.name()).collect()
    }

    /// SaslHandshake: the error to answer, if any (the answer always lists the mechanisms).
    pub fn handshake(&mut self, mechanism: &str) -> Option<ResponseError> {
        if self.listener.mechanisms.is_empty() {
            // Kafka's answer on a listener without SASL.
            return Some(ResponseError::IllegalSaslState);
        }
        let reauthenticating =
            matches!(self.state, State::Authenticated) && self.listener.reauth_ms > 0;
        if !matches!(self.state, State::Start) && !reauthenticating {
            self.state = State::Failed;
            return Some(ResponseError::IllegalSaslState);
        }
        match SaslMechanism::from_name(mechanism).filter(|m| self.listener.mechanisms.contains(m)) {
            Some(m) => {
                self.state = State::Handshaken(m);
                None
            }
            None => {
                self.state = State::Failed;
                Some(ResponseError::UnsupportedSaslMechanism)
            }
        }
    }

    /// The stored credential of `user`: the broker user's from the cluster secret, a client
    /// user's from the credentials in force (on SASL listeners).
    fn credential(&self, user: &str, m: Mechanism) -> Option<Credential> {
        if user == BROKER_USER {
            return self.secret.as_ref()?.credential(user, m);
        }
        self.users.as_ref()?.credential(user, m)
    }

    /// A successful exchange as `user`: the session's principal, good for `reauth_ms`. A
    /// re-authentication must keep the principal (Kafka's rule).
    fn succeed(&mut self, user: String, now_ms: u64, bytes: Vec<u8>) -> Answer {
        if self.principal.as_deref().is_some_and(|p| p != user) {
            self.state = State::Failed;
            return Answer::refused(
                ResponseError::SaslAuthenticationFailed,
                "Cannot change principals during re-authentication".into(),
            );
        }
        self.principal = Some(Arc::from(user));
        self.state = State::Authenticated;
        self.expires_at_ms =
            (self.listener.reauth_ms > 0).then(|| now_ms.saturating_add(self.listener.reauth_ms));
        Answer::ok(bytes)
    }

    /// SaslAuthenticate: one round of the exchange. `nonce` is asked for only when a
    /// server nonce is needed.
    pub fn authenticate(
        &mut self,
        bytes: &[u8],
        nonce: impl FnOnce() -> String,
        now_ms: u64,
    ) -> Answer {
        let state = std::mem::replace(&mut self.state, State::Failed);
        match state {
            State::Handshaken(SaslMechanism::Scram(m)) => {
                let mut exchange = ServerExchange::new(m);
                match exchange.client_first(bytes, &nonce(), |user| self.credential(user, m)) {
                    Ok(server_first) => {
                        self.state = State::Exchanging(exchange);
                        Answer::ok(server_first)
                    }
                    Err(e) => failed(m.name(), &e),
                }
            }
            State::Handshaken(SaslMechanism::Plain) => {
                match plain::authenticate(&self.listener.plain_users, bytes) {
                    Ok(user) => self.succeed(user, now_ms, Vec::new()),
                    Err(e) => failed("PLAIN", &e),
                }
            }
            State::Exchanging(mut exchange) => match exchange.client_final(bytes) {
                Ok((server_final, user)) => self.succeed(user, now_ms, server_final),
                Err(e) => failed(exchange.mechanism().name(), &e),
            },
            State::Authenticated => {
                // Refused, but the session (and its principal) stays.
                self.state = State::Authenticated;
                Answer::refused(
                    ResponseError::IllegalSaslState,
                    "already authenticated; a new login (KIP-368) starts with SaslHandshake".into(),
                )
            }
            _ => Answer::refused(
                ResponseError::IllegalSaslState,
                "SaslAuthenticate before a successful SaslHandshake".into(),
            ),
        }
    }
}

fn failed(mechanism: &str, e: &dyn std::fmt::Display) -> Answer {
    // Kafka's wording, so clients and people recognise it; the detail goes to the debug log
    // only, so a probing client learns nothing about which users exist.
    tracing::debug!(error = %e, mechanism, "SASL authentication failed");
    Answer::refused(
        ResponseError::SaslAuthenticationFailed,
        format!(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::super::scram::ClientExchange;
    use super::super::users::UserCredential;
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn session() -> SaslSession {
        SaslSession::brokers_only(Some(Arc::new(ClusterSecret::from_bytes(SECRET).unwrap())))
    }

    fn login(s: &mut SaslSession, m: Mechanism, user: &str, password: &[u8]) -> Answer {
        login_at(s, m, user, password, 0)
    }

    fn login_at(
        s: &mut SaslSession,
        m: Mechanism,
        user: &str,
        password: &[u8],
        now: u64,
    ) -> Answer {
        assert_eq!(s.handshake(m.name()), None);
        let mut client = ClientExchange::new(m, user, password, "cnonce");
        let first = s.authenticate(&client.client_first(), || "snonce".into(), now);
        if first.error.is_some() {
            return first;
        }
        let fin = client.client_final(&first.bytes).unwrap();
        let last = s.authenticate(&fin, || unreachable!(), now);
        if last.error.is_none() {
            client.verify_server_final(&last.bytes).unwrap();
        }
        last
    }

    #[test]
    fn the_broker_user_authenticates_with_either_mechanism() {
        for m in Mechanism::ALL {
            let mut s = session();
            assert_eq!(login(&mut s, m, BROKER_USER, SECRET).error, None);
            assert_eq!(s.principal().map(|p| &**p), Some(BROKER_USER));
            assert!(!s.must_close());
            // A second round is refused without dropping the principal or the connection.
            assert_eq!(
                s.authenticate(b"n,,n=x,r=y", String::new, 0).error,
                Some(ResponseError::IllegalSaslState)
            );
            assert_eq!(s.principal().map(|p| &**p), Some(BROKER_USER));
            assert!(!s.must_close());
        }
    }

    #[test]
    fn wrong_passwords_and_users_fail_and_close() {
        for (user, password) in [
            (BROKER_USER, &b"0123456789abcdef0123456789abcdeX"[..]),
            ("alice", SECRET),
        ] {
            let mut s = session();
            let answer = login(&mut s, Mechanism::Sha512, user, password);
            assert_eq!(answer.error, Some(ResponseError::SaslAuthenticationFailed));
            assert!(answer.message.unwrap().contains("SCRAM-SHA-512"));
            assert!(s.principal().is_none());
            assert!(s.must_close());
        }
    }

    #[test]
    fn out_of_order_and_unknown_mechanisms_are_refused() {
        let mut s = session();
        let a = s.authenticate(b"n,,n=strand-broker,r=x", || "y".into(), 0);
        assert_eq!(a.error, Some(ResponseError::IllegalSaslState));
        assert!(s.must_close());

        let mut s = session();
        assert_eq!(
            s.handshake("PLAIN"),
            Some(ResponseError::UnsupportedSaslMechanism)
        );
        assert!(s.must_close());

        let mut s = session();
        assert_eq!(s.handshake("SCRAM-SHA-256"), None);
        assert_eq!(
            s.handshake("SCRAM-SHA-256"),
            Some(ResponseError::IllegalSaslState)
        );

        let mut s = SaslSession::brokers_only(None);
        assert!(s.mechanisms().is_empty());
        assert_eq!(
            s.handshake("SCRAM-SHA-512"),
            Some(ResponseError::IllegalSaslState)
        );
        assert!(!s.must_close());
        assert!(s.principal().is_none());
    }

    fn with_alice(enabled: Vec<Mechanism>) -> SaslSession {
        with_alice_and(enabled.into_iter().map(SaslMechanism::Scram).collect(), "")
    }

    fn with_alice_and(mechanisms: Vec<SaslMechanism>, jaas: &str) -> SaslSession {
        with_alice_reauth(mechanisms, jaas, 0)
    }

    fn with_alice_reauth(
        mechanisms: Vec<SaslMechanism>,
        jaas: &str,
        reauth_ms: u64,
    ) -> SaslSession {
        let users = Arc::new(ScramUsers::default());
        users.set(vec![UserCredential::new(
            "alice",
            Credential::from_password(Mechanism::Sha512, b"alice-secret", b"salt", 4096),
        )]);
        let plain_users = if jaas.is_empty() {
            PlainUsers::default()
        } else {
            plain::parse_jaas(jaas).unwrap()
        };
        SaslSession::for_clients(
            Some(Arc::new(ClusterSecret::from_bytes(SECRET).unwrap())),
            users,
            Arc::new(ListenerSasl {
                mechanisms,
                plain_users,
                reauth_ms,
            }),
        )
    }

    #[test]
    fn client_users_authenticate_on_sasl_listeners_only() {
        let mut s = with_alice(Mechanism::ALL.to_vec());
        assert!(!s.authenticated());
        assert_eq!(
            login(&mut s, Mechanism::Sha512, "alice", b"alice-secret").error,
            None
        );
        assert!(s.authenticated());
        assert_eq!(s.principal().map(|p| &**p), Some("alice"));
        // Her credential is for SHA-512 only; a wrong password fails.
        let mut s = with_alice(Mechanism::ALL.to_vec());
        let a = login(&mut s, Mechanism::Sha256, "alice", b"alice-secret");
        assert_eq!(a.error, Some(ResponseError::SaslAuthenticationFailed));
        let mut s = with_alice(Mechanism::ALL.to_vec());
        let a = login(&mut s, Mechanism::Sha512, "alice", b"alice-secreT");
        assert_eq!(a.error, Some(ResponseError::SaslAuthenticationFailed));
        assert!(s.must_close() && !s.authenticated());
        // The broker user still authenticates on a client listener.
        let mut s = with_alice(Mechanism::ALL.to_vec());
        assert_eq!(
            login(&mut s, Mechanism::Sha512, BROKER_USER, SECRET).error,
            None
        );
        // A mechanism left out of sasl.enabled.mechanisms is refused by name.
        let mut s = with_alice(vec![Mechanism::Sha256]);
        assert_eq!(s.mechanisms(), vec!["SCRAM-SHA-256"]);
        assert_eq!(
            s.handshake("SCRAM-SHA-512"),
            Some(ResponseError::UnsupportedSaslMechanism)
        );
        // On a listener without SASL, client users do not exist.
        let mut s = session();
        let a = login(&mut s, Mechanism::Sha512, "alice", b"alice-secret");
        assert_eq!(a.error, Some(ResponseError::SaslAuthenticationFailed));
    }

    #[test]
    fn plain_users_log_in_with_one_message() {
        let jaas = r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_dave="dave-secret";"#;
        let both = vec![
            SaslMechanism::Plain,
            SaslMechanism::Scram(Mechanism::Sha512),
        ];
        let mut s = with_alice_and(both.clone(), jaas);
        assert_eq!(s.mechanisms(), vec!["PLAIN", "SCRAM-SHA-512"]);
        assert_eq!(s.handshake("PLAIN"), None);
        let a = s.authenticate(b"\0dave\0dave-secret", || unreachable!(), 0);
        assert_eq!(a.error, None);
        assert!(s.authenticated());
        assert_eq!(s.principal().map(|p| &**p), Some("dave"));
        // A wrong password, a SCRAM user's password over PLAIN, and the broker user over
        // PLAIN are refused, and close the connection.
        for msg in [
            &b"\0dave\0wrong"[..],
            b"\0alice\0alice-secret",
            b"\0strand-broker\x000123456789abcdef0123456789abcdef",
        ] {
            let mut s = with_alice_and(both.clone(), jaas);
            assert_eq!(s.handshake("PLAIN"), None);
            let a = s.authenticate(msg, || unreachable!(), 0);
            assert_eq!(a.error, Some(ResponseError::SaslAuthenticationFailed));
            assert!(a.message.unwrap().contains("PLAIN"));
            assert!(s.must_close() && !s.authenticated());
        }
        // Not offered where it is not enabled.
        let mut s = with_alice(Mechanism::ALL.to_vec());
        assert_eq!(
            s.handshake("PLAIN"),
            Some(ResponseError::UnsupportedSaslMechanism)
        );
    }

    /// KIP-368: a login lasts connections.max.reauth.ms; the client logs in again on the same
    /// connection as the same user, never as another.
    #[test]
    fn logins_expire_and_are_renewed_as_the_same_user() {
        let m = Mechanism::Sha512;
        let jaas = r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_bob="bob-secret";"#;
        let both = vec![SaslMechanism::Scram(m), SaslMechanism::Plain];
        let mut s = with_alice_reauth(both.clone(), jaas, 1000);
        assert_eq!(login_at(&mut s, m, "alice", b"alice-secret", 0).error, None);
        assert_eq!(s.session_lifetime_ms(), 1000);
        assert!(!s.expired(999) && s.expired(1000));
        // Renewed while serving: the principal stays through the exchange.
        assert_eq!(
            login_at(&mut s, m, "alice", b"alice-secret", 1500).error,
            None
        );
        assert!(s.authenticated() && !s.expired(2499) && s.expired(2500));
        // A renewal as someone else fails and closes the connection.
        assert_eq!(s.handshake("PLAIN"), None);
        let a = s.authenticate(b"\0bob\0bob-secret", || unreachable!(), 1600);
        assert_eq!(a.error, Some(ResponseError::SaslAuthenticationFailed));
        assert!(s.must_close() && !s.authenticated());
        // Without re-authentication a second handshake is refused, and logins never expire.
        let mut s = with_alice(vec![m]);
        assert_eq!(login(&mut s, m, "alice", b"alice-secret").error, None);
        assert_eq!(s.session_lifetime_ms(), 0);
        assert!(!s.expired(u64::MAX));
        assert_eq!(s.handshake(m.name()), Some(ResponseError::IllegalSaslState));
    }
}
