//! The one place where activations meet weight matrices. Today every weight is a
//! candle [`QMatMul`]; `--kernels native` (the project's own kernels) will plug in
//! here as another [`Linear`] variant without touching the model code.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Module, Tensor};

use crate::error::ModelError;

/// A weight matrix `W` of shape `[n_out, n_in]`; `forward(x) = x Wᵀ`.
#[derive(Debug, Clone)]
pub struct Linear {
    inner: QMatMul,
    n_out: usize,
    n_in: usize,
}

impl Linear {
    /// Wraps a quantized (or f16/f32) matrix `[n_out, n_in]`.
    pub fn new(q: QTensor) -> Result<Linear, ModelError> {
        Self::from_arc(Arc::new(q))
    }

    /// Shares a matrix with another user (tied embeddings).
    pub fn from_arc(q: Arc<QTensor>) -> Result<Linear, ModelError> {
        let (n_out, n_in) = q.shape().dims2()?;
        Ok(Linear {
            inner: QMatMul::from_arc(q)?,
            n_out,
            n_in,
        })
    }

    /// `x [.., n_in] -> [.., n_out]` (f32 in, f32 out).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.inner.forward(x)?)
    }

    pub fn n_out(&self) -> usize {
        self.n_out
    }

    pub fn n_in(&self) -> usize {
        self.n_in
    }
}
