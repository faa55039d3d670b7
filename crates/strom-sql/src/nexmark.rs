//! Nexmark's events: a deterministic generator of people, auctions and bids.
//!
//! Nexmark models an online auction site: people register, some of them open auctions, and
//! everyone bids. Its eight classic queries (`sql/nexmark/q0.sql` .. `q8.sql`) are the common
//! benchmark of streaming SQL engines, and this module generates their input the way the Beam,
//! Flink, Arroyo and RisingWave generators do, so that numbers are comparable:
//!
//! - events come in blocks of 50: 1 person, 3 auctions, 46 bids, always in that order;
//! - person and auction ids are consecutive from 1000, each event's id is a function of its
//!   position in the stream, and every other field comes from a random generator seeded with the
//!   seed and that position, so event `n` is the same whichever events were generated before;
//! - sellers and bidders are mostly "hot" (3 in 4: the first or second person of the latest block
//!   of 100 people), otherwise one of the 1000 most recent people; bids go to a hot auction (the
//!   first of the latest block of 100 auctions) half of the time, otherwise to one of the 100
//!   most recent auctions;
//! - prices are log-uniform in [1, 1,000,000] dollars (in cents), categories 10..=14, an auction
//!   runs for a random time averaging the time it takes to open 100 more auctions;
//! - bids come half from the four hot channels (Google, Facebook, Baidu, Apple), half from
//!   10,000 others; names, cities and states are drawn from the spec's lists;
//! - `extra` pads each event to the spec's average sizes (person 200, auction 500, bid 100 bytes);
//! - event `n`'s `date_time` is `base_time_ms + n · 10⁶ / events_per_second µs`, truncated to
//!   milliseconds: at the default 10,000 events/s, a 10-second window holds 100,000 events.
//!
//! One deliberate difference: the reference generators let an id reach up to 10 people or
//! auctions *ahead* of the newest one (the "lead"), so some bids name auctions that do not exist
//! yet. Here every reference is to a person or auction generated earlier in the stream, so joins
//! against the person table and auctions are exact. Events are never out of order.
//!
//! ```
//! use strom_sql::nexmark::{Event, NexmarkGenerator};
//!
//! let mut events = NexmarkGenerator::new(7);
//! let Event::Person(p) = events.next_event() else { unreachable!() };
//! assert_eq!(p.id, 1000);
//! assert!(matches!(events.next_event(), Event::Auction(a) if a.seller == 1000));
//! ```
//!
//! [`Event::to_json`] gives the JSON the benchmark produces into topics (timestamps as epoch
//! milliseconds), and [`to_record_batches`] the same events as Arrow record batches.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde::Serialize;

use crate::Result;

/// People per block of [`TOTAL_PROPORTION`] events.
const PERSON_PROPORTION: u64 = 1;
/// Auctions per block.
const AUCTION_PROPORTION: u64 = 3;
/// Events per block: 1 person, 3 auctions, 46 bids.
const TOTAL_PROPORTION: u64 = 50;

/// The first person's id.
pub const FIRST_PERSON_ID: i64 = 1000;
/// The first auction's id.
pub const FIRST_AUCTION_ID: i64 = 1000;
/// The lowest category; categories are `FIRST_CATEGORY_ID..FIRST_CATEGORY_ID + 5`.
pub const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: u64 = 5;

/// Hot sellers, bidders and auctions are the first of a block of this many people or auctions.
const HOT_BLOCK: u64 = 100;
/// 1 in this many bids comes from a non-hot channel.
const HOT_CHANNELS_RATIO: u64 = 2;
/// Channels other than the hot ones.
const CHANNELS_NUMBER: u64 = 10_000;
const MIN_STRING_LENGTH: u64 = 3;

const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];

/// Salts separating the random streams of events, hot URLs and channels.
const SALT_HOT_URL: u64 = 0x6a09_e667_f3bc_c908;
const SALT_CHANNEL: u64 = 0xbb67_ae85_84ca_a73b;

