//! `kiln bench MODEL [--vs OTHER]`: latency in ONNX Runtime on this CPU (warm-up, then timed
//! runs; nearest-rank p50/p90/p99, mean, min, max) and the process's peak memory. With `--vs`,
//! both models run alternately on the same inputs, so drift (thermal, other load) hits both
//! alike and "B is faster" is a measured claim: ratio of medians and share of pairs B won.

use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_backends::runtime::{peak_rss_bytes, LatencyStats, Session, SessionOptions};
use kiln_backends::NamedValues;
use serde::Serialize;

use super::check::{self, InputArgs};
use super::Outcome;
use crate::error::CliError;

/// Arguments of `kiln bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model to time (A).
    model: PathBuf,
    /// Inputs as for `kiln validate`; without `--inputs`/`--synthetic`, one synthetic sample.
    #[command(flatten)]
    inputs: InputArgs,
    /// Timed runs (per model); samples are used in turn.
    #[arg(long, value_name = "N", default_value_t = 50)]
    runs: usize,
    /// Untimed warm-up runs first (per model).
    #[arg(long, value_name = "W", default_value_t = 5)]
    warmup: usize,
    /// Intra-op threads (default: ONNX Runtime's choice).
    #[arg(long, value_name = "T")]
    threads: Option<usize>,
    /// A second model (B) to run alternately with the first on the same inputs.
    #[arg(long, value_name = "OTHER")]
    vs: Option<PathBuf>,
    /// Print the result as JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// One model's timings.
#[derive(Debug, Serialize)]
struct ModelResult {
    model: String,
    /// Milliseconds.
    latency_ms: LatencyStats,
}

/// How B compares with A.
#[derive(Debug, Serialize)]
struct Versus {
    /// p50 of B over p50 of A: below 1 means B is faster.
    ratio_p50_b_over_a: f64,
    /// Share of alternating pairs (A then B, same input) where B took less time.
    b_faster_share: f64,
    /// `b_faster` / `b_slower` when the medians differ by more than [`CLEAR`] and most pairs
    /// agree, else `no_clear_difference`.
    verdict: &'static str,
}

/// Relative difference of medians below which `--vs` claims no winner (run-to-run noise).
const CLEAR: f64 = 0.03;

/// The verdict of a comparison: a winner only when the medians and the pairs agree.
fn verdict(ratio: f64, b_faster_share: f64) -> &'static str {
    if ratio < 1.0 - CLEAR && b_faster_share > 0.5 {
        "b_faster"
    } else if ratio > 1.0 + CLEAR && b_faster_share < 0.5 {
        "b_slower"
    } else {
        "no_clear_difference"
    }
}

/// Everything `kiln bench` measured.
#[derive(Debug, Serialize)]
struct BenchReport {
    runs: usize,
    warmup: usize,
    /// `None`: ONNX Runtime's default.
    threads: Option<usize>,
    inputs: String,
    a: ModelResult,
    b: Option<ModelResult>,
    versus: Option<Versus>,
    /// `VmHWM` of this process (both models loaded); `None` where not available.
    peak_rss_bytes: Option<u64>,
}

