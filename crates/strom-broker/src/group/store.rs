//! `__consumer_offsets` records in Kafka's own formats, so Kafka tools can read the topic:
//!
//! | key (version) | value (version) |
//! | --- | --- |
//! | OffsetCommitKey (1): group, topic, partition | OffsetCommitValue (3): offset, leader epoch, metadata, commit timestamp |
//! | GroupMetadataKey (2): group | GroupMetadataValue (3): protocol type, generation, protocol, leader, timestamp, members |
//!
//! A null value is a tombstone. Strings are `i16` length + UTF-8, byte arrays `i32` length;
//! all integers big-endian. The topic is compacted, so the latest record per key is the state.

use bytes::{Buf, BufMut, Bytes};

use super::machine::{CommittedOffset, GroupSnapshot, MemberSnapshot, StoreRecord};

/// The internal topic.
pub const TOPIC: &str = "__consumer_offsets";

/// Kafka's partition for a group: `abs(groupId.hashCode) % partitions` with Java's string hash.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for u in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(u as i32);
    }
    (h & 0x7fff_ffff) % partitions.max(1)
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn put_nullable_str(b: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => b.put_i16(-1),
        Some(s) => put_str(b, s),
    }
}

fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

/// Encodes a record as (key, value).
pub fn encode(r: &StoreRecord) -> (Vec<u8>, Option<Vec<u8>>) {
    match r {
        StoreRecord::Offset {
            group,
            topic,
            partition,
            value,
        } => {
            let mut k = Vec::new();
            k.put_i16(1);
            put_str(&mut k, group);
            put_str(&mut k, topic);
            k.put_i32(*partition);
            let v = value.as_ref().map(|o| {
                let mut v = Vec::new();
                v.put_i16(3);
                v.put_i64(o.offset);
                v.put_i32(o.leader_epoch);
                put_str(&mut v, &o.metadata);
                v.put_i64(o.commit_timestamp as i64);
                v
            });
            (k, v)
        }
        StoreRecord::Group { group, value } => {
            let mut k = Vec::new();
            k.put_i16(2);
            put_str(&mut k, group);
            let v = value.as_ref().map(|g| {
                let mut v = Vec::new();
                v.put_i16(3);
                put_str(&mut v, &g.protocol_type);
                v.put_i32(g.generation);
                put_nullable_str(&mut v, g.protocol.as_deref());
                put_nullable_str(&mut v, g.leader.as_deref());
                v.put_i64(g.timestamp as i64);
                v.put_i32(g.members.len() as i32);
                for m in &g.members {
                    put_str(&mut v, &m.member_id);
                    put_nullable_str(&mut v, m.instance_id.as_deref());
                    put_str(&mut v, &m.client_id);
                    put_str(&mut v, &m.client_host);
                    v.put_i32(m.rebalance_timeout_ms);
                    v.put_i32(m.session_timeout_ms);
                    put_bytes(&mut v, &m.subscription);
                    put_bytes(&mut v, &m.assignment);
                }
                v
            });
            (k, v)
        }
    }
}

fn get_str(b: &mut Bytes) -> Option<String> {
    let n = get_i16(b)?;
    if n < 0 || b.remaining() < n as usize {
        return None;
    }
    String::from_utf8(b.split_to(n as usize).to_vec()).ok()
}

fn get_nullable_str(b: &mut Bytes) -> Option<Option<String>> {
    if b.remaining() < 2 {
        return None;
    }
    if i16::from_be_bytes([b[0], b[1]]) < 0 {
        b.advance(2);
        return Some(None);
    }
    get_str(b).map(Some)
}

fn get_bytes(b: &mut Bytes) -> Option<Bytes> {
    let n = get_i32(b)?;
    if n < 0 {
        return Some(Bytes::new());
    }
    if b.remaining() < n as usize {
        return None;
    }
    Some(b.split_to(n as usize))
}

fn get_i16(b: &mut Bytes) -> Option<i16> {
    (b.remaining() >= 2).then(|| b.get_i16())
}
fn get_i32(b: &mut Bytes) -> Option<i32> {
    (b.remaining() >= 4).then(|| b.get_i32())
}
fn get_i64(b: &mut Bytes) -> Option<i64> {
    (b.remaining() >= 8).then(|| b.get_i64())
}

