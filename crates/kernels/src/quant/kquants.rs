//! Reference quantizers of the k-quants (`quantize_row_q2_K_ref` ... `q8_K`),
//! what llama-quantize uses when no importance matrix is given.

use super::search::{make_q3_quants, make_qkx2_quants, make_qx_quants, nearest_int, GROUP_MAX_EPS};
use super::QuantizeBlock;
use crate::blocks::*;

/// Packs 256 2-bit values the Q2_K / Q3_K way: byte `32*h + l` holds
/// `L[128h + l + 32k]` in bits `2k..2k+2`.
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8; QK_K / 4]) {
    for j in (0..QK_K).step_by(128) {
        for i in 0..32 {
            qs[j / 4 + i] =
                l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
}

/// Writes the 8 6-bit (scale, min) pairs of Q4_K / Q5_K.
pub(crate) fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8], scales: &mut [u8; 12]) {
    *scales = [0; 12];
    for j in 0..8 {
        let (s, m) = (ls[j], lm[j]);
        if j < 4 {
            scales[j] = s;
            scales[j + 4] = m;
        } else {
            scales[j + 4] = (s & 0xF) | ((m & 0xF) << 4);
            scales[j - 4] |= (s >> 4) << 6;
            scales[j] |= (m >> 4) << 6;
        }
    }
}

/// Q2_K as llama.cpp's `quantize_row_q2_K_ref` makes it (sub-block fits
/// minimizing the |x|-weighted absolute error), with `mse` the same search
/// minimizing the plain squared error instead.
fn quantize_q2k(x: &[f32], mse: bool) -> BlockQ2K {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let mut weights = [0f32; 16];
    let mut mins = [0f32; 16];
    let mut scales = [0f32; 16];
    let q4scale = 15f32;
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = if mse { 1.0 } else { v.abs() };
        }
        let (s, m) = make_qkx2_quants(
            3,
            xs,
            &weights,
            &mut l[16 * j..16 * j + 16],
            &mut laux,
            -0.5,
            0.1,
            15,
            !mse,
        );
        scales[j] = s;
        mins[j] = m;
        max_scale = max_scale.max_c(s);
        max_min = max_min.max_c(m);
    }
    let mut b = BlockQ2K {
        scales: [0; 16],
        qs: [0; 64],
        d: F16Le::from_f32(0.0),
        dmin: F16Le::from_f32(0.0),
    };
    if max_scale > 0.0 {
        let iscale = q4scale / max_scale;
        for j in 0..16 {
            b.scales[j] = nearest_int(iscale * scales[j]) as u8;
        }
        b.d = F16Le::from_f32(max_scale / q4scale);
    }
    if max_min > 0.0 {
        let iscale = q4scale / max_min;
        for j in 0..16 {
            b.scales[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
        }
        b.dmin = F16Le::from_f32(max_min / q4scale);
    }
    for j in 0..16 {
        let d = b.d.to_f32() * (b.scales[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = b.dmin.to_f32() * (b.scales[j] >> 4) as f32;
        for ii in 0..16 {
            l[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
        }
    }
    pack_2bit(&l, &mut b.qs);
    b
}

/// Squared reconstruction error of a block.
fn sq_error<B: crate::dequant::DequantBlock>(b: &B, x: &[f32]) -> f32 {
    let mut y = [0f32; QK_K];
    b.dequantize(&mut y[..x.len()]);
    x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum()
}

/// Q2_K: llama.cpp's reference block, or the squared-error fit when that
/// reconstructs the block better (llama.cpp's absolute-error fit alone gives
/// a higher RMSE than candle's older least-squares quantizer).
impl QuantizeBlock for BlockQ2K {
    fn quantize(x: &[f32]) -> Self {
        let a = quantize_q2k(x, false);
        let b = quantize_q2k(x, true);
        if sq_error(&b, x) < sq_error(&a, x) {
            b
        } else {
            a
        }
    }
}

/// `if v > m { v } else { m }` as the C code writes it (no NaN special-casing).
trait MaxC {
    fn max_c(self, v: f32) -> f32;
}
impl MaxC for f32 {
    #[inline(always)]
    fn max_c(self, v: f32) -> f32 {
        if v > self {
            v
        } else {
            self
        }
    }
}

impl QuantizeBlock for BlockQ3K {
    fn quantize(x: &[f32]) -> Self {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; 16];
        let (mut max_scale, mut amax) = (0f32, 0f32);
        for j in 0..16 {
            scales[j] = make_q3_quants(
                4,
                &x[16 * j..16 * j + 16],
                &mut l[16 * j..16 * j + 16],
                true,
            );
            if scales[j].abs() > amax {
                amax = scales[j].abs();
                max_scale = scales[j];
            }
        }
        let mut b = BlockQ3K {
            hmask: [0; 32],
            qs: [0; 64],
            scales: [0; 12],
            d: F16Le::from_f32(0.0),
        };
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for j in 0..16 {
                let lv = (nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) as i32 + 32;
                if j < 8 {
                    b.scales[j] = (lv & 0xF) as u8;
                } else {
                    b.scales[j - 8] |= ((lv & 0xF) << 4) as u8;
                }
                b.scales[j % 4 + 8] |= ((lv >> 4) << (2 * (j / 4))) as u8;
            }
            b.d = F16Le::from_f32(1.0 / iscale);
        }
        let sc = q3k_scales(&b.scales);
        for j in 0..16 {
            let d = b.d.to_f32() * sc[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-4, 3) + 4) as i8;
            }
        }
        let mut lu = [0u8; QK_K];
        let (mut m, mut hm) = (0usize, 1u8);
        for j in 0..QK_K {
            let mut v = l[j] as u8;
            if v > 3 {
                b.hmask[m] |= hm;
                v -= 4;
            }
            lu[j] = v;
            m += 1;
            if m == QK_K / 8 {
                m = 0;
                hm <<= 1;
            }
        }
        pack_2bit(&lu, &mut b.qs);
        b
    }
}

