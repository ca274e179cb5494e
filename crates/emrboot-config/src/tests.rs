use super::*;

const SEED: &str = r#"
[install]
packages = ["python3-devel", "jq", "automake", "nfs-utils"]
timezone = "Asia/Seoul"

[install.pip]
requirements = "s3://my-bucket/emr-config/emr/practice-requirements/requirements.txt"
packages = ["mecab-python3==1.0.1"]
target = "/usr/lib/python3.7/site-packages"

[[install.source]]
name = "mecab-ko"
url = "https://example.org/mecab-0.996-ko-0.9.2.tar.gz"
sha256 = "e073325783135b72e666145c781bb48fada583d5224fb2490fb6c1403ba69c59"
build = ["./configure", "make -j4", "make check"]
install = ["make install"]
post = ["ldconfig"]

[install.cache]
s3 = "s3://my-bucket/emr-config/build-cache/"

[tags]
name_suffix = "role"
[tags.set]
Project = "EMR-PRACTICE"
Customer = "acme"
"Biz Unit" = "EMR-PRACTICE-CLUSTER"

[efs]
file_system_id = "fs-12345678"
mount_point = "/practice-efs"
owner = "hadoop:root"

[ip_takeover]
address = "10.0.0.10"
reserved_eni = "eni-0123456789abcdef0"
"#;

