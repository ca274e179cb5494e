//! EC2: every call emrboot makes, behind one trait so the phases can be tested against a fake
//! that models EC2 where moto does not (see tests/README.md).

use crate::AwsError;
use async_trait::async_trait;
use aws_sdk_ec2::types::Filter;
use std::collections::BTreeMap;

#[async_trait]
pub trait Ec2: Send + Sync {
    /// All tags of one instance (DescribeTags filtered on the resource id).
    async fn instance_tags(&self, instance_id: &str) -> Result<BTreeMap<String, String>, AwsError>;
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
}
