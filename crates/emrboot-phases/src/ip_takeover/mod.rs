//! Phase `ip-takeover` (primary master only) and its undo, `release-ip`.
//!
//! The fixed IP moves between ENIs with one AssignPrivateIpAddresses and AllowReassignment:
//! never unassign first, or a failure between two calls leaves the IP on no ENI (the seed's bug).
//! Everything about the node's network comes from IMDS; the Linux interface is found by MAC.

use crate::{per_boot, shutdown_hook};
use anyhow::{anyhow, Context};
use async_trait::async_trait;
use emrboot_aws::Ec2;
use emrboot_config::{IpTakeover as Cfg, PhaseName};
use emrboot_node::{Metadata, NetworkFacts};
use emrboot_os::nat;
use emrboot_os::netlink::Link;
use emrboot_runner::{Actions, Ctx, Phase, PhaseError, Precheck};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// How long EC2 may take to show a reassigned IP in IMDS.
const IMDS_WAIT: Duration = Duration::from_secs(120);
/// Who holds the IP is looked up again before the assign when the checks are older than this
/// (install may have run for minutes in between, and another master may have taken the IP).
const FRESH: Duration = Duration::from_secs(30);

/// Who holds the fixed IP before we act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// This node's ENI (IMDS lists it): no EC2 call needed.
    Us,
    /// The reserved ENI: take it over.
    Reserved,
    /// No ENI: assign it.
    Nobody,
}

/// What the checks found; reused by plan and apply so a run makes each EC2 call once.
#[derive(Debug, Clone)]
pub struct Assessment {
    pub net: NetworkFacts,
    pub link: Link,
    pub holder: Holder,
    pub at: Instant,
}

#[derive(Default)]
pub struct IpTakeover {
    assessed: OnceCell<Assessment>,
}

pub(crate) fn config(ctx: &Ctx) -> Result<&Cfg, PhaseError> {
    ctx.config
        .ip_takeover
        .as_ref()
        .ok_or_else(|| PhaseError::invalid(anyhow!("no [ip_takeover] table")))
}

/// HA clusters have three masters; only the primary one (job-flow.json) takes the IP.
pub(crate) fn non_primary_reason(ctx: &Ctx) -> Option<String> {
    let primary = ctx.node.info.primary_master_id()?;
    (primary != ctx.node.instance_id).then(|| {
        format!(
            "not the primary master (job-flow.json masterInstanceId is {primary}, this is {})",
            ctx.node.instance_id
        )
    })
}

/// The checks that need no EC2 call: subnet, primary IP, interface.
fn check_network(cfg: &Cfg, net: &NetworkFacts) -> Result<(), PhaseError> {
    if !net.subnet.contains(&cfg.address) {
        return Err(PhaseError::invalid(anyhow!(
            "ip_takeover.address {} is outside this node's subnet {} (IMDS subnet-ipv4-cidr-block)",
            cfg.address,
            net.subnet
        )));
    }
    let offset = u32::from(cfg.address) - u32::from(net.subnet.network());
    if offset < 4 || cfg.address == net.subnet.broadcast() {
        return Err(PhaseError::invalid(anyhow!(
            "ip_takeover.address {} is one of the addresses AWS reserves in {} (the first four and the last)",
            cfg.address,
            net.subnet
        )));
    }
    if cfg.address == net.primary_ip {
        return Err(PhaseError::invalid(anyhow!(
            "ip_takeover.address {} is this node's primary IP",
            cfg.address
        )));
    }
    if cfg.reserved_eni == net.interface_id {
        return Err(PhaseError::invalid(anyhow!(
            "ip_takeover.reserved_eni {} is this node's own ENI",
            cfg.reserved_eni
        )));
    }
    Ok(())
}

