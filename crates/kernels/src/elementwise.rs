//! Element-wise activation functions of the transformer (SwiGLU's
//! `silu(g) · u`), written once as plain f32 code and compiled per
//! instruction set: the compiler vectorizes the same operations 4, 8 or 16
//! wide, and since each element takes the same IEEE operations in the same
//! order (Rust contracts nothing into fused multiply-adds), every path
//! gives the scalar code's bits.

use crate::isa::Isa;

/// `e^x`, to within 2e-7 relative for `x` in `[-87, 88]` (clamped
/// outside): `2^n · p(f)` with `x = n·ln 2 + f`, `|f| ≤ ln 2 / 2`, and `p`
/// the degree-7 Taylor polynomial. Branch-free, so loops over it
/// vectorize (libm's `expf` is a call per value).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
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

/// `silu(g) · u`, with `silu(g) = g / (1 + e^−g)`.
#[inline(always)]
pub fn silu_mul_one(g: f32, u: f32) -> f32 {
    g / (1.0 + exp(-g)) * u
}

#[inline(always)]
fn silu_mul_body(out: &mut [f32], gate: &[f32], up: &[f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu_mul_one(g, u);
    }
}

#[inline(always)]
fn silu_mul_in_place_body(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu_mul_one(*g, u);
    }
}

/// The path the element-wise functions take on this CPU (AMX adds
/// nothing here: its AVX-512 form).
fn width() -> Isa {
    Isa::best()
}

macro_rules! per_isa {
    ($(#[$doc:meta])* $name:ident, $on:ident, $body:ident, ($($arg:ident: $t:ty),*)) => {
        $(#[$doc])*
        pub fn $name($($arg: $t),*) {
            $on(width(), $($arg),*)
        }

        /// On the given path (which the caller has checked is available).
        fn $on(isa: Isa, $($arg: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $t),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $t),*) {
                    $body($($arg),*)
                }
                if isa.has_avx512() {
                    // SAFETY: AVX-512 F/BW/VL with AVX2 and FMA checked
                    // available (`Isa::available`, by `width` or the
                    // caller); the body is safe code.
                    return unsafe { avx512($($arg),*) };
                }
                if isa.has_avx2() {
                    // SAFETY: AVX2 and FMA checked available, as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            let _ = isa;
            $body($($arg),*)
        }
    };
}

per_isa!(
    /// `out[i] = silu(gate[i]) · up[i]` over the shortest of the three
    /// slices; the same bits on every path as [`silu_mul_one`].
    silu_mul,
    silu_mul_on,
    silu_mul_body,
    (out: &mut [f32], gate: &[f32], up: &[f32])
);

per_isa!(
    /// `gate[i] = silu(gate[i]) · up[i]`; as [`silu_mul`].
    silu_mul_in_place,
    silu_mul_in_place_on,
    silu_mul_in_place_body,
    (gate: &mut [f32], up: &[f32])
);

#[cfg(test)]
mod tests {
    use super::*;

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
    fn silu_mul_gives_the_scalar_bits_on_this_cpu() {
        // Values over exp's range and past its clamps, lengths that leave
        // tails of every vector width.
        let g: Vec<f32> = (0..4099).map(|i| (i as f32 - 2050.0) * 0.047).collect();
        let u: Vec<f32> = (0..4099)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 9.0)
            .collect();
        let want: Vec<u32> = g
            .iter()
            .zip(&u)
            .map(|(&g, &u)| silu_mul_one(g, u).to_bits())
            .collect();
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for isa in Isa::available_paths() {
            for len in [0, 1, 7, 15, 17, 33, 4099] {
                let mut out = vec![f32::NAN; len];
                silu_mul_on(isa, &mut out, &g[..len], &u[..len]);
                assert_eq!(bits(&out), want[..len], "{isa:?} {len}");
                let mut gi = g[..len].to_vec();
                silu_mul_in_place_on(isa, &mut gi, &u[..len]);
                assert_eq!(bits(&gi), want[..len], "{isa:?} {len}");
            }
        }
        eprintln!("silu_mul paths tested: {:?}", Isa::available_paths());
        // And against the formula in f64.
        for (&g, &u) in g.iter().zip(&u) {
            let want = g as f64 / (1.0 + (-g as f64).exp()) * u as f64;
            let got = silu_mul_one(g, u) as f64;
            assert!(
                (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{g} {u}: {got} vs {want}"
            );
        }
    }
}
