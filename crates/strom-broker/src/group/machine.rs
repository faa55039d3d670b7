//! The classic consumer-group protocol as a pure state machine: no sockets, no clocks, no disk.
//!
//! ```text
//!            join (new member)                  all known members joined,
//!   Empty ─────────────────────▶ Preparing ──── or the rebalance timeout ──▶ Completing
//!     ▲                          Rebalance ◀──┐                              Rebalance
//!     │ last member leaves /        ▲          │ join with new metadata,         │ leader's
//!     │ expires                     │          │ member leaves / expires         │ SyncGroup
//!     │                             └──────────┴──────────── Stable ◀────────────┘
//! ```
//!
//! Callers pass the current time (ms) and a token for every request whose answer may be
//! delayed (JoinGroup, SyncGroup). Every call returns [`Effects`]: answers for parked requests
//! and records to append to `__consumer_offsets`. The runtime in `group::mod` performs them.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::ResponseError as E;

/// `offset.metadata.max.bytes`: the longest commit metadata accepted.
pub const MAX_METADATA_BYTES: usize = 4096;

/// Identifies a parked JoinGroup or SyncGroup request.
pub type Token = u64;

/// Coordinator settings (Kafka's `group.*` broker configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits
    /// for more members.
    pub initial_rebalance_delay_ms: u64,
    /// `offsets.retention.minutes`, in ms: offsets of an empty group expire after this.
    pub offsets_retention_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// The state of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No members (offsets may remain).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Everyone has an assignment.
    Stable,
    /// Deleted.
    Dead,
}

impl State {
    /// Kafka's name for the state (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
            State::Dead => "Dead",
        }
    }
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Broker-assigned id.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    /// The client's id.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Protocols in preference order: (name, metadata).
    pub protocols: Vec<(String, Bytes)>,
    /// The assignment from the last completed rebalance.
    pub assignment: Bytes,
    /// When the session expires unless the member heartbeats (ms).
    pub deadline: u64,
    join_token: Option<Token>,
    sync_token: Option<Token>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The offset.
    pub offset: i64,
    /// Leader epoch the consumer saw, or -1.
    pub leader_epoch: i32,
    /// Client metadata string.
    pub metadata: String,
    /// When it was committed (ms).
    pub commit_timestamp: u64,
}

/// One group.
#[derive(Debug, Clone)]
pub struct Group {
    /// Group id.
    pub id: String,
    /// Current state.
    pub state: State,
    /// Generation of the last (or current) rebalance.
    pub generation: i32,
    /// `consumer`, `connect`, ...
    pub protocol_type: Option<String>,
    /// The chosen assignment protocol (`range`, `cooperative-sticky`, ...).
    pub protocol: Option<String>,
    /// Leader member id.
    pub leader: Option<String>,
    /// Members by id.
    pub members: BTreeMap<String, Member>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pending: HashMap<String, u64>,
    /// When the current rebalance gives up on members that have not rejoined.
    rebalance_deadline: u64,
    /// The current rebalance started from an empty group: it waits for the initial delay.
    initial_rebalance: bool,
    /// Committed offsets by (topic, partition).
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// When the group last became empty (for offset expiry).
    empty_since: u64,
}

impl Group {
    fn new(id: &str, now: u64) -> Self {
        Group {
            id: id.to_string(),
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: 0,
            initial_rebalance: false,
            offsets: BTreeMap::new(),
            empty_since: now,
        }
    }

    /// KIP-345: a request naming a static instance whose current member id is another one
    /// comes from a fenced (replaced) incarnation.
    fn fenced(&self, member_id: &str, instance: Option<&str>) -> bool {
        instance
            .and_then(|i| self.member_by_instance(i))
            .is_some_and(|m| m.member_id != member_id)
    }

    fn member_by_instance(&self, instance: &str) -> Option<&Member> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance))
    }

    /// The protocol every member supports that most members prefer.
    fn select_protocol(&self) -> Option<String> {
        let mut candidates: Option<Vec<String>> = None;
        for m in self.members.values() {
            let names: Vec<String> = m.protocols.iter().map(|(n, _)| n.clone()).collect();
            candidates = Some(match candidates {
                None => names,
                Some(c) => c.into_iter().filter(|n| names.contains(n)).collect(),
            });
        }
        let candidates = candidates?;
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(n).or_default() += 1;
            }
        }
        candidates
            .iter()
            .max_by_key(|n| {
                (
                    votes.get(n.as_str()).copied().unwrap_or(0),
                    std::cmp::Reverse(candidates.iter().position(|c| c == *n)),
                )
            })
            .cloned()
    }

    fn supports(&self, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocols.is_empty();
        }
        protocols.iter().any(|(n, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(mn, _)| mn == n))
        })
    }
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    /// Error, or `None`.
    pub error: Option<E>,
    /// Generation.
    pub generation: i32,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Chosen protocol.
    pub protocol: Option<String>,
    /// Leader id.
    pub leader: String,
    /// The member's id.
    pub member_id: String,
    /// For the leader: (member id, instance id, metadata) of every member.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    fn error(e: E, member_id: &str) -> Self {
        JoinResult {
            error: Some(e),
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    /// Error, or `None`.
    pub error: Option<E>,
    /// The member's assignment.
    pub assignment: Bytes,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Chosen protocol.
    pub protocol: Option<String>,
}

impl SyncResult {
    fn error(e: E) -> Self {
        SyncResult {
            error: Some(e),
            assignment: Bytes::new(),
            protocol_type: None,
            protocol: None,
        }
    }
}

/// An answer for a parked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// For a JoinGroup.
    Join(JoinResult),
    /// For a SyncGroup.
    Sync(SyncResult),
}

