//! Notices owed to people about their tokens (issue 26), raised where the facts are learnt
//! and written through the audit log's seam (`notification.needed`, which
//! `service::webhooks::on_audit` turns into outbox rows in the same transaction):
//!
//! - **`token.expiring`** ([`warn_expiring`], run by `tessera serve` every
//!   [`EXPIRING_TICK_SECS`]): a downloaded, enabled token is announced [`EXPIRING_DAYS`]
//!   (30, 7 and 1) days before it expires — each threshold once, and only the thresholds
//!   its lifetime was longer than (a 10-day token gets the 7- and 1-day notices; one found
//!   late, after a stop of the service, gets only the nearest threshold it is within). The
//!   claim of a notice is a row (`token_notices`, `claim_notice`) written in the
//!   transaction that raises it, so it is raised once across restarts and replicas: a
//!   replica racing for the same row waits for the other's commit and inserts nothing.
//! - **`token.used_from_new_network`** ([`networks_seen`], from the edges' usage reports,
//!   `logs::record_usage`): the first allowed use of a token from a network — an IPv4 /24
//!   or an IPv6 /48 ([`network_of`]) — it was not used from in the last 30 days raises one
//!   event naming the network, the address and the edge, however many requests the batch
//!   and the following batches hold. Per token the store keeps the [`MAX_NETWORKS`] (32)
//!   networks seen most recently (`token_networks`; the least recently seen is dropped
//!   first, and a dropped network is new again). The first network a token is ever used
//!   from is learnt without an event (its owner's own first use). At most
//!   [`MAX_NETWORK_ALERTS_PER_DAY`] events per token in 24 hours: a network past that
//!   bound is not recorded, so it is raised once the bound allows. Together these keep
//!   the bound, at most one event per token and network per day, for a token used
//!   from at most 32 networks (a network is dropped only when 32 others were seen after
//!   it); beyond that the daily bound still holds per token.

use super::{audit, Ctx, Result};
use crate::model::{EdgeCredential, TokenStatus};
use crate::store::notifications::NetworkRecord;
use crate::store::Tx;
use crate::timefmt;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The days before expiry a token's owner is warned, nearest first.
pub const EXPIRING_DAYS: [i64; 3] = [1, 7, 30];

/// How often `tessera serve` looks for tokens to warn about.
pub const EXPIRING_TICK_SECS: u64 = 60;

/// Tokens warned about per threshold in one transaction (the next tick takes the rest).
const EXPIRING_BATCH: i64 = 200;

