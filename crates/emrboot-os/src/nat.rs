//! The DNAT rules that send traffic for the fixed IP to the node's primary IP, through the
//! `iptables` crate (it runs the iptables binary with an argument vector, never a shell).
//!
//! Both chains are needed: PREROUTING for traffic from other hosts, OUTPUT for traffic from the
//! node itself, which never passes PREROUTING.

use std::net::Ipv4Addr;
use std::time::Duration;

pub const CHAINS: [&str; 2] = ["PREROUTING", "OUTPUT"];
const TABLE: &str = "nat";
/// iptables waits for the xtables lock; another agent holding it must not hang the run.
const BOUND: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
#[error("iptables -t nat {op} {chain} {rule}: {reason}")]
pub struct NatError {
    pub op: &'static str,
    pub chain: &'static str,
    pub rule: String,
    pub reason: String,
}

/// `-d IP/32 -j DNAT --to-destination PRIMARY`
pub fn dnat_rule(fixed: Ipv4Addr, primary: Ipv4Addr) -> String {
    format!("-d {fixed}/32 -j DNAT --to-destination {primary}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Check,
    Append,
    Delete,
}

impl Op {
    fn flag(self) -> &'static str {
        match self {
            Op::Check => "-C",
            Op::Append => "-A",
            Op::Delete => "-D",
        }
    }
}

/// The two DNAT rules of the fixed IP, as ip-takeover and release-ip use them: [`Nat`] on a
/// node, a fake in the phases' unit tests.
#[async_trait::async_trait]
pub trait NatRules: Send + Sync {
    /// Which of the two rules are present.
    async fn present(
        &self,
        fixed: Ipv4Addr,
        primary: Ipv4Addr,
    ) -> Result<Vec<&'static str>, NatError>;
    /// Adds the rule to `chain` if absent; `true` if it added it.
    async fn ensure_in(
        &self,
        chain: &'static str,
        fixed: Ipv4Addr,
        primary: Ipv4Addr,
    ) -> Result<bool, NatError>;
    /// Removes the rules, every copy of them; returns the chains it removed from. A rule that
    /// another process removed first (two release-ip at once) counts as removed by it.
    async fn remove(
        &self,
        fixed: Ipv4Addr,
        primary: Ipv4Addr,
    ) -> Result<Vec<&'static str>, NatError>;
}

/// The iptables binary, probed once (`iptables --version`) and reused for every rule.
pub struct Nat {
    cmd: &'static str,
    has_check: bool,
    has_wait: bool,
}

impl Nat {
    pub async fn new() -> Result<Nat, NatError> {
        let probe = tokio::task::spawn_blocking(|| {
            iptables::new(false)
                .map(|i| (i.cmd, i.has_check, i.has_wait))
                .map_err(|e| e.to_string())
        });
        let err = |reason: String| NatError {
            op: "--version",
            chain: "",
            rule: String::new(),
            reason,
        };
        match tokio::time::timeout(BOUND, probe).await {
            Ok(Ok(Ok((cmd, has_check, has_wait)))) => Ok(Nat {
                cmd,
                has_check,
                has_wait,
            }),
            Ok(Ok(Err(e))) => Err(err(format!("cannot run iptables: {e}"))),
            Ok(Err(join)) => Err(err(join.to_string())),
            Err(_) => Err(err(format!("no answer within {}s", BOUND.as_secs()))),
        }
    }

    fn handle(&self) -> iptables::IPTables {
        iptables::IPTables {
            cmd: self.cmd,
            has_check: self.has_check,
            has_wait: self.has_wait,
            is_numeric: true,
        }
    }

    /// Runs one iptables call off the async threads, bounded.
    async fn ipt(&self, op: Op, chain: &'static str, rule: String) -> Result<bool, NatError> {
        let err = |reason: String| NatError {
            op: op.flag(),
            chain,
            rule: rule.clone(),
            reason,
        };
        let ipt = self.handle();
        let r = rule.clone();
        let task = tokio::task::spawn_blocking(move || -> Result<bool, String> {
            match op {
                Op::Check => ipt.exists(TABLE, chain, &r).map_err(|e| e.to_string()),
                Op::Append => ipt
                    .append(TABLE, chain, &r)
                    .map(|_| true)
                    .map_err(|e| e.to_string()),
                Op::Delete => ipt
                    .delete(TABLE, chain, &r)
                    .map(|_| true)
                    .map_err(|e| e.to_string()),
            }
        });
        match tokio::time::timeout(BOUND, task).await {
            Ok(Ok(r)) => r.map_err(|e| err(e.trim().to_string())),
            Ok(Err(join)) => Err(err(join.to_string())),
            Err(_) => Err(err(format!("no answer within {}s", BOUND.as_secs()))),
        }
    }
}

#[async_trait::async_trait]
impl NatRules for Nat {
    async fn present(
        &self,
        fixed: Ipv4Addr,
        primary: Ipv4Addr,
    ) -> Result<Vec<&'static str>, NatError> {
        let mut out = Vec::new();
        for chain in CHAINS {
            if self
                .ipt(Op::Check, chain, dnat_rule(fixed, primary))
                .await?
            {
                out.push(chain);
            }
        }
        Ok(out)
    }

    async fn ensure_in(
        &self,
        chain: &'static str,
        fixed: Ipv4Addr,
        primary: Ipv4Addr,
    ) -> Result<bool, NatError> {
        if self
            .ipt(Op::Check, chain, dnat_rule(fixed, primary))
            .await?
        {
            return Ok(false);
        }
        self.ipt(Op::Append, chain, dnat_rule(fixed, primary)).await
    }

    async fn remove(
        &self,
        fixed: Ipv4Addr,
        primary: Ipv4Addr,
    ) -> Result<Vec<&'static str>, NatError> {
        let mut removed = Vec::new();
        for chain in CHAINS {
            // Bounded: a rule is present a few times at most (the seed appended one per run).
            for _ in 0..16 {
                if !self
                    .ipt(Op::Check, chain, dnat_rule(fixed, primary))
                    .await?
                {
                    break;
                }
                if let Err(e) = self.ipt(Op::Delete, chain, dnat_rule(fixed, primary)).await {
                    if self
                        .ipt(Op::Check, chain, dnat_rule(fixed, primary))
                        .await?
                    {
                        return Err(e);
                    }
                    break;
                }
                if !removed.contains(&chain) {
                    removed.push(chain);
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_rule_is_exactly_the_contracts() {
        let r = super::dnat_rule(
            "172.31.0.10".parse().unwrap(),
            "172.31.0.4".parse().unwrap(),
        );
        assert_eq!(r, "-d 172.31.0.10/32 -j DNAT --to-destination 172.31.0.4");
    }
}