/// Who holds the IP. Ours: no call. Otherwise the reserved ENI by id, then, if it does not
/// hold the IP, the ENIs holding that address. Any ENI but ours or the reserved one: refuse.
pub async fn find_holder(
    ec2: &dyn Ec2,
    cfg: &Cfg,
    net: &NetworkFacts,
) -> Result<Holder, PhaseError> {
    if net.local_ipv4s.contains(&cfg.address) {
        return Ok(Holder::Us);
    }
    let reserved = ec2.eni(&cfg.reserved_eni).await?.ok_or_else(|| {
        PhaseError::invalid(anyhow!(
            "ip_takeover.reserved_eni {} does not exist (ec2:DescribeNetworkInterfaces)",
            cfg.reserved_eni
        ))
    })?;
    if reserved.primary_ip == Some(cfg.address) {
        return Err(PhaseError::invalid(anyhow!(
            "ip_takeover.address {} is the primary IP of the reserved ENI {}; EC2 never moves a \
             primary IP: use one of its secondary IPs",
            cfg.address,
            cfg.reserved_eni
        )));
    }
    if reserved.private_ips.contains(&cfg.address) {
        return Ok(Holder::Reserved);
    }
    let holders = ec2.enis_with_address(cfg.address).await?;
    if let Some(other) = holders
        .iter()
        .find(|e| e.id != net.interface_id && e.id != cfg.reserved_eni)
    {
        return Err(PhaseError::invalid(anyhow!(
            "{} is held by {}, which is neither this node's ENI ({}) nor the reserved ENI ({}); refusing to take it",
            cfg.address,
            other.id,
            net.interface_id,
            cfg.reserved_eni
        )));
    }
    Ok(Holder::Nobody)
}

fn assign_action(cfg: &Cfg, net: &NetworkFacts, holder: &Holder) -> String {
    let from = match holder {
        Holder::Reserved => format!("from {}", cfg.reserved_eni),
        _ => "(held by no ENI)".to_string(),
    };
    format!(
        "ec2:AssignPrivateIpAddresses {} to {} {from}, AllowReassignment=true",
        cfg.address, net.interface_id
    )
}

fn addr_action(cfg: &Cfg, link: &Link) -> String {
    format!("add {}/32 to {} (netlink)", cfg.address, link.name)
}

fn nat_action(chain: &str, cfg: &Cfg, net: &NetworkFacts) -> String {
    format!(
        "iptables -t nat -A {chain} {}",
        nat::dnat_rule(cfg.address, net.primary_ip)
    )
}

