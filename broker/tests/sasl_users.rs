//! Client users on SASL listeners, with real broker processes: a user made with Kafka's
//! AlterUserScramCredentials logs in with SCRAM, survives a restart, and is gone once deleted;
//! a SASL listener serves nothing but ApiVersions before authentication and closes a
//! connection that asks for more or fails to log in; in a cluster a user made through one
//! broker logs in on another, and an ACL made through one broker is enforced on every broker
//! (both travel with the controller's metadata).

mod common;

use std::time::Duration;

use broker::auth::scram::Mechanism;
use broker::replication::client::Connection;
use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, ApiVersionsRequest, CreateAclsRequest, MetadataRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use common::BrokerProcess;
use common::cluster::{BROKER_ARGS, Cluster, base_port, test_dir};

const SALT: &[u8] = b"a-salt-of-16-byt";
const ITERATIONS: u32 = 4096;

/// What `kafka-configs --add-config 'SCRAM-SHA-512=[password=...]'` sends: the client salts.
fn upsert(user: &str, m: Mechanism, password: &str) -> AlterUserScramCredentialsRequest {
    let salted = m.salted_password(password.as_bytes(), SALT, ITERATIONS);
    AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        ScramCredentialUpsertion::default()
            .with_name(StrBytes::from_string(user.into()))
            .with_mechanism(m.wire_type())
            .with_iterations(ITERATIONS as i32)
            .with_salt(Bytes::from_static(SALT))
            .with_salted_password(Bytes::from(salted)),
    ])
}

async fn alter(addr: &str, req: &AlterUserScramCredentialsRequest) {
    let mut admin = Connection::connect(addr, "admin").await.unwrap();
    let r = admin.send(req, 0).await.unwrap();
    assert!(
        r.results.iter().all(|u| u.error_code == 0),
        "alteration refused: {r:?}"
    );
}

/// Logs in on `addr` and reads the metadata: Ok once authenticated, Err with why otherwise.
async fn login(addr: &str, m: Mechanism, user: &str, password: &str) -> Result<(), String> {
    let mut c = Connection::connect(addr, "sasl-client")
        .await
        .map_err(|e| e.to_string())?;
    c.authenticate_as(m, user, password.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    c.send(&MetadataRequest::default(), 12)
        .await
        .map(|_| ())
        .map_err(|e| format!("metadata after login: {e}"))
}

/// The error carol gets for topic acl-t in Metadata on `addr` (29: TOPIC_AUTHORIZATION_FAILED).
async fn carols_view(addr: &str) -> i16 {
    let mut c = Connection::connect(addr, "carol").await.unwrap();
    c.authenticate_as(Mechanism::Sha256, "carol", b"carol-secret")
        .await
        .unwrap();
    let r = c
        .send(
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("acl-t")))),
            ])),
            12,
        )
        .await
        .unwrap();
    r.topics[0].error_code
}

/// Whether the connection is closed by the broker (a read ends) after `send` fails or succeeds.
async fn metadata_closes(addr: &str) -> bool {
    let mut c = Connection::connect(addr, "no-sasl").await.unwrap();
    // ApiVersions is served before authentication, as Kafka does.
    c.send(&ApiVersionsRequest::default(), 3).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        c.send(&MetadataRequest::default(), 12),
    )
    .await
    .expect("the broker neither answered nor closed")
    .is_err()
}

#[tokio::test]
async fn a_user_made_with_kafkas_api_logs_in_on_a_sasl_listener() {
    let dir = tempfile::tempdir().unwrap();
    let sasl_port = common::free_port();
    let sasl_addr = format!("127.0.0.1:{sasl_port}");
    let listener = format!("external={sasl_addr}");
    let mut broker = BrokerProcess::start(
        &dir.path().join("data"),
        &[
            "--listener",
            &listener,
            "--listener-security-protocol-map",
            "external:SASL_PLAINTEXT",
        ],
    );
    let plain = broker.bootstrap();

    // Before any user exists, nobody logs in, and nothing else is served.
    assert!(metadata_closes(&sasl_addr).await);
    let e = login(&sasl_addr, Mechanism::Sha512, "alice", "alice-secret")
        .await
        .unwrap_err();
    assert!(e.contains("Authentication failed"), "{e}");

    alter(&plain, &upsert("alice", Mechanism::Sha512, "alice-secret")).await;
    login(&sasl_addr, Mechanism::Sha512, "alice", "alice-secret")
        .await
        .unwrap();
    for (m, user, password) in [
        (Mechanism::Sha512, "alice", "alice-secreT"),
        (Mechanism::Sha256, "alice", "alice-secret"), // no SHA-256 credential
        (Mechanism::Sha512, "bob", "alice-secret"),
    ] {
        let e = login(&sasl_addr, m, user, password).await.unwrap_err();
        assert!(e.contains("Authentication failed"), "{user} {m:?}: {e}");
    }
    // The plaintext listener serves anonymous clients, and only the broker user may log in.
    assert!(!metadata_closes(&plain).await);
    assert!(
        login(&plain, Mechanism::Sha512, "alice", "alice-secret")
            .await
            .is_err()
    );

    // Kept in the data directory: still there after a restart.
    assert!(broker.terminate(), "the broker did not stop cleanly");
    broker.spawn();
    login(&sasl_addr, Mechanism::Sha512, "alice", "alice-secret")
        .await
        .unwrap();

    // A new password replaces the old one; deleted, she is gone.
    alter(&plain, &upsert("alice", Mechanism::Sha512, "second")).await;
    assert!(
        login(&sasl_addr, Mechanism::Sha512, "alice", "alice-secret")
            .await
            .is_err()
    );
    login(&sasl_addr, Mechanism::Sha512, "alice", "second")
        .await
        .unwrap();
    let delete = AlterUserScramCredentialsRequest::default().with_deletions(vec![
        ScramCredentialDeletion::default()
            .with_name(StrBytes::from_static_str("alice"))
            .with_mechanism(Mechanism::Sha512.wire_type()),
    ]);
    alter(&plain, &delete).await;
    assert!(
        login(&sasl_addr, Mechanism::Sha512, "alice", "second")
            .await
            .is_err()
    );
    assert!(
        !broker.log().contains("panicked"),
        "broker log:\n{}",
        broker.log()
    );
}

