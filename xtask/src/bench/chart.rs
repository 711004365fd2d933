//! The SVG chart: latency percentiles per path (first open-loop workload) and HTTP/1.1 and bulk
//! throughput per path, as plain SVG (no font or system library needed).

use std::fmt::Write as _;

use super::{paths::PathKind, report::Results};

const COLORS: [&str; 4] = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2"];

/// One panel of grouped bars: `series` names, `rows` = (label, values per series).
fn panel(
    o: &mut String,
    x0: f64,
    title: &str,
    unit: &str,
    series: &[&str],
    rows: &[(String, Vec<f64>)],
) {
    let (w, h, top, left) = (560.0, 300.0, 40.0, 60.0);
    let max = rows
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        * 1.1;
    let _ = writeln!(
        o,
        r#"<text x="{}" y="20" font-size="14" font-family="sans-serif">{title}</text>"#,
        x0 + left
    );
    let _ = writeln!(
        o,
        r#"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="black"/>"#,
        x0 + left,
        top,
        top + h
    );
    let _ = writeln!(
        o,
        r#"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="black"/>"#,
        x0 + left,
        top + h,
        x0 + left + w
    );
    for i in 0..=4 {
        let v = max * i as f64 / 4.0;
        let y = top + h - h * i as f64 / 4.0;
        let _ = writeln!(
            o,
            r##"<text x="{}" y="{y:.1}" font-size="10" text-anchor="end" font-family="sans-serif">{v:.0}</text><line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/>"##,
            x0 + left - 4.0,
            x0 + left,
            x0 + left + w
        );
    }
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" font-size="10" font-family="sans-serif">{unit}</text>"#,
        x0 + 4.0,
        top - 6.0
    );
    let group = w / rows.len().max(1) as f64;
    let bw = group * 0.8 / series.len() as f64;
    for (gi, (label, vals)) in rows.iter().enumerate() {
        let gx = x0 + left + gi as f64 * group + group * 0.1;
        for (si, v) in vals.iter().enumerate() {
            let bh = h * v / max;
            let _ = writeln!(
                o,
                r#"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{bh:.1}" fill="{}"><title>{label} {}: {v:.1} {unit}</title></rect>"#,
                gx + si as f64 * bw,
                top + h - bh,
                COLORS[si % COLORS.len()],
                series[si]
            );
        }
        let _ = writeln!(
            o,
            r#"<text font-size="10" font-family="sans-serif" text-anchor="end" transform="translate({:.1},{:.1}) rotate(-35)">{label}</text>"#,
            gx + group * 0.4,
            top + h + 14.0
        );
    }
    for (si, s) in series.iter().enumerate() {
        let y = top + 10.0 + si as f64 * 14.0;
        let _ = writeln!(
            o,
            r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="10" font-family="sans-serif">{s}</text>"#,
            x0 + left + w - 90.0,
            y - 9.0,
            COLORS[si % COLORS.len()],
            x0 + left + w - 76.0,
            y
        );
    }
}

/// The chart as an SVG document.
pub fn svg(r: &Results, paths: &[PathKind], open_key: &str, open_title: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="1300" height="440" viewBox="0 0 1300 440">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let med = |p: PathKind, m: &str| r.stat(p, m).map(|s| s.median).unwrap_or(0.0);
    let lat: Vec<(String, Vec<f64>)> = paths
        .iter()
        .map(|&p| {
            let v = ["p50_us", "p90_us", "p99_us", "p999_us"]
                .iter()
                .map(|q| med(p, &format!("{open_key}.{q}")))
                .collect();
            (p.name().to_string(), v)
        })
        .collect();
    panel(
        &mut o,
        0.0,
        &format!("Latency: {open_title}"),
        "µs",
        &["p50", "p90", "p99", "p99.9"],
        &lat,
    );
    let tp: Vec<(String, Vec<f64>)> = paths
        .iter()
        .map(|&p| {
            (
                p.name().to_string(),
                vec![
                    med(p, "wrk.h1.rps") / 1000.0,
                    med(p, "h2.rps") / 1000.0,
                    med(p, "churn.cps") / 1000.0,
                ],
            )
        })
        .collect();
    panel(
        &mut o,
        650.0,
        "Throughput, one proxy worker (medians)",
        "k/s",
        &["HTTP/1.1 req", "HTTP/2 req", "new conn"],
        &tp,
    );
    let _ = writeln!(o, "</svg>");
    o
}
