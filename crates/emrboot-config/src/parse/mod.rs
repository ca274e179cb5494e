//! The schema: which tables and keys exist, their types and their rules. The `[install]`
//! table, the largest, is in `install.rs`; the helpers here are shared by both.

use crate::names::Role;
use crate::schema::*;
use crate::values;
use crate::walker::{Field, TableReader, Walker};
use std::collections::BTreeMap;
use toml_edit::Item;

mod install;
use install::install;

/// EC2 allows 50 tags per resource.
pub const MAX_TAGS: usize = 50;
/// Default bound on one build, install or post step of a source build.
pub const DEFAULT_STEP_TIMEOUT_SECS: u64 = 3600;
/// Default bound on the wait for the NFS port and on each mount try.
pub const DEFAULT_EFS_TIMEOUT_SECS: u64 = 60;

pub(crate) fn config(w: &mut Walker<'_>, root: &Item) -> Config {
    let mut cfg = Config::default();
    let Some(mut top) = w.table("", root, None) else {
        return cfg;
    };
    cfg.install = sub_table(w, &mut top, "install", |w, t| Some(install(w, t)));
    cfg.tags = sub_table(w, &mut top, "tags", tags);
    cfg.efs = sub_table(w, &mut top, "efs", efs);
    cfg.ip_takeover = sub_table(w, &mut top, "ip_takeover", ip_takeover);
    cfg.report = sub_table(w, &mut top, "report", report);
    w.finish(top);
    cfg
}

/// The table at KEY in TOP, read by READ; `None` when it is absent, or not a table (reported).
fn sub_table<'t, T>(
    w: &mut Walker<'_>,
    top: &mut TableReader<'t>,
    key: &'static str,
    read: impl FnOnce(&mut Walker<'_>, TableReader<'t>) -> Option<T>,
) -> Option<T> {
    let f = top.field(key)?;
    let t = w.table(&f.path, f.item, f.span.clone())?;
    read(w, t)
}

fn report(w: &mut Walker<'_>, t: TableReader<'_>) -> Option<Report> {
    let (bucket, mut prefix) = s3_only_table(w, t, "report")?;
    // "s3://b/reports" and "s3://b/reports/" name the same place.
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    Some(Report { bucket, prefix })
}

/// A table whose one key is a required `s3 = "s3://bucket/prefix"` (install.cache, report).
fn s3_only_table(
    w: &mut Walker<'_>,
    mut t: TableReader<'_>,
    name: &str,
) -> Option<(String, String)> {
    let span = t.span();
    let s3 = t.field("s3").and_then(|f| checked(w, &f, values::s3_url));
    let missing = s3.is_none() && t.field("s3").is_none();
    w.finish(t);
    if missing {
        w.error(span, format!("`{name}.s3` is required"));
    }
    s3
}

fn common(w: &mut Walker<'_>, t: &mut TableReader<'_>, default_roles: &[Role]) -> Common {
    let roles = t
        .field("roles")
        .and_then(|f| {
            let items = f.str_array(w)?;
            let mut roles = Vec::new();
            for (s, span) in items {
                match s.parse::<Role>() {
                    Ok(r) if !roles.contains(&r) => roles.push(r),
                    Ok(_) => {}
                    Err(e) => w.error(span, format!("`{}`: {e}", f.path)),
                }
            }
            if roles.is_empty() && f.item.as_array().is_some_and(|a| a.is_empty()) {
                let msg = format!(
                    "`{}` is empty: name at least one role, or remove the table",
                    f.path
                );
                w.error(f.span.clone(), msg);
            }
            Some(roles)
        })
        .unwrap_or_else(|| default_roles.to_vec());
    let required = t.field("required").and_then(|f| f.bool(w)).unwrap_or(true);
    Common { roles, required }
}

/// Runs `check` on a string field, reporting its error at the field.
fn checked<T>(
    w: &mut Walker<'_>,
    f: &Field<'_>,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    let s = f.str(w)?;
    match check(&s) {
        Ok(v) => Some(v),
        Err(e) => {
            f.invalid(w, e);
            None
        }
    }
}

fn checked_array(
    w: &mut Walker<'_>,
    f: &Field<'_>,
    check: impl Fn(&str) -> Result<(), String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (s, span) in f.str_array(w).unwrap_or_default() {
        match check(&s) {
            Ok(()) => out.push(s),
            Err(e) => w.error(span, format!("`{}`: {e}", f.path)),
        }
    }
    out
}

fn any_string(_: &str) -> Result<(), String> {
    Ok(())
}

