//! AVX-512 VNNI matrix × vector on [`BlockQ4Kx8`]: two 8-row groups per
//! pass, 16 weight rows in the 16 lanes of a `zmm`.
//!
//! The 32-byte word load `qs[256p + 32t..]` of group `g` (4 bytes of each of
//! its 8 rows) goes in the low half of a `zmm` and the same word of group
//! `g + 1` in the high half, so both halves need the same 4 activation bytes
//! and one broadcast load feeds a `vpdpbusd` (unsigned nibbles × signed
//! Q8_K bytes, 4 products per lane added straight into i32). Per 32-value
//! sub-block a lane sums 32 products, at most 32·15·128 = 61440, so the
//! rows' 6-bit scales are applied with `vpmulld`. The integer sums are exact
//! and the float steps per super-block are the AVX2 and scalar kernels'
//! (`(d_a·d)·sumi − (d_a·dmin)·summ`, summed in order, no FMA), so the
//! results equal [`crate::dot::scalar::q4k_q8k`] bit for bit.

#![allow(clippy::missing_safety_doc)]

use super::q4k::{BlockQ4Kx8, GROUP};
use crate::blocks::BlockQ8K;
use std::arch::x86_64::*;

/// Rows per pass: two groups.
pub const ROWS: usize = 2 * GROUP;

/// Two 32-byte halves (`lo` from group `g`, `hi` from group `g + 1`).
#[inline(always)]
unsafe fn join(lo: *const u8, hi: *const u8) -> __m512i {
    _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_load_si256(lo as *const __m256i)),
        _mm256_load_si256(hi as *const __m256i),
        1,
    )
}

/// The 4 activation bytes at `p`, in every 32-bit lane.
#[inline(always)]
unsafe fn bcast4(p: *const i8) -> __m512i {
    _mm512_set1_epi32((p as *const i32).read_unaligned())
}

/// The 16 rows' dot products with one Q8_K activation row, as f32 lanes
/// (rows 0..8 of `w0`, then rows 0..8 of `w1`).
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available; `w0`, `w1` and `a`
/// have the same length.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn gemv2(w0: &[BlockQ4Kx8], w1: &[BlockQ4Kx8], a: &[BlockQ8K]) -> [f32; ROWS] {
    debug_assert!(w0.len() == a.len() && w1.len() == a.len());
    let m4 = _mm512_set1_epi8(0xF);
    let mut acc = _mm512_setzero_ps();
    for ((x0, x1), y) in w0.iter().zip(w1).zip(a) {
        crate::dot::avx2::prefetch_ahead(x0);
        crate::dot::avx2::prefetch_ahead(x1);
        let (q0, q1) = (x0.qs.as_ptr(), x1.qs.as_ptr());
        let aq = y.qs.as_ptr();
        let mut sumi = _mm512_setzero_si512();
        for p in 0..4 {
            // Two accumulators per nibble half (even and odd words) to
            // shorten the `vpdpbusd` dependency chains.
            let mut lo = [_mm512_setzero_si512(); 2];
            let mut hi = [_mm512_setzero_si512(); 2];
            for t in 0..8 {
                let off = 256 * p + 32 * t;
                let v = join(q0.add(off), q1.add(off));
                let l = _mm512_and_si512(v, m4);
                let h = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                lo[t % 2] = _mm512_dpbusd_epi32(lo[t % 2], l, bcast4(aq.add(64 * p + 4 * t)));
                hi[t % 2] = _mm512_dpbusd_epi32(hi[t % 2], h, bcast4(aq.add(64 * p + 32 + 4 * t)));
            }
            // Scales of sub-blocks 2p (bytes 0..8) and 2p + 1 (bytes 8..16)
            // of both groups, widened to the 16 lanes.
            let s0 = _mm_loadu_si128(x0.sc.as_ptr().add(16 * p) as *const __m128i);
            let s1 = _mm_loadu_si128(x1.sc.as_ptr().add(16 * p) as *const __m128i);
            let sl = _mm512_cvtepu8_epi32(_mm_unpacklo_epi64(s0, s1));
            let sh = _mm512_cvtepu8_epi32(_mm_unpackhi_epi64(s0, s1));
            let l = _mm512_add_epi32(lo[0], lo[1]);
            let h = _mm512_add_epi32(hi[0], hi[1]);
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(l, sl));
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(h, sh));
        }
        // Σ_j m_j·bsum_j as in the AVX2 kernel: (bsum_2p, bsum_2p+1) pairs
        // against each row's min pairs, both groups at once.
        let bs = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
        let b8 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        let mut pairs = [0i32; 4];
        _mm_storeu_si128(pairs.as_mut_ptr() as *mut __m128i, b8);
        let mut summ = _mm512_setzero_si512();
        for (p, &pair) in pairs.iter().enumerate() {
            let m = _mm256_set_m128i(
                _mm_loadu_si128(x1.m.as_ptr().add(16 * p) as *const __m128i),
                _mm_loadu_si128(x0.m.as_ptr().add(16 * p) as *const __m128i),
            );
            let m = _mm512_cvtepu8_epi16(m);
            summ = _mm512_add_epi32(summ, _mm512_madd_epi16(m, _mm512_set1_epi32(pair)));
        }
        let halves = |a: &[crate::blocks::F16Le; GROUP], b: &[crate::blocks::F16Le; GROUP]| {
            _mm512_cvtph_ps(_mm256_set_m128i(
                _mm_loadu_si128(b.as_ptr() as *const __m128i),
                _mm_loadu_si128(a.as_ptr() as *const __m128i),
            ))
        };
        let dy = _mm512_set1_ps(y.d);
        let d = _mm512_mul_ps(dy, halves(&x0.d, &x1.d));
        let dm = _mm512_mul_ps(dy, halves(&x0.dmin, &x1.dmin));
        let t = _mm512_sub_ps(
            _mm512_mul_ps(d, _mm512_cvtepi32_ps(sumi)),
            _mm512_mul_ps(dm, _mm512_cvtepi32_ps(summ)),
        );
        acc = _mm512_add_ps(acc, t);
    }
    let mut out = [0f32; ROWS];
    _mm512_storeu_ps(out.as_mut_ptr(), acc);
    out
}
