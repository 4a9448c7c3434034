//! `compare-report <dir>`: reads what `bench/compare.sh` left in `<dir>` and prints the
//! Ketch/etcd ratio table; writes `<dir>/latency.svg` (or `--svg`) with one panel per scenario
//! showing each server's latency distribution.
//!
//! `<dir>/plan.tsv` drives it, one tab-separated row per line:
//!   `target  <dir-name>  <label>`   the first target is the subject (Ketch), the rest references
//!   `scenario  <id>  <label>`        `<dir>/<target>/<id>.json` is ketch-bench's `--json` output
//!   `na  <label>  <reason>`          a row that could not be measured, printed as is
//!   `floor  <id>`                    compare scenario `<id>`'s p50 with `<dir>/floor/fsync.json`
//!                                    (write + fdatasync) plus `<dir>/floor/rtt.json` (round trip)
//! `<dir>/<target>/resources.json` holds `peak_rss_kib`, `restart_secs`, `keys`, `rss_after_restart_kib`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::flags::Flags;

struct Plan {
    /// The scenario id whose p50 is held against the disk + round-trip floor, if any.
    floor: Option<String>,
    targets: Vec<(String, String)>,
    scenarios: Vec<(String, String)>,
    na: Vec<(String, String)>,
}

fn read_plan(dir: &Path) -> Result<Plan, String> {
    let path = dir.join("plan.tsv");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut plan = Plan {
        floor: None,
        targets: Vec::new(),
        scenarios: Vec::new(),
        na: Vec::new(),
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let pair = (
            cols.get(1).unwrap_or(&"").to_string(),
            cols.get(2).unwrap_or(&"").to_string(),
        );
        match cols[0] {
            "target" => plan.targets.push(pair),
            "scenario" => plan.scenarios.push(pair),
            "na" => plan.na.push(pair),
            "floor" => plan.floor = Some(pair.0),
            other => return Err(format!("{}: unknown row kind {other:?}", path.display())),
        }
    }
    if plan.targets.is_empty() {
        return Err(format!("{}: no targets", path.display()));
    }
    Ok(plan)
}

fn load(path: PathBuf) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    // The file holds ketch-bench's last stdout line; anything before it is not JSON.
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
}

/// One cell: a number, or why there is none.
enum Cell {
    Value(f64),
    Missing(String),
}

fn metric(doc: &Option<Value>, pointer: &str) -> Cell {
    let Some(doc) = doc else {
        return Cell::Missing("not run".into());
    };
    if doc.get("skipped").is_some_and(|s| !s.is_null()) {
        return Cell::Missing("skip: unimplemented".into());
    }
    if doc.get("error").is_some() {
        return Cell::Missing("error".into());
    }
    match doc.pointer(pointer).and_then(Value::as_f64) {
        Some(v) => Cell::Value(v),
        None => Cell::Missing("n/a".into()),
    }
}

pub fn run(flags: &Flags) -> Result<(), String> {
    flags.allow(&["svg"])?;
    let dir = PathBuf::from(
        flags
            .positionals
            .get(1)
            .ok_or("compare-report: the results directory is required")?,
    );
    let plan = read_plan(&dir)?;
    let docs: Vec<Vec<Option<Value>>> = plan
        .targets
        .iter()
        .map(|(t, _)| {
            plan.scenarios
                .iter()
                .map(|(s, _)| load(dir.join(t).join(format!("{s}.json"))))
                .collect()
        })
        .collect();
    let resources: Vec<Option<Value>> = plan
        .targets
        .iter()
        .map(|(t, _)| load(dir.join(t).join("resources.json")))
        .collect();

    print!("{}", table(&plan, &docs, &resources));
    if let Some(text) = floor(&plan, &dir, &docs) {
        print!("{text}");
    }
    let svg_path = flags
        .opt("svg")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("latency.svg"));
    std::fs::write(&svg_path, svg(&plan, &docs))
        .map_err(|e| format!("{}: {e}", svg_path.display()))?;
    println!("\nLatency distributions: {}", svg_path.display());
    Ok(())
}

fn fmt_cell(c: &Cell, scale: f64, digits: usize) -> String {
    match c {
        Cell::Value(v) => format!("{:.*}", digits, v * scale),
        Cell::Missing(why) => why.clone(),
    }
}