/// Settings of a [`NexmarkGenerator`]; [`NexmarkConfig::new`] gives the spec's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct NexmarkConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Events per second of event time (the spec's first-event rate).
    pub events_per_second: u64,
    /// `date_time` of the first event, in milliseconds since the epoch.
    pub base_time_ms: i64,
    /// 1 in this many bids goes to a random recent auction rather than the hot one.
    pub hot_auction_ratio: u64,
    /// 1 in this many auctions is opened by a random recent person rather than the hot seller.
    pub hot_sellers_ratio: u64,
    /// 1 in this many bids is made by a random recent person rather than the hot bidder.
    pub hot_bidders_ratio: u64,
    /// Random sellers and bidders are among this many most recent people.
    pub num_active_people: u64,
    /// Random auctions bid on are among this many most recent auctions; auctions last, on
    /// average, as long as it takes to open this many more.
    pub num_in_flight_auctions: u64,
    /// Average size of a person in bytes (reached by padding `extra`).
    pub avg_person_bytes: usize,
    /// Average size of an auction in bytes.
    pub avg_auction_bytes: usize,
    /// Average size of a bid in bytes.
    pub avg_bid_bytes: usize,
}

impl NexmarkConfig {
    /// The spec's defaults with 10,000 events per second of event time, starting at
    /// 2026-01-01T00:00:00Z.
    pub fn new(seed: u64) -> Self {
        NexmarkConfig {
            seed,
            events_per_second: 10_000,
            base_time_ms: 1_767_225_600_000,
            hot_auction_ratio: 2,
            hot_sellers_ratio: 4,
            hot_bidders_ratio: 4,
            num_active_people: 1000,
            num_in_flight_auctions: 100,
            avg_person_bytes: 200,
            avg_auction_bytes: 500,
            avg_bid_bytes: 100,
        }
    }
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig::new(0)
    }
}

/// A person registering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Person {
    /// Id, consecutive from [`FIRST_PERSON_ID`].
    pub id: i64,
    /// First and last name.
    pub name: String,
    /// E-mail address.
    pub email_address: String,
    /// Four groups of four digits.
    pub credit_card: String,
    /// A US city.
    pub city: String,
    /// A US state (two letters).
    pub state: String,
    /// Event time, milliseconds since the epoch.
    pub date_time: i64,
    /// Padding.
    pub extra: String,
}

/// An auction opening.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Auction {
    /// Id, consecutive from [`FIRST_AUCTION_ID`].
    pub id: i64,
    /// Name of the item sold.
    pub item_name: String,
    /// Its description.
    pub description: String,
    /// Starting price, in cents.
    pub initial_bid: i64,
    /// Reserve price, in cents (at least the initial bid).
    pub reserve: i64,
    /// Event time, milliseconds since the epoch.
    pub date_time: i64,
    /// When the auction closes, milliseconds since the epoch (after `date_time`).
    pub expires: i64,
    /// The seller's person id.
    pub seller: i64,
    /// Category id.
    pub category: i64,
    /// Padding.
    pub extra: String,
}

/// A bid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bid {
    /// The auction's id.
    pub auction: i64,
    /// The bidder's person id.
    pub bidder: i64,
    /// Price, in cents.
    pub price: i64,
    /// Where the bid came from.
    pub channel: String,
    /// The page the bid was made on.
    pub url: String,
    /// Event time, milliseconds since the epoch.
    pub date_time: i64,
    /// Padding.
    pub extra: String,
}

/// The three kinds of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// [`Person`].
    Person,
    /// [`Auction`].
    Auction,
    /// [`Bid`].
    Bid,
}

/// One Nexmark event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new person.
    Person(Person),
    /// A new auction.
    Auction(Auction),
    /// A bid.
    Bid(Bid),
}

impl Event {
    /// The event as one JSON object with snake_case keys; timestamps are epoch milliseconds.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out);
        out
    }

    /// Appends [`Event::to_json`] to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Plain structs of integers and strings: serializing them cannot fail, so an error
        // here could only leave `out` short, never panic.
        let _ = match self {
            Event::Person(p) => serde_json::to_writer(&mut *out, p),
            Event::Auction(a) => serde_json::to_writer(&mut *out, a),
            Event::Bid(b) => serde_json::to_writer(&mut *out, b),
        };
    }

    /// Which kind of event this is.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Person(_) => EventKind::Person,
            Event::Auction(_) => EventKind::Auction,
            Event::Bid(_) => EventKind::Bid,
        }
    }

    /// Its event time, milliseconds since the epoch.
    pub fn date_time(&self) -> i64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }
}

