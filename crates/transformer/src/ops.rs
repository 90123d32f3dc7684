//! The element-wise steps of the forward pass on the CPU, over row-major
//! `f32` slices: RMS norm, the residual add and SwiGLU. Large inputs are
//! split by rows over the rayon pool; small ones (decode) run in place on
//! the calling thread, where a fork would cost more than the work.

use rayon::prelude::*;

/// Below this many values an op runs on the calling thread.
const PAR_MIN: usize = 1 << 15;

/// `out[r] = x[r] / sqrt(mean(x[r]²) + eps) * w` for every row `r` of `x`
/// (rows of `w.len()` values).
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    let row = |(x, o): (&[f32], &mut [f32])| {
        let ss = sum_squares(x) / d as f32;
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

/// `Σ v²`, summed in f64 (as llama.cpp's `ggml_float`) in 8 running sums:
/// one chain of dependent f32 adds took most of the norm's time; 8
/// independent ones vectorize, and f64 keeps the order from mattering.
fn sum_squares(x: &[f32]) -> f32 {
    const L: usize = 8;
    let mut acc = [0f64; L];
    let chunks = x.chunks_exact(L);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| v as f64 * v as f64)
        .sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v as f64 * v as f64;
        }
    }
    (acc.iter().sum::<f64>() + tail) as f32
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

/// `e^x`, to within 2e-7 relative for `x` in `[-87, 88]` (clamped
/// outside): `2^n · p(f)` with `x = n·ln 2 + f`, `|f| ≤ ln 2 / 2`, and `p`
/// the degree-7 Taylor polynomial. Branch-free, so loops over it
/// vectorize (libm's `expf` is a call per value).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let f = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + f * (1.0
            + f * (1.0 / 2.0
                + f * (1.0 / 6.0
                    + f * (1.0 / 24.0
                        + f * (1.0 / 120.0 + f * (1.0 / 720.0 + f * (1.0 / 5040.0)))))));
    // n is in [-126, 127]: 2^n is a normal f32 built from its exponent
    // bits. `t` = 1.5·2^23 + n exactly, so n is also the difference of the
    // two bit patterns: integer lanes, where `n as i32` (a saturating
    // conversion) would not vectorize.
    let ni = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    p * f32::from_bits(((ni + 127) as u32) << 23)
}

/// `gate = silu(gate) * up` (SwiGLU), with `silu(g) = g / (1 + exp(-g))`.
pub(crate) fn swiglu(gate: &mut [f32], up: &[f32]) {
    let f = |(g, u): (&mut [f32], &[f32])| {
        for (g, u) in g.iter_mut().zip(u) {
            *g = *g / (1.0 + exp(-*g)) * u;
        }
    };
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
    let f = |o: &mut [f32], gate: &[f32], up: &[f32]| {
        for ((o, &g), &u) in o.iter_mut().zip(gate).zip(up) {
            *o = g / (1.0 + exp(-g)) * u;
        }
    };
    if n == 0 {
        return;
    }
    // Row 0 in place: value j of the result replaces value j of the gate.
    {
        let (gate, up) = gu[..2 * ff].split_at_mut(ff);
        if ff < PAR_MIN {
            for (g, &u) in gate.iter_mut().zip(up.iter()) {
                *g = *g / (1.0 + exp(-*g)) * u;
            }
        } else {
            gate.par_chunks_mut(PAR_MIN / 4)
                .zip(up.par_chunks(PAR_MIN / 4))
                .for_each(|(g, u)| {
                    for (g, &u) in g.iter_mut().zip(u) {
                        *g = *g / (1.0 + exp(-*g)) * u;
                    }
                });
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
    fn exp_is_accurate_over_its_range() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let e = ((exp(x) as f64 - want) / want).abs();
            worst = worst.max(e);
            x += 0.0137;
        }
        // Measured 8.7e-8.
        eprintln!("exp: worst relative error {worst:e}");
        assert!(worst < 2e-7, "worst relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite());
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
