//! ip-takeover's plan and apply, and release-ip, on a whole fake node (fake.rs): EC2 that moves
//! IPs as EC2 does, IMDS that follows it, and the node's addresses and DNAT rules.

use super::fake::*;
use super::*;
use emrboot_runner::phase::ErrorKind;

fn fixed() -> Ipv4Addr {
    FIXED.parse().unwrap()
}

/// The actions that are ip-takeover's own (the boot unit and the kept binary are per_boot's,
/// whose "converged" also depends on who owns the kept copy).
fn own(actions: &[String]) -> Vec<String> {
    actions
        .iter()
        .filter(|a| !a.starts_with("keep ") && !a.starts_with("write "))
        .cloned()
        .collect()
}

fn assigns(node: &FakeNode) -> usize {
    node.ec2
        .calls()
        .iter()
        .filter(|c| c.starts_with("Assign"))
        .count()
}

/// ENIs and the private IPs each holds, as `FakeEc2::with` takes them.
type Enis<'a> = &'a [(&'a str, &'a [&'a str])];

#[tokio::test]
async fn apply_takes_exactly_what_plan_listed_and_a_converged_node_plans_nothing() {
    let rule = nat::dnat_rule(fixed(), PRIMARY.parse().unwrap());
    // Where the IP starts: on the reserved ENI, on no ENI, already ours with one rule missing.
    let starts: [(Enis, bool); 3] = [
        (
            &[
                ("eni-0a1b2c3d4e5f60718", &["172.31.9.9", FIXED]),
                (OUR_ENI, &[PRIMARY]),
            ],
            false,
        ),
        (
            &[
                ("eni-0a1b2c3d4e5f60718", &["172.31.9.9"]),
                (OUR_ENI, &[PRIMARY]),
            ],
            false,
        ),
        (
            &[
                ("eni-0a1b2c3d4e5f60718", &["172.31.9.9"]),
                (OUR_ENI, &[PRIMARY, FIXED]),
            ],
            true,
        ),
    ];
    for (enis, one_rule) in starts {
        let node = FakeNode::new(enis);
        if one_rule {
            node.nat
                .rules
                .lock()
                .unwrap()
                .push(("OUTPUT", rule.clone()));
        }
        let before = node.ec2.holders(fixed());
        let planned = IpTakeover::default().plan(&node.ctx()).await.unwrap();
        // plan changed nothing
        assert_eq!(node.ec2.holders(fixed()), before);
        assert_eq!(assigns(&node), 0);
        assert!(node.links.addrs.lock().unwrap().is_empty());
        assert_eq!(node.nat.rules.lock().unwrap().len(), usize::from(one_rule));
        let applied = IpTakeover::default().apply(&node.ctx()).await.unwrap();
        assert_eq!(applied, planned, "{enis:?}");
        assert_eq!(node.ec2.holders(fixed()), vec![OUR_ENI]);
        assert_eq!(*node.links.addrs.lock().unwrap(), vec![(fixed(), 32)]);
        let rules = node.nat.rules.lock().unwrap().clone();
        assert_eq!(rules.len(), 2, "{rules:?}");
        assert!(nat::CHAINS
            .iter()
            .all(|c| rules.contains(&(*c, rule.clone()))));
        // converged: plan lists nothing of ip-takeover's, and a second run makes no call
        let calls = node.ec2.calls().len();
        let again = IpTakeover::default().plan(&node.ctx()).await.unwrap();
        assert_eq!(own(&again), Vec::<String>::new(), "{enis:?}");
        let again = IpTakeover::default().apply(&node.ctx()).await.unwrap();
        assert_eq!(own(&again), Vec::<String>::new(), "{enis:?}");
        assert_eq!(node.ec2.calls().len(), calls, "{:?}", node.ec2.calls());
    }
}

#[tokio::test]
async fn a_release_asked_for_during_the_assign_gives_back_what_the_run_took() {
    let node = FakeNode::new(&[
        ("eni-0a1b2c3d4e5f60718", &["172.31.9.9", FIXED]),
        (OUR_ENI, &[PRIMARY]),
    ]);
    let ctx = node.ctx();
    let state = emrboot_runner::StateDir::new(ctx.state.path.clone());
    // release-ip comes while EC2 answers the assign (the longest step a run cannot stop in)
    *node.ec2.on_assign.lock().unwrap() = Some(Box::new(move || {
        state.request_release().unwrap();
    }));
    let e = IpTakeover::default().apply(&ctx).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Failed);
    assert!(
        e.to_string().contains("release-ip asked this run to stop"),
        "{e}"
    );
    assert!(e.to_string().contains("gave 172.31.5.10 back"), "{e}");
    // the IP is back on the reserved ENI, and this run added neither the /32 nor a rule
    assert_eq!(node.ec2.holders(fixed()), vec!["eni-0a1b2c3d4e5f60718"]);
    assert!(node.links.addrs.lock().unwrap().is_empty());
    assert!(node.nat.rules.lock().unwrap().is_empty());
    assert_eq!(assigns(&node), 2, "{:?}", node.ec2.calls());
}

#[tokio::test]
async fn release_undoes_a_takeover_and_a_second_release_changes_nothing() {
    let node = FakeNode::new(&[
        ("eni-0a1b2c3d4e5f60718", &["172.31.9.9", FIXED]),
        (OUR_ENI, &[PRIMARY]),
    ]);
    IpTakeover::default().apply(&node.ctx()).await.unwrap();
    let ctx = node.ctx();
    let done = release(&cfg(), &ctx.doors, Ok(()), RELEASE_EC2_BOUND)
        .await
        .unwrap();
    assert_eq!(done.len(), 4, "{done:?}"); // the assign, the /32, two rules
    assert_eq!(node.ec2.holders(fixed()), vec!["eni-0a1b2c3d4e5f60718"]);
    assert!(node.links.addrs.lock().unwrap().is_empty());
    assert!(node.nat.rules.lock().unwrap().is_empty());
    let before = assigns(&node);
    let again = release(&cfg(), &ctx.doors, Ok(()), RELEASE_EC2_BOUND)
        .await
        .unwrap();
    assert_eq!(again, Vec::<String>::new());
    assert_eq!(assigns(&node), before);
}

#[tokio::test]
async fn release_never_gives_back_over_another_nodes_eni_but_still_cleans_up_here() {
    // Blue/green: the new master took the IP; this node still has its /32 and rules.
    let node = FakeNode::new(&[
        ("eni-0a1b2c3d4e5f60718", &["172.31.9.9"]),
        (OUR_ENI, &[PRIMARY]),
        ("eni-newmaster", &["172.31.0.7", FIXED]),
    ]);
    let rule = nat::dnat_rule(fixed(), PRIMARY.parse().unwrap());
    node.links.addrs.lock().unwrap().push((fixed(), 32));
    node.nat.rules.lock().unwrap().push(("PREROUTING", rule));
    let ctx = node.ctx();
    let done = release(&cfg(), &ctx.doors, Ok(()), RELEASE_EC2_BOUND)
        .await
        .unwrap();
    assert_eq!(assigns(&node), 0, "{:?}", node.ec2.calls());
    assert_eq!(node.ec2.holders(fixed()), vec!["eni-newmaster"]);
    assert!(node.links.addrs.lock().unwrap().is_empty());
    assert!(node.nat.rules.lock().unwrap().is_empty());
    assert_eq!(done.len(), 2, "{done:?}");
}

#[tokio::test]
async fn release_without_the_ip_lock_makes_no_ec2_call_and_says_why() {
    let node = FakeNode::new(&[
        ("eni-0a1b2c3d4e5f60718", &["172.31.9.9"]),
        (OUR_ENI, &[PRIMARY, FIXED]),
    ]);
    node.links.addrs.lock().unwrap().push((fixed(), 32));
    let ctx = node.ctx();
    let held = Err(anyhow!(
        "another emrboot acting on the fixed IP holds ip.lock"
    ));
    let e = release(&cfg(), &ctx.doors, held, RELEASE_EC2_BOUND)
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("holds ip.lock"), "{e:#}");
    assert!(node.ec2.calls().is_empty(), "{:?}", node.ec2.calls());
    assert_eq!(node.ec2.holders(fixed()), vec![OUR_ENI]);
    // the local cleanup happened anyway: the node is going away
    assert!(node.links.addrs.lock().unwrap().is_empty());
}
