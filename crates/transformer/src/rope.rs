//! Rotary position embedding in the layout llama.cpp's converter writes for the
//! llama architecture: the q/k weights are permuted so that the rotation applies to
//! adjacent pairs `(x[2i], x[2i+1])` of each head ("normal" RoPE, candle's `rope_i`),
//! with angle `pos * base^(-2i/head_dim)`.

use candle_core::{Device, Tensor};

use crate::error::ModelError;

/// Frequencies of one head dimension.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(head_dim: usize, base: f32) -> Rope {
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0 / (base as f64).powf(2.0 * i as f64 / head_dim as f64) as f32)
            .collect();
        Rope { inv_freq }
    }

    /// `cos` and `sin` tables `[n, head_dim / 2]` for positions `start..start + n`.
    /// Computed per call (n·head_dim/2 values), so positions are unbounded.
    pub fn tables(
        &self,
        start: usize,
        n: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor), ModelError> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in start..start + n {
            for &f in &self.inv_freq {
                // f64 angle: positions can be large with a rolling cache.
                let a = p as f64 * f as f64;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Ok((
            Tensor::from_vec(cos, (n, half), device)?,
            Tensor::from_vec(sin, (n, half), device)?,
        ))
    }
}

/// Rotates `x [heads, n, head_dim]` (contiguous) at the positions of the tables.
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor, ModelError> {
    let x = x.unsqueeze(0)?;
    Ok(candle_nn::rotary_emb::rope_i(&x, cos, sin)?.squeeze(0)?)
}
