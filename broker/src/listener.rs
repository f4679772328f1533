//! Named Kafka listeners (Kafka's `listeners` / `advertised.listeners`), pure: parsing and
//! validating the `--listener` and `--advertised-listener` flags, and which address a broker
//! gives clients on each listener.
//!
//! The `--listen` / `--advertised` pair is the listener named [`DEFAULT_LISTENER`]; brokers
//! replicate over it and the controller reaches them there. Every other listener is extra: a
//! client connected on listener L gets every broker's L endpoint in Metadata and
//! FindCoordinator, and brokers without L are left out, as Kafka does.
//!
//! A port may be written `BASE+id`: BASE plus this broker's node id. A StatefulSet's pod
//! template is shared by all brokers and Kubernetes' `$(VAR)` expansion cannot add, so this
//! is how each broker finds its own NodePort.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Name of the listener given by `--listen` and `--advertised`.
pub const DEFAULT_LISTENER: &str = "internal";

/// One listener's advertised address; also the controller's wire format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// A listener this broker serves: where it binds and what it tells clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub bind: SocketAddr,
    pub advertised: Endpoint,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenerError {
    #[error("{flag} expects NAME={what}, got {value:?}")]
    Syntax {
        flag: &'static str,
        what: &'static str,
        value: String,
    },
    #[error(
        "listener name {0:?} is not 1-15 of lowercase letters, digits and '-' with at least one letter, starting and ending alphanumeric, without '--' (it names a Kubernetes port)"
    )]
    BadName(String),
    #[error(
        "listener name {DEFAULT_LISTENER:?} is the --listen/--advertised listener; give extra listeners other names"
    )]
    Reserved,
    #[error("listener {0:?} is given twice in {1}")]
    Duplicate(String, &'static str),
    #[error("--advertised-listener names {0:?}, which no --listener defines")]
    UnknownListener(String),
    #[error("bad port {port:?} in {flag} {value:?}: {reason}")]
    BadPort {
        flag: &'static str,
        value: String,
        port: String,
        reason: String,
    },
    #[error("{flag} {value:?}: the bind address must be an IP address: {reason}")]
    BadBindAddress {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("port {base}+id for node id {node_id} is outside 1-65535")]
    PortOverflow { base: u16, node_id: i32 },
    #[error(
        "listener {name:?} binds the wildcard address {bind}; give --advertised-listener {name}=HOST:PORT for clients"
    )]
    WildcardWithoutAdvertised { name: String, bind: SocketAddr },
}

/// A port as written: fixed, or `BASE+id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSpec {
    Fixed(u16),
    PlusNodeId(u16),
}

impl PortSpec {
    /// The port for broker `node_id`.
    pub fn resolve(self, node_id: i32) -> Result<u16, ListenerError> {
        match self {
            PortSpec::Fixed(p) => Ok(p),
            PortSpec::PlusNodeId(base) => i64::from(base)
                .checked_add(i64::from(node_id))
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or(ListenerError::PortOverflow { base, node_id }),
        }
    }
}

/// Kubernetes' IANA_SVC_NAME rule (a container port's name), so a listener name can name the
/// port and be part of a Service name unchanged.
pub fn validate_name(name: &str) -> Result<(), ListenerError> {
    let ok = (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(ListenerError::BadName(name.to_string()))
    }
}

fn parse_port(flag: &'static str, value: &str, port: &str) -> Result<PortSpec, ListenerError> {
    let bad = |reason: String| ListenerError::BadPort {
        flag,
        value: value.to_string(),
        port: port.to_string(),
        reason,
    };
    let number = |s: &str| s.trim().parse::<u16>().map_err(|e| bad(e.to_string()));
    match port.split_once('+') {
        Some((base, id)) if id.trim() == "id" => Ok(PortSpec::PlusNodeId(number(base)?)),
        Some(_) => Err(bad("expected a number or BASE+id".into())),
        None => match number(port)? {
            0 => Err(bad("port 0 cannot be connected to".into())),
            p => Ok(PortSpec::Fixed(p)),
        },
    }
}

fn split_named<'a>(
    flag: &'static str,
    what: &'static str,
    value: &'a str,
) -> Result<(&'a str, &'a str, &'a str), ListenerError> {
    let syntax = || ListenerError::Syntax {
        flag,
        what,
        value: value.to_string(),
    };
    let (name, addr) = value.split_once('=').ok_or_else(syntax)?;
    let (host, port) = addr.rsplit_once(':').ok_or_else(syntax)?;
    if host.is_empty() {
        return Err(syntax());
    }
    Ok((name.trim(), host, port))
}

fn check_name(name: &str) -> Result<(), ListenerError> {
    if name == DEFAULT_LISTENER {
        return Err(ListenerError::Reserved);
    }
    validate_name(name)
}

/// `--listener NAME=IP:PORT` (PORT may be `BASE+id`).
pub fn parse_listener(value: &str) -> Result<(String, String, PortSpec), ListenerError> {
    const FLAG: &str = "--listener";
    let (name, host, port) = split_named(FLAG, "IP:PORT", value)?;
    check_name(name)?;
    Ok((
        name.to_string(),
        host.to_string(),
        parse_port(FLAG, value, port)?,
    ))
}

/// `--advertised-listener NAME=HOST:PORT` (PORT may be `BASE+id`).
pub fn parse_advertised(value: &str) -> Result<(String, String, PortSpec), ListenerError> {
    const FLAG: &str = "--advertised-listener";
    let (name, host, port) = split_named(FLAG, "HOST:PORT", value)?;
    check_name(name)?;
    Ok((
        name.to_string(),
        host.to_string(),
        parse_port(FLAG, value, port)?,
    ))
}

