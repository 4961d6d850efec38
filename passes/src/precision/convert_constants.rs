//! Converting float32 constants and tensor attributes of a pinned op: to the low float for a
//! pinned op, or rounded through it (and kept float32) for a simulated twin.
//!
//! The conversion is the constant evaluator's `Cast`, so a constant converted here holds
//! exactly what a `Cast` node would give at run time (round to nearest even, as ONNX Runtime).

use crate::eval;
use crate::ir::{AttrValue, Attribute, Node};
use crate::pipeline::PassError;
use crate::tensor::{DataType, Tensor};

/// Converted attributes by position, or the name of one that would overflow.
pub(crate) type AttrConversion = Result<Vec<(usize, AttrValue)>, String>;

/// How a pinned op's float32 constants change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conversion {
    /// Stored in the low float (the op computes in it).
    ToLow(DataType),
    /// Rounded to the low float and stored back in float32 (the simulated twin).
    RoundedThrough(DataType),
}

impl Conversion {
    /// The converted tensor (float32 tensors only; others are returned unchanged).
    pub(crate) fn apply(self, t: &Tensor) -> Result<Tensor, PassError> {
        if t.dtype() != DataType::Float {
            return Ok(t.clone());
        }
        match self {
            Conversion::ToLow(low) => cast(t, low),
            Conversion::RoundedThrough(low) => cast(&cast(t, low)?, DataType::Float),
        }
    }

    /// The low float.
    pub(crate) fn low(self) -> DataType {
        match self {
            Conversion::ToLow(low) | Conversion::RoundedThrough(low) => low,
        }
    }
}

/// `Cast(t, to)` by the constant evaluator.
fn cast(t: &Tensor, to: DataType) -> Result<Tensor, PassError> {
    let attrs = [Attribute::new("to", AttrValue::Int(i64::from(to.onnx())))];
    let out = eval::evaluate("Cast", "", 19, &attrs, &[Some(t)])
        .map_err(|e| PassError::Unsupported(format!("converting a constant to {to}: {e}")))?;
    out.and_then(|v| v.into_iter().next()).ok_or_else(|| {
        PassError::Unsupported(format!("converting a {} constant to {to}", t.dtype()))
    })
}

/// True when some finite value of `original` became infinite in `converted` (beyond the
/// low float's range: 65504 for float16).
pub(crate) fn overflows(original: &Tensor, converted: &Tensor) -> bool {
    match (original.to_f64_vec(), converted.to_f64_vec()) {
        (Some(a), Some(b)) => a
            .iter()
            .zip(&b)
            .any(|(x, y)| x.is_finite() && !y.is_finite()),
        _ => false,
    }
}

/// The float32 tensor attributes of `node` that change, converted, by attribute position;
/// `Err(name)` (inside) when attribute `name` would overflow the low float.
pub(crate) fn converted_attributes(
    node: &Node,
    conv: Conversion,
) -> Result<AttrConversion, PassError> {
    let mut out = Vec::new();
    for (i, a) in node.attributes.iter().enumerate() {
        let value = match &a.value {
            AttrValue::Tensor(t) if t.dtype() == DataType::Float => {
                let c = conv.apply(t)?;
                if overflows(t, &c) {
                    return Ok(Err(a.name.clone()));
                }
                AttrValue::Tensor(c)
            }
            AttrValue::Tensors(ts) if ts.iter().any(|t| t.dtype() == DataType::Float) => {
                let mut v = Vec::with_capacity(ts.len());
                for t in ts {
                    let c = conv.apply(t)?;
                    if overflows(t, &c) {
                        return Ok(Err(a.name.clone()));
                    }
                    v.push(c);
                }
                AttrValue::Tensors(v)
            }
            _ => continue,
        };
        if value != a.value {
            out.push((i, value));
        }
    }
    Ok(Ok(out))
}
