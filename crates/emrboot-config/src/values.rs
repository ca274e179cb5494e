//! Checks on single values. Each returns the reason a value is refused, worded for `validate`.

use crate::schema::Location;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Package names go to dnf, yum, apt-get and pip as argument-vector entries, never through a
/// shell; still, anything beyond the characters those tools use in names and version pins is
/// refused, so a typo or an injected `;` is caught at validation.
pub fn package_name(s: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._+-:~=<>!,[]*".contains(c);
    if s.is_empty() || s.starts_with('-') || !s.chars().all(ok_char) {
        return Err(format!(
            "{s:?} is not a package name (letters, digits and ._+-:~=<>!,[]* only, not starting with -)"
        ));
    }
    Ok(())
}

/// `install.packages`: what dnf, yum and apt-get take and emrboot can check afterwards with
/// `rpm -q` or dpkg-query: `name`, `name-version[-release]`, `name.arch`, an apt pin
/// (`name=version`, `name:arch`), a capability (`python3dist(requests)`, `perl(Foo::Bar)`) or an
/// absolute file path (`/usr/bin/jq`). Globs are refused: what a glob matches changes as repos
/// change, so "installed" has no fixed meaning and a run could never be sure it converged.
pub fn os_package_name(s: &str) -> Result<(), String> {
    if let Some(c) = s.chars().find(|c| "*?[]".contains(*c)) {
        return Err(format!(
            "{s:?} is a glob ({c:?}): name each package (a glob's matches change with the repos, \
             so it can never be checked as installed)"
        ));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._+-:~=()/".contains(c);
    let balanced = s.matches('(').count() == s.matches(')').count();
    let path_ok = !s.contains('/') || (s.starts_with('/') && !s.contains("/../"));
    if s.is_empty() || s.starts_with('-') || !s.chars().all(ok_char) || !balanced || !path_ok {
        return Err(format!(
            "{s:?} is not a package name, a capability like python3dist(requests) or an \
             absolute path (letters, digits and ._+-:~=()/ only, not starting with -)"
        ));
    }
    Ok(())
}

pub fn sha256(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    if lower.len() == 64 && lower.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(lower)
    } else {
        Err(format!("{s:?} is not a sha256 (64 hexadecimal digits)"))
    }
}

/// EC2 tag rules: keys 1..=128 characters, values up to 256, and the `aws:` prefix is AWS's own.
pub fn tag_key(k: &str) -> Result<(), String> {
    if k.is_empty() || k.chars().count() > 128 {
        return Err(format!("tag key {k:?} must be 1 to 128 characters"));
    }
    if k.to_ascii_lowercase().starts_with("aws:") {
        return Err(format!(
            "tag key {k:?} starts with `aws:`, which AWS reserves"
        ));
    }
    Ok(())
}

pub fn tag_value(v: &str) -> Result<(), String> {
    if v.chars().count() > 256 {
        return Err("tag value is longer than 256 characters".into());
    }
    Ok(())
}

pub fn ipv4(s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))
}

pub fn eni_id(s: &str) -> Result<(), String> {
    prefixed_hex_id(
        s,
        "eni-",
        "a network interface id like eni-0123456789abcdef0",
    )
}

pub fn file_system_id(s: &str) -> Result<(), String> {
    prefixed_hex_id(s, "fs-", "an EFS file system id like fs-12345678")
}

fn prefixed_hex_id(s: &str, prefix: &str, what: &str) -> Result<(), String> {
    match s.strip_prefix(prefix) {
        Some(rest)
            if (8..=40).contains(&rest.len()) && rest.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            Ok(())
        }
        _ => Err(format!("{s:?} is not {what}")),
    }
}

pub fn dns_name(s: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if s.len() <= 253 && s.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!("{s:?} is not a DNS name"))
    }
}

/// IANA zone names: `Asia/Seoul`, `UTC`, `America/Argentina/Buenos_Aires`, `Etc/GMT+9`.
pub fn timezone(s: &str) -> Result<(), String> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c))
    };
    if s.split('/').all(part_ok) {
        Ok(())
    } else {
        Err(format!("{s:?} is not a time zone name like Asia/Seoul"))
    }
}

pub fn absolute_path(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    if !p.is_absolute() {
        return Err(format!("{s:?} is not an absolute path"));
    }
    if p.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(format!("{s:?} must not contain `..`"));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{s:?} must not contain spaces or control characters"
        ));
    }
    Ok(p)
}

/// `user`, `user:group`, or numeric ids; names are resolved on the node when the phase runs.
pub fn owner(s: &str) -> Result<(), String> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 32
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    let mut parts = s.splitn(2, ':');
    let user = parts.next().unwrap_or_default();
    let group_ok = parts.next().is_none_or(part_ok);
    if part_ok(user) && group_ok {
        Ok(())
    } else {
        Err(format!("{s:?} is not an owner like hadoop:root"))
    }
}

