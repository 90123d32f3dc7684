//! AVX-512 VNNI matrix × vector on [`super::q8_0::PackedQ8_0`]: 16 weight
//! rows per pass, one 64-byte load of word `t` of every row against 4
//! broadcast activation bytes per `vpdpbusd`.
//!
//! Per block a lane sums 32 products of a flipped (unsigned) weight and a
//! signed activation byte, exact in i32; `128·Σa` is taken off, then the
//! float step is the tiled kernels' (`crate::gemm`'s group16 and AMX
//! forms: `fma(sumi, d_w·d_a, sumf)`, block after block), so a token's
//! result is the same bits whatever the batch it is computed in; it agrees
//! with [`crate::dot::scalar::q8_0_q8_0`] (a multiply, then an add) to
//! rounding.

#![allow(clippy::missing_safety_doc)]

use super::q8_0::{Qs16, GROUP16};
use crate::blocks::{BlockQ8_0, F16Le};
use std::arch::x86_64::*;

/// The 16 rows of one group against one Q8_0 activation row (`asum`: each
/// activation block's quant sum), as f32 lanes.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and F16C available; the four slices have the same length.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn gemv(
    qs: &[Qs16],
    d: &[[F16Le; GROUP16]],
    a: &[BlockQ8_0],
    asum: &[i32],
) -> [f32; GROUP16] {
    debug_assert!(qs.len() == a.len() && d.len() == a.len() && asum.len() == a.len());
    let mut acc = _mm512_setzero_ps();
    for (((q, d), y), &s) in qs.iter().zip(d).zip(a).zip(asum) {
        let p = q.0.as_ptr();
        // Every line of the block 4 ahead: two of its eight (relying on the
        // adjacent-line prefetcher) left the streamed product slower than
        // candle's, all eight faster (measurements:
        // benches/journal/kernel-dispatch.md).
        for line in (0..size_of::<Qs16>()).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(4 * size_of::<Qs16>() + line) as *const i8);
        }
        let aq = y.qs.as_ptr();
        // Two accumulators (even and odd words) for shorter chains.
        let mut sum = [_mm512_setzero_si512(); 2];
        for t in 0..8 {
            let v = _mm512_load_si512(p.add(64 * t) as *const __m512i);
            let b = _mm512_set1_epi32((aq.add(4 * t) as *const i32).read_unaligned());
            sum[t % 2] = _mm512_dpbusd_epi32(sum[t % 2], v, b);
        }
        let sumi = _mm512_sub_epi32(_mm512_add_epi32(sum[0], sum[1]), _mm512_set1_epi32(128 * s));
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(d.as_ptr() as *const __m256i));
        let scale = _mm512_mul_ps(dw, crate::dot::avx512::f16x16(y.d));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), scale, acc);
    }
    let mut out = [0f32; GROUP16];
    _mm512_storeu_ps(out.as_mut_ptr(), acc);
    out
}
