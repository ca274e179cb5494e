//! pip: `python3 -m pip install -r <requirements> [--target T] <packages>`, once per content.

use super::{install_dir, log_action, marker, write_marker};
use anyhow::Context;
use emrboot_aws::{fetch_bytes, location_text};
use emrboot_config::Pip;
use emrboot_os::atomic;
use emrboot_os::command::Cmd;
use emrboot_runner::{Ctx, PhaseError};
use sha2::{Digest, Sha256};
use std::time::Duration;

const PIP_BOUND: Duration = Duration::from_secs(1800);
/// Requirements files are small; this bounds what a wrong URL can make us hold.
const MAX_REQUIREMENTS: u64 = 4 << 20;

struct Work {
    requirements: Option<Vec<u8>>,
    hash: String,
}

async fn work(ctx: &Ctx, cfg: &Pip) -> Result<Work, PhaseError> {
    let requirements = match &cfg.requirements {
        Some(loc) => Some(
            fetch_bytes(&ctx.aws, loc, MAX_REQUIREMENTS)
                .await
                .with_context(|| format!("install.pip.requirements {}", location_text(loc)))?,
        ),
        None => None,
    };
    let mut h = Sha256::new();
    h.update(requirements.as_deref().unwrap_or_default());
    // Packages and target change what pip does as much as the requirements text does.
    h.update(format!("\n{:?}\n{:?}", cfg.packages, cfg.target).as_bytes());
    Ok(Work {
        requirements,
        hash: hex::encode(&h.finalize()[..8]),
    })
}

fn argv(cfg: &Pip, req_file: Option<&std::path::Path>) -> Vec<String> {
    let mut a: Vec<String> = [
        "python3",
        "-m",
        "pip",
        "install",
        "--no-input",
        "--disable-pip-version-check",
    ]
    .map(String::from)
    .to_vec();
    if let Some(f) = req_file {
        a.extend(["-r".into(), f.display().to_string()]);
    }
    if let Some(t) = &cfg.target {
        // Without --upgrade, pip keeps what an earlier run put in the target.
        a.extend([
            "--target".into(),
            t.display().to_string(),
            "--upgrade".into(),
        ]);
    }
    a.extend(cfg.packages.iter().cloned());
    a
}

pub(super) async fn plan(ctx: &Ctx, cfg: &Pip) -> Result<Vec<String>, PhaseError> {
    let w = work(ctx, cfg).await?;
    if marker(ctx, &format!("pip-{}", w.hash)).is_file() {
        return Ok(Vec::new());
    }
    let req = cfg.requirements.as_ref().map(location_text);
    let shown = argv(cfg, req.as_deref().map(std::path::Path::new));
    Ok(vec![format!("pip: {}", shown.join(" "))])
}

pub(super) async fn apply(ctx: &Ctx, cfg: &Pip) -> Result<Vec<String>, PhaseError> {
    let w = work(ctx, cfg).await?;
    let name = format!("pip-{}", w.hash);
    if marker(ctx, &name).is_file() {
        tracing::info!(
            phase = "install",
            outcome = "unchanged",
            "pip: same requirements as the last run"
        );
        return Ok(Vec::new());
    }
    let req_file = match &w.requirements {
        Some(text) => {
            let f = install_dir(ctx).join(format!("requirements-{}.txt", w.hash));
            atomic::write(&f, text, 0o600)?;
            Some(f)
        }
        None => None,
    };
    let probe = Cmd::new(
        ["python3", "-m", "pip", "--version"],
        Duration::from_secs(60),
    )
    .output()
    .await?;
    if !probe.success {
        // No get-pip.py from the network: the interpreter's own bundled pip.
        Cmd::new(
            ["python3", "-m", "ensurepip", "--default-pip"],
            Duration::from_secs(300),
        )
        .run()
        .await?;
        log_action("pip: python3 -m ensurepip");
    }
    let a = argv(cfg, req_file.as_deref());
    Cmd::new(a.clone(), PIP_BOUND).run().await?;
    write_marker(ctx, &name)?;
    let action = format!("pip: {}", a.join(" "));
    log_action(&action);
    Ok(vec![action])
}