/// SplitMix64: small, fast, and good enough for synthetic data; seeded per event.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng(mix(seed ^ mix(stream.wrapping_add(0x9E37_79B9_7F4A_7C15))))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 3 to `max_len - 1` characters, about 1 in 13 of them `filler`, the rest `a`-`z`; with a
/// space as filler, leading and trailing spaces are trimmed.
fn next_string(rng: &mut Rng, max_len: u64, filler: u8) -> String {
    let len = MIN_STRING_LENGTH + rng.below(max_len.saturating_sub(MIN_STRING_LENGTH));
    let mut s = String::with_capacity(len as usize);
    for _ in 0..len {
        if rng.below(13) == 0 {
            s.push(char::from(filler));
        } else {
            s.push(char::from(b'a' + rng.below(26) as u8));
        }
    }
    if filler == b' ' {
        let trimmed = s.trim_matches(' ');
        if trimmed.len() != s.len() {
            return trimmed.to_string();
        }
    }
    s
}

/// Exactly `len` letters.
fn exact_string(rng: &mut Rng, len: usize) -> String {
    let mut s = String::with_capacity(len);
    let mut bits = 0u64;
    for i in 0..len {
        // Five 12-bit draws per 64-bit number: 26 letters from 4096 values is close to uniform.
        if i % 5 == 0 {
            bits = rng.next_u64();
        }
        s.push(char::from(b'a' + (((bits & 0xfff) * 26) >> 12) as u8));
        bits >>= 12;
    }
    s
}

/// Padding bringing an event of `current` bytes to `avg` bytes on average (±20 %).
fn next_extra(rng: &mut Rng, current: usize, avg: usize) -> String {
    if current > avg {
        return String::new();
    }
    let want = avg - current;
    let delta = (want as f64 * 0.2).round() as usize;
    let len = want - delta + rng.below(2 * delta as u64) as usize;
    exact_string(rng, len)
}

/// A price in cents, log-uniform between $1 and $1,000,000.
fn next_price(rng: &mut Rng) -> i64 {
    (10f64.powf(rng.unit() * 6.0) * 100.0).round() as i64
}

fn base_url(rng: &mut Rng) -> String {
    format!(
        "https://www.nexmark.com/{}/{}/{}/item.htm?query=1",
        next_string(rng, 5, b'_'),
        next_string(rng, 5, b'_'),
        next_string(rng, 5, b'_'),
    )
}

/// The 0-based id of the newest person at event `event_id` (the event itself if a person).
fn last_person(event_id: u64) -> u64 {
    // One person per block, its first event: the block's person is the newest.
    const _: () = assert!(PERSON_PROPORTION == 1);
    event_id / TOTAL_PROPORTION
}

/// The 0-based id of the newest auction at event `event_id` (the event itself if an auction);
/// 0 before the first auction.
fn last_auction(event_id: u64) -> u64 {
    let epoch = event_id / TOTAL_PROPORTION;
    let offset = event_id % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        // This block's auctions come later: the newest is the previous block's last one.
        (epoch * AUCTION_PROPORTION).saturating_sub(1)
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1
    } else {
        epoch * AUCTION_PROPORTION + offset - PERSON_PROPORTION
    }
}

/// Generates Nexmark events one at a time, deterministically from a seed. Also an endless
/// [`Iterator`].
#[derive(Debug, Clone)]
pub struct NexmarkGenerator {
    config: NexmarkConfig,
    /// Event time between consecutive events, in microseconds.
    inter_event_us: f64,
    next_id: u64,
    hot_urls: Vec<String>,
    /// Channel name and URL of each non-hot channel, made on first use.
    channels: Vec<Option<(String, String)>>,
}

impl NexmarkGenerator {
    /// A generator with the spec's defaults ([`NexmarkConfig::new`]).
    pub fn new(seed: u64) -> Self {
        NexmarkGenerator::with_config(NexmarkConfig::new(seed))
    }

    /// A generator with `config` (ratios and counts of 0 are taken as 1).
    pub fn with_config(mut config: NexmarkConfig) -> Self {
        for v in [
            &mut config.events_per_second,
            &mut config.hot_auction_ratio,
            &mut config.hot_sellers_ratio,
            &mut config.hot_bidders_ratio,
            &mut config.num_active_people,
            &mut config.num_in_flight_auctions,
        ] {
            *v = (*v).max(1);
        }
        let hot_urls = (0..HOT_CHANNELS.len() as u64)
            .map(|i| base_url(&mut Rng::new(config.seed ^ SALT_HOT_URL, i)))
            .collect();
        NexmarkGenerator {
            inter_event_us: 1_000_000.0 / config.events_per_second as f64,
            config,
            next_id: 0,
            hot_urls,
            channels: vec![None; CHANNELS_NUMBER as usize],
        }
    }

