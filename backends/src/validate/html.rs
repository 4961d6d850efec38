//! The HTML report: one self-contained page (inline CSS, inline SVG drawn here, no scripts, no
//! external resources) with the verdict, a summary table, an SQNR chart (`#sqnr-chart`) and
//! one error histogram per output (`#hist-<n>`). Every name is escaped.

use std::fmt::Write;

use super::histogram::Histogram;
use super::thresholds::num;
use super::{Metrics, OutputReport, Report, Status};

/// One point of the per-layer SQNR chart: an intermediate tensor compared between the models.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerPoint {
    /// The tensor's name.
    pub name: String,
    /// This is the first layer where the error jumps (drawn red and labelled).
    pub jump: bool,
    /// The op that produces it.
    pub op_type: String,
    /// Its SQNR in dB (`inf` when identical).
    pub sqnr_db: f64,
    /// Its max abs error.
    pub max_abs: f64,
}

/// The report as a self-contained HTML page. `layers`, in topological order, feed the SQNR
/// chart; when empty the chart shows each output's SQNR instead.
pub fn render_html(report: &Report, layers: &[LayerPoint]) -> String {
    let failed = report.outputs.iter().filter(|o| !o.passed).count();
    let n = report.outputs.len();
    let (verdict, class) = if report.passed {
        ("PASS", "pass")
    } else {
        ("FAIL", "fail")
    };
    let mut page = String::with_capacity(64 * 1024);
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    page.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(page, "<title>Kiln validation: {verdict}</title>");
    let _ = writeln!(page, "<style>{CSS}</style>\n</head>\n<body>");
    let _ = writeln!(
        page,
        "<header><h1>Kiln validation report</h1><span class=\"badge {class}\">{verdict}</span>\
         <p class=\"counts\">{n} output(s) · <b class=\"{}\">{failed} failed</b> · {} passed · \
         {} sample(s)</p></header>",
        if failed > 0 { "fail-text" } else { "" },
        n - failed,
        report.samples
    );
    page.push_str("<main>\n<section><h2>Outputs</h2>\n");
    page.push_str(&summary_table(report));
    page.push_str("</section>\n");
    page.push_str(&sqnr_section(report, layers));
    page.push_str("<section><h2>Error histograms</h2>\n<p class=\"note\">|candidate − reference| \
                   per element, by decade; bars are the share of elements, labels the counts. \
                   Green bins are within the output's absolute tolerance.</p>\n<div class=\"hists\">\n");
    for (i, o) in report.outputs.iter().enumerate() {
        page.push_str(&histogram_card(i, o));
    }
    page.push_str("</div>\n</section>\n</main>\n</body>\n</html>\n");
    page
}

