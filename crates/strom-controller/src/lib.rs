//! Strom's metadata quorum, in place of ZooKeeper (as Kafka's KRaft).
//!
//! The cluster's metadata — registered brokers and their fencing, topics with ids and configs,
//! every partition's replicas, leader, leader epoch, ISR and partition epoch, producer-id
//! blocks — is a replicated state machine: commands are appended to a Raft log kept by the
//! controller nodes (openraft), and every node applies the same commands in the same order to
//! the same [`Image`]. The Raft leader is the *active controller*: brokers send it their
//! registrations, heartbeats and change requests; it fences brokers that go silent, which moves
//! their leaderships to in-sync replicas.
//!
//! - [`image`]: the state machine itself, pure and deterministic (placement, elections, ISR
//!   rules), tested without IO.
//! - [`store`]: openraft storage on disk (log, vote, snapshots) and the state machine adapter
//!   that publishes each new image.
//! - [`rpc`]: the controller listener's framing, openraft's network, and [`QuorumClient`],
//!   the brokers' way to the active controller.
//! - [`node`]: a controller node: Raft, its listener, and the active controller's duties.
//!
//! Data replication itself (followers fetching from leaders, the high watermark) is the
//! broker's job; this crate only decides who leads and who is in sync.

pub mod image;
pub mod node;
pub mod rpc;
pub mod store;

pub use image::{BrokerInfo, Command, Image, NewTopic, Outcome, PartitionInfo, Refusal, TopicInfo};
pub use node::{Controller, ControllerConfig};
pub use rpc::{Heartbeat, HeartbeatReply, QuorumClient};

/// What went wrong, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operator's configuration is wrong.
    #[error("{0}")]
    Config(String),
    /// The metadata directory could not be read or written.
    #[error("metadata storage: {0}")]
    Storage(String),
    /// A peer could not be reached or sent something malformed.
    #[error("controller peer: {0}")]
    Peer(String),
    /// No active controller answered in time.
    #[error("no active controller: {0}")]
    Unavailable(String),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Parses `1@host:port,2@host:port,...` (Kafka's `controller.quorum.voters`).
pub fn parse_quorum(s: &str) -> Result<Vec<(i32, String)>, Error> {
    let mut out: Vec<(i32, String)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('@').ok_or_else(|| {
            Error::Config(format!(
                "controller quorum entry {part:?} must be ID@HOST:PORT"
            ))
        })?;
        let id: i32 = id
            .parse()
            .map_err(|_| Error::Config(format!("controller quorum entry {part:?}: bad node id")))?;
        if id < 0 {
            return Err(Error::Config(format!(
                "controller quorum entry {part:?}: negative node id"
            )));
        }
        let (_, port) = addr.rsplit_once(':').ok_or_else(|| {
            Error::Config(format!(
                "controller quorum entry {part:?} must be ID@HOST:PORT"
            ))
        })?;
        port.parse::<u16>()
            .map_err(|_| Error::Config(format!("controller quorum entry {part:?}: bad port")))?;
        if out.iter().any(|(i, _)| *i == id) {
            return Err(Error::Config(format!(
                "controller quorum lists node {id} twice"
            )));
        }
        out.push((id, addr.to_string()));
    }
    if out.is_empty() {
        return Err(Error::Config("the controller quorum is empty".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn quorum_strings() {
        assert_eq!(
            parse_quorum("1@127.0.0.1:9093, 2@h:9193").unwrap(),
            vec![(1, "127.0.0.1:9093".to_string()), (2, "h:9193".to_string())]
        );
        for bad in [
            "",
            "1",
            "x@h:1",
            "1@h",
            "1@h:70000",
            "1@h:1,1@h:2",
            "-1@h:1",
        ] {
            assert!(parse_quorum(bad).is_err(), "{bad}");
        }
    }
}