fn tags(w: &mut Walker<'_>, mut t: TableReader<'_>) -> Option<Tags> {
    let common = common(w, &mut t, &Role::ALL);
    let name_suffix = t.field("name_suffix").and_then(|f| {
        checked(w, &f, |s| match s {
            "role" => Ok(NameSuffix::Role),
            other => Err(format!(
                "{other:?} is not a name suffix (the only one is \"role\")"
            )),
        })
    });
    let mut set = BTreeMap::new();
    let mut set_span = t.span();
    if let Some(f) = t.field("set") {
        set_span = f.span.clone();
        if let Some(s) = w.table(&f.path, f.item, f.span.clone()) {
            for (key, key_span, value) in s.entries() {
                let key_ok = match values::tag_key(&key) {
                    Ok(()) => true,
                    Err(e) => {
                        w.error(key_span.clone(), format!("`{}`: {e}", value.path));
                        false
                    }
                };
                if key == "Name" && name_suffix.is_some() {
                    let msg = "`tags.set.Name` conflicts with `name_suffix`, which manages Name";
                    w.error(key_span, msg);
                    continue;
                }
                if let Some(v) = checked(w, &value, |v| values::tag_value(v).map(|_| v.to_string()))
                {
                    if key_ok {
                        set.insert(key, v);
                    }
                }
            }
            // Every key of [tags.set] is free-form, so there is nothing unknown to report.
        }
    }
    let total = set.len() + usize::from(name_suffix.is_some());
    if total > MAX_TAGS {
        w.error(
            set_span,
            format!("{total} tags configured; EC2 allows at most {MAX_TAGS} on an instance"),
        );
    }
    w.finish(t);
    Some(Tags {
        common,
        name_suffix,
        set,
    })
}

fn efs(w: &mut Walker<'_>, mut t: TableReader<'_>) -> Option<Efs> {
    let span = t.span();
    let common = common(w, &mut t, &Role::ALL);
    let fs_id = t
        .field("file_system_id")
        .and_then(|f| checked(w, &f, |s| values::file_system_id(s).map(|_| s.to_string())));
    let dns = t
        .field("dns_name")
        .and_then(|f| checked(w, &f, |s| values::dns_name(s).map(|_| s.to_string())));
    let mount_point = t
        .field("mount_point")
        .and_then(|f| checked(w, &f, values::absolute_path));
    let owner = t
        .field("owner")
        .and_then(|f| checked(w, &f, |s| values::owner(s).map(|_| s.to_string())));
    let options = t
        .field("options")
        .and_then(|f| checked(w, &f, |s| values::mount_options(s).map(|_| s.to_string())))
        .unwrap_or_else(|| DEFAULT_NFS_OPTIONS.to_string());
    let fstab = t
        .field("fstab")
        .and_then(|f| checked(w, &f, values::absolute_path))
        .unwrap_or_else(|| "/etc/fstab".into());
    let timeout_secs = t
        .field("timeout_secs")
        .and_then(|f| f.u64(w))
        .unwrap_or(DEFAULT_EFS_TIMEOUT_SECS);
    let target = match (
        fs_id,
        dns,
        t.field("file_system_id").is_some(),
        t.field("dns_name").is_some(),
    ) {
        (Some(id), None, _, false) => Some(EfsTarget::FileSystemId(id)),
        (None, Some(dns), false, _) => Some(EfsTarget::DnsName(dns)),
        (_, _, true, true) => {
            w.error(
                span.clone(),
                "`efs`: set either `file_system_id` or `dns_name`, not both",
            );
            None
        }
        (None, None, false, false) => {
            w.error(
                span.clone(),
                "`efs`: `file_system_id` or `dns_name` is required",
            );
            None
        }
        _ => None,
    };
    if mount_point.is_none() && t.field("mount_point").is_none() {
        w.error(span, "`efs.mount_point` is required");
    }
    w.finish(t);
    Some(Efs {
        common,
        target: target?,
        mount_point: mount_point?,
        owner,
        options,
        fstab,
        timeout_secs,
    })
}

fn ip_takeover(w: &mut Walker<'_>, mut t: TableReader<'_>) -> Option<IpTakeover> {
    let span = t.span();
    let common = common(w, &mut t, &[Role::Master]);
    let address = t
        .field("address")
        .and_then(|f| checked(w, &f, values::ipv4));
    let reserved_eni = t
        .field("reserved_eni")
        .and_then(|f| checked(w, &f, |s| values::eni_id(s).map(|_| s.to_string())));
    for (key, present) in [
        ("address", t.field("address").is_some()),
        ("reserved_eni", t.field("reserved_eni").is_some()),
    ] {
        if !present {
            w.error(span.clone(), format!("`ip_takeover.{key}` is required"));
        }
    }
    w.finish(t);
    Some(IpTakeover {
        common,
        address: address?,
        reserved_eni: reserved_eni?,
    })
}