/// The extra listeners of broker `node_id` from the flags' values, in `--listener` order. A
/// listener without `--advertised-listener` advertises its bind address (not a wildcard).
pub fn resolve(
    listeners: &[String],
    advertised: &[String],
    node_id: i32,
) -> Result<Vec<Listener>, ListenerError> {
    let mut out: Vec<Listener> = Vec::new();
    for value in listeners {
        let (name, ip, port) = parse_listener(value)?;
        if out.iter().any(|l| l.name == name) {
            return Err(ListenerError::Duplicate(name, "--listener"));
        }
        let ip: std::net::IpAddr = ip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(
                |e: std::net::AddrParseError| ListenerError::BadBindAddress {
                    flag: "--listener",
                    value: value.clone(),
                    reason: e.to_string(),
                },
            )?;
        let bind = SocketAddr::new(ip, port.resolve(node_id)?);
        out.push(Listener {
            advertised: Endpoint {
                name: name.clone(),
                host: ip.to_string(),
                port: bind.port(),
            },
            name,
            bind,
        });
    }
    let mut seen: Vec<String> = Vec::new();
    for value in advertised {
        let (name, host, port) = parse_advertised(value)?;
        if seen.contains(&name) {
            return Err(ListenerError::Duplicate(name, "--advertised-listener"));
        }
        let l = out
            .iter_mut()
            .find(|l| l.name == name)
            .ok_or_else(|| ListenerError::UnknownListener(name.clone()))?;
        l.advertised.host = host;
        l.advertised.port = port.resolve(node_id)?;
        seen.push(name);
    }
    for l in &out {
        if l.bind.ip().is_unspecified() && !seen.contains(&l.name) {
            return Err(ListenerError::WildcardWithoutAdvertised {
                name: l.name.clone(),
                bind: l.bind,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn base_plus_id_adds_the_node_id() {
        let l = resolve(
            &s(&["external=0.0.0.0:9094"]),
            &s(&["external=10.0.0.7:30100+id"]),
            2,
        )
        .unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].bind, "0.0.0.0:9094".parse().unwrap());
        assert_eq!(
            l[0].advertised,
            Endpoint {
                name: "external".into(),
                host: "10.0.0.7".into(),
                port: 30102
            }
        );
        // The bind port may use it too (several brokers on one host).
        let l = resolve(&s(&["ext=127.0.0.1:20000+id"]), &[], 3).unwrap();
        assert_eq!(l[0].bind.port(), 20003);
        assert_eq!(l[0].advertised.host, "127.0.0.1");
        assert_eq!(l[0].advertised.port, 20003);
    }

    #[test]
    fn several_listeners_keep_their_order() {
        let l = resolve(
            &s(&["a=127.0.0.1:1000", "b=[::1]:2000"]),
            &s(&["b=host-b:2001"]),
            0,
        )
        .unwrap();
        let names: Vec<_> = l.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(l[1].bind, "[::1]:2000".parse().unwrap());
        assert_eq!(
            (l[1].advertised.host.as_str(), l[1].advertised.port),
            ("host-b", 2001)
        );
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        let err = |l: &[&str], a: &[&str], id: i32| resolve(&s(l), &s(a), id).unwrap_err();
        assert_eq!(
            err(&["ext=0.0.0.0:1"], &["other=h:1"], 0),
            ListenerError::UnknownListener("other".into())
        );
        assert_eq!(
            err(&["ext=0.0.0.0:1", "ext=0.0.0.0:2"], &[], 0),
            ListenerError::Duplicate("ext".into(), "--listener")
        );
        assert_eq!(
            err(&["ext=0.0.0.0:1"], &["ext=h:1", "ext=h:2"], 0),
            ListenerError::Duplicate("ext".into(), "--advertised-listener")
        );
        assert_eq!(
            err(&["internal=127.0.0.1:1"], &[], 0),
            ListenerError::Reserved
        );
        assert_eq!(
            err(&["ext=0.0.0.0:65535"], &["ext=h:65535+id"], 1),
            ListenerError::PortOverflow {
                base: 65535,
                node_id: 1
            }
        );
        assert!(matches!(
            err(&["ext=0.0.0.0:9094"], &[], 0),
            ListenerError::WildcardWithoutAdvertised { .. }
        ));
        for bad in [
            "ext=127.0.0.1:99999",
            "ext=127.0.0.1:x",
            "ext=127.0.0.1:0",
            "ext=127.0.0.1:1+2",
            "ext=127.0.0.1:+id",
        ] {
            assert!(
                matches!(err(&[bad], &[], 0), ListenerError::BadPort { .. }),
                "{bad}"
            );
        }
        assert!(matches!(
            err(&["ext=localhost:1"], &[], 0),
            ListenerError::BadBindAddress { .. }
        ));
        for bad in ["ext", "ext=127.0.0.1", "ext=:1"] {
            assert!(
                matches!(err(&[bad], &[], 0), ListenerError::Syntax { .. }),
                "{bad}"
            );
        }
        for bad in [
            "EXT",
            "-x",
            "x-",
            "a--b",
            "123",
            "",
            "sixteen-chars-xx",
            "a_b",
        ] {
            assert_eq!(
                err(&[&format!("{bad}=127.0.0.1:1")], &[], 0),
                ListenerError::BadName(bad.into()),
                "{bad}"
            );
        }
        // Negative ids cannot reach below port 1.
        assert!(matches!(
            err(&["ext=127.0.0.1:5+id"], &[], -5),
            ListenerError::PortOverflow { .. }
        ));
    }

    #[test]
    fn legal_names() {
        for ok in ["external", "ext-1", "a", "x9", "fifteen-chars-x"] {
            validate_name(ok).unwrap();
        }
    }
}
