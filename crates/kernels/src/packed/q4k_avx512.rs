//! AVX-512 VNNI matrix × vector on [`BlockQ4Kx16`]: the 16 rows of one
//! group in the 16 lanes of a `zmm`.
//!
//! The 64-byte word load `qs[512p + 64t..]` (4 bytes of each of the 16 rows)
//! against 4 broadcast activation bytes: unsigned nibbles × signed Q8_K
//! bytes, 4 products per lane added straight into i32. Per 32-value
//! sub-block a lane sums 32 products, at most 32·15·128 = 61440, so the
//! rows' 6-bit scales are applied with `vpmulld`. The high nibbles are not
//! shifted down: `v & 0xF0` is 16 × the level, its scaled sums (at most
//! 4 sub-blocks · 16·61440·63 < 2²⁸ per super-block) are exact multiples of
//! 16, and one arithmetic shift per super-block divides them back (one
//! instruction fewer per weight load, measured faster: see
//! benches/journal/kernel-dispatch.md). The integer sums are exact
//! and the float steps per super-block are the AVX2 and scalar kernels'
//! (`(d_a·d)·sumi − (d_a·dmin)·summ`, summed in order, no FMA), so the
//! results equal [`crate::dot::scalar::q4k_q8k`] bit for bit.
//!
//! One group per pass, its blocks read front to back: one stream. (A form
//! that took two 8-row groups at once, each in a `ymm` half, read two
//! streams a whole group row apart and ran slower than one group per pass
//! on matrices read from memory; the 16-row layout gives the `zmm`
//! form one stream.)

#![allow(clippy::missing_safety_doc)]

use super::q4k::{BlockQ4Kx16, ROWS};
use crate::blocks::{BlockQ8K, F16Le};
use std::arch::x86_64::*;

gemv_entry_points!(BlockQ4Kx16, ROWS);

/// [`gemv`] for `M` activation rows (`w.len()` blocks of each).
#[inline(always)]
unsafe fn gemv_rows<const M: usize>(w: &[BlockQ4Kx16], a: [&[BlockQ8K]; M]) -> [[f32; ROWS]; M] {
    let m4 = _mm512_set1_epi8(0xF);
    let m4h = _mm512_set1_epi8(0xF0u8 as i8);
    // One activation row has two accumulators per nibble half (even and
    // odd words) to shorten the `vpdpbusd` dependency chains; several rows
    // have chains enough.
    let chains = if M == 1 { 2 } else { 1 };
    let mut acc = [_mm512_setzero_ps(); M];
    for (s, x) in w.iter().enumerate() {
        crate::dot::avx2::prefetch_ahead(x);
        let q = x.qs.as_ptr();
        let y: [&BlockQ8K; M] = std::array::from_fn(|m| &a[m][s]);
        let mut sumi = [_mm512_setzero_si512(); M];
        let mut sumh = [_mm512_setzero_si512(); M];
        for p in 0..4 {
            let mut lo = [[_mm512_setzero_si512(); 2]; M];
            let mut hi = [[_mm512_setzero_si512(); 2]; M];
            for t in 0..8 {
                let v = _mm512_load_si512(q.add(512 * p + 64 * t).cast());
                let l = _mm512_and_si512(v, m4);
                let h = _mm512_and_si512(v, m4h);
                let c = t % chains;
                for m in 0..M {
                    let aq = y[m].qs.as_ptr();
                    let al = (aq.add(64 * p + 4 * t) as *const i32).read_unaligned();
                    let ah = (aq.add(64 * p + 32 + 4 * t) as *const i32).read_unaligned();
                    lo[m][c] = _mm512_dpbusd_epi32(lo[m][c], l, _mm512_set1_epi32(al));
                    hi[m][c] = _mm512_dpbusd_epi32(hi[m][c], h, _mm512_set1_epi32(ah));
                }
            }
            // Scales of sub-blocks 2p (bytes 32p..) and 2p + 1 (32p + 16..),
            // widened to the 16 lanes.
            let sc = x.sc.as_ptr().add(32 * p);
            let sl = _mm512_cvtepu8_epi32(_mm_load_si128(sc.cast()));
            let sh = _mm512_cvtepu8_epi32(_mm_load_si128(sc.add(16).cast()));
            for m in 0..M {
                let l = _mm512_add_epi32(lo[m][0], lo[m][1]);
                let h = _mm512_add_epi32(hi[m][0], hi[m][1]);
                sumi[m] = _mm512_add_epi32(sumi[m], _mm512_mullo_epi32(l, sl));
                sumh[m] = _mm512_add_epi32(sumh[m], _mm512_mullo_epi32(h, sh));
            }
        }
        // The rows' min pairs (m_2p, m_2p+1) as i16 in each lane.
        let mins: [__m512i; 4] = std::array::from_fn(|p| {
            _mm512_cvtepu8_epi16(_mm256_load_si256(x.m.as_ptr().add(32 * p).cast()))
        });
        for m in 0..M {
            let sumi = _mm512_add_epi32(sumi[m], _mm512_srai_epi32::<4>(sumh[m]));
            // Σ_j m_j·bsum_j: the activation's (bsum_2p, bsum_2p+1) pairs
            // against each row's min pairs.
            let bs = _mm256_loadu_si256(y[m].bsums.as_ptr() as *const __m256i);
            let b8 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            let mut pairs = [0i32; 4];
            _mm_storeu_si128(pairs.as_mut_ptr() as *mut __m128i, b8);
            let mut summ = _mm512_setzero_si512();
            for (mp, &pair) in mins.iter().zip(&pairs) {
                summ = _mm512_add_epi32(summ, _mm512_madd_epi16(*mp, _mm512_set1_epi32(pair)));
            }
            acc[m] = kmin_step(acc[m], y[m].d, (&x.d, &x.dmin), (sumi, summ));
        }
    }
    let mut out = [[0f32; ROWS]; M];
    for (o, v) in out.iter_mut().zip(acc) {
        _mm512_storeu_ps(o.as_mut_ptr(), v);
    }
    out
}

/// `acc` plus one super-block of the 16 rows in the lanes, the float steps
/// of the scalar kernels in their order (no FMA): `(d_a·d)·sumi −
/// (d_a·dmin)·summ`, with `d`, `dmin` the rows' f16 scales and `dy` the
/// activation block's.
#[inline(always)]
unsafe fn kmin_step(
    acc: __m512,
    dy: f32,
    (d, dmin): (&[F16Le; ROWS], &[F16Le; ROWS]),
    (sumi, summ): (__m512i, __m512i),
) -> __m512 {
    let half16 = |h: &[F16Le; ROWS]| _mm512_cvtph_ps(_mm256_loadu_si256(h.as_ptr().cast()));
    let dy = _mm512_set1_ps(dy);
    let t = _mm512_sub_ps(
        _mm512_mul_ps(_mm512_mul_ps(dy, half16(d)), _mm512_cvtepi32_ps(sumi)),
        _mm512_mul_ps(_mm512_mul_ps(dy, half16(dmin)), _mm512_cvtepi32_ps(summ)),
    );
    _mm512_add_ps(acc, t)
}
