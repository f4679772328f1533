//! One connection's SASL state (SaslHandshake v1, then SaslAuthenticate rounds), pure: the
//! connection feeds it requests and writes what it answers. Kafka's rules: a handshake
//! first, one mechanism per connection, a failed exchange ends the connection.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use super::scram::{Credential, Mechanism, ScramError, ServerExchange};
use super::users::ScramUsers;
use super::{BROKER_USER, ClusterSecret};

#[derive(Debug)]
enum State {
    /// Nothing asked yet.
    Start,
    /// Handshake done; the next SaslAuthenticate carries client-first.
    Handshaken(Mechanism),
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
    /// The mechanisms offered (none: this listener has no SASL at all).
    mechanisms: Vec<Mechanism>,
    state: State,
    principal: Option<Arc<str>>,
}

impl SaslSession {
    /// A PLAINTEXT or SSL listener: only the broker user may authenticate, and only when
    /// there is a cluster secret; otherwise every handshake is refused.
    pub fn brokers_only(secret: Option<Arc<ClusterSecret>>) -> Self {
        let mechanisms = match secret {
            Some(_) => Mechanism::ALL.to_vec(),
            None => Vec::new(),
        };
        Self {
            secret,
            users: None,
            mechanisms,
            state: State::Start,
            principal: None,
        }
    }

    /// A SASL_PLAINTEXT or SASL_SSL listener: client users (and the broker user), with the
    /// mechanisms of `sasl.enabled.mechanisms`.
    pub fn for_clients(
        secret: Option<Arc<ClusterSecret>>,
        users: Arc<ScramUsers>,
        mechanisms: Vec<Mechanism>,
    ) -> Self {
        Self {
            secret,
            users: Some(users),
            mechanisms,
            state: State::Start,
            principal: None,
        }
    }

    /// Whether this is a SASL listener, where nothing but ApiVersions and the exchange is
    /// served before it succeeds.
    pub fn requires_authentication(&self) -> bool {
        self.users.is_some()
    }

    /// Whether an exchange has succeeded on this connection.
    pub fn authenticated(&self) -> bool {
        matches!(self.state, State::Authenticated)
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
        self.mechanisms.iter().map(|m| m.name()).collect()
    }

    /// SaslHandshake: the error to answer, if any (the answer always lists the mechanisms).
    pub fn handshake(&mut self, mechanism: &str) -> Option<ResponseError> {
        if self.mechanisms.is_empty() {
            // Kafka's answer on a listener without SASL.
            return Some(ResponseError::IllegalSaslState);
        }
        if !matches!(self.state, State::Start) {
            self.state = State::Failed;
            return Some(ResponseError::IllegalSaslState);
        }
        match Mechanism::from_name(mechanism).filter(|m| self.mechanisms.contains(m)) {
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

    /// SaslAuthenticate: one round of the exchange. `nonce` is asked for only when a
    /// server nonce is needed.
    pub fn authenticate(&mut self, bytes: &[u8], nonce: impl FnOnce() -> String) -> Answer {
        let state = std::mem::replace(&mut self.state, State::Failed);
        match state {
            State::Handshaken(m) => {
                let mut exchange = ServerExchange::new(m);
                match exchange.client_first(bytes, &nonce(), |user| self.credential(user, m)) {
                    Ok(server_first) => {
                        self.state = State::Exchanging(exchange);
                        Answer::ok(server_first)
                    }
                    Err(e) => failed(m, &e),
                }
            }
            State::Exchanging(mut exchange) => match exchange.client_final(bytes) {
                Ok((server_final, user)) => {
                    self.principal = Some(Arc::from(user));
                    self.state = State::Authenticated;
                    Answer::ok(server_final)
                }
                Err(e) => failed(exchange.mechanism(), &e),
            },
            State::Authenticated => {
                // Refused, but the session (and its principal) stays.
                self.state = State::Authenticated;
                Answer::refused(
                    ResponseError::IllegalSaslState,
                    "already authenticated; re-authentication (KIP-368) is not supported".into(),
                )
            }
            _ => Answer::refused(
                ResponseError::IllegalSaslState,
                "SaslAuthenticate before a successful SaslHandshake".into(),
            ),
        }
    }
}

fn failed(m: Mechanism, e: &ScramError) -> Answer {
    // Kafka's wording, so clients and people recognise it; the detail goes to the debug log
    // only, so a probing client learns nothing about which users exist.
    tracing::debug!(error = %e, mechanism = m.name(), "SASL authentication failed");
    Answer::refused(
        ResponseError::SaslAuthenticationFailed,
        format!(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
            m.name()
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
        assert_eq!(s.handshake(m.name()), None);
        let mut client = ClientExchange::new(m, user, password, "cnonce");
        let first = s.authenticate(&client.client_first(), || "snonce".into());
        if first.error.is_some() {
            return first;
        }
        let fin = client.client_final(&first.bytes).unwrap();
        let last = s.authenticate(&fin, || unreachable!());
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
                s.authenticate(b"n,,n=x,r=y", String::new).error,
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
        let a = s.authenticate(b"n,,n=strand-broker,r=x", || "y".into());
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
        let users = Arc::new(ScramUsers::default());
        users.set(vec![UserCredential::new(
            "alice",
            Credential::from_password(Mechanism::Sha512, b"alice-secret", b"salt", 4096),
        )]);
        SaslSession::for_clients(
            Some(Arc::new(ClusterSecret::from_bytes(SECRET).unwrap())),
            users,
            enabled,
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
}
