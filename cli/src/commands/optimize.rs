//! `kiln optimize MODEL -o OUT [--passes a,b | --disable x] [--report FILE]`: the rewrites
//! every target needs before quantization, run on their own.

use std::path::PathBuf;

use kiln_passes::optimize::{optimize, OptimizeOptions, OptimizeReport};
use serde_json::json;

use super::Outcome;
use crate::error::CliError;
use crate::model_file;
use crate::render;

/// Arguments of `kiln optimize`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model to optimize.
    model: PathBuf,
    /// Where to write the optimized model.
    #[arg(short, long)]
    output: PathBuf,
    /// Run only these passes (comma-separated; they run in pipeline order). Passes:
    /// unlist-initializers, infer-shapes, fold-constants, remove-identity, remove-noop, cancel-transposes,
    /// dedup-constants, cse, dead-code, upgrade-opset, fuse-conv-bn, fuse-matmul-add,
    /// fold-bias, fuse-layernorm, fuse-rmsnorm, fuse-gelu, note-activations, note-silu,
    /// note-rotary, find-attention.
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "disable",
        value_name = "PASSES"
    )]
    passes: Option<Vec<String>>,
    /// Skip these passes (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "PASSES")]
    disable: Vec<String>,
    /// Upgrade the default-domain opset to N (never downgrades).
    #[arg(long, value_name = "N", conflicts_with = "keep_opset")]
    target_opset: Option<i64>,
    /// Never change the opset (by default Kiln upgrades when that lets a fusion fire).
    #[arg(long)]
    keep_opset: bool,
    /// Allow ONNX Runtime's own operators (com.microsoft Gelu below opset 20,
    /// SimplifiedLayerNormalization below 23).
    #[arg(long)]
    allow_contrib: bool,
    /// Largest tensor, in elements, that constant folding may create.
    #[arg(long, value_name = "ELEMENTS")]
    fold_limit: Option<usize>,
    /// Fix graph input shapes before optimizing, so every shape computation folds
    /// (repeatable; several may follow one flag): NAME:D1,D2,... e.g. input_ids:1,128.
    #[arg(long, value_name = "NAME:DIMS", num_args = 1.., value_parser = parse_input_shape)]
    input_shape: Vec<(String, Vec<i64>)>,
    /// Write a JSON report of every pass's changes here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    #[command(flatten)]
    weights: model_file::WeightsArgs,
}

/// Loads, optimizes, saves, and prints what each pass changed.
pub fn run(args: Args) -> Result<Outcome, CliError> {
    let mut file = model_file::open(&args.model)?;
    let opts = OptimizeOptions {
        only: args.passes.clone(),
        disable: args.disable.clone(),
        target_opset: args.target_opset,
        keep_opset: args.keep_opset,
        allow_contrib: args.allow_contrib,
        fold_limit: args.fold_limit,
        input_shapes: args.input_shape.clone(),
    };
    let report = optimize(&mut file.model, &opts).map_err(|e| CliError::Optimize {
        path: args.model.clone(),
        source: Box::new(e),
    })?;
    let saved = file.save(&args.output, args.weights.external(None))?;
    for w in &saved.warnings {
        eprintln!("kiln: warning: {w}");
    }
    print!("{}", text(&report));
    println!(
        "wrote {} ({})",
        saved.model_path.display(),
        render::bytes(saved.model_bytes + saved.data_bytes)
    );
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report_json(&report, &args)).unwrap_or_default();
        model_file::write_text(path, &json)?;
    }
    Ok(Outcome::Success)
}

/// `NAME:D1,D2,...` (the name may itself contain ':'; the last one separates).
fn parse_input_shape(s: &str) -> Result<(String, Vec<i64>), String> {
    let (name, dims) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("'{s}': expected NAME:D1,D2,... (e.g. input_ids:1,128)"))?;
    if name.is_empty() {
        return Err(format!("'{s}': the input name is empty"));
    }
    let dims = if dims.is_empty() {
        Vec::new()
    } else {
        dims.split(',')
            .map(|d| match d.trim().parse::<i64>() {
                Ok(n) if n >= 0 => Ok(n),
                _ => Err(format!(
                    "'{s}': '{d}' is not a dim (a non-negative integer)"
                )),
            })
            .collect::<Result<_, _>>()?
    };
    Ok((name.to_string(), dims))
}

/// The terminal summary: the opset decision, then one row per pass that ran.
fn text(r: &OptimizeReport) -> String {
    let mut out = String::new();
    if r.opset.after != r.opset.before {
        out.push_str(&format!(
            "opset {} → {} ({})\n",
            r.opset.before, r.opset.after, r.opset.reason
        ));
    } else {
        out.push_str(&format!(
            "opset {} kept ({})\n",
            r.opset.before, r.opset.reason
        ));
    }
    let mut rows = vec![vec![
        "pass".to_string(),
        "nodes".to_string(),
        "changes".to_string(),
    ]];
    for rec in &r.records {
        rows.push(vec![
            rec.pass.to_string(),
            format!("{} → {}", rec.nodes_before, rec.nodes_after),
            rec.changes.to_string(),
        ]);
    }
    out.push_str(&render::table(&rows));
    out.push_str(&format!("nodes {} → {}\n", r.nodes_before, r.nodes_after));
    out
}

fn report_json(r: &OptimizeReport, args: &Args) -> serde_json::Value {
    let passes: Vec<serde_json::Value> = r
        .records
        .iter()
        .map(|rec| {
            let changes: serde_json::Map<String, serde_json::Value> = rec
                .changes
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            json!({
                "pass": rec.pass,
                "nodes_before": rec.nodes_before,
                "nodes_after": rec.nodes_after,
                "changes": changes,
            })
        })
        .collect();
    json!({
        "model": args.model,
        "output": args.output,
        "opset": {"before": r.opset.before, "after": r.opset.after, "reason": r.opset.reason},
        "nodes": {"before": r.nodes_before, "after": r.nodes_after},
        "passes": passes,
    })
}
