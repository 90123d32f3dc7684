//! The element-wise steps of the forward pass on the CPU, over row-major
//! `f32` slices: RMS norm, the residual add and SwiGLU. Large inputs are
//! split by rows over the rayon pool; small ones (decode) run in place on
//! the calling thread, where a fork would cost more than the work.

use mistral_kernels::elementwise::{silu_mul, silu_mul_in_place};
use rayon::prelude::*;

/// Below this many values an op runs on the calling thread.
const PAR_MIN: usize = 1 << 15;

/// `out[r] = x[r] / sqrt(mean(x[r]²) + eps) * w` for every row `r` of `x`
/// (rows of `w.len()` values).
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    let row = |(x, o): (&[f32], &mut [f32])| {
        let ss = mean_square(x);
        let scale = 1.0 / (ss + eps).sqrt();
        for ((o, &v), &g) in o.iter_mut().zip(x).zip(w) {
            *o = v * scale * g;
        }
    };
    if x.len() < PAR_MIN {
        x.chunks_exact(d).zip(out.chunks_exact_mut(d)).for_each(row);
    } else {
        x.par_chunks_exact(d)
            .zip(out.par_chunks_exact_mut(d))
            .for_each(row);
    }
}

/// The mean of `v²`, as llama.cpp's `rms_norm` takes it: each square in
/// f32, summed and divided in f64 (`ggml_float`), rounded to f32 at the
/// end. The f64 sum runs in 8 lanes (one chain of dependent adds took most
/// of the norm's time; in f64 the order hardly matters).
fn mean_square(x: &[f32]) -> f32 {
    const L: usize = 8;
    let mut acc = [0f64; L];
    let chunks = x.chunks_exact(L);
    let tail: f64 = chunks.remainder().iter().map(|&v| (v * v) as f64).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += (v * v) as f64;
        }
    }
    ((acc.iter().sum::<f64>() + tail) / x.len().max(1) as f64) as f32
}

/// `x += y`.
pub(crate) fn add_assign(x: &mut [f32], y: &[f32]) {
    let add = |(a, b): (&mut [f32], &[f32])| {
        for (a, b) in a.iter_mut().zip(b) {
            *a += b;
        }
    };
    if x.len() < PAR_MIN {
        add((x, y));
    } else {
        x.par_chunks_mut(PAR_MIN / 4)
            .zip(y.par_chunks(PAR_MIN / 4))
            .for_each(add);
    }
}

/// `gate = silu(gate) * up` (SwiGLU), with `silu(g) = g / (1 + exp(-g))`.
pub(crate) fn swiglu(gate: &mut [f32], up: &[f32]) {
    let f = |(g, u): (&mut [f32], &[f32])| silu_mul_in_place(g, u);
    if gate.len() < PAR_MIN {
        f((gate, up));
    } else {
        gate.par_chunks_mut(PAR_MIN / 4)
            .zip(up.par_chunks(PAR_MIN / 4))
            .for_each(f);
    }
}

