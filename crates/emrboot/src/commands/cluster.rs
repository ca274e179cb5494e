//! `emrboot cluster`: every node's last published record for one cluster (see `report`).

use crate::cli::{ClusterArgs, Global};
use crate::exit::{CmdResult, Exit, FAILED, INVALID, OK};
use crate::report::view::{self, NodeView, State};
use crate::report::{html, nodes_prefix, NodeRecord};
use emrboot_aws::sdk::Budget;
use emrboot_aws::{Aws, S3};
use emrboot_node::Imds;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Parallel GETs of node records: enough for 1,000 records in well under 2 s, few enough not to
/// be throttled by S3 (3,500 GET/s per prefix).
const PARALLEL_GETS: usize = 32;
/// A node record is small; anything larger is not one.
const MAX_RECORD: u64 = 1 << 20;

pub async fn cluster(g: &Global, a: ClusterArgs) -> CmdResult {
    let (cluster_id, bucket, prefix) = locate(g, &a)?;
    let imds = Arc::new(Imds::from_env());
    let aws = Aws::new(imds, Budget::Bootstrap);
    let s3 = aws
        .s3()
        .await
        .map_err(|e| Exit::failed(format!("S3 client: {e}")))?;
    let keys_prefix = nodes_prefix(&prefix, &cluster_id);
    let start = Instant::now();
    let poll = Duration::from_secs(env_secs("EMRBOOT_CLUSTER_POLL_SECS").unwrap_or(5).max(1));
    let mut seen = Seen::new();
    loop {
        let (records, unreadable) = fetch(&s3, &bucket, &keys_prefix, &mut seen).await?;
        let now = time::OffsetDateTime::now_utc();
        let mut nodes: Vec<NodeView> = records
            .into_iter()
            .map(|r| view::node_view(r, now, a.lost_after))
            .collect();
        // Problems first: at 500 nodes, the few that need a look are at the top of the table
        // and of the timeline.
        nodes.sort_by(|x, y| {
            (x.state.severity(), &x.role, &x.instance_id).cmp(&(
                y.state.severity(),
                &y.role,
                &y.instance_id,
            ))
        });
        let done =
            nodes.iter().all(|n| n.state.finished()) && nodes.len() >= a.expect.unwrap_or(1).max(1);
        let timed_out = start.elapsed() >= Duration::from_secs(a.timeout);
        if !a.wait || done || timed_out {
            show(&a, &cluster_id, &nodes, &unreadable, now)?;
            if !a.wait {
                return Ok(OK);
            }
            if !done {
                eprintln!(
                    "cluster {cluster_id}: not finished within {}s ({} of {} reported node(s) finished, {} expected)",
                    a.timeout,
                    nodes.iter().filter(|n| n.state.finished()).count(),
                    nodes.len(),
                    a.expect.unwrap_or(1)
                );
                return Ok(INVALID);
            }
            let ok = nodes.iter().all(|n| n.state == State::Ok);
            return Ok(if ok { 0 } else { FAILED });
        }
        let left = Duration::from_secs(a.timeout).saturating_sub(start.elapsed());
        tokio::time::sleep(poll.min(left)).await;
    }
}

fn env_secs(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

fn show(
    a: &ClusterArgs,
    cluster_id: &str,
    nodes: &[NodeView],
    unreadable: &[String],
    now: time::OffsetDateTime,
) -> Result<(), Exit> {
    let summary = view::summary(nodes);
    if let Some(path) = &a.html {
        let page = html::page(cluster_id, nodes, &summary, now);
        emrboot_os::atomic::write(path, page.as_bytes(), 0o644)
            .map_err(|e| Exit::failed(format!("--html {}: {e}", path.display())))?;
    }
    if a.json {
        let doc = serde_json::json!({
            "cluster_id": cluster_id,
            "generated_at": emrboot_runner::status::now_rfc3339(),
            "lost_after_s": a.lost_after,
            "nodes": nodes,
            "summary": summary,
            "unreadable": unreadable,
        });
        println!("{doc:#}");
    } else {
        print!("{}", view::text(cluster_id, nodes, &summary));
        for u in unreadable {
            println!("  unreadable: {u}");
        }
    }
    Ok(())
}

/// The cluster id and report location: from the flags, else from this node (job-flow.json,
/// the config copy `run` kept).
fn locate(g: &Global, a: &ClusterArgs) -> Result<(String, String, String), Exit> {
    let cluster_id = match &a.cluster_id {
        Some(c) => c.clone(),
        None => {
            let info = crate::node::load_info(g.info_dir.clone())?;
            info.job_flow
                .as_ref()
                .and_then(|j| j.str("jobFlowId"))
                .map(str::to_string)
                .ok_or_else(|| {
                    Exit::invalid(
                        "no --cluster-id, and no job-flow.json with a jobFlowId on this node",
                    )
                })?
        }
    };
    if !cluster_id.starts_with("j-") || cluster_id.contains('/') {
        return Err(Exit::invalid(format!(
            "--cluster-id {cluster_id:?}: expected j-…"
        )));
    }
    let (bucket, prefix) = match &a.report {
        Some(url) => {
            let (b, mut p) = emrboot_config::values::s3_url(url)
                .map_err(|e| Exit::invalid(format!("--report: {e}")))?;
            if !p.is_empty() && !p.ends_with('/') {
                p.push('/');
            }
            (b, p)
        }
        None => {
            let path = emrboot_runner::StateDir::new(&g.state_dir).config_copy();
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Exit::invalid(format!(
                    "no --report, and the kept config {} cannot be read: {e}",
                    path.display()
                ))
            })?;
            let cfg =
                emrboot_config::parse(&path.display().to_string(), &text).map_err(Exit::invalid)?;
            let r = cfg.report.ok_or_else(|| {
                Exit::invalid(format!(
                    "no --report, and {} has no [report] table",
                    path.display()
                ))
            })?;
            (r.bucket, r.prefix)
        }
    };
    Ok((cluster_id, bucket, prefix))
}

