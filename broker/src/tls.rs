//! TLS on Kafka listeners (Kafka's `SSL` security protocol), with rustls (TLS 1.2 and 1.3).
//!
//! Configured with Kafka's names: `listener.security.protocol.map` says which listeners speak
//! TLS; `ssl.keystore.type=PEM` with `ssl.keystore.location` (private key and certificate
//! chain in one PEM file) or `ssl.keystore.key` and `ssl.keystore.certificate.chain` (the PEM
//! text itself); `ssl.truststore.type=PEM` with `ssl.truststore.location` or
//! `ssl.truststore.certificates`, the CAs that client certificates must chain to; and
//! `ssl.client.auth=none|requested|required`. Key and certificates given as files are read
//! again every few seconds and a change (once two reads in a row agree) is taken up by new
//! connections without a restart
//! (open connections keep the session they have); a change that does not load (a key that
//! does not match its certificate, a half-written file) is refused with a warning and the
//! previous material stays in use.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// A listener's security protocol (Kafka's `listener.security.protocol.map` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    /// SASL authentication (`auth::sasl`) on plain TCP.
    SaslPlaintext,
    /// SASL authentication inside TLS.
    SaslSsl,
}

impl SecurityProtocol {
    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// Kafka's `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// Asked for; a client without one is still served, one with a bad one is refused.
    Requested,
    /// A client without a certificate chaining to the truststore is refused.
    Required,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("listener.security.protocol.map expects NAME:PROTOCOL[,NAME:PROTOCOL...], got {0:?}")]
    MapSyntax(String),
    #[error("listener.security.protocol.map names listener {0:?} twice")]
    MapDuplicate(String),
    #[error(
        "security protocol {0:?} is unknown: PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL are served"
    )]
    Protocol(String),
    #[error("ssl.client.auth expects none, requested or required, got {0:?}")]
    ClientAuth(String),
    #[error("{0} {1:?} is not served: only PEM is")]
    StoreType(&'static str, String),
    #[error(
        "a listener speaks SSL but no key is configured: give ssl.keystore.location (key and chain in one PEM file), or ssl.keystore.key and ssl.keystore.certificate.chain"
    )]
    NoKeystore,
    #[error(
        "give either ssl.keystore.location or ssl.keystore.key with ssl.keystore.certificate.chain, not both"
    )]
    KeystoreTwice,
    #[error("ssl.keystore.key and ssl.keystore.certificate.chain go together")]
    KeystoreHalf,
    #[error(
        "ssl.client.auth={0} needs a truststore: ssl.truststore.location or ssl.truststore.certificates"
    )]
    NoTruststore(&'static str),
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{what}: {reason}")]
    Pem { what: String, reason: String },
    #[error("the TLS configuration does not load: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the truststore does not load: {0}")]
    Verifier(String),
}

impl std::str::FromStr for SecurityProtocol {
    type Err = TlsConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(Self::Plaintext),
            "SSL" => Ok(Self::Ssl),
            "SASL_PLAINTEXT" => Ok(Self::SaslPlaintext),
            "SASL_SSL" => Ok(Self::SaslSsl),
            _ => Err(TlsConfigError::Protocol(s.trim().to_string())),
        }
    }
}

impl std::str::FromStr for ClientAuth {
    type Err = TlsConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "requested" => Ok(Self::Requested),
            "required" => Ok(Self::Required),
            _ => Err(TlsConfigError::ClientAuth(s.trim().to_string())),
        }
    }
}

/// Parses `listener.security.protocol.map` (`INTERNAL:PLAINTEXT,EXTERNAL:SSL`). Listener names
/// are lowercased: ours are lowercase (they name Kubernetes ports), Kafka's are usually
/// written in capitals.
pub fn parse_protocol_map(
    value: &str,
) -> Result<BTreeMap<String, SecurityProtocol>, TlsConfigError> {
    let mut map = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, protocol) = entry
            .split_once(':')
            .filter(|(n, p)| !n.trim().is_empty() && !p.trim().is_empty())
            .ok_or_else(|| TlsConfigError::MapSyntax(value.to_string()))?;
        let name = name.trim().to_ascii_lowercase();
        if map.insert(name.clone(), protocol.parse()?).is_some() {
            return Err(TlsConfigError::MapDuplicate(name));
        }
    }
    Ok(map)
}

/// Kafka's `ssl.*` broker settings, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SslSettings {
    pub keystore_type: Option<String>,
    pub keystore_location: Option<PathBuf>,
    pub keystore_key: Option<String>,
    pub keystore_certificate_chain: Option<String>,
    pub truststore_type: Option<String>,
    pub truststore_location: Option<PathBuf>,
    pub truststore_certificates: Option<String>,
    pub client_auth: ClientAuth,
}

