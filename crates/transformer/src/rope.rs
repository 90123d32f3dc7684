//! Rotary position embedding in the layout llama.cpp's converter writes for the
//! llama architecture: the q/k weights are permuted so that the rotation applies to
//! adjacent pairs `(x[2i], x[2i+1])` of each head ("normal" RoPE), with angle
//! `pos * base^(-2i/head_dim)`.

use rayon::prelude::*;

/// Frequencies of one head dimension.
#[derive(Debug, Clone)]
pub(crate) struct Rope {
    inv_freq: Vec<f32>,
}

/// `cos` and `sin` of every (token, frequency) of one batch, `[n, head_dim / 2]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RopeTables {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTables {
    /// The `cos` and `sin` values, `[n, head_dim / 2]` row-major.
    pub(crate) fn cos_sin(&self) -> (&[f32], &[f32]) {
        (&self.cos, &self.sin)
    }
}

impl Rope {
    pub(crate) fn new(head_dim: usize, base: f32) -> Rope {
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0 / (base as f64).powf(2.0 * i as f64 / head_dim as f64) as f32)
            .collect();
        Rope { inv_freq }
    }

    /// Tables for rotating by `positions` (any signed amount: a context shift
    /// rotates cached keys back by the positions it dropped).
    pub(crate) fn tables(&self, positions: impl Iterator<Item = i64>) -> RopeTables {
        let mut t = RopeTables::default();
        for p in positions {
            for &f in &self.inv_freq {
                // f64 angle: positions can be large with a rolling cache.
                let a = p as f64 * f as f64;
                t.cos.push(a.cos() as f32);
                t.sin.push(a.sin() as f32);
            }
        }
        t
    }

    /// Rotates `x` (`[n, heads * head_dim]`, token `t` by row `t` of the
    /// tables, or by row 0 for every token when the tables hold one row).
    pub(crate) fn apply(&self, x: &mut [f32], heads: usize, t: &RopeTables) {
        let half = self.inv_freq.len();
        let width = heads * 2 * half;
        if width == 0 {
            return;
        }
        let one = t.cos.len() == half;
        let rotate = |(i, row): (usize, &mut [f32])| {
            let at = if one { 0 } else { i * half };
            let (cos, sin) = (&t.cos[at..at + half], &t.sin[at..at + half]);
            for head in row.chunks_exact_mut(2 * half) {
                for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
                    let (x0, x1) = (pair[0], pair[1]);
                    pair[0] = x0 * c - x1 * s;
                    pair[1] = x0 * s + x1 * c;
                }
            }
        };
        if x.len() < 1 << 15 {
            x.chunks_exact_mut(width).enumerate().for_each(rotate);
        } else {
            x.par_chunks_exact_mut(width).enumerate().for_each(rotate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_by_p_then_minus_d_equals_rotation_by_p_minus_d() {
        let rope = Rope::new(8, 10000.0);
        let x: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut a = x.clone();
        rope.apply(&mut a, 1, &rope.tables([100i64, 7].into_iter()));
        rope.apply(&mut a, 1, &rope.tables([-40i64].into_iter()));
        let mut b = x.clone();
        rope.apply(&mut b, 1, &rope.tables([60i64, -33].into_iter()));
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-5, "{a:?} {b:?}");
        }
        // Position 0 is the identity; a pair rotates by pos * inv_freq.
        let mut c = x.clone();
        rope.apply(&mut c, 2, &rope.tables([0i64].into_iter()));
        assert_eq!(c, x);
        let mut d = vec![1.0f32, 0.0];
        Rope::new(2, 10000.0).apply(&mut d, 1, &Rope::new(2, 10000.0).tables([3i64].into_iter()));
        assert!((d[0] - 3f32.cos()).abs() < 1e-6 && (d[1] - 3f32.sin()).abs() < 1e-6);
    }
}
