//! ApiVersions: the advertised table, and the v0 fallback for versions the broker does not know.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use bytes::Buf;
use common::{RawClient, TestBroker};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, StrBytes};

#[tokio::test]
async fn advertises_exactly_what_is_implemented() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    for version in 0..=3 {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("test"))
            .with_client_software_version(StrBytes::from_static_str("1"));
        let resp = c.call(&req, version).await;
        assert_eq!(resp.error_code, 0);
        let produce = resp
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Produce as i16)
            .unwrap();
        assert_eq!((produce.min_version, produce.max_version), (3, 9));
        assert_eq!(resp.api_keys.len(), strom::broker::apis::SUPPORTED.len());
        // Nothing unimplemented is advertised: no transactions yet.
        let has = |api: ApiKey| resp.api_keys.iter().any(|k| k.api_key == api as i16);
        assert!(!has(ApiKey::AddPartitionsToTxn));
        assert!(has(ApiKey::JoinGroup));
    }
    b.stop().await;
}

#[tokio::test]
async fn newer_version_gets_a_v0_answer_listing_versions() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    // ApiVersions v4 (the broker speaks up to v3): header v2, body in v3+ layout.
    let raw: Vec<u8> = {
        let mut v = vec![0, 18, 0, 4, 0, 0, 0, 42, 0, 4];
        v.extend_from_slice(b"test");
        v.push(0); // header tagged fields
        v.extend_from_slice(&[5, b'r', b'u', b's', b't', 2, b'1', 0]);
        let mut f = (v.len() as i32).to_be_bytes().to_vec();
        f.extend(v);
        f
    };
    c.send_raw(&raw).await;
    let mut body = c.read_frame().await.unwrap();
    assert_eq!(body.get_i32(), 42, "correlation id");
    let resp = ApiVersionsResponse::decode(&mut body, 0).unwrap();
    assert_eq!(resp.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(resp
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::ApiVersions as i16 && k.max_version == 3));
    b.stop().await;
}
