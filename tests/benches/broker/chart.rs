//! The scale section's chart: three small line charts side by side in one SVG (operator RSS per
//! session, operator CPU, aggregate throughput of concurrent streams).
//!
//! Written by hand rather than with a plotting crate: plotters, the usual choice, lays out its
//! text with a font backend (system fonts through fontconfig, or a font file to bundle), while
//! an SVG's text is laid out by whatever shows it; what is drawn here is a few polylines,
//! circles, ticks and labels.

use std::{fmt::Write as _, path::Path};

/// One line of the sessions table.
pub struct ScaleRow {
    pub sessions: usize,
    pub idle_rss_kib: f64,
    pub idle_cpu: f64,
    pub busy_rss_kib: f64,
    pub busy_cpu: f64,
    pub echo_kib_s: f64,
}

/// One line of the streams table.
pub struct StreamsRow {
    pub streams: usize,
    pub plain_mib_s: f64,
    pub aexec_mib_s: f64,
    pub operator_ms_per_mib: f64,
}

const W: f64 = 360.0;
const H: f64 = 300.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 48.0;
const BLUE: &str = "#1f77b4";
const ORANGE: &str = "#d62728";

/// A series: its name, colour and points (x, y); points whose y is not finite are left out.
struct Series<'a> {
    name: &'a str,
    colour: &'a str,
    points: Vec<(f64, f64)>,
}

/// One panel at `x0`: a title, x on a log scale (`log_x`) or linear, y from 0.
fn panel(
    svg: &mut String,
    x0: f64,
    title: &str,
    (x_label, y_label): (&str, &str),
    xs: &[f64],
    log_x: bool,
    series: &[Series],
) {
    let ymax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .fold(0.0f64, f64::max);
    let ymax = nice_ceiling(ymax.max(1e-9));
    let fx = |x: f64| {
        let (lo, hi) = (xs[0], xs[xs.len() - 1]);
        let t = if log_x {
            (x.ln() - lo.ln()) / (hi.ln() - lo.ln()).max(1e-9)
        } else {
            (x - lo) / (hi - lo).max(1e-9)
        };
        x0 + LEFT + t * (W - LEFT - RIGHT)
    };
    let fy = |y: f64| TOP + (1.0 - y / ymax) * (H - TOP - BOTTOM);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="22" font-size="14" font-weight="bold" text-anchor="middle">{}</text>"#,
        x0 + W / 2.0,
        esc(title)
    );
    // Axes, grid and ticks.
    for i in 0..=4 {
        let y = ymax * f64::from(i) / 4.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            x0 + LEFT,
            fy(y),
            x0 + W - RIGHT,
            fy(y),
            x0 + LEFT - 6.0,
            fy(y) + 4.0,
            short(y)
        );
    }
    for &x in xs {
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            fx(x),
            H - BOTTOM,
            fx(x),
            H - BOTTOM + 5.0,
            fx(x),
            H - BOTTOM + 18.0,
            short(x)
        );
    }
    let _ = writeln!(
        svg,
        r#"<polyline fill="none" stroke="black" points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}"/>"#,
        x0 + LEFT,
        TOP,
        x0 + LEFT,
        H - BOTTOM,
        x0 + W - RIGHT,
        H - BOTTOM
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
        x0 + LEFT + (W - LEFT - RIGHT) / 2.0,
        H - 12.0,
        esc(x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate({:.1},{:.1}) rotate(-90)" font-size="12" text-anchor="middle">{}</text>"#,
        x0 + 14.0,
        TOP + (H - TOP - BOTTOM) / 2.0,
        esc(y_label)
    );
    // The series, and their legend in the top left corner.
    for (i, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", fx(x), fy(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            s.colour,
            pts.join(" ")
        );
        for p in s.points.iter().filter(|p| p.1.is_finite()) {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"><title>{}: {}</title></circle>"#,
                fx(p.0),
                fy(p.1),
                s.colour,
                esc(s.name),
                short(p.1)
            );
        }
        let ly = TOP + 8.0 + 16.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            x0 + LEFT + 8.0,
            x0 + LEFT + 28.0,
            s.colour,
            x0 + LEFT + 32.0,
            ly + 4.0,
            esc(s.name)
        );
    }
}

/// Draws the scale chart into `path`.
pub fn scale(
    path: &Path,
    rows: &[ScaleRow],
    streams: &[StreamsRow],
    machine: &str,
) -> std::io::Result<()> {
    let mut svg = String::new();
    let width = 3.0 * W;
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{}" viewBox="0 0 {width} {}" font-family="sans-serif">"#,
        H + 24.0,
        H + 24.0
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let sessions: Vec<f64> = rows.iter().map(|r| r.sessions as f64).collect();
    // An idle and a busy series of one measure, by session count.
    let idle_busy =
        |busy_name: &'static str, idle: fn(&ScaleRow) -> f64, busy: fn(&ScaleRow) -> f64| {
            [
                Series {
                    name: "idle",
                    colour: BLUE,
                    points: rows.iter().map(|r| (r.sessions as f64, idle(r))).collect(),
                },
                Series {
                    name: busy_name,
                    colour: ORANGE,
                    points: rows.iter().map(|r| (r.sessions as f64, busy(r))).collect(),
                },
            ]
        };
    if !sessions.is_empty() {
        panel(
            &mut svg,
            0.0,
            "Operator RSS per session",
            ("attached sessions", "KiB per session"),
            &sessions,
            true,
            &idle_busy(
                "busy (1 KiB echoed / 100 ms)",
                |r| r.idle_rss_kib,
                |r| r.busy_rss_kib,
            ),
        );
        panel(
            &mut svg,
            W,
            "Operator CPU",
            ("attached sessions", "% of one core"),
            &sessions,
            true,
            &idle_busy("busy", |r| r.idle_cpu, |r| r.busy_cpu),
        );
    }
    let ks: Vec<f64> = streams.iter().map(|r| r.streams as f64).collect();
    if !ks.is_empty() {
        panel(
            &mut svg,
            2.0 * W,
            "Concurrent bulk streams",
            ("streams at once", "MiB/s, all streams"),
            &ks,
            true,
            &[
                Series {
                    name: "plain exec",
                    colour: BLUE,
                    points: streams
                        .iter()
                        .map(|r| (r.streams as f64, r.plain_mib_s))
                        .collect(),
                },
                Series {
                    name: "aexec (recorded)",
                    colour: ORANGE,
                    points: streams
                        .iter()
                        .map(|r| (r.streams as f64, r.aexec_mib_s))
                        .collect(),
                },
            ],
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="8" y="{:.1}" font-size="10" fill="#555">./dev bench (scale section), {}</text>"##,
        H + 16.0,
        esc(machine)
    );
    svg.push_str("</svg>\n");
    std::fs::write(path, svg)
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

/// A tick label: no needless decimals.
fn short(v: f64) -> String {
    if v >= 100.0 || (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
