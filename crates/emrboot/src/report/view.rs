//! What `emrboot cluster` shows: each node's state from its record, and the cluster summary.

use super::record::NodeRecord;
use emrboot_runner::Outcome;
use serde::Serialize;
use std::collections::BTreeMap;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Ok,
    Failed,
    Interrupted,
    /// Running, with no update for longer than the lost bound (e.g. terminated mid-bootstrap).
    Lost,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Ok => "ok",
            State::Failed => "failed",
            State::Interrupted => "interrupted",
            State::Lost => "lost",
        }
    }
    /// Sort key: what needs a look first.
    pub fn severity(self) -> u8 {
        match self {
            State::Failed => 0,
            State::Interrupted => 1,
            State::Lost => 2,
            State::Running => 3,
            State::Ok => 4,
        }
    }
    pub fn finished(self) -> bool {
        self != State::Running
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub instance_id: String,
    pub role: String,
    pub group: Option<String>,
    pub instance_type: Option<String>,
    pub state: State,
    /// The phase running now, or the one that failed or was interrupted.
    pub phase: Option<String>,
    pub started_at: Option<String>,
    pub duration_s: Option<f64>,
    pub error: Option<String>,
    pub updated_at: String,
    pub released: bool,
    pub record: NodeRecord,
}

pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

fn secs_between(a: OffsetDateTime, b: OffsetDateTime) -> f64 {
    (b - a).as_seconds_f64().max(0.0)
}

