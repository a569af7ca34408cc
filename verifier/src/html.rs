//! `mmaudit-verify report --html`: the JSON report rendered as one self-contained HTML
//! page (inline CSS and SVG, no script, nothing fetched from the network).
//!
//! The page is drawn from the JSON that `check --json` and `serve --json-dir` write, so
//! a page made from a capture and one made from its JSON report are the same. Every
//! string of the report is escaped: host names, producer strings, notices and gap
//! reasons come from the audited party, which must not be able to restyle the page
//! (a forged PASS banner) or run script in the auditor's browser.

use std::fmt::Write as _;

use anyhow::{bail, Result};
use serde_json::Value;

use crate::report::human_flops;

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328;margin:0;background:#fff}
main{max-width:1100px;margin:0 auto;padding:0 24px 48px}
#verdict{margin:0;padding:18px 24px;color:#fff;font-size:30px;letter-spacing:.04em}
#verdict.pass{background:#1a7f37}#verdict.fail{background:#cf222e}
#verdict small{font-size:15px;letter-spacing:0;font-weight:normal;margin-left:16px}
h2{margin:36px 0 6px;padding-top:12px;border-top:1px solid #d0d7de;font-size:20px}
h3{margin:22px 0 6px;font-size:15px}
table{border-collapse:collapse;margin:6px 0}
td,th{padding:3px 10px;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600;vertical-align:middle}
.badge.pass{background:#1a7f37}.badge.fail{background:#cf222e}
.over{color:#cf222e;font-weight:600}
.meta{color:#59636e;margin:4px 0}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:11px;height:11px;margin-right:5px;vertical-align:-1px}
.failures td{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
.note{color:#59636e;font-size:12px}
svg text{font:11px system-ui,sans-serif;fill:#59636e}
";

/// Colours of the coverage categories, in drawing order.
const VERIFIED: &str = "#2da44e";
const FAILED: &str = "#cf222e";
const UNCHECKED: &str = "#d4a72c";
const NOT_AUDITED: &str = "#57606a";
const CAPTURE: &str = "#a5b4c4";
const UNSAMPLED: &str = "#d8dee4";

/// The verdict a report's JSON supports: its own verdict pass, every stream's too, no
/// calls missing between segments. (The JSON is not authenticated: a page, and the
/// exit status of `report`, never say PASS where any part of it says otherwise.)
pub fn passed(report: &Value) -> bool {
    let Ok(streams) = streams(report) else {
        return false;
    };
    text(report, "verdict") == "pass"
        && streams.iter().all(|s| text(s, "verdict") == "pass")
        && report
            .get("coverage_holes")
            .and_then(Value::as_array)
            .is_none_or(|h| h.is_empty())
}

/// The streams of a report: the JSON of `check --json` (several streams) or of one
/// stream; an error unless there is at least one and each has a verdict.
fn streams(report: &Value) -> Result<Vec<&Value>> {
    let streams: Vec<&Value> = match report.get("streams") {
        Some(Value::Array(streams)) => streams.iter().collect(),
        Some(_) => bail!("\"streams\" is not a list: not an mmaudit-verify JSON report"),
        None if report.get("verdict").is_some() && report.get("calls").is_some() => {
            vec![report]
        }
        None => bail!(
            "neither \"streams\" nor \"verdict\" and \"calls\": not an mmaudit-verify JSON report"
        ),
    };
    for (i, s) in streams.iter().enumerate() {
        if !s.is_object() || s.get("verdict").and_then(Value::as_str).is_none() {
            bail!(
                "stream {} of the report has no verdict: not an mmaudit-verify JSON report",
                i + 1
            );
        }
    }
    if streams.is_empty() {
        bail!("the report holds no stream: nothing to draw");
    }
    Ok(streams)
}

/// Renders a report: the JSON of `check --json` (several streams) or of one stream.
/// `source` names where it came from, for the page's footer.
pub fn render(report: &Value, source: &str) -> Result<String> {
    let streams = streams(report)?;
    let pass = passed(report);
    let failed = streams
        .iter()
        .filter(|s| text(s, "verdict") != "pass")
        .count();
    let verdict = if pass { "PASS" } else { "FAIL" };
    let mut p = String::new();
    let _ = write!(
        p,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>mmaudit report: {verdict}</title><style>{STYLE}</style></head><body>\n\
         <h1 id=\"verdict\" class=\"{cls}\">{verdict}<small>{n} stream{s}, {failed} failed</small></h1>\n<main>\n",
        cls = verdict.to_lowercase(),
        n = streams.len(),
        s = if streams.len() == 1 { "" } else { "s" },
    );
    if let Some(Value::Array(holes)) = report.get("coverage_holes") {
        p += "<h3>Calls in none of the captures (fails the combined verdict)</h3><ul class=\"holes\">";
        for h in holes {
            let _ = write!(
                p,
                "<li class=\"over\">{}</li>",
                esc(h.as_str().unwrap_or("?"))
            );
        }
        p += "</ul>\n";
    }
    streams_table(&mut p, &streams);
    for (i, s) in streams.iter().enumerate() {
        stream_section(&mut p, i, s);
    }
    let _ = write!(
        p,
        "<p class=\"note\" id=\"footer\">Drawn by mmaudit-verify {} from {}. Every number was \
         counted by the verifier from what it authenticated, re-derived and recomputed; none \
         is copied from the audited program's own claims about its results.</p>\n</main></body></html>\n",
        env!("CARGO_PKG_VERSION"),
        esc(source)
    );
    Ok(p)
}

fn streams_table(p: &mut String, streams: &[&Value]) {
    *p += "<table id=\"streams\"><tr><th>verdict</th><th>stream</th><th class=\"n\">calls</th>\
           <th class=\"n\">FLOPs</th><th class=\"n\">sampled</th><th class=\"n\">verified</th>\
           <th class=\"n\">failed</th><th class=\"n\">unchecked</th><th class=\"n\">entries checked</th></tr>\n";
    for (i, s) in streams.iter().enumerate() {
        let _ = writeln!(
            p,
            "<tr><td>{}</td><td><a href=\"#stream-{i}\">{}</a></td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            badge(s),
            esc(text(s, "name")),
            count(uint(s, "calls")),
            human_flops(float(s, "flops")),
            count(uint(s, "sampled")),
            count(uint(s, "verified")),
            count(uint(s, "mismatched")),
            count(unchecked(s)),
            count(uint(s, "entries_checked")),
        );
    }
    *p += "</table>\n";
}

fn badge(s: &Value) -> String {
    let pass = text(s, "verdict") == "pass";
    format!(
        "<span class=\"badge {0}\">{1}</span>",
        if pass { "pass" } else { "fail" },
        if pass { "PASS" } else { "FAIL" }
    )
}

fn stream_section(p: &mut String, i: usize, s: &Value) {
    let _ = writeln!(
        p,
        "<section class=\"stream\" id=\"stream-{i}\" data-verdict=\"{}\">\n<h2>{} {}</h2>",
        if text(s, "verdict") == "pass" {
            "pass"
        } else {
            "fail"
        },
        badge(s),
        esc(text(s, "name"))
    );
    if let Some(h) = s.get("header").filter(|h| h.is_object()) {
        let _ = writeln!(
            p,
            "<p class=\"meta\">stream {} segment {} (first call {}) from <b>{}</b> pid {} ({}), \
             devices {}, started {}; key id {}</p>",
            esc(text(h, "stream_id")),
            uint(h, "segment"),
            uint(h, "first_index"),
            prover(text(h, "host")),
            uint(h, "pid"),
            prover(text(h, "producer")),
            esc(&h.get("devices").map_or(String::new(), Value::to_string)),
            utc(uint(h, "started_unix_ns")),
            esc(text(h, "key_id")),
        );
        let policy = s.get("policy").filter(|v| v.is_object());
        let rate = |name: &str, min: &str| {
            let got = uint(h, name);
            match policy {
                Some(pol) => {
                    let floor = uint(pol, min);
                    let cls = if got < floor { " class=\"over\"" } else { "" };
                    format!(
                        "<span{cls}>{} (policy: at least {})</span>",
                        ppm(got),
                        ppm(floor)
                    )
                }
                None => ppm(got),
            }
        };
        let _ = writeln!(
            p,
            "<p class=\"meta\">{} at {} of calls, {} of rows, {} of columns, {} of batch entries</p>",
            if text(h, "mode") == "commit" {
                "commit mode (docs/COMMIT.md): challenged"
            } else {
                "sampled"
            },
            rate("call_rate_ppm", "min_call_rate_ppm"),
            rate("row_rate_ppm", "min_row_rate_ppm"),
            rate("col_rate_ppm", "min_col_rate_ppm"),
            rate("batch_rate_ppm", "min_batch_rate_ppm"),
        );
    } else {
        *p += "<p class=\"meta over\">no authenticated header</p>\n";
    }
    let failures = s.get("failures").and_then(Value::as_array);
    let more = uint(s, "failures_not_shown");
    if failures.is_some_and(|f| !f.is_empty()) || more > 0 {
        failures_table(p, failures.map_or(&[], |f| &f[..]), more);
    }
    coverage(p, s);
    timeline(p, s);
    histograms(p, s);
    weights(p, s);
    gaps_and_notices(p, s);
    *p += "</section>\n";
}

fn failures_table(p: &mut String, failures: &[Value], more: u64) {
    *p += "<h3>Failures</h3>\n";
    if !failures.is_empty() {
        *p += "<table class=\"failures\"><tr><th>kind</th><th>call</th><th>what</th></tr>\n";
    }
    for f in failures {
        let _ = writeln!(
            p,
            "<tr class=\"failure\"><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(text(f, "kind")),
            esc(f
                .get("call")
                .and_then(Value::as_str)
                .unwrap_or("(the stream)")),
            esc(text(f, "message"))
        );
    }
    if !failures.is_empty() {
        *p += "</table>\n";
    }
    if more > 0 {
        let _ = writeln!(
            p,
            "<p class=\"note over\">... and {} more failures (raise --max-failures to see them)</p>",
            count(more)
        );
    }
}

/// Where each call went: the disjoint categories of the stream's calls.
fn coverage(p: &mut String, s: &Value) {
    let calls = uint(s, "calls");
    let graphs = s.get("graphs").unwrap_or(&Value::Null);
    let captures = uint(graphs, "capture_records");
    // A call can carry several "not audited" flags; the timeline counts it once.
    let not_audited = match bins(s) {
        Some(b) => b.iter().map(|b| uint(b, "not_audited")).sum(),
        None => [
            "captured_not_audited",
            "no_session_not_audited",
            "unmodelled_not_audited",
            "rejected",
        ]
        .iter()
        .map(|k| uint(s, k))
        .sum(),
    };
    let (sampled, verified, failed) = (
        uint(s, "sampled"),
        uint(s, "verified"),
        uint(s, "mismatched"),
    );
    let unchecked = unchecked(s);
    let unsampled = calls.saturating_sub(sampled + not_audited + captures);
    let parts = [
        (
            "verified",
            verified,
            VERIFIED,
            "sampled, every checked entry matched",
        ),
        (
            "failed",
            failed,
            FAILED,
            "sampled, a wrong or imprecise entry or a malformed sample",
        ),
        (
            "unchecked",
            unchecked,
            UNCHECKED,
            "sampled, not judged: dropped (gap), missing or unverifiable",
        ),
        (
            "not audited",
            not_audited,
            NOT_AUDITED,
            "flagged: graph replay not gathered, no session, not modelled, rejected",
        ),
        (
            "graph capture",
            captures,
            CAPTURE,
            "recorded while a graph was captured: no work then, ledgered at each replay",
        ),
        (
            "not sampled",
            unsampled,
            UNSAMPLED,
            "the schedule did not select them",
        ),
    ];
    *p += "<h3>Coverage of the calls</h3>\n";
    let width = 1000.0;
    let mut svg = String::new();
    let mut x = 0.0;
    for (name, n, colour, _) in parts {
        if n == 0 {
            continue;
        }
        // Never narrower than 2 px: one failed call among millions stays visible.
        let w = (width * n as f64 / calls.max(1) as f64).max(2.0);
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"0\" width=\"{w:.1}\" height=\"26\" fill=\"{colour}\"><title>{name}: {}</title></rect>",
            count(n)
        );
        x += w;
    }
    let _ = writeln!(
        p,
        "<svg class=\"coverage\" width=\"100%\" viewBox=\"0 0 {:.1} 26\" preserveAspectRatio=\"none\" height=\"26\">{svg}</svg>",
        x.max(width)
    );
    *p += "<table class=\"coverage\"><tr><th></th><th class=\"n\">calls</th><th class=\"n\">share</th><th>meaning</th></tr>\n";
    for (name, n, colour, meaning) in parts {
        let _ = writeln!(
            p,
            "<tr><td><i style=\"display:inline-block;width:11px;height:11px;background:{colour}\"></i> {name}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{meaning}</td></tr>",
            count(n),
            share(n as f64 / calls.max(1) as f64)
        );
    }
    let _ = writeln!(
        p,
        "<tr><th>all calls</th><th class=\"n\">{}</th><th class=\"n\">{}</th><th>{} claimed</th></tr></table>",
        count(calls),
        share(1.0),
        human_flops(float(s, "flops"))
    );
    let _ = writeln!(
        p,
        "<p class=\"meta\">eager calls {}; CUDA graph replays {} ({} sampled, {} verified, {} not audited; {}); \
         entries checked {} (worst error/tolerance {:.3}, worst error/declared-precision bound {:.3})</p>",
        count(uint(graphs, "eager")),
        count(uint(graphs, "replayed")),
        count(uint(graphs, "replayed_sampled")),
        count(uint(graphs, "replayed_verified")),
        count(uint(graphs, "replayed_not_audited")),
        human_flops(float(graphs, "replayed_flops")),
        count(uint(s, "entries_checked")),
        float(s, "worst_tolerance_ratio"),
        float(s, "worst_precision_ratio"),
    );
    if let Some(Value::Object(reasons)) = s.get("not_audited") {
        *p += "<table class=\"not-audited\"><tr><th>not audited, by reason</th><th class=\"n\">calls</th>\
               <th class=\"n\">share of calls</th><th class=\"n\">share of FLOPs</th><th>of</th><th class=\"n\">policy limit</th></tr>\n";
        for (reason, r) in reasons {
            let (calls, flops) = (float(r, "share_of_calls"), float(r, "share_of_flops"));
            let limit = r.get("limit").and_then(Value::as_f64);
            let over = limit.is_some_and(|l| calls > l || flops > l);
            let _ = writeln!(
                p,
                "<tr{}><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
                if over { " class=\"over\"" } else { "" },
                esc(reason),
                count(uint(r, "calls")),
                share(calls),
                share(flops),
                esc(text(r, "of")),
                limit.map_or("none".into(), share),
            );
        }
        *p += "</table>\n";
    }
}

/// Sampled calls judged neither verified nor failed: dropped (gaps), missing,
/// unverifiable, or never planned (an overloaded stream).
fn unchecked(s: &Value) -> u64 {
    uint(s, "sampled").saturating_sub(uint(s, "verified") + uint(s, "mismatched"))
}

fn bins(s: &Value) -> Option<&Vec<Value>> {
    s.get("timeline")?.get("bins")?.as_array()
}

/// Calls and FLOPs per bin of calls, in the order they were made.
fn timeline(p: &mut String, s: &Value) {
    *p += "<h3>Calls and FLOPs over the stream</h3>\n";
    let Some(bins) = bins(s).filter(|b| !b.is_empty()) else {
        *p += "<p class=\"note\">no calls binned (an empty stream, or a report written before timelines)</p>\n";
        return;
    };
    let t = &s["timeline"];
    let (first, width) = (uint(t, "first_call"), uint(t, "calls_per_bin").max(1));
    // u128: a prover's ledger may start or jump near 2^64; shown capped at 2^64 - 1
    let start = |i: u128| u128::from(first) + i * u128::from(width);
    let cap = |x: u128| u64::try_from(x).unwrap_or(u64::MAX);
    let last = cap(start(bins.len() as u128) - 1);
    let _ = writeln!(
        p,
        "<p class=\"note\">The ledger has no clock: the time axis is the call index, calls {first} to {last} (at most), \
         {width} call{} per bar.</p>",
        if width == 1 { "" } else { "s" }
    );
    let label = |i: usize| {
        let i = i as u128;
        format!("calls {}..{}", cap(start(i)), cap(start(i + 1) - 1))
    };
    let stacks: Vec<Vec<(f64, &str)>> = bins
        .iter()
        .map(|b| {
            let (calls, sampled) = (uint(b, "calls"), uint(b, "sampled"));
            let (verified, failed, na, captures) = (
                uint(b, "verified"),
                uint(b, "failed"),
                uint(b, "not_audited"),
                uint(b, "captures"),
            );
            // sampled and judged neither way: dropped, missing, unverifiable, or never
            // planned (an overloaded stream)
            let unchecked = sampled.saturating_sub(verified + failed);
            let rest = calls.saturating_sub(sampled + na + captures);
            vec![
                (verified as f64, VERIFIED),
                (failed as f64, FAILED),
                (unchecked as f64, UNCHECKED),
                (na as f64, NOT_AUDITED),
                (captures as f64, CAPTURE),
                (rest as f64, UNSAMPLED),
            ]
        })
        .collect();
    let titles: Vec<String> = bins
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                "{}: {} calls, {} sampled, {} verified, {} failed, {} unchecked, {} not audited, {}",
                label(i),
                uint(b, "calls"),
                uint(b, "sampled"),
                uint(b, "verified"),
                uint(b, "failed"),
                uint(b, "unchecked"),
                uint(b, "not_audited"),
                human_flops(float(b, "flops"))
            )
        })
        .collect();
    bar_chart(
        p,
        "timeline calls",
        "calls",
        &stacks,
        &titles,
        (first, last),
        false,
    );
    let flops: Vec<Vec<(f64, &str)>> = bins
        .iter()
        .map(|b| vec![(float(b, "flops"), "#0969da")])
        .collect();
    bar_chart(
        p,
        "timeline flops",
        "FLOPs",
        &flops,
        &titles,
        (first, last),
        true,
    );
}

/// A chart of stacked bars, one per bin, from the call `first` to the call `last`;
/// `flops` labels the scale in FLOPs rather than calls.
fn bar_chart(
    p: &mut String,
    class: &str,
    unit: &str,
    stacks: &[Vec<(f64, &str)>],
    titles: &[String],
    (first, last): (u64, u64),
    flops: bool,
) {
    let (w, h, left, bottom) = (1000.0, 150.0, 64.0, 18.0);
    let max = stacks
        .iter()
        .map(|s| s.iter().map(|(v, _)| v).sum::<f64>())
        .fold(0.0, f64::max);
    let step = (w - left) / stacks.len() as f64;
    let mut svg = String::new();
    for (i, (stack, title)) in stacks.iter().zip(titles).enumerate() {
        let x = left + i as f64 * step;
        let mut y = h - bottom;
        let _ = write!(svg, "<g><title>{}</title>", esc(title));
        for &(v, colour) in stack {
            if v <= 0.0 || max <= 0.0 {
                continue;
            }
            // A bar of any nonzero count is at least 2 px tall: a single failed call
            // among thousands stays visible.
            let bh = ((h - bottom - 4.0) * v / max).max(2.0);
            y -= bh;
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{colour}\"/>",
                (step - 1.0).max(0.5)
            );
        }
        svg += "</g>";
    }
    let top = if flops {
        human_flops(max)
    } else {
        count(max as u64)
    };
    let _ = writeln!(
        p,
        "<svg class=\"{class}\" width=\"100%\" viewBox=\"0 0 {w} {h}\">\
         <line x1=\"{left}\" y1=\"{b}\" x2=\"{w}\" y2=\"{b}\" stroke=\"#8c959f\"/>\
         <text x=\"{l2}\" y=\"12\" text-anchor=\"end\">{top}</text>\
         <text x=\"{l2}\" y=\"{b}\" text-anchor=\"end\">0 {unit}</text>\
         <text x=\"{left}\" y=\"{h}\">call {first}</text>\
         <text x=\"{w}\" y=\"{h}\" text-anchor=\"end\">call {last}</text>{svg}</svg>",
        b = h - bottom,
        l2 = left - 4.0,
    );
}

/// One histogram of error/tolerance per combination of types.
fn histograms(p: &mut String, s: &Value) {
    *p += "<h3>Checked entries: error / tolerance, per types</h3>\n";
    let Some(hist) = s.get("error_histograms") else {
        *p += "<p class=\"note\">not in this report (written before histograms)</p>\n";
        return;
    };
    let buckets: Vec<&str> = hist
        .get("buckets")
        .and_then(Value::as_array)
        .map(|b| b.iter().map(|v| v.as_str().unwrap_or("?")).collect())
        .unwrap_or_default();
    let Some(by_types) = entries(hist, "by_types") else {
        *p += "<p class=\"note\">no entries were checked</p>\n";
        return;
    };
    *p += "<p class=\"note\">|claimed - recomputed| / tolerance for each checked entry; 1 and above fails. \
           Bar heights are logarithmic in the count.</p>\n";
    for (types, h) in by_types {
        let counts: Vec<u64> = h
            .get("entries")
            .and_then(Value::as_array)
            .map(|c| c.iter().map(|v| v.as_u64().unwrap_or(0)).collect())
            .unwrap_or_default();
        let total: u64 = counts.iter().sum();
        let beyond: u64 = buckets
            .iter()
            .zip(&counts)
            .filter(|(b, _)| beyond_tolerance(b))
            .map(|(_, c)| c)
            .sum();
        let _ = writeln!(
            p,
            "<p><b>{}</b>: {} entries, <span{}>{} beyond tolerance</span>, <span{}>{} beyond the declared-precision bound</span></p>",
            esc(types),
            count(total),
            if beyond > 0 { " class=\"over\"" } else { "" },
            count(beyond),
            if uint(h, "imprecise") > 0 { " class=\"over\"" } else { "" },
            count(uint(h, "imprecise")),
        );
        let (w, ht, bottom) = (1000.0, 120.0, 30.0);
        let step = w / counts.len().max(1) as f64;
        let max = counts.iter().copied().max().unwrap_or(0);
        let mut svg = String::new();
        for (i, &c) in counts.iter().enumerate() {
            let name = buckets.get(i).copied().unwrap_or("?");
            let colour = if name == "unbounded" {
                UNCHECKED
            } else if beyond_tolerance(name) {
                FAILED
            } else {
                VERIFIED
            };
            let x = i as f64 * step;
            if c > 0 {
                let bh = ((ht - bottom - 16.0) * (1.0 + c as f64).log10()
                    / (1.0 + max as f64).log10())
                .max(2.0);
                let y = ht - bottom - bh;
                let _ = write!(
                    svg,
                    "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{colour}\"><title>{}: {}</title></rect>\
                     <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                    x + 4.0,
                    step - 8.0,
                    esc(name),
                    c,
                    x + step / 2.0,
                    y - 3.0,
                    count(c)
                );
            }
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x + step / 2.0,
                ht - bottom + 14.0,
                esc(name)
            );
        }
        let _ = writeln!(
            p,
            "<svg class=\"histogram\" data-types=\"{}\" width=\"100%\" viewBox=\"0 0 {w} {ht}\">\
             <line x1=\"0\" y1=\"{b}\" x2=\"{w}\" y2=\"{b}\" stroke=\"#8c959f\"/>{svg}</svg>",
            esc(types),
            b = ht - bottom
        );
    }
}

/// True for the buckets of entries beyond their tolerance (ratio 1 and above).
fn beyond_tolerance(bucket: &str) -> bool {
    bucket == "1..10" || bucket == ">=10"
}

fn weights(p: &mut String, s: &Value) {
    let Some(w) = s.get("weights").filter(|w| w.is_object()) else {
        return;
    };
    *p += "<h3>Weights</h3>\n";
    let unmatched = uint(w, "unmatched");
    let required = w.get("required").and_then(Value::as_bool).unwrap_or(false);
    let _ = writeln!(
        p,
        "<p>{} of {} sampled calls judged used a held tensor ({} sent as a reference); \
         <span{}>{} used none</span> ({} beside a held tensor of their shape that differed); {}.</p>",
        count(uint(w, "matched")),
        count(uint(w, "judged")),
        count(uint(w, "referenced")),
        if unmatched > 0 && required { " class=\"over\"" } else { "" },
        count(unmatched),
        count(uint(w, "unmatched_differing")),
        if required { "required: each unmatched call fails" } else { "not required: reported only" }
    );
    let Some(tensors) = entries(w, "tensors") else {
        return;
    };
    *p += "<table class=\"weights\"><tr><th>tensor</th><th class=\"n\">sampled calls</th><th>used as</th></tr>\n";
    for (name, n) in tensors {
        let forms = w
            .get("forms")
            .and_then(|f| f.get(name))
            .and_then(Value::as_object)
            .map(|f| {
                f.iter()
                    .map(|(form, n)| format!("{} x{}", esc(form), n))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let _ = writeln!(
            p,
            "<tr><td>{}</td><td class=\"n\">{}</td><td>{forms}</td></tr>",
            esc(name),
            count(n.as_u64().unwrap_or(0))
        );
    }
    *p += "</table>\n";
}

fn gaps_and_notices(p: &mut String, s: &Value) {
    if let Some(reasons) = entries(s, "gap_reasons") {
        *p += "<h3>Samples the library dropped (gaps), by reason</h3><ul>";
        for (reason, n) in reasons {
            let _ = write!(
                p,
                "<li>{}: {}</li>",
                prover(reason),
                count(n.as_u64().unwrap_or(0))
            );
        }
        *p += "</ul>\n";
    }
    let notices: Vec<&str> = s
        .get("notices")
        .and_then(Value::as_array)
        .map(|n| n.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(reason) = s.get("disabled").and_then(Value::as_str) {
        let _ = writeln!(
            p,
            "<p class=\"over\">The library disabled auditing: {}</p>",
            prover(reason)
        );
    }
    if !notices.is_empty() {
        *p += "<h3>Notices from the library (the audited side's words, not the verifier's)</h3><ul class=\"notices\">";
        for n in notices {
            let _ = write!(p, "<li>{}</li>", prover(n));
        }
        *p += "</ul>\n";
    }
}

/// A string the audited program chose (host name, producer, notices), escaped and
/// isolated from the text around it (`<bdi>`: a right-to-left override inside cannot
/// reorder the verifier's words).
fn prover(text: &str) -> String {
    format!("<bdi>{}</bdi>", esc(text))
}

/// `text` with the five characters that matter in HTML text and attributes escaped.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out += "&amp;",
            '<' => out += "&lt;",
            '>' => out += "&gt;",
            '"' => out += "&quot;",
            '\'' => out += "&#39;",
            c => out.push(c),
        }
    }
    out
}

/// The object under `key`, when it has entries.
fn entries<'a>(v: &'a Value, key: &str) -> Option<&'a serde_json::Map<String, Value>> {
    v.get(key)
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn uint(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn float(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// 1234567 as "1 234 567" (thin spaces).
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}

fn share(x: f64) -> String {
    if x > 0.0 && x < 0.0001 {
        format!("{:.2e}%", 100.0 * x)
    } else {
        format!("{:.2}%", 100.0 * x)
    }
}

fn ppm(v: u64) -> String {
    share(v as f64 / 1e6)
}

/// Nanoseconds since the Unix epoch as "YYYY-MM-DD HH:MM:SS UTC".
fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(951_782_400 * 1_000_000_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn counts_are_grouped() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1\u{2009}000");
        assert_eq!(count(1_234_567), "1\u{2009}234\u{2009}567");
    }

    /// A one-stream report in the shape of `StreamReport::to_json`, with `host` and
    /// `notice` as the audited program sent them.
    fn report(verdict: &str, host: &str, notice: &str) -> Value {
        let mut r = crate::report::StreamReport::new("run.mma");
        let mut h = mmaudit_protocol::fuzzing::seed_header();
        h.host = host.into();
        h.producer = notice.into();
        r.header = Some(h);
        r.notices.push(notice.into());
        r.gap_reasons.insert(notice.into(), 1);
        r.calls = 3;
        r.ended = verdict == "pass";
        for i in 0..3 {
            r.timeline.bin(i).calls += 1;
        }
        r.apply_policy(&crate::policy::Policy::lenient());
        crate::report::summary_json(&[r])
    }

    fn verdict_of(page: &str) -> &str {
        let at = page
            .find("id=\"verdict\" class=\"")
            .expect("a verdict banner")
            + 20;
        &page[at..at + 4]
    }

    #[test]
    fn strings_from_the_audited_program_cannot_restyle_the_page_or_run_script() {
        // The cheat: a prover that cannot pass names its host and writes a notice that
        // would, unescaped, end the report early and draw a green PASS banner.
        let forged = "</p></section><style>#verdict{display:none}</style>\
                      <h1 id=\"verdict\" class=\"pass\">PASS</h1><script>alert(1)</script>";
        let page = render(&report("fail", forged, forged), "t").unwrap();
        assert_eq!(verdict_of(&page), "fail");
        assert_eq!(page.matches("id=\"verdict\"").count(), 1);
        assert_eq!(
            page.matches("<style>").count(),
            1,
            "only the page's own style"
        );
        assert!(!page.contains("<script"));
        assert!(!page.contains("<h1 id=\"verdict\" class=\"pass\""));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        // Absent the cheat, the same strings show as they are.
        let page = render(&report("fail", "gpu-node-7", "reconnected"), "t").unwrap();
        assert_eq!(verdict_of(&page), "fail");
        assert!(page.contains("<b><bdi>gpu-node-7</bdi></b>"));
        assert!(page.contains("<li><bdi>reconnected</bdi></li>"));
    }

    #[test]
    fn a_stream_or_a_summary_renders_with_its_verdict() {
        let summary = report("fail", "h", "n");
        let page = render(&summary, "t").unwrap();
        assert_eq!(verdict_of(&page), "fail");
        // One stream's JSON (as `serve` used to write) draws the same page.
        assert_eq!(render(&summary["streams"][0], "t").unwrap(), page);
        let mut passing = summary.clone();
        passing["verdict"] = json!("pass");
        passing["streams"][0]["verdict"] = json!("pass");
        let page = render(&passing, "t").unwrap();
        assert_eq!(verdict_of(&page), "pass");
        assert!(page.contains("class=\"timeline calls\""));
    }

    #[test]
    fn a_page_says_pass_only_where_every_part_of_the_json_does() {
        let mut forged = report("fail", "h", "n");
        forged["verdict"] = json!("pass");
        assert!(!passed(&forged), "a failed stream under a pass verdict");
        assert_eq!(verdict_of(&render(&forged, "t").unwrap()), "fail");
        let mut holes = report("fail", "h", "n");
        holes["verdict"] = json!("pass");
        holes["streams"][0]["verdict"] = json!("pass");
        assert!(passed(&holes));
        holes["coverage_holes"] = json!(["stream 1: calls 0..9 are in none of the captures"]);
        assert!(!passed(&holes));
        assert!(render(&json!({"streams": [], "verdict": "pass"}), "t").is_err());
    }

    #[test]
    fn a_ledger_near_the_end_of_the_index_space_draws() {
        // A prover may start a segment, or jump, near 2^64: the labels saturate.
        let mut r = report("fail", "h", "n");
        let t = &mut r["streams"][0]["timeline"];
        t["first_call"] = json!(u64::MAX - 130);
        t["calls_per_bin"] = json!(1u64 << 58);
        let page = render(&r, "t").unwrap();
        assert!(
            page.contains(&format!("calls {} to {}", u64::MAX - 130, u64::MAX)),
            "{page}"
        );
    }

    #[test]
    fn not_a_report_is_refused() {
        for v in [
            json!({}),
            json!({"streams": 3}),
            json!({"streams": [{"calls": 1}]}),
            json!([1]),
        ] {
            assert!(render(&v, "x").is_err(), "{v}");
        }
    }
}
