//! The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.

use crate::error::ModelError;
use crate::matmul::{Linear, Stack};
use crate::ops::{swiglu, swiglu_stacked};

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

    /// `x [n, n_embd] -> out [n, n_embd]`.
    pub fn forward(
        &self,
        x: &[f32],
        s: &mut FfnScratch,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        match &self.gate_up {
            // Gate and up stacked: SwiGLU in place in the product, which
            // the down projection then reads (no gate and up copies).
            Stack::One { m, parts } if parts.len() == 2 && parts[0] == parts[1] => {
                m.forward_into(x, &mut s.tmp)?;
                swiglu_stacked(&mut s.tmp, parts[0]);
                let n = s.tmp.len() / (2 * parts[0]).max(1);
                s.tmp.truncate(n * parts[0]);
                self.down.forward_into(&s.tmp, out)
            }
            _ => {
                self.gate_up
                    .forward_into(x, &mut s.tmp, &mut [&mut s.gate, &mut s.up])?;
                swiglu(&mut s.gate, &s.up);
                self.down.forward_into(&s.gate, out)
            }
        }
    }
}

/// Buffers of a feed-forward pass, reused from layer to layer.
#[derive(Debug, Default)]
pub(crate) struct FfnScratch {
    tmp: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}