/// Mount options: a comma-separated list of `name` or `name=value`.
pub fn mount_options(s: &str) -> Result<(), String> {
    let opt_ok = |o: &str| {
        !o.is_empty()
            && o.chars()
                .all(|c| c.is_ascii_alphanumeric() || "=._-".contains(c))
    };
    if s.split(',').all(opt_ok) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a list of mount options like nfsvers=4.1,hard"
        ))
    }
}

pub fn s3_url(s: &str) -> Result<(String, String), String> {
    let rest = s
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{s:?} is not an s3:// URL"))?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !bucket_ok {
        return Err(format!("{s:?} does not name a valid S3 bucket"));
    }
    Ok((bucket.to_string(), key.to_string()))
}

/// Where to fetch a file from. `allow_paths` admits node-local paths; plain http needs `allow_http`.
pub fn location(s: &str, allow_http: bool, allow_paths: bool) -> Result<Location, String> {
    if s.starts_with("s3://") {
        let (bucket, key) = s3_url(s)?;
        if key.is_empty() || key.ends_with('/') {
            return Err(format!(
                "{s:?} names no object (the key is empty or ends in /)"
            ));
        }
        return Ok(Location::S3 { bucket, key });
    }
    if let Some(rest) = s.strip_prefix("https://") {
        return non_empty_host(s, rest).map(|_| Location::Https { url: s.to_string() });
    }
    if let Some(rest) = s.strip_prefix("http://") {
        if !allow_http {
            return Err(format!(
                "{s:?} is plain http; use https:// or s3://, or set install.allow_http = true"
            ));
        }
        return non_empty_host(s, rest).map(|_| Location::Http { url: s.to_string() });
    }
    if allow_paths && s.starts_with('/') {
        return absolute_path(s).map(|path| Location::Path { path });
    }
    let kinds = if allow_paths {
        "an https:// or s3:// URL or an absolute path"
    } else {
        "an https:// or s3:// URL"
    };
    Err(format!("{s:?} is not {kinds}"))
}

fn non_empty_host(s: &str, rest: &str) -> Result<(), String> {
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!("{s:?} is not a valid URL"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_refuse_shell_text() {
        assert!(package_name("python3-devel").is_ok());
        assert!(package_name("mecab-python3==1.0.1").is_ok());
        assert!(package_name("libc6:amd64").is_ok());
        for bad in ["jq; rm -rf /", "$(id)", "a b", "`x`", "-y", "", "a|b"] {
            assert!(package_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn os_package_names_take_every_form_but_globs() {
        for good in [
            "emr-hello",
            "emr-hello-1.0",
            "emr-hello-1.0-1",
            "emr-hello.noarch",
            "emr-hello-1.0-1.noarch",
            "python3dist(requests)",
            "perl(Foo::Bar)",
            "/usr/bin/jq",
            "jq=1.6-2",
            "libc6:amd64",
        ] {
            assert!(os_package_name(good).is_ok(), "{good}");
        }
        for bad in [
            "emr-hel*", "emr-?", "emr-[ab]", "jq; rm", "-y", "", "a b", "bin/jq", "(x",
        ] {
            assert!(os_package_name(bad).is_err(), "{bad}");
        }
        assert!(os_package_name("emr-hel*").unwrap_err().contains("glob"));
    }

    #[test]
    fn tag_keys_refuse_the_aws_prefix_in_any_case() {
        assert!(tag_key("Biz Unit").is_ok());
        assert!(tag_key("aws:foo").is_err());
        assert!(tag_key("AWS:foo").is_err());
        assert!(tag_key("").is_err());
    }

    #[test]
    fn locations() {
        assert_eq!(
            location("s3://my-bucket/a/b.txt", false, false),
            Ok(Location::S3 {
                bucket: "my-bucket".into(),
                key: "a/b.txt".into()
            })
        );
        assert!(location("s3://my-bucket/", false, false).is_err());
        assert!(location("http://127.0.0.1/x", false, false).is_err());
        assert!(location("http://127.0.0.1/x", true, false).is_ok());
        assert!(location("/tmp/req.txt", false, false).is_err());
        assert!(location("/tmp/req.txt", false, true).is_ok());
        assert!(location("ftp://x/y", true, true).is_err());
    }

    #[test]
    fn zones_and_paths() {
        assert!(timezone("Asia/Seoul").is_ok());
        assert!(timezone("Etc/GMT+9").is_ok());
        assert!(timezone("../../etc/passwd").is_err());
        assert!(timezone("Asia/Seoul; reboot").is_err());
        assert!(absolute_path("/practice-efs").is_ok());
        assert!(absolute_path("practice-efs").is_err());
        assert!(absolute_path("/a/../b").is_err());
    }

    #[test]
    fn ids_owners_options() {
        assert!(eni_id("eni-0123456789abcdef0").is_ok());
        assert!(eni_id("eni-xyz").is_err());
        assert!(file_system_id("fs-12345678").is_ok());
        assert!(owner("hadoop:root").is_ok());
        assert!(owner("hadoop:").is_err());
        assert!(mount_options("nfsvers=4.1,hard").is_ok());
        assert!(mount_options("hard;reboot").is_err());
        assert!(ipv4("10.0.0.300").is_err());
    }
}
