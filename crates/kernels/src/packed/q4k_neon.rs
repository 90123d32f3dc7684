//! NEON matrix × vector on Q4_K packed by 16 rows ([`BlockQ4Kx16`]), with
//! and without `sdot`.

#![allow(clippy::missing_safety_doc)]

use super::q4k::BlockQ4Kx16;
use crate::blocks::BlockQ8K;
use crate::dot::neon::{dot_lane, ld_i8, ld_u8, s8};
use std::arch::aarch64::*;

/// The 16 rows of a packed Q4_K group ([`BlockQ4Kx16`])
/// against one activation row; bit-identical to
/// [`super::q4k::gemv_scalar`]. Each 16-byte quarter of a 64-byte
/// word holds 4 bytes of 4 rows: one lane-indexed `sdot` per quarter and
/// 4-value group, lane = row.
#[inline(always)]
unsafe fn gemv_q4kx16<const DOT: bool>(w: &[BlockQ4Kx16], a: &[BlockQ8K]) -> [f32; 16] {
    let m4 = vdupq_n_u8(0xF);
    let mut sumf = [vdupq_n_f32(0.0); 4];
    for (x, y) in w.iter().zip(a) {
        let mut sumi = [vdupq_n_s32(0); 4];
        for p in 0..4 {
            // s[e][h]: sub-block 2p + e, rows 4h..4h+4.
            let mut s = [[vdupq_n_s32(0); 4]; 2];
            for tq in 0..2 {
                let a0 = ld_i8(&y.qs[64 * p + 16 * tq..]);
                let a1 = ld_i8(&y.qs[64 * p + 32 + 16 * tq..]);
                macro_rules! word {
                    ($l:literal) => {{
                        let t = 4 * tq + $l;
                        let q = &x.qs[512 * p + 64 * t..];
                        for h in 0..4 {
                            let qh = ld_u8(&q[16 * h..]);
                            s[0][h] = dot_lane::<DOT, $l>(s[0][h], s8(vandq_u8(qh, m4)), a0);
                            s[1][h] = dot_lane::<DOT, $l>(s[1][h], s8(vshrq_n_u8::<4>(qh)), a1);
                        }
                    }};
                }
                word!(0);
                word!(1);
                word!(2);
                word!(3);
            }
            for (e, s) in s.iter().enumerate() {
                let sc = &x.sc[16 * (2 * p + e)..];
                for half in 0..2 {
                    let sc = vmovl_u8(vld1_u8(sc[8 * half..].as_ptr()));
                    let sc = [vmovl_u16(vget_low_u16(sc)), vmovl_high_u16(sc)];
                    for k in 0..2 {
                        let h = 2 * half + k;
                        sumi[h] = vmlaq_s32(sumi[h], s[h], vreinterpretq_s32_u32(sc[k]));
                    }
                }
            }
        }
        let bsum: [i32; 8] =
            std::array::from_fn(|j| y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32);
        for h in 0..4 {
            let mut d = [0f32; 4];
            let mut dm = [0f32; 4];
            let mut summ = [0f32; 4];
            for i in 0..4 {
                let r = 4 * h + i;
                d[i] = y.d * x.d[r].to_f32();
                dm[i] = y.d * x.dmin[r].to_f32();
                summ[i] = (0..8)
                    .map(|j| x.scale_min(r, j).1 as i32 * bsum[j])
                    .sum::<i32>() as f32;
            }
            // sumf + (d·sumi − dmin·summ) per lane, as `step_kmin`.
            let prod = vmulq_f32(vld1q_f32(d.as_ptr()), vcvtq_f32_s32(sumi[h]));
            let corr = vmulq_f32(vld1q_f32(dm.as_ptr()), vld1q_f32(summ.as_ptr()));
            sumf[h] = vaddq_f32(sumf[h], vsubq_f32(prod, corr));
        }
    }
    let mut out = [0f32; 16];
    for (h, v) in sumf.iter().enumerate() {
        vst1q_f32(out[4 * h..].as_mut_ptr(), *v);
    }
    out
}

/// [`gemv_q4kx16`] without `sdot`.
#[target_feature(enable = "neon")]
pub unsafe fn q4kx16_gemv(w: &[BlockQ4Kx16], a: &[BlockQ8K]) -> [f32; 16] {
    gemv_q4kx16::<false>(w, a)
}

/// [`gemv_q4kx16`] with `sdot`.
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn q4kx16_gemv_dot(w: &[BlockQ4Kx16], a: &[BlockQ8K]) -> [f32; 16] {
    gemv_q4kx16::<true>(w, a)
}
