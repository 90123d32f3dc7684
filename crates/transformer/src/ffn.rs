//! The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.

use crate::error::ModelError;
use crate::matmul::Linear;
use crate::ops::swiglu;

/// One dense FFN (a dense layer, or one expert of an MoE layer).
#[derive(Debug, Clone)]
pub(crate) struct FeedForward {
    gate: Linear, // [n_ff, n_embd]
    up: Linear,   // [n_ff, n_embd]
    down: Linear, // [n_embd, n_ff]
}

impl FeedForward {
    pub fn new(gate: Linear, up: Linear, down: Linear) -> FeedForward {
        FeedForward { gate, up, down }
    }

    /// `x [n, n_embd] -> [n, n_embd]`.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>, ModelError> {
        let mut g = self.gate.forward(x)?;
        let u = self.up.forward(x)?;
        swiglu(&mut g, &u);
        self.down.forward(&g)
    }
}
