//! The cluster CA and the brokers' certificates of a LogCluster with a `tls: true` listener,
//! pure: making the CA, issuing each broker a certificate for every name a client may reach
//! it by, and deciding when to issue again (a name added, a broker added, expiry near).
//!
//! Three Secrets, owned by the LogCluster, named as Strimzi names its own where they mean the
//! same thing:
//! - `<cluster>-cluster-ca`: the CA's key and certificate (`ca.key`, `ca.crt`), the
//!   operator's alone;
//! - `<cluster>-cluster-ca-cert`: the CA certificate (`ca.crt`), for clients' truststores
//!   (`ssl.truststore.type=PEM`);
//! - `<cluster>-broker-certs`: `<pod>.pem` per broker, its key, certificate and the CA (what
//!   the broker's `ssl.keystore.location` reads, and reloads when the Secret changes).
//!
//! The CA lives 5 years and is not renewed yet; a broker certificate lives 1 year (never past
//! its CA) and is issued again 30 days before it ends, so a broker takes the new one from disk
//! without a restart. Signing uses the CA certificate's own subject and key identifier, so a
//! user's CA (made with OpenSSL, say) signs certificates that chain to it.

use std::collections::BTreeMap;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

pub const CA_VALIDITY: Duration = Duration::days(5 * 365);
pub const BROKER_VALIDITY: Duration = Duration::days(365);
pub const RENEW_BEFORE: Duration = Duration::days(30);
/// Keys of the CA Secrets.
pub const CA_KEY: &str = "ca.key";
pub const CA_CERT: &str = "ca.crt";
/// Annotations on the brokers' Secret: what its certificates were issued for, and when the
/// first of them ends (RFC 3339).
pub const ISSUED_FOR_ANNOTATION: &str = "strand.dev/issued-for";
pub const NOT_AFTER_ANNOTATION: &str = "strand.dev/not-after";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the CA Secret holds no {0}")]
    Missing(&'static str),
}

/// The CA's key and certificate, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Ca {
    pub key_pem: String,
    pub cert_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// The CA's subject: the same for making it and for signing with it (the issuer name of every
