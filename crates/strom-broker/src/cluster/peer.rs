//! A minimal Kafka-protocol connection from one broker to another (a follower's fetches and
//! epoch queries): one request at a time, each answered before the next is sent.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// A connection to another broker's Kafka listener.
#[derive(Debug)]
pub struct KafkaConn {
    stream: TcpStream,
    addr: String,
    next_correlation: i32,
    client_id: StrBytes,
    buf: BytesMut,
}

impl KafkaConn {
    /// Connects within `timeout`.
    pub async fn connect(addr: &str, client_id: String, timeout: Duration) -> Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Replication(format!("connecting to {addr} timed out")))?
            .map_err(|e| Error::Replication(format!("connecting to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        Ok(KafkaConn {
            stream,
            addr: addr.to_string(),
            next_correlation: 1,
            client_id: StrBytes::from_string(client_id),
            buf: BytesMut::with_capacity(64 * 1024),
        })
    }

    /// The peer's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `req` at `version` and waits up to `timeout` for its response.
    pub async fn call<R>(&mut self, req: &R, version: i16, timeout: Duration) -> Result<R::Response>
    where
        R: Request + Encodable,
        R::Response: Decodable + HeaderVersion,
    {
        let correlation = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(self.client_id.clone()));
        let mut out = BytesMut::new();
        out.put_i32(0);
        let enc = |e: anyhow::Error| Error::Internal(format!("encoding api {}: {e}", R::KEY));
        header
            .encode(&mut out, R::header_version(version))
            .map_err(enc)?;
        req.encode(&mut out, version).map_err(enc)?;
        let len = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        let addr = self.addr.clone();
        let io = async {
            self.stream.write_all(&out).await?;
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await?;
            let len = i32::from_be_bytes(len);
            if !(0..=256 * 1024 * 1024).contains(&len) {
                return Err(std::io::Error::other(format!("bad response length {len}")));
            }
            self.buf.clear();
            self.buf.resize(len as usize, 0);
            self.stream.read_exact(&mut self.buf).await?;
            Ok(())
        };
        tokio::time::timeout(timeout, io)
            .await
            .map_err(|_| Error::Replication(format!("{addr} did not answer within {timeout:?}")))?
            .map_err(|e| Error::Replication(format!("{addr}: {e}")))?;
        let mut body = self.buf.split().freeze();
        let hv = <R::Response as HeaderVersion>::header_version(version);
        let h = ResponseHeader::decode(&mut body, hv)
            .map_err(|e| Error::Replication(format!("{addr}: bad response header: {e}")))?;
        if h.correlation_id != correlation {
            return Err(Error::Replication(format!(
                "{addr} answered correlation id {} for {correlation}",
                h.correlation_id
            )));
        }
        R::Response::decode(&mut body, version)
            .map_err(|e| Error::Replication(format!("{addr}: bad response: {e}")))
    }
}
