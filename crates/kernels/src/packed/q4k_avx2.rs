//! AVX2 matrix × vector on [`BlockQ4Kx16`]: 16 weight rows per pass, the
//! two 32-byte halves of each 64-byte word (rows 0..8 and 8..16) against
//! the same 4 broadcast activation bytes, one `vpmaddubsw` each, the rows'
//! sums in the lanes of two vectors.
//!
//! Per 32-value sub-block the 8 `vpmaddubsw` results of a lane (each at
//! most 2·15·128 = 3840 in magnitude) are summed in i16 (8·3840 = 30720 <
//! 2¹⁵) before one `vpmaddwd` applies the rows' scales. The integer sums are
//! exact and the float steps per super-block are the scalar kernel's
//! (`(d_a·d)·sumi − (d_a·dmin)·summ`, summed in order, no FMA), so the
//! results equal [`crate::dot::scalar::q4k_q8k`] bit for bit.

#![allow(clippy::missing_safety_doc)]

use super::q4k::{BlockQ4Kx16, ROWS};
use crate::blocks::BlockQ8K;
use std::arch::x86_64::*;

/// `vpshufb` masks turning the 16 scale bytes of one sub-block (rows
/// 0..16, a 16-byte load broadcast to both 128-bit halves) into each row of
/// half `h` (rows 8h..8h + 8) in both i16 halves of its 32-bit lane.
///
/// # Safety
/// AVX available (called from [`gemv`], which requires AVX2).
#[inline(always)]
unsafe fn scale_masks() -> [__m256i; 2] {
    // Lane `l` takes byte `8h + l` of its own half's copy of the 16 bytes.
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

/// The 16 rows' dot products with one Q8_K activation row, as f32 lanes.
///
/// # Safety
/// AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemv(w: &[BlockQ4Kx16], a: &[BlockQ8K]) -> [f32; ROWS] {
    let m4 = _mm256_set1_epi8(0xF);
    let masks = scale_masks();
    let mut acc = [_mm256_setzero_ps(); 2];
    for (x, y) in w.iter().zip(a) {
        crate::dot::avx2::prefetch_ahead(x);
        let q = x.qs.as_ptr();
        let aq = y.qs.as_ptr();
        let mut sumi = [_mm256_setzero_si256(); 2];
        for p in 0..4 {
            let mut lo = [_mm256_setzero_si256(); 2];
            let mut hi = [_mm256_setzero_si256(); 2];
            for t in 0..8 {
                let al = _mm256_set1_epi32((aq.add(64 * p + 4 * t) as *const i32).read_unaligned());
                let ah =
                    _mm256_set1_epi32((aq.add(64 * p + 32 + 4 * t) as *const i32).read_unaligned());
                for h in 0..2 {
                    let v = _mm256_load_si256(q.add(512 * p + 64 * t + 32 * h) as *const __m256i);
                    let l = _mm256_and_si256(v, m4);
                    let hn = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                    lo[h] = _mm256_add_epi16(lo[h], _mm256_maddubs_epi16(l, al));
                    hi[h] = _mm256_add_epi16(hi[h], _mm256_maddubs_epi16(hn, ah));
                }
            }
            // The 16 rows' scales of sub-blocks 2p and 2p + 1.
            let sc = x.sc.as_ptr().add(32 * p);
            let sl = _mm256_broadcastsi128_si256(_mm_loadu_si128(sc as *const __m128i));
            let sh = _mm256_broadcastsi128_si256(_mm_loadu_si128(sc.add(16) as *const __m128i));
            for h in 0..2 {
                let l = _mm256_madd_epi16(lo[h], _mm256_shuffle_epi8(sl, masks[h]));
                let hn = _mm256_madd_epi16(hi[h], _mm256_shuffle_epi8(sh, masks[h]));
                sumi[h] = _mm256_add_epi32(sumi[h], _mm256_add_epi32(l, hn));
            }
        }
        // Σ_j m_j·bsum_j: sub-block sums of the activations as i16 pairs
        // (bsum_2p, bsum_2p+1) against the rows' min pairs.
        let bs = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
        let b8 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        let mut pairs = [0i32; 4];
        _mm_storeu_si128(pairs.as_mut_ptr() as *mut __m128i, b8);
        let dy = _mm256_set1_ps(y.d);
        for h in 0..2 {
            let mut summ = _mm256_setzero_si256();
            for (p, &pair) in pairs.iter().enumerate() {
                let m = x.m.as_ptr().add(32 * p + 16 * h);
                let m = _mm256_cvtepu8_epi16(_mm_loadu_si128(m as *const __m128i));
                summ = _mm256_add_epi32(summ, _mm256_madd_epi16(m, _mm256_set1_epi32(pair)));
            }
            let half8 = |v: *const crate::blocks::F16Le| {
                _mm256_cvtph_ps(_mm_loadu_si128(v.add(8 * h) as *const __m128i))
            };
            let d = _mm256_mul_ps(dy, half8(x.d.as_ptr()));
            let dm = _mm256_mul_ps(dy, half8(x.dmin.as_ptr()));
            let t = _mm256_sub_ps(
                _mm256_mul_ps(d, _mm256_cvtepi32_ps(sumi[h])),
                _mm256_mul_ps(dm, _mm256_cvtepi32_ps(summ)),
            );
            acc[h] = _mm256_add_ps(acc[h], t);
        }
    }
    let mut out = [0f32; ROWS];
    _mm256_storeu_ps(out.as_mut_ptr(), acc[0]);
    _mm256_storeu_ps(out[8..].as_mut_ptr(), acc[1]);
    out
}