/// Decodes a record; `None` for keys of other versions or malformed bytes.
pub fn decode(key: Bytes, value: Option<Bytes>) -> Option<StoreRecord> {
    let mut k = key;
    match get_i16(&mut k)? {
        0 | 1 => {
            let group = get_str(&mut k)?;
            let topic = get_str(&mut k)?;
            let partition = get_i32(&mut k)?;
            let value = match value {
                None => None,
                Some(mut v) => {
                    let version = get_i16(&mut v)?;
                    let offset = get_i64(&mut v)?;
                    let leader_epoch = if version >= 3 { get_i32(&mut v)? } else { -1 };
                    let metadata = get_str(&mut v)?;
                    let commit_timestamp = get_i64(&mut v)?.max(0) as u64;
                    Some(CommittedOffset {
                        offset,
                        leader_epoch,
                        metadata,
                        commit_timestamp,
                    })
                }
            };
            Some(StoreRecord::Offset {
                group,
                topic,
                partition,
                value,
            })
        }
        2 => {
            let group = get_str(&mut k)?;
            let value = match value {
                None => None,
                Some(mut v) => {
                    let version = get_i16(&mut v)?;
                    let protocol_type = get_str(&mut v)?;
                    let generation = get_i32(&mut v)?;
                    let protocol = get_nullable_str(&mut v)?;
                    let leader = get_nullable_str(&mut v)?;
                    let timestamp = if version >= 2 {
                        get_i64(&mut v)?.max(0) as u64
                    } else {
                        0
                    };
                    let n = get_i32(&mut v)?;
                    let mut members = Vec::new();
                    for _ in 0..n.max(0) {
                        let member_id = get_str(&mut v)?;
                        let instance_id = if version >= 3 {
                            get_nullable_str(&mut v)?
                        } else {
                            None
                        };
                        let client_id = get_str(&mut v)?;
                        let client_host = get_str(&mut v)?;
                        let rebalance_timeout_ms = if version >= 1 { get_i32(&mut v)? } else { 0 };
                        let session_timeout_ms = get_i32(&mut v)?;
                        let subscription = get_bytes(&mut v)?;
                        let assignment = get_bytes(&mut v)?;
                        members.push(MemberSnapshot {
                            member_id,
                            instance_id,
                            client_id,
                            client_host,
                            rebalance_timeout_ms,
                            session_timeout_ms,
                            subscription,
                            assignment,
                        });
                    }
                    Some(GroupSnapshot {
                        protocol_type,
                        generation,
                        protocol,
                        leader,
                        timestamp,
                        members,
                    })
                }
            };
            Some(StoreRecord::Group { group, value })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_string_hash_partitions() {
        // Java: "my-group".hashCode() == -1906497762; (-1906497762 & 0x7fffffff) % 50 == 36.
        assert_eq!(partition_for("my-group", 50), 36);
        assert_eq!(partition_for("", 50), 0);
        for g in ["a", "group-with-unicode-\u{e9}", "x".repeat(300).as_str()] {
            assert!((0..50).contains(&partition_for(g, 50)));
        }
    }

    #[test]
    fn records_round_trip() {
        let recs = vec![
            StoreRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: Some(CommittedOffset {
                    offset: 42,
                    leader_epoch: 1,
                    metadata: "m".into(),
                    commit_timestamp: 7,
                }),
            },
            StoreRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: None,
            },
            StoreRecord::Group {
                group: "g".into(),
                value: Some(GroupSnapshot {
                    protocol_type: "consumer".into(),
                    generation: 5,
                    protocol: Some("range".into()),
                    leader: Some("m1".into()),
                    timestamp: 99,
                    members: vec![MemberSnapshot {
                        member_id: "m1".into(),
                        instance_id: Some("i1".into()),
                        client_id: "c".into(),
                        client_host: "/127.0.0.1".into(),
                        rebalance_timeout_ms: 300_000,
                        session_timeout_ms: 45_000,
                        subscription: Bytes::from_static(b"sub"),
                        assignment: Bytes::from_static(b"asg"),
                    }],
                }),
            },
            StoreRecord::Group {
                group: "g".into(),
                value: None,
            },
        ];
        for r in recs {
            let (k, v) = encode(&r);
            assert_eq!(decode(Bytes::from(k), v.map(Bytes::from)), Some(r));
        }
    }
}
