//! The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.

use candle_core::Tensor;

use crate::error::ModelError;
use crate::matmul::Linear;

/// One dense FFN (a dense layer, or one expert of an MoE layer).
#[derive(Debug, Clone)]
pub struct FeedForward {
    gate: Linear, // [n_ff, n_embd]
    up: Linear,   // [n_ff, n_embd]
    down: Linear, // [n_embd, n_ff]
}

impl FeedForward {
    pub fn new(gate: Linear, up: Linear, down: Linear) -> FeedForward {
        FeedForward { gate, up, down }
    }

    /// `x [n, n_embd] -> [n, n_embd]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let g = self.gate.forward(x)?.silu()?;
        let u = self.up.forward(x)?;
        self.down.forward(&(g * u)?)
    }
}