    /// Its settings.
    pub fn config(&self) -> &NexmarkConfig {
        &self.config
    }

    /// How many events it has generated.
    pub fn events_generated(&self) -> u64 {
        self.next_id
    }

    /// The next event.
    pub fn next_event(&mut self) -> Event {
        let id = self.next_id;
        self.next_id += 1;
        let mut rng = Rng::new(self.config.seed, id);
        let ts = self.timestamp(id);
        match id % TOTAL_PROPORTION {
            r if r < PERSON_PROPORTION => Event::Person(self.person(id, &mut rng, ts)),
            r if r < PERSON_PROPORTION + AUCTION_PROPORTION => {
                Event::Auction(self.auction(id, &mut rng, ts))
            }
            _ => Event::Bid(self.bid(id, &mut rng, ts)),
        }
    }

    /// `date_time` of event `n` (0-based).
    pub fn timestamp(&self, n: u64) -> i64 {
        self.config.base_time_ms + (n as f64 * self.inter_event_us) as i64 / 1000
    }

    /// A random one of the most recent people at event `id`.
    fn recent_person(&self, id: u64, rng: &mut Rng) -> u64 {
        let people = last_person(id) + 1;
        let active = people.min(self.config.num_active_people);
        people - active + rng.below(active)
    }

    /// A random one of the most recent auctions at event `id`.
    fn recent_auction(&self, id: u64, rng: &mut Rng) -> u64 {
        let newest = last_auction(id);
        let oldest = newest.saturating_sub(self.config.num_in_flight_auctions);
        oldest + rng.below(newest - oldest + 1)
    }

    fn person(&self, id: u64, rng: &mut Rng, ts: i64) -> Person {
        let name = format!("{} {}", rng.pick(&FIRST_NAMES), rng.pick(&LAST_NAMES));
        let email_address = format!(
            "{}@{}.com",
            next_string(rng, 7, b' '),
            next_string(rng, 5, b' ')
        );
        let credit_card = format!(
            "{:04} {:04} {:04} {:04}",
            rng.below(10_000),
            rng.below(10_000),
            rng.below(10_000),
            rng.below(10_000)
        );
        let city = rng.pick(&US_CITIES).to_string();
        let state = rng.pick(&US_STATES).to_string();
        let size =
            8 + name.len() + email_address.len() + credit_card.len() + city.len() + state.len();
        let extra = next_extra(rng, size, self.config.avg_person_bytes);
        Person {
            id: last_person(id) as i64 + FIRST_PERSON_ID,
            name,
            email_address,
            credit_card,
            city,
            state,
            date_time: ts,
            extra,
        }
    }

