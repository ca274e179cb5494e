//! Phase `tag`: the instance's EC2 tags, in one CreateTags call, and none when they are set.

use anyhow::anyhow;
use async_trait::async_trait;
use emrboot_config::{NameSuffix, PhaseName, Role, Tags};
use emrboot_runner::{Actions, Ctx, Phase, PhaseError, Precheck};
use std::collections::BTreeMap;

pub struct Tag;

/// The tags the instance should carry, given what it carries now.
///
/// `Name` becomes `<current Name>-<ROLE>` once: a name that already ends in `-<ROLE>` is kept,
/// so re-runs add nothing. An instance without a Name gets `<cluster id>-<ROLE>` (or `<ROLE>`
/// where job-flow.json is absent), which is what the seed's script meant to produce.
pub fn desired(
    cfg: &Tags,
    role: Role,
    current: &BTreeMap<String, String>,
    cluster_id: Option<&str>,
) -> BTreeMap<String, String> {
    let mut want = cfg.set.clone();
    if let Some(NameSuffix::Role) = cfg.name_suffix {
        let suffix = format!("-{role}");
        let name = match current.get("Name").map(String::as_str) {
            Some(n) if n.ends_with(&suffix) => n.to_string(),
            Some(n) if !n.is_empty() => format!("{n}{suffix}"),
            _ => match cluster_id {
                Some(id) => format!("{id}{suffix}"),
                None => role.to_string(),
            },
        };
        want.insert("Name".into(), name);
    }
    want
}

/// True when every wanted tag is already there with the wanted value.
pub fn converged(want: &BTreeMap<String, String>, current: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| current.get(k) == Some(v))
}

fn describe(instance_id: &str, tags: &BTreeMap<String, String>) -> String {
    let list: Vec<_> = tags.iter().map(|(k, v)| format!("{k:?}={v:?}")).collect();
    format!("ec2:CreateTags {instance_id}: {}", list.join(", "))
}

impl Tag {
    /// (tags to set, or none when converged). One DescribeTags call.
    async fn work(&self, ctx: &Ctx) -> Result<Option<BTreeMap<String, String>>, PhaseError> {
        let cfg = ctx
            .config
            .tags
            .as_ref()
            .ok_or_else(|| PhaseError::invalid(anyhow!("no [tags] table")))?;
        let ec2 = ctx.doors.ec2().await?;
        let current = ec2.instance_tags(&ctx.node.instance_id).await?;
        let cluster = ctx
            .node
            .info
            .job_flow
            .as_ref()
            .and_then(|j| j.str("jobFlowId"));
        let want = desired(cfg, ctx.node.role, &current, cluster);
        Ok((!converged(&want, &current)).then_some(want))
    }
}

#[async_trait]
impl Phase for Tag {
    fn name(&self) -> PhaseName {
        PhaseName::Tag
    }

    async fn check(&self, _ctx: &Ctx) -> Result<Precheck, PhaseError> {
        // Keys, values and the 50-tag limit were checked with the config.
        Ok(Precheck::Run)
    }

    async fn plan(&self, ctx: &Ctx) -> Result<Vec<String>, PhaseError> {
        let work = self.work(ctx).await?;
        Ok(work
            .map(|t| describe(&ctx.node.instance_id, &t))
            .into_iter()
            .collect())
    }

    async fn apply(&self, ctx: &Ctx) -> Result<Vec<String>, PhaseError> {
        let Some(tags) = self.work(ctx).await? else {
            tracing::info!("tags already set");
            return Ok(Vec::new());
        };
        ctx.doors
            .ec2()
            .await?
            .create_tags(&ctx.node.instance_id, &tags)
            .await?;
        let mut done = Actions::new(PhaseName::Tag, false);
        done.did(describe(&ctx.node.instance_id, &tags));
        Ok(done.into_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emrboot_config::Common;

    fn cfg(suffix: bool) -> Tags {
        Tags {
            common: Common {
                roles: Role::ALL.to_vec(),
                required: true,
            },
            name_suffix: suffix.then_some(NameSuffix::Role),
            set: [("Biz Unit".to_string(), "EMR".to_string())].into(),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn name_is_suffixed_once() {
        let cur = map(&[("Name", "emr-practice")]);
        let want = desired(&cfg(true), Role::Master, &cur, None);
        assert_eq!(want["Name"], "emr-practice-MASTER");
        assert!(!converged(&want, &cur));
        // after the call, the same computation asks for nothing
        let after = map(&[("Name", "emr-practice-MASTER"), ("Biz Unit", "EMR")]);
        let again = desired(&cfg(true), Role::Master, &after, None);
        assert_eq!(again["Name"], "emr-practice-MASTER");
        assert!(converged(&again, &after));
    }

    #[test]
    fn an_instance_without_a_name_gets_the_cluster_id() {
        let want = desired(&cfg(true), Role::Core, &BTreeMap::new(), Some("j-1"));
        assert_eq!(want["Name"], "j-1-CORE");
        let want = desired(&cfg(true), Role::Core, &BTreeMap::new(), None);
        assert_eq!(want["Name"], "CORE");
    }

    #[test]
    fn without_suffix_name_is_left_alone() {
        let cur = map(&[("Name", "x")]);
        let want = desired(&cfg(false), Role::Task, &cur, None);
        assert!(!want.contains_key("Name"));
    }

    #[test]
    fn other_tags_on_the_instance_do_not_matter() {
        let cur = map(&[
            ("Biz Unit", "EMR"),
            ("aws:elasticmapreduce:job-flow-id", "j-1"),
        ]);
        assert!(converged(
            &desired(&cfg(false), Role::Task, &cur, None),
            &cur
        ));
    }
}
