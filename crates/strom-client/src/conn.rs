//! One TCP connection to one broker.
//!
//! ```text
//!  callers ──Outgoing──▶ writer task ──frames──▶ socket ──frames──▶ reader task ──▶ oneshot replies
//!                             │                                        ▲
//!                             └── pending (correlation id, reply) ─────┘  (FIFO: Kafka answers in order)
//! ```
//!
//! Requests are pipelined: many may be outstanding on one connection, and the writer coalesces
//! frames that arrive together into one `write`. The connection negotiates API versions once, on
//! connect, and every request is sent at the highest version both sides support.

use std::collections::{HashMap, VecDeque};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// Largest response frame accepted (a broker answering more is broken or hostile).
const MAX_RESPONSE: i32 = 512 << 20;

struct Pending {
    correlation: i32,
    header_version: i16,
    reply: oneshot::Sender<Result<Bytes>>,
}

struct Outgoing {
    frame: Bytes,
    pending: Option<Pending>,
}

/// State shared by the two tasks: the replies owed, in request order.
#[derive(Default)]
struct Inflight {
    dead: bool,
    queue: VecDeque<Pending>,
}

/// A live connection; cheap to share behind an `Arc`.
pub struct Connection {
    addr: String,
    client_id: StrBytes,
    tx: mpsc::UnboundedSender<Outgoing>,
    inflight: Arc<Mutex<Inflight>>,
    alive: Arc<AtomicBool>,
    correlation: AtomicI32,
    versions: HashMap<i16, (i16, i16)>,
    request_timeout: Duration,
    tasks: [tokio::task::AbortHandle; 2],
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn fail_all(inflight: &Mutex<Inflight>, alive: &AtomicBool, addr: &str) {
    alive.store(false, Ordering::Release);
    let drained: Vec<Pending> = {
        let mut g = inflight.lock();
        g.dead = true;
        g.queue.drain(..).collect()
    };
    for p in drained {
        let _ = p.reply.send(Err(Error::Disconnected(addr.to_string())));
    }
}

impl Connection {
    /// Connects to `addr`, negotiates API versions and returns the ready connection.
    pub async fn connect(
        addr: &str,
        client_id: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Connection> {
        let unreachable = |reason: String| Error::Unreachable {
            address: addr.to_string(),
            reason,
        };
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable(format!("no answer within {connect_timeout:?}"))),
        };
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let inflight = Arc::new(Mutex::new(Inflight::default()));
        let alive = Arc::new(AtomicBool::new(true));
        let writer = tokio::spawn(write_loop(
            wr,
            rx,
            inflight.clone(),
            alive.clone(),
            addr.to_string(),
        ));
        let reader = tokio::spawn(read_loop(
            rd,
            inflight.clone(),
            alive.clone(),
            addr.to_string(),
        ));
        let mut conn = Connection {
            addr: addr.to_string(),
            client_id: StrBytes::from_string(client_id.to_string()),
            tx,
            inflight,
            alive,
            correlation: AtomicI32::new(0),
            versions: HashMap::new(),
            request_timeout,
            tasks: [writer.abort_handle(), reader.abort_handle()],
        };
        conn.versions = conn.negotiate().await?;
        Ok(conn)
    }

    async fn negotiate(&self) -> Result<HashMap<i16, (i16, i16)>> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("strom-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        // A broker that does not know v3 answers in v0 with UNSUPPORTED_VERSION; ask again in v0.
        let resp: ApiVersionsResponse = match self.send_raw(&req, 3).await {
            Ok(r) if r.error_code == 0 => r,
            Ok(_) | Err(Error::Protocol(_)) => {
                self.send_raw(&ApiVersionsRequest::default(), 0).await?
            }
            Err(e) => return Err(e),
        };
        crate::error::check(resp.error_code, || {
            format!("ApiVersions from {}", self.addr)
        })?;
        Ok(resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect())
    }

    /// The broker's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection still works.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// The highest version of `R` in `ours` that the broker supports.
    pub fn version<R: Request>(&self, ours: RangeInclusive<i16>) -> Result<i16> {
        let name = ApiKey::try_from(R::KEY)
            .map_or_else(|_| format!("api {}", R::KEY), |k| format!("{k:?}"));
        let (min, max) = self
            .versions
            .get(&R::KEY)
            .copied()
            .ok_or_else(|| Error::Unsupported(format!("{name} (broker {})", self.addr)))?;
        let v = (*ours.end()).min(max);
        if v < *ours.start() || v < min {
            return Err(Error::Unsupported(format!(
                "{name} versions {}..={} (broker {} offers {min}..={max})",
                ours.start(),
                ours.end(),
                self.addr
            )));
        }
        Ok(v)
    }

    /// Sends `req` at the best version in `ours` and waits for the response.
    pub async fn send<R: Request>(
        &self,
        req: &R,
        ours: RangeInclusive<i16>,
    ) -> Result<(i16, R::Response)> {
        let v = self.version::<R>(ours)?;
        Ok((v, self.send_raw(req, v).await?))
    }