/// The bytes a server config is built from: what is compared to notice a change on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Material {
    key: Vec<u8>,
    chain: Vec<u8>,
    trust: Option<Vec<u8>>,
}

impl SslSettings {
    /// Checks the settings' shape (not the files): fails at start with Kafka's names.
    pub fn validate(&self) -> Result<(), TlsConfigError> {
        for (name, t) in [
            ("ssl.keystore.type", &self.keystore_type),
            ("ssl.truststore.type", &self.truststore_type),
        ] {
            if let Some(t) = t.as_deref().filter(|t| !t.eq_ignore_ascii_case("PEM")) {
                return Err(TlsConfigError::StoreType(name, t.to_string()));
            }
        }
        match (
            &self.keystore_location,
            &self.keystore_key,
            &self.keystore_certificate_chain,
        ) {
            (None, None, None) => return Err(TlsConfigError::NoKeystore),
            (Some(_), None, None) | (None, Some(_), Some(_)) => {}
            (Some(_), _, _) => return Err(TlsConfigError::KeystoreTwice),
            _ => return Err(TlsConfigError::KeystoreHalf),
        }
        let trust = self.truststore_location.is_some() || self.truststore_certificates.is_some();
        match self.client_auth {
            ClientAuth::Required if !trust => Err(TlsConfigError::NoTruststore("required")),
            ClientAuth::Requested if !trust => Err(TlsConfigError::NoTruststore("requested")),
            _ => Ok(()),
        }
    }

