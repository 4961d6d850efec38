//! Kiln's bridge to ONNX Runtime, tensor files, and (later) profiles and targets.
