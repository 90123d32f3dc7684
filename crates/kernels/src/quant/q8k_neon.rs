//! AArch64 NEON Q8_K activation quantization, bit-identical to the scalar
//! reference: the same largest-magnitude value (the first one, on ties), the
//! same `iscale · v` products, and `fcvtns` (round half to even, what the
//! scalar `nearest_int` computes for |v| ≤ 127).

use crate::blocks::{BlockQ8K, QK_K};
use std::arch::aarch64::*;

/// Quantizes 256 values; returns `false` (writing nothing) when a value is
/// NaN or infinite or the scale overflows, which the scalar code handles.
///
/// # Safety
/// NEON available; `x.len() >= 256`.
#[target_feature(enable = "neon")]
pub unsafe fn quantize_block_q8k(x: &[f32], y: &mut BlockQ8K) -> bool {
    debug_assert!(x.len() >= QK_K);
    let p = x.as_ptr();
    let mut m = vdupq_n_f32(0.0);
    let mut nan = vdupq_n_u32(0);
    for i in (0..QK_K).step_by(4) {
        let v = vld1q_f32(p.add(i));
        m = vmaxq_f32(m, vabsq_f32(v));
        nan = vorrq_u32(nan, vmvnq_u32(vceqq_f32(v, v)));
    }
    let amax = vmaxvq_f32(m);
    // NaN and infinite inputs take the scalar path.
    if !amax.is_finite() || vmaxvq_u32(nan) != 0 {
        return false;
    }
    if amax == 0.0 {
        *y = BlockQ8K::ZERO;
        return true;
    }
    // The first value of that magnitude, as the scalar scan keeps it.
    let target = vdupq_n_f32(amax);
    let mut max = amax;
    for i in (0..QK_K).step_by(4) {
        let hit = vceqq_f32(vabsq_f32(vld1q_f32(p.add(i))), target);
        if vmaxvq_u32(hit) != 0 {
            let mut lanes = [0u32; 4];
            vst1q_u32(lanes.as_mut_ptr(), hit);
            let k = lanes.iter().position(|&l| l != 0).unwrap_or(0);
            max = x[i + k];
            break;
        }
    }
    let iscale = -127.0 / max;
    // Tiny (denormal) maxima overflow the scale; the scalar code's integer
    // trick maps ±inf products to 0 where the conversion here would saturate.
    if !iscale.is_finite() {
        return false;
    }
    let s = vdupq_n_f32(iscale);
    for c in 0..QK_K / 16 {
        let q: [int32x4_t; 4] =
            std::array::from_fn(|k| vcvtnq_s32_f32(vmulq_f32(s, vld1q_f32(p.add(16 * c + 4 * k)))));
        // |q| ≤ 127 (|v| ≤ |max|): the saturating narrows change nothing.
        let lo = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]));
        let hi = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
        let b = vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi));
        vst1q_s8(y.qs.as_mut_ptr().add(16 * c), b);
        y.bsums[c] = vaddlvq_s8(b);
    }
    y.d = 1.0 / iscale;
    true
}
