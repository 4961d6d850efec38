//! Hardware profiles: what one device needs from a compiled model, in a YAML file.
//!
//! A profile names its target family, how activations, weights and biases are quantized, how
//! ranges are calibrated, which ops are pinned to a 16-bit float, which fusions run, which ops
//! the device runs (with their limits) and what happens to the others, shape and I/O rules,
//! and the validation thresholds. Built-ins (`edgetpu`, `hexagon`, `ane`, `ane-fp16`, `neon`)
//! are embedded from `backends/profiles/`; a user's file may `extends:` one and change a few
//! keys. Loading resolves the chain, merges it key by key (`resolve.rs`) and checks the result
//! (`check.rs`); every problem is one [`ProfileError`] naming the file, line, column and key.
//!
//! ```no_run
//! let loaded = kiln_backends::profile::load("hexagon").unwrap();
//! let config = loaded.profile.quant_config();
//! assert!(loaded.profile.weight_per_channel("Conv"));
//! # let _ = config;
//! ```

mod access;
mod builtin;
mod check;
mod error;
mod locate;
mod names;
mod onnx_ops;
mod resolve;
mod schema;

use std::path::Path;

pub use access::{dtype_of, quant_type, DEFAULT_PERCENTILE};
pub use error::{Location, ProfileError, ProfileWarning};
pub use locate::{locate, KeyPath, Seg};
pub use names::{closest_op, fusion_names, is_known_op};
pub use schema::{
    ActivationQuant, BiasQuant, Calibration, CalibrationMethod, CpuFeature, Dtype, Family,
    FixedParams, FloatType, Granularity, Io, IoHandling, Memory, MixedPrecision, OpConstraints,
    Ops, Optimize, Precision, Profile, QdqDomain, Quantization, Shapes, UnsupportedPolicy,
    Validation, WeightFormat, WeightMethod, WeightOverride, WeightQuant,
};

use names::{closest, did_you_mean};
use resolve::Layer;

/// A resolved, checked profile, with the files it came from and what the check noticed.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedProfile {
    /// The profile, every key filled in.
    pub profile: Profile,
    /// The files merged, most derived first (`builtin:NAME` for built-ins).
    pub sources: Vec<String>,
    /// Allowed but odd settings.
    pub warnings: Vec<ProfileWarning>,
}

impl LoadedProfile {
    /// The resolved profile as a YAML file with a header naming its sources; parsing it gives
    /// the same profile back.
    pub fn to_yaml(&self) -> String {
        // The header is a comment: a name or path with a line break must not end it.
        format!(
            "# Profile '{}' ({}), resolved from {}.\n# Every key is written out: this file \
             stands alone and parses back to the same profile.\n{}",
            error::one_line(&self.profile.name),
            self.profile.family.name(),
            error::one_line(&self.sources.join(" <- ")),
            self.profile.to_yaml()
        )
    }
}

/// The built-in profile names, sorted.
pub fn builtin_names() -> Vec<&'static str> {
    builtin::names().collect()
}

/// Loads `name_or_file`: a built-in name, else a file.
pub fn load(name_or_file: &str) -> Result<LoadedProfile, ProfileError> {
    if let Some(layer) = Layer::builtin(name_or_file) {
        return finish(layer?);
    }
    let path = Path::new(name_or_file);
    let looks_like_file =
        path.exists() || name_or_file.contains(['/', '\\', '.']) || path.extension().is_some();
    if looks_like_file {
        return load_file(path);
    }
    Err(ProfileError::UnknownName {
        name: error::one_line(name_or_file),
        known: builtin_names().join(", "),
        hint: did_you_mean(closest(name_or_file, builtin::names())),
    })
}

/// Loads a profile file; relative `extends` paths start from its folder.
pub fn load_file(path: &Path) -> Result<LoadedProfile, ProfileError> {
    finish(Layer::file(path)?)
}

/// Parses profile text that is not a file (`file` names it in errors); it may extend built-ins
/// only, so nothing outside is read.
pub fn parse(text: &str, file: &str) -> Result<LoadedProfile, ProfileError> {
    finish(Layer::text(text, file)?)
}

