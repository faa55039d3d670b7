//! A TCP proxy for tests that need a faulty network between a client and the broker.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy that loses some produce responses: it forwards each produce request to the
/// broker, then drops the connection instead of relaying the response, so the client retries a
/// batch the broker already appended.
pub async fn faulty_proxy(
    listen: TcpListener,
    broker: SocketAddr,
    max_drops: usize,
    dropped: Arc<AtomicUsize>,
) {
    let seen = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((client, _)) = listen.accept().await else {
            return;
        };
        let Ok(server) = TcpStream::connect(broker).await else {
            return;
        };
        let (dropped, seen) = (dropped.clone(), seen.clone());
        tokio::spawn(async move {
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let produce_ids: Arc<Mutex<HashSet<i32>>> = Arc::default();
            let ids = produce_ids.clone();
            let upstream = tokio::spawn(async move {
                loop {
                    let mut len = [0u8; 4];
                    if cr.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
                    if cr.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if body.len() >= 8 && i16::from_be_bytes([body[0], body[1]]) == 0 {
                        let corr = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                        ids.lock().unwrap().insert(corr);
                    }
                    if sw.write_all(&len).await.is_err() || sw.write_all(&body).await.is_err() {
                        return;
                    }
                }
            });
            loop {
                let mut len = [0u8; 4];
                if sr.read_exact(&mut len).await.is_err() {
                    break;
                }
                let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
                if sr.read_exact(&mut body).await.is_err() {
                    break;
                }
                let corr = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let is_produce = produce_ids.lock().unwrap().remove(&corr);
                if is_produce
                    && seen.fetch_add(1, Ordering::SeqCst) % 4 == 3
                    && dropped.fetch_add(1, Ordering::SeqCst) < max_drops
                {
                    break; // lose this response: close both directions
                }
                if cw.write_all(&len).await.is_err() || cw.write_all(&body).await.is_err() {
                    break;
                }
            }
            upstream.abort();
        });
    }
}

/// A TCP proxy that forwards both ways but can be paused: while `paused` is set it stops
/// relaying the broker's responses (requests still go through), like a broker that hangs.
pub async fn pausable_proxy(
    listen: TcpListener,
    broker: SocketAddr,
    paused: Arc<std::sync::atomic::AtomicBool>,
) {
    loop {
        let Ok((client, _)) = listen.accept().await else {
            return;
        };
        let Ok(server) = TcpStream::connect(broker).await else {
            return;
        };
        let paused = paused.clone();
        tokio::spawn(async move {
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let up = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
            });
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match sr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                // Bytes that arrive while paused are held until resumed.
                while paused.load(Ordering::SeqCst) {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                if cw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            up.abort();
        });
    }
}
