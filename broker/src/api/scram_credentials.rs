//! DescribeUserScramCredentials and AlterUserScramCredentials (`kafka-configs --entity-type
//! users --alter --add-config 'SCRAM-SHA-512=[password=...]'`): client users' credentials
//! (`auth::users`). Standalone they are this broker's, kept in its data directory; in a
//! cluster they are the controller's and reach every broker with its metadata. Each user's
//! changes are checked here first, so `validate_only`-like errors come back per user and a
//! user refused changes nothing; a description never carries a salt or a key.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse, ResponseKind,
};

use super::topic_admin::{Admin, Refusal, controller_refusal, until_shown};
use super::{Reply, str_bytes};
use crate::auth::users::{self, Alteration, Refused, Requested};
use crate::state::Broker;

/// Kafka's error for each refusal.
fn code_of(r: &Refused) -> ResponseError {
    match r {
        Refused::Unacceptable(_) => ResponseError::UnacceptableCredential,
        Refused::UnknownMechanism => ResponseError::UnsupportedSaslMechanism,
        Refused::NoSuchCredential | Refused::NoSuchUser => ResponseError::ResourceNotFound,
        Refused::AlteredTwice | Refused::DescribedTwice => ResponseError::DuplicateResource,
    }
}

pub fn handle_describe(
    broker: &Broker,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let asked: Option<Vec<&str>> = req
        .users
        .as_ref()
        .map(|u| u.iter().map(|n| n.name.as_str()).collect());
    let known = broker.scram_users.current();
    let mut r = DescribeUserScramCredentialsResponse::default();
    r.results = users::describe(&known, asked.as_deref())
        .into_iter()
        .map(|(user, result)| {
            let mut d = DescribeUserScramCredentialsResult::default();
            d.user = str_bytes(user);
            match result {
                Ok(infos) => {
                    d.credential_infos = infos
                        .into_iter()
                        .map(|(m, iterations)| {
                            let mut c = CredentialInfo::default();
                            c.mechanism = m.wire_type();
                            c.iterations = i32::try_from(iterations).unwrap_or(i32::MAX);
                            c
                        })
                        .collect();
                }
                Err(refused) => {
                    d.error_code = code_of(&refused).code();
                    d.error_message = Some(str_bytes(refused.to_string()));
                }
            }
            d
        })
        .collect();
    r
}

pub fn handle_alter(broker: &Arc<Broker>, req: AlterUserScramCredentialsRequest) -> Reply {
    let admin = Admin::of(broker);
    Reply::Later(Box::pin(async move {
        let requested: Vec<Requested> = req
            .deletions
            .iter()
            .map(|d| Requested {
                user: d.name.as_str(),
                mechanism: d.mechanism,
                upsert: None,
            })
            .chain(req.upsertions.iter().map(|u| Requested {
                user: u.name.as_str(),
                mechanism: u.mechanism,
                upsert: Some((u.iterations, &u.salt[..], &u.salted_password[..])),
            }))
            .collect();
        // PBKDF2 is done by the client; what is left (two HMACs and a hash per entry) is
        // cheap enough to do here.
        let known = admin.broker().scram_users.current();
        let planned = users::plan(&requested, &known);
        let valid: Vec<Alteration> = planned
            .iter()
            .filter_map(|(_, p)| p.as_ref().ok())
            .flatten()
            .cloned()
            .collect();
        let applied: Result<(), Refusal> = if valid.is_empty() {
            Ok(())
        } else {
            alter(&admin, valid).await
        };
        let mut r = AlterUserScramCredentialsResponse::default();
        r.results = planned
            .into_iter()
            .map(|(user, planned)| {
                let mut e = AlterUserScramCredentialsResult::default();
                e.user = str_bytes(user);
                let refused = match (planned, &applied) {
                    (Err(refused), _) => Some((code_of(&refused), refused.to_string())),
                    (Ok(_), Err((code, m))) => Some((*code, m.clone())),
                    (Ok(_), Ok(())) => None,
                };
                if let Some((code, message)) = refused {
                    e.error_code = code.code();
                    e.error_message = Some(str_bytes(message));
                }
                e
            })
            .collect();
        ResponseKind::AlterUserScramCredentials(r)
    }))
}

async fn alter(admin: &Admin, alterations: Vec<Alteration>) -> Result<(), Refusal> {
    match admin {
        Admin::Local(broker) => {
            let broker = Arc::clone(broker);
            crate::blocking::off_runtime(move || alter_local(&broker, &alterations))
        }
        Admin::Cluster(_, rt) => {
            rt.membership
                .client()
                .alter_scram_credentials(&alterations)
                .await
                .map_err(|e| controller_refusal(&e))?;
            // Answered once this broker authenticates with it, so a client that logs in here
            // next (as kafka-configs users do right after) meets the new credential.
            let broker = admin.broker();
            until_shown("a SCRAM credential change", || {
                let creds = broker.scram_users.current();
                alterations.iter().all(|a| users::shows(&creds, a))
            })
            .await;
            Ok(())
        }
    }
}

/// Standalone: applied, written to the data directory, then in force.
fn alter_local(broker: &Broker, alterations: &[Alteration]) -> Result<(), Refusal> {
    let _one_at_a_time = broker.scram_users.changing();
    let mut creds = broker.scram_users.current().as_ref().clone();
    let mut changed = false;
    for a in alterations {
        changed |= users::apply(&mut creds, a).map_err(|r| (code_of(&r), r.to_string()))?;
    }
    if changed {
        users::save(&broker.scram_file(), &creds).map_err(|e| {
            (
                ResponseError::KafkaStorageError,
                format!("cannot write {}: {e}", broker.scram_file().display()),
            )
        })?;
        broker.scram_users.set(creds);
    }
    Ok(())
}
