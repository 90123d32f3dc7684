//! AArch64 NEON steps of the Q8_K activation quantizer
//! ([`super::kquants::quantize_block_q8k_simd`]), bit-identical to the
//! scalar reference (`fcvtns` rounds half to even).

use super::kquants::{quantize_block_q8k_simd, Q8kSteps};
use crate::blocks::{BlockQ8K, QK_K};
use std::arch::aarch64::*;

struct Neon;

impl Q8kSteps for Neon {
    #[inline(always)]
    unsafe fn amax(x: &[f32]) -> Option<f32> {
        debug_assert!(x.len() >= QK_K);
        let p = x.as_ptr();
        let mut m = vdupq_n_f32(0.0);
        let mut nan = vdupq_n_u32(0);
        for i in (0..QK_K).step_by(4) {
            let v = vld1q_f32(p.add(i));
            m = vmaxq_f32(m, vabsq_f32(v));
            nan = vorrq_u32(nan, vmvnq_u32(vceqq_f32(v, v)));
        }
        (vmaxvq_u32(nan) == 0).then(|| vmaxvq_f32(m))
    }

    #[inline(always)]
    unsafe fn first_of_magnitude(x: &[f32], amax: f32) -> f32 {
        let target = vdupq_n_f32(amax);
        for i in (0..QK_K).step_by(4) {
            let hit = vceqq_f32(vabsq_f32(vld1q_f32(x.as_ptr().add(i))), target);
            if vmaxvq_u32(hit) != 0 {
                let mut lanes = [0u32; 4];
                vst1q_u32(lanes.as_mut_ptr(), hit);
                let k = lanes.iter().position(|&l| l != 0).unwrap_or(0);
                return x[i + k];
            }
        }
        amax
    }

    #[inline(always)]
    unsafe fn quantize(x: &[f32], iscale: f32, y: &mut BlockQ8K) {
        let p = x.as_ptr();
        let s = vdupq_n_f32(iscale);
        for c in 0..QK_K / 16 {
            let q: [int32x4_t; 4] = std::array::from_fn(|k| {
                vcvtnq_s32_f32(vmulq_f32(s, vld1q_f32(p.add(16 * c + 4 * k))))
            });
            // |q| ≤ 127 (|v| ≤ |max|): the saturating narrows change nothing.
            let lo = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]));
            let hi = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
            let b = vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi));
            vst1q_s8(y.qs.as_mut_ptr().add(16 * c), b);
            y.bsums[c] = vaddlvq_s8(b);
        }
    }
}

/// Quantizes 256 values; returns `false` (writing nothing) when a value is
/// NaN or infinite or the scale overflows, which the scalar code handles.
///
/// # Safety
/// NEON available; `x.len() >= 256`.
#[target_feature(enable = "neon")]
pub unsafe fn quantize_block_q8k(x: &[f32], y: &mut BlockQ8K) -> bool {
    quantize_block_q8k_simd::<Neon>(x, y)
}
