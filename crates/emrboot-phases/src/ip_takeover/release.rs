//! Giving the fixed IP back: `release-ip`, and a run of ip-takeover that release-ip asked to
//! stop (the owner handshake over `ip.lock` and `release-requested`).

use super::*;
use emrboot_runner::Doors;

/// How long ip-takeover waits for a release-ip (or another run's ip-takeover) to let go.
pub(super) const OWNER_WAIT: Duration = Duration::from_secs(60);

/// ip-takeover while it holds `ip.lock`.
pub(super) struct Owned<'a> {
    pub(super) ctx: &'a Ctx,
    pub(super) cfg: &'a Cfg,
    /// A plan: nothing to stop, since it changes nothing.
    pub(super) dry_run: bool,
    /// Whether this run may have changed the IP in EC2 or on the node under the lock.
    pub(super) changed: bool,
}

impl Owned<'_> {
    /// Stops when release-ip has asked: after giving back what this run took, since the
    /// release-ip that asked may have stopped waiting for us (its 50 s bound).
    pub(super) async fn stop_if_released(&self) -> Result<(), PhaseError> {
        if self.dry_run || !self.ctx.state.release_requested() {
            return Ok(());
        }
        let why = "release-ip asked this run to stop";
        if !self.changed {
            tracing::warn!(phase = "ip-takeover", "{why}: the fixed IP is left alone");
            return Err(PhaseError::failed(anyhow!(
                "{why} before it acted on {}",
                self.cfg.address
            )));
        }
        tracing::warn!(
            phase = "ip-takeover",
            "{why}: giving back what this run took"
        );
        let undone = release(self.cfg, &self.ctx.doors, Ok(()), RELEASE_EC2_BOUND).await;
        match undone {
            Ok(actions) => {
                for a in &actions {
                    tracing::info!(phase = "ip-takeover", outcome = "changed", "{a}");
                }
                Err(PhaseError::failed(anyhow!(
                    "{why}; this run gave {} back and removed its /32 and rules",
                    self.cfg.address
                )))
            }
            Err(e) => Err(PhaseError::failed(
                e.context(format!("{why}; giving {} back failed", self.cfg.address)),
            )),
        }
    }
}

/// How long EC2 may take to answer release-ip's calls in all; local cleanup follows anyway.
pub const RELEASE_EC2_BOUND: Duration = Duration::from_secs(30);

/// EC2's answer to who holds the IP, as release-ip needs it: give back only from our own ENI.
pub(super) async fn give_back(
    cfg: &Cfg,
    net: &NetworkFacts,
    ec2: &dyn Ec2,
) -> anyhow::Result<Option<String>> {
    let reserved = ec2
        .eni(&cfg.reserved_eni)
        .await
        .with_context(|| {
            format!(
                "ec2:DescribeNetworkInterfaces {} (the reserved ENI)",
                cfg.reserved_eni
            )
        })?
        .ok_or_else(|| {
            anyhow!(
                "ec2:DescribeNetworkInterfaces: the reserved ENI {} does not exist",
                cfg.reserved_eni
            )
        })?;
    let imds_ours = net.local_ipv4s.contains(&cfg.address);
    if reserved.private_ips.contains(&cfg.address) {
        // Already given back (EC2 shows an IP on one ENI; moto may show both).
        if imds_ours {
            tracing::info!(
                phase = "release-ip",
                "IMDS still lists {} here, but EC2 has it on the reserved ENI {}: already given back",
                cfg.address,
                cfg.reserved_eni
            );
        }
        return Ok(None);
    }
    // Checked right before the one call that moves the IP: IMDS lags EC2, and in a blue/green
    // swap the IP may already be on the new cluster's master.
    let ours = ec2
        .eni(&net.interface_id)
        .await
        .with_context(|| {
            format!(
                "ec2:DescribeNetworkInterfaces {} (this node's ENI)",
                net.interface_id
            )
        })?
        .is_some_and(|e| e.private_ips.contains(&cfg.address));
    if ours != imds_ours {
        tracing::warn!(
            phase = "release-ip",
            "IMDS and EC2 disagree about {}: IMDS local-ipv4s {} it on {}, EC2 {} it there; EC2 decides",
            cfg.address,
            if imds_ours { "lists" } else { "does not list" },
            net.interface_id,
            if ours { "shows" } else { "does not show" },
        );
    }
    if !ours {
        tracing::info!(
            phase = "release-ip",
            "{} is not on this node's ENI {} in EC2: no AssignPrivateIpAddresses (never taken off another ENI)",
            cfg.address,
            net.interface_id
        );
        return Ok(None);
    }
    ec2.assign_private_ip(&cfg.reserved_eni, cfg.address)
        .await
        .with_context(|| {
            format!(
                "ec2:AssignPrivateIpAddresses {} to {}",
                cfg.address, cfg.reserved_eni
            )
        })?;
    Ok(Some(format!(
        "ec2:AssignPrivateIpAddresses {} to {}, AllowReassignment=true",
        cfg.address, cfg.reserved_eni
    )))
}

