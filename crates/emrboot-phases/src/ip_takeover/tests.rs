//! Unit tests of the holder rules and of release-ip's EC2 step, against the fake EC2 in
//! fake.rs (which models EC2 where moto does not).

use super::fake::*;
use super::release::give_back;
use super::*;

#[tokio::test]
async fn the_reserved_eni_hands_over_in_one_call_without_unassign() {
    let ec2 = FakeEc2::with(&[
        ("eni-0a1b2c3d4e5f60718", &["172.31.9.9", FIXED]),
        ("eni-master000", &["172.31.0.4"]),
    ]);
    let holder = find_holder(&ec2, &cfg(), &net(&["172.31.0.4"]))
        .await
        .unwrap();
    assert_eq!(holder, Holder::Reserved);
    ec2.assign_private_ip("eni-master000", FIXED.parse().unwrap())
        .await
        .unwrap();
    let calls = ec2.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.iter().all(|c| !c.contains("Unassign")));
    assert!(calls[1].contains("AllowReassignment=true"));
    // the IP moved, and was never held by no ENI in between (one call did it)
    assert_eq!(ec2.holders(FIXED.parse().unwrap()), vec!["eni-master000"]);
}

#[tokio::test]
async fn without_allow_reassignment_ec2_would_refuse() {
    let ec2 = FakeEc2::with(&[
        ("eni-0a1b2c3d4e5f60718", &["172.31.9.9", FIXED]),
        ("eni-master000", &["172.31.0.4"]),
    ]);
    assert!(ec2
        .assign("eni-master000", FIXED.parse().unwrap(), false)
        .is_err());
}

#[tokio::test]
async fn ours_makes_no_call() {
    let ec2 = FakeEc2::default();
    let holder = find_holder(&ec2, &cfg(), &net(&["172.31.0.4", FIXED]))
        .await
        .unwrap();
    assert_eq!(holder, Holder::Us);
    assert!(ec2.calls().is_empty());
}

