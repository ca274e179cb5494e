//! Which role this node has, from the sources EMR provides, in order of trust:
//! 1. `isMaster` in instance.json;
//! 2. `instanceRole` in extraInstanceData.json;
//! 3. the node's `instanceGroupId` in job-flow.json `instanceGroups` (absent for fleets);
//! 4. the EC2 tag `aws:elasticmapreduce:instance-group-role` (looked up by the caller).

use crate::info::NodeInfo;
use emrboot_config::Role;
use serde_json::Value;

pub const ROLE_TAG: &str = "aws:elasticmapreduce:instance-group-role";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleFinding {
    pub role: Role,
    /// Where the role came from, for `plan` and the log.
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot tell this node's role: {0}")]
pub struct RoleError(pub String);

/// The role from the info files, or `Ok(None)` when they only say "not a master".
pub fn from_files(info: &NodeInfo) -> Result<Option<RoleFinding>, RoleError> {
    let inst = &info.instance;
    let bad = |v: &Value| {
        RoleError(format!(
            "{}: isMaster is {v}, not true or false",
            inst.path.display()
        ))
    };
    let is_master = match inst.json.get("isMaster") {
        Some(Value::Bool(b)) => Some(*b),
        // Some tools write it as a string, in any case.
        Some(v @ Value::String(s)) => Some(
            s.trim()
                .to_ascii_lowercase()
                .parse::<bool>()
                .map_err(|_| bad(v))?,
        ),
        None | Some(Value::Null) => None,
        Some(v) => return Err(bad(v)),
    };
    if is_master == Some(true) {
        return Ok(Some(found(
            Role::Master,
            format!("{} isMaster=true", inst.path.display()),
        )));
    }
    if let Some(extra) = &info.extra {
        if let Some(r) = extra.str("instanceRole") {
            let role = r
                .parse::<Role>()
                .map_err(|e| RoleError(format!("{}: instanceRole: {e}", extra.path.display())))?;
            return Ok(Some(found(
                role,
                format!("{} instanceRole={r}", extra.path.display()),
            )));
        }
    }
    if let (Some(group), Some(jf)) = (inst.str("instanceGroupId"), &info.job_flow) {
        let groups = jf.json.get("instanceGroups").and_then(Value::as_array);
        let entry = groups
            .into_iter()
            .flatten()
            .find(|g| g.get("instanceGroupId").and_then(Value::as_str) == Some(group));
        if let Some(r) = entry
            .and_then(|g| g.get("instanceRole"))
            .and_then(Value::as_str)
        {
            let role = r.parse::<Role>().map_err(|e| {
                RoleError(format!(
                    "{}: group {group} instanceRole: {e}",
                    jf.path.display()
                ))
            })?;
            return Ok(Some(found(
                role,
                format!("{} group {group} instanceRole={r}", jf.path.display()),
            )));
        }
    }
    Ok(None)
}

/// The role from the EC2 tag's value, once the caller has looked it up.
pub fn from_tag(value: Option<&str>, instance_id: &str) -> Result<RoleFinding, RoleError> {
    let v = value.ok_or_else(|| {
        RoleError(format!(
            "the info files do not say (no isMaster=true, no instanceRole, no matching instance \
             group) and instance {instance_id} has no {ROLE_TAG} tag"
        ))
    })?;
    let role = v
        .parse::<Role>()
        .map_err(|e| RoleError(format!("EC2 tag {ROLE_TAG} on {instance_id}: {e}")))?;
    Ok(found(
        role,
        format!("EC2 tag {ROLE_TAG}={v} on {instance_id}"),
    ))
}

fn found(role: Role, source: String) -> RoleFinding {
    RoleFinding { role, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::InfoFile;
    use serde_json::json;

    fn file(name: &str, json: Value) -> InfoFile {
        InfoFile {
            path: name.into(),
            json,
        }
    }

    fn node(instance: Value, extra: Option<Value>, job_flow: Option<Value>) -> NodeInfo {
        NodeInfo {
            instance: file("instance.json", instance),
            extra: extra.map(|j| file("extraInstanceData.json", j)),
            job_flow: job_flow.map(|j| file("job-flow.json", j)),
        }
    }

    fn groups() -> Value {
        json!({"instanceGroups": [
            {"instanceGroupId": "ig-C", "instanceRole": "Core"},
            {"instanceGroupId": "ig-T", "instanceRole": "task"},
        ]})
    }

    fn role(n: &NodeInfo) -> Option<Role> {
        from_files(n).unwrap().map(|f| f.role)
    }

    #[test]
    fn is_master_wins() {
        let n = node(
            json!({"isMaster": true, "instanceGroupId": "ig-C"}),
            None,
            Some(groups()),
        );
        assert_eq!(role(&n), Some(Role::Master));
        let n = node(json!({"isMaster": "True"}), None, None);
        assert_eq!(role(&n), Some(Role::Master));
        let n = node(json!({"isMaster": 1}), None, None);
        let e = from_files(&n).unwrap_err().to_string();
        assert!(e.contains("instance.json: isMaster"), "{e}");
    }

    #[test]
    fn extra_instance_data_comes_before_groups() {
        let n = node(
            json!({"isMaster": false, "instanceGroupId": "ig-C"}),
            Some(json!({"instanceRole": "TASK"})),
            Some(groups()),
        );
        assert_eq!(role(&n), Some(Role::Task));
    }

    #[test]
    fn groups_match_without_case() {
        let n = node(
            json!({"isMaster": false, "instanceGroupId": "ig-T"}),
            None,
            Some(groups()),
        );
        assert_eq!(role(&n), Some(Role::Task));
    }

    #[test]
    fn a_fleet_node_without_extra_data_needs_the_tag() {
        let n = node(
            json!({"isMaster": false, "instanceFleetId": "if-1"}),
            None,
            Some(json!({})),
        );
        assert_eq!(role(&n), None);
        assert_eq!(from_tag(Some("core"), "i-1").unwrap().role, Role::Core);
        assert!(from_tag(None, "i-1")
            .unwrap_err()
            .to_string()
            .contains("i-1"));
        assert!(from_tag(Some("boss"), "i-1").is_err());
    }

    #[test]
    fn a_bad_role_string_names_the_file() {
        let n = node(
            json!({"isMaster": false}),
            Some(json!({"instanceRole": "WORKER"})),
            None,
        );
        let e = from_files(&n).unwrap_err().to_string();
        assert!(
            e.contains("extraInstanceData.json") && e.contains("WORKER"),
            "{e}"
        );
    }
}
