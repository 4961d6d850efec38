//! What weight-only quantization is asked to do: bits, block size, symmetry, the form it is
//! written in, the method, and which weights.

use std::collections::BTreeSet;
use std::fmt;

use super::awq::AwqOptions;
use super::gptq::GptqOptions;
use super::rtn::{Bits, BlockParams};

/// The block sizes accepted (MatMulNBits takes powers of two from 16; these are the ones
/// ONNX Runtime's tool and the LLM toolchains use).
pub const BLOCK_SIZES: [usize; 3] = [32, 64, 128];

/// How quantized weights are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    /// Standard ONNX: an opset-21 `DequantizeLinear` with `block_size` on an int4/uint4 (or
    /// int8/uint8) initializer, feeding the unchanged float MatMul/Gemm.
    Qdq,
    /// ONNX Runtime's `com.microsoft.MatMulNBits` with its packed layout.
    MatMulNBits,
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightFormat::Qdq => "qdq",
            WeightFormat::MatMulNBits => "matmulnbits",
        })
    }
}

/// How the integers are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightMethod {
    /// Round to nearest, block by block (no data needed).
    Rtn,
    /// GPTQ with the Hessians of calibration inputs ([`Gptq`](super::Gptq)); settings in
    /// [`BlockwiseConfig::gptq`].
    Gptq,
    /// AWQ: per-input-channel scales from the calibration inputs folded into the model, then
    /// a clip search of each block's range ([`awq`](super::awq)); settings in
    /// [`BlockwiseConfig::awq`].
    Awq,
}

impl fmt::Display for WeightMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightMethod::Rtn => "rtn",
            WeightMethod::Gptq => "gptq",
            WeightMethod::Awq => "awq",
        })
    }
}

/// Weight-only block-wise quantization settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockwiseConfig {
    /// 4 or 8 bits per weight.
    pub bits: Bits,
    /// Weights along K that share a scale: one of [`BLOCK_SIZES`].
    pub block_size: usize,
    /// Signed integers, zero point 0 (else unsigned with a zero point per block).
    pub symmetric: bool,
    /// QDQ or MatMulNBits.
    pub format: WeightFormat,
    /// How integers are chosen.
    pub method: WeightMethod,
    /// Node names left in float.
    pub exclude_nodes: BTreeSet<String>,
    /// Quantize the LM head too (a MatMul/Gemm whose output reaches a graph output through
    /// reshapes, transposes, casts or a constant bias only).
    pub lm_head: bool,
    /// Quantize Gather tables (embeddings) too, block-wise along the embedding dim, always in
    /// the QDQ form (`DequantizeLinear` → `Gather`).
    pub embeddings: bool,
    /// GPTQ's settings (read when `method` is [`WeightMethod::Gptq`]).
    pub gptq: GptqOptions,
    /// AWQ's settings (read when `method` is [`WeightMethod::Awq`]).
    pub awq: AwqOptions,
    /// GPTQ/AWQ: collect each stage's statistics on the model with the earlier stages
    /// already quantized, one stage at a time (see [`sequential`](super::sequential)).
    pub sequential: bool,
    /// With `sequential`: each weight's target is the float model's output, not its own
    /// output on the partially quantized model (see
    /// [`corrected_weight`](super::sequential::corrected_weight)).
    pub float_target: bool,
}

impl Default for BlockwiseConfig {
    fn default() -> BlockwiseConfig {
        BlockwiseConfig {
            bits: Bits::Four,
            block_size: 32,
            symmetric: true,
            format: WeightFormat::Qdq,
            method: WeightMethod::Rtn,
            exclude_nodes: BTreeSet::new(),
            lm_head: true,
            embeddings: false,
            gptq: GptqOptions::default(),
            awq: AwqOptions::default(),
            sequential: false,
            float_target: false,
        }
    }
}

/// A setting Kiln refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The block size is not one of [`BLOCK_SIZES`].
    #[error("block size {0} is not supported (expected 32, 64 or 128)")]
    BlockSize(usize),
    /// GPTQ's clip search with act-order (its grids are fixed before any update).
    #[error("the clip search in GPTQ needs K order: it cannot be combined with act-order")]
    ClipWithActOrder,
}

impl BlockwiseConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !BLOCK_SIZES.contains(&self.block_size) {
            return Err(ConfigError::BlockSize(self.block_size));
        }
        let gptq = match self.method {
            WeightMethod::Gptq => Some(self.gptq),
            WeightMethod::Awq => self.awq.gptq.map(|g| GptqOptions {
                clip: self.awq.clip,
                ..g
            }),
            WeightMethod::Rtn => None,
        };
        if gptq.is_some_and(|g| g.clip && g.act_order) {
            return Err(ConfigError::ClipWithActOrder);
        }
        Ok(())
    }

    /// Bits, block size and symmetry as the quantizer takes them.
    pub fn params(&self) -> BlockParams {
        BlockParams {
            bits: self.bits,
            block_size: self.block_size,
            symmetric: self.symmetric,
        }
    }

    /// The default-domain opset the written model needs: 21 when a `DequantizeLinear` with
    /// `block_size` may be written (QDQ form, or embeddings), else none.
    pub fn required_opset(&self) -> Option<i64> {
        (self.format == WeightFormat::Qdq || self.embeddings).then_some(21)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_block_sizes_pass() {
        for bs in BLOCK_SIZES {
            let c = BlockwiseConfig {
                block_size: bs,
                ..Default::default()
            };
            assert_eq!(c.validate(), Ok(()));
        }
        for bs in [0, 16, 48, 256] {
            let c = BlockwiseConfig {
                block_size: bs,
                ..Default::default()
            };
            assert_eq!(c.validate(), Err(ConfigError::BlockSize(bs)));
        }
    }

    #[test]
    fn gptq_clipping_needs_k_order() {
        let mut c = BlockwiseConfig {
            method: WeightMethod::Gptq,
            ..Default::default()
        };
        c.gptq.clip = true;
        assert_eq!(c.validate(), Ok(()));
        c.gptq.act_order = true;
        assert_eq!(c.validate(), Err(ConfigError::ClipWithActOrder));
        c.method = WeightMethod::Rtn;
        assert_eq!(c.validate(), Ok(()));
        // AWQ's own clip flag is GPTQ's there.
        c.method = WeightMethod::Awq;
        c.gptq.clip = false;
        c.awq.gptq = Some(c.gptq);
        assert_eq!(c.validate(), Err(ConfigError::ClipWithActOrder));
        c.awq.clip = false;
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn opset_follows_the_format() {
        let mut c = BlockwiseConfig::default();
        assert_eq!(c.required_opset(), Some(21));
        c.format = WeightFormat::MatMulNBits;
        assert_eq!(c.required_opset(), None);
        c.embeddings = true;
        assert_eq!(c.required_opset(), Some(21));
    }
}
