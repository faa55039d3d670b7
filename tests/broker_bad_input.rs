//! Bad bytes on the wire: every test checks that the offending connection gets the right answer
//! or is closed, and that clients on other connections keep being served.
//!
//! Inputs that may bring the whole process down (huge array lengths, random frames) are sent to
//! a `strom server` child process, so a crash fails that test with the input that caused it
//! instead of aborting the test binary. `STROM_TEST_BIN=/path/to/strom` points them at another
//! build; `STROM_FUZZ_SEED=n` replays a random run.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use common::{free_port, strom_bin, RawClient, TestBroker};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, MetadataRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---- helpers ---------------------------------------------------------------------------------

/// A frame: length prefix + `body`.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// A request header (v1 layout: key, version, correlation id, client id) followed by `body`;
/// for flexible versions (header v2) an empty tagged-field section follows the client id.
fn request(key: i16, version: i16, corr: i32, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i16(key);
    b.put_i16(version);
    b.put_i32(corr);
    b.put_i16(4);
    b.put_slice(b"test");
    let flexible = ApiKey::try_from(key).is_ok_and(|k| k.request_header_version(version) >= 2);
    if flexible {
        b.put_u8(0);
    }
    b.put_slice(body);
    framed(&b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads until the broker closes the connection; fails if it answers or keeps it open.
async fn expect_closed(c: &mut RawClient, what: &str) {
    let mut buf = [0u8; 256];
    let start = Instant::now();
    match tokio::time::timeout(Duration::from_secs(2), c.stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!(
            "{what}: expected the connection to be closed, got {n} bytes: {}",
            hex(&buf[..n])
        ),
        Err(_) => panic!("{what}: connection still open after {:?}", start.elapsed()),
    }
}

/// A well-behaved client gets a Metadata answer.
async fn metadata_works(c: &mut RawClient) {
    let r = c
        .call(&MetadataRequest::default().with_topics(None), 12)
        .await;
    assert_eq!(r.brokers.len(), 1, "{r:?}");
    assert_eq!(r.error_code, 0);
}

/// Checks a fresh connection and `existing` both still work.
async fn still_serving(addr: SocketAddr, existing: &mut RawClient) {
    metadata_works(existing).await;
    let mut fresh = RawClient::connect(addr).await;
    metadata_works(&mut fresh).await;
}

/// splitmix64: a small seeded generator (the seed is printed so a failure can be replayed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn seed() -> u64 {
    std::env::var("STROM_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// `strom server` in a child process, with its stderr kept in a file for crash reports.
struct ChildBroker {
    child: Child,
    addr: SocketAddr,
    stderr_path: std::path::PathBuf,
}

impl ChildBroker {
    fn start(dir: &std::path::Path) -> Self {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let stderr_path = dir.join("broker.stderr");
        let data = dir.join("data");
        // STROM_TEST_BIN runs these tests against another build of `strom`.
        let bin = std::env::var_os("STROM_TEST_BIN").map_or_else(strom_bin, Into::into);
        let child = Command::new(bin)
            .args(["server", "--listen", &addr.to_string(), "--data-dir"])
            .arg(&data)
            .env("STROM_SQL_LISTEN", "off")
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "strom server did not start on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        ChildBroker {
            child,
            addr,
            stderr_path,
        }
    }

    /// `Some(description)` if the broker process has exited.
    fn died(&mut self) -> Option<String> {
        let status = self.child.try_wait().unwrap()?;
        let mut err = String::new();
        let _ = std::fs::File::open(&self.stderr_path).and_then(|mut f| f.read_to_string(&mut err));
        let tail: String = err
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        Some(format!(
            "broker process exited with {status}; stderr ends with:\n{tail}"
        ))
    }

    /// Waits briefly for the process to exit (a crash may lag the close of the socket).
    async fn died_within(&mut self, d: Duration) -> Option<String> {
        let end = Instant::now() + d;
        loop {
            if let Some(s) = self.died() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `d` for the broker to react (answer or close); true if it closed.
async fn drain(stream: &mut tokio::net::TcpStream, d: Duration) -> bool {
    let mut buf = [0u8; 4096];
    matches!(
        tokio::time::timeout(d, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

// ---- in-process tests ------------------------------------------------------------------------

#[tokio::test]
async fn garbage_bytes_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut good = RawClient::connect(b.addr).await;
    metadata_works(&mut good).await;

    // Someone speaking HTTP or TLS to the Kafka port: the "length" is > max-request-size.
    let tls_hello = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    for (what, bytes) in [
        (
            "HTTP",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        ("TLS ClientHello", tls_hello.to_vec()),
    ] {
        let mut bad = RawClient::connect(b.addr).await;
        bad.send_raw(&bytes).await;
        expect_closed(&mut bad, what).await;
        still_serving(b.addr, &mut good).await;
    }

    // Seeded random garbage, then the client stops sending: whatever the bytes announced, the
    // broker must not answer, and must close once the client is done.
    let seed = seed();
    eprintln!("garbage seed {seed} (replay with STROM_FUZZ_SEED={seed})");
    let mut rng = Rng(seed);
    for round in 0..20 {
        let n = 1 + rng.below(300) as usize;
        let bytes = rng.bytes(n);
        let mut bad = RawClient::connect(b.addr).await;
        bad.send_raw(&bytes).await;
        bad.stream.shutdown().await.unwrap();
        expect_closed(
            &mut bad,
            &format!("seed {seed} round {round}: {}", hex(&bytes)),
        )
        .await;
    }
    still_serving(b.addr, &mut good).await;
    b.stop().await;
}

#[tokio::test]
async fn a_truncated_frame_then_the_client_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut good = RawClient::connect(b.addr).await;
    let (_, whole) = good.frame(&MetadataRequest::default().with_topics(None), 12);
    for cut in [1, 3, 4, 6, 12, whole.len() - 1] {
        // The client vanishes mid-frame.
        let mut bad = RawClient::connect(b.addr).await;
        bad.send_raw(&whole[..cut]).await;
        drop(bad);
        // The client half-closes mid-frame: no answer to half a request, and the broker
        // closes its side.
        let mut bad = RawClient::connect(b.addr).await;
        bad.send_raw(&whole[..cut]).await;
        bad.stream.shutdown().await.unwrap();
        expect_closed(&mut bad, &format!("truncated after {cut} bytes")).await;
        still_serving(b.addr, &mut good).await;
    }
    b.stop().await;
}

#[tokio::test]
async fn a_two_gib_length_prefix_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut good = RawClient::connect(b.addr).await;
    for prefix in [0x7fff_ffffi32, 100 * 1024 * 1024 + 1] {
        let mut bad = RawClient::connect(b.addr).await;
        let start = Instant::now();
        // The prefix and the start of a plausible request, and then nothing: the broker must
        // not wait for (or allocate) the announced bytes.
        let mut bytes = prefix.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0, 3, 0, 12, 0, 0, 0, 1]);
        bad.send_raw(&bytes).await;
        expect_closed(&mut bad, &format!("length prefix {prefix:#x}")).await;
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "closing took {:?}",
            start.elapsed()
        );
        still_serving(b.addr, &mut good).await;
    }
    b.stop().await;
}

#[tokio::test]
async fn max_request_size_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| c.max_request_size = 4096).await;
    let mut good = RawClient::connect(b.addr).await;
    // 4097 announced: refused before the body arrives.
    let mut bad = RawClient::connect(b.addr).await;
    bad.send_raw(&4097i32.to_be_bytes()).await;
    expect_closed(&mut bad, "4097-byte frame with max-request-size 4096").await;
    // Exactly 4096 is accepted: an ApiVersions v0 request padded to 4096 bytes.
    let mut body = vec![0, 18, 0, 0, 0, 0, 0, 9, 0, 4];
    body.extend_from_slice(b"test");
    body.resize(4096, 0);
    let mut ok = RawClient::connect(b.addr).await;
    ok.send_raw(&framed(&body)).await;
    let resp = ok
        .read_frame()
        .await
        .expect("a 4096-byte request is answered");
    assert_eq!(&resp[..4], &9i32.to_be_bytes());
    still_serving(b.addr, &mut good).await;
    b.stop().await;
}

#[tokio::test]
async fn negative_and_tiny_lengths_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut good = RawClient::connect(b.addr).await;
    for len in [-1i32, -8, i32::MIN, 0, 1, 7] {
        let mut bad = RawClient::connect(b.addr).await;
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0, 18, 0, 0, 0, 0, 0, 1, 0, 0]);
        bad.send_raw(&bytes).await;
        expect_closed(&mut bad, &format!("length {len}")).await;
        still_serving(b.addr, &mut good).await;
    }
    b.stop().await;
}