    /// Encodes the request frame (length prefix, header, body).
    fn frame<R: Request>(&self, req: &R, version: i16) -> Result<(i32, Bytes)> {
        let correlation = self.correlation.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(self.client_id.clone()));
        let mut buf = BytesMut::with_capacity(128);
        buf.put_i32(0);
        let enc =
            |e: anyhow::Error| Error::Internal(format!("encoding api {} v{version}: {e}", R::KEY));
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(enc)?;
        req.encode(&mut buf, version).map_err(enc)?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok((correlation, buf.freeze()))
    }

    /// Sends `req` at exactly `version` and waits for its response.
    pub async fn send_raw<R: Request>(&self, req: &R, version: i16) -> Result<R::Response> {
        self.send_raw_within(req, version, self.request_timeout)
            .await
    }

    /// As [`Connection::send_raw`] with its own timeout (JoinGroup waits for a whole group).
    pub async fn send_raw_within<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response> {
        self.enqueue_within(req, version, timeout)?.await
    }

    /// Puts the request on the wire queue now and returns a future for its response: requests
    /// enqueued one after the other reach the broker in that order (the producer relies on it).
    pub fn enqueue<R: Request>(
        &self,
        req: &R,
        version: i16,
    ) -> Result<impl std::future::Future<Output = Result<R::Response>> + Send + 'static> {
        self.enqueue_within(req, version, self.request_timeout)
    }

    fn enqueue_within<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<impl std::future::Future<Output = Result<R::Response>> + Send + 'static> {
        let (correlation, frame) = self.frame(req, version)?;
        let (reply, rx) = oneshot::channel();
        let header_version = <R::Response as HeaderVersion>::header_version(version);
        let out = Outgoing {
            frame,
            pending: Some(Pending {
                correlation,
                header_version,
                reply,
            }),
        };
        if !self.is_alive() || self.tx.send(out).is_err() {
            return Err(Error::Disconnected(self.addr.clone()));
        }
        let addr = self.addr.clone();
        let inflight = self.inflight.clone();
        let alive = self.alive.clone();
        let tasks = self.tasks.clone();
        Ok(async move {
            let body = match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(r)) => r?,
                Ok(Err(_)) => return Err(Error::Disconnected(addr)),
                Err(_) => {
                    // Responses come in order: one that never arrives blocks all later ones.
                    for t in &tasks {
                        t.abort();
                    }
                    fail_all(&inflight, &alive, &addr);
                    return Err(Error::Timeout {
                        what: format!("request (api {}) to {addr}", R::KEY),
                        after: timeout,
                    });
                }
            };
            let mut body = body;
            R::Response::decode(&mut body, version).map_err(|e| {
                Error::Protocol(format!(
                    "undecodable response to api {} v{version} from {addr}: {e}",
                    R::KEY
                ))
            })
        })
    }

    /// Sends a request that gets no response (Produce with acks=0).
    pub fn send_oneway<R: Request>(&self, req: &R, version: i16) -> Result<()> {
        let (_, frame) = self.frame(req, version)?;
        if !self.is_alive()
            || self
                .tx
                .send(Outgoing {
                    frame,
                    pending: None,
                })
                .is_err()
        {
            return Err(Error::Disconnected(self.addr.clone()));
        }
        Ok(())
    }

    /// Closes the connection; outstanding requests fail with [`Error::Disconnected`].
    pub fn close(&self) {
        for t in &self.tasks {
            t.abort();
        }
        fail_all(&self.inflight, &self.alive, &self.addr);
    }
}

async fn write_loop(
    wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    inflight: Arc<Mutex<Inflight>>,
    alive: Arc<AtomicBool>,
    addr: String,
) {
    let mut wr = BufWriter::with_capacity(256 << 10, wr);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(out) = next.take() {
            if let Some(p) = out.pending {
                let mut g = inflight.lock();
                if g.dead {
                    drop(g);
                    let _ = p.reply.send(Err(Error::Disconnected(addr.clone())));
                    return;
                }
                g.queue.push_back(p);
            }
            if wr.write_all(&out.frame).await.is_err() {
                fail_all(&inflight, &alive, &addr);
                return;
            }
            next = rx.try_recv().ok();
        }
        if wr.flush().await.is_err() {
            fail_all(&inflight, &alive, &addr);
            return;
        }
    }
}

async fn read_loop(
    rd: tokio::net::tcp::OwnedReadHalf,
    inflight: Arc<Mutex<Inflight>>,
    alive: Arc<AtomicBool>,
    addr: String,
) {
    let mut rd = tokio::io::BufReader::with_capacity(256 << 10, rd);
    while let Ok(n) = rd.read_i32().await {
        if !(4..=MAX_RESPONSE).contains(&n) {
            tracing::warn!(broker = %addr, len = n, "response frame length out of range; closing");
            break;
        }
        let mut buf = BytesMut::zeroed(n as usize);
        if rd.read_exact(&mut buf).await.is_err() {
            break;
        }
        let mut body = buf.freeze();
        let Some(p) = inflight.lock().queue.pop_front() else {
            tracing::warn!(broker = %addr, "response without a request; closing");
            break;
        };
        match ResponseHeader::decode(&mut body, p.header_version) {
            Ok(h) if h.correlation_id == p.correlation => {
                let _ = p.reply.send(Ok(body));
            }
            Ok(h) => {
                let _ = p.reply.send(Err(Error::Protocol(format!(
                    "{addr} answered correlation id {} where {} was due",
                    h.correlation_id, p.correlation
                ))));
                break;
            }
            Err(e) => {
                let _ = p.reply.send(Err(Error::Protocol(format!(
                    "bad response header from {addr}: {e}"
                ))));
                break;
            }
        }
    }
    fail_all(&inflight, &alive, &addr);
}
