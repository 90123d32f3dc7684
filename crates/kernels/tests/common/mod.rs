//! Shared helpers of the integration tests.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};

/// Deterministic pseudo-Gaussian data (Box-Muller), with a few outliers like real weights.
pub fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let u1: f32 = rng.random_range(1e-7f32..1.0);
            let u2: f32 = rng.random_range(0.0f32..1.0);
            let g = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos();
            if i % 97 == 5 {
                g * 4.0
            } else {
                g
            }
        })
        .collect()
}

pub fn rmse(a: &[f32], b: &[f32]) -> f64 {
    let s: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    (s / a.len() as f64).sqrt()
}