    fn auction(&self, id: u64, rng: &mut Rng, ts: i64) -> Auction {
        let seller = if rng.below(self.config.hot_sellers_ratio) > 0 {
            (last_person(id) / HOT_BLOCK) * HOT_BLOCK
        } else {
            self.recent_person(id, rng)
        };
        let category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES) as i64;
        let initial_bid = next_price(rng);
        // Open for a random time averaging how long opening `num_in_flight_auctions` more
        // auctions takes.
        let events_ahead =
            self.config.num_in_flight_auctions * TOTAL_PROPORTION / AUCTION_PROPORTION;
        let horizon = self.timestamp(id + events_ahead) - ts;
        let expires = ts + 1 + rng.below((horizon * 2).max(1) as u64) as i64;
        let item_name = next_string(rng, 20, b' ');
        let description = next_string(rng, 100, b' ');
        let reserve = initial_bid + next_price(rng);
        let size = 8 + item_name.len() + description.len() + 8 + 8 + 8 + 8 + 8;
        let extra = next_extra(rng, size, self.config.avg_auction_bytes);
        Auction {
            id: last_auction(id) as i64 + FIRST_AUCTION_ID,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time: ts,
            expires,
            seller: seller as i64 + FIRST_PERSON_ID,
            category,
            extra,
        }
    }

    fn bid(&mut self, id: u64, rng: &mut Rng, ts: i64) -> Bid {
        let auction = if rng.below(self.config.hot_auction_ratio) > 0 {
            (last_auction(id) / HOT_BLOCK) * HOT_BLOCK
        } else {
            self.recent_auction(id, rng)
        };
        let bidder = if rng.below(self.config.hot_bidders_ratio) > 0 {
            // The block's second person, so that hot bidders are not the hot sellers; the
            // reference generators may name a person not created yet here, this never does.
            ((last_person(id) / HOT_BLOCK) * HOT_BLOCK + 1).min(last_person(id))
        } else {
            self.recent_person(id, rng)
        };
        let price = next_price(rng);
        let (channel, url) = if rng.below(HOT_CHANNELS_RATIO) > 0 {
            let i = rng.below(HOT_CHANNELS.len() as u64) as usize;
            (HOT_CHANNELS[i].to_string(), self.hot_urls[i].clone())
        } else {
            self.channel(rng.below(CHANNELS_NUMBER))
        };
        let extra = next_extra(rng, 8 + 8 + 8 + 8, self.config.avg_bid_bytes);
        Bid {
            auction: auction as i64 + FIRST_AUCTION_ID,
            bidder: bidder as i64 + FIRST_PERSON_ID,
            price,
            channel,
            url,
            date_time: ts,
            extra,
        }
    }

    /// Channel `i`'s name and URL (the same for every bid from it).
    fn channel(&mut self, i: u64) -> (String, String) {
        let seed = self.config.seed;
        self.channels[i as usize]
            .get_or_insert_with(|| {
                let mut rng = Rng::new(seed ^ SALT_CHANNEL, i);
                let mut url = base_url(&mut rng);
                if rng.below(10) > 0 {
                    let id = (i as i32).reverse_bits().unsigned_abs();
                    url.push_str(&format!("&channel_id={id}"));
                }
                (format!("channel-{i}"), url)
            })
            .clone()
    }
}

impl Iterator for NexmarkGenerator {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        Some(self.next_event())
    }
}

fn field(name: &str, data_type: DataType) -> Field {
    Field::new(name, data_type, false)
}

fn timestamp_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// Arrow schema of [`Person`] (`person` in `sql/nexmark/ddl.sql`).
pub fn person_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("id", DataType::Int64),
        field("name", DataType::Utf8),
        field("email_address", DataType::Utf8),
        field("credit_card", DataType::Utf8),
        field("city", DataType::Utf8),
        field("state", DataType::Utf8),
        field("date_time", timestamp_ms()),
        field("extra", DataType::Utf8),
    ]))
}

/// Arrow schema of [`Auction`].
pub fn auction_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("id", DataType::Int64),
        field("item_name", DataType::Utf8),
        field("description", DataType::Utf8),
        field("initial_bid", DataType::Int64),
        field("reserve", DataType::Int64),
        field("date_time", timestamp_ms()),
        field("expires", timestamp_ms()),
        field("seller", DataType::Int64),
        field("category", DataType::Int64),
        field("extra", DataType::Utf8),
    ]))
}

/// Arrow schema of [`Bid`].
pub fn bid_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("auction", DataType::Int64),
        field("bidder", DataType::Int64),
        field("price", DataType::Int64),
        field("channel", DataType::Utf8),
        field("url", DataType::Utf8),
        field("date_time", timestamp_ms()),
        field("extra", DataType::Utf8),
    ]))
}

/// The schema of events of `kind`.
pub fn schema(kind: EventKind) -> SchemaRef {
    match kind {
        EventKind::Person => person_schema(),
        EventKind::Auction => auction_schema(),
        EventKind::Bid => bid_schema(),
    }
}

/// Events as Arrow record batches, one list per kind, in stream order.
#[derive(Debug, Clone, Default)]
pub struct NexmarkBatches {
    /// People ([`person_schema`]).
    pub person: Vec<RecordBatch>,
    /// Auctions ([`auction_schema`]).
    pub auction: Vec<RecordBatch>,
    /// Bids ([`bid_schema`]).
    pub bid: Vec<RecordBatch>,
}

impl NexmarkBatches {
    /// The batches of `kind`.
    pub fn of(&self, kind: EventKind) -> &[RecordBatch] {
        match kind {
            EventKind::Person => &self.person,
            EventKind::Auction => &self.auction,
            EventKind::Bid => &self.bid,
        }
    }
}

