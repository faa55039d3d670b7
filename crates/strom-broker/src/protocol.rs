//! The Kafka wire protocol at the edge of the broker, without I/O ("sans-io"): framing,
//! request decoding with version checks, and response encoding.
//!
//! A frame is a big-endian `i32` length followed by that many bytes. [`next_frame`] checks the
//! length against the configured maximum *before* allocating, so a bogus 2 GiB prefix costs
//! nothing but the connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};

use crate::apis;

/// Why a frame or request could not be taken; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The length prefix is larger than `max-request-size`.
    #[error("request of {size} bytes exceeds max-request-size {max}")]
    TooLarge {
        /// Announced size.
        size: i64,
        /// Configured limit.
        max: usize,
    },
    /// The length prefix is negative or too small to hold a request header.
    #[error("invalid frame length {0}")]
    BadLength(i32),
    /// The API key is not one Kafka defines.
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    /// The broker does not implement this API or version (and it is not ApiVersions).
    #[error("unsupported {api:?} version {version}")]
    UnsupportedVersion {
        /// The API.
        api: ApiKey,
        /// The requested version.
        version: i16,
    },
    /// The bytes do not decode as the request they claim to be.
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        /// The API.
        api: ApiKey,
        /// The version.
        version: i16,
        /// The decoder's complaint.
        reason: String,
    },
}

/// Takes the next complete frame body off the front of `buf`, or `None` if more bytes are
/// needed.
pub fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 {
        // api key (2) + api version (2) + correlation id (4) at the very least
        return Err(ProtocolError::BadLength(len));
    }
    if len as usize > max {
        return Err(ProtocolError::TooLarge {
            size: len as i64,
            max,
        });
    }
    if buf.len() < 4 + len as usize {
        buf.reserve(4 + len as usize - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len as usize).freeze()))
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    /// Its API.
    pub api: ApiKey,
    /// Its header (version, correlation id, client id).
    pub header: RequestHeader,
    /// Its body.
    pub body: RequestKind,
    /// The client's address, when it came over TCP.
    pub peer: Option<std::net::SocketAddr>,
}

/// What a frame turned out to be.
#[derive(Debug)]
pub enum Decoded {
    /// A request the broker handles.
    Request(Box<Request>),
    /// An ApiVersions request of a version newer than the broker knows: answer with a v0
    /// response listing what is supported (KIP-511), so the client can downgrade.
    ApiVersionsFallback {
        /// To echo back.
        correlation_id: i32,
    },
}

/// Decodes one frame body.
pub fn decode_request(mut frame: Bytes) -> Result<Decoded, ProtocolError> {
    if frame.len() < 8 {
        return Err(ProtocolError::BadLength(frame.len() as i32));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(key).map_err(|_| ProtocolError::UnknownApi(key))?;
    if !apis::supports(api, version) {
        if api == ApiKey::ApiVersions && version > 0 {
            return Ok(Decoded::ApiVersionsFallback { correlation_id });
        }
        return Err(ProtocolError::UnsupportedVersion { api, version });
    }
    let malformed = |e: anyhow::Error| ProtocolError::Malformed {
        api,
        version,
        reason: e.to_string(),
    };
    let header = decode_request_header_from_buffer(&mut frame).map_err(malformed)?;
    let body = RequestKind::decode(api, &mut frame, version).map_err(malformed)?;
    Ok(Decoded::Request(Box::new(Request {
        api,
        header,
        body,
        peer: None,
    })))
}

/// Encodes a response frame (length prefix included).
pub fn encode_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut buf, api.response_header_version(version))?;
    body.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// The v0 ApiVersions response with `UNSUPPORTED_VERSION`, for clients that asked for a newer
/// version than the broker speaks.
pub fn api_versions_fallback(correlation_id: i32) -> anyhow::Result<Bytes> {
    let body = ApiVersionsResponse::default()
        .with_error_code(kafka_protocol::ResponseError::UnsupportedVersion.code())
        .with_api_keys(apis::advertised());
    encode_response(
        ApiKey::ApiVersions,
        0,
        correlation_id,
        &ResponseKind::ApiVersions(body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_wait_for_all_bytes_and_refuse_huge_prefixes() {
        let mut b = BytesMut::from(&[0u8, 0, 0, 10, 1, 2][..]);
        assert_eq!(next_frame(&mut b, 1024).unwrap(), None);
        b.extend_from_slice(&[0; 8]);
        let f = next_frame(&mut b, 1024).unwrap().unwrap();
        assert_eq!(f.len(), 10);
        assert!(b.is_empty());
        let mut huge = BytesMut::from(&0x7fff_ffffi32.to_be_bytes()[..]);
        assert!(matches!(
            next_frame(&mut huge, 1 << 20),
            Err(ProtocolError::TooLarge { .. })
        ));
        let mut neg = BytesMut::from(&(-5i32).to_be_bytes()[..]);
        assert_eq!(
            next_frame(&mut neg, 1 << 20),
            Err(ProtocolError::BadLength(-5))
        );
    }

    #[test]
    fn unknown_and_unsupported_requests_are_refused() {
        let frame = Bytes::from_static(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1]);
        assert!(matches!(
            decode_request(frame),
            Err(ProtocolError::UnknownApi(0x7f00))
        ));
        // ApiVersions v99: the fallback.
        let frame = Bytes::from_static(&[0, 18, 0, 99, 0, 0, 0, 7]);
        assert!(matches!(
            decode_request(frame),
            Ok(Decoded::ApiVersionsFallback { correlation_id: 7 })
        ));
        // Produce v99: refused.
        let frame = Bytes::from_static(&[0, 0, 0, 99, 0, 0, 0, 7]);
        assert!(matches!(
            decode_request(frame),
            Err(ProtocolError::UnsupportedVersion { .. })
        ));
        // Metadata v1 with a truncated header.
        let frame = Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 7, 0]);
        assert!(matches!(
            decode_request(frame),
            Err(ProtocolError::Malformed { .. })
        ));
    }
}
