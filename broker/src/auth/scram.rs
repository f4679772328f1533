//! SCRAM (RFC 5802, with SHA-256 and SHA-512 as RFC 7677 and Kafka's KIP-84 use them): the
//! client and server halves of one exchange, pure. No I/O and no randomness: nonces come
//! from the caller, so the RFC's test vector can be replayed.
//!
//! A server keeps a [`Credential`] (salt, iteration count, StoredKey, ServerKey), never the
//! password. Channel binding is not offered (Kafka does not either): a client must send the
//! `n` or `y` GS2 flag.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Kafka's bounds on the iteration count (ScramMechanism's minimum; its maximum for stored
/// credentials). A client refuses a server that asks for more, so a hostile peer cannot
/// make it burn CPU.
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The SASL mechanism name, as Kafka's `sasl.enabled.mechanisms` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's ScramMechanism type on the wire (AlterUserScramCredentials and
    /// DescribeUserScramCredentials): 1 and 2; 0 is UNKNOWN.
    pub fn wire_type(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_wire_type(t: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.wire_type() == t)
    }

    /// The length of this mechanism's hash, and so of a SaltedPassword.
    pub fn hash_len(self) -> usize {
        match self {
            Mechanism::Sha256 => 32,
            Mechanism::Sha512 => 64,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length, so `new_from_slice` cannot fail.
        match self {
            Mechanism::Sha256 => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            Mechanism::Sha512 => {
                let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Hi() of RFC 5802: PBKDF2 with this HMAC, one block (what a client sends in Kafka's
    /// AlterUserScramCredentials).
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec()
            }
            Mechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, salt, iterations).to_vec()
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("an authorization id different from the user name is not supported")]
    AuthorizationId,
    #[error("unknown user or invalid credentials")]
    InvalidCredentials,
    #[error("the nonce does not continue the exchange's")]
    Nonce,
    #[error("iteration count {0} is outside {MIN_ITERATIONS}-{MAX_ITERATIONS}")]
    Iterations(u32),
    #[error("the server's signature is wrong: it does not know the credential")]
    ServerSignature,
    #[error("the server refused: {0}")]
    ServerError(String),
    #[error("message out of order")]
    OutOfOrder,
}

/// What a server stores for one user and mechanism.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub mechanism: Mechanism,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Credential {
    pub fn from_password(
        mechanism: Mechanism,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Self {
        let salted = mechanism.salted_password(password, salt, iterations);
        Self::from_salted_password(mechanism, &salted, salt, iterations)
    }

    /// From SaltedPassword (Hi(password, salt, i)), what Kafka's AlterUserScramCredentials
    /// carries: the client salts, so the password itself never reaches the broker.
    pub fn from_salted_password(
        mechanism: Mechanism,
        salted: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Self {
        let client_key = mechanism.hmac(salted, b"Client Key");
        Self {
            mechanism,
            salt: salt.to_vec(),
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted, b"Server Key"),
        }
    }
}

/// Splits `a=1,b=2` into attributes, in order. Values may contain `=` (base64).
fn attributes(msg: &str) -> Result<Vec<(char, &str)>, ScramError> {
    msg.split(',')
        .map(|part| {
            let mut chars = part.chars();
            match (chars.next(), chars.next()) {
                (Some(k), Some('=')) if k.is_ascii_alphabetic() => Ok((k, &part[2..])),
                _ => Err(ScramError::Malformed("attribute is not k=value")),
            }
        })
        .collect()
}

fn utf8(msg: &[u8]) -> Result<&str, ScramError> {
    std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))
}

