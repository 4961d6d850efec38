//! The `--overrides FILE.yaml` file: per-tensor exceptions to the activation scheme.
//!
//! ```yaml
//! tensors:
//!   /encoder/layer.0/Add_output_0:
//!     dtype: uint16        # more bits where 8 lose too much
//!   logits:
//!     symmetric: true
//!     range: [-12.0, 12.0] # fixed, replaces the calibrated range
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use kiln_passes::quant::{QuantType, Range, TensorOverride};
use serde::Deserialize;

use super::error::QuantizeError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tensors: BTreeMap<String, Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    dtype: Option<String>,
    symmetric: Option<bool>,
    range: Option<[f32; 2]>,
}

/// Reads an overrides file into per-tensor overrides.
pub fn read_overrides(path: &Path) -> Result<BTreeMap<String, TensorOverride>, QuantizeError> {
    let text = std::fs::read_to_string(path).map_err(|source| QuantizeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_overrides(&text, &path.display().to_string())
}

/// Parses overrides YAML; `file` names the source in errors.
pub fn parse_overrides(
    text: &str,
    file: &str,
) -> Result<BTreeMap<String, TensorOverride>, QuantizeError> {
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let parsed: File = serde_yaml_ng::from_str(text).map_err(|e| {
        let (line, column, message) = crate::yaml::located(&e);
        QuantizeError::Yaml {
            file: file.to_string(),
            line,
            column,
            message,
        }
    })?;
    let bad = |tensor: &str, reason: String| QuantizeError::Override {
        file: file.to_string(),
        tensor: tensor.to_string(),
        reason,
    };
    let mut out = BTreeMap::new();
    for (name, e) in parsed.tensors {
        let dtype = match &e.dtype {
            Some(d) => Some(d.parse::<QuantType>().map_err(|r| bad(&name, r))?),
            None => None,
        };
        let range = match e.range {
            Some([lo, hi]) if !(lo.is_finite() && hi.is_finite()) || lo > hi => {
                return Err(bad(
                    &name,
                    format!("range [{lo}, {hi}] must be finite with min <= max"),
                ))
            }
            Some([lo, hi]) => Some(Range::new(lo, hi)),
            None => None,
        };
        out.insert(
            name,
            TensorOverride {
                dtype,
                symmetric: e.symmetric,
                range,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_key() {
        let o = parse_overrides(
            "tensors:\n  a:\n    dtype: uint16\n  b:\n    symmetric: true\n    range: [-2, 3.5]\n",
            "o.yaml",
        )
        .unwrap();
        assert_eq!(o["a"].dtype, Some(QuantType::Uint16));
        assert_eq!(o["a"].range, None);
        assert_eq!(o["b"].symmetric, Some(true));
        assert_eq!(o["b"].range, Some(Range::new(-2.0, 3.5)));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = parse_overrides("tensors:\n  a:\n    dtyp: uint16\n", "o.yaml").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("o.yaml:3:"), "{s}");
        assert!(s.contains("dtyp"), "{s}");
        let e = parse_overrides("tensors:\n  a:\n    dtype: int4\n", "o.yaml").unwrap_err();
        assert!(
            e.to_string().contains("'a'") && e.to_string().contains("int4"),
            "{e}"
        );
        let e = parse_overrides("tensors:\n  a:\n    range: [3, 1]\n", "o.yaml").unwrap_err();
        assert!(e.to_string().contains("min <= max"), "{e}");
    }
}