pub fn node_view(rec: NodeRecord, now: OffsetDateTime, lost_after_s: u64) -> NodeView {
    let run = rec.run.as_ref();
    let updated = parse_time(&rec.updated_at);
    let stale = updated.is_none_or(|u| secs_between(u, now) > lost_after_s as f64);
    let phases = run.map(|r| r.phases.as_slice()).unwrap_or_default();
    let with = |o: Outcome| phases.iter().find(|p| p.outcome == o);
    let state = match run.and_then(|r| r.exit_code) {
        None if stale => State::Lost,
        None => State::Running,
        Some(0) => State::Ok,
        Some(_) if with(Outcome::Interrupted).is_some() => State::Interrupted,
        Some(_) => State::Failed,
    };
    let at = match state {
        State::Running | State::Lost => with(Outcome::Running),
        State::Failed => with(Outcome::Failed),
        State::Interrupted => with(Outcome::Interrupted),
        State::Ok => None,
    };
    let started = run.and_then(|r| parse_time(&r.started_at));
    let end = run
        .and_then(|r| r.finished_at.as_deref())
        .and_then(parse_time)
        .or(if state == State::Lost {
            updated
        } else {
            Some(now)
        });
    let error = at
        .and_then(|p| p.error.clone())
        .or_else(|| (state == State::Lost).then(|| format!("no update since {}", rec.updated_at)))
        .or_else(|| rec.release.as_ref().and_then(|r| r.error.clone()));
    NodeView {
        instance_id: rec.facts.instance_id.clone(),
        role: rec.facts.role.clone(),
        group: rec
            .facts
            .instance_group_id
            .clone()
            .or_else(|| rec.facts.instance_fleet_id.clone()),
        instance_type: rec.facts.instance_type.clone(),
        state,
        phase: at.map(|p| p.phase.as_str().to_string()),
        started_at: run.map(|r| r.started_at.clone()),
        duration_s: started.zip(end).map(|(s, e)| secs_between(s, e)),
        error,
        updated_at: rec.updated_at.clone(),
        released: rec.release.is_some(),
        record: rec,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseStats {
    pub n: usize,
    pub p50_s: f64,
    pub p95_s: f64,
    pub max_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureGroup {
    pub error: String,
    pub count: usize,
    pub instances: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub nodes: usize,
    /// role -> state -> count
    pub by_role: BTreeMap<String, BTreeMap<String, usize>>,
    pub by_state: BTreeMap<String, usize>,
    pub phases: BTreeMap<String, PhaseStats>,
    /// Up to 5, slowest first.
    pub slowest: Vec<(String, f64)>,
    pub failures: Vec<FailureGroup>,
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

pub fn summary(nodes: &[NodeView]) -> Summary {
    let mut by_role: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut by_state = BTreeMap::new();
    let mut durations: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in nodes {
        *by_role
            .entry(n.role.clone())
            .or_default()
            .entry(n.state.as_str().into())
            .or_default() += 1;
        *by_state.entry(n.state.as_str().to_string()).or_default() += 1;
        for p in n.record.run.iter().flat_map(|r| &r.phases) {
            if let Some(ms) = p.duration_ms {
                durations
                    .entry(p.phase.as_str().into())
                    .or_default()
                    .push(ms as f64 / 1000.0);
            }
        }
        if matches!(n.state, State::Failed | State::Interrupted | State::Lost) {
            let e = n.error.as_deref().map(first_line).unwrap_or_default();
            failures.entry(e).or_default().push(n.instance_id.clone());
        }
    }
    let phases = durations
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            let stats = PhaseStats {
                n: v.len(),
                p50_s: pct(&v, 50.0),
                p95_s: pct(&v, 95.0),
                max_s: v.last().copied().unwrap_or_default(),
            };
            (k, stats)
        })
        .collect();
    let mut slowest: Vec<(String, f64)> = nodes
        .iter()
        .filter_map(|n| Some((n.instance_id.clone(), n.duration_s?)))
        .collect();
    slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
    slowest.truncate(5);
    let mut failures: Vec<FailureGroup> = failures
        .into_iter()
        .map(|(error, instances)| FailureGroup {
            error,
            count: instances.len(),
            instances,
        })
        .collect();
    failures.sort_by(|a, b| b.count.cmp(&a.count).then(a.error.cmp(&b.error)));
    Summary {
        nodes: nodes.len(),
        by_role,
        by_state,
        phases,
        slowest,
        failures,
    }
}

/// The table and summary as text.
pub fn text(cluster_id: &str, nodes: &[NodeView], s: &Summary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {cluster_id}: {} node(s) reported",
        nodes.len()
    );
    let _ = writeln!(
        out,
        "{:<20} {:<6} {:<16} {:<11} {:<13} {:>9}  error",
        "INSTANCE", "ROLE", "GROUP", "STATE", "PHASE", "DURATION"
    );
    for n in nodes {
        let dur = n.duration_s.map(|d| format!("{d:.1}s")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<20} {:<6} {:<16} {:<11} {:<13} {:>9}  {}",
            n.instance_id,
            n.role,
            n.group.as_deref().unwrap_or("-"),
            n.state.as_str(),
            n.phase.as_deref().unwrap_or("-"),
            dur,
            n.error.as_deref().map(first_line).unwrap_or_default()
        );
    }
    let _ = writeln!(out, "\nsummary:");
    for (role, states) in &s.by_role {
        let parts: Vec<String> = states.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let _ = writeln!(out, "  {role}: {}", parts.join(", "));
    }
    for (phase, st) in &s.phases {
        let _ = writeln!(
            out,
            "  {phase:<13} n={:<4} p50 {:.1}s  p95 {:.1}s  max {:.1}s",
            st.n, st.p50_s, st.p95_s, st.max_s
        );
    }
    if !s.slowest.is_empty() {
        let sl: Vec<String> = s
            .slowest
            .iter()
            .map(|(i, d)| format!("{i} {d:.1}s"))
            .collect();
        let _ = writeln!(out, "  slowest: {}", sl.join(", "));
    }
    for f in &s.failures {
        let _ = writeln!(out, "  {} node(s): {}", f.count, f.error);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(pct(&v, 50.0), 50.0);
        assert_eq!(pct(&v, 95.0), 95.0);
        assert_eq!(pct(&[3.0], 95.0), 3.0);
        assert_eq!(pct(&[], 50.0), 0.0);
    }
}
