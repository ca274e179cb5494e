//! Phase `install`: OS packages, pip, source builds, time zone. Only the time zone is built so
//! far; a config that asks for the rest fails before anything changes.

use anyhow::anyhow;
use async_trait::async_trait;
use emrboot_config::PhaseName;
use emrboot_os::timezone;
use emrboot_runner::{Ctx, Phase, PhaseError, Precheck};

pub struct Install;

fn table(ctx: &Ctx) -> Result<&emrboot_config::Install, PhaseError> {
    ctx.config
        .install
        .as_ref()
        .ok_or_else(|| PhaseError::invalid(anyhow!("no [install] table")))
}

#[async_trait]
impl Phase for Install {
    fn name(&self) -> PhaseName {
        PhaseName::Install
    }

    async fn check(&self, ctx: &Ctx) -> Result<Precheck, PhaseError> {
        let cfg = table(ctx)?;
        let unbuilt = [
            ("install.packages", !cfg.packages.is_empty()),
            ("install.pip", cfg.pip.is_some()),
            ("install.source", !cfg.sources.is_empty()),
            ("install.cache", cfg.cache.is_some()),
        ];
        if let Some((key, _)) = unbuilt.iter().find(|(_, used)| *used) {
            return Err(PhaseError::not_implemented(key));
        }
        if let Some(zone) = &cfg.timezone {
            timezone::check(&ctx.root, zone)
                .map_err(|e| PhaseError::invalid(anyhow!("install.timezone: {e}")))?;
        }
        Ok(Precheck::Run)
    }

    async fn plan(&self, ctx: &Ctx) -> Result<Vec<String>, PhaseError> {
        let cfg = table(ctx)?;
        let mut actions = Vec::new();
        if let Some(zone) = &cfg.timezone {
            if !timezone::is_set(&ctx.root, zone) {
                actions.push(link_action(zone));
            }
        }
        Ok(actions)
    }

    async fn apply(&self, ctx: &Ctx) -> Result<Vec<String>, PhaseError> {
        let cfg = table(ctx)?;
        let mut actions = Vec::new();
        if let Some(zone) = &cfg.timezone {
            if timezone::set(&ctx.root, zone)? {
                let action = link_action(zone);
                tracing::info!(phase = "install", outcome = "changed", "{action}");
                actions.push(action);
            } else {
                tracing::info!(
                    phase = "install",
                    outcome = "unchanged",
                    "time zone is already {zone}"
                );
            }
        }
        Ok(actions)
    }
}

fn link_action(zone: &str) -> String {
    format!(
        "link {} -> {}",
        timezone::LOCALTIME,
        timezone::zone_path(zone).display()
    )
}