/// What each object held when it was last fetched, by key, with the ETag it was listed with
/// (a record, or why the body is no record; a failed GET is not kept):
/// `--wait` polls every few seconds, and at 500 nodes most records have not changed since the
/// last poll, so each poll GETs only the objects whose ETag changed (S3 reads are strongly
/// consistent: a GET never returns an older body than the listing named).
type Seen = std::collections::HashMap<String, (String, Result<NodeRecord, String>)>;

/// Every node record under PREFIX (ListObjectsV2, paginated), fetched with bounded parallelism,
/// unless SEEN holds it at the ETag listed; objects that are not node records are listed as
/// unreadable, not fatal.
async fn fetch(
    s3: &S3,
    bucket: &str,
    prefix: &str,
    seen: &mut Seen,
) -> Result<(Vec<NodeRecord>, Vec<String>), Exit> {
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = s3
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| {
                Exit::failed(format!(
                    "{} (s3://{bucket}/{prefix})",
                    emrboot_aws::AwsError::new("s3:ListObjectsV2", e)
                ))
            })?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| Some((o.key()?, o.e_tag().unwrap_or_default())))
                .filter(|(k, _)| k.ends_with(".json"))
                .map(|(k, e)| (k.to_string(), e.to_string())),
        );
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => break,
        }
    }
    // Objects gone from the listing are forgotten; unchanged ones are not fetched again. An
    // empty ETag (a store that lists none) never matches, so such objects are always fetched.
    let listed: std::collections::HashSet<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    seen.retain(|k, _| listed.contains(k.as_str()));
    let gate = Arc::new(tokio::sync::Semaphore::new(PARALLEL_GETS));
    let mut tasks = tokio::task::JoinSet::new();
    for (key, etag) in &keys {
        if !etag.is_empty() && seen.get(key).is_some_and(|(e, _)| e == etag) {
            continue;
        }
        // What is fetched again is forgotten first: a fetch that fails leaves nothing stale.
        seen.remove(key);
        let (s3, bucket, gate) = (s3.clone(), bucket.to_string(), gate.clone());
        let (key, etag) = (key.clone(), etag.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let got = s3.get_small(&bucket, &key, MAX_RECORD).await;
            (
                key,
                etag,
                got.map(|body| serde_json::from_slice::<NodeRecord>(&body)),
            )
        });
    }
    let (mut records, mut unreadable) = (Vec::new(), Vec::new());
    while let Some(done) = tasks.join_next().await {
        match done {
            // Kept: a record, or an object that is no record (that ETag's body never changes).
            Ok((key, etag, Ok(parsed))) => {
                let kept = parsed.map_err(|e| format!("s3://{bucket}/{key}: {e}"));
                seen.insert(key, (etag, kept));
            }
            // Not kept: a failed GET (throttled, 5xx, timed out) is tried again next poll.
            Ok((key, _, Err(e))) => unreadable.push(format!("s3://{bucket}/{key}: {e}")),
            Err(e) => unreadable.push(format!("fetch task: {e}")),
        }
    }
    for (key, _) in &keys {
        match seen.get(key).map(|(_, r)| r) {
            Some(Ok(r)) => records.push(r.clone()),
            Some(Err(e)) => unreadable.push(e.clone()),
            None => {}
        }
    }
    unreadable.sort();
    Ok((records, unreadable))
}
