//! Fakes of the outside systems ip-takeover and release-ip reach through `Doors`, for unit
//! tests. The EC2 fake models EC2 where moto does not: in moto AllowReassignment is ignored
//! (an IP held by another ENI is assigned anyway and then sits on both ENIs), and its address
//! filter sees primary IPs only. This fake refuses a held IP without AllowReassignment, moves
//! it with, and sees secondary IPs in the filter, as EC2 does. The IMDS fake lists on this
//! node's interface what the EC2 fake has on its ENI, as EC2 does once it has remapped.

use super::*;
use emrboot_aws::{AwsError, Eni};
use emrboot_config::{Common, Role};
use emrboot_os::nat::{NatError, NatRules};
use emrboot_os::netlink::{Addresses, NetlinkError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct FakeEc2 {
    pub enis: Mutex<BTreeMap<String, Vec<Ipv4Addr>>>,
    calls: Mutex<Vec<String>>,
    /// Runs while EC2 handles an AssignPrivateIpAddresses (another process acting meanwhile).
    #[allow(clippy::type_complexity)]
    pub on_assign: Mutex<Option<Box<dyn Fn() + Send>>>,
}

impl FakeEc2 {
    pub fn with(enis: &[(&str, &[&str])]) -> Self {
        let f = FakeEc2::default();
        for (id, ips) in enis {
            let ips = ips.iter().map(|s| s.parse().unwrap()).collect();
            f.enis.lock().unwrap().insert(id.to_string(), ips);
        }
        f
    }
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    pub fn holders(&self, ip: Ipv4Addr) -> Vec<String> {
        let enis = self.enis.lock().unwrap();
        enis.iter()
            .filter(|(_, v)| v.contains(&ip))
            .map(|(k, _)| k.clone())
            .collect()
    }
    /// What EC2 does: without AllowReassignment a held IP is an error; with it the IP moves.
    pub fn assign(
        &self,
        eni: &str,
        ip: Ipv4Addr,
        allow_reassignment: bool,
    ) -> Result<(), AwsError> {
        let mut enis = self.enis.lock().unwrap();
        let held_elsewhere = enis.iter().any(|(k, v)| k != eni && v.contains(&ip));
        if held_elsewhere && !allow_reassignment {
            return Err(AwsError {
                call: "ec2:AssignPrivateIpAddresses",
                code: Some("InvalidParameterValue".into()),
                message: format!("{ip} is already assigned"),
            });
        }
        for v in enis.values_mut() {
            v.retain(|a| *a != ip);
        }
        enis.get_mut(eni).unwrap().push(ip);
        Ok(())
    }
}

#[async_trait]
impl Ec2 for FakeEc2 {
    async fn instance_tags(&self, _: &str) -> Result<BTreeMap<String, String>, AwsError> {
        unreachable!("ip-takeover reads no tags")
    }
    async fn create_tags(&self, _: &str, _: &BTreeMap<String, String>) -> Result<(), AwsError> {
        unreachable!("ip-takeover writes no tags")
    }
    async fn eni(&self, id: &str) -> Result<Option<Eni>, AwsError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("DescribeNetworkInterfaces id={id}"));
        let enis = self.enis.lock().unwrap();
        Ok(enis.get(id).map(|ips| eni(id, ips)))
    }
    async fn enis_with_address(&self, ip: Ipv4Addr) -> Result<Vec<Eni>, AwsError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("DescribeNetworkInterfaces address={ip}"));
        let enis = self.enis.lock().unwrap();
        Ok(enis
            .iter()
            .filter(|(_, v)| v.contains(&ip))
            .map(|(k, v)| eni(k, v))
            .collect())
    }
    async fn assign_private_ip(&self, eni: &str, ip: Ipv4Addr) -> Result<(), AwsError> {
        // SdkEc2 always sends AllowReassignment=true (see emrboot-aws's wire test); model that.
        self.calls.lock().unwrap().push(format!(
            "AssignPrivateIpAddresses {ip} -> {eni} AllowReassignment=true"
        ));
        if let Some(during) = self.on_assign.lock().unwrap().take() {
            during();
        }
        self.assign(eni, ip, true)
    }
}

/// The first address of an ENI is its primary, as EC2 lists it.
pub fn eni(id: &str, ips: &[Ipv4Addr]) -> Eni {
    Eni {
        id: id.into(),
        primary_ip: ips.first().copied(),
        private_ips: ips.to_vec(),
    }
}

pub const FIXED: &str = "172.31.5.10";

pub fn cfg() -> Cfg {
    Cfg {
        common: Common {
            roles: vec![Role::Master],
            required: true,
        },
        address: FIXED.parse().unwrap(),
        reserved_eni: "eni-0a1b2c3d4e5f60718".into(),
    }
}

pub fn net(local: &[&str]) -> NetworkFacts {
    NetworkFacts {
        mac: "02:00:00:00:00:01".into(),
        interface_id: "eni-master000".into(),
        subnet: "172.31.0.0/20".parse().unwrap(),
        primary_ip: "172.31.0.4".parse().unwrap(),
        local_ipv4s: local.iter().map(|s| s.parse().unwrap()).collect(),
    }
}

pub const MAC: &str = "02:00:00:00:00:01";
pub const OUR_ENI: &str = "eni-master000";
pub const PRIMARY: &str = "172.31.0.4";

