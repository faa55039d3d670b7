//! Order enrichment with the Streams API: orders joined with their payments (a stream-stream
//! join within 10 minutes), re-keyed by customer and enriched from a customers table (a
//! stream-table join).
//!
//! `cargo run --example orders_enrichment` runs embedded on generated customers, orders and
//! payments, prints the paid orders with their customers, and checks them against the same
//! join computed directly; `-- --brokers HOST:PORT` runs the same topology against a server.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{check_same, clock, AnyResult, Env, Rng};
use serde::{Deserialize, Serialize};
use strom::streams::{json_serde, JoinWindows, StreamsBuilder, StreamsConfig};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Customer {
    name: String,
    tier: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    order_id: String,
    customer_id: String,
    item: String,
    amount_cents: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payment {
    order_id: String,
    method: String,
}

/// An order with its payment (the stream-stream join's result).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PaidOrder {
    order: Order,
    method: String,
}

/// A paid order with its customer (the stream-table join's result); `customer` is `None`
/// for customers the table does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EnrichedOrder {
    order_id: String,
    item: String,
    amount_cents: i64,
    method: String,
    customer: Option<Customer>,
}

json_serde!(Customer, Order, Payment, PaidOrder, EnrichedOrder);

const NAMES: &[&str] = &[
    "Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger", "Radia",
];
const SURNAMES: &[&str] = &[
    "Lovelace", "Hopper", "Liskov", "Thompson", "Hamilton", "Ritchie",
];
const TIERS: &[&str] = &["basic", "silver", "gold"];
const ITEMS: &[&str] = &["book", "lamp", "kettle", "headphones", "backpack", "chair"];
const METHODS: &[&str] = &["card", "paypal", "transfer"];
/// Customers in the table; orders also come from a few it does not know.
const CUSTOMERS: u64 = 40;
const UNKNOWN_CUSTOMERS: u64 = 3;
const ORDERS: u64 = 1_500;
const T0: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;
const JOIN_WINDOW: i64 = 10 * MIN;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::finish(run().await)
}