/// certificate it signs).
fn ca_params(cluster: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "strand.dev");
    dn.push(DnType::CommonName, format!("cluster-ca {cluster}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// A new CA for `cluster` (`<namespace>/<name>`), valid from `now` for [`CA_VALIDITY`].
pub fn new_ca(cluster: &str, now: OffsetDateTime) -> Result<Ca, TlsError> {
    let key = KeyPair::generate()?;
    let mut p = ca_params(cluster);
    p.not_before = now - Duration::hours(1);
    p.not_after = now + CA_VALIDITY;
    let cert = p.self_signed(&key)?;
    Ok(Ca {
        key_pem: key.serialize_pem(),
        cert_pem: cert.pem(),
    })
}

/// Why `ca` cannot sign (for a condition message), or when it ends: its certificate must be a
/// CA allowed to sign certificates, valid now, and its key (PKCS#8 PEM, what `ring` reads)
/// must be the certificate's.
pub fn check_ca(ca: &Ca, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    use x509_parser::prelude::*;
    let (_, pem) = parse_x509_pem(ca.cert_pem.as_bytes())
        .map_err(|e| format!("{CA_CERT} is not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("{CA_CERT} is not an X.509 certificate: {e}"))?;
    if !cert.is_ca() {
        return Err(format!(
            "{CA_CERT} is not a CA certificate (basicConstraints CA:TRUE)"
        ));
    }
    if let Ok(Some(usage)) = cert.key_usage()
        && !usage.value.key_cert_sign()
    {
        return Err(format!(
            "{CA_CERT} may not sign certificates (keyUsage lacks keyCertSign)"
        ));
    }
    let ends = OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
        .map_err(|e| format!("{CA_CERT}: {e}"))?;
    let starts = OffsetDateTime::from_unix_timestamp(cert.validity().not_before.timestamp())
        .map_err(|e| format!("{CA_CERT}: {e}"))?;
    if now < starts || now >= ends {
        return Err(format!(
            "{CA_CERT} is valid from {starts} to {ends}, not now"
        ));
    }
    let key = KeyPair::from_pem(&ca.key_pem).map_err(|e| {
        format!("{CA_KEY} is not a PKCS#8 PEM key (BEGIN PRIVATE KEY; convert one with `openssl pkcs8 -topk8 -nocrypt`): {e}")
    })?;
    if key.der_bytes() != cert.public_key().subject_public_key.data.as_ref() {
        return Err(format!("{CA_KEY} is not the key of {CA_CERT}"));
    }
    Ok(ends)
}

/// A broker's keystore: its new key, its certificate for `names` (DNS names and IP
/// addresses) signed by `ca`, valid until `ends`, and the CA certificate, in one PEM file.
pub fn issue(
    ca: &Ca,
    broker: &str,
    names: &[String],
    now: OffsetDateTime,
    ends: OffsetDateTime,
) -> Result<String, TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let mut p = CertificateParams::new(names.to_vec())?;
    p.distinguished_name
        .push(DnType::OrganizationName, "strand.dev");
    p.distinguished_name.push(DnType::CommonName, broker);
    p.not_before = now - Duration::hours(1);
    p.not_after = ends;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok(format!(
        "{}{}{}",
        key.serialize_pem(),
        cert.pem(),
        ca.cert_pem
    ))
}

/// What a set of broker certificates is issued for: the CA and each broker's names, hashed,
/// so a change to any of them (a broker added, a name changed, a new CA) is seen.
pub fn issued_for(ca: &Ca, names: &BTreeMap<String, Vec<String>>) -> String {
    let mut h = Sha256::new();
    h.update(ca.cert_pem.as_bytes());
    for (broker, names) in names {
        h.update(broker.as_bytes());
        for n in names {
            h.update([0]);
            h.update(n.as_bytes());
        }
        h.update([1]);
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// When certificates issued at `now` end: [`BROKER_VALIDITY`] later, but never after their CA
/// (`ca_ends`).
pub fn ends(now: OffsetDateTime, ca_ends: OffsetDateTime) -> OffsetDateTime {
    (now + BROKER_VALIDITY).min(ca_ends)
}

/// Whether the brokers' certificates must be issued again: never issued, issued for
/// something else, or ending within [`RENEW_BEFORE`] when new ones would end later (an
/// unreadable date counts as ending; a CA near its own end does not re-issue at every check).
pub fn must_issue(
    annotations: Option<&BTreeMap<String, String>>,
    wanted: &str,
    now: OffsetDateTime,
    new_end: OffsetDateTime,
) -> bool {
    let Some(a) = annotations else { return true };
    if a.get(ISSUED_FOR_ANNOTATION).map(String::as_str) != Some(wanted) {
        return true;
    }
    let end = a.get(NOT_AFTER_ANNOTATION).and_then(|t| {
        OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    });
    end.is_none_or(|end| end - now < RENEW_BEFORE && new_end > end)
}

/// The RFC 3339 form of `end`, for [`NOT_AFTER_ANNOTATION`].
pub fn rfc3339(end: OffsetDateTime) -> String {
    end.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Every name broker `pod` is reached by: its per-pod DNS names and the client Service's
/// (short and with `cluster.local`), and `extra` (advertised hosts, node addresses of NodePort
/// listeners), sorted and without duplicates.
pub fn broker_names(
    pod: &str,
    headless: &str,
    client: &str,
    ns: &str,
    extra: &[String],
) -> Vec<String> {
    let mut names = vec![
        format!("{pod}.{headless}.{ns}.svc"),
        format!("{pod}.{headless}.{ns}.svc.cluster.local"),
        format!("{client}.{ns}.svc"),
        format!("{client}.{ns}.svc.cluster.local"),
        client.to_string(),
    ];
    names.extend(extra.iter().cloned());
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn pems(text: &str) -> Vec<Vec<u8>> {
        x509_parser::pem::Pem::iter_from_buffer(text.as_bytes())
            .map(|p| p.unwrap())
            .filter(|p| p.label == "CERTIFICATE")
            .map(|p| p.contents)
            .collect()
    }

    #[test]
    fn a_broker_certificate_names_the_broker_and_chains_to_the_ca() {
        let ca = new_ca("prod/demo", now()).unwrap();
        let names = broker_names(
            "demo-1",
            "demo-brokers",
            "demo",
            "prod",
            &["10.0.0.7".into(), "kafka.example.com".into()],
        );
        let ca_end = check_ca(&ca, now()).unwrap();
        assert_eq!(ca_end, now() + CA_VALIDITY);
        let pem = issue(&ca, "demo-1", &names, now(), ends(now(), ca_end)).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "key first");
        let certs = pems(&pem);
        assert_eq!(certs.len(), 2, "the certificate, then the CA");
        let (_, leaf) = X509Certificate::from_der(&certs[0]).unwrap();
        let (_, ca_cert) = X509Certificate::from_der(&certs[1]).unwrap();
        assert_eq!(leaf.issuer(), ca_cert.subject());
        leaf.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA's key");
        let sans: Vec<String> = leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(ip) => {
                    format!("{}", std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]))
                }
                other => format!("{other:?}"),
            })
            .collect();
        for n in [
            "demo-1.demo-brokers.prod.svc",
            "demo-1.demo-brokers.prod.svc.cluster.local",
            "demo.prod.svc",
            "10.0.0.7",
            "kafka.example.com",
        ] {
            assert!(sans.contains(&n.to_string()), "{n} in {sans:?}");
        }
        let days = (leaf.validity().not_after.timestamp() - now().unix_timestamp()) / 86_400;
        assert_eq!(days, 365);
        assert!(ca_cert.is_ca());
    }

    /// A CA of the user's, as OpenSSL would make it: another subject, a SHA-1-sized key id.
    fn users_ca() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, "Example Corp Root");
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        p.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![7; 20]);
        p.not_before = now() - Duration::days(1);
        p.not_after = now() + Duration::days(100);
        Ca {
            cert_pem: p.self_signed(&key).unwrap().pem(),
            key_pem: key.serialize_pem(),
        }
    }

    #[test]
    fn a_users_ca_signs_certificates_that_chain_to_it() {
        let ca = users_ca();
        let ca_end = check_ca(&ca, now()).unwrap();
        let names = ["a.example".to_string()];
        let pem = issue(&ca, "demo-0", &names, now(), ends(now(), ca_end)).unwrap();
        let certs = pems(&pem);
        let (_, leaf) = X509Certificate::from_der(&certs[0]).unwrap();
        let ca_der = pems(&ca.cert_pem).remove(0);
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
        // The chain builds: issuer name and key id are the CA's, the signature its key's.
        assert_eq!(leaf.issuer(), ca_cert.subject());
        let aki = leaf
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.clone(),
                _ => None,
            })
            .expect("an authority key id");
        assert_eq!(aki.0, [7; 20]);
        leaf.verify_signature(Some(ca_cert.public_key())).unwrap();
        // Never past the CA's own end.
        assert_eq!(
            leaf.validity().not_after.timestamp(),
            ca_end.unix_timestamp()
        );
        // Another CA's key does not verify it.
        let other = new_ca("prod/demo", now()).unwrap();
        let other_der = pems(&other.cert_pem).remove(0);
        let (_, other_cert) = X509Certificate::from_der(&other_der).unwrap();
        assert!(
            leaf.verify_signature(Some(other_cert.public_key()))
                .is_err()
        );
    }

    #[test]
    fn a_ca_that_cannot_sign_is_refused_with_why() {
        let ca = new_ca("prod/demo", now()).unwrap();
        let other = new_ca("prod/demo", now()).unwrap();
        let mismatched = Ca {
            key_pem: other.key_pem.clone(),
            cert_pem: ca.cert_pem.clone(),
        };
        let e = check_ca(&mismatched, now()).unwrap_err();
        assert!(e.contains("not the key of"), "{e}");
        let e = check_ca(&ca, now() + CA_VALIDITY + Duration::days(1)).unwrap_err();
        assert!(e.contains("not now"), "{e}");
        let sec1 = Ca {
            key_pem: "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n"
                .into(),
            cert_pem: ca.cert_pem.clone(),
        };
        let e = check_ca(&sec1, now()).unwrap_err();
        assert!(e.contains("PKCS#8"), "{e}");
        // A broker's certificate is no CA.
        let names = ["a".to_string()];
        let keystore = issue(&ca, "demo-0", &names, now(), now() + BROKER_VALIDITY).unwrap();
        let first = keystore.find("-----BEGIN CERTIFICATE-----").unwrap();
        let end = keystore.find("-----END CERTIFICATE-----").unwrap() + 26;
        let not_ca = Ca {
            key_pem: ca.key_pem.clone(),
            cert_pem: keystore[first..end].to_string(),
        };
        let e = check_ca(&not_ca, now()).unwrap_err();
        assert!(e.contains("not a CA"), "{e}");
    }

    #[test]
    fn certificates_are_issued_again_for_new_names_and_before_they_end() {
        let ca = new_ca("prod/demo", now()).unwrap();
        let names = BTreeMap::from([("demo-0".to_string(), vec!["a".to_string()])]);
        let wanted = issued_for(&ca, &names);
        let ca_end = now() + CA_VALIDITY;
        let issued = BTreeMap::from([
            (ISSUED_FOR_ANNOTATION.to_string(), wanted.clone()),
            (
                NOT_AFTER_ANNOTATION.to_string(),
                rfc3339(ends(now(), ca_end)),
            ),
        ]);
        let at = |days: i64| now() + Duration::days(days);
        let check = |a: Option<&BTreeMap<String, String>>, w: &str, day: i64| {
            must_issue(a, w, at(day), ends(at(day), ca_end))
        };
        assert!(check(None, &wanted, 0));
        assert!(!check(Some(&issued), &wanted, 0));
        // 336 days later: 29 days left, issued again.
        assert!(!check(Some(&issued), &wanted, 334));
        assert!(check(Some(&issued), &wanted, 336));
        // A broker added, or another name.
        let mut more = names.clone();
        more.insert("demo-1".into(), vec!["b".into()]);
        assert!(check(Some(&issued), &issued_for(&ca, &more), 0));
        let renamed = BTreeMap::from([("demo-0".to_string(), vec!["c".to_string()])]);
        assert!(check(Some(&issued), &issued_for(&ca, &renamed), 0));
        // An unreadable date.
        let mut bad = issued.clone();
        bad.insert(NOT_AFTER_ANNOTATION.into(), "soon".into());
        assert!(check(Some(&bad), &wanted, 0));
        // A CA near its end: issued once up to it, then not again at every check.
        let short_ca = now() + Duration::days(20);
        assert_eq!(ends(now(), short_ca), short_ca);
        let near = BTreeMap::from([
            (ISSUED_FOR_ANNOTATION.to_string(), wanted.clone()),
            (NOT_AFTER_ANNOTATION.to_string(), rfc3339(short_ca)),
        ]);
        assert!(!must_issue(
            Some(&near),
            &wanted,
            at(1),
            ends(at(1), short_ca)
        ));
    }
}