#[tokio::test]
async fn unknown_api_keys_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut good = RawClient::connect(b.addr).await;
    // 999 and -1 are no API; 11 (JoinGroup) and 9 (OffsetFetch) exist but are not implemented.
    for key in [999i16, -1, i16::MAX, 11, 9] {
        let mut bad = RawClient::connect(b.addr).await;
        bad.send_raw(&request(key, 0, 5, &[0, 0, 0, 0])).await;
        expect_closed(&mut bad, &format!("api key {key}")).await;
        still_serving(b.addr, &mut good).await;
    }
    b.stop().await;
}

#[tokio::test]
async fn unsupported_versions_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut good = RawClient::connect(b.addr).await;
    for (api, version) in [
        (ApiKey::Produce, 99),
        (ApiKey::Fetch, 99),
        (ApiKey::Produce, 2), // below the supported minimum (3)
        (ApiKey::Fetch, 13),  // the codec knows it, the broker does not
        (ApiKey::Metadata, 13),
        (ApiKey::ListOffsets, 0),
        (ApiKey::Produce, -1),
    ] {
        let mut bad = RawClient::connect(b.addr).await;
        bad.send_raw(&request(api as i16, version, 5, &[0; 16]))
            .await;
        expect_closed(&mut bad, &format!("{api:?} v{version}")).await;
        still_serving(b.addr, &mut good).await;
    }
    b.stop().await;
}

