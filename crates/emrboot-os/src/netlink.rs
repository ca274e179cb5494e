//! The node's interfaces and addresses, through rtnetlink (no `ip` command, no shell).

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::Handle;
use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink: cannot open a socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("netlink {op}: {reason}")]
    Call { op: &'static str, reason: String },
    #[error("no network interface has MAC {mac} (IMDS says it is this node's primary ENI)")]
    NoSuchMac { mac: String },
}

/// A Linux network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
}

/// The node's interfaces and addresses, as ip-takeover and release-ip use them: [`Netlink`] on
/// a node, a fake in the phases' unit tests.
#[async_trait::async_trait]
pub trait Addresses: Send + Sync {
    /// The interface with this MAC. Names differ between AMIs (eth0 on AL2, ens5 on AL2023);
    /// the MAC is what IMDS and EC2 know.
    async fn link_by_mac(&self, mac: &str) -> Result<Link, NetlinkError>;
    async fn has_address(
        &self,
        link: &Link,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<bool, NetlinkError>;
    /// Adds `ip/prefix`; returns false when it was already there (amazon-ec2-net-utils on AL2023
    /// adds the same /32 by itself once EC2 maps the IP, so racing it is normal).
    async fn add_address(
        &self,
        link: &Link,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<bool, NetlinkError>;
    /// Removes `ip/prefix`; returns false when it was not there.
    async fn remove_address(
        &self,
        link: &Link,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<bool, NetlinkError>;
}

pub struct Netlink {
    handle: Handle,
}

fn call(op: &'static str) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    move |e| NetlinkError::Call {
        op,
        reason: e.to_string(),
    }
}

/// `02:00:00:ab:cd:ef` from the raw bytes.
fn mac_text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Netlink {
    /// Opens a netlink socket in this process's network namespace.
    pub fn connect() -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    async fn find(
        &self,
        link: &Link,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<Option<AddressMessage>, NetlinkError> {
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute();
        while let Some(msg) = addrs.try_next().await.map_err(call("list addresses"))? {
            let matches = msg.header.prefix_len == prefix
                && msg.attributes.iter().any(|a| {
                    matches!(a, AddressAttribute::Local(IpAddr::V4(a)) | AddressAttribute::Address(IpAddr::V4(a)) if *a == ip)
                });
            if matches {
                return Ok(Some(msg));
            }
        }
        Ok(None)
    }
}

#[async_trait::async_trait]
impl Addresses for Netlink {
    async fn link_by_mac(&self, mac: &str) -> Result<Link, NetlinkError> {
        let want = mac.trim().to_ascii_lowercase();
        let mut links = self.handle.link().get().execute();
        while let Some(msg) = links.try_next().await.map_err(call("list links"))? {
            let mut name = None;
            let mut addr = None;
            for a in &msg.attributes {
                match a {
                    LinkAttribute::IfName(n) => name = Some(n.clone()),
                    LinkAttribute::Address(b) => addr = Some(mac_text(b)),
                    _ => {}
                }
            }
            if addr.as_deref() == Some(want.as_str()) {
                return Ok(Link {
                    index: msg.header.index,
                    name: name.unwrap_or_default(),
                });
            }
        }
        Err(NetlinkError::NoSuchMac { mac: want })
    }

    async fn has_address(
        &self,
        link: &Link,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<bool, NetlinkError> {
        Ok(self.find(link, ip, prefix).await?.is_some())
    }

    async fn add_address(
        &self,
        link: &Link,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<bool, NetlinkError> {
        if self.has_address(link, ip, prefix).await? {
            return Ok(false);
        }
        match self
            .handle
            .address()
            .add(link.index, IpAddr::V4(ip), prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc_eexist() => {
                Ok(false)
            }
            Err(e) => Err(call("add address")(e)),
        }
    }

    async fn remove_address(
        &self,
        link: &Link,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<bool, NetlinkError> {
        let Some(msg) = self.find(link, ip, prefix).await? else {
            return Ok(false);
        };
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code().abs() == libc_eaddrnotavail() =>
            {
                Ok(false)
            }
            Err(e) => Err(call("delete address")(e)),
        }
    }
}

fn libc_eexist() -> i32 {
    nix::errno::Errno::EEXIST as i32
}

fn libc_eaddrnotavail() -> i32 {
    nix::errno::Errno::EADDRNOTAVAIL as i32
}

#[cfg(test)]
mod tests {
    #[test]
    fn macs_print_as_ec2_does() {
        assert_eq!(
            super::mac_text(&[2, 0, 0, 0xab, 0xcd, 0x0f]),
            "02:00:00:ab:cd:0f"
        );
    }
}