fn finish(leaf: Layer) -> Result<LoadedProfile, ProfileError> {
    let (profile, sources) = resolve::resolve(leaf)?;
    let warnings = check::check(&profile, &sources)?;
    Ok(LoadedProfile {
        profile,
        sources: sources.files(),
        warnings,
    })
}

/// A commented starting file for a profile that extends `parent` (a built-in name or a file):
/// every inherited key is shown commented out, ready to uncomment and change.
pub fn starter(parent: &str) -> Result<String, ProfileError> {
    let base = load(parent)?;
    let stem = Path::new(parent)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| parent.to_string());
    let mut out = format!(
        "# A Kiln hardware profile. Every key is optional: what you leave out comes from\n\
         # '{shown}', whose values are below, commented out. Uncomment and change what your\n\
         # device needs; a mapping merges key by key, a list replaces the inherited one,\n\
         # `null` unsets, and `ops: {{drop: [Op]}}` removes inherited ops.\n\
         #\n\
         # Values: family edgetpu | hexagon | ane | neon | cpu\n\
         #   dtype uint8 | int8 | uint16 | int16 | float16 | bfloat16 | float32 (bias: int32 or a float;\n\
         #     weights also int4 | uint4, per-block only)\n\
         #   granularity per-tensor | per-channel | per-block;  calibration.method minmax | percentile | entropy | mse\n\
         #   ops.unsupported fallback | error;  io.inputs / io.outputs float | quantize\n\
         #   cpu_features dotprod | i8mm | fp16 | bf16;  optimize.fusions: {}\n\
         #\n\
         # Weight-only (activations stay in precision.compute): quantization.weight_only: true, or a\n\
         # float quantization.activations.dtype. Block-wise weights (weight-only; neon and ane) take\n\
         # quantization.weights with granularity: per-block and\n\
         #   dtype       int4 | int8 (symmetric: true) or uint4 | uint8 (symmetric: false, a zero point per block)\n\
         #   block_size  32 | 64 | 128 weights along K per scale (default 32)\n\
         #   format      qdq (DequantizeLinear with block_size, opset 21) | matmulnbits (ONNX Runtime's\n\
         #               com.microsoft.MatMulNBits; neon and cpu only)\n\
         #   method      rtn (round to nearest) | awq (activation-aware scales folded into the model and\n\
         #               an output-error clip search per block) | gptq (GPTQ with its clip search);\n\
         #               awq and gptq use the calibration data\n\
         #   lm_head     true | false: the MatMul/Gemm feeding a graph output too\n\
         #   embeddings  true | false: Gather embedding tables too (always qdq)\n\
         #   sequential  true | false: with awq or gptq, the integers chosen stage by stage, each on statistics\n\
         #               of the model with the earlier stages quantized\n\
         #   float_target true | false: with sequential, each weight aims at the float model's output\n\
         #   min_elements N: smaller weights stay float\n\
         #\n\
         # Mixed precision: quantization.mixed_precision: {{target_sqnr: DB, max_16bit_share: S}} keeps\n\
         # the most sensitive layers at 16-bit (16-bit activations and int16 weights; float16 weights\n\
         # when per-block) until the output SQNR reaches DB, with at most the share S (0..1) of the\n\
         # weights at 16-bit.\n\
         #\n\
         # Check it:        kiln profile check FILE\n\
         # See the result:  kiln profile show FILE\n\
         name: {name}\n\
         extends: {extends}\n\n",
        fusion_names().join(", "),
        shown = error::one_line(parent),
        name = yaml_scalar(&format!("my-{stem}")),
        extends = yaml_scalar(parent),
    );
    for line in base.profile.to_yaml().lines() {
        if line.starts_with("name:") {
            continue;
        }
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// `s` as a YAML scalar, quoted when it needs to be.
fn yaml_scalar(s: &str) -> String {
    serde_yaml_ng::to_string(s)
        .map(|t| t.trim_end().to_string())
        .unwrap_or_else(|_| format!("{s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_loads_checks_and_round_trips_through_show() {
        for name in builtin_names() {
            let loaded = load(name).unwrap();
            assert_eq!(loaded.profile.name, name);
            assert!(!loaded.profile.description.is_empty(), "{name}");
            let deliberate = builtin::DELIBERATE_WARNINGS
                .iter()
                .filter(|(n, _)| *n == name);
            assert_eq!(
                loaded.warnings.len(),
                deliberate.count(),
                "{name}: {:?}",
                loaded.warnings
            );
            let shown = loaded.to_yaml();
            let again = parse(&shown, "shown.yaml").unwrap();
            assert_eq!(again.profile, loaded.profile, "{name}:\n{shown}");
        }
    }

    #[test]
    fn show_header_stays_a_comment_whatever_the_name() {
        let loaded = parse("extends: neon\nname: \"two\\nlines\\r\"\n", "odd.yaml").unwrap();
        let shown = loaded.to_yaml();
        assert!(
            shown.starts_with("# Profile 'two\\nlines\\r' (neon)"),
            "{shown}"
        );
        assert_eq!(parse(&shown, "shown.yaml").unwrap().profile, loaded.profile);
    }

    #[test]
    fn ane_fp16_extends_ane() {
        let p = load("ane-fp16").unwrap();
        assert_eq!(p.sources, ["builtin:ane-fp16", "builtin:ane"]);
        assert_eq!(p.profile.family, Family::Ane);
    }

    #[test]
    fn int4_profiles_extend_their_family() {
        for (name, parent) in [("neon-int4", "neon"), ("ane-int4", "ane")] {
            let p = load(name).unwrap();
            assert_eq!(
                p.sources,
                [format!("builtin:{name}"), format!("builtin:{parent}")]
            );
            assert_eq!(p.profile.family, load(parent).unwrap().profile.family);
            assert!(p.profile.blockwise_config().is_some(), "{name}");
        }
        // An int8 weight-only variant is one key away.
        let p = parse(
            "extends: neon-int4\nquantization: {weights: {dtype: int8}}\n",
            "int8.yaml",
        )
        .unwrap();
        let c = p.profile.blockwise_config().unwrap();
        assert_eq!(c.bits, kiln_passes::quant::blockwise::Bits::Eight);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn user_profile_extending_hexagon_with_uint16() {
        let text =
            "name: hexagon16\nextends: hexagon\nquantization:\n  activations:\n    dtype: uint16\n";
        let p = parse(text, "hexagon16.yaml").unwrap();
        let c = p.profile.quant_config();
        assert_eq!(c.activations.dtype, kiln_passes::quant::QuantType::Uint16);
        assert_eq!(c.weights.scheme.dtype, kiln_passes::quant::QuantType::Int8);
        assert!(p.profile.weight_per_channel("Conv"));
        assert_eq!(p.profile.quantization.min_real_range, Some(1e-4));
        assert!(p.profile.contrib_qdq(13));
    }

    #[test]
    fn unknown_names_suggest_a_builtin() {
        let e = load("hexagn").unwrap_err().to_string();
        assert!(e.starts_with("no profile named 'hexagn'"), "{e}");
        assert!(e.contains("did you mean 'hexagon'?"), "{e}");
        let e = load("missing/profile.yaml").unwrap_err().to_string();
        assert!(e.starts_with("missing/profile.yaml: cannot read: "), "{e}");
    }

    #[test]
    fn starter_quotes_a_parent_path_that_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a: b #c.yaml");
        std::fs::write(&path, "extends: neon\n").unwrap();
        let parent = path.display().to_string();
        let text = starter(&parent).unwrap();
        let mine = dir.path().join("mine.yaml");
        std::fs::write(&mine, &text).unwrap();
        let p = load_file(&mine).unwrap();
        assert_eq!(p.sources.len(), 3, "{text}");
        assert_eq!(p.profile.name, "my-a: b #c");
    }

    #[test]
    fn starter_files_resolve_to_their_parent() {
        for name in builtin_names() {
            let text = starter(name).unwrap();
            let p = parse(&text, "mine.yaml").unwrap();
            let mut parent = load(name).unwrap().profile;
            parent.name = format!("my-{name}");
            assert_eq!(p.profile, parent, "{text}");
            // Uncommenting the inherited block gives the parent itself.
            let (_, block) = text.split_once(&format!("extends: {name}\n\n")).unwrap();
            let uncommented: String = block
                .lines()
                .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
                .collect();
            let q = parse(&uncommented, &format!("{name}.yaml")).unwrap();
            assert_eq!(q.profile, load(name).unwrap().profile, "{uncommented}");
        }
    }
}
