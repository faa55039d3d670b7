//! Embedded mode: Strom's broker and log inside the application process.
//!
//! [`Strom::embedded`] opens a log in a directory and serves it on a loopback port, so a
//! topology runs with nothing else started. The application talks to it through the same
//! Kafka-protocol client it would use against a cluster, which is what keeps a topology's
//! behaviour identical in both places: moving to a cluster changes only the bootstrap address.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use strom_broker::{Broker, BrokerConfig, Server};
use strom_client::{Admin, ClientConfig, NewTopic};

use crate::error::{Error, Result};

/// Entry point for embedded mode.
#[derive(Debug, Clone, Copy)]
pub struct Strom;

impl Strom {
    /// Starts a broker with its log in `dir` on a free loopback port.
    pub async fn embedded(dir: impl AsRef<Path>) -> Result<Embedded> {
        Embedded::start(dir.as_ref(), |_| {}).await
    }

    /// Like [`Strom::embedded`], with `tweak` changing the broker's settings first.
    pub async fn embedded_with(
        dir: impl AsRef<Path>,
        tweak: impl FnOnce(&mut BrokerConfig),
    ) -> Result<Embedded> {
        Embedded::start(dir.as_ref(), tweak).await
    }
}

/// A broker running inside this process (on the current tokio runtime).
pub struct Embedded {
    addr: SocketAddr,
    broker: Arc<Broker>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<strom_broker::Result<()>>>,
}

impl Embedded {
    /// Starts a broker with data in `dir`; `tweak` may change its settings.
    pub async fn start(dir: &Path, tweak: impl FnOnce(&mut BrokerConfig)) -> Result<Embedded> {
        let mut config = BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.to_path_buf(),
            // One process, one member per group at first: no reason to wait for more.
            group_initial_rebalance_delay_ms: 0,
            ..BrokerConfig::default()
        };
        tweak(&mut config);
        config.validate()?;
        let broker = tokio::task::spawn_blocking(move || Broker::open(config))
            .await
            .map_err(|e| Error::Internal(format!("opening the embedded log: {e}")))??;
        let broker = Arc::new(broker);
        broker.start_upkeep();
        let server = Server::bind(broker.clone()).await?;
        let addr = server.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Ok(Embedded {
            addr,
            broker,
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// The broker itself.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Creates topics with `partitions` partitions each (existing ones are left alone).
    pub async fn create_topics(&self, names: &[&str], partitions: i32) -> Result<()> {
        let admin = Admin::new(ClientConfig::new(&self.bootstrap())).await?;
        for name in names {
            if admin
                .describe_topic(name)
                .await
                .is_ok_and(|t| !t.partitions.is_empty())
            {
                continue;
            }
            admin
                .create_topics(&[NewTopic::new(*name, partitions)])
                .await?;
        }
        Ok(())
    }

    /// Stops serving, flushes the log and marks it clean.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.map_err(|e| Error::Internal(e.to_string()))??;
        }
        Ok(())
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
