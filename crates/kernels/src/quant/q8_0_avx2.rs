//! AVX2 Q8_0 block quantizer ([`super::quantize_block_q8_0`]),
//! bit-identical to the scalar reference ([`BlockQ8_0`]'s
//! [`super::QuantizeBlock::quantize`]): the same `amax / 127` and `1 / d`
//! in f32, the same products, and Rust's `round` (half away from zero) done
//! exactly as `t = trunc(v)`, plus `sign(v)` where `|v − t| ≥ 0.5` (the
//! difference is exact in f32).

use crate::blocks::{BlockQ8_0, F16Le, QK};
use std::arch::x86_64::*;

/// Quantizes 32 values; `None` when one is NaN or infinite (or the scale
/// overflows), which the scalar code handles.
///
/// # Safety
/// AVX2 available; `x.len() >= 32`.
#[target_feature(enable = "avx2")]
pub unsafe fn quantize_block_q8_0(x: &[f32]) -> Option<BlockQ8_0> {
    debug_assert!(x.len() >= QK);
    let (qs, d) = quantize_q8_0_regs(x.as_ptr())?;
    let mut out = BlockQ8_0 {
        d: F16Le::from_f32(d),
        qs: [0; QK],
    };
    _mm256_storeu_si256(out.qs.as_mut_ptr() as *mut __m256i, qs);
    Some(out)
}

/// [`quantize_block_q8_0`] in registers: the 32 quants in order and the
/// scale (f32, before its rounding to f16), for callers that go on with
/// them (the tiled kernels' activation blocks).
///
/// # Safety
/// AVX2 available; `p` points to 32 readable values.
#[inline(always)]
pub(crate) unsafe fn quantize_q8_0_regs(p: *const f32) -> Option<(__m256i, f32)> {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    // Written out, not `array::from_fn`: a closure does not take this
    // function's target features, and its intrinsics would be calls.
    let v = [
        _mm256_loadu_ps(p),
        _mm256_loadu_ps(p.add(8)),
        _mm256_loadu_ps(p.add(16)),
        _mm256_loadu_ps(p.add(24)),
    ];
    let mut m = _mm256_setzero_ps();
    let mut bad = _mm256_setzero_ps();
    for &v in &v {
        let a = _mm256_and_ps(v, abs_mask);
        m = _mm256_max_ps(a, m);
        // NaN (unordered) or infinite.
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, _mm256_set1_ps(f32::MAX), _CMP_NLE_UQ));
    }
    if _mm256_movemask_ps(bad) != 0 {
        return None;
    }
    let h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    let amax = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    if !id.is_finite() {
        // A subnormal scale: 0 · inf would be NaN, which `as i8` makes 0.
        return None;
    }
    let s = _mm256_set1_ps(id);
    let half = _mm256_set1_ps(0.5);
    let sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN));
    let one = _mm256_set1_ps(1.0);
    let mut q = [_mm256_setzero_si256(); 4];
    for k in 0..4 {
        let y = _mm256_mul_ps(v[k], s);
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
        let frac = _mm256_and_ps(_mm256_sub_ps(y, t), abs_mask);
        let step = _mm256_or_ps(_mm256_and_ps(y, sign_mask), one);
        let up = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ), step);
        q[k] = _mm256_cvttps_epi32(_mm256_add_ps(t, up));
    }
    // packs interleave 128-bit halves; this restores the element order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let ab = _mm256_packs_epi32(q[0], q[1]);
    let cd = _mm256_packs_epi32(q[2], q[3]);
    Some((
        _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order),
        d,
    ))
}
