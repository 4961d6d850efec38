//! `kiln validate CANDIDATE --reference REF`: run both models in ONNX Runtime on the same
//! inputs and judge every output of the candidate against the reference's; with
//! `--per-layer`, also compare the intermediate tensors both have and name the first layer
//! where the error jumps (rules in [`kiln_backends::validate::per_layer`]).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use kiln_backends::runtime::{expose_outputs, Session, SessionOptions};
use kiln_backends::validate::html::LayerPoint;
use kiln_backends::validate::per_layer::{JumpRule, PerLayer, PerLayerError, PerLayerReport, Plan};
use kiln_backends::validate::thresholds::num;
use kiln_backends::validate::{render_html, Comparer, Report};

use super::check::{self, CheckArgs, InputArgs};
use super::Outcome;
use crate::error::CliError;
use crate::{model_file, render};

/// Arguments of `kiln validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model under test.
    candidate: PathBuf,
    /// The model it must agree with.
    #[arg(long, value_name = "MODEL")]
    reference: PathBuf,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    check: CheckArgs,
    /// Also write a self-contained HTML report (SQNR chart, error histograms) to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Save the outputs (and synthetic inputs) to DIR/{reference,candidate,inputs}, for
    /// `kiln diff` later.
    #[arg(long, value_name = "DIR")]
    save_outputs: Option<PathBuf>,
    /// Also compare every intermediate tensor both models have (through QDQ pairs and fusions),
    /// in the reference's topological order, and name the first layer where the error jumps.
    #[arg(long)]
    per_layer: bool,
    /// With --per-layer: an SQNR more than DB below a layer's worst upstream layer is a jump
    /// (a layer is also a jump below the default --min-sqnr, when given).
    #[arg(
        long,
        value_name = "DB",
        default_value_t = 10.0,
        requires = "per_layer"
    )]
    jump_db: f64,
}

/// Runs both models on every sample, compares, reports.
pub fn run(args: Args) -> Result<Outcome, CliError> {
    let thresholds = args.check.thresholds()?;
    let topk = args.check.topk()?;
    if !(args.jump_db.is_finite() && args.jump_db >= 0.0) {
        return Err(CliError::Usage(format!(
            "--jump-db {}: expected a number of dB ≥ 0",
            args.jump_db
        )));
    }
    let (mut reference, mut candidate, mut per_layer) = if args.per_layer {
        let (r, c, p) = open_per_layer(&args, &thresholds)?;
        (r, c, Some(p))
    } else {
        let r = check::open_model(&args.reference)?;
        (r, check::open_model(&args.candidate)?, None)
    };
    let samples = check::input_samples(&args.inputs, &reference)?;
    let many = samples.len() > 1;
    let mut comparer = Comparer::new(thresholds.clone(), topk);
    for (i, sample) in samples.iter().enumerate() {
        let mut r = check::run_on(&mut reference, &args.reference, sample)?;
        let mut c = check::run_on(&mut candidate, &args.candidate, sample)?;
        if let Some((per, ref_outputs, cand_outputs)) = &mut per_layer {
            per.add_sample(&r, &c);
            // Only the models' own outputs go on to the output comparison and saved files.
            r.retain(|(n, _)| ref_outputs.contains(n));
            c.retain(|(n, _)| cand_outputs.contains(n));
        }
        if let Some(dir) = &args.save_outputs {
            check::save(dir, "reference", i, many, &r)?;
            check::save(dir, "candidate", i, many, &c)?;
            if args.inputs.inputs.is_none() {
                check::save(dir, "inputs", i, many, &sample.1)?;
            }
        }
        comparer.add_sample(&r, &c);
    }
    let report = comparer.finish();
    let sides = (args.reference.as_path(), args.candidate.as_path());
    let rule = JumpRule {
        jump_db: args.jump_db,
        min_sqnr: thresholds.default.min_sqnr,
    };
    let layers = per_layer.map(|(per, _, _)| per.finish(rule));
    if let Some(path) = &args.html {
        let points: Vec<LayerPoint> = layers
            .iter()
            .flat_map(|l| l.rows.iter().map(move |r| (l, r)))
            .map(|(l, r)| LayerPoint {
                jump: l.first_jump.as_deref() == Some(r.name.as_str()),
                name: r.name.clone(),
                op_type: r.op_type.clone(),
                sqnr_db: r.sqnr_db,
                max_abs: r.max_abs,
            })
            .collect();
        model_file::write_text(path, &render_html(&report, &points))?;
    }
    let Some(layers) = layers else {
        return args.check.finish(&report, "kiln validate", sides);
    };
    if args.check.json {
        return finish_json(&args.check, &report, &layers, sides);
    }
    print!("{}", layer_table(&layers, std::io::stdout().is_terminal()));
    args.check.finish(&report, "kiln validate", sides)
}

