//! `strom group ...` run as a process against a real broker: list, describe (offsets, lag),
//! reset-offsets (refused while the group has members), delete, and one-line errors.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::process::Command;

use common::{build_batch, produce_req, sb as s, RawClient, TestBroker};
use kafka_protocol::messages::*;
use strom::log::{Compression, Record};

fn strom(broker: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(common::strom_bin())
        .args(["group", "--brokers", broker])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

async fn produce(c: &mut RawClient, topic: &str, partition: i32, n: usize, ts: i64) {
    let records = (0..n).map(|i| Record::new(Some("k"), Some(format!("v{i}")), ts + i as i64));
    let req = produce_req(
        -1,
        topic,
        partition,
        build_batch(Compression::None, records),
    )
    .with_timeout_ms(1000);
    let r = c.call(&req, 9).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
}

async fn commit(c: &mut RawClient, group: &str, topic: &str, partition: i32, offset: i64) {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(partition)
                        .with_committed_offset(offset),
                ]),
        ]);
    assert_eq!(c.call(&req, 8).await.topics[0].partitions[0].error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commands_work_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| {
        c.num_partitions = 2;
        c.group_initial_rebalance_delay_ms = 0;
    })
    .await;
    let broker = b.bootstrap();
    let mut c = RawClient::connect(b.addr).await;
    // Auto-creates "t" with the broker's 2 partitions.
    let md = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(s("t")))),
    ]));
    assert_eq!(c.call(&md, 1).await.topics[0].partitions.len(), 2);
    produce(&mut c, "t", 0, 10, 1_000_000).await;
    produce(&mut c, "t", 1, 4, 2_000_000).await;
    commit(&mut c, "g", "t", 0, 7).await;
    commit(&mut c, "g", "t", 1, 4).await;

    let (ok, out, err) = tokio::task::spawn_blocking({
        let broker = broker.clone();
        move || strom(&broker, &["list"])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("g\tEmpty"), "{out}");

    let (ok, out, err) = tokio::task::spawn_blocking({
        let broker = broker.clone();
        move || strom(&broker, &["describe", "g"])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    let row0 = out
        .lines()
        .find(|l| l.starts_with("t ") && l.split_whitespace().nth(1) == Some("0"))
        .unwrap();
    assert_eq!(
        row0.split_whitespace().collect::<Vec<_>>(),
        ["t", "0", "7", "10", "3"],
        "{out}"
    );

    for (args, expect) in [
        (vec!["--to-earliest"], vec![("0", "0"), ("1", "0")]),
        (vec!["--to-latest"], vec![("0", "10"), ("1", "4")]),
        (vec!["--to-offset", "2"], vec![("0", "2"), ("1", "2")]),
        // The first record at or after 1970-01-01T00:16:40.005Z = 1_000_005 ms.
        (
            vec!["--to-datetime", "1970-01-01T00:16:40.005Z"],
            vec![("0", "5"), ("1", "0")],
        ),
    ] {
        let mut full = vec!["reset-offsets", "g", "--topic", "t"];
        full.extend(args.iter().copied());
        let full: Vec<String> = full.into_iter().map(String::from).collect();
        let broker = broker.clone();
        let (ok, out, err) = tokio::task::spawn_blocking(move || {
            strom(
                &broker,
                &full.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
        .await
        .unwrap();
        assert!(ok, "{args:?}: {err}");
        let got: Vec<(String, String)> = out
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f[1].to_string(), f[2].to_string())
            })
            .collect();
        let want: Vec<(String, String)> = expect
            .iter()
            .map(|(p, o)| (p.to_string(), o.to_string()))
            .collect();
        assert_eq!(got, want, "{args:?}");
    }

    // An active member: resets are refused with one line, and so is deleting the group.
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(s("m"))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(s("range"))
        .with_metadata(bytes::Bytes::from_static(b"x"))]);
    // v3 clients get their member id without MEMBER_ID_REQUIRED.
    let joined = c.call(&join.with_member_id(s("")), 3).await;
    assert_eq!(joined.error_code, 0);
    let (ok, _, err) = tokio::task::spawn_blocking({
        let broker = broker.clone();
        move || {
            strom(
                &broker,
                &["reset-offsets", "g", "--topic", "t", "--to-earliest"],
            )
        }
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(err.contains("active member"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (ok, _, err) = tokio::task::spawn_blocking({
        let broker = broker.clone();
        move || strom(&broker, &["delete", "g"])
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(err.contains("NonEmptyGroup"), "{err}");
    // After the member leaves, the group can be deleted.
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(joined.member_id.clone());
    assert_eq!(c.call(&leave, 1).await.error_code, 0);
    let (ok, out, err) = tokio::task::spawn_blocking({
        let broker = broker.clone();
        move || strom(&broker, &["delete", "g"])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("deleted group g"));
    b.stop().await;
}

#[test]
fn unreachable_broker_is_one_line() {
    let addr = format!("127.0.0.1:{}", common::free_port());
    let (ok, _, err) = strom(&addr, &["list"]);
    assert!(!ok);
    assert!(
        err.starts_with(&format!("strom: broker unreachable at {addr}: ")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
