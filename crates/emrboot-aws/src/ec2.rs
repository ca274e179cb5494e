//! EC2: every call emrboot makes, behind one trait so the phases can be tested against a fake
//! that models EC2 where moto does not (see tests/README.md).

use crate::AwsError;
use async_trait::async_trait;
use aws_sdk_ec2::types::Filter;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A network interface as ip-takeover needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eni {
    pub id: String,
    /// The ENI's primary private IP: EC2 never moves it to another ENI.
    pub primary_ip: Option<Ipv4Addr>,
    pub private_ips: Vec<Ipv4Addr>,
}

/// The EC2 calls emrboot makes, and no others. There is deliberately no unassign: moving the
/// fixed IP is always one AssignPrivateIpAddresses with AllowReassignment, so the IP is never
/// on no ENI at all.
#[async_trait]
pub trait Ec2: Send + Sync {
    /// All tags of one instance (DescribeTags filtered on the resource id).
    async fn instance_tags(&self, instance_id: &str) -> Result<BTreeMap<String, String>, AwsError>;

    /// One CreateTags call carrying every tag.
    async fn create_tags(
        &self,
        instance_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), AwsError>;

    /// DescribeNetworkInterfaces by id; `None` when EC2 says it does not exist.
    async fn eni(&self, eni_id: &str) -> Result<Option<Eni>, AwsError>;

    /// DescribeNetworkInterfaces filtered on `addresses.private-ip-address`.
    async fn enis_with_address(&self, ip: Ipv4Addr) -> Result<Vec<Eni>, AwsError>;

    /// AssignPrivateIpAddresses of `ip` to `eni_id` with AllowReassignment=true.
    async fn assign_private_ip(&self, eni_id: &str, ip: Ipv4Addr) -> Result<(), AwsError>;
}

pub struct SdkEc2 {
    client: aws_sdk_ec2::Client,
}

impl SdkEc2 {
    pub fn new(client: aws_sdk_ec2::Client) -> Self {
        SdkEc2 { client }
    }
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

fn to_eni(ni: &aws_sdk_ec2::types::NetworkInterface) -> Eni {
    Eni {
        id: ni.network_interface_id().unwrap_or_default().to_string(),
        primary_ip: ni.private_ip_address().and_then(|a| a.parse().ok()),
        private_ips: ni
            .private_ip_addresses()
            .iter()
            .filter_map(|a| a.private_ip_address()?.parse().ok())
            .collect(),
    }
}

#[async_trait]
impl Ec2 for SdkEc2 {
    async fn instance_tags(&self, instance_id: &str) -> Result<BTreeMap<String, String>, AwsError> {
        let mut tags = BTreeMap::new();
        let mut pages = self
            .client
            .describe_tags()
            .filters(filter("resource-id", instance_id))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::new("ec2:DescribeTags", e))?;
            for t in page.tags() {
                if let (Some(k), Some(v)) = (t.key(), t.value()) {
                    tags.insert(k.to_string(), v.to_string());
                }
            }
        }
        Ok(tags)
    }

    async fn create_tags(
        &self,
        instance_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), AwsError> {
        let tags = tags
            .iter()
            .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build());
        self.client
            .create_tags()
            .resources(instance_id)
            .set_tags(Some(tags.collect()))
            .send()
            .await
            .map_err(|e| AwsError::new("ec2:CreateTags", e))?;
        Ok(())
    }

    async fn eni(&self, eni_id: &str) -> Result<Option<Eni>, AwsError> {
        let out = self
            .client
            .describe_network_interfaces()
            .network_interface_ids(eni_id)
            .send()
            .await;
        match out {
            Ok(o) => Ok(o.network_interfaces().first().map(to_eni)),
            Err(e) => {
                let e = AwsError::new("ec2:DescribeNetworkInterfaces", e);
                if e.code.as_deref() == Some("InvalidNetworkInterfaceID.NotFound") {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn enis_with_address(&self, ip: Ipv4Addr) -> Result<Vec<Eni>, AwsError> {
        let out = self
            .client
            .describe_network_interfaces()
            .filters(filter("addresses.private-ip-address", &ip.to_string()))
            .send()
            .await
            .map_err(|e| AwsError::new("ec2:DescribeNetworkInterfaces", e))?;
        Ok(out.network_interfaces().iter().map(to_eni).collect())
    }

    async fn assign_private_ip(&self, eni_id: &str, ip: Ipv4Addr) -> Result<(), AwsError> {
        self.client
            .assign_private_ip_addresses()
            .network_interface_id(eni_id)
            .private_ip_addresses(ip.to_string())
            .allow_reassignment(true)
            .send()
            .await
            .map_err(|e| AwsError::new("ec2:AssignPrivateIpAddresses", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod wire_tests {
    //! What SdkEc2 puts on the wire. moto ignores AllowReassignment, so the bench cannot show
    //! it; this captures the request itself from a one-shot HTTP listener on loopback.
    use super::*;
    use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn capture(reply: &'static str, call: impl AsyncFnOnce(SdkEc2)) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 8192];
            // Read headers and the form body (the request is small; stop at Content-Length).
            loop {
                let n = s.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
            s.write_all(resp.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&req).to_string()
        });
        let conf = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("ap-northeast-2"))
            .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "test"))
            .endpoint_url(url)
            .build();
        call(SdkEc2::new(aws_sdk_ec2::Client::from_conf(conf))).await;
        server.await.unwrap()
    }

    #[tokio::test]
    async fn assign_carries_allow_reassignment() {
        let reply = r#"<AssignPrivateIpAddressesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><networkInterfaceId>eni-1</networkInterfaceId></AssignPrivateIpAddressesResponse>"#;
        let req = capture(reply, async |ec2| {
            ec2.assign_private_ip("eni-0123456789abcdef0", "172.31.5.10".parse().unwrap())
                .await
                .unwrap();
        })
        .await;
        let body = req.split("\r\n\r\n").nth(1).unwrap();
        assert!(body.contains("Action=AssignPrivateIpAddresses"), "{body}");
        assert!(body.contains("AllowReassignment=true"), "{body}");
        assert!(
            body.contains("NetworkInterfaceId=eni-0123456789abcdef0"),
            "{body}"
        );
        assert!(body.contains("PrivateIpAddress.1=172.31.5.10"), "{body}");
    }

    #[tokio::test]
    async fn tags_go_in_one_call_with_spaces_intact() {
        let reply = r#"<CreateTagsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><return>true</return></CreateTagsResponse>"#;
        let tags: BTreeMap<String, String> = [("Biz Unit", "EMR X"), ("Name", "n-MASTER")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let req = capture(reply, async |ec2| {
            ec2.create_tags("i-1", &tags).await.unwrap()
        })
        .await;
        let body = req.split("\r\n\r\n").nth(1).unwrap();
        assert!(body.contains("Action=CreateTags"), "{body}");
        assert!(
            body.contains("Tag.1.Key=Biz%20Unit") && body.contains("Tag.1.Value=EMR%20X"),
            "{body}"
        );
        assert!(body.contains("Tag.2.Key=Name"), "{body}");
    }
}