/// Loads the model(s), warms up, times, reports.
pub fn run(args: Args) -> Result<Outcome, CliError> {
    if args.runs == 0 {
        return Err(CliError::Usage("--runs must be at least 1".into()));
    }
    if args.threads == Some(0) {
        return Err(CliError::Usage("--threads must be at least 1".into()));
    }
    let mut options = SessionOptions::default();
    if let Some(t) = args.threads {
        options = options.with_intra_threads(t);
    }
    let mut a = Session::from_path_with(&args.model, &options)?;
    let mut b = match &args.vs {
        Some(path) => Some((Session::from_path_with(path, &options)?, path.as_path())),
        None => None,
    };
    let mut inputs = args.inputs.clone();
    if inputs.inputs.is_none() && inputs.synthetic.is_none() {
        inputs.synthetic = Some(1);
    }
    let samples = check::input_samples(&inputs, &a)?;
    if samples.is_empty() {
        return Err(CliError::Usage("no input samples".into()));
    }
    let mut times_a = Vec::with_capacity(args.runs);
    let mut times_b = Vec::with_capacity(args.runs);
    for i in 0..args.warmup + args.runs {
        let sample = &samples[i % samples.len()];
        let ta = timed(&mut a, &args.model, sample)?;
        let tb = match &mut b {
            Some((session, path)) => Some(timed(session, path, sample)?),
            None => None,
        };
        if i >= args.warmup {
            times_a.push(ta);
            times_b.extend(tb);
        }
    }
    let stats = |t: &[f64]| {
        LatencyStats::of(t).ok_or_else(|| CliError::Usage("no timings were taken".into()))
    };
    let result_a = ModelResult {
        model: args.model.display().to_string(),
        latency_ms: stats(&times_a)?,
    };
    let (result_b, versus) = match &b {
        Some((_, path)) => {
            let sb = stats(&times_b)?;
            let wins = times_a.iter().zip(&times_b).filter(|(x, y)| y < x).count();
            let ratio = sb.p50 / result_a.latency_ms.p50;
            let share = wins as f64 / times_b.len() as f64;
            let versus = Versus {
                ratio_p50_b_over_a: ratio,
                b_faster_share: share,
                verdict: verdict(ratio, share),
            };
            let r = ModelResult {
                model: path.display().to_string(),
                latency_ms: sb,
            };
            (Some(r), Some(versus))
        }
        None => (None, None),
    };
    let input_desc = match (&inputs.inputs, inputs.synthetic) {
        (Some(p), _) => format!("{} ({} sample(s))", p.display(), samples.len()),
        _ => format!(
            "{} synthetic sample(s), seed {}",
            samples.len(),
            inputs.seed
        ),
    };
    let report = BenchReport {
        runs: args.runs,
        warmup: args.warmup,
        threads: args.threads,
        inputs: input_desc,
        a: result_a,
        b: result_b,
        versus,
        peak_rss_bytes: peak_rss_bytes(),
    };
    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| CliError::Usage(format!("could not render the report as JSON: {e}")))?;
        println!("{json}");
    } else {
        print!("{}", text(&report));
    }
    Ok(Outcome::Success)
}

/// Runs `session` once on `sample`; returns milliseconds.
fn timed(
    session: &mut Session,
    model: &Path,
    sample: &(String, NamedValues),
) -> Result<f64, CliError> {
    let start = Instant::now();
    check::run_on(session, model, sample)?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

/// The report as text: one row per model, then the comparison and peak memory.
fn text(r: &BenchReport) -> String {
    let threads = r
        .threads
        .map_or("ONNX Runtime default".to_string(), |t| t.to_string());
    let mut out = format!(
        "inputs: {}; warm-up {} run(s), {} timed run(s) per model; threads: {threads}\n",
        r.inputs, r.warmup, r.runs
    );
    let mut rows = vec![[
        "model", "p50 ms", "p90 ms", "p99 ms", "mean ms", "min ms", "max ms",
    ]
    .map(String::from)
    .to_vec()];
    for (tag, m) in [("A", Some(&r.a)), ("B", r.b.as_ref())] {
        let Some(m) = m else { continue };
        let s = &m.latency_ms;
        let mut row = vec![format!("{tag}: {}", m.model)];
        row.extend([s.p50, s.p90, s.p99, s.mean, s.min, s.max].map(|v| format!("{v:.3}")));
        rows.push(row);
    }
    out.push_str(&crate::render::table(&rows));
    out.push_str("percentiles are nearest-rank (a measured run, no interpolation)\n");
    if let Some(v) = &r.versus {
        let verdict = match v.verdict {
            "b_faster" => "B faster",
            "b_slower" => "B slower",
            _ => "no clear difference",
        };
        out.push_str(&format!(
            "B/A p50 ratio: {:.3} ({verdict}); B was faster in {:.0}% of {} alternating pairs\n",
            v.ratio_p50_b_over_a,
            v.b_faster_share * 100.0,
            r.runs
        ));
    }
    let peak = r.peak_rss_bytes.map_or("n/a".to_string(), |b| {
        format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
    });
    out.push_str(&format!("peak memory (VmHWM): {peak}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::verdict;

    #[test]
    fn a_winner_needs_the_medians_and_the_pairs() {
        assert_eq!(verdict(0.8, 0.9), "b_faster");
        assert_eq!(verdict(1.25, 0.1), "b_slower");
        // Within 3%, or medians and pairs disagreeing: no claim.
        assert_eq!(verdict(0.99, 0.9), "no_clear_difference");
        assert_eq!(verdict(0.8, 0.4), "no_clear_difference");
    }
}