fn errors(text: &str) -> Vec<String> {
    match parse("c.toml", text) {
        Ok(_) => Vec::new(),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

#[test]
fn the_design_example_is_valid() {
    let cfg = parse("c.toml", SEED).unwrap();
    let install = cfg.install.as_ref().unwrap();
    assert_eq!(install.packages.len(), 4);
    assert_eq!(install.timezone.as_deref(), Some("Asia/Seoul"));
    assert_eq!(install.sources[0].post, vec!["ldconfig"]);
    assert_eq!(
        install.cache.as_ref().unwrap().prefix,
        "emr-config/build-cache/"
    );
    let tags = cfg.tags.as_ref().unwrap();
    assert_eq!(
        tags.set.get("Biz Unit").map(String::as_str),
        Some("EMR-PRACTICE-CLUSTER")
    );
    assert_eq!(tags.common.roles, Role::ALL.to_vec());
    let ip = cfg.ip_takeover.as_ref().unwrap();
    assert_eq!(ip.common.roles, vec![Role::Master]);
    assert!(ip.common.required);
    assert_eq!(cfg.efs.as_ref().unwrap().options, DEFAULT_NFS_OPTIONS);
}

#[test]
fn unknown_keys_are_reported_with_position() {
    let e = errors("[install]\ntimezone = \"UTC\"\npackges = [\"jq\"]\n\n[bogus]\n");
    assert_eq!(
        e,
        vec![
            "c.toml:3:1: unknown key `install.packges`",
            "c.toml:5:2: unknown key `bogus`",
        ]
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let text = r#"
[install]
timezone = 9
allow_http = "yes"
[[install.source]]
name = "x"
url = "https://example.org/x.tgz"
sha256 = "abc"
[tags.set]
"aws:cloudformation:stack" = "x"
[ip_takeover]
address = "10.0.0.300"
reserved_eni = "eni-0123456789abcdef0"
roles = ["MASTER", "leader"]
"#;
    let e = errors(text);
    assert_eq!(e.len(), 6, "{e:#?}");
    assert!(
        e[0].starts_with("c.toml:3:12: `install.timezone` must be a string, not integer"),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with("c.toml:4:14: `install.allow_http` must be a boolean"),
        "{e:#?}"
    );
    assert!(
        e[2].starts_with("c.toml:8:10: `install.source[0].sha256`"),
        "{e:#?}"
    );
    assert!(
        e[3].contains("c.toml:10:1:") && e[3].contains("aws:"),
        "{e:#?}"
    );
    assert!(
        e[4].starts_with("c.toml:12:11: `ip_takeover.address`"),
        "{e:#?}"
    );
    assert!(
        e[5].starts_with("c.toml:14:20: `ip_takeover.roles`: unknown role \"leader\""),
        "{e:#?}"
    );
}

#[test]
fn more_than_fifty_tags_is_an_error() {
    let mut text = String::from("[tags]\nname_suffix = \"role\"\n[tags.set]\n");
    for i in 0..50 {
        text.push_str(&format!("k{i} = \"v\"\n"));
    }
    let e = errors(&text);
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("51 tags"), "{e:?}");
}

#[test]
fn shell_metacharacters_in_a_package_are_an_error() {
    let e = errors("[install]\npackages = [\"jq\", \"jq; curl evil | sh\"]\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("c.toml:2:19: `install.packages`"), "{e:?}");
}

#[test]
fn plain_http_needs_allow_http() {
    let src = "[[install.source]]\nname = \"m\"\nurl = \"http://127.0.0.1:8000/m.tgz\"\nsha256 = \"e073325783135b72e666145c781bb48fada583d5224fb2490fb6c1403ba69c59\"\n";
    assert_eq!(errors(src).len(), 1);
    let allowed = format!("[install]\nallow_http = true\n{src}");
    assert!(errors(&allowed).is_empty(), "{:?}", errors(&allowed));
}

#[test]
fn syntax_errors_have_a_position() {
    let e = errors("[install]\ntimezone = \"Asia/Seoul\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("c.toml:2:"), "{e:?}");
    assert!(e[0].contains("TOML syntax"));
}

#[test]
fn required_keys_and_conflicts() {
    assert!(
        errors("[ip_takeover]\naddress = \"10.0.0.10\"\n")[0].contains("reserved_eni` is required")
    );
    let both =
        "[efs]\nfile_system_id = \"fs-12345678\"\ndns_name = \"a.b\"\nmount_point = \"/x\"\n";
    assert!(errors(both)[0].contains("not both"));
    assert!(
        errors("[tags]\nname_suffix = \"role\"\n[tags.set]\nName = \"x\"\n")[0]
            .contains("conflicts")
    );
}

#[test]
fn section_hash_input_changes_with_the_section_only() {
    let a = parse("c", SEED).unwrap();
    let b = parse("c", &SEED.replace("acme", "other")).unwrap();
    assert_eq!(
        a.section_json(PhaseName::Install),
        b.section_json(PhaseName::Install)
    );
    assert_ne!(
        a.section_json(PhaseName::Tag),
        b.section_json(PhaseName::Tag)
    );
}

#[test]
fn a_config_without_any_phase_table_is_an_error() {
    for text in ["", "\n# only a comment\n"] {
        let e = errors(text);
        assert!(
            e.iter().any(|l| l.contains(":1:1: no phase table")),
            "{text:?}: {e:?}"
        );
    }
}

#[test]
fn empty_roles_are_an_error() {
    let e = errors("[tags]\nroles = []\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("c.toml:2:9: `tags.roles` is empty"),
        "{e:?}"
    );
}

#[test]
fn the_report_table_is_an_s3_prefix() {
    let text = "[tags]\n[report]\ns3 = \"s3://my-bucket/emr-reports\"\n";
    let r = parse("c.toml", text).unwrap().report.unwrap();
    assert_eq!(
        (r.bucket.as_str(), r.prefix.as_str()),
        ("my-bucket", "emr-reports/")
    );
    let e = errors("[tags]\n[report]\ns3 = \"https://x/y\"\n");
    assert!(e.iter().any(|l| l.starts_with("c.toml:3:")), "{e:?}");
    let e = errors("[tags]\n[report]\n");
    assert!(
        e.iter().any(|l| l.contains("`report.s3` is required")),
        "{e:?}"
    );
    let e = errors("[tags]\n[report]\ns3 = \"s3://my-bucket/r/\"\nbucket = 1\n");
    assert!(e.iter().any(|l| l.starts_with("c.toml:4:")), "{e:?}");
}