/// Whether any token is owed an expiry notice now (the cheap read before
/// [`warn_expiring`]'s write).
pub fn any_expiring(tx: &mut dyn Tx, ctx: &Ctx) -> Result<bool> {
    for days in EXPIRING_DAYS {
        if !tx.expiring_tokens(ctx.now, days, 1)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Raises `token.expiring` for every token owed one now (see the module's text); how
/// many were raised. Thresholds are taken nearest first, so a token within a day of its
/// expiry is claimed at 1 day and no longer matches the 7- and 30-day scans.
pub fn warn_expiring(tx: &mut dyn Tx, ctx: &Ctx) -> Result<usize> {
    let mut raised = 0;
    for days in EXPIRING_DAYS {
        for id in tx.expiring_tokens(ctx.now, days, EXPIRING_BATCH)? {
            let Some(t) = tx.get_token(&id)? else {
                continue;
            };
            if !tx.claim_notice(&t.id, &t.org_id, "expiring", days, ctx.now)? {
                continue;
            }
            // Read again under the claim: a token revoked, disabled or rotated since the
            // scan is not announced (its claim stays, so it is not looked at again).
            if t.status(ctx.now) != TokenStatus::Enabled || tx.rotation_of(&t.id)?.is_some() {
                continue;
            }
            let owner = super::load_user(tx, &t.user_id)?;
            let recipients = super::leaks::recipients(tx, &t)?;
            audit(
                tx,
                ctx,
                "notifications",
                &t.org_id,
                "notification.needed",
                &t.id,
                json!({
                    "event": "token.expiring",
                    "token": t.id,
                    "name": t.name,
                    "owner": owner.id,
                    "owner_username": owner.username,
                    "expires_at": timefmt::format(t.expires_at),
                    "days": days,
                    "recipients": recipients,
                }),
            )?;
            raised += 1;
        }
    }
    Ok(raised)
}

/// Networks kept per token (the most recently seen).
pub const MAX_NETWORKS: usize = 32;

/// A network not seen for this long is new again.
pub const NETWORK_FORGOTTEN_SECS: i64 = 30 * 86_400;

/// `token.used_from_new_network` events per token in any 24 hours, at most.
pub const MAX_NETWORK_ALERTS_PER_DAY: usize = 8;

/// A kept network's last sighting is written at most this often (a batch that only
/// confirms a known network writes nothing more).
const TOUCH_SECS: i64 = 3_600;

/// The network an address belongs to, as the events name it: the /24 of an IPv4 address
/// (an IPv4-mapped IPv6 address counts as IPv4), the /48 of an IPv6 address.
pub fn network_of(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(a) => {
            let [o0, o1, o2, _] = a.octets();
            format!("{o0}.{o1}.{o2}.0/24")
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0);
            format!("{net}/48")
        }
    }
}

/// An allowed use of a token from an address, as a usage report told it.
#[derive(Clone, Debug)]
pub struct Sighting {
    pub token_id: String,
    pub org_id: String,
    pub ip: IpAddr,
    pub at: i64,
}

/// Learns the networks a usage batch's allowed uses came from (see the module's text),
/// raising `token.used_from_new_network` for the new ones. The batch's tokens are read
/// (and, on PostgreSQL, locked) by the caller, so two batches naming a token take turns.
pub fn networks_seen(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    edge: &EdgeCredential,
    sightings: &[Sighting],
) -> Result<()> {
    // Per token and network: the first use in the batch (which the event names) and the
    // last (which moves the network's last sighting).
    let mut by_token: BTreeMap<&str, BTreeMap<String, (&Sighting, i64)>> = BTreeMap::new();
    for s in sightings {
        let nets = by_token.entry(&s.token_id).or_default();
        nets.entry(network_of(s.ip))
            .and_modify(|(first, last)| {
                if s.at < first.at {
                    *first = s;
                }
                *last = (*last).max(s.at);
            })
            .or_insert((s, s.at));
    }
    for (token_id, nets) in by_token {
        let mut kept = tx.token_networks(token_id)?;
        let mut order: Vec<(String, &Sighting, i64)> =
            nets.into_iter().map(|(n, (f, l))| (n, f, l)).collect();
        order.sort_by(|a, b| a.1.at.cmp(&b.1.at).then_with(|| a.0.cmp(&b.0)));
        for (network, first, last) in order {
            if let Some(k) = kept.iter_mut().find(|k| k.network == network) {
                if first.at - k.last_seen_at <= NETWORK_FORGOTTEN_SECS {
                    if last >= k.last_seen_at + TOUCH_SECS {
                        tx.touch_token_network(token_id, &network, last)?;
                        k.last_seen_at = last;
                    }
                    continue;
                }
            }
            let baseline = kept.is_empty();
            if !baseline {
                let recent = kept
                    .iter()
                    .filter(|k| k.alerted_at.is_some_and(|a| a > ctx.now - 86_400))
                    .count();
                if recent >= MAX_NETWORK_ALERTS_PER_DAY {
                    continue;
                }
            }
            let record = NetworkRecord {
                token_id: token_id.to_string(),
                network: network.clone(),
                org_id: first.org_id.clone(),
                first_seen_at: first.at,
                last_seen_at: last,
                alerted_at: (!baseline).then_some(ctx.now),
                edge_id: edge.id.clone(),
            };
            tx.put_token_network(&record)?;
            kept.retain(|k| k.network != network);
            kept.push(record);
            while kept.len() > MAX_NETWORKS {
                let Some((i, _)) = kept
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| k.network != network)
                    .min_by(|a, b| {
                        a.1.last_seen_at
                            .cmp(&b.1.last_seen_at)
                            .then_with(|| a.1.network.cmp(&b.1.network))
                    })
                else {
                    break;
                };
                let gone = kept.remove(i);
                tx.delete_token_network(token_id, &gone.network)?;
            }
            if !baseline {
                new_network(tx, ctx, edge, token_id, &network, first)?;
            }
        }
    }
    Ok(())
}

/// Raises one `token.used_from_new_network`.
fn new_network(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    edge: &EdgeCredential,
    token_id: &str,
    network: &str,
    first: &Sighting,
) -> Result<()> {
    let Some(t) = tx.get_token(token_id)? else {
        return Ok(());
    };
    let owner = super::load_user(tx, &t.user_id)?;
    let recipients = super::leaks::recipients(tx, &t)?;
    audit(
        tx,
        ctx,
        "notifications",
        &t.org_id,
        "notification.needed",
        &t.id,
        json!({
            "event": "token.used_from_new_network",
            "token": t.id,
            "name": t.name,
            "owner": owner.id,
            "owner_username": owner.username,
            "network": network,
            "ip": first.ip.to_string(),
            "at": timefmt::format(first.at),
            "edge": edge.id,
            "edge_name": edge.name,
            "recipients": recipients,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::network_of;

    #[test]
    fn networks_are_a_24_or_a_48() {
        for (ip, net) in [
            ("203.0.113.7", "203.0.113.0/24"),
            ("203.0.113.255", "203.0.113.0/24"),
            ("::ffff:198.51.100.9", "198.51.100.0/24"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1::/48"),
            ("2001:db8:1:ffff::1", "2001:db8:1::/48"),
            ("::1", "::/48"),
        ] {
            assert_eq!(network_of(ip.parse().unwrap()), net, "{ip}");
        }
    }
}