/// IMDS for the node of `net()`: its facts, and the addresses the EC2 fake has on its ENI.
pub struct FakeImds {
    pub ec2: Arc<FakeEc2>,
}

#[async_trait]
impl Metadata for FakeImds {
    async fn get(&self, path: &str) -> Result<Option<String>, emrboot_node::ImdsError> {
        let base = format!("meta-data/network/interfaces/macs/{MAC}");
        let v = match path {
            "meta-data/mac" => MAC.to_string(),
            "meta-data/local-ipv4" => PRIMARY.to_string(),
            p if p == format!("{base}/interface-id") => OUR_ENI.to_string(),
            p if p == format!("{base}/subnet-ipv4-cidr-block") => "172.31.0.0/20".to_string(),
            p if p == format!("{base}/local-ipv4s") => {
                let enis = self.ec2.enis.lock().unwrap();
                let ips = enis.get(OUR_ENI).cloned().unwrap_or_default();
                ips.iter()
                    .map(|ip| ip.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            _ => return Ok(None),
        };
        Ok(Some(v))
    }
}

/// One interface, `ens5`, with MAC; its addresses as netlink would list them.
#[derive(Default)]
pub struct FakeLinks {
    pub addrs: Mutex<Vec<(Ipv4Addr, u8)>>,
}

#[async_trait]
impl Addresses for FakeLinks {
    async fn link_by_mac(&self, mac: &str) -> Result<Link, NetlinkError> {
        match mac == MAC {
            true => Ok(Link {
                index: 2,
                name: "ens5".into(),
            }),
            false => Err(NetlinkError::NoSuchMac { mac: mac.into() }),
        }
    }
    async fn has_address(&self, _: &Link, ip: Ipv4Addr, p: u8) -> Result<bool, NetlinkError> {
        Ok(self.addrs.lock().unwrap().contains(&(ip, p)))
    }
    async fn add_address(&self, _: &Link, ip: Ipv4Addr, p: u8) -> Result<bool, NetlinkError> {
        let mut a = self.addrs.lock().unwrap();
        let new = !a.contains(&(ip, p));
        if new {
            a.push((ip, p));
        }
        Ok(new)
    }
    async fn remove_address(&self, _: &Link, ip: Ipv4Addr, p: u8) -> Result<bool, NetlinkError> {
        let mut a = self.addrs.lock().unwrap();
        let had = a.contains(&(ip, p));
        a.retain(|x| *x != (ip, p));
        Ok(had)
    }
}

/// The nat table's rules, as (chain, rule) pairs; a rule may be there more than once.
#[derive(Default)]
pub struct FakeNat {
    pub rules: Mutex<Vec<(&'static str, String)>>,
}

#[async_trait]
impl NatRules for FakeNat {
    async fn present(&self, f: Ipv4Addr, p: Ipv4Addr) -> Result<Vec<&'static str>, NatError> {
        let rules = self.rules.lock().unwrap();
        let rule = nat::dnat_rule(f, p);
        Ok(nat::CHAINS
            .into_iter()
            .filter(|c| rules.contains(&(*c, rule.clone())))
            .collect())
    }
    async fn ensure_in(
        &self,
        chain: &'static str,
        f: Ipv4Addr,
        p: Ipv4Addr,
    ) -> Result<bool, NatError> {
        let mut rules = self.rules.lock().unwrap();
        let r = (chain, nat::dnat_rule(f, p));
        let new = !rules.contains(&r);
        if new {
            rules.push(r);
        }
        Ok(new)
    }
    async fn remove(&self, f: Ipv4Addr, p: Ipv4Addr) -> Result<Vec<&'static str>, NatError> {
        let mut rules = self.rules.lock().unwrap();
        let rule = nat::dnat_rule(f, p);
        let chains = nat::CHAINS
            .into_iter()
            .filter(|c| rules.contains(&(*c, rule.clone())))
            .collect();
        rules.retain(|(_, r)| *r != rule);
        Ok(chains)
    }
}

/// A primary master with `[ip_takeover]`, in a temporary root and state dir, whose outside
/// systems are the fakes above. `at_start` says where the fixed IP is in the EC2 fake.
pub struct FakeNode {
    pub ec2: Arc<FakeEc2>,
    pub links: Arc<FakeLinks>,
    pub nat: Arc<FakeNat>,
    pub dir: tempfile::TempDir,
}

impl FakeNode {
    pub fn new(enis: &[(&str, &[&str])]) -> Self {
        FakeNode {
            ec2: Arc::new(FakeEc2::with(enis)),
            links: Arc::default(),
            nat: Arc::default(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A fresh Ctx each time, as each `emrboot run` builds its own; the fakes persist.
    pub fn ctx(&self) -> Ctx {
        let config = format!(
            "[ip_takeover]\naddress = \"{FIXED}\"\nreserved_eni = \"eni-0a1b2c3d4e5f60718\"\n"
        );
        crate::testkit::ctx(self.dir.path(), &config, |doors| {
            doors
                .with_imds(Arc::new(FakeImds {
                    ec2: self.ec2.clone(),
                }))
                .with_ec2(self.ec2.clone())
                .with_netlink(self.links.clone())
                .with_nat(self.nat.clone())
        })
    }
}