/// A record for `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreRecord {
    /// A committed offset (`None`: deleted).
    Offset {
        /// Group.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The offset, or a tombstone.
        value: Option<CommittedOffset>,
    },
    /// Group metadata after a rebalance (`None`: the group was deleted).
    Group {
        /// Group.
        group: String,
        /// The group, or a tombstone.
        value: Option<GroupSnapshot>,
    },
}

/// What is persisted about a group (Kafka's GroupMetadataValue).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSnapshot {
    /// Protocol type.
    pub protocol_type: String,
    /// Generation.
    pub generation: i32,
    /// Chosen protocol.
    pub protocol: Option<String>,
    /// Leader.
    pub leader: Option<String>,
    /// When this was written (ms).
    pub timestamp: u64,
    /// Members with their subscription (chosen protocol's metadata) and assignment.
    pub members: Vec<MemberSnapshot>,
}

/// A persisted member.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberSnapshot {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Metadata for the chosen protocol.
    pub subscription: Bytes,
    /// Assignment.
    pub assignment: Bytes,
}

/// What a call asks the runtime to do.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    /// Answers for parked requests.
    pub answers: Vec<(Token, Answer)>,
    /// Records to append to `__consumer_offsets`.
    pub store: Vec<StoreRecord>,
}

/// A JoinGroup, decoded.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Group.
    pub group_id: String,
    /// Member id ("" for a new member).
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Protocol type.
    pub protocol_type: String,
    /// Protocols.
    pub protocols: Vec<(String, Bytes)>,
    /// Whether the client understands MEMBER_ID_REQUIRED (JoinGroup v4+).
    pub require_known_member_id: bool,
}

/// A SyncGroup, decoded.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// Group.
    pub group_id: String,
    /// The generation the member joined.
    pub generation: i32,
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// From the leader: every member's assignment.
    pub assignments: Vec<(String, Bytes)>,
}

/// A partition's commit in an OffsetCommit.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// Group.
    pub group_id: String,
    /// Generation, or -1 for a consumer outside group management.
    pub generation: i32,
    /// Member id, or "".
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// (topic, partition, offset, leader epoch, metadata).
    pub offsets: Vec<(String, i32, i64, i32, String)>,
}

/// The group coordinator.
#[derive(Debug, Default)]
pub struct Coordinator {
    config: GroupConfig,
    groups: BTreeMap<String, Group>,
    member_seq: u64,
}

impl Coordinator {
    /// An empty coordinator.
    pub fn new(config: GroupConfig) -> Self {
        Coordinator {
            config,
            groups: BTreeMap::new(),
            member_seq: 0,
        }
    }