/// SwiGLU of a stacked gate/up product, in place: `gu` holds rows
/// `[gate | up]` of `2 ff` values; afterwards its first `n · ff` values are
/// the rows `silu(gate) * up` (the caller truncates), so no second buffer
/// is needed. Row `r`'s result lands on `[r ff, (r + 1) ff)`, inside rows
/// before `r` (done already) or, for row 0, on its own gate, value for
/// value: rows run in waves `[a, 2a)`, whose results `[a ff, 2a ff)` and
/// inputs `[2a ff, 4a ff)` are disjoint, each wave in parallel.
pub(crate) fn swiglu_stacked(gu: &mut [f32], ff: usize) {
    let n = gu.len() / (2 * ff).max(1);
    let f = |o: &mut [f32], gate: &[f32], up: &[f32]| silu_mul(o, gate, up);
    if n == 0 {
        return;
    }
    // Row 0 in place: value j of the result replaces value j of the gate.
    {
        let (gate, up) = gu[..2 * ff].split_at_mut(ff);
        if ff < PAR_MIN {
            silu_mul_in_place(gate, up);
        } else {
            gate.par_chunks_mut(PAR_MIN / 4)
                .zip(up.par_chunks(PAR_MIN / 4))
                .for_each(|(g, u)| silu_mul_in_place(g, u));
        }
    }
    let mut a = 1;
    while a < n {
        let b = (2 * a).min(n);
        let (lo, hi) = gu.split_at_mut(2 * a * ff);
        let out = &mut lo[a * ff..b * ff];
        let inp = &hi[..(b - a) * 2 * ff];
        let rows = out.chunks_exact_mut(ff).zip(inp.chunks_exact(2 * ff));
        if (b - a) * ff < PAR_MIN {
            rows.for_each(|(o, g)| f(o, &g[..ff], &g[ff..]));
        } else if b - a >= rayon::current_num_threads() {
            out.par_chunks_exact_mut(ff)
                .zip(inp.par_chunks_exact(2 * ff))
                .for_each(|(o, g)| f(o, &g[..ff], &g[ff..]));
        } else {
            // Few long rows: split each row by columns.
            for (o, g) in rows {
                let (gate, up) = g.split_at(ff);
                o.par_chunks_mut(PAR_MIN / 4)
                    .zip(gate.par_chunks(PAR_MIN / 4).zip(up.par_chunks(PAR_MIN / 4)))
                    .for_each(|(o, (g, u))| f(o, g, u));
            }
        }
        a = b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swiglu_stacked_is_swiglu_of_the_halves_on_every_path() {
        // One short row (calling thread), long rows (split by columns),
        // many rows (split by rows), row counts that end mid-wave.
        for (rows, ff) in [
            (1usize, 96usize),
            (1, 40_000),
            (3, 40_000),
            (2, 8),
            (77, 1024),
            (5, 24),
        ] {
            let gu: Vec<f32> = (0..rows * 2 * ff)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 9.0)
                .collect();
            let mut got = gu.clone();
            swiglu_stacked(&mut got, ff);
            for r in 0..rows {
                for j in 0..ff {
                    let (g, u) = (gu[r * 2 * ff + j] as f64, gu[r * 2 * ff + ff + j] as f64);
                    let want = g / (1.0 + (-g).exp()) * u;
                    let e = (got[r * ff + j] as f64 - want).abs();
                    assert!(
                        e <= 1e-5 * want.abs().max(1.0),
                        "{rows} x {ff} [{r}, {j}]: {} vs {want}",
                        got[r * ff + j]
                    );
                }
            }
        }
    }

    #[test]
    fn rms_norm_matches_the_formula_on_both_paths() {
        for (rows, d) in [(3usize, 256usize), (200, 256), (5, 100)] {
            let x: Vec<f32> = (0..rows * d)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let w: Vec<f32> = (0..d).map(|i| 0.5 + i as f32 / d as f32).collect();
            let mut out = vec![0.0; x.len()];
            rms_norm(&x, &w, 1e-5, &mut out);
            for r in 0..rows {
                let xr = &x[r * d..(r + 1) * d];
                let ms: f64 = xr.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d as f64;
                for i in 0..d {
                    let want = xr[i] as f64 / (ms + 1e-5).sqrt() * w[i] as f64;
                    assert!((out[r * d + i] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()));
                }
            }
        }
    }

    #[test]
    fn swiglu_and_add_match_the_formulas() {
        for n in [10usize, 100_000] {
            let g: Vec<f32> = (0..n).map(|i| (i % 13) as f32 - 6.0).collect();
            let u: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.25).collect();
            let mut s = g.clone();
            swiglu(&mut s, &u);
            let mut a = g.clone();
            add_assign(&mut a, &u);
            for i in 0..n {
                let want = g[i] as f64 / (1.0 + (-g[i] as f64).exp()) * u[i] as f64;
                assert!(
                    (s[i] as f64 - want).abs() < 1e-6 * (1.0 + want.abs()),
                    "{i}"
                );
                assert_eq!(a[i], g[i] + u[i]);
            }
        }
    }
}
