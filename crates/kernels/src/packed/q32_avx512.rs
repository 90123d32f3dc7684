//! AVX-512 VNNI matrix × vector on [`super::q32::PackedQ32`]: 16 weight rows
//! per pass, one 64-byte load of word `t` of every row giving two `zmm` of
//! levels (low and high nibbles, plus the fifth bits by a masked byte add),
//! each against 4 broadcast activation bytes in one `vpdpbusd` (IQ4_NL:
//! after a `vpshufb` of the levels into its table plus 128).
//!
//! Per block a lane sums 32 products of an unsigned level and a signed
//! activation byte, exact in i32; `OFF·Σa` is taken off for Q4_0 / Q5_0 /
//! IQ4_NL,
//! then the float step is the scalar kernel's (`step_d` / `step_dm`: the
//! same multiplies and adds in the same order, no FMA), so the results
//! equal `q32::gemv_scalar` and [`crate::dot::scalar`]'s kernels
//! bit for bit.

#![allow(clippy::missing_safety_doc)]

use super::q32::{Block32, Group};
use super::GROUP16;
use crate::blocks::{BlockQ8_0, KVALUES_IQ4NL_PLUS_128};
use crate::dot::avx512::f16x16;
use std::arch::x86_64::*;

/// Block columns ahead that the weights are prefetched.
const AHEAD: usize = 16;

/// The 16 rows of one group against one Q8_0 activation row (and each of
/// its blocks' quant sums), as f32 lanes.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and F16C available; the group's `qs` and `d` (and
/// `qh` where `B` has fifth bits, `m` where it has a min) and both
/// activation slices hold the same number of block columns.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn gemv<B: Block32>(
    w: Group<'_>,
    (act, sums): (&[BlockQ8_0], &[i32]),
) -> [f32; GROUP16] {
    let nb = w.qs.len();
    debug_assert!(w.d.len() == nb && act.len() == nb && sums.len() == nb);
    debug_assert!(!B::QH || w.qh.len() == nb);
    debug_assert!(!B::MIN || w.m.len() == nb);
    let low = _mm512_set1_epi8(0x0F);
    // IQ4_NL: the table plus 128 in each 128-bit lane (for `vpshufb`).
    let table = if B::LOOKUP {
        _mm512_broadcast_i32x4(_mm_loadu_si128(
            KVALUES_IQ4NL_PLUS_128.as_ptr() as *const __m128i
        ))
    } else {
        _mm512_setzero_si512()
    };
    let fifth = _mm512_set1_epi8(0x10);
    let mut acc = _mm512_setzero_ps();
    for j in 0..nb {
        let p = w.qs.as_ptr().add(j) as *const u8;
        // Every line of the block column AHEAD on (wrapping: a prefetch
        // past the end is harmless and never faults).
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
        // The low-nibble and the high-nibble sums (two chains of 4
        // `vpdpbusd`).
        let (mut lo, mut hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        let q = act.get_unchecked(j).qs.as_ptr();
        for t in 0..4 {
            let v = _mm512_load_si512(p.add(64 * t) as *const __m512i);
            let mut l = _mm512_and_si512(v, low);
            let mut h = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
            if B::QH {
                let bits = &w.qh.get_unchecked(j).0;
                l = _mm512_mask_add_epi8(l, bits[2 * t], l, fifth);
                h = _mm512_mask_add_epi8(h, bits[2 * t + 1], h, fifth);
            }
            if B::LOOKUP {
                l = _mm512_shuffle_epi8(table, l);
                h = _mm512_shuffle_epi8(table, h);
            }
            let bl = _mm512_set1_epi32((q.add(4 * t) as *const i32).read_unaligned());
            let bh = _mm512_set1_epi32((q.add(16 + 4 * t) as *const i32).read_unaligned());
            lo = _mm512_dpbusd_epi32(lo, l, bl);
            hi = _mm512_dpbusd_epi32(hi, h, bh);
        }
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(w.d.as_ptr().add(j) as *const __m256i));
        let da = f16x16(act.get_unchecked(j).d);
        let s = *sums.get_unchecked(j);
        let mut sumi = _mm512_add_epi32(lo, hi);
        if B::OFF != 0 {
            sumi = _mm512_sub_epi32(sumi, _mm512_set1_epi32(B::OFF * s));
        }
        // step_d: sumf + sumi·(d_w·d_a); step_dm adds m_w·(d_a·Σa) to the
        // product before the sum.
        let dd = _mm512_mul_ps(dw, da);
        let prod = _mm512_mul_ps(_mm512_cvtepi32_ps(sumi), dd);
        let term = if B::MIN {
            let mw = _mm512_cvtph_ps(_mm256_loadu_si256(w.m.as_ptr().add(j) as *const __m256i));
            _mm512_add_ps(
                prod,
                _mm512_mul_ps(mw, _mm512_mul_ps(da, _mm512_set1_ps(s as f32))),
            )
        } else {
            prod
        };
        acc = _mm512_add_ps(acc, term);
    }
    let mut out = [0f32; GROUP16];
    _mm512_storeu_ps(out.as_mut_ptr(), acc);
    out
}
