//! `cluster --html`: one self-contained page (no scripts, fonts or requests) with the summary
//! and a timeline: a row per node, a bar per phase, on one shared time axis.

use super::view::{parse_time, NodeView, State, Summary};
use emrboot_runner::Outcome;
use std::fmt::Write;
use time::OffsetDateTime;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const STYLE: &str = "body{font:13px system-ui,sans-serif;margin:16px;color:#222}\
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #eee}\
.tl{margin-top:12px}.row{display:flex;align-items:center;height:16px;border-bottom:1px solid #f2f2f2}\
.lbl{width:300px;flex:none;font:11px monospace;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}\
.trk{position:relative;flex:1;height:12px;background:#fafafa}\
.bar{position:absolute;top:1px;height:10px;min-width:2px;border-radius:2px}\
.bar.failed,.bar.interrupted{outline:2px solid #c00;background:repeating-linear-gradient(45deg,#e66,#e66 3px,#fbb 3px,#fbb 6px)}\
.bar.running{opacity:.55}\
.p-install{background:#4e79a7}.p-tag{background:#f28e2b}.p-efs-mount{background:#59a14f}\
.p-ip-takeover{background:#b07aa1}.p-shutdown-hook{background:#76b7b2}\
.s-failed,.s-lost,.s-interrupted{color:#c00;font-weight:bold}.s-ok{color:#2a7}\
.legend span{display:inline-block;padding:1px 6px;margin-right:6px;color:#fff;border-radius:2px}\
.axis{display:flex;justify-content:space-between;margin-left:300px;font-size:11px;color:#666}";

pub fn page(cluster_id: &str, nodes: &[NodeView], s: &Summary, now: OffsetDateTime) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>emrboot: {c}</title><style>{STYLE}</style></head><body>\
         <h1>Bootstrap of {c}</h1><p>{n} node(s) reported; generated {g}</p>",
        c = esc(cluster_id),
        n = nodes.len(),
        g = esc(&emrboot_runner::status::now_rfc3339()),
    );
    summary_html(&mut o, s);
    timeline(&mut o, nodes, now);
    o.push_str("</body></html>\n");
    o
}

fn summary_html(o: &mut String, s: &Summary) {
    o.push_str("<h2>Summary</h2><table id=\"by-role\"><tr><th>role</th><th>states</th></tr>");
    for (role, states) in &s.by_role {
        let parts: Vec<String> = states.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(role),
            esc(&parts.join(", "))
        );
    }
    o.push_str("</table><table id=\"phases\"><tr><th>phase</th><th>n</th><th>p50</th><th>p95</th><th>max</th></tr>");
    for (p, st) in &s.phases {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{:.1}s</td><td>{:.1}s</td><td>{:.1}s</td></tr>",
            esc(p),
            st.n,
            st.p50_s,
            st.p95_s,
            st.max_s
        );
    }
    o.push_str("</table>");
    if !s.failures.is_empty() {
        o.push_str("<h2>Failures</h2><table id=\"failures\"><tr><th>nodes</th><th>error</th></tr>");
        for f in &s.failures {
            let _ = write!(o, "<tr><td>{}</td><td>{}</td></tr>", f.count, esc(&f.error));
        }
        o.push_str("</table>");
    }
}

fn timeline(o: &mut String, nodes: &[NodeView], now: OffsetDateTime) {
    // Every bar: (node index, phase, outcome, start, end, error).
    let mut bars = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for p in n.record.run.iter().flat_map(|r| &r.phases) {
            let Some(start) = p.started_at.as_deref().and_then(parse_time) else {
                continue;
            };
            let end = match p.duration_ms {
                Some(ms) => start + time::Duration::milliseconds(ms as i64),
                None if n.state == State::Lost => parse_time(&n.updated_at).unwrap_or(start),
                None => now,
            };
            bars.push((
                i,
                p.phase.as_str(),
                p.outcome,
                start,
                end.max(start),
                p.error.clone(),
            ));
        }
    }
    let (Some(t0), Some(t1)) = (
        bars.iter().map(|b| b.3).min(),
        bars.iter().map(|b| b.4).max(),
    ) else {
        o.push_str("<p>No phase has started yet.</p>");
        return;
    };
    let span = (t1 - t0).as_seconds_f64().max(1.0);
    let pos = |t: OffsetDateTime| (t - t0).as_seconds_f64() / span * 100.0;
    o.push_str("<h2>Timeline</h2><div class=\"legend\">");
    for p in emrboot_config::PhaseName::ORDER {
        let _ = write!(o, "<span class=\"p-{0}\">{0}</span>", p.as_str());
    }
    let _ = write!(
        o,
        "</div><div class=\"axis\"><span>0 s</span><span>{:.0} s</span><span>{:.0} s</span></div><div class=\"tl\">",
        span / 2.0,
        span
    );
    for (i, n) in nodes.iter().enumerate() {
        let _ = write!(
            o,
            "<div class=\"row node\" data-instance=\"{id}\" data-state=\"{st}\"><div class=\"lbl\">{id} {role} \
             <span class=\"s-{st}\">{st}</span></div><div class=\"trk\">",
            id = esc(&n.instance_id),
            role = esc(&n.role),
            st = n.state.as_str()
        );
        for b in bars.iter().filter(|b| b.0 == i) {
            let cls = match b.2 {
                Outcome::Failed => "failed",
                Outcome::Interrupted => "interrupted",
                Outcome::Running => "running",
                _ => "done",
            };
            let secs = (b.4 - b.3).as_seconds_f64();
            let mut title = format!("{} {}: {} {:.1}s", n.instance_id, b.1, b.2.as_str(), secs);
            if let Some(e) = &b.5 {
                let _ = write!(title, ": {e}");
            }
            let _ = write!(
                o,
                "<div class=\"bar p-{p} {cls}\" data-phase=\"{p}\" data-outcome=\"{out}\" \
                 style=\"left:{l:.3}%;width:{w:.3}%\" title=\"{t}\"></div>",
                p = b.1,
                out = b.2.as_str(),
                l = pos(b.3),
                w = pos(b.4) - pos(b.3),
                t = esc(&title)
            );
        }
        o.push_str("</div></div>");
    }
    o.push_str("</div>");
}
