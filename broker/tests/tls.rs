//! TLS on a Kafka listener of the real broker process (Kafka's SSL security protocol): a TLS
//! 1.3 and a TLS 1.2 client get Kafka answers; plaintext Kafka on the TLS port and TLS on the
//! plaintext port are closed, and the broker keeps serving; with ssl.client.auth=requested a
//! client certificate from a foreign CA is refused and one from the truststore's CA, or none,
//! is served; a renewed certificate written over the keystore file is served to new
//! connections without a restart, and a broken one is refused while the last good one stays.
//! Real Kafka clients over TLS are in e2e/interop/python/test_tls.py.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use common::BrokerProcess;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// A leaf certificate for `names` (and its key), PEM.
    fn leaf(&self, cn: &str, names: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config trusting `ca`, at `versions`, with an optional client certificate.
fn client_config(
    ca: &Ca,
    versions: &[&'static rustls::SupportedProtocolVersion],
    identity: Option<&(String, String)>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            use rustls::pki_types::pem::PemObject;
            let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    Arc::new(config)
}

/// ApiVersions v3 over `stream`; the answer's error code.
async fn api_versions<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> std::io::Result<i16> {
    let version = 3;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("tls-test")));
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("tls-test"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, ApiVersionsRequest::header_version(version))
        .unwrap();
    req.encode(&mut body, version).unwrap();
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await?;
    stream.flush().await?;
    let len = stream.read_i32().await?;
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await?;
    let mut buf = bytes::Bytes::from(buf);
    assert_eq!(buf.get_i32(), 7, "correlation id");
    let resp = ApiVersionsResponse::decode(&mut buf, version).unwrap();
    Ok(resp.error_code)
}

/// A TLS session to the broker's SSL listener: the server's certificate, or the error.
async fn connect(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<
    (
        tokio_rustls::client::TlsStream<TcpStream>,
        CertificateDer<'static>,
    ),
    String,
> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    // TLS 1.3 reports a refused client certificate after the handshake: at the first read.
    api_versions(&mut tls).await.map_err(|e| e.to_string())?;
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    Ok((tls, cert))
}

fn write(path: &Path, parts: &[&str]) {
    // Written beside and renamed, as a Secret volume's update is: never half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, parts.concat()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn an_ssl_listener_serves_kafka_over_tls_and_takes_renewed_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("strand test CA");
    let foreign = Ca::new("someone else's CA");
    let (cert, key) = ca.leaf("broker", &["localhost", "127.0.0.1"]);
    let keystore = dir.path().join("broker.pem");
    write(&keystore, &[&key, &cert]);
    let truststore = dir.path().join("ca.pem");
    write(&truststore, &[&ca.pem()]);
    let tls_port = common::free_port();
    let listener = format!("external=127.0.0.1:{tls_port}");
    let broker = BrokerProcess::start(
        &dir.path().join("data"),
        &[
            "--listener",
            &listener,
            "--listener-security-protocol-map",
            "EXTERNAL:SSL,INTERNAL:PLAINTEXT",
            "--ssl-keystore-location",
            keystore.to_str().unwrap(),
            "--ssl-truststore-location",
            truststore.to_str().unwrap(),
            "--ssl-client-auth",
            "requested",
            "--ssl-reload-check-ms",
            "200",
        ],
    );
    let tls_addr = format!("127.0.0.1:{tls_port}");
    let tls13 = client_config(&ca, &[&rustls::version::TLS13], None);
    let tls12 = client_config(&ca, &[&rustls::version::TLS12], None);

    // Kafka over TLS 1.3 and 1.2; the certificate is the one in the keystore file.
    let (session, served) = connect(&tls_addr, Arc::clone(&tls13)).await.unwrap();
    assert_eq!(
        session.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let first = served.clone();
    let (session, _) = connect(&tls_addr, Arc::clone(&tls12)).await.unwrap();
    assert_eq!(
        session.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );

    // Plaintext Kafka on the TLS port: closed, no answer.
    let mut plain = TcpStream::connect(&tls_addr).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), api_versions(&mut plain)).await;
    assert!(
        matches!(answer, Ok(Err(_))),
        "plaintext on the TLS port: {answer:?}"
    );
    // TLS on the plaintext port: closed too (the ClientHello reads as an oversized frame).
    let internal = broker.bootstrap();
    let e = connect(&internal, Arc::clone(&tls13)).await.unwrap_err();
    assert!(!e.is_empty());
    // The plaintext listener still serves Kafka.
    let mut plain = TcpStream::connect(&internal).await.unwrap();
    assert_eq!(api_versions(&mut plain).await.unwrap(), 0);

    // Client certificates (requested): one from the truststore's CA and none are served, a
    // foreign one is refused.
    let good = ca.leaf("alice", &["alice"]);
    let bad = foreign.leaf("mallory", &["mallory"]);
    connect(
        &tls_addr,
        client_config(&ca, &[&rustls::version::TLS13], Some(&good)),
    )
    .await
    .unwrap();
    for versions in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let refused = connect(&tls_addr, client_config(&ca, &[versions], Some(&bad))).await;
        assert!(refused.is_err(), "a foreign client certificate was served");
    }
    assert!(broker.metric("strand_tls_handshakes_failed_total") >= 2.0);

    // A renewed certificate (new key) over the file: new connections get it, no restart.
    let (cert2, key2) = ca.leaf("broker", &["localhost", "127.0.0.1"]);
    write(&keystore, &[&key2, &cert2]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let renewed = loop {
        let (_, served) = connect(&tls_addr, Arc::clone(&tls13)).await.unwrap();
        if served != first {
            break served;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A broken file (a key that does not match the chain): refused, the renewed one stays.
    write(&keystore, &[&key, &cert2]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, served) = connect(&tls_addr, Arc::clone(&tls13)).await.unwrap();
    assert_eq!(served, renewed, "a broken keystore replaced a working one");
    assert!(
        broker.log().contains("do not load"),
        "no warning for the broken keystore"
    );
}

/// Bad TLS settings stop the broker at start with Kafka's names in the message.
#[test]
fn bad_tls_settings_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let listener = format!("external=127.0.0.1:{port}");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--listener-security-protocol-map", "external:SSL"],
            "ssl.keystore.location",
        ),
        (
            &["--listener-security-protocol-map", "nosuch:SSL"],
            "not a listener of this broker",
        ),
        (
            &["--listener-security-protocol-map", "external:SASL_SSL"],
            "ssl.keystore.location",
        ),
        (
            &[
                "--listener-security-protocol-map",
                "external:SASL_PLAINTEXT",
                "--sasl-enabled-mechanisms",
                "SCRAM-SHA-512,GSSAPI",
            ],
            "\"GSSAPI\" is not served",
        ),
        (
            &[
                "--listener-security-protocol-map",
                "external:SASL_PLAINTEXT",
                "--sasl-enabled-mechanisms",
                "PLAIN",
            ],
            "listener.name.external.plain.sasl.jaas.config",
        ),
        (
            &[
                "--listener-security-protocol-map",
                "external:SSL",
                "--ssl-keystore-location",
                "/nonexistent.pem",
            ],
            "/nonexistent.pem",
        ),
    ];
    for (args, says) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(["--listener", &listener])
            .args(*args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
