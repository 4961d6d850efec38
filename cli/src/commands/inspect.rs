//! `kiln inspect MODEL [--json]`: what a model is, at a glance or as JSON for scripts.

use std::path::PathBuf;

use kiln_passes::ir::{describe_type, Model, NodeKind};
use serde_json::{json, Value as Json};

use super::Outcome;
use crate::error::CliError;
use crate::model_file;
use crate::render;

/// Arguments of `kiln inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model (`.onnx`; external data is read from beside it).
    model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Loads the model and prints its summary.
pub fn run(args: Args) -> Result<Outcome, CliError> {
    let file = model_file::open(&args.model)?;
    let summary = summarize(&file, &args.model);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        print!("{}", text(&summary));
    }
    Ok(Outcome::Success)
}

/// The summary as JSON (the text form is rendered from it, so both always agree).
fn summarize(file: &model_file::ModelFile, path: &std::path::Path) -> Json {
    let model: &Model = &file.model;
    let graph = &model.graph;
    let stats = graph.stats();
    let mut inputs = Vec::new();
    let mut overridable = Vec::new();
    for &idx in &graph.graph_inputs {
        let Some(node) = graph.node(idx) else {
            continue;
        };
        let Some(info) = node.outputs.first() else {
            continue;
        };
        let entry = json!({"name": info.name, "type": describe_type(info.ty.as_ref())});
        match node.kind {
            NodeKind::Input => inputs.push(entry),
            _ => overridable.push(entry),
        }
    }
    let outputs: Vec<Json> = graph
        .outputs
        .iter()
        .map(|o| {
            json!({
                "name": graph.value_name(o.value),
                "type": describe_type(o.info.ty.as_ref())
            })
        })
        .collect();
    let opsets: Vec<Json> = model
        .opset_import
        .iter()
        .map(|o| {
            let domain = if o.domain.is_empty() {
                "ai.onnx"
            } else {
                &o.domain
            };
            json!({"domain": domain, "version": o.version})
        })
        .collect();
    let external: Vec<Json> = file
        .loaded
        .external_files
        .iter()
        .map(|f| json!({"path": f.path, "bytes": f.size, "tensors": f.tensors}))
        .collect();
    let metadata: serde_json::Map<String, Json> = model
        .metadata_props
        .iter()
        .map(|e| (e.key.clone(), Json::String(e.value.clone())))
        .collect();
    json!({
        "path": path,
        "ir_version": model.ir_version,
        "producer": {"name": model.producer_name, "version": model.producer_version},
        "graph_name": graph.name,
        "opsets": opsets,
        "inputs": inputs,
        "overridable_initializers": overridable,
        "outputs": outputs,
        "nodes": stats.nodes,
        "ops": stats.op_histogram,
        "constants": stats.constants,
        "parameters": stats.parameters,
        "parameter_bytes": stats.parameter_bytes,
        "external_data": external,
        "subgraphs": stats.subgraphs,
        "functions": model.functions.len(),
        "metadata": metadata,
    })
}

/// Renders the JSON summary as text for a terminal.
fn text(s: &Json) -> String {
    let str_of = |v: &Json| v.as_str().unwrap_or_default().to_string();
    let u = |v: &Json| v.as_u64().unwrap_or(0);
    let mut out = String::new();
    let producer = format!(
        "{} {}",
        str_of(&s["producer"]["name"]),
        str_of(&s["producer"]["version"])
    );
    let opsets: Vec<String> = s["opsets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| format!("{} {}", str_of(&o["domain"]), o["version"]))
        .collect();
    let mut head = vec![
        vec!["model".into(), str_of(&s["path"])],
        vec!["ir version".into(), s["ir_version"].to_string()],
        vec![
            "producer".into(),
            if producer.trim().is_empty() {
                "(none)".into()
            } else {
                producer.trim().to_string()
            },
        ],
        vec!["opsets".into(), opsets.join(", ")],
        vec!["nodes".into(), render::count(u(&s["nodes"]))],
        vec![
            "parameters".into(),
            format!(
                "{} in {} constants ({})",
                render::count(u(&s["parameters"])),
                render::count(u(&s["constants"])),
                render::bytes(u(&s["parameter_bytes"]))
            ),
        ],
        vec!["subgraphs".into(), u(&s["subgraphs"]).to_string()],
    ];
    if u(&s["functions"]) > 0 {
        head.push(vec!["functions".into(), u(&s["functions"]).to_string()]);
    }
    for f in s["external_data"].as_array().into_iter().flatten() {
        head.push(vec![
            "external data".into(),
            format!(
                "{} ({}, {} tensors)",
                str_of(&f["path"]),
                render::bytes(u(&f["bytes"])),
                u(&f["tensors"])
            ),
        ]);
    }
    out.push_str(&render::table(&head));
    for (title, key) in [
        ("inputs", "inputs"),
        ("initializers listed as inputs", "overridable_initializers"),
        ("outputs", "outputs"),
    ] {
        let rows: Vec<Vec<String>> = s[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| vec![format!("  {}", str_of(&v["name"])), str_of(&v["type"])])
            .collect();
        if rows.is_empty() && key == "overridable_initializers" {
            continue;
        }
        out.push_str(&format!("\n{title} ({}):\n", rows.len()));
        out.push_str(&render::table(&rows));
    }
    let mut ops: Vec<(String, u64)> = s["ops"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
        .collect();
    // Most frequent first; ties by name so the listing is stable.
    ops.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let rows: Vec<Vec<String>> = ops
        .iter()
        .map(|(k, v)| vec![format!("  {k}"), v.to_string()])
        .collect();
    out.push_str(&format!("\nops ({} types):\n", rows.len()));
    out.push_str(&render::table(&rows));
    out
}