#[tokio::test]
async fn a_valid_header_with_a_garbage_body_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut good = RawClient::connect(b.addr).await;
    // Bodies that cannot decode: lengths that point past the end, truncated fields, negative
    // array lengths. (Array lengths stay small here; see huge_array_lengths_* for large ones.)
    let cases: Vec<(ApiKey, i16, Vec<u8>)> = vec![
        // transactional id of 0x7fff bytes, 3 present
        (ApiKey::Produce, 3, vec![0x7f, 0xff, b'a', b'b', b'c']),
        // acks and timeout, then 2 topics of which nothing follows
        (
            ApiKey::Produce,
            3,
            vec![0xff, 0xff, 0, 1, 0, 0, 0x13, 0x88, 0, 0, 0, 2],
        ),
        // flexible: compact string of 100 bytes, 2 present
        (ApiKey::Produce, 9, vec![101, b'x', b'y']),
        // topics array length -5
        (ApiKey::Metadata, 1, vec![0xff, 0xff, 0xff, 0xfb]),
        // 3 topics, one truncated name
        (ApiKey::Metadata, 4, vec![0, 0, 0, 3, 0, 9, b'a']),
        // flexible: 2 topics, the first with a truncated uuid
        (ApiKey::Metadata, 12, vec![3, 1, 2, 3]),
        // only half of the fixed fields
        (ApiKey::Fetch, 4, vec![0xff, 0xff, 0xff, 0xff, 0, 0]),
        (
            ApiKey::Fetch,
            12,
            vec![0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0xf4, 0, 0, 0, 1],
        ),
        (
            ApiKey::ListOffsets,
            7,
            vec![0xff, 0xff, 0xff, 0xff, 0, 2, 1],
        ),
        (ApiKey::CreateTopics, 2, vec![0, 0, 0, 1, 0x7f]),
        (ApiKey::DeleteTopics, 6, vec![2, 0x80]),
        (ApiKey::InitProducerId, 4, vec![]),
        (ApiKey::DescribeConfigs, 1, vec![0, 0, 0, 1, 2, 0, 5]),
        (ApiKey::IncrementalAlterConfigs, 1, vec![2, 2, 0xff]),
        (ApiKey::DeleteRecords, 0, vec![0, 0, 0, 1, 0, 3, b't']),
        // a truncated request header: client id of 0x100 bytes, none present
        (ApiKey::ApiVersions, 0, vec![]),
    ];
    for (i, (api, version, body)) in cases.into_iter().enumerate() {
        let frame = if i == 15 {
            framed(&[0, 18, 0, 0, 0, 0, 0, 5, 1, 0])
        } else {
            request(api as i16, version, 5, &body)
        };
        let mut bad = RawClient::connect(b.addr).await;
        bad.send_raw(&frame).await;
        expect_closed(&mut bad, &format!("{api:?} v{version} {}", hex(&frame))).await;
        still_serving(b.addr, &mut good).await;
    }
    b.stop().await;
}

#[tokio::test]
async fn requests_before_a_bad_frame_are_still_answered() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    let (corr1, f1) = c.frame(&ApiVersionsRequest::default(), 0);
    let (corr2, f2) = c.frame(&MetadataRequest::default().with_topics(None), 1);
    let mut bytes = f1.to_vec();
    bytes.extend_from_slice(&f2);
    bytes.extend_from_slice(&request(999, 0, 77, &[]));
    c.send_raw(&bytes).await;
    let r1 = c.read_frame().await.expect("ApiVersions answered");
    assert_eq!(&r1[..4], &corr1.to_be_bytes());
    let r2 = c.read_frame().await.expect("Metadata answered");
    assert_eq!(&r2[..4], &corr2.to_be_bytes());
    expect_closed(&mut c, "api key 999 after two good requests").await;
    let mut good = RawClient::connect(b.addr).await;
    metadata_works(&mut good).await;
    b.stop().await;
}