/// A model's outputs, the names to capture and the sessions that capture them.
type Capturing = (Session, Session, (PerLayer, Vec<String>, Vec<String>));

/// Plans the per-layer comparison and opens both models with the matched tensors exposed.
fn open_per_layer(
    args: &Args,
    thresholds: &kiln_backends::validate::Thresholds,
) -> Result<Capturing, CliError> {
    let reference = kiln_proto::load_model(&args.reference)?.model;
    let candidate = kiln_proto::load_model(&args.candidate)?.model;
    let plan = Plan::new(&reference, &candidate).map_err(|e| match e {
        PerLayerError::Graph(source) => CliError::Graph {
            path: args.reference.clone(),
            source,
        },
    })?;
    let open = |model: &kiln_proto::onnx::ModelProto, names: &[String]| {
        Session::from_model_with(&expose_outputs(model, names), &SessionOptions::as_written())
    };
    let ref_session = open(&reference, &plan.reference_names())?;
    let cand_session = open(&candidate, &plan.candidate_names())?;
    let per = PerLayer::new(plan, thresholds.default.tolerance());
    Ok((
        ref_session,
        cand_session,
        (per, output_names(&reference), output_names(&candidate)),
    ))
}

/// The graph output names of `model`.
fn output_names(model: &kiln_proto::onnx::ModelProto) -> Vec<String> {
    model
        .graph
        .iter()
        .flat_map(|g| g.output.iter().map(|o| o.name.clone()))
        .collect()
}

/// The JSON report with a `per_layer` section, the JUnit file, and the outcome of the outputs.
fn finish_json(
    check: &CheckArgs,
    report: &Report,
    layers: &PerLayerReport,
    sides: (&Path, &Path),
) -> Result<Outcome, CliError> {
    if let Some(path) = &check.junit {
        model_file::write_text(path, &report.junit("kiln validate"))?;
    }
    let render =
        |e: serde_json::Error| CliError::Usage(format!("could not render the report as JSON: {e}"));
    let mut json = serde_json::to_value(report).map_err(render)?;
    if let Some(obj) = json.as_object_mut() {
        obj.insert("reference".into(), sides.0.display().to_string().into());
        obj.insert("candidate".into(), sides.1.display().to_string().into());
        obj.insert(
            "per_layer".into(),
            serde_json::to_value(layers).map_err(render)?,
        );
    }
    println!("{json:#}");
    Ok(if report.passed {
        Outcome::Success
    } else {
        Outcome::CheckFailed
    })
}

/// The per-layer table: every float layer in topological order, the first jump marked.
fn layer_table(layers: &PerLayerReport, colour: bool) -> String {
    let mut rows = vec![[
        "#", "layer", "op", "max abs", "SQNR dB", "baseline", "cosine", "",
    ]
    .map(String::from)
    .to_vec()];
    for (i, r) in layers.rows.iter().enumerate() {
        let first = layers.first_jump.as_deref() == Some(r.name.as_str());
        let mark = match (first, r.jump) {
            (true, _) => "<< first jump",
            (false, true) => "jump",
            _ => "",
        };
        rows.push(vec![
            (i + 1).to_string(),
            r.name.clone(),
            r.op_type.clone(),
            num(r.max_abs),
            num(r.sqnr_db),
            r.baseline_db.map_or_else(|| "-".to_string(), num),
            num(r.cosine),
            mark.to_string(),
        ]);
    }
    let mut out = render::table(&rows);
    let summary = match layers.rows.iter().find(|r| r.jump) {
        Some(r) => format!(
            "first jump: {} ({}, SQNR {} dB, baseline {} dB)",
            r.name,
            r.op_type,
            num(r.sqnr_db),
            r.baseline_db.map_or_else(|| "-".to_string(), num)
        ),
        None => format!(
            "no jump: no layer's SQNR drops more than {} dB below its inputs'",
            num(layers.jump_db)
        ),
    };
    let summary = if colour && layers.first_jump.is_some() {
        format!("\x1b[31;1m{summary}\x1b[0m")
    } else {
        summary
    };
    out.push_str(&format!(
        "{summary} ({} layers compared, {} matched layers not float or not comparable)\n\n",
        layers.rows.len(),
        layers.skipped.len()
    ));
    out
}