#[tokio::test]
async fn a_secondary_ip_on_another_eni_is_refused_naming_it() {
    let ec2 = FakeEc2::with(&[
        ("eni-0a1b2c3d4e5f60718", &["172.31.9.9"]),
        ("eni-other0000", &["172.31.7.7", FIXED]),
    ]);
    let e = find_holder(&ec2, &cfg(), &net(&["172.31.0.4"]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("eni-other0000"), "{e}");
    assert!(ec2.calls().iter().all(|c| !c.starts_with("Assign")));
}

#[tokio::test]
async fn the_reserved_enis_primary_ip_is_refused() {
    let ec2 = FakeEc2::with(&[("eni-0a1b2c3d4e5f60718", &[FIXED, "172.31.9.9"])]);
    let e = find_holder(&ec2, &cfg(), &net(&["172.31.0.4"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, emrboot_runner::phase::ErrorKind::Invalid);
    assert!(
        e.to_string().contains("primary IP of the reserved ENI"),
        "{e}"
    );
}

#[tokio::test]
async fn nobody_holding_it_means_assign() {
    let ec2 = FakeEc2::with(&[("eni-0a1b2c3d4e5f60718", &["172.31.9.9"])]);
    let holder = find_holder(&ec2, &cfg(), &net(&["172.31.0.4"]))
        .await
        .unwrap();
    assert_eq!(holder, Holder::Nobody);
}

#[tokio::test]
async fn a_missing_reserved_eni_is_a_config_error() {
    let ec2 = FakeEc2::default();
    let e = find_holder(&ec2, &cfg(), &net(&["172.31.0.4"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, emrboot_runner::phase::ErrorKind::Invalid);
    assert!(
        e.to_string()
            .contains("eni-0a1b2c3d4e5f60718 does not exist"),
        "{e}"
    );
}

#[test]
fn network_checks() {
    let mut c = cfg();
    c.address = "10.0.0.10".parse().unwrap();
    let e = check_network(&c, &net(&[])).unwrap_err();
    assert!(
        e.to_string()
            .contains("outside this node's subnet 172.31.0.0/20"),
        "{e}"
    );
    c.address = "172.31.0.4".parse().unwrap();
    assert!(check_network(&c, &net(&[]))
        .unwrap_err()
        .to_string()
        .contains("primary IP"));
    assert!(check_network(&cfg(), &net(&[])).is_ok());
    for reserved in ["172.31.0.0", "172.31.0.3", "172.31.15.255"] {
        c.address = reserved.parse().unwrap();
        let e = check_network(&c, &net(&[])).unwrap_err().to_string();
        assert!(e.contains("AWS reserves"), "{reserved}: {e}");
    }
}

// release-ip: EC2 decides who holds the IP, IMDS only informs.

#[tokio::test]
async fn release_gives_back_only_what_ec2_shows_on_our_eni() {
    let ec2 = FakeEc2::with(&[
        ("eni-0a1b2c3d4e5f60718", &["172.31.9.9"]),
        ("eni-master000", &["172.31.0.4", FIXED]),
    ]);
    let done = give_back(&cfg(), &net(&["172.31.0.4", FIXED]), &ec2)
        .await
        .unwrap();
    assert!(done.is_some());
    assert_eq!(
        ec2.holders(FIXED.parse().unwrap()),
        vec!["eni-0a1b2c3d4e5f60718"]
    );
    let assigns: Vec<_> = ec2
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("Assign"))
        .collect();
    assert_eq!(
        assigns,
        vec![format!(
            "AssignPrivateIpAddresses {FIXED} -> eni-0a1b2c3d4e5f60718 AllowReassignment=true"
        )]
    );
}

#[tokio::test]
async fn release_never_pulls_the_ip_off_another_node_when_imds_lags() {
    // Blue/green: the new cluster's master holds the IP in EC2; this node's IMDS still lists it.
    let ec2 = FakeEc2::with(&[
        ("eni-0a1b2c3d4e5f60718", &["172.31.9.9"]),
        ("eni-master000", &["172.31.0.4"]),
        ("eni-newmaster", &["172.31.0.7", FIXED]),
    ]);
    let done = give_back(&cfg(), &net(&["172.31.0.4", FIXED]), &ec2)
        .await
        .unwrap();
    assert_eq!(done, None);
    assert_eq!(ec2.holders(FIXED.parse().unwrap()), vec!["eni-newmaster"]);
    assert!(
        !ec2.calls().iter().any(|c| c.starts_with("Assign")),
        "{:?}",
        ec2.calls()
    );
}

#[tokio::test]
async fn release_trusts_ec2_when_imds_has_not_caught_up_with_our_assign() {
    let ec2 = FakeEc2::with(&[
        ("eni-0a1b2c3d4e5f60718", &["172.31.9.9"]),
        ("eni-master000", &["172.31.0.4", FIXED]),
    ]);
    // IMDS does not list the IP yet (EC2 remaps asynchronously): EC2 says it is ours.
    let done = give_back(&cfg(), &net(&["172.31.0.4"]), &ec2)
        .await
        .unwrap();
    assert!(done.is_some());
    assert_eq!(
        ec2.holders(FIXED.parse().unwrap()),
        vec!["eni-0a1b2c3d4e5f60718"]
    );
}

#[tokio::test]
async fn release_of_an_ip_already_back_makes_no_assign() {
    let ec2 = FakeEc2::with(&[
        ("eni-0a1b2c3d4e5f60718", &["172.31.9.9", FIXED]),
        ("eni-master000", &["172.31.0.4"]),
    ]);
    assert_eq!(give_back(&cfg(), &net(&[FIXED]), &ec2).await.unwrap(), None);
    assert!(!ec2.calls().iter().any(|c| c.starts_with("Assign")));
}

#[tokio::test]
async fn release_names_a_missing_reserved_eni() {
    let ec2 = FakeEc2::with(&[("eni-master000", &["172.31.0.4", FIXED])]);
    let e = give_back(&cfg(), &net(&[FIXED]), &ec2).await.unwrap_err();
    let text = format!("{e:#}");
    assert!(
        text.contains("eni-0a1b2c3d4e5f60718") && text.contains("DescribeNetworkInterfaces"),
        "{text}"
    );
    assert_eq!(ec2.holders(FIXED.parse().unwrap()), vec!["eni-master000"]);
}