// ---- child-process tests ---------------------------------------------------------------------

/// A request whose first array claims 2^31-1 (or 2^32-2) elements, with no element present.
/// Decoding must fail on the missing bytes; preallocating the claimed length aborts the process
/// ("memory allocation of N bytes failed") and takes every connection down with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_array_lengths_do_not_crash_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ChildBroker::start(dir.path());
    let mut good = RawClient::connect(broker.addr).await;
    metadata_works(&mut good).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "Metadata v1, topics array length 0x7fffffff",
            request(3, 1, 1, &[0x7f, 0xff, 0xff, 0xff]),
        ),
        (
            "Metadata v9, compact topics array length 0xffffffff-1",
            request(3, 9, 2, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ),
        (
            "Produce v3, topic_data array length 0x7fffffff",
            request(
                0,
                3,
                3,
                &[0xff, 0xff, 0, 1, 0, 0, 0x13, 0x88, 0x7f, 0xff, 0xff, 0xff],
            ),
        ),
        (
            "CreateTopics v2, topics array length 0x7fffffff",
            request(19, 2, 4, &[0x7f, 0xff, 0xff, 0xff]),
        ),
    ];
    let mut crashes = Vec::new();
    for (what, frame) in cases {
        if broker.died().is_some() {
            drop(broker);
            broker = ChildBroker::start(dir.path());
            good = RawClient::connect(broker.addr).await;
        }
        let mut bad = RawClient::connect(broker.addr).await;
        bad.send_raw(&frame).await;
        drain(&mut bad.stream, Duration::from_secs(2)).await;
        if let Some(how) = broker.died_within(Duration::from_millis(300)).await {
            crashes.push(format!("{what}: frame {} -> {how}", hex(&frame)));
            continue;
        }
        metadata_works(&mut good).await;
    }
    assert!(
        crashes.is_empty(),
        "the broker process died on {} of the inputs:\n{}",
        crashes.len(),
        crashes.join("\n")
    );
}

/// 200 random frames with valid length prefixes (and mostly valid headers for implemented APIs,
/// so the body decoders are exercised); the broker process must survive all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_frames_never_crash_the_broker() {
    let seed = seed();
    eprintln!("random frames: seed {seed} (replay with STROM_FUZZ_SEED={seed})");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ChildBroker::start(dir.path());
    let mut good = RawClient::connect(broker.addr).await;
    metadata_works(&mut good).await;
    let supported = strom::broker::apis::SUPPORTED;
    for round in 0..200 {
        let (key, version) = match rng.below(10) {
            0..=6 => {
                let (api, lo, hi) = supported[rng.below(supported.len() as u64) as usize];
                let v = if rng.below(5) == 0 {
                    rng.below(20) as i16
                } else {
                    lo + rng.below((hi - lo + 1) as u64) as i16
                };
                (api as i16, v)
            }
            7 => (rng.below(90) as i16, rng.below(20) as i16),
            _ => (rng.next() as i16, rng.next() as i16),
        };
        let body_len = rng.below(80) as usize;
        let body = rng.bytes(body_len);
        let frame = if rng.below(4) == 0 {
            // header fields after key and version random too
            let mut v = Vec::new();
            v.extend_from_slice(&key.to_be_bytes());
            v.extend_from_slice(&version.to_be_bytes());
            v.extend_from_slice(&rng.bytes(4 + body_len));
            framed(&v)
        } else {
            request(key, version, round, &body)
        };
        let mut c = match tokio::net::TcpStream::connect(broker.addr).await {
            Ok(c) => c,
            Err(e) => panic!(
                "seed {seed} round {round}: cannot connect ({e}); {}",
                broker.died().unwrap_or_default()
            ),
        };
        let _ = c.write_all(&frame).await;
        drain(&mut c, Duration::from_millis(300)).await;
        if let Some(how) = broker.died_within(Duration::from_millis(100)).await {
            panic!(
                "seed {seed} round {round}: the broker process died on api key {key} v{version}, \
                 frame (hex, length prefix included) {}\n{how}",
                hex(&frame)
            );
        }
    }
    metadata_works(&mut good).await;
    let mut fresh = RawClient::connect(broker.addr).await;
    metadata_works(&mut fresh).await;
    assert!(broker.died().is_none());
}