fn ratio(subject: &Cell, reference: &Cell) -> String {
    match (subject, reference) {
        (Cell::Value(a), Cell::Value(b)) if *b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

fn table(plan: &Plan, docs: &[Vec<Option<Value>>], resources: &[Option<Value>]) -> String {
    let subject = &plan.targets[0].1;
    let mut header = vec![
        "scenario".to_string(),
        "metric".to_string(),
        subject.clone(),
    ];
    for (_, label) in &plan.targets[1..] {
        header.push(label.clone());
        header.push(format!("{subject}/{label}"));
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    // (label, JSON pointer, scale, digits)
    let metrics = [
        (
            "req/s (higher is better)",
            "/summary/requests_per_sec",
            1.0,
            0,
        ),
        (
            "p50 ms (lower is better)",
            "/summary/percentiles/50",
            1e3,
            3,
        ),
        (
            "p99 ms (lower is better)",
            "/summary/percentiles/99",
            1e3,
            3,
        ),
    ];
    for (si, (_, label)) in plan.scenarios.iter().enumerate() {
        for (mi, (mlabel, pointer, scale, digits)) in metrics.iter().enumerate() {
            let cells: Vec<Cell> = docs.iter().map(|d| metric(&d[si], pointer)).collect();
            let mut row = vec![
                if mi == 0 {
                    label.clone()
                } else {
                    String::new()
                },
                mlabel.to_string(),
            ];
            row.push(fmt_cell(&cells[0], *scale, *digits));
            for c in &cells[1..] {
                row.push(fmt_cell(c, *scale, *digits));
                row.push(ratio(&cells[0], c));
            }
            rows.push(row);
        }
    }
    let resource_metrics = [
        (
            "peak RSS MiB (lower is better)",
            "/peak_rss_kib",
            1.0 / 1024.0,
            1,
        ),
        (
            "RSS after restart MiB",
            "/rss_after_restart_kib",
            1.0 / 1024.0,
            1,
        ),
        ("restart secs (lower is better)", "/restart_secs", 1.0, 2),
        (
            "load secs, 100 clients (lower is better)",
            "/load_secs",
            1.0,
            1,
        ),
        (
            "data dir MiB (lower is better)",
            "/data_dir_kib",
            1.0 / 1024.0,
            1,
        ),
    ];
    let keys = resources
        .iter()
        .flatten()
        .find_map(|r| r.get("keys").and_then(Value::as_u64))
        .unwrap_or(0);
    for (mi, (mlabel, pointer, scale, digits)) in resource_metrics.iter().enumerate() {
        let cells: Vec<Cell> = resources.iter().map(|r| metric_plain(r, pointer)).collect();
        let mut row = vec![
            if mi == 0 {
                format!("{keys} keys x 256 B")
            } else {
                String::new()
            },
            mlabel.to_string(),
        ];
        row.push(fmt_cell(&cells[0], *scale, *digits));
        for c in &cells[1..] {
            row.push(fmt_cell(c, *scale, *digits));
            row.push(ratio(&cells[0], c));
        }
        rows.push(row);
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cols: &[String], out: &mut String| {
        let cells: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    };
    line(&header, &mut out);
    let _ = writeln!(
        out,
        "|{}|",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in &rows {
        line(row, &mut out);
    }
    if !plan.na.is_empty() {
        out.push('\n');
    }
    for (label, reason) in &plan.na {
        let _ = writeln!(out, "- {label}: {reason}");
    }
    out
}

/// Issue 5's floor for a 1-client put: one fdatasync on the data disk plus one loopback round
/// trip; each server's p50 as a multiple of it.
fn floor(plan: &Plan, dir: &Path, docs: &[Vec<Option<Value>>]) -> Option<String> {
    let id = plan.floor.as_ref()?;
    let si = plan.scenarios.iter().position(|(s, _)| s == id)?;
    let p50 = |doc: &Option<Value>| match metric(doc, "/summary/percentiles/50") {
        Cell::Value(v) => Some(v),
        Cell::Missing(_) => None,
    };
    let fsync = p50(&load(dir.join("floor").join("fsync.json")));
    let rtt = p50(&load(dir.join("floor").join("rtt.json")));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nFloor for {} (issue 5: p50 within 1.25x of one fsync plus one loopback round trip):",
        plan.scenarios[si].1
    );
    let (Some(fsync), Some(rtt)) = (fsync, rtt) else {
        let _ = writeln!(
            out,
            "  not measured (floor/fsync.json or floor/rtt.json missing)"
        );
        return Some(out);
    };
    let sum = fsync + rtt;
    let _ = writeln!(
        out,
        "  fdatasync p50 {:.3} ms + round trip p50 {:.3} ms (1-client serializable range on {}) = {:.3} ms",
        fsync * 1e3,
        rtt * 1e3,
        plan.targets[0].1,
        sum * 1e3
    );
    for ((_, label), d) in plan.targets.iter().zip(docs) {
        match p50(&d[si]) {
            Some(v) => {
                // Checked with strace on a single member: 3.5.1 writes the put's answer while
                // its WAL fdatasync is still running (etcd-io/etcd#14370, fixed in 3.5.5 and
                // 3.4.21); 3.4.23 and Ketch answer after it returns.
                let caveat = if label.contains("3.5.1") {
                    " (not a durable acknowledgement: answers before its WAL fdatasync returns, etcd-io/etcd#14370)"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "  {label}: p50 {:.3} ms = {:.2}x the floor{caveat}",
                    v * 1e3,
                    v / sum
                );
            }
            None => {
                let _ = writeln!(out, "  {label}: not measured");
            }
        }
    }
    Some(out)
}

fn metric_plain(doc: &Option<Value>, pointer: &str) -> Cell {
    match doc
        .as_ref()
        .and_then(|d| d.pointer(pointer))
        .and_then(Value::as_f64)
    {
        Some(v) => Cell::Value(v),
        None => Cell::Missing("not measured".into()),
    }
}

const COLORS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];

/// Percentile → x position: -log10(1 - p) puts 90, 99, 99.9 and 99.99 one unit apart.
fn x_of(p: f64) -> f64 {
    let q = (p / 100.0).min(0.9999);
    -(1.0 - q).log10()
}

fn svg(plan: &Plan, docs: &[Vec<Option<Value>>]) -> String {
    const W: f64 = 460.0;
    const H: f64 = 300.0;
    const ML: f64 = 64.0;
    const MR: f64 = 30.0;
    const MT: f64 = 36.0;
    const MB: f64 = 44.0;
    let cols = 2usize;
    let panels = plan.scenarios.len().max(1);
    let rows = panels.div_ceil(cols);
    let legend_h = 28.0;
    let (tw, th) = (W * cols as f64, H * rows as f64 + legend_h);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{tw}" height="{th}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, (_, label)) in plan.targets.iter().enumerate() {
        let x = 10.0 + i as f64 * 160.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="9" width="14" height="4" fill="{}"/><text x="{}" y="15">{}</text>"#,
            COLORS[i % COLORS.len()],
            x + 18.0,
            esc(label)
        );
    }
    for (si, (_, label)) in plan.scenarios.iter().enumerate() {
        let (ox, oy) = ((si % cols) as f64 * W, legend_h + (si / cols) as f64 * H);
        let (pw, ph) = (W - ML - MR, H - MT - MB);
        let curves: Vec<Vec<(f64, f64)>> = docs
            .iter()
            .map(|d| {
                d[si]
                    .as_ref()
                    .and_then(|v| v.pointer("/summary/curve"))
                    .and_then(Value::as_array)
                    .map(|pts| {
                        pts.iter()
                            .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()? * 1e3)))
                            .filter(|p| p.1 > 0.0)
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
            ox + ML,
            oy + 20.0,
            esc(label)
        );
        let _ = writeln!(
            s,
            r##"<rect x="{}" y="{}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##,
            ox + ML,
            oy + MT
        );
        // Say in the panel which servers have no curve here, and why.
        let absent: Vec<String> = plan
            .targets
            .iter()
            .zip(docs)
            .zip(&curves)
            .filter(|(_, c)| c.is_empty())
            .map(
                |(((_, label), d), _)| match metric(&d[si], "/summary/requests_per_sec") {
                    Cell::Missing(why) => format!("{label}: {why}"),
                    Cell::Value(_) => format!("{label}: no samples"),
                },
            )
            .collect();
        if !absent.is_empty() {
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" fill="#555">{}</text>"##,
                ox + ML + 8.0,
                oy + MT + 14.0,
                esc(&absent.join("; "))
            );
        }
        let all: Vec<f64> = curves.iter().flatten().map(|p| p.1).collect();
        if all.is_empty() {
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" fill="#888">no measurements</text>"##,
                ox + ML + 10.0,
                oy + MT + 20.0
            );
            continue;
        }
        let lo = all.iter().cloned().fold(f64::MAX, f64::min).log10().floor();
        let hi = all
            .iter()
            .cloned()
            .fold(0.0, f64::max)
            .log10()
            .ceil()
            .max(lo + 1.0);
        let xmax = x_of(99.99);
        let px = |p: f64| ox + ML + x_of(p) / xmax * pw;
        let py = |ms: f64| oy + MT + ph - (ms.log10() - lo) / (hi - lo) * ph;
        for e in (lo as i32)..=(hi as i32) {
            let v = 10f64.powi(e);
            let y = py(v);
            let _ = writeln!(
                s,
                r##"<line x1="{}" x2="{}" y1="{y}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
                ox + ML,
                ox + ML + pw,
                ox + ML - 4.0,
                y + 4.0,
                fmt_ms(v)
            );
        }
        for p in [0.0, 90.0, 99.0, 99.9, 99.99] {
            let x = px(p);
            let _ = writeln!(
                s,
                r##"<line x1="{x}" x2="{x}" y1="{}" y2="{}" stroke="#eee"/><text x="{x}" y="{}" text-anchor="middle">{p}%</text>"##,
                oy + MT,
                oy + MT + ph,
                oy + MT + ph + 14.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
            ox + ML + pw / 2.0,
            oy + H - 8.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" transform="rotate(-90 {} {})" text-anchor="middle">latency (ms)</text>"#,
            ox + 14.0,
            oy + MT + ph / 2.0,
            ox + 14.0,
            oy + MT + ph / 2.0
        );
        for (ti, curve) in curves.iter().enumerate() {
            let pts: Vec<String> = curve
                .iter()
                .filter(|p| p.0 <= 99.99)
                .map(|&(p, ms)| format!("{:.1},{:.1}", px(p), py(ms)))
                .collect();
            if !pts.is_empty() {
                let _ = writeln!(
                    s,
                    r#"<polyline fill="none" stroke-width="2" stroke="{}" points="{}"/>"#,
                    COLORS[ti % COLORS.len()],
                    pts.join(" ")
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_ms(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_svg_from_a_results_dir() {
        let dir = std::env::temp_dir().join(format!("ketch-bench-report-{}", std::process::id()));
        for t in ["ketch", "etcd"] {
            std::fs::create_dir_all(dir.join(t)).unwrap();
        }
        std::fs::write(dir.join("plan.tsv"), "target\tketch\tKetch\ntarget\tetcd\tetcd 3.5.1\nscenario\tput\tput, 1 client\nscenario\twatch\twatch\nna\t3-member put\tn/a: not built yet\nfloor\tput\n").unwrap();
        std::fs::create_dir_all(dir.join("floor")).unwrap();
        std::fs::write(
            dir.join("floor/fsync.json"),
            r#"{"summary":{"percentiles":{"50":0.0005}}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("floor/rtt.json"),
            r#"{"summary":{"percentiles":{"50":0.0005}}}"#,
        )
        .unwrap();
        let doc = |rps: f64, p50: f64| {
            format!(
                r#"{{"scenario":"put","summary":{{"requests_per_sec":{rps},"percentiles":{{"50":{p50},"99":0.01}},"curve":[[0,0.001],[50,{p50}],[99.9,0.02],[100,0.03]]}}}}"#
            )
        };
        std::fs::write(dir.join("ketch/put.json"), doc(2000.0, 0.002)).unwrap();
        std::fs::write(dir.join("etcd/put.json"), doc(1000.0, 0.004)).unwrap();
        std::fs::write(
            dir.join("ketch/watch.json"),
            r#"{"scenario":"watch","skipped":"unimplemented"}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("ketch/resources.json"),
            r#"{"keys":1000,"peak_rss_kib":2048,"restart_secs":0.5}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("etcd/resources.json"),
            r#"{"keys":1000,"peak_rss_kib":4096,"restart_secs":2.0}"#,
        )
        .unwrap();
        let plan = read_plan(&dir).unwrap();
        let docs: Vec<Vec<Option<Value>>> = plan
            .targets
            .iter()
            .map(|(t, _)| {
                plan.scenarios
                    .iter()
                    .map(|(s, _)| load(dir.join(t).join(format!("{s}.json"))))
                    .collect()
            })
            .collect();
        let res: Vec<Option<Value>> = plan
            .targets
            .iter()
            .map(|(t, _)| load(dir.join(t).join("resources.json")))
            .collect();
        let t = table(&plan, &docs, &res);
        assert!(t.contains("2.00x"), "{t}");
        assert!(t.contains("0.50x"), "{t}");
        assert!(t.contains("0.25x"), "{t}");
        assert!(t.contains("skip: unimplemented"), "{t}");
        assert!(t.contains("3-member put: n/a: not built yet"), "{t}");
        let f = floor(&plan, &dir, &docs).unwrap();
        assert!(
            f.contains("= 1.000 ms") && f.contains("Ketch: p50 2.000 ms = 2.00x the floor"),
            "{f}"
        );
        let svg = svg(&plan, &docs);
        assert!(
            svg.starts_with("<svg")
                && svg.contains("polyline")
                && svg.trim_end().ends_with("</svg>")
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