/// RFC 5802's saslname: `,` and `=` are written `=2C` and `=3D`.
fn decode_name(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3);
        match code {
            Some("2C") => out.push(','),
            Some("3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    Ok(out)
}

fn encode_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// A nonce must be printable ASCII without `,`.
fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// The server half of one exchange: client-first, then client-final.
#[derive(Debug)]
pub struct ServerExchange {
    mechanism: Mechanism,
    state: ServerState,
}

#[derive(Debug)]
enum ServerState {
    AwaitingClientFirst,
    AwaitingClientFinal {
        user: String,
        gs2_header: String,
        auth_prefix: String,
        nonce: String,
        credential: Credential,
    },
    Finished,
}

impl ServerExchange {
    pub fn new(mechanism: Mechanism) -> Self {
        Self {
            mechanism,
            state: ServerState::AwaitingClientFirst,
        }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Reads client-first and answers server-first. `lookup` gives the user's credential for
    /// this mechanism; `server_nonce` is fresh randomness (printable, no `,`).
    pub fn client_first(
        &mut self,
        msg: &[u8],
        server_nonce: &str,
        lookup: impl FnOnce(&str) -> Option<Credential>,
    ) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ServerState::AwaitingClientFirst) {
            return Err(ScramError::OutOfOrder);
        }
        self.state = ServerState::Finished;
        let msg = utf8(msg)?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = msg
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        let gs2_header = format!("{flag},{authzid},");
        let attrs = attributes(bare)?;
        let (user, client_nonce) = match attrs.as_slice() {
            // Single-letter extensions may follow and are ignored. Kafka's `tokenauth=true`
            // (delegation tokens, not supported) is not k=value with one letter: refused.
            [('n', user), ('r', nonce), ..] => (decode_name(user)?, *nonce),
            [('m', _), ..] => return Err(ScramError::Malformed("mandatory extension")),
            _ => return Err(ScramError::Malformed("client-first needs n= and r=")),
        };
        if !authzid.is_empty() {
            let authzid = authzid
                .strip_prefix("a=")
                .ok_or(ScramError::Malformed("bad authorization id"))?;
            if decode_name(authzid)? != user {
                return Err(ScramError::AuthorizationId);
            }
        }
        if !valid_nonce(client_nonce) || !valid_nonce(server_nonce) {
            return Err(ScramError::Malformed("bad nonce"));
        }
        let credential = lookup(&user)
            .filter(|c| c.mechanism == self.mechanism)
            .ok_or(ScramError::InvalidCredentials)?;
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        self.state = ServerState::AwaitingClientFinal {
            user,
            gs2_header,
            auth_prefix: format!("{bare},{server_first}"),
            nonce,
            credential,
        };
        Ok(server_first.into_bytes())
    }

    /// Reads client-final; on a valid proof answers server-final and the authenticated user.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<(Vec<u8>, String), ScramError> {
        let ServerState::AwaitingClientFinal {
            user,
            gs2_header,
            auth_prefix,
            nonce,
            credential,
        } = std::mem::replace(&mut self.state, ServerState::Finished)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let msg = utf8(msg)?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("client-final has no proof"))?;
        let attrs = attributes(without_proof)?;
        let [('c', binding), ('r', got_nonce), ..] = attrs.as_slice() else {
            return Err(ScramError::Malformed("client-final needs c= and r="));
        };
        if B64.decode(binding).ok().as_deref() != Some(gs2_header.as_bytes()) {
            return Err(ScramError::ChannelBinding);
        }
        if *got_nonce != nonce {
            return Err(ScramError::Nonce);
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let m = self.mechanism;
        let auth_message = format!("{auth_prefix},{without_proof}");
        let client_signature = m.hmac(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(ScramError::InvalidCredentials);
        }
        let client_key = xor(&proof, &client_signature);
        if !bool::from(m.hash(&client_key).ct_eq(&credential.stored_key)) {
            return Err(ScramError::InvalidCredentials);
        }
        let server_signature = m.hmac(&credential.server_key, auth_message.as_bytes());
        Ok((
            format!("v={}", B64.encode(server_signature)).into_bytes(),
            user,
        ))
    }
}

