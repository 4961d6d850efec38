//! The compile report: JSON (serde) and a readable Markdown page. No wall times: the same
//! model, profile and data give a byte-identical report.

use serde::Serialize;

use super::manifest::Manifest;
use super::partition::Partition;
use crate::quantize::{PassSummary, QuantizeReport};

/// A graph input or output that became integer: the caller quantizes/dequantizes with these.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizedIo {
    /// Its name.
    pub name: String,
    /// `input` or `output`.
    pub kind: String,
    /// Its integer type.
    pub dtype: String,
    /// Scale.
    pub scale: f64,
    /// Zero point.
    pub zero_point: i64,
}

/// Parameter-cache use (Edge TPU).
#[derive(Debug, Clone, Serialize)]
pub struct ParameterCache {
    /// Bytes of parameters read by device nodes.
    pub parameter_bytes: u64,
    /// The cache's size from the profile.
    pub cache_bytes: u64,
    /// Whether they fit (else the rest streams from the host each inference).
    pub fits: bool,
}

/// One output's validation.
#[derive(Debug, Clone, Serialize)]
pub struct OutputCheck {
    /// Output name.
    pub name: String,
    /// SQNR dB (`inf` when identical).
    #[serde(serialize_with = "crate::validate::metrics::finite_or_text")]
    pub sqnr_db: f64,
    /// Cosine similarity.
    #[serde(serialize_with = "crate::validate::metrics::finite_or_text")]
    pub cosine: f64,
    /// Max abs error.
    #[serde(serialize_with = "crate::validate::metrics::finite_or_text")]
    pub max_abs: f64,
    /// Top-1 agreement, where measured.
    pub top1: Option<f64>,
    /// Limits not met (`min_sqnr: 18.2 < 20`) or why it could not be compared.
    pub failures: Vec<String>,
    /// Whether it passed.
    pub passed: bool,
}

/// The validation against the float model in ONNX Runtime.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    /// The file validated (`model.onnx` or `model.sim.onnx`), or the in-memory form.
    pub validated: String,
    /// Why that form.
    pub why: String,
    /// `check-inputs`, `calibration`, or `synthetic held-out`.
    pub on: String,
    /// Samples.
    pub samples: usize,
    /// Every output passed.
    pub passed: bool,
    /// Per output.
    pub outputs: Vec<OutputCheck>,
}

/// Sizes before and after.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    /// The input model, bytes (encoded, weights inline).
    pub before: u64,
    /// `model.onnx`, bytes.
    pub after: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct CompileReport {
    /// The model file's name.
    pub model: String,
    /// The profile's name.
    pub profile: String,
    /// Its family (the target that ran).
    pub target: String,
    /// Files the profile was resolved from.
    pub profile_sources: Vec<String>,
    /// Input shapes fixed for a static-shape target.
    pub fixed_input_shapes: Vec<(String, Vec<i64>)>,
    /// The optimize pipeline's passes.
    pub optimize: Vec<PassSummary>,
    /// The quantizer's report, when the target quantizes.
    pub quantize: Option<QuantizeReport>,
    /// The quantization the model arrived with (op counts), when it was already quantized.
    pub arrived_quantized: Option<String>,
    /// What legalization changed.
    pub legalized: Vec<String>,
    /// Integer graph inputs/outputs.
    pub quantized_io: Vec<QuantizedIo>,
    /// Device / CPU partition.
    pub partition: Partition,
    /// Parameter-cache estimate, when the profile has a cache.
    pub parameter_cache: Option<ParameterCache>,
    /// Model sizes.
    pub size: Sizes,
    /// The validation, unless skipped.
    pub validation: Option<Validation>,
    /// The manifest.
    pub manifest: Manifest,
    /// Things to know.
    pub warnings: Vec<String>,
}

