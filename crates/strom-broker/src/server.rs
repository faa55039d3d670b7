//! The TCP server: accepts connections and runs one task per connection.
//!
//! A connection reads frames, handles them one at a time and writes each response before
//! handling the next request, so pipelined requests are answered in order (as Kafka does).
//! Anything that is not a valid request closes that connection only, with one log line naming
//! the client. Shutdown stops accepting, lets every connection finish the request it is
//! handling, then flushes the logs and marks them clean.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::{Broker, Reply};
use crate::error::Result;
use crate::protocol::{self, Decoded};

/// A bound listener, ready to [`Server::run`].
#[derive(Debug)]
pub struct Server {
    broker: Arc<Broker>,
    listener: TcpListener,
}

impl Server {
    /// Binds the broker's listen address.
    pub async fn bind(broker: Arc<Broker>) -> Result<Self> {
        let listener = TcpListener::bind(broker.config().listen).await?;
        if broker.config().advertised.is_none() {
            let addr = listener.local_addr()?;
            broker.set_advertised(addr.ip().to_string(), addr.port() as i32);
        }
        Ok(Server { broker, listener })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` completes, then drains connections and closes the logs cleanly.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        self.broker.join_cluster().await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        // The group coordinator's clock: session expiry and rebalance deadlines.
        let ticker = {
            let broker = self.broker.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(100));
                loop {
                    every.tick().await;
                    broker.groups().tick();
                }
            })
        };
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let broker = self.broker.clone();
                        let stop = stop_rx.clone();
                        conns.spawn(async move { serve(broker, stream, peer, stop).await });
                    }
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                () = &mut shutdown => break,
            }
        }
        if let Some(node) = self.broker.cluster() {
            // Controlled shutdown: leaderships move to in-sync peers while clients can still
            // be told so.
            node.controlled_shutdown(Duration::from_secs(10)).await;
        }
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        ticker.abort();
        // Requests parked in JoinGroup/SyncGroup would otherwise hold their connection open.
        self.broker.groups().release_parked();
        drop(self.listener);
        let _ = stop_tx.send(true);
        let drain = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            tracing::warn!("connections did not finish within 10 s; closing them");
            conns.abort_all();
        }
        if let Some(node) = self.broker.cluster() {
            node.shutdown().await;
        }
        let broker = self.broker.clone();
        tokio::task::spawn_blocking(move || broker.shutdown())
            .await
            .map_err(|e| crate::Error::Internal(e.to_string()))??;
        tracing::info!("logs flushed and closed cleanly");
        Ok(())
    }
}

async fn serve(
    broker: Arc<Broker>,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let max = broker.config().max_request_size;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            let frame = match protocol::next_frame(&mut buf, max) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, "closing connection: {e}");
                    return;
                }
            };
            let out = match protocol::decode_request(frame) {
                Ok(Decoded::Request(mut req)) => {
                    req.peer = Some(peer);
                    let (api, version, corr) = (
                        req.api,
                        req.header.request_api_version,
                        req.header.correlation_id,
                    );
                    match broker.handle(*req).await {
                        Reply::Respond(resp) => {
                            protocol::encode_response(api, version, corr, &resp)
                        }
                        Reply::Nothing => continue,
                        Reply::Close => {
                            tracing::debug!(%peer, "closing connection after a failed acks=0 produce");
                            return;
                        }
                    }
                }
                Ok(Decoded::ApiVersionsFallback { correlation_id }) => {
                    protocol::api_versions_fallback(correlation_id)
                }
                Err(e) => {
                    tracing::warn!(%peer, "closing connection: {e}");
                    return;
                }
            };
            let bytes = match out {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(%peer, "encoding a response failed (a bug): {e}");
                    return;
                }
            };
            if let Err(e) = stream.write_all(&bytes).await {
                tracing::debug!(%peer, "write failed: {e}");
                return;
            }
        }
        tokio::select! {
            n = stream.read_buf(&mut buf) => match n {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(%peer, "read failed: {e}");
                    return;
                }
            },
            _ = stop.changed() => return,
        }
    }
}