/// The client half of one exchange.
pub struct ClientExchange {
    mechanism: Mechanism,
    password: Vec<u8>,
    client_first_bare: String,
    client_nonce: String,
    server_signature: Option<Vec<u8>>,
}

impl ClientExchange {
    pub fn new(mechanism: Mechanism, user: &str, password: &[u8], client_nonce: &str) -> Self {
        Self {
            mechanism,
            password: password.to_vec(),
            client_first_bare: format!("n={},r={client_nonce}", encode_name(user)),
            client_nonce: client_nonce.to_string(),
            server_signature: None,
        }
    }

    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Reads server-first and answers client-final with the proof.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let server_first = utf8(server_first)?;
        let attrs = attributes(server_first)?;
        let [('r', nonce), ('s', salt), ('i', iterations), ..] = attrs.as_slice() else {
            return Err(ScramError::Malformed("server-first needs r=, s= and i="));
        };
        if !nonce.starts_with(&self.client_nonce)
            || nonce.len() == self.client_nonce.len()
            || !valid_nonce(nonce)
        {
            return Err(ScramError::Nonce);
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| ScramError::Malformed("iteration count"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let m = self.mechanism;
        let salted = m.salted_password(&self.password, &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        // "biws" is base64("n,,").
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = m.hmac(&stored_key, auth_message.as_bytes());
        let proof = xor(&client_key, &client_signature);
        let server_key = m.hmac(&salted, b"Server Key");
        self.server_signature = Some(m.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks server-final: the server proved it holds the credential too.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let expected = self
            .server_signature
            .as_ref()
            .ok_or(ScramError::OutOfOrder)?;
        let msg = utf8(server_final)?;
        if let Some(e) = msg.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.to_string()));
        }
        let got = msg
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v.split(',').next().unwrap_or_default()).ok())
            .ok_or(ScramError::Malformed("server-final needs v="))?;
        if bool::from(got.ct_eq(expected)) {
            Ok(())
        } else {
            Err(ScramError::ServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 section 3.
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

    fn rfc_credential() -> Credential {
        let salt = B64.decode(SALT).unwrap();
        Credential::from_password(Mechanism::Sha256, b"pencil", &salt, 4096)
    }

    #[test]
    fn rfc_7677_exchange_from_both_sides() {
        let mut client = ClientExchange::new(Mechanism::Sha256, "user", b"pencil", CLIENT_NONCE);
        let first = client.client_first();
        assert_eq!(first, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let mut server = ServerExchange::new(Mechanism::Sha256);
        let server_first = server
            .client_first(&first, SERVER_NONCE, |u| (u == "user").then(rfc_credential))
            .unwrap();
        assert_eq!(
            String::from_utf8(server_first.clone()).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let client_final = client.client_final(&server_first).unwrap();
        assert_eq!(
            String::from_utf8(client_final.clone()).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let (server_final, user) = server.client_final(&client_final).unwrap();
        assert_eq!(user, "user");
        assert_eq!(
            String::from_utf8(server_final.clone()).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        client.verify_server_final(&server_final).unwrap();
    }

    fn exchange(mech: Mechanism, stored: &[u8], tried: &[u8]) -> Result<String, ScramError> {
        let credential = Credential::from_password(mech, stored, b"salt-salt", 4096);
        let mut client = ClientExchange::new(mech, "a,b=c", tried, "clientnonce");
        let mut server = ServerExchange::new(mech);
        let first = server.client_first(&client.client_first(), "servernonce", |u| {
            (u == "a,b=c").then(|| credential.clone())
        })?;
        let fin = client.client_final(&first)?;
        let (last, user) = server.client_final(&fin)?;
        client.verify_server_final(&last)?;
        Ok(user)
    }

    #[test]
    fn both_mechanisms_accept_the_password_and_refuse_another() {
        for m in Mechanism::ALL {
            assert_eq!(exchange(m, b"secret", b"secret").unwrap(), "a,b=c");
            assert_eq!(
                exchange(m, b"secret", b"secreT"),
                Err(ScramError::InvalidCredentials)
            );
        }
    }

    #[test]
    fn a_server_without_the_credential_is_caught_by_the_client() {
        let mut client = ClientExchange::new(Mechanism::Sha512, "u", b"right", "cn");
        let impostor = Credential::from_password(Mechanism::Sha512, b"wrong", b"s", 4096);
        let mut server = ServerExchange::new(Mechanism::Sha512);
        let first = server
            .client_first(&client.client_first(), "sn", |_| Some(impostor))
            .unwrap();
        let fin = client.client_final(&first).unwrap();
        // The impostor cannot verify the proof, so it cannot sign either; a forged v= fails.
        assert_eq!(
            server.client_final(&fin).unwrap_err(),
            ScramError::InvalidCredentials
        );
        let forged = format!("v={}", B64.encode([7u8; 64]));
        assert_eq!(
            client.verify_server_final(forged.as_bytes()),
            Err(ScramError::ServerSignature)
        );
    }

    #[test]
    fn bad_messages_are_refused_not_panicked_on() {
        let cred = rfc_credential();
        let firsts: &[&[u8]] = &[
            b"",
            b"n",
            b"n,,",
            b"x,,n=user,r=abc",
            b"p=tls-unique,,n=user,r=abc",
            b"n,,r=abc,n=user",
            b"n,a=other,n=user,r=abc",
            b"n,,n=us=3xer,r=abc",
            b"n,,n=user,r=a,b",
            b"n,,n=,r=abc",
            b"n,,m=ext,n=user,r=abc",
            b"n,,n=nobody,r=abc",
            b"\xff\xfe",
        ];
        for msg in firsts {
            let mut server = ServerExchange::new(Mechanism::Sha256);
            assert!(
                server
                    .client_first(msg, "sn", |u| (u == "user").then(|| cred.clone()))
                    .is_err(),
                "{msg:?} was accepted"
            );
            assert_eq!(
                server.client_final(b"c=biws,r=x,p=AA=="),
                Err(ScramError::OutOfOrder)
            );
        }
        let finals: &[&[u8]] = &[
            b"",
            b"c=biws,r=abcsn",
            b"c=biws,r=wrong,p=AAAA",
            b"c=eSws,r=abcsn,p=AAAA",
            b"c=biws,r=abcsn,p=!!",
            b"c=biws,r=abcsn,p=AAAA",
        ];
        for msg in finals {
            let mut server = ServerExchange::new(Mechanism::Sha256);
            server
                .client_first(b"n,,n=user,r=abc", "sn", |_| Some(cred.clone()))
                .unwrap();
            assert!(server.client_final(msg).is_err(), "{msg:?} was accepted");
            // One try per exchange.
            assert_eq!(server.client_final(msg), Err(ScramError::OutOfOrder));
        }
    }

    #[test]
    fn a_client_refuses_odd_server_firsts() {
        for (msg, want) in [
            ("r=other,s=c2FsdA==,i=4096", ScramError::Nonce),
            ("r=cn,s=c2FsdA==,i=4096", ScramError::Nonce),
            ("r=cnX,s=c2FsdA==,i=1", ScramError::Iterations(1)),
            (
                "r=cnX,s=c2FsdA==,i=4000000000",
                ScramError::Iterations(4_000_000_000),
            ),
            (
                "r=cnX,s=!,i=4096",
                ScramError::Malformed("salt is not base64"),
            ),
        ] {
            let mut client = ClientExchange::new(Mechanism::Sha256, "u", b"p", "cn");
            assert_eq!(client.client_final(msg.as_bytes()), Err(want), "{msg}");
        }
        let client = ClientExchange::new(Mechanism::Sha256, "u", b"p", "cn");
        assert_eq!(
            client.verify_server_final(b"v=AA"),
            Err(ScramError::OutOfOrder)
        );
    }
}