    /// A group, if known.
    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.get(id)
    }

    /// Forgets every group whose id matches `which` (its coordinator moved elsewhere).
    pub fn unload(&mut self, which: impl Fn(&str) -> bool) {
        self.groups.retain(|id, _| !which(id));
    }

    /// All groups.
    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.member_seq += 1;
        format!("{client_id}-{}", uuid::Uuid::new_v4().simple())
    }

    /// JoinGroup. The answer comes in the returned effects (now or later) under `token`.
    pub fn join(&mut self, now: u64, token: Token, r: JoinRequest) -> Effects {
        let mut fx = Effects::default();
        let reply = |fx: &mut Effects, res: JoinResult| fx.answers.push((token, Answer::Join(res)));
        if r.group_id.is_empty() {
            reply(&mut fx, JoinResult::error(E::InvalidGroupId, &r.member_id));
            return fx;
        }
        if r.session_timeout_ms < self.config.min_session_timeout_ms
            || r.session_timeout_ms > self.config.max_session_timeout_ms
        {
            reply(
                &mut fx,
                JoinResult::error(E::InvalidSessionTimeout, &r.member_id),
            );
            return fx;
        }
        let new_id = if r.member_id.is_empty() {
            Some(self.new_member_id(&r.client_id))
        } else {
            None
        };
        let config = self.config;
        let g = self
            .groups
            .entry(r.group_id.clone())
            .or_insert_with(|| Group::new(&r.group_id, now));
        if g.state == State::Dead {
            reply(
                &mut fx,
                JoinResult::error(E::CoordinatorNotAvailable, &r.member_id),
            );
            return fx;
        }
        if (!g.members.is_empty() && g.protocol_type.as_deref() != Some(r.protocol_type.as_str()))
            || !g.supports(&r.protocols)
        {
            reply(
                &mut fx,
                JoinResult::error(E::InconsistentGroupProtocol, &r.member_id),
            );
            return fx;
        }
        let mut member_id = r.member_id.clone();
        if let Some(new_id) = new_id {
            if let Some(instance) = &r.instance_id {
                // A static member coming back (or fencing its old incarnation): take over the
                // old member id's place under a fresh id.
                if let Some(old) = g.member_by_instance(instance).cloned() {
                    let mut m = old.clone();
                    g.members.remove(&old.member_id);
                    if let Some(t) = old.join_token {
                        fx.answers.push((
                            t,
                            Answer::Join(JoinResult::error(E::FencedInstanceId, &old.member_id)),
                        ));
                    }
                    if let Some(t) = old.sync_token {
                        fx.answers
                            .push((t, Answer::Sync(SyncResult::error(E::FencedInstanceId))));
                    }
                    m.member_id = new_id.clone();
                    m.join_token = None;
                    m.sync_token = None;
                    m.deadline = now + r.session_timeout_ms as u64;
                    // As Kafka: no rebalance as long as the group's chosen protocol is still
                    // one the member offers (its metadata may differ, e.g. owned partitions).
                    let unchanged = g
                        .protocol
                        .as_ref()
                        .is_some_and(|p| r.protocols.iter().any(|(n, _)| n == p));
                    m.protocols = r.protocols.clone();
                    m.session_timeout_ms = r.session_timeout_ms;
                    m.rebalance_timeout_ms = r.rebalance_timeout_ms;
                    let previous_leader = g.leader.clone().unwrap_or_default();
                    if g.leader.as_deref() == Some(old.member_id.as_str()) {
                        g.leader = Some(new_id.clone());
                    }
                    g.members.insert(new_id.clone(), m);
                    if g.state == State::Stable && unchanged {
                        // KIP-345: no rebalance; the member keeps its assignment. It is told
                        // the previous leader id (JoinGroup < v9), so even a restarted leader
                        // does not run an assignment over an empty member list.
                        let mut res = join_result(g, &new_id, false);
                        res.leader = previous_leader;
                        reply(&mut fx, res);
                        // Persist the new member id, so a broker restart keeps it.
                        fx.store.push(StoreRecord::Group {
                            group: g.id.clone(),
                            value: Some(snapshot(g, now)),
                        });
                        return fx;
                    }
                    member_id = new_id;
                    return self.park_join(now, token, &r, &member_id, fx, config);
                }
                member_id = new_id;
            } else if r.require_known_member_id {
                // KIP-394: hand out an id and ask the client to join again with it.
                g.pending
                    .insert(new_id.clone(), now + r.session_timeout_ms as u64);
                reply(&mut fx, JoinResult::error(E::MemberIdRequired, &new_id));
                return fx;
            } else {
                member_id = new_id;
            }
        } else if g.fenced(&member_id, r.instance_id.as_deref()) {
            reply(&mut fx, JoinResult::error(E::FencedInstanceId, &member_id));
            return fx;
        } else if !g.members.contains_key(&member_id) && g.pending.remove(&member_id).is_none() {
            reply(&mut fx, JoinResult::error(E::UnknownMemberId, &member_id));
            return fx;
        } else if let (Some(instance), Some(m)) = (&r.instance_id, g.members.get(&member_id)) {
            if m.instance_id.as_deref() != Some(instance.as_str()) {
                reply(&mut fx, JoinResult::error(E::FencedInstanceId, &member_id));
                return fx;
            }
        }
        // A known member that changes nothing while the group is settled gets the current
        // generation back without a rebalance.
        if let Some(m) = g.members.get(&member_id) {
            let same = m.protocols == r.protocols;
            let is_leader = g.leader.as_deref() == Some(member_id.as_str());
            if same
                && (g.state == State::CompletingRebalance
                    || (g.state == State::Stable && !is_leader))
            {
                let res = join_result(g, &member_id, is_leader);
                if let Some(m) = g.members.get_mut(&member_id) {
                    m.deadline = now + m.session_timeout_ms as u64;
                }
                reply(&mut fx, res);
                return fx;
            }
        }
        self.park_join(now, token, &r, &member_id, fx, config)
    }

    fn park_join(
        &mut self,
        now: u64,
        token: Token,
        r: &JoinRequest,
        member_id: &str,
        mut fx: Effects,
        config: GroupConfig,
    ) -> Effects {
        let Some(g) = self.groups.get_mut(&r.group_id) else {
            return fx;
        };
        let m = g
            .members
            .entry(member_id.to_string())
            .or_insert_with(|| Member {
                member_id: member_id.to_string(),
                instance_id: r.instance_id.clone(),
                client_id: r.client_id.clone(),
                client_host: r.client_host.clone(),
                session_timeout_ms: r.session_timeout_ms,
                rebalance_timeout_ms: r.rebalance_timeout_ms,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                deadline: 0,
                join_token: None,
                sync_token: None,
            });
        m.protocols = r.protocols.clone();
        m.session_timeout_ms = r.session_timeout_ms;
        m.rebalance_timeout_ms = r.rebalance_timeout_ms;
        m.deadline = now + r.session_timeout_ms as u64;
        if let Some(old) = m.join_token.replace(token) {
            fx.answers.push((
                old,
                Answer::Join(JoinResult::error(E::UnknownMemberId, member_id)),
            ));
        }
        if let Some(t) = m.sync_token.take() {
            fx.answers
                .push((t, Answer::Sync(SyncResult::error(E::RebalanceInProgress))));
        }
        if g.protocol_type.is_none() || g.members.len() == 1 {
            g.protocol_type = Some(r.protocol_type.clone());
        }
        if g.state != State::PreparingRebalance {
            let was_empty = g.state == State::Empty;
            prepare_rebalance(g, now, &mut fx);
            let max_rebalance = g
                .members
                .values()
                .map(|m| m.rebalance_timeout_ms.max(0))
                .max()
                .unwrap_or(0) as u64;
            g.initial_rebalance = was_empty;
            g.rebalance_deadline = if was_empty {
                now.saturating_add(config.initial_rebalance_delay_ms.min(max_rebalance))
            } else {
                now.saturating_add(max_rebalance)
            };
        }
        self.try_complete_join(&r.group_id, now, &mut fx, false);
        fx
    }

    /// Completes a rebalance if every member has rejoined (or, when `expired`, drops those that
    /// have not).
    fn try_complete_join(&mut self, group: &str, now: u64, fx: &mut Effects, expired: bool) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        if g.state != State::PreparingRebalance {
            return;
        }
        let all_joined = g.members.values().all(|m| m.join_token.is_some());
        // An empty group waits for the initial delay so that more members can join at once.
        let waiting_initial = g.initial_rebalance && now < g.rebalance_deadline && !expired;
        if (!all_joined || waiting_initial) && !expired {
            return;
        }
        if expired {
            let gone: Vec<String> = g
                .members
                .values()
                .filter(|m| m.join_token.is_none())
                .map(|m| m.member_id.clone())
                .collect();
            for id in gone {
                g.members.remove(&id);
            }
        }
        g.generation += 1;
        g.initial_rebalance = false;
        if g.members.is_empty() {
            g.state = State::Empty;
            g.protocol = None;
            g.leader = None;
            g.empty_since = now;
            fx.store.push(StoreRecord::Group {
                group: g.id.clone(),
                value: Some(snapshot(g, now)),
            });
            return;
        }
        g.protocol = g.select_protocol();
        if g.leader.as_ref().is_none_or(|l| !g.members.contains_key(l)) {
            g.leader = g.members.keys().next().cloned();
        }
        g.state = State::CompletingRebalance;
        let leader = g.leader.clone().unwrap_or_default();
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for id in ids {
            let res = join_result(g, &id, id == leader);
            if let Some(m) = g.members.get_mut(&id) {
                m.deadline = now + m.session_timeout_ms as u64;
                if let Some(t) = m.join_token.take() {
                    fx.answers.push((t, Answer::Join(res)));
                }
            }
        }
    }

    /// SyncGroup.
    pub fn sync(&mut self, now: u64, token: Token, r: SyncRequest) -> Effects {
        let SyncRequest {
            group_id,
            generation,
            member_id,
            instance_id,
            assignments,
        } = r;
        let (group_id, member_id, instance_id) = (
            group_id.as_str(),
            member_id.as_str(),
            instance_id.as_deref(),
        );
        let mut fx = Effects::default();
        let reply = |fx: &mut Effects, res: SyncResult| fx.answers.push((token, Answer::Sync(res)));
        let Some(g) = self.groups.get_mut(group_id) else {
            reply(&mut fx, SyncResult::error(E::UnknownMemberId));
            return fx;
        };
        if g.fenced(member_id, instance_id) {
            reply(&mut fx, SyncResult::error(E::FencedInstanceId));
            return fx;
        }
        let Some(m) = g.members.get(member_id) else {
            reply(&mut fx, SyncResult::error(E::UnknownMemberId));
            return fx;
        };
        if let Some(i) = instance_id {
            if m.instance_id.as_deref() != Some(i) {
                reply(&mut fx, SyncResult::error(E::FencedInstanceId));
                return fx;
            }
        }
        if generation != g.generation {
            reply(&mut fx, SyncResult::error(E::IllegalGeneration));
            return fx;
        }
        match g.state {
            State::PreparingRebalance => reply(&mut fx, SyncResult::error(E::RebalanceInProgress)),
            State::Stable => {
                let res = sync_result(g, member_id);
                reply(&mut fx, res);
            }
            State::CompletingRebalance => {
                if let Some(m) = g.members.get_mut(member_id) {
                    m.deadline = now + m.session_timeout_ms as u64;
                    if let Some(old) = m.sync_token.replace(token) {
                        fx.answers
                            .push((old, Answer::Sync(SyncResult::error(E::RebalanceInProgress))));
                    }
                }
                if g.leader.as_deref() == Some(member_id) {
                    let given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for (id, m) in g.members.iter_mut() {
                        m.assignment = given.get(id).cloned().unwrap_or_default();
                    }
                    g.state = State::Stable;
                    fx.store.push(StoreRecord::Group {
                        group: g.id.clone(),
                        value: Some(snapshot(g, now)),
                    });
                    let ids: Vec<String> = g.members.keys().cloned().collect();
                    for id in ids {
                        let res = sync_result(g, &id);
                        if let Some(t) = g.members.get_mut(&id).and_then(|m| m.sync_token.take()) {
                            fx.answers.push((t, Answer::Sync(res)));
                        }
                    }
                }
            }
            State::Empty | State::Dead => reply(&mut fx, SyncResult::error(E::UnknownMemberId)),
        }
        fx
    }

    /// Heartbeat: the error to return.
    pub fn heartbeat(
        &mut self,
        now: u64,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Option<E> {
        let Some(g) = self.groups.get_mut(group_id) else {
            return Some(E::UnknownMemberId);
        };
        if g.fenced(member_id, instance_id) {
            return Some(E::FencedInstanceId);
        }
        let Some(m) = g.members.get_mut(member_id) else {
            return Some(E::UnknownMemberId);
        };
        if instance_id.is_some() && m.instance_id.as_deref() != instance_id {
            return Some(E::FencedInstanceId);
        }
        m.deadline = now + m.session_timeout_ms as u64;
        if generation != g.generation {
            return Some(E::IllegalGeneration);
        }
        match g.state {
            State::PreparingRebalance => Some(E::RebalanceInProgress),
            State::CompletingRebalance | State::Stable => None,
            State::Empty | State::Dead => Some(E::UnknownMemberId),
        }
    }

    /// LeaveGroup for each (member id, instance id): per-member errors.
    pub fn leave(
        &mut self,
        now: u64,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> (Vec<Option<E>>, Effects) {
        let mut fx = Effects::default();
        let Some(g) = self.groups.get_mut(group_id) else {
            return (vec![Some(E::UnknownMemberId); leaving.len()], fx);
        };
        let mut errors = Vec::with_capacity(leaving.len());
        let mut removed = false;
        for (member_id, instance) in leaving {
            let id = match (member_id.is_empty(), instance) {
                (true, Some(i)) => g.member_by_instance(i).map(|m| m.member_id.clone()),
                _ => Some(member_id.clone()),
            };
            if !member_id.is_empty() && g.fenced(member_id, instance.as_deref()) {
                errors.push(Some(E::FencedInstanceId));
                continue;
            }
            let Some(id) = id.filter(|id| g.members.contains_key(id)) else {
                errors.push(Some(E::UnknownMemberId));
                continue;
            };
            if let (Some(i), Some(m)) = (instance, g.members.get(&id)) {
                if m.instance_id.as_deref() != Some(i.as_str()) {
                    errors.push(Some(E::FencedInstanceId));
                    continue;
                }
            }
            if let Some(m) = g.members.remove(&id) {
                cancel_parked(&m, &mut fx);
            }
            removed = true;
            errors.push(None);
        }
        if removed {
            self.after_member_loss(group_id, now, &mut fx);
        }
        (errors, fx)
    }

    fn after_member_loss(&mut self, group_id: &str, now: u64, fx: &mut Effects) {
        let Some(g) = self.groups.get_mut(group_id) else {
            return;
        };
        if g.members.is_empty() && g.state != State::PreparingRebalance {
            g.state = State::Empty;
            g.generation += 1;
            g.protocol = None;
            g.leader = None;
            g.empty_since = now;
            fx.store.push(StoreRecord::Group {
                group: g.id.clone(),
                value: Some(snapshot(g, now)),
            });
            return;
        }
        match g.state {
            State::Stable | State::CompletingRebalance => {
                prepare_rebalance(g, now, fx);
                let max = g
                    .members
                    .values()
                    .map(|m| m.rebalance_timeout_ms.max(0))
                    .max()
                    .unwrap_or(0) as u64;
                g.rebalance_deadline = now.saturating_add(max);
            }
            _ => {}
        }
        self.try_complete_join(group_id, now, fx, false);
    }

    /// Expires sessions, pending member ids, rebalance deadlines and old offsets.
    pub fn tick(&mut self, now: u64) -> Effects {
        let mut fx = Effects::default();
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            let Some(g) = self.groups.get_mut(&id) else {
                continue;
            };
            g.pending.retain(|_, deadline| *deadline > now);
            // A member waiting in JoinGroup is not expired by its session: the rebalance
            // deadline governs it.
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| m.deadline <= now && m.join_token.is_none())
                .map(|m| m.member_id.clone())
                .collect();
            let lost = !expired.is_empty();
            for m in expired {
                if let Some(m) = g.members.remove(&m) {
                    tracing::info!(group = %id, member = %m.member_id, "session expired");
                    cancel_parked(&m, &mut fx);
                }
            }
            if lost {
                self.after_member_loss(&id, now, &mut fx);
            }
            let Some(g) = self.groups.get_mut(&id) else {
                continue;
            };
            if g.state == State::PreparingRebalance && now >= g.rebalance_deadline {
                let all_joined = g.members.values().all(|m| m.join_token.is_some());
                self.try_complete_join(&id, now, &mut fx, !all_joined);
            }
            let Some(g) = self.groups.get_mut(&id) else {
                continue;
            };
            if g.state == State::Empty && g.offsets.is_empty() && g.pending.is_empty() {
                // Nothing to remember (e.g. a group created by a failed request).
                self.groups.remove(&id);
                continue;
            }
            if g.state == State::Empty
                && now.saturating_sub(g.empty_since) > self.config.offsets_retention_ms
            {
                let expired: Vec<(String, i32)> = g
                    .offsets
                    .iter()
                    .filter(|(_, o)| {
                        now.saturating_sub(o.commit_timestamp) > self.config.offsets_retention_ms
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for (topic, partition) in expired {
                    g.offsets.remove(&(topic.clone(), partition));
                    fx.store.push(StoreRecord::Offset {
                        group: id.clone(),
                        topic,
                        partition,
                        value: None,
                    });
                }
                if g.offsets.is_empty() {
                    self.groups.remove(&id);
                    fx.store.push(StoreRecord::Group {
                        group: id.clone(),
                        value: None,
                    });
                }
            }
        }
        fx
    }

    /// OffsetCommit: one error per offset.
    pub fn commit(&mut self, now: u64, r: CommitRequest) -> (Vec<Option<E>>, Effects) {
        let mut fx = Effects::default();
        let n = r.offsets.len();
        if r.group_id.is_empty() {
            return (vec![Some(E::InvalidGroupId); n], fx);
        }
        let g = self
            .groups
            .entry(r.group_id.clone())
            .or_insert_with(|| Group::new(&r.group_id, now));
        let check = if g.fenced(&r.member_id, r.instance_id.as_deref()) {
            Some(E::FencedInstanceId)
        } else if r.generation < 0 && r.member_id.is_empty() {
            // A consumer that assigns partitions itself: only while nobody is in the group.
            if g.state == State::Empty {
                None
            } else {
                Some(E::UnknownMemberId)
            }
        } else {
            match g.members.get(&r.member_id) {
                None => Some(E::UnknownMemberId),
                Some(m) if r.instance_id.is_some() && m.instance_id != r.instance_id => {
                    Some(E::FencedInstanceId)
                }
                Some(_) if r.generation != g.generation => Some(E::IllegalGeneration),
                Some(_) if g.state == State::CompletingRebalance => Some(E::RebalanceInProgress),
                Some(_) => None,
            }
        };
        if check.is_none() && r.offsets.iter().any(|o| o.4.len() > MAX_METADATA_BYTES) {
            // offset.metadata.max.bytes: refuse the oversized ones, commit the rest.
            let mut errors = Vec::with_capacity(n);
            let mut keep = Vec::new();
            for o in r.offsets {
                if o.4.len() > MAX_METADATA_BYTES {
                    errors.push(Some(E::OffsetMetadataTooLarge));
                } else {
                    errors.push(None);
                    keep.push(o);
                }
            }
            let (_, fx) = self.commit(now, CommitRequest { offsets: keep, ..r });
            return (errors, fx);
        }
        if let Some(e) = check {
            return (vec![Some(e); n], fx);
        }
        if let Some(m) = g.members.get_mut(&r.member_id) {
            m.deadline = now + m.session_timeout_ms as u64;
        }
        for (topic, partition, offset, leader_epoch, metadata) in r.offsets {
            let value = CommittedOffset {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp: now,
            };
            g.offsets.insert((topic.clone(), partition), value.clone());
            fx.store.push(StoreRecord::Offset {
                group: r.group_id.clone(),
                topic,
                partition,
                value: Some(value),
            });
        }
        (vec![None; n], fx)
    }

    /// The committed offset of one partition.
    pub fn committed(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Option<&CommittedOffset> {
        self.groups
            .get(group_id)?
            .offsets
            .get(&(topic.to_string(), partition))
    }

    /// DeleteGroups for one group.
    pub fn delete_group(&mut self, group_id: &str) -> (Option<E>, Effects) {
        let mut fx = Effects::default();
        match self.groups.get(group_id) {
            None => (Some(E::GroupIdNotFound), fx),
            Some(g) if g.state != State::Empty => (Some(E::NonEmptyGroup), fx),
            Some(g) => {
                for (topic, partition) in g.offsets.keys() {
                    fx.store.push(StoreRecord::Offset {
                        group: group_id.to_string(),
                        topic: topic.clone(),
                        partition: *partition,
                        value: None,
                    });
                }
                fx.store.push(StoreRecord::Group {
                    group: group_id.to_string(),
                    value: None,
                });
                self.groups.remove(group_id);
                (None, fx)
            }
        }
    }

    /// OffsetDelete for one partition; refused while the group is active on the topic.
    pub fn delete_offset(
        &mut self,
        group_id: &str,
        topic: &str,
        partition: i32,
        subscribed: bool,
    ) -> (Option<E>, Effects) {
        let mut fx = Effects::default();
        let Some(g) = self.groups.get_mut(group_id) else {
            return (Some(E::GroupIdNotFound), fx);
        };
        if g.state != State::Empty && subscribed {
            return (Some(E::GroupSubscribedToTopic), fx);
        }
        if g.offsets.remove(&(topic.to_string(), partition)).is_some() {
            fx.store.push(StoreRecord::Offset {
                group: group_id.to_string(),
                topic: topic.to_string(),
                partition,
                value: None,
            });
        }
        (None, fx)
    }

    /// Replays one record of `__consumer_offsets` (at startup).
    pub fn load(&mut self, now: u64, record: StoreRecord) {
        match record {
            StoreRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => {
                let g = self
                    .groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group, now));
                match value {
                    Some(v) => {
                        g.offsets.insert((topic, partition), v);
                    }
                    None => {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            }
            StoreRecord::Group { group, value: None } => {
                self.groups.remove(&group);
            }
            StoreRecord::Group {
                group,
                value: Some(s),
            } => {
                let g = self
                    .groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group, now));
                g.generation = s.generation;
                g.protocol_type = Some(s.protocol_type);
                g.protocol = s.protocol.clone();
                g.leader = s.leader;
                g.members.clear();
                for m in s.members {
                    // Members must heartbeat within their session after a restart, as in Kafka.
                    g.members.insert(
                        m.member_id.clone(),
                        Member {
                            member_id: m.member_id,
                            instance_id: m.instance_id,
                            client_id: m.client_id,
                            client_host: m.client_host,
                            session_timeout_ms: m.session_timeout_ms,
                            rebalance_timeout_ms: m.rebalance_timeout_ms,
                            protocols: s
                                .protocol
                                .clone()
                                .map(|p| vec![(p, m.subscription)])
                                .unwrap_or_default(),
                            assignment: m.assignment,
                            deadline: now + m.session_timeout_ms as u64,
                            join_token: None,
                            sync_token: None,
                        },
                    );
                }
                g.state = if g.members.is_empty() {
                    State::Empty
                } else {
                    State::Stable
                };
                g.empty_since = s.timestamp;
            }
        }
    }
}

