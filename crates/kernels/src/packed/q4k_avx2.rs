//! AVX2 matrix × vector on [`BlockQ4Kx8`]: 8 weight rows per pass, one
//! 32-byte load of nibbles against 4 broadcast activation bytes per
//! `vpmaddubsw`, the 8 rows' sums in 8 lanes.
//!
//! Per 32-value sub-block the 8 `vpmaddubsw` results of a lane (each at
//! most 2·15·128 = 3840 in magnitude) are summed in i16 (8·3840 = 30720 <
//! 2¹⁵) before one `vpmaddwd` applies the rows' scales. The integer sums are
//! exact and the float steps per super-block are the scalar kernel's
//! (`(d_a·d)·sumi − (d_a·dmin)·summ`, summed in order, no FMA), so the
//! results equal [`crate::dot::scalar::q4k_q8k`] bit for bit.

#![allow(clippy::missing_safety_doc)]

use super::q4k::{BlockQ4Kx8, GROUP};
use crate::blocks::BlockQ8K;
use std::arch::x86_64::*;

/// `vpshufb` masks turning 8 scale bytes (rows 0..8, at byte offset 0 or 8
/// of a broadcast 16-byte load) into each row's scale in both i16 halves of
/// its 32-bit lane.
///
/// # Safety
/// AVX available (called from [`gemv`], which requires AVX2).
#[inline(always)]
unsafe fn scale_masks() -> [__m256i; 2] {
    // Lane `l` (row l) takes byte `off + l`: in the upper 128-bit half,
    // rows 4..8 sit at bytes 4..8 of that half's own copy of the 16 bytes.
    let mut b = [[0i8; 32]; 2];
    for (m, off) in b.iter_mut().zip([0i8, 8]) {
        for lane in 0..8 {
            let row = off + lane as i8;
            m[4 * lane..4 * lane + 4].copy_from_slice(&[row, -128, row, -128]);
        }
    }
    [
        _mm256_loadu_si256(b[0].as_ptr() as *const __m256i),
        _mm256_loadu_si256(b[1].as_ptr() as *const __m256i),
    ]
}

/// The 8 rows' dot products with one Q8_K activation row, as f32 lanes.
///
/// # Safety
/// AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemv(w: &[BlockQ4Kx8], a: &[BlockQ8K]) -> [f32; GROUP] {
    let m4 = _mm256_set1_epi8(0xF);
    let [even, odd] = scale_masks();
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        crate::dot::avx2::prefetch_ahead(x);
        let q = x.qs.as_ptr();
        let aq = y.qs.as_ptr();
        let mut sumi = _mm256_setzero_si256();
        for p in 0..4 {
            let mut lo = _mm256_setzero_si256();
            let mut hi = _mm256_setzero_si256();
            for t in 0..8 {
                let v = _mm256_load_si256(q.add(256 * p + 32 * t) as *const __m256i);
                let al = (aq.add(64 * p + 4 * t) as *const i32).read_unaligned();
                let ah = (aq.add(64 * p + 32 + 4 * t) as *const i32).read_unaligned();
                let l = _mm256_and_si256(v, m4);
                let h = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(l, _mm256_set1_epi32(al)));
                hi = _mm256_add_epi16(hi, _mm256_maddubs_epi16(h, _mm256_set1_epi32(ah)));
            }
            let sc = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                x.sc.as_ptr().add(16 * p) as *const __m128i
            ));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(lo, _mm256_shuffle_epi8(sc, even)));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(hi, _mm256_shuffle_epi8(sc, odd)));
        }
        // Σ_j m_j·bsum_j: sub-block sums of the activations as i16 pairs
        // (bsum_2p, bsum_2p+1) against the rows' min pairs.
        let bs = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
        let b8 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        let mut pairs = [0i32; 4];
        _mm_storeu_si128(pairs.as_mut_ptr() as *mut __m128i, b8);
        let mut summ = _mm256_setzero_si256();
        for (p, &pair) in pairs.iter().enumerate() {
            let m =
                _mm256_cvtepu8_epi16(_mm_loadu_si128(x.m.as_ptr().add(16 * p) as *const __m128i));
            summ = _mm256_add_epi32(summ, _mm256_madd_epi16(m, _mm256_set1_epi32(pair)));
        }
        let dy = _mm256_set1_ps(y.d);
        let d = _mm256_mul_ps(
            dy,
            _mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr() as *const __m128i)),
        );
        let dm = _mm256_mul_ps(
            dy,
            _mm256_cvtph_ps(_mm_loadu_si128(x.dmin.as_ptr() as *const __m128i)),
        );
        let t = _mm256_sub_ps(
            _mm256_mul_ps(d, _mm256_cvtepi32_ps(sumi)),
            _mm256_mul_ps(dm, _mm256_cvtepi32_ps(summ)),
        );
        acc = _mm256_add_ps(acc, t);
    }
    let mut out = [0f32; GROUP];
    _mm256_storeu_ps(out.as_mut_ptr(), acc);
    out
}
