//! AVX-512 form of the Q8_0 block quantizer ([`super::q8_0_avx2`]): the
//! same steps on two 16-lane vectors instead of four 8-lane ones, so the
//! same bits as the scalar reference.

use std::arch::x86_64::*;

/// The 32 quants in order and the scale (f32, before its rounding to
/// f16) of the 32 values at `p`; `None` when one is NaN or infinite (or
/// the scale overflows), which the scalar code handles.
///
/// # Safety
/// AVX-512 F/BW/VL and AVX2 available; `p` points to 32 readable values.
#[inline(always)]
pub(crate) unsafe fn quantize_q8_0_regs(p: *const f32) -> Option<(__m256i, f32)> {
    let v = [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))];
    let a = [_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])];
    // NaN (unordered) or infinite.
    let big = _mm512_set1_ps(f32::MAX);
    if _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(a[0], big) | _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(a[1], big)
        != 0
    {
        return None;
    }
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(a[1], a[0]));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    if !id.is_finite() {
        // A subnormal scale: 0 · inf would be NaN, which `as i8` makes 0.
        return None;
    }
    let s = _mm512_set1_ps(id);
    let half = _mm512_set1_ps(0.5);
    let sign_mask = _mm512_castsi512_ps(_mm512_set1_epi32(i32::MIN));
    let one = _mm512_set1_ps(1.0);
    let mut q = [_mm_setzero_si128(); 2];
    for k in 0..2 {
        // Rust's `round` (half away from zero) exactly: the truncation,
        // plus the sign where the (exact) remainder is at least a half.
        let y = _mm512_mul_ps(v[k], s);
        let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
        let frac = _mm512_abs_ps(_mm512_sub_ps(y, t));
        let step = _mm512_or_ps(_mm512_and_ps(y, sign_mask), one);
        let up = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, half), step);
        // |q| ≤ 127: the narrowing keeps every value.
        q[k] = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(_mm512_add_ps(t, up)));
    }
    Some((_mm256_set_m128i(q[1], q[0]), d))
}
