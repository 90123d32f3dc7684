//! The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.

use crate::error::ModelError;
use crate::matmul::{Linear, Stack};
use crate::ops::swiglu;

/// One dense FFN (a dense layer, or one expert of an MoE layer).
#[derive(Debug, Clone)]
pub(crate) struct FeedForward {
    /// gate and up, `[n_ff, n_embd]` each.
    gate_up: Stack,
    down: Linear, // [n_embd, n_ff]
}

impl FeedForward {
    pub fn new(gate_up: Stack, down: Linear) -> FeedForward {
        FeedForward { gate_up, down }
    }

    /// `x [n, n_embd] -> [n, n_embd]`.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>, ModelError> {
        let mut gu = self.gate_up.forward(x)?.into_iter();
        let (Some(mut g), Some(u)) = (gu.next(), gu.next()) else {
            return Err(ModelError::InvalidInput(
                "gate/up projection lost a part".into(),
            ));
        };
        swiglu(&mut g, &u);
        self.down.forward(&g)
    }
}
