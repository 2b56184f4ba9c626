//! `compare`: several JSON reports side by side, as a Markdown table and an
//! SVG bar chart (throughput and p99 per case per broker label).

use anyhow::{anyhow, Context as _};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::fmt::Write as _;
use std::path::Path;

use crate::cli::CompareArgs;
use crate::engine::Kind;
use crate::report::{fmt_n, Report, StormResults};
use crate::stats::LatencySummary;

/// Reports indexed by case (rows) and label (columns), in order of first
/// appearance. A later report for the same case and label replaces an earlier one.
#[derive(Debug)]
pub struct Grid {
    pub cases: Vec<(String, Kind)>,
    pub labels: Vec<String>,
    cells: Vec<Vec<Option<Report>>>,
}

impl Grid {
    pub fn new(reports: Vec<Report>) -> Grid {
        let mut g = Grid { cases: Vec::new(), labels: Vec::new(), cells: Vec::new() };
        for r in reports {
            let ci = match g.cases.iter().position(|(c, _)| *c == r.case) {
                Some(i) => i,
                None => {
                    g.cases.push((r.case.clone(), r.scenario));
                    g.cells.push(vec![None; g.labels.len()]);
                    g.cases.len() - 1
                }
            };
            let li = match g.labels.iter().position(|l| *l == r.label) {
                Some(i) => i,
                None => {
                    g.labels.push(r.label.clone());
                    for row in &mut g.cells {
                        row.push(None);
                    }
                    g.labels.len() - 1
                }
            };
            g.cells[ci][li] = Some(r);
        }
        g
    }

    fn get(&self, case: usize, label: usize) -> Option<&Report> {
        self.cells[case][label].as_ref()
    }

    /// Headline throughput: delivered msgs/s, or CONNACKs/s for conn.
    fn throughput(r: &Report) -> Option<f64> {
        match r.scenario {
            Kind::Conn | Kind::Connections => r.results.connections.as_ref().map(|c| c.per_s),
            Kind::Idle => None,
            _ => Some(r.results.received_per_s),
        }
    }

    /// Headline tail latency: end-to-end p99, or CONNACK p99 for conn.
    fn p99(r: &Report) -> Option<f64> {
        match r.scenario {
            Kind::Conn | Kind::Connections => r
                .results
                .connections
                .as_ref()
                .filter(|c| c.connack_us.count > 0)
                .map(|c| c.connack_us.p99_us),
            Kind::Idle => None,
            _ => (r.results.latency_us.count > 0).then_some(r.results.latency_us.p99_us),
        }
    }
}

