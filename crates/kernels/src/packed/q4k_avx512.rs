//! AVX-512 VNNI matrix × vector on [`BlockQ4Kx8`]: the 8 rows of one group
//! in the 8 lanes of a `ymm` (AVX-512VL), as in the AVX2 kernel, with one
//! `vpdpbusd` in place of its `vpmaddubsw` + add.
//!
//! The 32-byte word load `qs[256p + 32t..]` (4 bytes of each of the 8 rows)
//! against 4 broadcast activation bytes: unsigned nibbles × signed Q8_K
//! bytes, 4 products per lane added straight into i32. Per 32-value
//! sub-block a lane sums 32 products, at most 32·15·128 = 61440, so the
//! rows' 6-bit scales are applied with `vpmulld`. The high nibbles are not
//! shifted down: `v & 0xF0` is 16 × the level, its scaled sums (at most
//! 4 sub-blocks · 16·61440·63 < 2²⁸ per super-block) are exact multiples of
//! 16, and one arithmetic shift per super-block divides them back (one
//! instruction fewer per 32 weight bytes: 38–44 against 27–33 GiB/s on one
//! thread from L3). The integer sums are exact
//! and the float steps per super-block are the AVX2 and scalar kernels'
//! (`(d_a·d)·sumi − (d_a·dmin)·summ`, summed in order, no FMA), so the
//! results equal [`crate::dot::scalar::q4k_q8k`] bit for bit.
//!
//! One group per pass, its blocks read front to back. A form that took two
//! groups at once (16 rows in the lanes of a `zmm`, so two streams a whole
//! group row apart) ran as fast from L3 but at two thirds of this speed on
//! matrices read from memory (AMD EPYC Zen 4, 2 threads, `examples/
//! stream_timing`, 4096×4096 copies totalling 1 GiB: 17.9 against 26.9 GiB/s).

#![allow(clippy::missing_safety_doc)]

use super::q4k::{BlockQ4Kx8, GROUP};
use crate::blocks::BlockQ8K;
use std::arch::x86_64::*;

gemv_entry_points!(BlockQ4Kx8);

/// [`gemv`] for `M` activation rows (`w.len()` blocks of each).
#[inline(always)]
unsafe fn gemv_rows<const M: usize>(w: &[BlockQ4Kx8], a: [&[BlockQ8K]; M]) -> [[f32; GROUP]; M] {
    let m4 = _mm256_set1_epi8(0xF);
    let m4h = _mm256_set1_epi8(0xF0u8 as i8);
    // One activation row has two accumulators per nibble half (even and
    // odd words) to shorten the `vpdpbusd` dependency chains; several rows
    // have chains enough.
    let chains = if M == 1 { 2 } else { 1 };
    let mut acc = [_mm256_setzero_ps(); M];
    for (s, x) in w.iter().enumerate() {
        crate::dot::avx2::prefetch_ahead(x);
        let q = x.qs.as_ptr();
        let y: [&BlockQ8K; M] = std::array::from_fn(|m| &a[m][s]);
        let mut sumi = [_mm256_setzero_si256(); M];
        let mut sumh = [_mm256_setzero_si256(); M];
        for p in 0..4 {
            let mut lo = [[_mm256_setzero_si256(); 2]; M];
            let mut hi = [[_mm256_setzero_si256(); 2]; M];
            for t in 0..8 {
                let v = _mm256_load_si256(q.add(256 * p + 32 * t) as *const __m256i);
                let l = _mm256_and_si256(v, m4);
                let h = _mm256_and_si256(v, m4h);
                let c = t % chains;
                for m in 0..M {
                    let aq = y[m].qs.as_ptr();
                    let al = (aq.add(64 * p + 4 * t) as *const i32).read_unaligned();
                    let ah = (aq.add(64 * p + 32 + 4 * t) as *const i32).read_unaligned();
                    lo[m][c] = _mm256_dpbusd_epi32(lo[m][c], l, _mm256_set1_epi32(al));
                    hi[m][c] = _mm256_dpbusd_epi32(hi[m][c], h, _mm256_set1_epi32(ah));
                }
            }
            // Scales of sub-blocks 2p (bytes 0..8) and 2p + 1 (bytes 8..16),
            // widened to the 8 lanes.
            let sc = _mm_loadu_si128(x.sc.as_ptr().add(16 * p) as *const __m128i);
            let sl = _mm256_cvtepu8_epi32(sc);
            let sh = _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(sc));
            for m in 0..M {
                let l = _mm256_add_epi32(lo[m][0], lo[m][1]);
                let h = _mm256_add_epi32(hi[m][0], hi[m][1]);
                sumi[m] = _mm256_add_epi32(sumi[m], _mm256_mullo_epi32(l, sl));
                sumh[m] = _mm256_add_epi32(sumh[m], _mm256_mullo_epi32(h, sh));
            }
        }
        // The rows' min pairs (m_2p, m_2p+1) as i16 in each lane.
        let mins: [__m256i; 4] = std::array::from_fn(|p| {
            _mm256_cvtepu8_epi16(_mm_loadu_si128(x.m.as_ptr().add(16 * p) as *const __m128i))
        });
        for m in 0..M {
            let sumi = _mm256_add_epi32(sumi[m], _mm256_srai_epi32::<4>(sumh[m]));
            // Σ_j m_j·bsum_j as in the AVX2 kernel: (bsum_2p, bsum_2p+1)
            // pairs against each row's min pairs.
            let bs = _mm256_loadu_si256(y[m].bsums.as_ptr() as *const __m256i);
            let b8 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            let mut pairs = [0i32; 4];
            _mm_storeu_si128(pairs.as_mut_ptr() as *mut __m128i, b8);
            let mut summ = _mm256_setzero_si256();
            for (mp, &pair) in mins.iter().zip(&pairs) {
                summ = _mm256_add_epi32(summ, _mm256_madd_epi16(*mp, _mm256_set1_epi32(pair)));
            }
            acc[m] = kmin_step(acc[m], y[m].d, (&x.d, &x.dmin), (sumi, summ));
        }
    }
    lanes(acc)
}
