//! AVX2 matrix × vector on [`super::q32::PackedQ32`]: 16 weight rows per
//! pass, the two 32-byte halves of each 64-byte word (rows 0..8 and 8..16)
//! against the same 4 broadcast activation bytes, one `vpmaddubsw` per half
//! for the low nibbles and one for the high ones.
//!
//! `vpmaddubsw` adds pairs of products in i16, so each type keeps its
//! block's sums below 2¹⁵ (activations −127..127):
//! - Q4_0, Q4_1: levels 0..15, pairs at most 2·15·127 = 3810; the 8 of a
//!   block add up in one i16 lane (30480).
//! - Q5_0, Q5_1: the fifth bits, spread from their byte masks to 0x10 per
//!   byte, are or-ed into the levels (0..31, pairs at most 7874): the low
//!   and the high nibbles' levels add up in two i16 lanes of 4 (31496).
//! - IQ4_NL: the table plus 128 (1..241) would overflow a pair, so it is
//!   looked up (`vpshufb`) as its high and low nibbles, each 0..15 like
//!   Q4_0's levels, in two i16 lanes; the block's sum is 16·high + low.
//!
//! Each lane is widened by one `vpmaddwd` per block. The integer sums are
//! exact and the float step is the scalar kernel's (no FMA), so the
//! results equal `q32::gemv_scalar` and [`crate::dot::scalar`]'s kernels
//! bit for bit.

#![allow(clippy::missing_safety_doc)]

use super::q32::{Block32, Group};
use super::GROUP16;
use crate::blocks::{BlockQ8_0, KVALUES_IQ4NL_PLUS_128};
use crate::dot::avx2::{f16x8, fifth_bits};
use std::arch::x86_64::*;

/// Block columns ahead that the weights are prefetched.
const AHEAD: usize = 4;

/// The 16 rows of one group against one Q8_0 activation row (and each of
/// its blocks' quant sums), as f32 lanes.
///
/// # Safety
/// AVX2, FMA and F16C available; the group's `qs` and `d` (and `qh` where
/// `B` has fifth bits, `m` where it has a min) and both activation slices
/// hold the same number of block columns.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemv<B: Block32>(w: Group<'_>, a: (&[BlockQ8_0], &[i32])) -> [f32; GROUP16] {
    gemv_rows::<B, 1>(w, [a])[0]
}

/// [`gemv`] for 4 activation rows in one pass over the weights, each
/// weight word loaded and unpacked once for all 4 (results equal to 4
/// calls of [`gemv`]).
///
/// # Safety
/// As [`gemv`], for each activation row.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemv4<B: Block32>(
    w: Group<'_>,
    a: [(&[BlockQ8_0], &[i32]); 4],
) -> [[f32; GROUP16]; 4] {
    gemv_rows::<B, 4>(w, a)
}

/// `x` (a table or a byte mask) in each 128-bit lane, for `vpshufb`.
#[inline(always)]
unsafe fn lanes16(x: [u8; 16]) -> __m256i {
    _mm256_broadcastsi128_si256(_mm_loadu_si128(x.as_ptr() as *const __m128i))
}