/// Polls IMDS until it lists `ip` on the interface with `mac`.
pub async fn wait_for_imds(
    imds: &dyn Metadata,
    mac: &str,
    ip: Ipv4Addr,
    bound: Duration,
    abort: &(dyn Fn() -> bool + Sync),
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if abort() {
            return Err(anyhow!("stopped waiting for IMDS to list {ip}"));
        }
        let ips = imds.local_ipv4s(mac).await?;
        if ips.contains(&ip) {
            tracing::info!(
                phase = "ip-takeover",
                waited_ms = start.elapsed().as_millis() as u64,
                "IMDS lists {ip}"
            );
            return Ok(());
        }
        if start.elapsed() >= bound {
            return Err(anyhow!(
                "EC2 accepted the assignment of {ip}, but IMDS did not list it on {mac} within {}s",
                bound.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl IpTakeover {
    async fn assessment(&self, ctx: &Ctx) -> Result<&Assessment, PhaseError> {
        self.assessed
            .get_or_try_init(|| async {
                let cfg = config(ctx)?;
                let net = ctx.doors.imds.network().await.map_err(PhaseError::invalid)?;
                check_network(cfg, &net)?;
                let nl = ctx.doors.netlink().await?;
                let link = nl.link_by_mac(&net.mac).await.map_err(PhaseError::invalid)?;
                let ec2 = ctx.doors.ec2().await?;
                let holder = find_holder(ec2.as_ref(), cfg, &net).await?;
                tracing::info!(phase = "ip-takeover", interface = %link.name, holder = ?holder, "assessed");
                Ok(Assessment {
                    net,
                    link,
                    holder,
                    at: Instant::now(),
                })
            })
            .await
    }
}

#[async_trait]
impl Phase for IpTakeover {
    fn name(&self) -> PhaseName {
        PhaseName::IpTakeover
    }

    async fn check(&self, ctx: &Ctx) -> Result<Precheck, PhaseError> {
        if let Some(why) = non_primary_reason(ctx) {
            return Ok(Precheck::Skip(why));
        }
        self.assessment(ctx).await?;
        Ok(Precheck::Run)
    }

    async fn plan(&self, ctx: &Ctx) -> Result<Vec<String>, PhaseError> {
        self.converge(ctx, true).await
    }

    async fn apply(&self, ctx: &Ctx) -> Result<Vec<String>, PhaseError> {
        self.converge(ctx, false).await
    }
}

impl IpTakeover {
    /// plan (dry run) and apply: each action is decided once, here, from the assessment and
    /// the node's addresses and rules, so apply takes what plan listed.
    async fn converge(&self, ctx: &Ctx, dry_run: bool) -> Result<Vec<String>, PhaseError> {
        let cfg = config(ctx)?;
        let a = self.assessment(ctx).await?;
        let mut actions = Actions::new(PhaseName::IpTakeover, dry_run);
        // The way back comes before the IP moves: a node must never hold the IP with no
        // shutdown action, kept binary or kept config to give it back (a full state disk fails
        // the run here, before any AWS call). shutdown-hook then finds its action in place.
        actions.did_all(per_boot::ensure_boot_unit(ctx, dry_run)?);
        actions.did_all(shutdown_hook::ensure_action(ctx, dry_run)?);
        // From the holder check to the last rule, release-ip waits for us, and we stop as soon
        // as it asks (see emrboot_runner::ip_owner). A plan takes no lock and never stops.
        let _owner = match dry_run {
            true => None,
            false => Some(ctx.state.ip_lock(OWNER_WAIT)?),
        };
        let mut owned = Owned {
            ctx,
            cfg,
            dry_run,
            changed: false,
        };
        owned.stop_if_released().await?;
        if a.holder != Holder::Us {
            if !dry_run {
                let ec2 = ctx.doors.ec2().await?;
                if a.at.elapsed() > FRESH {
                    // Refuses (naming the ENI) if another ENI took the IP since the checks.
                    find_holder(ec2.as_ref(), cfg, &a.net).await?;
                }
                owned.stop_if_released().await?;
                owned.changed = true;
                ec2.assign_private_ip(&a.net.interface_id, cfg.address)
                    .await?;
            }
            actions.did(assign_action(cfg, &a.net, &a.holder));
            if !dry_run {
                owned.stop_if_released().await?;
                let released = || ctx.state.release_requested();
                let imds = ctx.doors.imds.as_ref();
                if let Err(e) =
                    wait_for_imds(imds, &a.net.mac, cfg.address, IMDS_WAIT, &released).await
                {
                    owned.stop_if_released().await?;
                    return Err(e.into());
                }
            }
            actions.did(imds_wait_action(cfg, &a.net));
        }
        owned.stop_if_released().await?;
        let nl = ctx.doors.netlink().await?;
        let added = if dry_run {
            !nl.has_address(&a.link, cfg.address, 32).await?
        } else {
            owned.changed = true;
            nl.add_address(&a.link, cfg.address, 32).await?
        };
        if added {
            actions.did(addr_action(cfg, &a.link));
        }
        let nat = ctx.doors.nat().await?;
        let have = match dry_run {
            true => nat.present(cfg.address, a.net.primary_ip).await?,
            false => Vec::new(),
        };
        for chain in nat::CHAINS {
            owned.stop_if_released().await?;
            let added = if dry_run {
                !have.contains(&chain)
            } else {
                nat.ensure_in(chain, cfg.address, a.net.primary_ip).await?
            };
            if added {
                actions.did(nat_action(chain, cfg, &a.net));
            }
        }
        if !dry_run && actions.is_empty() {
            tracing::info!(
                "{} already ours, on {}, with both rules",
                cfg.address,
                a.link.name
            );
        }
        Ok(actions.into_vec())
    }
}

/// A wait, not a change, but recorded like one: a run's record is its plan.
fn imds_wait_action(cfg: &Cfg, net: &NetworkFacts) -> String {
    format!("wait until IMDS lists {} on {}", cfg.address, net.mac)
}

mod release;
pub use release::{release, RELEASE_EC2_BOUND};
use release::{Owned, OWNER_WAIT};

#[cfg(test)]
mod converge_tests;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
