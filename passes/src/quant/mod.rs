//! Quantization: the numeric rules (schemes, scales, zero points), the ranges calibration
//! produces, and the passes that rewrite a float model into QDQ form.
//!
//! Calibration itself runs the model, so it lives in `kiln-backends`; it hands this module
//! plain [`Ranges`]. Everything here is pure and testable on hand-built graphs.

pub mod bias_correction;
pub mod blockwise;
mod bodies;
pub mod config;
pub mod dynamic;
pub mod legalize;
pub mod qdq;
pub mod ranges;
pub mod scheme;
pub mod weights;

pub use config::{PinFloat, QdqDomainRule, QuantConfig, TensorOverride, WeightConfig};
pub use ranges::{Range, Ranges};
pub use scheme::{QuantParams, QuantScheme, QuantType};