type Metric = (&'static str, fn(&Report) -> Option<String>);

/// A latency figure, or nothing when the histogram had no samples.
fn lat(l: &LatencySummary, v: fn(&LatencySummary) -> f64) -> Option<String> {
    (l.count > 0).then(|| fmt_n(v(l)))
}

fn broker_metrics() -> Vec<Metric> {
    vec![
        ("broker CPU (cores)", |r| r.broker.as_ref()?.cpu_cores.map(|c| format!("{c:.2}"))),
        ("broker peak RSS (MiB)", |r| {
            r.broker.as_ref()?.rss_peak_kib.map(|k| format!("{:.1}", k as f64 / 1024.0))
        }),
        ("generator busiest core", |r| {
            Some(format!(
                "{:.0}%{}",
                r.generator.max_core_util * 100.0,
                if r.generator.saturated { " SATURATED" } else { "" }
            ))
        }),
    ]
}

fn connections_metrics() -> Vec<Metric> {
    vec![
        ("connections", |r| r.results.connections.as_ref().map(|c| c.ok.to_string())),
        ("connected per s", |r| r.results.connections.as_ref().map(|c| fmt_n(c.per_s))),
        ("CONNACK p50 (us)", |r| lat(&r.results.connections.as_ref()?.connack_us, |l| l.p50_us)),
        ("CONNACK p99 (us)", |r| lat(&r.results.connections.as_ref()?.connack_us, |l| l.p99_us)),
        ("broker RSS per connection (B)", |r| r.broker.as_ref()?.rss_per_conn_bytes.map(fmt_n)),
        ("broker CPU us per connection per s", |r| {
            r.broker.as_ref()?.cpu_us_per_conn_s.map(|v| format!("{v:.3}"))
        }),
        ("trickle sent / received", |r| {
            let c = r.results.connections.as_ref()?;
            (c.trickle_sent > 0).then(|| format!("{} / {}", c.trickle_sent, c.trickle_received))
        }),
        ("storm reconnects/s", |r| storm(r).map(|s| fmt_n(s.per_s))),
        ("storm session present", |r| storm(r).map(|s| s.session_present.to_string())),
        ("storm CONNACK p50 (us)", |r| lat(&storm(r)?.connack_us, |l| l.p50_us)),
        ("storm CONNACK p99 (us)", |r| lat(&storm(r)?.connack_us, |l| l.p99_us)),
        ("storm RSS before / after / settled (MiB)", |r| {
            let s = storm(r)?;
            let mib =
                |k: Option<u64>| k.map_or("n/a".into(), |k| format!("{:.1}", k as f64 / 1024.0));
            Some(format!(
                "{} / {} / {}",
                mib(s.rss_before_kib),
                mib(s.rss_after_kib),
                mib(s.rss_settled_kib)
            ))
        }),
    ]
}

fn storm(r: &Report) -> Option<&StormResults> {
    r.results.connections.as_ref()?.storm.as_ref()
}

fn metrics(kind: Kind) -> Vec<Metric> {
    let mut m: Vec<Metric> = match kind {
        Kind::Conn => vec![
            ("CONNACKs/s", |r| r.results.connections.as_ref().map(|c| fmt_n(c.per_s))),
            ("CONNACK p50 (us)", |r| {
                lat(&r.results.connections.as_ref()?.connack_us, |l| l.p50_us)
            }),
            ("CONNACK p99 (us)", |r| {
                lat(&r.results.connections.as_ref()?.connack_us, |l| l.p99_us)
            }),
            ("CONNACK p99.9 (us)", |r| {
                lat(&r.results.connections.as_ref()?.connack_us, |l| l.p999_us)
            }),
            ("failed connections", |r| {
                r.results.connections.as_ref().map(|c| c.failed.to_string())
            }),
        ],
        Kind::Idle => vec![
            ("connections", |r| r.results.connections.as_ref().map(|c| c.ok.to_string())),
            ("broker RSS per connection (B)", |r| r.broker.as_ref()?.rss_per_conn_bytes.map(fmt_n)),
            ("CONNACK p99 (us)", |r| {
                lat(&r.results.connections.as_ref()?.connack_us, |l| l.p99_us)
            }),
        ],
        Kind::Connections => connections_metrics(),
        _ => vec![
            ("sent msgs/s", |r| Some(fmt_n(r.results.sent_per_s))),
            ("received msgs/s", |r| Some(fmt_n(r.results.received_per_s))),
            ("lost", |r| {
                Some(format!("{} ({:.3}%)", fmt_n(r.results.lost as f64), r.results.loss_pct))
            }),
            ("duplicates / out of order", |r| {
                Some(format!("{} / {}", r.results.duplicates, r.results.out_of_order))
            }),
            ("latency p50 (us)", |r| lat(&r.results.latency_us, |l| l.p50_us)),
            ("latency p99 (us)", |r| lat(&r.results.latency_us, |l| l.p99_us)),
            ("latency p99.9 (us)", |r| lat(&r.results.latency_us, |l| l.p999_us)),
            ("latency max (us)", |r| lat(&r.results.latency_us, |l| l.max_us)),
            ("broker CPU us/msg", |r| r.broker.as_ref()?.cpu_us_per_msg.map(|v| format!("{v:.2}"))),
        ],
    };
    m.extend(broker_metrics());
    m
}

/// The Markdown comparison.
pub fn markdown(g: &Grid) -> String {
    let mut s = String::from("# shardmq-bench comparison\n\n");
    let mut header = String::from("| case | metric |");
    let mut rule = String::from("|---|---|");
    for l in &g.labels {
        let _ = write!(header, " {l} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(s, "{header}\n{rule}");
    for (ci, (case, kind)) in g.cases.iter().enumerate() {
        for (mi, (name, f)) in metrics(*kind).iter().enumerate() {
            let first = if mi == 0 { format!("**{case}**") } else { String::new() };
            let _ = write!(s, "| {first} | {name} |");
            for li in 0..g.labels.len() {
                let v = g.get(ci, li).and_then(f).unwrap_or_else(|| "–".into());
                let _ = write!(s, " {v} |");
            }
            s.push('\n');
        }
    }
    // Where each figure came from.
    s.push_str("\n## Runs\n\n| case | label | machine | kernel | commit | command |\n|---|---|---|---|---|---|\n");
    for (ci, (case, _)) in g.cases.iter().enumerate() {
        for (li, label) in g.labels.iter().enumerate() {
            if let Some(r) = g.get(ci, li) {
                let _ = writeln!(
                    s,
                    "| {case} | {label} | {} x {} | {} | {} | `{}` |",
                    r.machine.nproc,
                    r.machine.cpu_model,
                    r.machine.kernel,
                    r.git_commit.as_deref().map_or("–", |c| &c[..c.len().min(12)]),
                    r.command_line.join(" ").replace('|', "\\|")
                );
            }
        }
    }
    let warned: Vec<String> = g
        .cells
        .iter()
        .flatten()
        .flatten()
        .flat_map(|r| r.warnings.iter().map(move |w| format!("- {} [{}]: {w}", r.case, r.label)))
        .collect();
    if !warned.is_empty() {
        s.push_str("\n## Warnings\n\n");
        for w in warned {
            let _ = writeln!(s, "{w}");
        }
    }
    s
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn compact(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// One panel of grouped bars on a log axis.
fn bar_panel(
    area: &Area<'_>,
    title: &str,
    cases: &[String],
    labels: &[String],
    values: &[Vec<Option<f64>>],
) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {title}: {e}");
    let max = values.iter().flatten().flatten().copied().fold(1.0f64, f64::max);
    let n = cases.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(70)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n as f64, (0.5f64..max * 3.0).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_formatter(&|v| compact(*v))
        .draw()
        .map_err(|e| err(&e))?;
    let groups = labels.len().max(1) as f64;
    let width = 0.8 / groups;
    for (li, label) in labels.iter().enumerate() {
        let color = COLORS[li % COLORS.len()];
        let bars: Vec<(f64, f64)> = values
            .iter()
            .enumerate()
            .filter_map(|(ci, row)| row.get(li).copied().flatten().map(|v| (ci as f64, v)))
            .collect();
        let x0 = |ci: f64| ci + 0.1 + li as f64 * width;
        chart
            .draw_series(bars.iter().map(|&(ci, v)| {
                Rectangle::new([(x0(ci), 0.5), (x0(ci) + width * 0.95, v.max(0.5))], color.filled())
            }))
            .map_err(|e| err(&e))?
            .label(label.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        let style = TextStyle::from(("sans-serif", 11)).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart
            .draw_series(bars.iter().map(|&(ci, v)| {
                Text::new(compact(v), (x0(ci) + width / 2.0, v.max(0.5)), style.clone())
            }))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    // Case names under the groups.
    let base = area.get_base_pixel();
    let style = TextStyle::from(("sans-serif", 13)).pos(Pos::new(HPos::Center, VPos::Top));
    for (ci, case) in cases.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(ci as f64 + 0.5, 0.5));
        area.draw(&Text::new(case.clone(), (px - base.0, py - base.1 + 8), style.clone()))
            .map_err(|e| err(&e))?;
    }
    Ok(())
}

/// The SVG chart: throughput on top, p99 latency below.
pub fn svg(g: &Grid, path: &Path) -> anyhow::Result<()> {
    let rows: Vec<usize> = (0..g.cases.len()).filter(|&ci| g.cases[ci].1 != Kind::Idle).collect();
    let cases: Vec<String> = rows.iter().map(|&ci| g.cases[ci].0.clone()).collect();
    let pick = |f: fn(&Report) -> Option<f64>| -> Vec<Vec<Option<f64>>> {
        rows.iter()
            .map(|&ci| (0..g.labels.len()).map(|li| g.get(ci, li).and_then(f)).collect())
            .collect()
    };
    let width = (260 * cases.len().max(2)) as u32 + 160;
    let root = SVGBackend::new(path, (width, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("SVG: {e}"))?;
    let (top, bottom) = root.split_vertically(450);
    bar_panel(
        &top,
        "Throughput: delivered msgs/s (conn: CONNACKs/s), log scale",
        &cases,
        &g.labels,
        &pick(Grid::throughput),
    )?;
    bar_panel(
        &bottom,
        "p99 latency in microseconds (conn: CONNACK), log scale",
        &cases,
        &g.labels,
        &pick(Grid::p99),
    )?;
    root.present().map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

pub fn run(args: &CompareArgs) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for p in &args.reports {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let r: Report =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        reports.push(r);
    }
    let g = Grid::new(reports);
    let md = markdown(&g);
    match &args.md {
        Some(p) => std::fs::write(p, &md).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{md}"),
    }
    if let Some(p) = &args.svg {
        svg(&g, p)?;
    }
    Ok(())
}
