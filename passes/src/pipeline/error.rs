//! Errors a pass can return.

use thiserror::Error;

use crate::ir::IrError;
use crate::tensor::TensorError;

/// Why a pass failed. A pass that cannot prove a rewrite safe skips it; errors are for
/// models that are malformed in a way the pass cannot work around.
#[derive(Debug, Error)]
pub enum PassError {
    /// The pass left the graph invalid (a bug in the pass, caught by verification).
    #[error("pass '{pass}' left an invalid graph: {source}")]
    Broke {
        /// The pass.
        pass: &'static str,
        /// What verification found.
        source: IrError,
    },
    /// The graph is malformed.
    #[error(transparent)]
    Ir(#[from] IrError),
    /// A tensor the pass had to read is malformed.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// The model uses something the pass cannot handle, and it cannot be skipped.
    #[error("{0}")]
    Unsupported(String),
}
