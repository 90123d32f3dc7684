//! AVX-512 VNNI matrix × vector on [`BlockQ2Kx8`]: the 8 rows of one group
//! in the 8 lanes of a `ymm` (AVX-512VL).
//!
//! Each 32-byte word load (4 bytes of each row) is masked four times, with
//! `3 << 2k` for bit-pair `k`: the masked bytes are `4^k` × the levels of 4
//! values of group `8h + 2k + t / 4`, at most 192, so they are the unsigned
//! operand of a `vpdpbusd` against 4 broadcast Q8_K bytes, and a lane adds 4
//! products into i32 with nothing shifted. Per 16-value group a lane sums 16
//! products (at most 16·192·128 = 393216), which the rows' 4-bit scales
//! multiply (`vpmulld`), and an arithmetic shift divides the two scaled
//! group sums of a bit-pair by `4^k` (at most 2 · 393216 · 15 < 2²⁴ before
//! it), exact because every term is a multiple of it.
//! The mins go in as the packed Q4_K kernel's do: each row's pair of scale
//! bytes widened to two i16 and shifted down 4, `vpmaddwd` against the pair
//! of activation group sums. The integer sums are exact and the float steps
//! per super-block are the scalar kernel's (`(d_a·d)·sumi − (d_a·dmin)·summ`,
//! summed in order, no FMA), so the results equal
//! [`crate::dot::scalar::q2k_q8k`] bit for bit.

#![allow(clippy::missing_safety_doc)]

use super::{BlockQ2Kx8, GROUP};
use crate::blocks::{BlockQ8K, F16Le};
use std::arch::x86_64::*;

gemv_entry_points!(BlockQ2Kx8, GROUP);

/// `acc` plus one super-block of the 8 rows in the lanes, the float steps
/// of the scalar kernels in their order (no FMA): `(d_a·d)·sumi −
/// (d_a·dmin)·summ`, with `d`, `dmin` the rows' f16 scales and `dy` the
/// activation block's.
#[inline(always)]
unsafe fn kmin_step(
    acc: __m256,
    dy: f32,
    (d, dmin): (&[F16Le; GROUP], &[F16Le; GROUP]),
    (sumi, summ): (__m256i, __m256i),
) -> __m256 {
    let half8 = |h: &[F16Le; GROUP]| _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr() as *const __m128i));
    let dy = _mm256_set1_ps(dy);
    let t = _mm256_sub_ps(
        _mm256_mul_ps(_mm256_mul_ps(dy, half8(d)), _mm256_cvtepi32_ps(sumi)),
        _mm256_mul_ps(_mm256_mul_ps(dy, half8(dmin)), _mm256_cvtepi32_ps(summ)),
    );
    _mm256_add_ps(acc, t)
}

/// [`gemv`] for `M` activation rows (`w.len()` blocks of each).
#[inline(always)]
unsafe fn gemv_rows<const M: usize>(w: &[BlockQ2Kx8], a: [&[BlockQ8K]; M]) -> [[f32; GROUP]; M] {
    let nibble = _mm256_set1_epi32(0xF);
    let mut acc = [_mm256_setzero_ps(); M];
    for (s, x) in w.iter().enumerate() {
        crate::dot::avx2::prefetch_ahead(x);
        let q = x.qs.as_ptr();
        let y: [&BlockQ8K; M] = std::array::from_fn(|m| &a[m][s]);
        let mut sumi = [_mm256_setzero_si256(); M];
        let mut summ = [_mm256_setzero_si256(); M];
        for h in 0..2 {
            for k in 0..4 {
                let mask = _mm256_set1_epi8((3u8 << (2 * k)) as i8);
                // part[m][e]: activation row m's sums of group 8h + 2k + e,
                // 4^k times the true ones.
                let mut part = [[_mm256_setzero_si256(); 2]; M];
                for t in 0..8 {
                    let v = _mm256_load_si256(q.add(256 * h + 32 * t) as *const __m256i);
                    let l = _mm256_and_si256(v, mask);
                    for m in 0..M {
                        let aq = y[m].qs.as_ptr().add(128 * h + 32 * k + 4 * t);
                        let b = _mm256_set1_epi32((aq as *const i32).read_unaligned());
                        part[m][t / 4] = _mm256_dpbusd_epi32(part[m][t / 4], l, b);
                    }
                }
                let p = 4 * h + k;
                // Each row's scale bytes of groups 2p, 2p + 1 as two i16.
                let s16 = _mm256_cvtepu8_epi16(_mm_loadu_si128(
                    x.sc.as_ptr().add(16 * p) as *const __m128i
                ));
                let sc0 = _mm256_and_si256(s16, nibble);
                let sc1 = _mm256_and_si256(_mm256_srli_epi32::<16>(s16), nibble);
                let mins = _mm256_srli_epi16::<4>(s16);
                let shift = _mm_cvtsi32_si128(2 * k as i32);
                for m in 0..M {
                    let scaled = _mm256_add_epi32(
                        _mm256_mullo_epi32(part[m][0], sc0),
                        _mm256_mullo_epi32(part[m][1], sc1),
                    );
                    sumi[m] = _mm256_add_epi32(sumi[m], _mm256_sra_epi32(scaled, shift));
                    let (b0, b1) = (y[m].bsums[2 * p], y[m].bsums[2 * p + 1]);
                    let bs = (b0 as u16 as u32) | (b1 as u16 as u32) << 16;
                    let mm = _mm256_madd_epi16(mins, _mm256_set1_epi32(bs as i32));
                    summ[m] = _mm256_add_epi32(summ[m], mm);
                }
            }
        }
        for m in 0..M {
            acc[m] = kmin_step(acc[m], y[m].d, (&x.d, &x.dmin), (sumi[m], summ[m]));
        }
    }
    let mut out = [[0f32; GROUP]; M];
    for (o, v) in out.iter_mut().zip(acc) {
        _mm256_storeu_ps(o.as_mut_ptr(), v);
    }
    out
}