/// Converts `events` to record batches of at most `batch_size` rows (at least 1) per kind.
pub fn to_record_batches<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    batch_size: usize,
) -> Result<NexmarkBatches> {
    let batch_size = batch_size.max(1);
    let mut people = PersonColumns::default();
    let mut auctions = AuctionColumns::default();
    let mut bids = BidColumns::default();
    let mut out = NexmarkBatches::default();
    for event in events {
        match event {
            Event::Person(p) => {
                people.push(p);
                if people.len == batch_size {
                    out.person.push(people.finish()?);
                }
            }
            Event::Auction(a) => {
                auctions.push(a);
                if auctions.len == batch_size {
                    out.auction.push(auctions.finish()?);
                }
            }
            Event::Bid(b) => {
                bids.push(b);
                if bids.len == batch_size {
                    out.bid.push(bids.finish()?);
                }
            }
        }
    }
    if people.len > 0 {
        out.person.push(people.finish()?);
    }
    if auctions.len > 0 {
        out.auction.push(auctions.finish()?);
    }
    if bids.len > 0 {
        out.bid.push(bids.finish()?);
    }
    Ok(out)
}

#[derive(Default)]
struct PersonColumns {
    len: usize,
    id: Int64Builder,
    name: StringBuilder,
    email_address: StringBuilder,
    credit_card: StringBuilder,
    city: StringBuilder,
    state: StringBuilder,
    date_time: TimestampMillisecondBuilder,
    extra: StringBuilder,
}

impl PersonColumns {
    fn push(&mut self, p: &Person) {
        self.len += 1;
        self.id.append_value(p.id);
        self.name.append_value(&p.name);
        self.email_address.append_value(&p.email_address);
        self.credit_card.append_value(&p.credit_card);
        self.city.append_value(&p.city);
        self.state.append_value(&p.state);
        self.date_time.append_value(p.date_time);
        self.extra.append_value(&p.extra);
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        self.len = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.email_address.finish()),
            Arc::new(self.credit_card.finish()),
            Arc::new(self.city.finish()),
            Arc::new(self.state.finish()),
            Arc::new(self.date_time.finish()),
            Arc::new(self.extra.finish()),
        ];
        Ok(RecordBatch::try_new(person_schema(), columns)?)
    }
}

#[derive(Default)]
struct AuctionColumns {
    len: usize,
    id: Int64Builder,
    item_name: StringBuilder,
    description: StringBuilder,
    initial_bid: Int64Builder,
    reserve: Int64Builder,
    date_time: TimestampMillisecondBuilder,
    expires: TimestampMillisecondBuilder,
    seller: Int64Builder,
    category: Int64Builder,
    extra: StringBuilder,
}

impl AuctionColumns {
    fn push(&mut self, a: &Auction) {
        self.len += 1;
        self.id.append_value(a.id);
        self.item_name.append_value(&a.item_name);
        self.description.append_value(&a.description);
        self.initial_bid.append_value(a.initial_bid);
        self.reserve.append_value(a.reserve);
        self.date_time.append_value(a.date_time);
        self.expires.append_value(a.expires);
        self.seller.append_value(a.seller);
        self.category.append_value(a.category);
        self.extra.append_value(&a.extra);
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        self.len = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.item_name.finish()),
            Arc::new(self.description.finish()),
            Arc::new(self.initial_bid.finish()),
            Arc::new(self.reserve.finish()),
            Arc::new(self.date_time.finish()),
            Arc::new(self.expires.finish()),
            Arc::new(self.seller.finish()),
            Arc::new(self.category.finish()),
            Arc::new(self.extra.finish()),
        ];
        Ok(RecordBatch::try_new(auction_schema(), columns)?)
    }
}

#[derive(Default)]
struct BidColumns {
    len: usize,
    auction: Int64Builder,
    bidder: Int64Builder,
    price: Int64Builder,
    channel: StringBuilder,
    url: StringBuilder,
    date_time: TimestampMillisecondBuilder,
    extra: StringBuilder,
}