    fn read(&self) -> Result<Material, TlsConfigError> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| TlsConfigError::Read(p.clone(), e));
        let (key, chain) = match &self.keystore_location {
            Some(path) => {
                let both = read(path)?;
                (both.clone(), both)
            }
            None => (
                self.keystore_key.clone().unwrap_or_default().into_bytes(),
                self.keystore_certificate_chain
                    .clone()
                    .unwrap_or_default()
                    .into_bytes(),
            ),
        };
        let trust = match (&self.truststore_location, &self.truststore_certificates) {
            (Some(path), _) => Some(read(path)?),
            (None, Some(pem)) => Some(pem.clone().into_bytes()),
            (None, None) => None,
        };
        Ok(Material { key, chain, trust })
    }

    fn build(&self, m: &Material) -> Result<Arc<ServerConfig>, TlsConfigError> {
        let pem = |what: &str, reason: String| TlsConfigError::Pem {
            what: what.to_string(),
            reason,
        };
        if String::from_utf8_lossy(&m.key).contains("ENCRYPTED PRIVATE KEY") {
            return Err(pem(
                "ssl.keystore",
                "the private key is encrypted; give it unencrypted (ssl.key.password is not served)"
                    .into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&m.key).map_err(|e| {
            pem(
                "ssl.keystore",
                format!("no private key (PKCS#8, PKCS#1 or SEC1 PEM) found: {e}"),
            )
        })?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&m.chain)
            .collect::<Result<_, _>>()
            .map_err(|e| pem("ssl.keystore certificate chain", e.to_string()))?;
        if chain.is_empty() {
            return Err(pem(
                "ssl.keystore",
                "no certificate found; the PEM must hold the broker's certificate chain".into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let builder = match (&m.trust, self.client_auth) {
            (Some(trust), auth @ (ClientAuth::Requested | ClientAuth::Required)) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(trust) {
                    let cert = cert.map_err(|e| pem("ssl.truststore", e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| pem("ssl.truststore", e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(pem("ssl.truststore", "no certificate found".into()));
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if auth == ClientAuth::Requested {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| TlsConfigError::Verifier(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(builder.with_single_cert(chain, key)?))
    }
}

/// The TLS server side shared by every SSL listener: the current config, replaced when the
/// files change.
pub struct Tls {
    settings: SslSettings,
    current: RwLock<(Material, Arc<ServerConfig>)>,
    /// Changed material seen at the last check: taken up only when the next check reads the
    /// same bytes, so a file caught mid-write (a chain missing its intermediates, which still
    /// loads) is never served.
    pending: std::sync::Mutex<Option<Material>>,
}

impl Tls {
    /// Loads the key, chain and truststore; any problem fails the broker's start.
    pub fn load(settings: SslSettings) -> Result<Arc<Self>, TlsConfigError> {
        settings.validate()?;
        let material = settings.read()?;
        let config = settings.build(&material)?;
        Ok(Arc::new(Self {
            settings,
            current: RwLock::new((material, config)),
            pending: std::sync::Mutex::new(None),
        }))
    }

    /// An acceptor with the current config (taken per connection, so a reload applies to the
    /// next handshake).
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        TlsAcceptor::from(Arc::clone(&current.1))
    }

    /// Reads the files again; true if they changed, read the same at the check before, and
    /// the new material is in use. A change that does not load is an error and leaves the
    /// old material in place.
    pub fn reload(&self) -> Result<bool, TlsConfigError> {
        let material = self.settings.read()?;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if self.current.read().unwrap_or_else(|p| p.into_inner()).0 == material {
            *pending = None;
            return Ok(false);
        }
        if pending.as_ref() != Some(&material) {
            *pending = Some(material);
            return Ok(false);
        }
        let config = self.settings.build(&material)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (material, config);
        Ok(true)
    }

    /// Checks the files every `every` until the broker stops (the task ends with the runtime).
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let tls = Arc::downgrade(self);
        tokio::spawn(async move {
            // Once per distinct failure, not at every check.
            let mut last_error: Option<String> = None;
            loop {
                tokio::time::sleep(every).await;
                let Some(tls) = tls.upgrade() else { return };
                let result = crate::blocking::off_runtime(|| tls.reload());
                match result {
                    Ok(true) => {
                        last_error = None;
                        info!("TLS key or certificates changed on disk; new connections use them");
                    }
                    Ok(false) => last_error = None,
                    Err(e) => {
                        let e = e.to_string();
                        if last_error.as_deref() != Some(&e) {
                            warn!(error = %e, "TLS key or certificates changed but do not load; the previous ones stay in use");
                            last_error = Some(e);
                        }
                    }
                }
            }
        });
    }
}

/// Kafka's principal name for a client certificate under the default
/// `ssl.principal.mapping.rules`: the subject's distinguished name as Java's
/// `X500Principal.getName()` writes it (RFC 2253: most specific RDN first, `,` between RDNs,
/// `+` within one): `CN=alice,OU=payments,O=Example`. As in Java, the nine keywords (CN, C,
/// L, ST, STREET, O, OU, DC, UID) with string values are written as text, with `,=+<>#;"\`
/// escaped, NUL as `\00` and leading and trailing spaces escaped; every other attribute as its
/// dotted OID and `#` with the hex of its DER encoding. `None` when the certificate does not
/// parse or its subject is empty: the connection is refused then, so that a verified client
/// never silently becomes ANONYMOUS. A DN always holds `=`, so it can never equal the
/// brokers' SASL user name, which replica fetches check.
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::nom::Parser;
    use x509_parser::prelude::X509CertificateParser;
    // The subject only: an extension this parser reads differently from webpki (which
    // verified the chain) must not cost the client its name.
    let mut parser = X509CertificateParser::new().with_deep_parse_extensions(false);
    let (_, cert) = parser.parse(cert.as_ref()).ok()?;
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter() {
        let mut parts = Vec::new();
        for attr in rdn.iter() {
            let oid = attr.attr_type().to_id_string();
            let keyword = match oid.as_str() {
                "2.5.4.3" => Some("CN"),
                "2.5.4.6" => Some("C"),
                "2.5.4.7" => Some("L"),
                "2.5.4.8" => Some("ST"),
                "2.5.4.9" => Some("STREET"),
                "2.5.4.10" => Some("O"),
                "2.5.4.11" => Some("OU"),
                "0.9.2342.19200300.100.1.25" => Some("DC"),
                "0.9.2342.19200300.100.1.1" => Some("UID"),
                _ => None,
            };
            let value = attr.attr_value();
            // Java's DER strings: UTF8, Printable, Teletex, IA5, General and BMP (whose bytes
            // Java, too, reads as UTF-8).
            let text = matches!(value.tag().0, 12 | 19 | 20 | 22 | 27 | 30);
            parts.push(match keyword {
                Some(k) if text => {
                    format!(
                        "{k}={}",
                        rfc2253_escape(&String::from_utf8_lossy(value.data))
                    )
                }
                _ => format!(
                    "{}=#{}",
                    keyword.unwrap_or(&oid),
                    der_hex(value.tag().0, value.data)
                ),
            });
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    let name = rdns.join(",");
    (!name.is_empty()).then_some(name)
}

/// Lowercase hex of a universal primitive DER value: tag, length, contents.
fn der_hex(tag: u32, data: &[u8]) -> String {
    let mut der = vec![tag as u8];
    let len = data.len();
    if len < 0x80 {
        der.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        der.push(0x80 | bytes.len() as u8);
        der.extend(bytes);
    }
    der.extend_from_slice(data);
    der.iter().map(|b| format!("{b:02x}")).collect()
}

/// Java's RFC 2253 escaping (`AVA.toRFC2253String`): `,=+<>#;"\` anywhere, NUL as `\00`, and
/// every leading and trailing space or carriage return.
fn rfc2253_escape(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let lead = chars.iter().take_while(|c| matches!(c, ' ' | '\r')).count();
    let trail = chars.len()
        - chars
            .iter()
            .rev()
            .take_while(|c| matches!(c, ' ' | '\r'))
            .count()
            .min(chars.len() - lead);
    let mut out = String::with_capacity(value.len());
    for (i, c) in chars.iter().enumerate() {
        if *c == '\0' {
            out.push_str("\\00");
            continue;
        }
        if ",=+<>#;\"\\".contains(*c) || i < lead || i >= trail {
            out.push('\\');
        }
        out.push(*c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_certificate_names_its_subject_as_kafka_does() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        // Encoded in push order, most general first, as CAs issue them.
        params.distinguished_name = rcgen::DistinguishedName::new();
        let dn = &mut params.distinguished_name;
        dn.push(rcgen::DnType::CountryName, "DE");
        dn.push(rcgen::DnType::OrganizationName, "Example, Inc.");
        dn.push(rcgen::DnType::OrganizationalUnitName, "payments");
        dn.push(rcgen::DnType::CommonName, "alice");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            principal_of(cert.der()).as_deref(),
            Some("CN=alice,OU=payments,O=Example\\, Inc.,C=DE")
        );
        let empty = rcgen::CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let none = params.self_signed(&key).unwrap();
        assert_eq!(principal_of(none.der()), None);
        // rcgen's default subject: a CN only.
        assert!(principal_of(empty.der()).is_some_and(|p| p.starts_with("CN=")));
        assert_eq!(principal_of(&CertificateDer::from(vec![1, 2, 3])), None);
    }

    #[test]
    fn rfc2253_escapes_as_java_does() {
        assert_eq!(rfc2253_escape("alice"), "alice");
        assert_eq!(rfc2253_escape("Smith, John"), "Smith\\, John");
        assert_eq!(rfc2253_escape("#1 "), "\\#1\\ ");
        assert_eq!(rfc2253_escape("a=b#c"), "a\\=b\\#c");
        assert_eq!(rfc2253_escape("  x  "), "\\ \\ x\\ \\ ");
        assert_eq!(rfc2253_escape("   "), "\\ \\ \\ ");
        assert_eq!(rfc2253_escape("n\0l"), "n\\00l");
        assert_eq!(rfc2253_escape("a+b;c<d>\"e\\"), "a\\+b\\;c\\<d\\>\\\"e\\\\");
    }

    #[test]
    fn other_attributes_are_written_as_hex_der_as_java_does() {
        assert_eq!(der_hex(22, b"a@x"), "1603614078");
        let long = vec![b'a'; 200];
        assert!(der_hex(12, &long).starts_with("0c81c8"));
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
            "a@x",
        );
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "a=b");
        let cert = params.self_signed(&key).unwrap();
        let p = principal_of(cert.der()).unwrap();
        assert!(
            p.starts_with("CN=a\\=b,1.2.840.113549.1.9.1=#0c03614078"),
            "{p}"
        );
    }

    #[test]
    fn the_protocol_map_takes_kafkas_spelling() {
        let m = parse_protocol_map("INTERNAL:PLAINTEXT, EXTERNAL:SSL").unwrap();
        assert_eq!(m["internal"], SecurityProtocol::Plaintext);
        assert_eq!(m["external"], SecurityProtocol::Ssl);
        assert!(parse_protocol_map("").unwrap().is_empty());
        for bad in ["external", "external:", ":SSL", "a:SSL,a:PLAINTEXT"] {
            assert!(parse_protocol_map(bad).is_err(), "{bad}");
        }
        let m = parse_protocol_map("a:SASL_SSL,b:sasl_plaintext").unwrap();
        assert!(m["a"].tls() && m["a"].sasl());
        assert!(!m["b"].tls() && m["b"].sasl());
        let e = parse_protocol_map("external:SASL_GSSAPI").unwrap_err();
        assert!(e.to_string().contains("SASL_GSSAPI"), "{e}");
    }

    #[test]
    fn settings_are_checked_with_kafkas_names() {
        let file = SslSettings {
            keystore_location: Some("k.pem".into()),
            ..SslSettings::default()
        };
        assert!(file.validate().is_ok());
        let cases = [
            (SslSettings::default(), "ssl.keystore.location"),
            (
                SslSettings {
                    keystore_key: Some("k".into()),
                    ..SslSettings::default()
                },
                "go together",
            ),
            (
                SslSettings {
                    keystore_key: Some("k".into()),
                    keystore_certificate_chain: Some("c".into()),
                    ..file.clone()
                },
                "not both",
            ),
            (
                SslSettings {
                    keystore_type: Some("JKS".into()),
                    ..file.clone()
                },
                "ssl.keystore.type",
            ),
            (
                SslSettings {
                    client_auth: ClientAuth::Required,
                    ..file.clone()
                },
                "truststore",
            ),
        ];
        for (s, says) in cases {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(says), "{s:?}: {e}");
        }
        assert!("Required".parse::<ClientAuth>().unwrap() == ClientAuth::Required);
        assert!("sometimes".parse::<ClientAuth>().is_err());
    }
}