/// In a cluster the credential is the controller's: made through broker 0, it logs in on
/// every broker's SASL listener, and a deletion reaches them all.
#[tokio::test]
async fn a_user_made_through_one_broker_logs_in_on_every_broker() {
    let dir = test_dir();
    let base = base_port(0);
    let ext = base + 30;
    // With Kafka's authorizer; the internal listener's anonymous clients (this test's admin)
    // are super users.
    let args = format!(
        "{BROKER_ARGS} --listener sasl=127.0.0.1:{ext}+id \
         --listener-security-protocol-map sasl:SASL_PLAINTEXT \
         --authorizer-class-name org.apache.kafka.metadata.authorizer.StandardAuthorizer \
         --super-users User:ANONYMOUS"
    );
    let cluster = Cluster::launch_env(
        dir.path(),
        base,
        3,
        false,
        "--session-timeout-ms 4000",
        true,
        &[("STRAND_BROKER_ARGS", args)],
    );
    let first = cluster.bootstrap.split(',').next().unwrap().to_string();
    alter(&first, &upsert("carol", Mechanism::Sha256, "carol-secret")).await;
    for id in 0..3u16 {
        let addr = format!("127.0.0.1:{}", ext + id);
        // Answered once in force on broker 0; the others follow the metadata.
        let mut tries = 0;
        while let Err(e) = login(&addr, Mechanism::Sha256, "carol", "carol-secret").await {
            tries += 1;
            assert!(tries < 50, "broker {id}: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(metadata_closes(&addr).await, "broker {id}");
    }
    // ACLs: carol may not describe the topic on any broker until one made through broker 0
    // lets her, on every broker.
    cluster.create_topic("acl-t", 1).await;
    for id in 0..3u16 {
        let addr = format!("127.0.0.1:{}", ext + id);
        assert_eq!(carols_view(&addr).await, 29, "broker {id}");
    }
    let mut admin = Connection::connect(&first, "admin").await.unwrap();
    let r = admin
        .send(
            &CreateAclsRequest::default().with_creations(vec![
                AclCreation::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("acl-t"))
                    .with_resource_pattern_type(3)
                    .with_principal(StrBytes::from_static_str("User:carol"))
                    .with_host(StrBytes::from_static_str("*"))
                    .with_operation(8)
                    .with_permission_type(3),
            ]),
            3,
        )
        .await
        .unwrap();
    assert_eq!(r.results[0].error_code, 0, "{r:?}");
    for id in 0..3u16 {
        let addr = format!("127.0.0.1:{}", ext + id);
        let mut tries = 0;
        while carols_view(&addr).await != 0 {
            tries += 1;
            assert!(tries < 50, "broker {id} still refuses carol");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The controller never shows the keys, even with its token.
    let described = cluster
        .controller(reqwest::Method::GET, "/v1/admin/describe")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !described.contains("stored_key") && !described.contains("scram"),
        "{described}"
    );
    let delete = AlterUserScramCredentialsRequest::default().with_deletions(vec![
        ScramCredentialDeletion::default()
            .with_name(StrBytes::from_static_str("carol"))
            .with_mechanism(Mechanism::Sha256.wire_type()),
    ]);
    alter(&first, &delete).await;
    for id in 0..3u16 {
        let addr = format!("127.0.0.1:{}", ext + id);
        let mut tries = 0;
        while login(&addr, Mechanism::Sha256, "carol", "carol-secret")
            .await
            .is_ok()
        {
            tries += 1;
            assert!(tries < 50, "broker {id} still lets carol in");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