impl BidColumns {
    fn push(&mut self, b: &Bid) {
        self.len += 1;
        self.auction.append_value(b.auction);
        self.bidder.append_value(b.bidder);
        self.price.append_value(b.price);
        self.channel.append_value(&b.channel);
        self.url.append_value(&b.url);
        self.date_time.append_value(b.date_time);
        self.extra.append_value(&b.extra);
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        self.len = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.auction.finish()),
            Arc::new(self.bidder.finish()),
            Arc::new(self.price.finish()),
            Arc::new(self.channel.finish()),
            Arc::new(self.url.finish()),
            Arc::new(self.date_time.finish()),
            Arc::new(self.extra.finish()),
        ];
        Ok(RecordBatch::try_new(bid_schema(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn events(seed: u64, n: usize) -> Vec<Event> {
        NexmarkGenerator::new(seed).take(n).collect()
    }

    #[test]
    fn same_seed_same_events_other_seed_other_events() {
        let a = events(1, 20_000);
        assert_eq!(a, events(1, 20_000));
        let b = events(2, 20_000);
        assert_ne!(a, b);
        // Event n does not depend on how many events came before: same kinds and ids.
        assert_eq!(
            a.iter().map(Event::kind).collect::<Vec<_>>(),
            b.iter().map(Event::kind).collect::<Vec<_>>()
        );
        assert_eq!(a.iter().map(Event::to_json).collect::<Vec<_>>(), {
            let mut g = NexmarkGenerator::new(1);
            (0..20_000)
                .map(|_| g.next_event().to_json())
                .collect::<Vec<_>>()
        });
    }

    #[test]
    fn proportions_are_1_3_46() {
        let all = events(3, 100_000);
        let count = |k| all.iter().filter(|e| e.kind() == k).count();
        assert_eq!(count(EventKind::Person), 2_000);
        assert_eq!(count(EventKind::Auction), 6_000);
        assert_eq!(count(EventKind::Bid), 92_000);
        for block in all.chunks(50) {
            assert_eq!(block[0].kind(), EventKind::Person);
            assert!(block[1..4].iter().all(|e| e.kind() == EventKind::Auction));
            assert!(block[4..].iter().all(|e| e.kind() == EventKind::Bid));
        }
    }

    #[test]
    fn ids_are_consecutive_and_references_exist() {
        let mut people = HashSet::new();
        let mut auctions = HashSet::new();
        let (mut hot_auction, mut hot_bidder, mut hot_seller) = (0, 0, 0);
        let (mut bids, mut sellers) = (0, 0);
        for e in NexmarkGenerator::new(4).take(200_000) {
            match e {
                Event::Person(p) => {
                    assert_eq!(p.id, FIRST_PERSON_ID + people.len() as i64);
                    people.insert(p.id);
                }
                Event::Auction(a) => {
                    assert_eq!(a.id, FIRST_AUCTION_ID + auctions.len() as i64);
                    assert!(people.contains(&a.seller), "seller {} unknown", a.seller);
                    assert!(a.expires > a.date_time);
                    assert!((10..15).contains(&a.category));
                    assert!(a.initial_bid >= 100 && a.reserve > a.initial_bid);
                    auctions.insert(a.id);
                    sellers += 1;
                    hot_seller += i32::from((a.seller - FIRST_PERSON_ID) % 100 == 0);
                }
                Event::Bid(b) => {
                    assert!(
                        auctions.contains(&b.auction),
                        "auction {} unknown",
                        b.auction
                    );
                    assert!(people.contains(&b.bidder), "bidder {} unknown", b.bidder);
                    assert!((100..=100_000_000).contains(&b.price));
                    bids += 1;
                    hot_auction += i32::from((b.auction - FIRST_AUCTION_ID) % 100 == 0);
                    hot_bidder += i32::from((b.bidder - FIRST_PERSON_ID) % 100 == 1);
                }
            }
        }
        // Hot with probability 1/2 and 3/4 (plus the random picks that land on a hot one).
        let share = |n: i32, of: i32| f64::from(n) / f64::from(of);
        assert!((0.48..0.56).contains(&share(hot_auction, bids)));
        assert!((0.73..0.80).contains(&share(hot_bidder, bids)));
        assert!((0.73..0.80).contains(&share(hot_seller, sellers)));
    }

    #[test]
    fn event_time_advances_at_the_rate() {
        let g = NexmarkGenerator::new(5);
        let base = g.config().base_time_ms;
        let all = events(5, 30_001);
        assert_eq!(all[0].date_time(), base);
        assert_eq!(all[9].date_time(), base);
        assert_eq!(all[10].date_time(), base + 1);
        assert_eq!(all[10_000].date_time(), base + 1_000);
        assert_eq!(all[30_000].date_time(), base + 3_000);
        assert!(all.windows(2).all(|w| w[0].date_time() <= w[1].date_time()));

        let mut slow = NexmarkGenerator::with_config(NexmarkConfig {
            events_per_second: 1_000,
            ..NexmarkConfig::new(5)
        });
        let times: Vec<i64> = (0..3).map(|_| slow.next_event().date_time()).collect();
        assert_eq!(times, [base, base + 1, base + 2]);
    }

    #[test]
    fn fields_come_from_the_spec_lists_and_sizes_average_out() {
        let mut bid_bytes = 0;
        let mut bids = 0;
        let mut channels = HashSet::new();
        for e in NexmarkGenerator::new(6).take(50_000) {
            match e {
                Event::Person(p) => {
                    assert!(US_STATES.contains(&p.state.as_str()));
                    assert!(US_CITIES.contains(&p.city.as_str()));
                    let (first, last) = p.name.split_once(' ').unwrap_or_default();
                    assert!(FIRST_NAMES.contains(&first) && LAST_NAMES.contains(&last));
                    assert_eq!(p.credit_card.len(), 19);
                    assert!(p.email_address.ends_with(".com"));
                }
                Event::Auction(a) => {
                    assert!(!a.item_name.starts_with(' ') && !a.item_name.ends_with(' '));
                }
                Event::Bid(b) => {
                    bids += 1;
                    bid_bytes += 32 + b.extra.len();
                    assert!(b.url.starts_with("https://www.nexmark.com/"));
                    channels.insert(b.channel.clone());
                }
            }
        }
        let avg = bid_bytes as f64 / bids as f64;
        assert!((98.0..102.0).contains(&avg), "average bid size {avg}");
        assert!(channels.contains("Google") && channels.contains("Apple"));
        assert!(channels.len() > 4_000, "{} channels", channels.len());
    }

    #[test]
    fn json_has_snake_case_keys_and_epoch_millis() -> Result<(), serde_json::Error> {
        let all = events(7, 5);
        let person: serde_json::Value = serde_json::from_slice(&all[0].to_json())?;
        assert_eq!(person["id"], 1000);
        assert_eq!(person["date_time"], all[0].date_time());
        for key in [
            "name",
            "email_address",
            "credit_card",
            "city",
            "state",
            "extra",
        ] {
            assert!(person[key].is_string(), "{key} in {person}");
        }
        let auction: serde_json::Value = serde_json::from_slice(&all[1].to_json())?;
        for key in ["initial_bid", "reserve", "expires", "seller", "category"] {
            assert!(auction[key].is_i64(), "{key} in {auction}");
        }
        let bid: serde_json::Value = serde_json::from_slice(&all[4].to_json())?;
        let keys: Vec<&String> = bid
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys.len(), 7);
        for key in [
            "auction",
            "bidder",
            "price",
            "channel",
            "url",
            "date_time",
            "extra",
        ] {
            assert!(bid.get(key).is_some(), "{key} in {bid}");
        }
        Ok(())
    }

    #[test]
    fn record_batches_match_the_json() -> Result<()> {
        let all = events(8, 10_000);
        let batches = to_record_batches(&all, 1024)?;
        let rows = |b: &[RecordBatch]| b.iter().map(RecordBatch::num_rows).sum::<usize>();
        assert_eq!(rows(&batches.person), 200);
        assert_eq!(rows(&batches.auction), 600);
        assert_eq!(rows(&batches.bid), 9_200);
        assert_eq!(batches.bid.len(), 9);
        assert!(batches.bid.iter().all(|b| b.num_rows() <= 1024));
        // Decoding the JSON with the same schema gives the same batches.
        for kind in [EventKind::Person, EventKind::Auction, EventKind::Bid] {
            let mut json = Vec::new();
            for e in all.iter().filter(|e| e.kind() == kind) {
                e.write_json(&mut json);
                json.push(b'\n');
            }
            let decoded = arrow::json::ReaderBuilder::new(schema(kind))
                .with_batch_size(1024)
                .build(std::io::Cursor::new(json))?
                .collect::<Result<Vec<_>, _>>()?;
            assert_eq!(decoded, batches.of(kind), "{kind:?}");
        }
        Ok(())
    }
}
