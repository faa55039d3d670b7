//! `strom cluster info`.

use strom_client::Admin;

use super::{msg, Result};

/// Prints the cluster id, the controller and every broker (id, address, rack).
pub async fn info(brokers: &str) -> Result<()> {
    let admin = Admin::connect(brokers).await.map_err(msg)?;
    let c = admin.describe_cluster().await.map_err(msg)?;
    println!(
        "cluster id: {}",
        c.cluster_id.as_deref().unwrap_or("(none)")
    );
    println!("controller: {}", c.controller);
    println!("{:<8} {:<30} rack", "broker", "address");
    for b in &c.brokers {
        println!(
            "{:<8} {:<30} {}",
            b.id,
            b.addr,
            b.rack.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