/// The shared body of Q4_K and Q5_K: 8 sub-blocks of 32 with 6-bit scales and
/// mins; returns the block header and the levels `0..=nmax`.
fn quantize_k_scale_min(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (F16Le, F16Le, [u8; 12], [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2: f32 = xs.iter().fold(0.0, |a, v| a + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            rmin,
            rdelta,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        max_scale = max_scale.max_c(s);
        max_min = max_min.max_c(m);
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let mut packed = [0u8; 12];
    pack_scale_min_k4(&ls, &lm, &mut packed);
    let d = F16Le::from_f32(max_scale / 63.0);
    let dmin = F16Le::from_f32(max_min / 63.0);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &packed);
        let dd = d.to_f32() * sc as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dd).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, l)
}

impl QuantizeBlock for BlockQ4K {
    fn quantize(x: &[f32]) -> Self {
        let (d, dmin, scales, l) = quantize_k_scale_min(x, 15, -1.0, 0.1, 20);
        let mut qs = [0u8; 128];
        for j in 0..4 {
            for i in 0..32 {
                qs[32 * j + i] = l[64 * j + i] | (l[64 * j + i + 32] << 4);
            }
        }
        BlockQ4K {
            d,
            dmin,
            scales,
            qs,
        }
    }
}

impl QuantizeBlock for BlockQ5K {
    fn quantize(x: &[f32]) -> Self {
        let (d, dmin, scales, l) = quantize_k_scale_min(x, 31, -0.5, 0.1, 15);
        let mut qs = [0u8; 128];
        let mut qh = [0u8; 32];
        let (mut m1, mut m2) = (1u8, 2u8);
        for n in 0..4 {
            for j in 0..32 {
                let mut l1 = l[64 * n + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = l[64 * n + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                qs[32 * n + j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
        BlockQ5K {
            d,
            dmin,
            scales,
            qh,
            qs,
        }
    }
}

impl QuantizeBlock for BlockQ6K {
    fn quantize(x: &[f32]) -> Self {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for ib in 0..16 {
            let s = make_qx_quants(
                32,
                &x[16 * ib..16 * ib + 16],
                &mut l[16 * ib..16 * ib + 16],
                1,
                None,
            );
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        let mut b = BlockQ6K {
            ql: [0; 128],
            qh: [0; 64],
            scales: [0; 16],
            d: F16Le::from_f32(0.0),
        };
        if max_abs_scale < GROUP_MAX_EPS {
            return b;
        }
        let iscale = -128.0 / max_scale;
        b.d = F16Le::from_f32(1.0 / iscale);
        for ib in 0..16 {
            b.scales[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        }
        for j in 0..16 {
            let d = b.d.to_f32() * b.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
            }
        }
        let l = l.map(|v| v as u8);
        for (n, j) in (0..QK_K).step_by(128).enumerate() {
            let ql = &mut b.ql[64 * n..64 * n + 64];
            let qh = &mut b.qh[32 * n..32 * n + 32];
            for i in 0..32 {
                let q1 = l[j + i] & 0xF;
                let q2 = l[j + i + 32] & 0xF;
                let q3 = l[j + i + 64] & 0xF;
                let q4 = l[j + i + 96] & 0xF;
                ql[i] = q1 | (q3 << 4);
                ql[i + 32] = q2 | (q4 << 4);
                qh[i] = (l[j + i] >> 4)
                    | ((l[j + i + 32] >> 4) << 2)
                    | ((l[j + i + 64] >> 4) << 4)
                    | ((l[j + i + 96] >> 4) << 6);
            }
        }
        b
    }
}

/// `quantize_row_q8_K_ref`: the activation format of the k-quant dot
/// products (`x.len() == 256`). Runs an AVX2 or NEON version where the CPU
/// has it (bit-identical to [`quantize_block_q8k_scalar`]).
pub fn quantize_block_q8k(x: &[f32], y: &mut BlockQ8K) {
    #[cfg(target_arch = "x86_64")]
    if x.len() == QK_K && crate::Isa::Avx2.available() {
        // SAFETY: AVX2 is available (checked above) and `x` holds exactly
        // the 256 values the kernel reads.
        if unsafe { super::q8k_avx2::quantize_block_q8k(x, y) } {
            return;
        }
    }
    #[cfg(target_arch = "aarch64")]
    if x.len() == QK_K && crate::Isa::Neon.available() {
        // SAFETY: NEON is available (checked above) and `x` holds exactly
        // the 256 values the kernel reads.
        if unsafe { super::q8k_neon::quantize_block_q8k(x, y) } {
            return;
        }
    }
    quantize_block_q8k_scalar(x, y)
}

/// The vector steps of a SIMD Q8_K quantizer (AVX2, NEON);
/// [`quantize_block_q8k_simd`] makes the decisions around them as
/// [`quantize_block_q8k_scalar`] does, so the results are bit-identical.
pub(super) trait Q8kSteps {
    /// The largest magnitude among the 256 values of `x`, `None` if one is NaN.
    ///
    /// # Safety
    /// The implementation's CPU features available; `x.len() >= 256`.
    unsafe fn amax(x: &[f32]) -> Option<f32>;
    /// The first value of `x` whose magnitude is `amax` (the one the scalar
    /// scan keeps on ties).
    ///
    /// # Safety
    /// As [`Q8kSteps::amax`].
    unsafe fn first_of_magnitude(x: &[f32], amax: f32) -> f32;
    /// `y.qs` = `iscale · x` rounded half to even (what the scalar
    /// `nearest_int` does for |v| ≤ 127) and `y.bsums`.
    ///
    /// # Safety
    /// As [`Q8kSteps::amax`].
    unsafe fn quantize(x: &[f32], iscale: f32, y: &mut BlockQ8K);
}

/// Quantizes 256 values with the vector steps `S`; returns `false` (writing
/// nothing) where the scalar code must decide: a NaN or infinite value, or a
/// scale that overflows.
///
/// # Safety
/// As [`Q8kSteps::amax`]; meant to be inlined into a function compiled with
/// those features.
#[inline(always)]
pub(super) unsafe fn quantize_block_q8k_simd<S: Q8kSteps>(x: &[f32], y: &mut BlockQ8K) -> bool {
    // NaN and infinite inputs: the scalar code's integer rounding trick and
    // the vector conversions disagree on them.
    let Some(amax) = S::amax(x).filter(|a| a.is_finite()) else {
        return false;
    };
    if amax == 0.0 {
        *y = BlockQ8K::ZERO;
        return true;
    }
    let iscale = -127.0 / S::first_of_magnitude(x, amax);
    // Tiny (denormal) maxima overflow the scale; the scalar trick maps ±inf
    // products to 0 where the vector conversions would saturate.
    if !iscale.is_finite() {
        return false;
    }
    S::quantize(x, iscale, y);
    y.d = 1.0 / iscale;
    true
}

/// The scalar reference of [`quantize_block_q8k`].
pub fn quantize_block_q8k_scalar(x: &[f32], y: &mut BlockQ8K) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        *y = BlockQ8K::ZERO;
        return;
    }
    let iscale = -127.0 / max;
    for (q, &v) in y.qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for j in 0..16 {
        y.bsums[j] = y.qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
    }
    y.d = 1.0 / iscale;
}
