//! The `[install]` table: packages, pip, source builds and the build cache.

use super::{
    any_string, checked, checked_array, common, s3_only_table, sub_table, DEFAULT_STEP_TIMEOUT_SECS,
};
use crate::names::Role;
use crate::schema::*;
use crate::values;
use crate::walker::{Field, TableReader, Walker};
use toml_edit::Item;

pub(super) fn install(w: &mut Walker<'_>, mut t: TableReader<'_>) -> Install {
    let common = common(w, &mut t, &Role::ALL);
    let packages = t
        .field("packages")
        .map(|f| checked_array(w, &f, values::os_package_name))
        .unwrap_or_default();
    let timezone = t
        .field("timezone")
        .and_then(|f| checked(w, &f, |s| values::timezone(s).map(|_| s.to_string())));
    let allow_http = t
        .field("allow_http")
        .and_then(|f| f.bool(w))
        .unwrap_or(false);
    let pip = sub_table(w, &mut t, "pip", |w, p| Some(pip(w, p, allow_http)));
    let sources = t
        .field("source")
        .map(|f| source_builds(w, &f, allow_http))
        .unwrap_or_default();
    let cache = sub_table(w, &mut t, "cache", build_cache);
    w.finish(t);
    Install {
        common,
        packages,
        timezone,
        allow_http,
        pip,
        sources,
        cache,
    }
}

fn pip(w: &mut Walker<'_>, mut t: TableReader<'_>, allow_http: bool) -> Pip {
    let requirements = t
        .field("requirements")
        .and_then(|f| checked(w, &f, |s| values::location(s, allow_http, true)));
    let packages = t
        .field("packages")
        .map(|f| checked_array(w, &f, values::package_name))
        .unwrap_or_default();
    let target = t
        .field("target")
        .and_then(|f| checked(w, &f, values::absolute_path));
    w.finish(t);
    Pip {
        requirements,
        packages,
        target,
    }
}

fn source_builds(w: &mut Walker<'_>, f: &Field<'_>, allow_http: bool) -> Vec<SourceBuild> {
    let Some(aot) = f.item.as_array_of_tables() else {
        f.wrong_type(w, "an array of tables ([[install.source]])");
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, table) in aot.iter().enumerate() {
        let path = format!("{}[{i}]", f.path);
        let item = Item::Table(table.clone());
        let Some(mut t) = w.table(&path, &item, table.span()) else {
            continue;
        };
        let span = t.span();
        let name = t.field("name").and_then(|f| {
            checked(w, &f, |s| {
                values::package_name(s).map_err(|_| format!("{s:?} is not a plain name"))?;
                if names.iter().any(|n| n == s) {
                    return Err(format!("a source named {s:?} is already defined"));
                }
                Ok(s.to_string())
            })
        });
        let url = t
            .field("url")
            .and_then(|f| checked(w, &f, |s| values::location(s, allow_http, false)));
        let sha256 = t
            .field("sha256")
            .and_then(|f| checked(w, &f, values::sha256));
        let steps = |w: &mut Walker<'_>, t: &mut TableReader<'_>, key| {
            t.field(key)
                .map(|f| checked_array(w, &f, any_string))
                .unwrap_or_default()
        };
        let build = steps(w, &mut t, "build");
        let install = steps(w, &mut t, "install");
        let post = steps(w, &mut t, "post");
        let step_timeout_secs = t
            .field("step_timeout_secs")
            .and_then(|f| f.u64(w))
            .unwrap_or(DEFAULT_STEP_TIMEOUT_SECS);
        for (key, present) in [
            ("name", name.is_some()),
            ("url", url.is_some()),
            ("sha256", sha256.is_some()),
        ] {
            if !present && t.field(key).is_none() {
                w.error(span.clone(), format!("`{path}.{key}` is required"));
            }
        }
        w.finish(t);
        if let (Some(name), Some(url), Some(sha256)) = (name, url, sha256) {
            names.push(name.clone());
            out.push(SourceBuild {
                name,
                url,
                sha256,
                build,
                install,
                post,
                step_timeout_secs,
            });
        }
    }
    out
}

fn build_cache(w: &mut Walker<'_>, t: TableReader<'_>) -> Option<BuildCache> {
    let (bucket, prefix) = s3_only_table(w, t, "install.cache")?;
    Some(BuildCache { bucket, prefix })
}