/// The /32 and both rules off this node; what is already gone counts as done.
async fn remove_local(cfg: &Cfg, net: &NetworkFacts, doors: &Doors) -> anyhow::Result<Vec<String>> {
    let mut actions = Vec::new();
    let mut errors = Vec::new();
    match async {
        let nl = doors.netlink().await?;
        let link = nl.link_by_mac(&net.mac).await?;
        anyhow::Ok(
            nl.remove_address(&link, cfg.address, 32)
                .await?
                .then_some(link),
        )
    }
    .await
    {
        Ok(Some(link)) => actions.push(format!(
            "remove {}/32 from {} (netlink)",
            cfg.address, link.name
        )),
        Ok(None) => {}
        Err(e) => errors.push(format!("{e:#}")),
    }
    match async {
        anyhow::Ok(
            doors
                .nat()
                .await?
                .remove(cfg.address, net.primary_ip)
                .await?,
        )
    }
    .await
    {
        Ok(chains) => actions.extend(chains.into_iter().map(|chain| {
            format!(
                "iptables -t nat -D {chain} {}",
                nat::dnat_rule(cfg.address, net.primary_ip)
            )
        })),
        Err(e) => errors.push(format!("{e:#}")),
    }
    if errors.is_empty() {
        Ok(actions)
    } else {
        Err(anyhow!("{}", errors.join("; ")))
    }
}

/// `release-ip`: the IP back to the reserved ENI in one call, only when EC2 shows it on this
/// node's ENI; then the /32 and both rules off this node whatever EC2 answered (the node is
/// going away). Each step is skipped when already done, so a second call changes nothing.
/// The caller holds `ip.lock`, or `may_call_ec2` says why not (then only the local cleanup).
pub async fn release(
    cfg: &Cfg,
    doors: &Doors,
    may_call_ec2: anyhow::Result<()>,
    ec2_bound: Duration,
) -> anyhow::Result<Vec<String>> {
    let net = doors.imds.network().await.context("release-ip: IMDS")?;
    let give = async {
        let ec2 = doors.ec2().await?;
        give_back(cfg, &net, ec2.as_ref()).await
    };
    let given = match may_call_ec2 {
        Ok(()) => tokio::time::timeout(ec2_bound, give)
            .await
            .unwrap_or_else(|_| {
                Err(anyhow!(
                    "EC2 did not answer within {}s (ec2:DescribeNetworkInterfaces of the reserved ENI {} and this node's {}, then AssignPrivateIpAddresses)",
                    ec2_bound.as_secs(),
                    cfg.reserved_eni,
                    net.interface_id
                ))
            }),
        Err(e) => Err(e),
    };
    let local = remove_local(cfg, &net, doors).await;
    let mut actions: Vec<String> = given
        .as_ref()
        .ok()
        .and_then(|a| a.clone())
        .into_iter()
        .collect();
    let mut errors = Vec::new();
    if let Err(e) = &given {
        errors.push(format!("cannot give {} back: {e:#}", cfg.address));
    }
    match local {
        Ok(a) => actions.extend(a),
        Err(e) => errors.push(format!("cannot remove the /32 and rules: {e:#}")),
    }
    if errors.is_empty() {
        Ok(actions)
    } else {
        for a in &actions {
            tracing::info!(phase = "release-ip", outcome = "changed", "{a}");
        }
        Err(anyhow!("release-ip: {}", errors.join("; ")))
    }
}
