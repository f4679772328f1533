//! A minimal Kafka client connection for broker-to-broker traffic (follower fetch): encodes a
//! request with its header, reads the length-prefixed response, decodes it. One request at a
//! time; the caller owns the connection.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

use crate::auth::scram::{ClientExchange, Mechanism};
use crate::auth::{self, ClusterSecret};

/// Largest response accepted (fetch responses are capped at 55 MiB by the leader).
const MAX_RESPONSE_BYTES: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode request: {0}")]
    Encode(String),
    #[error("malformed response: {0}")]
    Decode(String),
    #[error("response of {0} bytes is too large")]
    TooLarge(usize),
    #[error("response correlation id {got} does not match request {expected}")]
    Correlation { expected: i32, got: i32 },
    #[error("SASL authentication failed: {0}")]
    Auth(String),
}

pub struct Connection {
    stream: BufStream<TcpStream>,
    next_correlation: i32,
    client_id: String,
}

impl Connection {
    pub async fn connect(addr: &str, client_id: &str) -> Result<Self, ClientError> {
        Self::connect_from(addr, client_id, None).await
    }

    /// Connects from `source` when given (a multi-homed broker's own address).
    pub async fn connect_from(
        addr: &str,
        client_id: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<Self, ClientError> {
        let stream = match source {
            None => TcpStream::connect(addr).await?,
            Some(ip) => {
                let target = tokio::net::lookup_host(addr)
                    .await?
                    .find(|a| a.is_ipv4() == ip.is_ipv4())
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!("no address for {addr}"),
                        )
                    })?;
                let socket = if ip.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                socket.bind(std::net::SocketAddr::new(ip, 0))?;
                socket.connect(target).await?
            }
        };
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufStream::new(stream),
            next_correlation: 1,
            client_id: client_id.to_string(),
        })
    }

    /// Authenticates as the cluster's broker user (SaslHandshake v1, then SaslAuthenticate v2
    /// with SCRAM). The server's signature is checked too: a follower never replicates from
    /// something that does not hold the cluster's secret.
    pub async fn authenticate(&mut self, secret: &ClusterSecret) -> Result<(), ClientError> {
        self.authenticate_as(
            auth::INTER_BROKER_MECHANISM,
            auth::BROKER_USER,
            secret.password(),
        )
        .await
    }

    /// Authenticates as `user` with SCRAM `mechanism`, checking the server's signature.
    pub async fn authenticate_as(
        &mut self,
        mechanism: Mechanism,
        user: &str,
        password: &[u8],
    ) -> Result<(), ClientError> {
        let mut handshake = SaslHandshakeRequest::default();
        handshake.mechanism = StrBytes::from_static_str(mechanism.name());
        let resp = self.send(&handshake, 1).await?;
        if resp.error_code != 0 {
            return Err(ClientError::Auth(format!(
                "SaslHandshake for {} refused with error {} (offered: {:?})",
                mechanism.name(),
                resp.error_code,
                resp.mechanisms
            )));
        }
        let mut exchange = ClientExchange::new(mechanism, user, password, &auth::nonce());
        let server_first = self.sasl_round(exchange.client_first()).await?;
        let client_final = exchange
            .client_final(&server_first)
            .map_err(|e| ClientError::Auth(e.to_string()))?;
        let server_final = self.sasl_round(client_final).await?;
        exchange
            .verify_server_final(&server_final)
            .map_err(|e| ClientError::Auth(e.to_string()))
    }

    async fn sasl_round(&mut self, bytes: Vec<u8>) -> Result<Bytes, ClientError> {
        let mut req = SaslAuthenticateRequest::default();
        req.auth_bytes = Bytes::from(bytes);
        let resp = self.send(&req, 2).await?;
        if resp.error_code != 0 {
            return Err(ClientError::Auth(format!(
                "error {}: {}",
                resp.error_code,
                resp.error_message.as_deref().unwrap_or("")
            )));
        }
        Ok(resp.auth_bytes)
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn send<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let correlation_id = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(StrBytes::from_string(self.client_id.clone()));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, R::header_version(version))
            .and_then(|()| request.encode(&mut buf, version))
            .map_err(|e| ClientError::Encode(e.to_string()))?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&buf).await?;
        self.stream.flush().await?;

        let len = self.stream.read_i32().await?;
        let len = usize::try_from(len)
            .map_err(|_| ClientError::Decode(format!("negative length {len}")))?;
        if len > MAX_RESPONSE_BYTES {
            return Err(ClientError::TooLarge(len));
        }
        let mut frame = BytesMut::zeroed(len);
        self.stream.read_exact(&mut frame).await?;
        let mut frame = frame.freeze();
        let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if header.correlation_id != correlation_id {
            return Err(ClientError::Correlation {
                expected: correlation_id,
                got: header.correlation_id,
            });
        }
        R::Response::decode(&mut frame, version).map_err(|e| ClientError::Decode(e.to_string()))
    }
}