fn cancel_parked(m: &Member, fx: &mut Effects) {
    if let Some(t) = m.join_token {
        fx.answers.push((
            t,
            Answer::Join(JoinResult::error(E::UnknownMemberId, &m.member_id)),
        ));
    }
    if let Some(t) = m.sync_token {
        fx.answers
            .push((t, Answer::Sync(SyncResult::error(E::UnknownMemberId))));
    }
}

fn prepare_rebalance(g: &mut Group, _now: u64, fx: &mut Effects) {
    // Members waiting for an assignment of the old generation must rejoin.
    for m in g.members.values_mut() {
        if let Some(t) = m.sync_token.take() {
            fx.answers
                .push((t, Answer::Sync(SyncResult::error(E::RebalanceInProgress))));
        }
    }
    g.state = State::PreparingRebalance;
}

fn join_result(g: &Group, member_id: &str, is_leader: bool) -> JoinResult {
    let protocol = g.protocol.clone().unwrap_or_default();
    JoinResult {
        error: None,
        generation: g.generation,
        protocol_type: g.protocol_type.clone(),
        protocol: g.protocol.clone(),
        leader: g.leader.clone().unwrap_or_default(),
        member_id: member_id.to_string(),
        members: if is_leader {
            g.members
                .values()
                .map(|m| {
                    (
                        m.member_id.clone(),
                        m.instance_id.clone(),
                        m.metadata_for(&protocol),
                    )
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

fn sync_result(g: &Group, member_id: &str) -> SyncResult {
    SyncResult {
        error: None,
        assignment: g
            .members
            .get(member_id)
            .map(|m| m.assignment.clone())
            .unwrap_or_default(),
        protocol_type: g.protocol_type.clone(),
        protocol: g.protocol.clone(),
    }
}

fn snapshot(g: &Group, now: u64) -> GroupSnapshot {
    let protocol = g.protocol.clone().unwrap_or_default();
    GroupSnapshot {
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        generation: g.generation,
        protocol: g.protocol.clone(),
        leader: g.leader.clone(),
        timestamp: now,
        members: g
            .members
            .values()
            .map(|m| MemberSnapshot {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                subscription: m.metadata_for(&protocol),
                assignment: m.assignment.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GroupConfig {
        GroupConfig {
            min_session_timeout_ms: 100,
            max_session_timeout_ms: 100_000,
            initial_rebalance_delay_ms: 0,
            offsets_retention_ms: 1_000,
        }
    }

    fn req(member: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member.into(),
            instance_id: instance.map(String::from),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 1_000,
            rebalance_timeout_ms: 2_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
            require_known_member_id: true,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn sync(
        c: &mut Coordinator,
        now: u64,
        token: Token,
        group: &str,
        generation: i32,
        member: &str,
        instance: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Effects {
        c.sync(
            now,
            token,
            SyncRequest {
                group_id: group.into(),
                generation,
                member_id: member.into(),
                instance_id: instance.map(String::from),
                assignments,
            },
        )
    }

    fn join_answer(fx: &Effects, token: Token) -> Option<JoinResult> {
        fx.answers.iter().find_map(|(t, a)| match a {
            Answer::Join(j) if *t == token => Some(j.clone()),
            _ => None,
        })
    }

    fn sync_answer(fx: &Effects, token: Token) -> Option<SyncResult> {
        fx.answers.iter().find_map(|(t, a)| match a {
            Answer::Sync(s) if *t == token => Some(s.clone()),
            _ => None,
        })
    }

    /// Joins a new dynamic member (two round trips, KIP-394); returns its id.
    fn new_member(c: &mut Coordinator, now: u64, token: Token) -> (String, Effects) {
        let fx = c.join(now, token, req("", None, &["range"]));
        let first = join_answer(&fx, token).expect("immediate answer");
        assert_eq!(first.error, Some(E::MemberIdRequired));
        let id = first.member_id;
        let fx = c.join(now, token + 1, req(&id, None, &["range"]));
        (id, fx)
    }

    #[test]
    fn two_members_form_one_generation_and_sync() {
        let mut c = Coordinator::new(config());
        let (a, fx) = new_member(&mut c, 0, 10);
        // Alone: the rebalance completes at once (no initial delay in this config).
        let ja = join_answer(&fx, 11).expect("a joined");
        assert_eq!(
            (ja.error, ja.generation, ja.leader.as_str()),
            (None, 1, a.as_str())
        );
        let fx = sync(
            &mut c,
            1,
            12,
            "g",
            1,
            &a,
            None,
            vec![(a.clone(), Bytes::from_static(b"all"))],
        );
        assert_eq!(
            sync_answer(&fx, 12).expect("synced").assignment.as_ref(),
            b"all"
        );
        assert_eq!(c.group("g").expect("group").state, State::Stable);
        // A second member: a rebalance; the first learns it from its heartbeat and rejoins.
        let (b, fx) = new_member(&mut c, 2, 20);
        assert!(join_answer(&fx, 21).is_none(), "parked until a rejoins");
        assert_eq!(
            c.heartbeat(3, "g", 1, &a, None),
            Some(E::RebalanceInProgress)
        );
        let fx = c.join(4, 13, req(&a, None, &["range"]));
        let (ja, jb) = (
            join_answer(&fx, 13).expect("a"),
            join_answer(&fx, 21).expect("b"),
        );
        assert_eq!((ja.generation, jb.generation), (2, 2));
        assert_eq!(ja.members.len(), 2, "the leader sees every member");
        assert!(jb.members.is_empty());
        // The follower's sync waits for the leader's.
        let fx = sync(&mut c, 5, 22, "g", 2, &b, None, vec![]);
        assert!(fx.answers.is_empty());
        let fx = sync(
            &mut c,
            5,
            14,
            "g",
            2,
            &a,
            None,
            vec![(a.clone(), "x".into()), (b.clone(), "y".into())],
        );
        assert_eq!(sync_answer(&fx, 22).expect("b").assignment.as_ref(), b"y");
        assert_eq!(sync_answer(&fx, 14).expect("a").assignment.as_ref(), b"x");
        assert!(matches!(fx.store.as_slice(), [StoreRecord::Group { .. }]));
        assert_eq!(c.heartbeat(6, "g", 2, &b, None), None);
        assert_eq!(c.heartbeat(6, "g", 1, &b, None), Some(E::IllegalGeneration));
    }

    #[test]
    fn expired_session_triggers_a_rebalance_without_the_member() {
        let mut c = Coordinator::new(config());
        let (a, _) = new_member(&mut c, 0, 10);
        sync(&mut c, 0, 12, "g", 1, &a, None, vec![]);
        let (b, _) = new_member(&mut c, 0, 20);
        c.join(0, 13, req(&a, None, &["range"]));
        sync(&mut c, 0, 14, "g", 2, &a, None, vec![]);
        sync(&mut c, 0, 22, "g", 2, &b, None, vec![]);
        // b stops heartbeating; a keeps going.
        assert_eq!(c.heartbeat(900, "g", 2, &a, None), None);
        let fx = c.tick(1_001);
        assert!(fx.answers.is_empty());
        let g = c.group("g").expect("group");
        assert!(!g.members.contains_key(&b));
        assert_eq!(g.state, State::PreparingRebalance);
        let fx = c.join(1_002, 15, req(&a, None, &["range"]));
        let ja = join_answer(&fx, 15).expect("a alone completes it");
        assert_eq!((ja.generation, ja.members.len()), (3, 1));
    }

    #[test]
    fn members_that_do_not_rejoin_are_dropped_at_the_rebalance_deadline() {
        let mut c = Coordinator::new(config());
        let (a, _) = new_member(&mut c, 0, 10);
        sync(&mut c, 0, 12, "g", 1, &a, None, vec![]);
        let (_b, _) = new_member(&mut c, 100, 20);
        // a keeps heartbeating but never rejoins; the deadline is the rebalance timeout (2 s).
        for t in (200..2_100).step_by(200) {
            c.heartbeat(t, "g", 1, &a, None);
            let fx = c.tick(t);
            assert!(join_answer(&fx, 21).is_none(), "completed too early at {t}");
        }
        let fx = c.tick(2_101);
        let jb = join_answer(&fx, 21).expect("b's join completes");
        assert_eq!((jb.generation, jb.members.len()), (2, 1));
        assert!(!c.group("g").expect("g").members.contains_key(&a));
    }

    #[test]
    fn static_member_rejoining_keeps_its_assignment_without_a_rebalance() {
        let mut c = Coordinator::new(config());
        let fx = c.join(0, 1, req("", Some("i1"), &["range"]));
        let a = join_answer(&fx, 1)
            .expect("static members need no second round")
            .member_id;
        sync(
            &mut c,
            0,
            2,
            "g",
            1,
            &a,
            None,
            vec![(a.clone(), "p0".into())],
        );
        // Restart: a new JoinGroup with the same instance id and no member id.
        let fx = c.join(10, 3, req("", Some("i1"), &["range"]));
        let again = join_answer(&fx, 3).expect("answered at once");
        assert_eq!((again.error, again.generation), (None, 1));
        assert_ne!(again.member_id, a, "a new member id fences the old one");
        assert_eq!(c.heartbeat(11, "g", 1, &a, None), Some(E::UnknownMemberId));
        assert_eq!(
            c.heartbeat(11, "g", 1, &a, Some("i1")),
            Some(E::FencedInstanceId)
        );
        let fx = sync(&mut c, 12, 4, "g", 1, &again.member_id, Some("i1"), vec![]);
        assert_eq!(
            sync_answer(&fx, 4).expect("sync").assignment.as_ref(),
            b"p0"
        );
        assert_eq!(c.group("g").expect("g").state, State::Stable);
    }

    #[test]
    fn leaving_empties_the_group_and_commits_follow_the_rules() {
        let mut c = Coordinator::new(config());
        let (a, _) = new_member(&mut c, 0, 10);
        let commit = |generation: i32, member: &str| CommitRequest {
            group_id: "g".into(),
            generation,
            member_id: member.into(),
            instance_id: None,
            offsets: vec![("t".into(), 0, 42, -1, "meta".into())],
        };
        // Awaiting the leader's assignment: commits wait.
        assert_eq!(
            c.commit(1, commit(1, &a)).0,
            vec![Some(E::RebalanceInProgress)]
        );
        sync(&mut c, 1, 12, "g", 1, &a, None, vec![]);
        assert_eq!(c.commit(2, commit(1, &a)).0, vec![None]);
        assert_eq!(
            c.commit(2, commit(0, &a)).0,
            vec![Some(E::IllegalGeneration)]
        );
        assert_eq!(
            c.commit(2, commit(-1, "")).0,
            vec![Some(E::UnknownMemberId)],
            "standalone commit into an active group"
        );
        assert_eq!(c.committed("g", "t", 0).map(|o| o.offset), Some(42));
        let mut big = commit(1, &a);
        big.offsets
            .push(("t".into(), 1, 5, -1, "m".repeat(MAX_METADATA_BYTES + 1)));
        assert_eq!(
            c.commit(2, big).0,
            vec![None, Some(E::OffsetMetadataTooLarge)]
        );
        assert_eq!(c.committed("g", "t", 1), None);
        assert_eq!(c.delete_group("g").0, Some(E::NonEmptyGroup));
        let (errors, _) = c.leave(3, "g", &[(a.clone(), None)]);
        assert_eq!(errors, vec![None]);
        assert_eq!(c.group("g").expect("g").state, State::Empty);
        assert_eq!(c.commit(4, commit(-1, "")).0, vec![None]);
        // Offsets of an empty group expire after the retention time.
        let fx = c.tick(10_000);
        assert!(fx
            .store
            .iter()
            .any(|r| matches!(r, StoreRecord::Offset { value: None, .. })));
        assert!(c.group("g").is_none());
    }

    #[test]
    fn state_survives_a_replay_of_its_records() {
        let mut c = Coordinator::new(config());
        let mut records = Vec::new();
        let (a, fx) = new_member(&mut c, 0, 10);
        records.extend(fx.store);
        let fx = sync(
            &mut c,
            0,
            12,
            "g",
            1,
            &a,
            None,
            vec![(a.clone(), "asg".into())],
        );
        records.extend(fx.store);
        let (_, fx) = c.commit(
            1,
            CommitRequest {
                group_id: "g".into(),
                generation: 1,
                member_id: a.clone(),
                instance_id: None,
                offsets: vec![("t".into(), 3, 7, 0, String::new())],
            },
        );
        records.extend(fx.store);
        let mut replayed = Coordinator::new(config());
        for r in records {
            let (k, v) = crate::group::store::encode(&r);
            let r = crate::group::store::decode(k.into(), v.map(Into::into)).expect("decodes");
            replayed.load(5, r);
        }
        let g = replayed.group("g").expect("group");
        assert_eq!((g.state, g.generation), (State::Stable, 1));
        assert_eq!(g.members[&a].assignment.as_ref(), b"asg");
        assert_eq!(replayed.committed("g", "t", 3).map(|o| o.offset), Some(7));
        // The restored member may heartbeat right away.
        assert_eq!(replayed.heartbeat(6, "g", 1, &a, None), None);
    }

    #[test]
    fn protocols_must_overlap_and_timeouts_be_in_range() {
        let mut c = Coordinator::new(config());
        let (_a, _) = new_member(&mut c, 0, 10);
        let fx = c.join(1, 30, req("", None, &["roundrobin"]));
        assert_eq!(
            join_answer(&fx, 30).expect("refused").error,
            Some(E::InconsistentGroupProtocol)
        );
        let mut r = req("", None, &["range"]);
        r.session_timeout_ms = 1;
        let fx = c.join(1, 31, r);
        assert_eq!(
            join_answer(&fx, 31).expect("refused").error,
            Some(E::InvalidSessionTimeout)
        );
    }
}