impl CompileReport {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
            + "\n"
    }

    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut o = String::new();
        let p = &self.partition;
        o.push_str(&format!(
            "# kiln compile: {} for {} ({})\n\n",
            self.model, self.profile, self.target
        ));
        o.push_str(&format!(
            "Profile resolved from {}.\n\n",
            self.profile_sources.join(" <- ")
        ));
        if let Some(v) = &self.validation {
            o.push_str(&format!(
                "## Validation: {}\n\n{} validated ({}) on {} {} sample(s).\n\n",
                if v.passed { "PASSED" } else { "FAILED" },
                v.validated,
                v.why,
                v.samples,
                v.on
            ));
            o.push_str("| output | SQNR dB | cosine | max abs | top-1 | result |\n|---|---|---|---|---|---|\n");
            for c in &v.outputs {
                o.push_str(&format!(
                    "| {} | {:.2} | {:.5} | {:.4} | {} | {} |\n",
                    c.name,
                    c.sqnr_db,
                    c.cosine,
                    c.max_abs,
                    c.top1.map_or("-".into(), |t| format!("{t:.3}")),
                    if c.passed {
                        "pass".to_string()
                    } else {
                        format!("FAIL: {}", c.failures.join("; "))
                    }
                ));
            }
            o.push('\n');
        } else {
            o.push_str("## Validation: skipped (--no-validate)\n\n");
        }
        let macs = |c: &super::partition::Coverage| {
            if c.macs_unknown == 0 {
                c.macs.to_string()
            } else {
                format!("{} + {} node(s) unknown", c.macs, c.macs_unknown)
            }
        };
        let mac_share = match p.device_mac_share {
            Some(s) => format!("{:.1} % of MACs", s * 100.0),
            None if p.macs_unknown > 0 => format!(
                "an unknown share of MACs ({} Conv/Gemm/MatMul node(s) with unknown shapes)",
                p.macs_unknown
            ),
            None => "no MACs (no Conv/Gemm/MatMul)".to_string(),
        };
        o.push_str(&format!(
            "## Partition\n\n| | nodes | MACs |\n|---|---|---|\n| device | {} | {} |\n| CPU | {} | {} |\n\n\
             {:.1} % of nodes and {} on the device; {} segment(s) (connected subgraphs on one side), {} on the device, {} transition(s).\n\n",
            p.device.nodes,
            macs(&p.device),
            p.cpu.nodes,
            macs(&p.cpu),
            p.device_node_share * 100.0,
            mac_share,
            p.segments.len(),
            p.device_segments,
            p.transitions
        ));
        if self.target == "edgetpu" && p.device_segments > 1 {
            let first = p
                .segments
                .iter()
                .find(|s| s.on == "device")
                .map_or(0, |s| s.nodes);
            o.push_str(&format!(
                "The Edge TPU compiler is documented to map one TPU subgraph (\"More than one \
                 subgraph is not supported\"): ops after the first fallback may stay on the CPU \
                 too. The first device segment (in topological order) holds {first} of the {} device nodes.\n\n",
                p.device.nodes
            ));
        }
        if !p.separate_activations.is_empty() {
            o.push_str("| node | op | activation | runs as |\n|---|---|---|---|\n");
            for a in &p.separate_activations {
                o.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    a.node,
                    a.op_type,
                    a.activation,
                    a.detail.replace('|', "\\|")
                ));
            }
            o.push('\n');
        }
        if !p.fallbacks.is_empty() {
            o.push_str("| node | op | reason | detail |\n|---|---|---|---|\n");
            for f in &p.fallbacks {
                o.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    f.node,
                    f.op_type,
                    f.reason,
                    f.detail.replace('|', "\\|")
                ));
            }
            o.push('\n');
        }
        if let Some(c) = &self.parameter_cache {
            o.push_str(&format!(
                "Parameters on the device: {} bytes of a {} byte cache ({}).\n\n",
                c.parameter_bytes,
                c.cache_bytes,
                if c.fits {
                    "fits"
                } else {
                    "does not fit: the rest streams from the host"
                }
            ));
        }
        o.push_str(&format!(
            "## Changes\n\nModel size {} -> {} bytes.\n\n",
            self.size.before, self.size.after
        ));
        for pass in &self.optimize {
            if !pass.changes.is_empty() {
                let c: Vec<String> = pass
                    .changes
                    .iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect();
                o.push_str(&format!("- {}: {}\n", pass.pass, c.join(", ")));
            }
        }
        if let Some(q) = &self.quantize {
            o.push_str(&format!(
                "- quantize: {} nodes quantized, {} left in float, {} tensors ({} activations {}, weights {})\n",
                q.quantized_nodes.len(),
                q.skipped.len(),
                q.tensors.len(),
                q.settings.activations,
                if q.settings.symmetric_activations { "symmetric" } else { "asymmetric" },
                q.settings.weights
            ));
            if let Some(m) = &q.mixed_precision {
                let chosen = m.front.get(m.chosen);
                o.push_str(&format!(
                    "- mixed precision: {} of {} layers at 16-bit ({}), output SQNR {} dB on {} {} sample(s), {} points explored{}\n",
                    m.promoted.len(),
                    m.ranking.len(),
                    m.promotion,
                    chosen.map_or("?".to_string(), |p| format!("{:.2}", p.sqnr_db)),
                    m.samples,
                    m.on,
                    m.front.len(),
                    match m.target_sqnr {
                        Some(t) if !m.target_reached => format!("; target {t} dB NOT reached"),
                        Some(t) => format!("; target {t} dB reached"),
                        None => String::new(),
                    }
                ));
            }
        }
        if let Some(ops) = &self.arrived_quantized {
            o.push_str(&format!(
                "- arrived quantized ({ops}): its scales are kept and legalized, not re-calibrated\n"
            ));
        }
        for l in &self.legalized {
            o.push_str(&format!("- legalize: {l}\n"));
        }
        for io in &self.quantized_io {
            o.push_str(&format!(
                "- {} '{}' is {} (scale {}, zero point {})\n",
                io.kind, io.name, io.dtype, io.scale, io.zero_point
            ));
        }
        o.push_str("\n## Manifest\n\n");
        o.push_str(&format!(
            "Kiln {}; profile sha256 {}; calibration {} sha256 {}.\n\n",
            self.manifest.kiln_version,
            self.manifest.profile_sha256,
            self.manifest.calibration,
            self.manifest.calibration_sha256
        ));
        for f in &self.manifest.files {
            o.push_str(&format!(
                "- `{}` {} bytes sha256 `{}`\n",
                f.file, f.bytes, f.sha256
            ));
        }
        if !self.warnings.is_empty() {
            o.push_str("\n## Warnings\n\n");
            for w in &self.warnings {
                o.push_str(&format!("- {w}\n"));
            }
        }
        o
    }
}
