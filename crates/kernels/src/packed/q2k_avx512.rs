//! AVX-512 VNNI matrix × vector on [`BlockQ2Kx8`]: the 8 rows of one group
//! in the 8 lanes of a `ymm` (AVX-512VL).
//!
//! Each 32-byte word load (4 bytes of each row) is masked four times, with
//! `3 << 2k` for bit-pair `k`: the masked bytes are `4^k` × the levels of 4
//! values of group `8h + 2k + t / 4`, at most 192, so they are the unsigned
//! operand of a `vpdpbusd` against 4 broadcast Q8_K bytes, and a lane adds 4
//! products into i32 with nothing shifted. Per 16-value group a lane sums 16
//! products (at most 16·192·128 = 393216), which the rows' 4-bit scales
//! multiply (`vpmulld`); the sums of bit-pair `k` are kept apart (at most 4
//! groups · 393216 · 15 < 2²⁵) and divided by `4^k` once per super-block
//! with an arithmetic shift, exact because every term is a multiple of it.
//! The mins go in as the packed Q4_K kernel's do: each row's pair of scale
//! bytes widened to two i16 and shifted down 4, `vpmaddwd` against the pair
//! of activation group sums. The integer sums are exact and the float steps
//! per super-block are the scalar kernel's (`(d_a·d)·sumi − (d_a·dmin)·summ`,
//! summed in order, no FMA), so the results equal
//! [`crate::dot::scalar::q2k_q8k`] bit for bit.

#![allow(clippy::missing_safety_doc)]

use super::q2k::{BlockQ2Kx8, GROUP};
use crate::blocks::BlockQ8K;
use std::arch::x86_64::*;

/// The 8 rows' dot products with one Q8_K activation row, as f32 lanes.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn gemv(w: &[BlockQ2Kx8], a: &[BlockQ8K]) -> [f32; GROUP] {
    let masks = [0, 1, 2, 3].map(|k| _mm256_set1_epi8((3u8 << (2 * k)) as i8));
    let nibble = _mm256_set1_epi32(0xF);
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        crate::dot::avx2::prefetch_ahead(x);
        let q = x.qs.as_ptr();
        let aq = y.qs.as_ptr();
        // Bit-pair k's scaled sums, 4^k times the true ones.
        let mut sumk = [_mm256_setzero_si256(); 4];
        let mut summ = _mm256_setzero_si256();
        for h in 0..2 {
            // part[k][e]: the sums of group 8h + 2k + e.
            let mut part = [[_mm256_setzero_si256(); 2]; 4];
            for t in 0..8 {
                let v = _mm256_load_si256(q.add(256 * h + 32 * t) as *const __m256i);
                for (k, part_k) in part.iter_mut().enumerate() {
                    let b = (aq.add(128 * h + 32 * k + 4 * t) as *const i32).read_unaligned();
                    let l = _mm256_and_si256(v, masks[k]);
                    part_k[t / 4] = _mm256_dpbusd_epi32(part_k[t / 4], l, _mm256_set1_epi32(b));
                }
            }
            for (k, part_k) in part.iter().enumerate() {
                let p = 4 * h + k;
                // Each row's scale bytes of groups 2p, 2p + 1 as two i16.
                let s16 = _mm256_cvtepu8_epi16(_mm_loadu_si128(
                    x.sc.as_ptr().add(16 * p) as *const __m128i
                ));
                let sc0 = _mm256_and_si256(s16, nibble);
                let sc1 = _mm256_and_si256(_mm256_srli_epi32::<16>(s16), nibble);
                sumk[k] = _mm256_add_epi32(sumk[k], _mm256_mullo_epi32(part_k[0], sc0));
                sumk[k] = _mm256_add_epi32(sumk[k], _mm256_mullo_epi32(part_k[1], sc1));
                let bs = (y.bsums[2 * p] as u16 as u32) | (y.bsums[2 * p + 1] as u16 as u32) << 16;
                let mins = _mm256_srli_epi16::<4>(s16);
                summ =
                    _mm256_add_epi32(summ, _mm256_madd_epi16(mins, _mm256_set1_epi32(bs as i32)));
            }
        }
        let sumi = _mm256_add_epi32(
            _mm256_add_epi32(sumk[0], _mm256_srai_epi32::<2>(sumk[1])),
            _mm256_add_epi32(
                _mm256_srai_epi32::<4>(sumk[2]),
                _mm256_srai_epi32::<6>(sumk[3]),
            ),
        );
        let dy = _mm256_set1_ps(y.d);
        let half8 = |h: &[crate::blocks::F16Le; GROUP]| {
            _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr() as *const __m128i))
        };
        let d = _mm256_mul_ps(dy, half8(&x.d));
        let dm = _mm256_mul_ps(dy, half8(&x.dmin));
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
