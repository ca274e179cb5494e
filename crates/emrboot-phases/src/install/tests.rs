//! install's one converge path against a fake package manager (the bench tests run the real
//! dnf, yum and apt-get): plan lists exactly what apply then takes, plan changes nothing, and a
//! converged node plans and takes nothing.

use super::Install;
use crate::testkit;
use emrboot_os::pkg::{Packages, PkgError};
use emrboot_runner::{Ctx, Phase, Precheck};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A dnf that knows which packages are installed and records each transaction.
#[derive(Default)]
struct FakeDnf {
    installed: Mutex<BTreeSet<String>>,
    transactions: Mutex<Vec<Vec<String>>>,
}

#[async_trait::async_trait]
impl Packages for FakeDnf {
    fn name(&self) -> &'static str {
        "dnf"
    }
    async fn missing(&self, wanted: &[String]) -> Result<Vec<String>, PkgError> {
        let have = self.installed.lock().unwrap();
        Ok(wanted
            .iter()
            .filter(|p| !have.contains(*p))
            .cloned()
            .collect())
    }
    fn commands(&self, pkgs: &[String]) -> Vec<Vec<String>> {
        let mut c: Vec<String> = ["dnf", "install", "-y"].map(String::from).to_vec();
        c.extend(pkgs.iter().cloned());
        vec![c]
    }
    async fn install(&self, pkgs: &[String]) -> Result<(), PkgError> {
        self.transactions.lock().unwrap().push(pkgs.to_vec());
        self.installed.lock().unwrap().extend(pkgs.iter().cloned());
        Ok(())
    }
    async fn owners(&self, _: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, PkgError> {
        Ok(Vec::new())
    }
}

const CONFIG: &str =
    "[install]\npackages = [\"jq\", \"nfs-utils\", \"automake\"]\ntimezone = \"Asia/Seoul\"\n";

fn node(dir: &Path, dnf: &Arc<FakeDnf>) -> Ctx {
    let zone = dir.join("root/usr/share/zoneinfo/Asia");
    std::fs::create_dir_all(&zone).unwrap();
    std::fs::write(zone.join("Seoul"), b"TZif").unwrap();
    let dnf = dnf.clone();
    testkit::ctx(dir, CONFIG, move |d| d.with_packages(dnf))
}

async fn plan_then_apply(ctx: &Ctx) -> (Vec<String>, Vec<String>) {
    assert_eq!(Install.check(ctx).await.unwrap(), Precheck::Run);
    let planned = Install.plan(ctx).await.unwrap();
    let done = Install.apply(ctx).await.unwrap();
    (planned, done)
}

#[tokio::test]
async fn apply_takes_exactly_what_plan_listed_and_a_converged_node_plans_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dnf = Arc::new(FakeDnf::default());
    dnf.installed.lock().unwrap().insert("nfs-utils".into());
    let ctx = node(dir.path(), &dnf);

    let planned = Install.plan(&ctx).await.unwrap();
    assert_eq!(
        planned,
        [
            "dnf install -y jq automake",
            "link /etc/localtime -> /usr/share/zoneinfo/Asia/Seoul",
        ]
    );
    assert!(
        dnf.transactions.lock().unwrap().is_empty(),
        "plan installed"
    );
    assert!(
        std::fs::symlink_metadata(dir.path().join("root/etc/localtime")).is_err(),
        "plan set the time zone"
    );

    let (again, done) = plan_then_apply(&ctx).await;
    assert_eq!(
        again, planned,
        "a second plan differs: plan changed something"
    );
    assert_eq!(
        done, planned,
        "apply did not take exactly the planned actions"
    );
    assert_eq!(
        *dnf.transactions.lock().unwrap(),
        [vec!["jq".to_string(), "automake".to_string()]],
        "one transaction with the missing packages only"
    );
    assert_eq!(
        std::fs::read_link(dir.path().join("root/etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/Asia/Seoul")
    );

    let ctx = node(dir.path(), &dnf);
    let (planned, done) = plan_then_apply(&ctx).await;
    assert!(planned.is_empty(), "a converged node plans {planned:?}");
    assert!(done.is_empty(), "a converged node took {done:?}");
    assert_eq!(
        dnf.transactions.lock().unwrap().len(),
        1,
        "a re-run installed"
    );
}
