//! One connection's SASL state (SaslHandshake v1, then SaslAuthenticate rounds), pure: the
//! connection feeds it requests and writes what it answers. Kafka's rules: a handshake
//! first, one mechanism per connection, a failed exchange ends the connection.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use super::ClusterSecret;
use super::scram::{Mechanism, ScramError, ServerExchange};

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
    state: State,
    principal: Option<Arc<str>>,
}

impl SaslSession {
    /// `secret` None: this broker has no SASL users, and every handshake is refused.
    pub fn new(secret: Option<Arc<ClusterSecret>>) -> Self {
        Self {
            secret,
            state: State::Start,
            principal: None,
        }
    }

    /// The authenticated user, if any.
    pub fn principal(&self) -> Option<&Arc<str>> {
        self.principal.as_ref()
    }

    /// The connection must close after its current answer.
    pub fn must_close(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    /// The mechanisms this broker offers.
    pub fn mechanisms(&self) -> Vec<&'static str> {
        match self.secret {
            Some(_) => Mechanism::ALL.iter().map(|m| m.name()).collect(),
            None => Vec::new(),
        }
    }

    /// SaslHandshake: the error to answer, if any (the answer always lists the mechanisms).
    pub fn handshake(&mut self, mechanism: &str) -> Option<ResponseError> {
        if self.secret.is_none() {
            // Kafka's answer on a listener without SASL.
            return Some(ResponseError::IllegalSaslState);
        }
        if !matches!(self.state, State::Start) {
            self.state = State::Failed;
            return Some(ResponseError::IllegalSaslState);
        }
        match Mechanism::from_name(mechanism) {
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

    /// SaslAuthenticate: one round of the exchange. `nonce` is asked for only when a
    /// server nonce is needed.
    pub fn authenticate(&mut self, bytes: &[u8], nonce: impl FnOnce() -> String) -> Answer {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let secret = self.secret.clone();
        match (state, secret) {
            (State::Handshaken(m), Some(secret)) => {
                let mut exchange = ServerExchange::new(m);
                match exchange.client_first(bytes, &nonce(), |user| secret.credential(user, m)) {
                    Ok(server_first) => {
                        self.state = State::Exchanging(exchange);
                        Answer::ok(server_first)
                    }
                    Err(e) => failed(m, &e),
                }
            }
            (State::Exchanging(mut exchange), Some(_)) => match exchange.client_final(bytes) {
                Ok((server_final, user)) => {
                    self.principal = Some(Arc::from(user));
                    self.state = State::Authenticated;
                    Answer::ok(server_final)
                }
                Err(e) => failed(exchange.mechanism(), &e),
            },
            (State::Authenticated, _) => {
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
    use super::super::{BROKER_USER, ClusterSecret};
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn session() -> SaslSession {
        SaslSession::new(Some(Arc::new(ClusterSecret::from_bytes(SECRET).unwrap())))
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

        let mut s = SaslSession::new(None);
        assert!(s.mechanisms().is_empty());
        assert_eq!(
            s.handshake("SCRAM-SHA-512"),
            Some(ResponseError::IllegalSaslState)
        );
        assert!(!s.must_close());
        assert!(s.principal().is_none());
    }
}