#[inline(always)]
unsafe fn gemv_rows<B: Block32, const M: usize>(
    w: Group<'_>,
    a: [(&[BlockQ8_0], &[i32]); M],
) -> [[f32; GROUP16]; M] {
    let nb = w.qs.len();
    debug_assert!(w.d.len() == nb && a.iter().all(|a| a.0.len() == nb && a.1.len() == nb));
    debug_assert!(!B::MIN || w.m.len() == nb);
    debug_assert!(!B::QH || w.qh.len() == nb);
    let low = _mm256_set1_epi8(0x0F);
    // How each i16 lane is widened: the two lanes of the fifth-bit types
    // both by 1, IQ4_NL's high-nibble lane by 16.
    let ones = _mm256_set1_epi16(1);
    let weight0 = if B::LOOKUP {
        _mm256_set1_epi16(16)
    } else {
        ones
    };
    // IQ4_NL: the table plus 128, its high and its low nibbles.
    let (tab_hi, tab_lo) = if B::LOOKUP {
        (
            lanes16(KVALUES_IQ4NL_PLUS_128.map(|v| v >> 4)),
            lanes16(KVALUES_IQ4NL_PLUS_128.map(|v| v & 0xF)),
        )
    } else {
        (_mm256_setzero_si256(), _mm256_setzero_si256())
    };
    let mut acc = [[_mm256_setzero_ps(); 2]; M];
    for j in 0..nb {
        let p = w.qs.as_ptr().add(j) as *const u8;
        for line in 0..4 {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(AHEAD * 256 + 64 * line) as *const i8);
        }
        _mm_prefetch::<_MM_HINT_T0>(w.d.as_ptr().wrapping_add(j + AHEAD) as *const i8);
        if B::MIN {
            _mm_prefetch::<_MM_HINT_T0>(w.m.as_ptr().wrapping_add(j + AHEAD) as *const i8);
        }
        if B::QH {
            _mm_prefetch::<_MM_HINT_T0>(w.qh.as_ptr().wrapping_add(j + AHEAD) as *const i8);
        }
        // Per activation row and half, the block's i16 pair sums (see the
        // module docs for what each of the two lanes holds).
        let mut s16 = [[[_mm256_setzero_si256(); 2]; 2]; M];
        for t in 0..4 {
            for h in 0..2 {
                let v = _mm256_load_si256(p.add(64 * t + 32 * h) as *const __m256i);
                let mut l = _mm256_and_si256(v, low);
                let mut hn = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
                if B::QH {
                    // Masks 2t (levels 4t..) and 2t + 1 (16 + 4t..), the
                    // 32 bits of this half's 8 rows.
                    let bits = w.qh.as_ptr().add(j) as *const u32;
                    let mask = |m: usize| fifth_bits(bits.add(2 * m + h).read_unaligned());
                    l = _mm256_or_si256(l, mask(2 * t));
                    hn = _mm256_or_si256(hn, mask(2 * t + 1));
                }
                let (l1, h1) = if B::LOOKUP {
                    let parts = (
                        _mm256_shuffle_epi8(tab_lo, l),
                        _mm256_shuffle_epi8(tab_lo, hn),
                    );
                    l = _mm256_shuffle_epi8(tab_hi, l);
                    hn = _mm256_shuffle_epi8(tab_hi, hn);
                    parts
                } else {
                    (l, hn)
                };
                for (k, &(act, _)) in a.iter().enumerate() {
                    let q = act.get_unchecked(j).qs.as_ptr();
                    let al = _mm256_set1_epi32((q.add(4 * t) as *const i32).read_unaligned());
                    let ah = _mm256_set1_epi32((q.add(16 + 4 * t) as *const i32).read_unaligned());
                    let s = &mut s16[k][h];
                    // Q5: the low and the high levels in their own lanes.
                    let hi = usize::from(B::QH);
                    s[0] = _mm256_add_epi16(s[0], _mm256_maddubs_epi16(l, al));
                    s[hi] = _mm256_add_epi16(s[hi], _mm256_maddubs_epi16(hn, ah));
                    if B::LOOKUP {
                        s[1] = _mm256_add_epi16(s[1], _mm256_maddubs_epi16(l1, al));
                        s[1] = _mm256_add_epi16(s[1], _mm256_maddubs_epi16(h1, ah));
                    }
                }
            }
        }
        let half8 = |v: &[crate::blocks::F16Le; GROUP16], h: usize| {
            _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(8 * h) as *const __m128i))
        };
        for (k, &(act, sums)) in a.iter().enumerate() {
            let da = f16x8(act.get_unchecked(j).d);
            let s = *sums.get_unchecked(j);
            for h in 0..2 {
                let [s0, s1] = s16[k][h];
                let mut sumi = _mm256_madd_epi16(s0, weight0);
                if B::QH || B::LOOKUP {
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s1, ones));
                }
                if B::OFF != 0 {
                    sumi = _mm256_sub_epi32(sumi, _mm256_set1_epi32(B::OFF * s));
                }
                // step_d: sumf + sumi·(d_w·d_a); step_dm adds m_w·(d_a·Σa)
                // to the product before the sum.
                let dd = _mm256_mul_ps(half8(w.d.get_unchecked(j), h), da);
                let prod = _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), dd);
                let term = if B::MIN {
                    let mw = half8(w.m.get_unchecked(j), h);
                    _mm256_add_ps(
                        prod,
                        _mm256_mul_ps(mw, _mm256_mul_ps(da, _mm256_set1_ps(s as f32))),
                    )
                } else {
                    prod
                };
                acc[k][h] = _mm256_add_ps(acc[k][h], term);
            }
        }
    }
    let mut out = [[0f32; GROUP16]; M];
    for (o, [lo, hi]) in out.iter_mut().zip(acc) {
        _mm256_storeu_ps(o.as_mut_ptr(), lo);
        _mm256_storeu_ps(o[8..].as_mut_ptr(), hi);
    }
    out
}