async fn run() -> AnyResult<()> {
    let env = Env::from_args("orders_enrichment").await?;
    let customers = env.name("customers");
    let orders = env.name("orders");
    let payments = env.name("payments");
    let enriched = env.name("enriched-orders");
    env.create_topics(
        &[
            customers.clone(),
            orders.clone(),
            payments.clone(),
            enriched.clone(),
        ],
        3,
    )
    .await?;

    // The topology.
    let builder = StreamsBuilder::new();
    let customer_table = builder.table::<String, Customer>(&customers);
    let order_stream = builder.stream::<String, Order>(&orders); // keyed by order id
    let payment_stream = builder.stream::<String, Payment>(&payments); // keyed by order id
    order_stream
        // An order and its payment at most 10 minutes apart.
        .join(
            &payment_stream,
            |o: &Order, p: &Payment| PaidOrder {
                order: o.clone(),
                method: p.method.clone(),
            },
            JoinWindows::new(
                Duration::from_millis(JOIN_WINDOW as u64),
                Duration::from_secs(60),
            ),
        )
        // Keyed by customer now: the join below repartitions by the new key first.
        .select_key(|_order_id, paid| paid.order.customer_id.clone())
        .left_join_table(&customer_table, |paid, customer| EnrichedOrder {
            order_id: paid.order.order_id.clone(),
            item: paid.order.item.clone(),
            amount_cents: paid.order.amount_cents,
            method: paid.method.clone(),
            customer: customer.cloned(),
        })
        .to(&enriched);
    let topology = builder.build()?;
    println!("{}", topology.describe());

    // Generated input.
    let mut rng = Rng::new(2024);
    let directory: BTreeMap<String, Customer> = (0..CUSTOMERS)
        .map(|c| {
            let name = format!(
                "{} {}",
                NAMES[rng.below(NAMES.len() as u64) as usize],
                SURNAMES[rng.below(SURNAMES.len() as u64) as usize]
            );
            let tier = TIERS[rng.below(TIERS.len() as u64) as usize].to_string();
            (format!("c-{c:03}"), Customer { name, tier })
        })
        .collect();
    let mut order_list: Vec<(Order, i64)> = Vec::new();
    let mut payment_list: Vec<(Payment, i64)> = Vec::new();
    for i in 0..ORDERS {
        let at = T0 + i as i64 * 20_000 + rng.below(20_000) as i64;
        let order = Order {
            order_id: format!("o-{i:05}"),
            customer_id: format!("c-{:03}", rng.below(CUSTOMERS + UNKNOWN_CUSTOMERS)),
            item: ITEMS[rng.below(ITEMS.len() as u64) as usize].to_string(),
            amount_cents: 500 + rng.below(20_000) as i64,
        };
        // Most orders are paid, most of those within the join window.
        if rng.below(100) < 85 {
            let delay = rng.below(14 * MIN as u64) as i64;
            let payment = Payment {
                order_id: order.order_id.clone(),
                method: METHODS[rng.below(METHODS.len() as u64) as usize].to_string(),
            };
            payment_list.push((payment, at + delay));
        }
        order_list.push((order, at));
    }
    let expected = join_directly(&directory, &order_list, &payment_list);

    // The customers go first, with earlier timestamps, so the table is filled before any
    // order reaches the stream-table join. Orders and payments are written before the
    // application starts, each topic in timestamp order as they would be when they happen: the
    // join sees both in one timeline (a payment read after stream time had passed it by more
    // than the join's grace period would be dropped as late).
    payment_list.sort_by_key(|(_, at)| *at);
    let c_at = T0 - 24 * 60 * MIN;
    env.produce(
        &customers,
        directory
            .iter()
            .map(|(id, c)| (id.clone(), c.clone(), c_at)),
    )
    .await?;
    env.produce(
        &orders,
        order_list
            .iter()
            .map(|(o, at)| (o.order_id.clone(), o.clone(), *at)),
    )
    .await?;
    env.produce(
        &payments,
        payment_list
            .iter()
            .map(|(p, at)| (p.order_id.clone(), p.clone(), *at)),
    )
    .await?;

    let config = StreamsConfig::new(&env.name("orders-enrichment"), &env.bootstrap)
        .commit_interval(Duration::from_millis(200));
    let mut app = env.start(topology, config).await?;
    app.wait_until_running(Duration::from_secs(30)).await?;

    let out = env
        .read_until::<String, EnrichedOrder>(&enriched, Duration::from_secs(60), |recs| {
            recs.len() >= expected.len()
        })
        .await?;
    let mut got: BTreeMap<String, (String, EnrichedOrder, i64)> = BTreeMap::new();
    for (customer_id, e, ts) in out {
        let e = e.ok_or("an enriched order was written as null")?;
        if let Some(dup) = got.insert(e.order_id.clone(), (customer_id, e, ts)) {
            return Err(format!("order {} enriched twice", dup.1.order_id).into());
        }
    }
    let metrics = app.metrics();
    app.close().await?;
    env.shutdown().await?;

    println!("the first ten paid orders:");
    for (customer_id, e, ts) in got.values().take(10) {
        let who = match &e.customer {
            Some(c) => format!("{} ({})", c.name, c.tier),
            None => "unknown customer".to_string(),
        };
        println!(
            "  {} {} {customer_id} {who:<26} {:<10} {:>7.2} by {}",
            e.order_id,
            clock(T0, *ts),
            e.item,
            e.amount_cents as f64 / 100.0,
            e.method
        );
    }
    let mut by_tier: BTreeMap<&str, (usize, i64)> = BTreeMap::new();
    for (_, e, _) in got.values() {
        let tier = e.customer.as_ref().map_or("unknown", |c| c.tier.as_str());
        let t = by_tier.entry(tier).or_default();
        t.0 += 1;
        t.1 += e.amount_cents;
    }
    println!("paid orders by customer tier:");
    for (tier, (n, cents)) in &by_tier {
        println!("  {tier:<8} {n:>5} orders {:>11.2}", *cents as f64 / 100.0);
    }

    let got_plain: BTreeMap<String, (String, EnrichedOrder)> = got
        .into_iter()
        .map(|(id, (c, e, _))| (id, (c, e)))
        .collect();
    check_same("enriched orders", &got_plain, &expected)?;
    println!(
        "orders_enrichment: {ORDERS} orders, {} payments, {} paid within {} minutes, all enriched as computed directly ({} late records dropped)",
        payment_list.len(),
        expected.len(),
        JOIN_WINDOW / MIN,
        metrics.tasks.late_dropped
    );
    Ok(())
}

/// The same join computed directly: every order with a payment at most `JOIN_WINDOW` away,
/// keyed by order id, with its customer id and (when the directory has them) its customer.
fn join_directly(
    directory: &BTreeMap<String, Customer>,
    orders: &[(Order, i64)],
    payments: &[(Payment, i64)],
) -> BTreeMap<String, (String, EnrichedOrder)> {
    let paid: BTreeMap<&str, (&Payment, i64)> = payments
        .iter()
        .map(|(p, at)| (p.order_id.as_str(), (p, *at)))
        .collect();
    orders
        .iter()
        .filter_map(|(o, at)| {
            let (p, paid_at) = paid.get(o.order_id.as_str())?;
            if (paid_at - at).abs() > JOIN_WINDOW {
                return None;
            }
            let e = EnrichedOrder {
                order_id: o.order_id.clone(),
                item: o.item.clone(),
                amount_cents: o.amount_cents,
                method: p.method.clone(),
                customer: directory.get(&o.customer_id).cloned(),
            };
            Some((o.order_id.clone(), (o.customer_id.clone(), e)))
        })
        .collect()
}