const CSS: &str = "
:root{--pass:#1a7f37;--fail:#cf222e;--ink:#1f2328;--muted:#656d76;--line:#d0d7de;--bg:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--ink);background:#fff}
header{display:flex;flex-wrap:wrap;align-items:center;gap:12px 16px;padding:16px 24px;border-bottom:1px solid var(--line);background:var(--bg)}
h1{font-size:20px;margin:0}
h2{font-size:16px;margin:24px 0 8px}
h3{font-size:14px;margin:0 0 4px;word-break:break-all}
.counts{margin:0;color:var(--muted);flex-basis:100%}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:700;letter-spacing:.05em}
.badge.pass{background:var(--pass)}.badge.fail{background:var(--fail)}
.badge.small{font-size:11px;padding:1px 7px;margin-left:6px;vertical-align:middle}
.fail-text{color:var(--fail)}
main{padding:0 24px 32px;max-width:1400px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{background:var(--bg);font-weight:600}
td.name,th.name,td.text{text-align:left}
td.name{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;white-space:normal;overflow-wrap:anywhere;min-width:180px;max-width:300px}
td.text{white-space:normal;min-width:120px;max-width:300px;color:var(--muted)}
td.bad{background:#ffebe9;color:var(--fail);font-weight:600}
tr.failed td.name{border-left:3px solid var(--fail)}
.note{color:var(--muted);margin:4px 0 8px}
.hists{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:16px}
.card{border:1px solid var(--line);border-radius:6px;padding:10px 12px}
.card p{margin:4px 0 0;color:var(--muted)}
svg text{font:11px system-ui,sans-serif;fill:var(--ink)}
svg .axis{stroke:var(--muted);stroke-width:1}
svg .grid{stroke:#eaeef2;stroke-width:1}
svg .ok{fill:var(--pass)}svg .bad{fill:var(--fail)}svg .warn{fill:#d4a72c}svg .inf{fill:#8c959f}
svg .big{font-size:15px;font-weight:700}
svg .thr{stroke:var(--fail);stroke-width:1.5;stroke-dasharray:6 4}
svg .tol{stroke:#0969da;stroke-width:1.5;stroke-dasharray:4 3}
svg .within{fill:#4ac26b}svg .beyond{fill:#fb8f44}svg .nonfinite{fill:#8250df}svg .zero{fill:#8c959f}
svg .label{fill:var(--muted)}
details{margin-top:8px}
";

/// HTML-escapes text for element content and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The metric columns of the table and the limit that judges each.
const COLUMNS: [(&str, &str); 9] = [
    ("max abs", "max_abs"),
    ("mean abs", "max_mean_abs"),
    ("max rel", "max_rel"),
    ("RMSE", "max_rmse"),
    ("cosine", "min_cosine"),
    ("SQNR dB", "min_sqnr"),
    ("outside", "max_outside_share"),
    ("top-1", "min_top1"),
    ("top-5", "min_top5"),
];

fn summary_table(report: &Report) -> String {
    let mut t = String::from("<div class=\"scroll\"><table id=\"summary\">\n<thead><tr>");
    t.push_str("<th class=\"name\">output</th><th>verdict</th><th class=\"name\">value</th>");
    for (title, _) in COLUMNS {
        let _ = write!(t, "<th>{title}</th>");
    }
    t.push_str("<th>NaN/Inf ref·cand</th><th class=\"name\">notes</th></tr></thead>\n<tbody>\n");
    for o in &report.outputs {
        let _ = write!(
            t,
            "<tr{}><td class=\"name\">{}</td><td>{}</td><td class=\"text\">{}</td>",
            if o.passed { "" } else { " class=\"failed\"" },
            escape(&o.name),
            badge(o.passed),
            escape(&sides(o)),
        );
        let values = column_values(o);
        for ((_, limit), value) in COLUMNS.iter().zip(values) {
            match o.failures.iter().find(|f| f.limit == *limit) {
                Some(f) => {
                    let op = if limit.starts_with("min_") { "<" } else { ">" };
                    let _ = write!(
                        t,
                        "<td class=\"bad\" title=\"{} {op} {}\">{value}</td>",
                        escape(&num(f.value)),
                        escape(&num(f.threshold))
                    );
                }
                None => {
                    let _ = write!(t, "<td>{value}</td>");
                }
            }
        }
        let nan_inf = match &o.metrics {
            Some(Metrics::Float(m)) => format!(
                "{}/{} · {}/{}",
                m.nan_reference, m.inf_reference, m.nan_candidate, m.inf_candidate
            ),
            _ => "–".into(),
        };
        let notes = match (o.status != Status::Compared || !o.passed, o.failure_text()) {
            (true, Some(text)) => text,
            _ => String::new(),
        };
        let _ = writeln!(
            t,
            "<td>{nan_inf}</td><td class=\"text\">{}</td></tr>",
            escape(&notes)
        );
    }
    if report.outputs.is_empty() {
        t.push_str("<tr><td class=\"text\" colspan=\"14\">no outputs</td></tr>\n");
    }
    t.push_str("</tbody></table></div>\n");
    t
}

/// The value's type and shape, once when both sides agree, else `reference vs candidate`.
fn sides(o: &OutputReport) -> String {
    match (&o.reference, &o.candidate) {
        (Some(r), Some(c)) if r == c => r.clone(),
        (r, c) => format!(
            "{} vs {}",
            r.as_deref().unwrap_or("(none)"),
            c.as_deref().unwrap_or("(none)")
        ),
    }
}

/// The output's values for [`COLUMNS`], formatted.
fn column_values(o: &OutputReport) -> Vec<String> {
    let opt = |v: Option<f64>| v.map_or_else(|| "–".to_string(), num);
    match &o.metrics {
        Some(Metrics::Float(m)) => vec![
            num(m.max_abs),
            num(m.mean_abs),
            num(m.max_rel),
            num(m.rmse),
            num(m.cosine),
            num(m.sqnr_db),
            format!("{}/{}", m.outside, m.elements),
            opt(m.top1),
            opt(m.top5),
        ],
        Some(Metrics::Exact(m)) => {
            let mut v = vec!["–".to_string(); COLUMNS.len()];
            v[6] = format!("{}/{} differ", m.mismatched, m.elements);
            v
        }
        None => vec!["–".to_string(); COLUMNS.len()],
    }
}

fn badge(passed: bool) -> &'static str {
    if passed {
        "<span class=\"badge small pass\">PASS</span>"
    } else {
        "<span class=\"badge small fail\">FAIL</span>"
    }
}

/// One bar of the SQNR chart.
struct Bar {
    label: String,
    tooltip: String,
    sqnr: f64,
    /// Its own threshold, if any.
    threshold: Option<f64>,
    /// It fails some limit other than the SQNR (drawn amber, not red).
    failed_other: bool,
    /// The per-layer comparison's first jump.
    jump: bool,
}

/// SQNR above this is agreement at float rounding: the axis stops here and such bars are
/// drawn clipped with their value, so one exact layer (a −3.4e38 mask fill reads ~800 dB)
/// does not flatten the 20–50 dB range where quantization error lives.
const CAP_DB: f64 = 100.0;

fn sqnr_section(report: &Report, layers: &[LayerPoint]) -> String {
    // Per-layer plug-in point: the per-layer comparison passes its points here, in
    // topological order; until then (and without --per-layer) the chart is per output.
    let (title, axis, bars) = if layers.is_empty() {
        let bars: Vec<Bar> = report
            .outputs
            .iter()
            .filter_map(|o| match &o.metrics {
                Some(Metrics::Float(m)) => Some(Bar {
                    label: o.name.clone(),
                    tooltip: format!(
                        "{}\nSQNR {} dB\nmax abs {}",
                        o.name,
                        num(m.sqnr_db),
                        num(m.max_abs)
                    ),
                    sqnr: m.sqnr_db,
                    threshold: o.limits.min_sqnr,
                    failed_other: o.failures.iter().any(|f| f.limit != "min_sqnr"),
                    jump: false,
                }),
                _ => None,
            })
            .collect();
        ("SQNR per output", "output", bars)
    } else {
        let threshold = common_min_sqnr(report);
        let bars = layers
            .iter()
            .map(|l| Bar {
                label: l.name.clone(),
                tooltip: format!(
                    "{} ({})\nSQNR {} dB\nmax abs {}",
                    l.name,
                    l.op_type,
                    num(l.sqnr_db),
                    num(l.max_abs)
                ),
                sqnr: l.sqnr_db,
                threshold,
                failed_other: false,
                jump: l.jump,
            })
            .collect();
        ("SQNR per layer", "layer (topological order)", bars)
    };
    let mut s = format!("<section><h2>{title}</h2>\n");
    s.push_str(
        "<p class=\"note\">Signal-to-quantization-noise ratio, 10·log10(Σref² / Σ(cand−ref)²): \
         higher is better; identical tensors have infinite SQNR (drawn clipped, marked ∞).</p>\n",
    );
    s.push_str("<div class=\"scroll\">");
    s.push_str(&sqnr_chart(&bars, axis));
    s.push_str("</div>\n");
    if !layers.is_empty() {
        s.push_str(
            "<details><summary>All layers</summary><div class=\"scroll\"><table>\
                    <thead><tr><th>#</th><th class=\"name\">tensor</th><th class=\"name\">op</th>\
                    <th>SQNR dB</th><th>max abs</th></tr></thead><tbody>\n",
        );
        for (i, l) in layers.iter().enumerate() {
            let _ = writeln!(
                s,
                "<tr><td>{i}</td><td class=\"name\">{}</td><td class=\"text\">{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                escape(&l.name),
                escape(&l.op_type),
                num(l.sqnr_db),
                num(l.max_abs)
            );
        }
        s.push_str("</tbody></table></div></details>\n");
    }
    s.push_str("</section>\n");
    s
}

/// The `min_sqnr` every output shares, if they all have the same one.
fn common_min_sqnr(report: &Report) -> Option<f64> {
    let first = report.outputs.first()?.limits.min_sqnr?;
    report
        .outputs
        .iter()
        .all(|o| o.limits.min_sqnr == Some(first))
        .then_some(first)
}

/// A round step (1, 2 or 5 × 10^k) that cuts `span` into about six parts.
fn nice_step(span: f64) -> f64 {
    let raw = span.max(1e-9) / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// Ticks from `lo` to `hi` at a round step.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let step = nice_step(hi - lo);
    let first = (lo / step).ceil() as i64;
    (first..)
        .map(|k| k as f64 * step)
        .take_while(|v| *v <= hi + step * 1e-9)
        .take(50)
        .collect()
}

/// Shortens a label for an axis; the full name is in the tooltip.
fn short(label: &str, max: usize) -> String {
    if label.chars().count() <= max {
        return label.to_string();
    }
    let tail: String = label
        .chars()
        .rev()
        .take(max - 1)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

fn sqnr_chart(bars: &[Bar], axis: &str) -> String {
    const TOP: f64 = 28.0;
    const LEFT: f64 = 64.0;
    const PLOT_H: f64 = 260.0;
    const BOTTOM: f64 = 120.0;
    let n = bars.len();
    let slot = if n <= 40 { 40.0 } else { 14.0 };
    let width = (LEFT + 24.0 + slot * n as f64).max(960.0);
    let plot_w = width - LEFT - 24.0;
    let slot = if n == 0 { slot } else { plot_w / n as f64 };
    let height = TOP + PLOT_H + BOTTOM;
    let mut s = format!(
        "<svg id=\"sqnr-chart\" role=\"img\" aria-label=\"SQNR chart\" width=\"{width:.0}\" \
         height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\">\n"
    );
    if n == 0 {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"label\">no float outputs \
             to chart</text></svg>",
            width / 2.0,
            TOP + PLOT_H / 2.0
        );
        return s;
    }
    // The range covers every finite SQNR, every threshold and 0 dB, with some headroom;
    // infinite values are drawn up to the top edge.
    let mut lo: f64 = 0.0;
    let mut hi: f64 = 10.0;
    for b in bars {
        for v in [Some(b.sqnr), b.threshold].into_iter().flatten() {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v.min(CAP_DB));
            }
        }
    }
    let pad = (hi - lo) * 0.12;
    let (lo, hi) = (if lo < 0.0 { lo - pad } else { 0.0 }, hi + pad);
    let y = |v: f64| TOP + PLOT_H * (1.0 - (v.clamp(lo, hi) - lo) / (hi - lo));
    // Grid and y axis.
    for t in ticks(lo, hi) {
        let yy = y(t);
        let _ = writeln!(
            s,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0,
            num(t)
        );
    }
    let _ = writeln!(
        s,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{:.1}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
        TOP + PLOT_H,
        LEFT + plot_w,
        y(0.0),
        y(0.0)
    );
    let _ = writeln!(
        s,
        "<text transform=\"translate(16,{:.1}) rotate(-90)\" text-anchor=\"middle\">SQNR (dB)\
         </text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"label\">{}</text>",
        TOP + PLOT_H / 2.0,
        LEFT + plot_w / 2.0,
        height - 6.0,
        escape(axis)
    );
    s.push_str(&legend(LEFT + plot_w, 14.0));
    // Bars, their labels and tooltips.
    let every = (n as f64 / 60.0).ceil().max(1.0) as usize;
    let bar_w = (slot * 0.7).max(1.0);
    for (i, b) in bars.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bar_w) / 2.0;
        let cx = x + bar_w / 2.0;
        let (top, text) = if b.sqnr.is_nan() {
            (y(0.0), Some("n/a".to_string()))
        } else if b.sqnr == f64::INFINITY {
            (y(hi), Some("∞".to_string()))
        } else if b.sqnr > CAP_DB {
            (y(hi), Some(format!("≥{}", num(CAP_DB))))
        } else if b.sqnr == f64::NEG_INFINITY {
            (y(lo), Some("−∞".to_string()))
        } else {
            (y(b.sqnr), None)
        };
        let base = y(0.0);
        let (y0, h) = if top <= base {
            (top, base - top)
        } else {
            (base, top - base)
        };
        let below = b.threshold.is_some_and(|t| b.sqnr.is_nan() || b.sqnr < t);
        let class = if below || b.jump {
            "bad"
        } else if b.sqnr == f64::INFINITY || b.sqnr > CAP_DB {
            "inf"
        } else if b.failed_other {
            "warn"
        } else {
            "ok"
        };
        let _ = write!(
            s,
            "<g><title>{}</title><rect class=\"{class}\" x=\"{x:.1}\" y=\"{y0:.1}\" \
             width=\"{bar_w:.1}\" height=\"{:.1}\"/>",
            escape(&b.tooltip),
            h.max(1.0)
        );
        if b.jump {
            let ty = if top <= base { y0 - 4.0 } else { y0 + h + 12.0 };
            let _ = write!(
                s,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"big\" \
                 fill=\"#c62828\">first jump</text>",
                ty - 14.0
            );
        }
        if let Some(text) = text {
            let ty = if top <= base { y0 - 4.0 } else { y0 + h + 12.0 };
            let _ = write!(
                s,
                "<text x=\"{cx:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\" class=\"big\">{text}</text>"
            );
        } else if n <= 40 {
            let ty = if top <= base { y0 - 4.0 } else { y0 + h + 12.0 };
            let _ = write!(
                s,
                "<text x=\"{cx:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\" class=\"label\">{}\
                 </text>",
                format_db(b.sqnr)
            );
        }
        if i % every == 0 {
            let ly = TOP + PLOT_H + 12.0;
            let _ = write!(
                s,
                "<text transform=\"translate({cx:.1},{ly:.1}) rotate(-40)\" text-anchor=\"end\">\
                 {}</text>",
                escape(&short(&b.label, 22))
            );
        }
        s.push_str("</g>\n");
    }
    // Thresholds: one line when shared, else a segment over each bar.
    let first = bars[0].threshold;
    if first.is_some() && bars.iter().all(|b| b.threshold == first) {
        if let Some(t) = first {
            let yy = y(t);
            let _ = writeln!(
                s,
                "<line class=\"thr\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" class=\"fail-text\" \
                 style=\"fill:var(--fail)\">min SQNR {} dB</text>",
                LEFT + plot_w,
                LEFT + plot_w - 4.0,
                yy - 5.0,
                num(t)
            );
        }
    } else {
        for (i, b) in bars.iter().enumerate() {
            if let Some(t) = b.threshold {
                let yy = y(t);
                let x = LEFT + slot * i as f64;
                let _ = writeln!(
                    s,
                    "<line class=\"thr\" x1=\"{x:.1}\" x2=\"{:.1}\" y1=\"{yy:.1}\" \
                     y2=\"{yy:.1}\"><title>min SQNR {} dB</title></line>",
                    x + slot,
                    num(t)
                );
            }
        }
    }
    s.push_str("</svg>");
    s
}

/// The chart's colour key, right-aligned at `right`.
fn legend(right: f64, y: f64) -> String {
    let items = [
        ("ok", "passes"),
        ("warn", "fails another limit"),
        ("bad", "below min SQNR"),
        ("inf", "identical (∞)"),
    ];
    let mut s = String::from("<g class=\"legend\">");
    let mut x = right - 500.0;
    for (class, text) in items {
        let _ = write!(
            s,
            "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\"/>\
             <text x=\"{:.1}\" y=\"{y:.1}\">{text}</text>",
            y - 9.0,
            x + 14.0,
        );
        x += 125.0;
    }
    s.push_str("</g>\n");
    s
}

/// SQNR for a bar label: one decimal.
fn format_db(v: f64) -> String {
    format!("{v:.1}")
}

/// A count in a few characters: `950`, `12.3k`, `4.1M`.
fn compact(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

fn histogram_card(index: usize, o: &OutputReport) -> String {
    let mut s = format!(
        "<div class=\"card\"><h3>{}{}</h3>\n",
        escape(&o.name),
        badge(o.passed)
    );
    match &o.histogram {
        Some(h) => {
            s.push_str(&histogram_svg(index, h, o.limits.tolerance().atol));
            let total = h.total();
            let exact = if total == 0 {
                0.0
            } else {
                100.0 * h.zero as f64 / total as f64
            };
            let _ = write!(
                s,
                "<p>{total} element(s); {exact:.1}% exactly equal; max abs {}</p>",
                match &o.metrics {
                    Some(Metrics::Float(m)) => num(m.max_abs),
                    _ => "–".into(),
                }
            );
        }
        None => {
            let why = match (&o.metrics, &o.problem) {
                (Some(Metrics::Exact(_)), _) => "compared exactly: no error histogram".to_string(),
                (_, Some(p)) => format!("not compared: {p}"),
                _ => "no histogram".to_string(),
            };
            let _ = write!(
                s,
                "<svg id=\"hist-{index}\" width=\"560\" height=\"40\" viewBox=\"0 0 560 40\">\
                 <text x=\"8\" y=\"24\" class=\"label\">{}</text></svg>",
                escape(&why)
            );
        }
    }
    s.push_str("</div>\n");
    s
}

fn histogram_svg(index: usize, h: &Histogram, atol: f64) -> String {
    const LEFT: f64 = 48.0;
    const TOP: f64 = 22.0;
    const PLOT_H: f64 = 150.0;
    const BOTTOM: f64 = 58.0;
    let buckets = h.labelled();
    let slot = 26.0;
    let plot_w = slot * buckets.len() as f64;
    let width = LEFT + plot_w + 12.0;
    let height = TOP + PLOT_H + BOTTOM;
    let total = h.total().max(1) as f64;
    let peak = buckets.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64 / total;
    // Round the top of the share axis up to a tick.
    // Headroom above the tallest bar keeps its count label inside the plot.
    let step = nice_step(peak * 1.15);
    let top_share = ((peak * 1.15 / step - 1e-9).ceil() * step).max(step);
    let y = |share: f64| TOP + PLOT_H * (1.0 - share / top_share);
    let mut s = format!(
        "<svg id=\"hist-{index}\" role=\"img\" aria-label=\"error histogram\" \
         width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\">\n"
    );
    for t in ticks(0.0, top_share) {
        let yy = y(t);
        let _ = writeln!(
            s,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}%</text>",
            LEFT + plot_w,
            LEFT - 5.0,
            yy + 4.0,
            num((t * 100.0 * 1e6).round() / 1e6)
        );
    }
    let _ = writeln!(
        s,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
        LEFT + plot_w,
        TOP + PLOT_H,
        TOP + PLOT_H
    );
    let last = buckets.len() - 1;
    for (i, (label, count)) in buckets.iter().enumerate() {
        let x = LEFT + slot * i as f64 + 3.0;
        let cx = x + (slot - 6.0) / 2.0;
        // Decade i (bucket i+2) lies within tolerance when its upper edge is ≤ atol.
        let class = match i {
            0 => "zero",
            1 => "within",
            i if i == last => "nonfinite",
            i if i == last - 1 => "beyond",
            i => {
                let upper = 10f64.powi(h.lowest_decade + i as i32 - 1);
                if upper <= atol * (1.0 + 1e-9) {
                    "within"
                } else {
                    "beyond"
                }
            }
        };
        let share = *count as f64 / total;
        let mut bar_h = PLOT_H * share / top_share;
        if *count > 0 {
            bar_h = bar_h.max(2.0); // a single element still shows
        }
        let _ = write!(
            s,
            "<g><title>{label}: {count} ({:.3}%)</title><rect class=\"{class}\" x=\"{x:.1}\" \
             y=\"{:.1}\" width=\"{:.1}\" height=\"{bar_h:.1}\"/>",
            share * 100.0,
            TOP + PLOT_H - bar_h,
            slot - 6.0
        );
        if *count > 0 {
            let _ = write!(
                s,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"label\">{}</text>",
                TOP + PLOT_H - bar_h - 4.0,
                compact(*count)
            );
        }
        let _ = writeln!(
            s,
            "<text transform=\"translate({:.1},{:.1}) rotate(-50)\" text-anchor=\"end\">{}\
             </text></g>",
            cx + 3.0,
            TOP + PLOT_H + 12.0,
            escape(label)
        );
    }
    // The tolerance, placed on the log axis between its decade's edges.
    if atol > 0.0 && atol.is_finite() {
        let pos = atol.log10() - h.lowest_decade as f64;
        if (0.0..=h.decades.len() as f64).contains(&pos) {
            let x = LEFT + slot * (2.0 + pos);
            let _ = writeln!(
                s,
                "<line class=\"tol\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" style=\"fill:#0969da\">atol {:e}</text>",
                TOP - 8.0,
                TOP + PLOT_H,
                x + 3.0,
                TOP - 6.0,
                atol
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{compare, Thresholds, TopkAxis};
    use crate::value::{NamedValues, Value};
    use kiln_passes::tensor::Tensor;

    fn named(name: &str, v: &[f32]) -> NamedValues {
        [(
            name.to_string(),
            Value::Tensor(Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()),
        )]
        .into_iter()
        .collect()
    }

    #[test]
    fn escapes_names_and_draws_chart_and_histograms() {
        let name = "<script>alert('x')</script>";
        let r = compare(
            &named(name, &[1.0, 2.0, 3.0]),
            &named(name, &[1.0, 2.5, 3.0]),
            Thresholds::default(),
            TopkAxis::Off,
        );
        let page = render_html(&r, &[]);
        assert!(!page.contains("<script"), "unescaped name");
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(page.contains("id=\"sqnr-chart\""));
        assert!(page.contains("id=\"hist-0\""));
        assert!(page.contains(">FAIL<"));
        assert!(!page.contains("http"));
    }

    #[test]
    fn identical_output_is_drawn_as_infinite_and_layers_take_over_the_chart() {
        let r = compare(
            &named("y", &[1.0, 2.0]),
            &named("y", &[1.0, 2.0]),
            Thresholds::default(),
            TopkAxis::Off,
        );
        let page = render_html(&r, &[]);
        assert!(page.contains(">∞<"), "infinite SQNR is labelled");
        assert!(page.contains("SQNR per output"));
        let layers = [
            LayerPoint {
                name: "conv<1>".into(),
                jump: false,
                op_type: "Conv".into(),
                sqnr_db: 42.0,
                max_abs: 1e-3,
            },
            LayerPoint {
                name: "mask".into(),
                jump: false,
                op_type: "Add".into(),
                sqnr_db: 800.0,
                max_abs: 0.0,
            },
            LayerPoint {
                name: "matmul".into(),
                jump: true,
                op_type: "MatMul".into(),
                sqnr_db: 0.5,
                max_abs: 0.3,
            },
        ];
        let page = render_html(&r, &layers);
        assert!(page.contains("SQNR per layer"));
        assert!(page.contains("conv&lt;1&gt;"));
        assert!(page.contains("first jump"), "the jump is labelled");
        assert!(
            page.contains("≥100"),
            "an 800 dB layer is drawn clipped at the cap"
        );
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(0.0, 60.0), [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]);
        assert_eq!(ticks(-3.0, 0.5), [-3.0, -2.0, -1.0, 0.0]);
        let t = ticks(0.0, 0.5);
        assert_eq!(t.len(), 6, "{t:?}");
        assert!((t[5] - 0.5).abs() < 1e-12, "{t:?}");
    }
}
