//! What the user asked quantization to do: types, granularity, which ops, overrides, pinning.

use std::collections::{BTreeMap, BTreeSet};

use super::ranges::Range;
use super::scheme::{QuantScheme, QuantType};

/// How weights (constant inputs of Conv, ConvTranspose, Gemm, MatMul, Gather) are quantized.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightConfig {
    /// Element type and symmetry; symmetric int8 by default.
    pub scheme: QuantScheme,
    /// One scale per output channel (the axis the op implies) instead of one per tensor.
    pub per_channel: bool,
    /// Per-op-type exceptions to `per_channel` (QNN: per-channel on Conv only).
    pub per_op: BTreeMap<String, bool>,
}

impl Default for WeightConfig {
    fn default() -> WeightConfig {
        WeightConfig {
            scheme: QuantScheme::new(QuantType::Int8, true),
            per_channel: true,
            per_op: BTreeMap::new(),
        }
    }
}

impl WeightConfig {
    /// Whether the weights of an `op_type` node are quantized per channel.
    pub fn per_channel_for(&self, op_type: &str) -> bool {
        self.per_op
            .get(op_type)
            .copied()
            .unwrap_or(self.per_channel)
    }

    /// Whether any op's weights are quantized per channel.
    pub fn any_per_channel(&self) -> bool {
        self.per_channel || self.per_op.values().any(|&v| v)
    }
}

/// A per-tensor exception to the activation scheme, from the overrides file.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TensorOverride {
    /// Element type instead of the activation type (e.g. uint16 where 8 bits lose too much).
    pub dtype: Option<QuantType>,
    /// Symmetric or not, instead of the activation setting.
    pub symmetric: Option<bool>,
    /// A fixed range that replaces the calibrated one.
    pub range: Option<Range>,
}

/// The float type pinned ops compute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinFloat {
    /// IEEE half.
    Float16,
    /// bfloat16.
    Bfloat16,
}

/// Which domain the Q/DQ nodes of a model take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QdqDomainRule {
    /// The standard ops; 16-bit types need opset 21, so the model is raised to it.
    #[default]
    Standard,
    /// `com.microsoft` Q/DQ when a 16-bit type is used below opset 21 (ONNX Runtime's
    /// `UseQDQContribOps`), the standard ones otherwise.
    Auto,
    /// Always `com.microsoft`.
    Microsoft,
}

/// Everything quantization needs besides the model and the ranges.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantConfig {
    /// Activation scheme; asymmetric uint8 by default.
    pub activations: QuantScheme,
    /// Weight scheme and granularity.
    pub weights: WeightConfig,
    /// Op types to quantize; `None` means the default set.
    pub op_types: Option<BTreeSet<String>>,
    /// When set, only these nodes are quantized (per-layer sensitivity quantizes one at a time).
    pub only_nodes: Option<BTreeSet<String>>,
    /// Node names left in float.
    pub exclude_nodes: BTreeSet<String>,
    /// Op types left in float.
    pub exclude_op_types: BTreeSet<String>,
    /// Per-tensor exceptions, by tensor name.
    pub overrides: BTreeMap<String, TensorOverride>,
    /// Op types computed in a 16-bit float instead of being quantized (empty: none).
    pub pin_ops: BTreeSet<String>,
    /// The float type pinned ops compute in.
    pub pin_float: PinFloat,
    /// Smallest real range a scale may cover (targets like QNN need one); `None`: any.
    pub min_real_range: Option<f32>,
    /// The domain of the Q/DQ written.
    pub qdq_domain: QdqDomainRule,
}

impl Default for QuantConfig {
    fn default() -> QuantConfig {
        QuantConfig {
            activations: QuantScheme::new(QuantType::Uint8, false),
            weights: WeightConfig::default(),
            op_types: None,
            only_nodes: None,
            exclude_nodes: BTreeSet::new(),
            exclude_op_types: BTreeSet::new(),
            overrides: BTreeMap::new(),
            pin_ops: ["LayerNormalization", "Softmax"]
                .into_iter()
                .map(String::from)
                .collect(),
            pin_float: PinFloat::Float16,
            min_real_range: None,
            qdq_domain: QdqDomainRule::Standard,
        }
    }
}

impl QuantConfig {
    /// The scheme for activation tensor `name`, after overrides.
    pub fn activation_scheme(&self, name: &str) -> QuantScheme {
        let mut s = self.activations;
        if let Some(o) = self.overrides.get(name) {
            if let Some(d) = o.dtype {
                s.dtype = d;
            }
            if let Some(sym) = o.symmetric {
                s.symmetric = sym;
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_change_only_what_they_name() {
        let mut c = QuantConfig::default();
        c.overrides.insert(
            "x".into(),
            TensorOverride {
                dtype: Some(QuantType::Uint16),
                ..Default::default()
            },
        );
        assert_eq!(c.activation_scheme("x").dtype, QuantType::Uint16);
        assert!(!c.activation_scheme("x").symmetric);
        assert_eq!(c.activation_scheme("y").dtype, QuantType::Uint8);
    }
}
