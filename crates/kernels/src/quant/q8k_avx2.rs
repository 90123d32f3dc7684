//! AVX2 steps of the Q8_K activation quantizer
//! ([`super::kquants::quantize_block_q8k_simd`]), bit-identical to the
//! scalar reference.

use super::kquants::{quantize_block_q8k_simd, Q8kSteps};
use crate::blocks::{BlockQ8K, QK_K};
use std::arch::x86_64::*;

struct Avx2;

impl Q8kSteps for Avx2 {
    #[inline(always)]
    unsafe fn amax(x: &[f32]) -> Option<f32> {
        let p = x.as_ptr();
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let mut m = _mm256_setzero_ps();
        let mut nan = _mm256_setzero_ps();
        for i in (0..QK_K).step_by(8) {
            let v = _mm256_loadu_ps(p.add(i));
            m = _mm256_max_ps(_mm256_and_ps(v, abs_mask), m);
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        }
        if _mm256_movemask_ps(nan) != 0 {
            return None;
        }
        let h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        Some(_mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h))))
    }

    #[inline(always)]
    unsafe fn first_of_magnitude(x: &[f32], amax: f32) -> f32 {
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let target = _mm256_set1_ps(amax);
        for i in (0..QK_K).step_by(8) {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            let hit = _mm256_movemask_ps(_mm256_cmp_ps(
                _mm256_and_ps(v, abs_mask),
                target,
                _CMP_EQ_OQ,
            ));
            if hit != 0 {
                return x[i + hit.trailing_zeros() as usize];
            }
        }
        amax
    }

    #[inline(always)]
    unsafe fn quantize(x: &[f32], iscale: f32, y: &mut BlockQ8K) {
        let p = x.as_ptr();
        let s = _mm256_set1_ps(iscale);
        // packs interleave 128-bit halves; this restores the element order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let ones8 = _mm256_set1_epi8(1);
        let ones16 = _mm256_set1_epi16(1);
        // Per 32 values: 8 sums of 4 (lanes 0..4: the first 16 values).
        let mut quads = [_mm256_setzero_si256(); QK_K / 32];
        for c in 0..QK_K / 32 {
            let mut q = [_mm256_setzero_si256(); 4];
            for (k, q) in q.iter_mut().enumerate() {
                *q = _mm256_cvtps_epi32(_mm256_mul_ps(s, _mm256_loadu_ps(p.add(32 * c + 8 * k))));
            }
            let ab = _mm256_packs_epi32(q[0], q[1]);
            let cd = _mm256_packs_epi32(q[2], q[3]);
            let v = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
            _mm256_storeu_si256(y.qs.as_mut_ptr().add(32 * c) as *mut __m256i, v);
            // |q| <= 127: pair sums (u8 1 × i8 q) fit i16.
            quads[c] = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16);
        }
        for c in (0..QK_K / 32).step_by(2) {
            // Lanes 0, 1, 4, 5: sums of values 32c..+16, 32(c+1)..+16, 32c+16..+16, 32(c+1)+16..+16.
            let t = _mm256_hadd_epi32(quads[c], quads[c + 1]);
            let mut u = [0i32; 8];
            _mm256_storeu_si256(u.as_mut_ptr() as *mut __m256i, _mm256_hadd_epi32(t, t));
            y.bsums[2 * c] = u[0] as i16;
            y.bsums[2 * c + 1] = u[4] as i16;
            y.bsums[2 * c + 2] = u[1] as i16;
            y.bsums[2 * c + 3] = u[5] as i16;
        }
    }
}

/// Quantizes 256 values; returns `false` (writing nothing) when a value is
/// NaN or infinite or the scale overflows, which the scalar code handles.
///
/// # Safety
/// AVX2 available; `x.len() >= 256`.
#[target_feature(enable = "avx2")]
pub unsafe fn quantize_block_q8k(x: &[f32], y: &mut BlockQ8K) -> bool {
    quantize_block_q8k_simd::<Avx2>(x, y)
}
