//! Raw Kafka requests over plain sockets, for tests that must behave as no real client would
//! (pipeline and never read, send half a frame, hold a connection open).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

/// A whole request frame (length prefix, header, body) for `req` at `version`.
pub fn frame<R: Request + Encodable>(req: &R, version: i16, correlation_id: i32) -> Vec<u8> {
    let key = ApiKey::try_from(R::KEY).expect("known API");
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("raw-test"));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, key.request_header_version(version))
        .expect("encode header");
    req.encode(&mut buf, version).expect("encode request");
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.to_vec()
}

/// Reads one response to `R` at `version`; `None` when the connection closed or the read timed
/// out first.
pub fn read_response<R: Request>(s: &mut TcpStream, version: i16) -> Option<R::Response>
where
    R::Response: Decodable,
{
    let key = ApiKey::try_from(R::KEY).expect("known API");
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut frame).ok()?;
    let mut frame = Bytes::from(frame);
    ResponseHeader::decode(&mut frame, key.response_header_version(version)).ok()?;
    let r = R::Response::decode(&mut frame, version).ok()?;
    assert!(
        !frame.has_remaining(),
        "trailing bytes in a {key:?} response"
    );
    Some(r)
}

/// One request on a new connection; `None` when it was not answered within `timeout`.
pub fn call<R: Request + Encodable>(
    addr: SocketAddr,
    req: &R,
    version: i16,
    timeout: Duration,
) -> Option<R::Response>
where
    R::Response: Decodable,
{
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.write_all(&frame(req, version, 1)).ok()?;
    read_response::<R>(&mut s, version)
}
