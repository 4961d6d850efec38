//! Which op types ONNX Runtime 1.31.1's CPU provider can compute in float16 / bfloat16.
//!
//! Passes never call ONNX Runtime, so this is data, measured by
//! `bench/ort_low_float_kernels.py` (onnxruntime 1.31.1 wheel, CPUExecutionProvider, x86-64
//! with AVX-512 FP16; ARM64 builds register more float16 kernels). Each op ran as a one-node
//! model in the form pinning writes (float32 inputs → Cast(low) → op → Cast(float32)), at
//! opset 17 and 21 (Gelu 20/21, GroupNormalization 18/21, RMSNormalization 23), with graph
//! optimizations off, and the model ORT actually ran was saved and read back:
//!
//! - `native`: the op still reads the low-float Casts: a real kernel.
//! - `fallback`: the session runs, but ORT's InsertCastTransformer found no float16 kernel,
//!   computes the op (or its inlined function body) in float32 and drops the
//!   `f32 → f16 → f32` rounding around it — the op is *not* computed in float16.
//! - `fails`: the session cannot be created ("Could not find an implementation"); bfloat16
//!   has no InsertCastTransformer fallback.
//!
//! ```text
//! op                            float16   bfloat16
//! LayerNormalization            native    native
//! Softmax                       fallback  fails     (bf16: no ReduceMax)
//! Gelu                          fallback  fails
//! Sigmoid                       fallback  fails
//! Tanh                          fallback  fails
//! Erf                           fallback  fails
//! Div                           fallback  fails
//! Pow                           fallback  fails
//! ReduceMean                    fallback  fails
//! Sqrt                          fallback  fails
//! MatMul                        fallback  fails
//! Add                           fallback  fails
//! Mul                           fallback  fails
//! InstanceNormalization         fallback  fails
//! GroupNormalization            fallback  fails
//! Exp                           fallback  fails
//! Log                           fallback  fails
//! ReduceSum                     fallback  fails
//! SimplifiedLayerNormalization  native    native    (ONNX Runtime's op, default domain)
//! RMSNormalization              native    fails     (bf16: the function body is inlined, no Mul)
//! ```
//!
//! Both `fallback` and `fails` count as lacking a kernel: the simulated twin (float32
//! between explicit rounding Casts, which ORT keeps at every optimization level) gives the
//! low-float numbers either way. Op types not measured are taken to lack a kernel, since a
//! twin runs wherever float32 does.

use crate::quant::PinFloat;

/// Op types the CPU provider runs natively in float16.
const NATIVE_FLOAT16: &[&str] = &[
    "LayerNormalization",
    "RMSNormalization",
    "SimplifiedLayerNormalization",
];

/// Op types the CPU provider runs natively in bfloat16.
const NATIVE_BFLOAT16: &[&str] = &["LayerNormalization", "SimplifiedLayerNormalization"];

/// Op types ONNX Runtime 1.31.1's CPU provider cannot run in `float` (measured, see the module documentation).
pub fn ort_cpu_lacks_kernel(op_type: &str, float: PinFloat) -> bool {
    let native = match float {
        PinFloat::Float16 => NATIVE_FLOAT16,
        PinFloat::Bfloat16 => NATIVE_BFLOAT16,
    };
    !native.contains(&op_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_runs_in_both_and_softmax_in_neither() {
        for f in [PinFloat::Float16, PinFloat::Bfloat16] {
            assert!(!ort_cpu_lacks_kernel("LayerNormalization", f));
            assert!(ort_cpu_lacks_kernel("Softmax", f));
            assert!(ort_cpu_lacks_kernel("MatMul", f));
            assert!(ort_cpu_lacks_kernel("NotAnOp", f));
            assert!(!ort_cpu_lacks_kernel("SimplifiedLayerNormalization", f));
        }
        assert!(!ort_cpu_lacks_kernel("RMSNormalization", PinFloat::Float16));
        assert!(ort_cpu_lacks_kernel("RMSNormalization", PinFloat::Bfloat16));
    }
}
