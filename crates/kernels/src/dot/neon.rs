//! AArch64 Advanced SIMD dot products, same contracts as [`super::scalar`]
//! and bit-identical to it: the integer sums of a block are exact in any
//! order, and the float steps are the scalar kernels' own
//! ([`super::scalar::step_d`] and its siblings).
//!
//! One source, two paths: every kernel takes `const DOT: bool`.
//! - `DOT = true` ([`crate::Isa::NeonDot`]) multiplies 4 byte pairs per lane
//!   with `sdot` (Armv8.2 dot product). Its intrinsic is not stable Rust, so
//!   it is emitted by inline assembly inside functions compiled with the
//!   `dotprod` feature.
//! - `DOT = false` ([`crate::Isa::Neon`]) uses the widening multiplies every
//!   AArch64 CPU has (`smull` + `sadalp`).
//!
//! The entry points are `unsafe` only because they are compiled for CPU
//! features the caller must have checked ([`crate::Isa::available`]); all
//! memory accesses are loads inside fixed-size block arrays.

#![allow(clippy::missing_safety_doc)]

use super::scalar::{q8_sum, step_d, step_dm, step_iq, step_kmin, step_ksym};
use crate::blocks::*;
use std::arch::aarch64::*;
use std::arch::asm;

/// `acc + Σ a·b` over the 16 byte pairs (which lane holds which products
/// differs between the paths; only the total is used).
#[inline(always)]
unsafe fn dot<const DOT: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    if DOT {
        let mut acc = acc;
        // SAFETY: `sdot` reads and writes only these registers; it is
        // reached only from the `dotprod` entry points, which run only where
        // `Isa::NeonDot` was detected.
        asm!(
            "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
            inout(vreg) acc,
            in(vreg) a,
            in(vreg) b,
            options(pure, nomem, nostack)
        );
        acc
    } else {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

/// Lane `i` of `acc` plus the dot product of bytes `4i..4i+4` of `w` with
/// bytes `4L..4L+4` of `a` (four weight rows against one 4-value group).
#[inline(always)]
pub(crate) unsafe fn dot_lane<const DOT: bool, const L: i32>(
    acc: int32x4_t,
    w: int8x16_t,
    a: int8x16_t,
) -> int32x4_t {
    if DOT {
        let mut acc = acc;
        // SAFETY: as in `dot`.
        asm!(
            "sdot {0:v}.4s, {1:v}.16b, {2:v}.4b[{l}]",
            inout(vreg) acc,
            in(vreg) w,
            in(vreg) a,
            l = const L,
            options(pure, nomem, nostack)
        );
        acc
    } else {
        let b = vreinterpretq_s8_s32(vdupq_laneq_s32::<L>(vreinterpretq_s32_s8(a)));
        let lo = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(b)));
        let hi = vpaddlq_s16(vmull_high_s8(w, b));
        vaddq_s32(acc, vpaddq_s32(lo, hi))
    }
}

#[inline(always)]
pub(crate) unsafe fn ld_u8(p: &[u8]) -> uint8x16_t {
    debug_assert!(p.len() >= 16);
    vld1q_u8(p.as_ptr())
}

#[inline(always)]
pub(crate) unsafe fn ld_i8(p: &[i8]) -> int8x16_t {
    debug_assert!(p.len() >= 16);
    vld1q_s8(p.as_ptr())
}

#[inline(always)]
pub(crate) unsafe fn s8(v: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(v)
}

/// `(v >> n) & mask` per byte, for a run-time `n`.
#[inline(always)]
unsafe fn bits(v: uint8x16_t, n: usize, mask: u8) -> uint8x16_t {
    vandq_u8(vshlq_u8(v, vdupq_n_s8(-(n as i8))), vdupq_n_u8(mask))
}

/// The 32 nibbles of a 32-value block: low nibbles (values 0..16), high
/// nibbles (16..32).
#[inline(always)]
unsafe fn nibbles(qs: &[u8; 16]) -> (uint8x16_t, uint8x16_t) {
    let q = ld_u8(qs);
    (vandq_u8(q, vdupq_n_u8(0xF)), vshrq_n_u8::<4>(q))
}

/// Σ over 32 activation values of `lo·y[..16] + hi·y[16..32]`.
#[inline(always)]
unsafe fn dot32<const DOT: bool>(lo: int8x16_t, hi: int8x16_t, y: &[i8]) -> i32 {
    let acc = dot::<DOT>(vdupq_n_s32(0), lo, ld_i8(&y[..16]));
    vaddvq_s32(dot::<DOT>(acc, hi, ld_i8(&y[16..32])))
}

/// The symmetric 32-value types (Q4_0, Q5_0, Q8_0, IQ4_NL): `values(x)`
/// gives a block's 32 signed values and its scale.
#[inline(always)]
unsafe fn blocks_d<const DOT: bool, B>(
    w: &[B],
    a: &[BlockQ8_0],
    values: impl Fn(&B) -> (int8x16_t, int8x16_t, F16Le),
) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (lo, hi, d) = values(x);
        sumf = step_d(sumf, dot32::<DOT>(lo, hi, &y.qs), d, y.d);
    }
    sumf
}

/// The 32-value types with a min (Q4_1, Q5_1): `levels(x)` gives a block's
/// 32 unsigned levels and its scale and min.
#[inline(always)]
unsafe fn blocks_dm<const DOT: bool, B>(
    w: &[B],
    a: &[BlockQ8_1],
    levels: impl Fn(&B) -> (uint8x16_t, uint8x16_t, (F16Le, F16Le)),
) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (lo, hi, dm) = levels(x);
        let sumi = dot32::<DOT>(s8(lo), s8(hi), &y.qs);
        sumf = step_dm(sumf, sumi, q8_sum(y), dm, y.d);
    }
    sumf
}

/// Unsigned levels minus a fixed offset, as signed values.
#[inline(always)]
unsafe fn centred(v: uint8x16_t, off: i8) -> int8x16_t {
    vsubq_s8(s8(v), vdupq_n_s8(off))
}

#[inline(always)]
unsafe fn q4_0<const DOT: bool>(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    blocks_d::<DOT, _>(w, a, |x| {
        let (lo, hi) = nibbles(&x.qs);
        (centred(lo, 8), centred(hi, 8), x.d)
    })
}

#[inline(always)]
unsafe fn q4_1<const DOT: bool>(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    blocks_dm::<DOT, _>(w, a, |x| {
        let (lo, hi) = nibbles(&x.qs);
        (lo, hi, (x.d, x.m))
    })
}

#[inline(always)]
unsafe fn q8_0<const DOT: bool>(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    blocks_d::<DOT, _>(w, a, |x| (ld_i8(&x.qs[..16]), ld_i8(&x.qs[16..]), x.d))
}

/// The fifth bits of a 32-value Q5 block as bytes of 0 or 16: values 0..16
/// (bits 0..16 of `qh`, little-endian) and 16..32.
#[inline(always)]
unsafe fn fifth_bits(qh: [u8; 4]) -> (uint8x16_t, uint8x16_t) {
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let bit = vld1q_u8(BIT.as_ptr());
    let sixteen = vdupq_n_u8(16);
    let half = |b0: u8, b1: u8| {
        let v = vcombine_u8(vdup_n_u8(b0), vdup_n_u8(b1));
        vandq_u8(vtstq_u8(v, bit), sixteen)
    };
    (half(qh[0], qh[1]), half(qh[2], qh[3]))
}

/// The 32 unsigned 5-bit levels of a Q5_0 / Q5_1 block.
#[inline(always)]
unsafe fn q5_levels(qs: &[u8; 16], qh: [u8; 4]) -> (uint8x16_t, uint8x16_t) {
    let (lo, hi) = nibbles(qs);
    let (hlo, hhi) = fifth_bits(qh);
    (vorrq_u8(lo, hlo), vorrq_u8(hi, hhi))
}

#[inline(always)]
unsafe fn q5_0<const DOT: bool>(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    blocks_d::<DOT, _>(w, a, |x| {
        let (lo, hi) = q5_levels(&x.qs, x.qh);
        (centred(lo, 16), centred(hi, 16), x.d)
    })
}

#[inline(always)]
unsafe fn q5_1<const DOT: bool>(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    blocks_dm::<DOT, _>(w, a, |x| {
        let (lo, hi) = q5_levels(&x.qs, x.qh);
        (lo, hi, (x.d, x.m))
    })
}

/// The 32 IQ4 values of 16 index bytes (low nibbles: values 0..16, high:
/// 16..32), looked up in [`KVALUES_IQ4NL`] (`table`).
#[inline(always)]
unsafe fn iq4_values(table: int8x16_t, qs: &[u8]) -> (int8x16_t, int8x16_t) {
    let q = ld_u8(qs);
    let lo = vandq_u8(q, vdupq_n_u8(0xF));
    (vqtbl1q_s8(table, lo), vqtbl1q_s8(table, vshrq_n_u8::<4>(q)))
}

#[inline(always)]
unsafe fn iq4_nl<const DOT: bool>(w: &[BlockIQ4NL], a: &[BlockQ8_0]) -> f32 {
    let table = vld1q_s8(KVALUES_IQ4NL.as_ptr());
    blocks_d::<DOT, _>(w, a, |x| {
        let (lo, hi) = iq4_values(table, &x.qs);
        (lo, hi, x.d)
    })
}

#[inline(always)]
unsafe fn iq4_xs<const DOT: bool>(w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32 {
    let table = vld1q_s8(KVALUES_IQ4NL.as_ptr());
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for ib in 0..8 {
            let (lo, hi) = iq4_values(table, &x.qs[16 * ib..]);
            sumi += x.sub_scale(ib) * dot32::<DOT>(lo, hi, &y.qs[32 * ib..]);
        }
        sumf = step_ksym(sumf, y.d, x.d, sumi);
    }
    sumf
}

/// `Σ_g sc(g) · Σ_{16 values of group g} v·y` over one super-block whose
/// levels come as 16-value groups: `group(n, k, h)` gives the levels of
/// values `128n + 32k + 16h ..+16` (group `8n + 2k + h`), the layout shared
/// by Q2_K, Q3_K and Q6_K.
#[inline(always)]
unsafe fn grouped16<const DOT: bool>(
    y: &BlockQ8K,
    sc: impl Fn(usize) -> i32,
    group: impl Fn(usize, usize, usize) -> uint8x16_t,
) -> i32 {
    let mut acc = vdupq_n_s32(0);
    for n in 0..2 {
        for k in 0..4 {
            for h in 0..2 {
                let e = 128 * n + 32 * k + 16 * h;
                let s = dot::<DOT>(vdupq_n_s32(0), s8(group(n, k, h)), ld_i8(&y.qs[e..]));
                acc = vmlaq_n_s32(acc, s, sc(e / 16));
            }
        }
    }
    vaddvq_s32(acc)
}

#[inline(always)]
unsafe fn q2k<const DOT: bool>(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let summ: i32 = (0..16)
            .map(|j| (x.scales[j] >> 4) as i32 * y.bsums[j] as i32)
            .sum();
        // value 128n + 32k + l: bits 2k.. of qs[32n + l].
        let sumi = grouped16::<DOT>(
            y,
            |g| (x.scales[g] & 0xF) as i32,
            |n, k, h| bits(ld_u8(&x.qs[32 * n + 16 * h..]), 2 * k, 3),
        );
        sumf = step_kmin(sumf, y.d, (x.d, x.dmin), (sumi, summ));
    }
    sumf
}

#[inline(always)]
unsafe fn q3k<const DOT: bool>(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let sc = q3k_scales(&x.scales);
        let corr: i32 = (0..16).map(|g| sc[g] as i32 * y.bsums[g] as i32).sum();
        // Unsigned level: bits 2k.. of qs[32n + l] | bit 4n + k of hmask[l] << 2.
        let sumi = grouped16::<DOT>(
            y,
            |g| sc[g] as i32,
            |n, k, h| {
                let low = bits(ld_u8(&x.qs[32 * n + 16 * h..]), 2 * k, 3);
                let high = bits(ld_u8(&x.hmask[16 * h..]), 4 * n + k, 1);
                vorrq_u8(low, vshlq_n_u8::<2>(high))
            },
        ) - 4 * corr;
        sumf = step_ksym(sumf, y.d, x.d, sumi);
    }
    sumf
}

#[inline(always)]
unsafe fn q6k<const DOT: bool>(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let corr: i32 = (0..16)
            .map(|g| x.scales[g] as i32 * y.bsums[g] as i32)
            .sum();
        // value 128n + 32k + l: nibble of ql[64n + 32(k % 2) + l] (high for
        // k >= 2) | bits 2k.. of qh[32n + l] << 4.
        let sumi = grouped16::<DOT>(
            y,
            |g| x.scales[g] as i32,
            |n, k, h| {
                let l = ld_u8(&x.ql[64 * n + 32 * (k % 2) + 16 * h..]);
                let low = bits(l, 4 * (k / 2), 0xF);
                let high = bits(ld_u8(&x.qh[32 * n + 16 * h..]), 2 * k, 3);
                vorrq_u8(low, vshlq_n_u8::<4>(high))
            },
        ) - 32 * corr;
        sumf = step_ksym(sumf, y.d, x.d, sumi);
    }
    sumf
}

/// Q4_K / Q5_K: `Σ_j sc_j · Σ_{32 values of sub-block j} v·y`, the levels of
/// sub-block `j` given by `levels(j)` as two 16-value halves.
#[inline(always)]
unsafe fn k4_sumi<const DOT: bool>(
    scales: &[u8; 12],
    y: &BlockQ8K,
    levels: impl Fn(usize) -> (uint8x16_t, uint8x16_t),
) -> (i32, i32) {
    let mut acc = vdupq_n_s32(0);
    let mut summ = 0i32;
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, scales);
        summ += m as i32 * (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32);
        let (v0, v1) = levels(j);
        let s = dot::<DOT>(vdupq_n_s32(0), s8(v0), ld_i8(&y.qs[32 * j..]));
        let s = dot::<DOT>(s, s8(v1), ld_i8(&y.qs[32 * j + 16..]));
        acc = vmlaq_n_s32(acc, s, sc as i32);
    }
    (vaddvq_s32(acc), summ)
}

#[inline(always)]
unsafe fn q4k<const DOT: bool>(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        // Sub-block j: the low (even j) or high nibbles of qs[32(j/2)..+32].
        let sums = k4_sumi::<DOT>(&x.scales, y, |j| {
            let q = &x.qs[32 * (j / 2)..];
            let sh = 4 * (j % 2);
            (bits(ld_u8(q), sh, 0xF), bits(ld_u8(&q[16..]), sh, 0xF))
        });
        sumf = step_kmin(sumf, y.d, (x.d, x.dmin), sums);
    }
    sumf
}

#[inline(always)]
unsafe fn q5k<const DOT: bool>(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        // As Q4_K, plus bit j of qh[l] as bit 4.
        let sums = k4_sumi::<DOT>(&x.scales, y, |j| {
            let q = &x.qs[32 * (j / 2)..];
            let sh = 4 * (j % 2);
            let half = |i: usize| {
                let hb = bits(ld_u8(&x.qh[16 * i..]), j, 1);
                vorrq_u8(bits(ld_u8(&q[16 * i..]), sh, 0xF), vshlq_n_u8::<4>(hb))
            };
            (half(0), half(1))
        });
        sumf = step_kmin(sumf, y.d, (x.d, x.dmin), sums);
    }
    sumf
}

/// f16 weights × f32 activations (`min(w.len() / 2, x.len())` values),
/// summed in eight f32 lanes: equal to the scalar kernel to f32 rounding.
/// No integer products, so one path for both `Isa::Neon` and `Isa::NeonDot`.
#[target_feature(enable = "neon")]
pub unsafe fn f16_f32(w: &[u8], x: &[f32]) -> f32 {
    use half::slice::HalfFloatSliceExt;
    const CHUNK: usize = 64;
    let n = (w.len() / 2).min(x.len());
    let mut acc = [vdupq_n_f32(0.0); 2];
    let mut buf_h = [half::f16::ZERO; CHUNK];
    let mut buf = [0f32; CHUNK];
    let mut tail = 0f32;
    for c0 in (0..n).step_by(CHUNK) {
        let len = CHUNK.min(n - c0);
        for (i, h) in buf_h[..len].iter_mut().enumerate() {
            let b = 2 * (c0 + i);
            *h = half::f16::from_le_bytes([w[b], w[b + 1]]);
        }
        buf_h[..len].convert_to_f32_slice(&mut buf[..len]);
        let xs = &x[c0..c0 + len];
        let full = len / 8 * 8;
        for i in (0..full).step_by(8) {
            acc[0] = vfmaq_f32(
                acc[0],
                vld1q_f32(buf[i..].as_ptr()),
                vld1q_f32(xs[i..].as_ptr()),
            );
            acc[1] = vfmaq_f32(
                acc[1],
                vld1q_f32(buf[i + 4..].as_ptr()),
                vld1q_f32(xs[i + 4..].as_ptr()),
            );
        }
        for i in full..len {
            tail += buf[i] * xs[i];
        }
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1])) + tail
}

/// bf16 weights × f32 activations (`min(w.len() / 2, x.len())` values),
/// summed in eight f32 lanes: equal to the scalar kernel to f32 rounding.
/// A bf16 is the top half of an f32, so widening by a 16-bit shift converts
/// it exactly.
#[target_feature(enable = "neon")]
pub unsafe fn bf16_f32(w: &[u8], x: &[f32]) -> f32 {
    let n = (w.len() / 2).min(x.len());
    let full = n / 8 * 8;
    let mut acc = [vdupq_n_f32(0.0); 2];
    for i in (0..full).step_by(8) {
        let h = vld1q_u16(w[2 * i..2 * i + 16].as_ptr() as *const u16);
        let lo = vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h)));
        let hi = vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h));
        acc[0] = vfmaq_f32(acc[0], lo, vld1q_f32(x[i..i + 4].as_ptr()));
        acc[1] = vfmaq_f32(acc[1], hi, vld1q_f32(x[i + 4..i + 8].as_ptr()));
    }
    let tail = super::scalar::bf16_f32(&w[2 * full..2 * n], &x[full..n]);
    vaddvq_f32(vaddq_f32(acc[0], acc[1])) + tail
}

/// Entry points: one compiled with `neon` alone and one with `neon` +
/// `dotprod` per kernel.
/// The i-quants on lattices ([`crate::iquant`]): each half sub-block's 16
/// weights as the signed integers of [`crate::iquant::Decoded`]
/// (`MUL · magnitude · sign + δ`, at most 62 in size), dotted with the
/// activations and scaled, exactly; the scalar kernel's float step.
#[inline(always)]
unsafe fn iq<const DOT: bool, B: crate::iquant::IqBlock>(w: &[B], a: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut acc = vdupq_n_s32(0);
        for ib in 0..8 {
            let sc = x.scales(ib);
            let delta = vdupq_n_s8(x.delta(ib) as i8);
            for h in 0..2 {
                let (g0, s0) = x.group(ib, 2 * h);
                let (g1, s1) = x.group(ib, 2 * h + 1);
                let m = vcombine_s8(vcreate_s8(g0), vcreate_s8(g1));
                let s = vcombine_s8(vcreate_s8(s0), vcreate_s8(s1));
                let mut q = vmulq_s8(m, s);
                if B::MUL != 1 {
                    q = vmulq_s8(q, vdupq_n_s8(B::MUL as i8));
                }
                let q = vaddq_s8(q, delta);
                let d = dot::<DOT>(vdupq_n_s32(0), q, ld_i8(&y.qs[32 * ib + 16 * h..]));
                acc = vmlaq_n_s32(acc, d, sc[h]);
            }
        }
        sumf = step_iq(sumf, B::FACTOR * y.d, x.d(), vaddvq_s32(acc));
    }
    sumf
}

macro_rules! iq_kernels {
    ($($name:ident, $B:ty;)*) => {$(
        #[inline(always)]
        unsafe fn $name<const DOT: bool>(w: &[$B], a: &[BlockQ8K]) -> f32 {
            iq::<DOT, $B>(w, a)
        }
    )*};
}

iq_kernels! {
    iq2_xxs, BlockIQ2XXS;
    iq2_xs, BlockIQ2XS;
    iq2_s, BlockIQ2S;
    iq3_xxs, BlockIQ3XXS;
    iq3_s, BlockIQ3S;
    iq1_s, BlockIQ1S;
}

macro_rules! entry {
    ($kernel:ident => $plain:ident, $dot:ident, ($($arg:ident: $t:ty),*) -> $ret:ty) => {
        #[target_feature(enable = "neon")]
        pub unsafe fn $plain($($arg: $t),*) -> $ret {
            $kernel::<false>($($arg),*)
        }
        #[target_feature(enable = "neon,dotprod")]
        pub unsafe fn $dot($($arg: $t),*) -> $ret {
            $kernel::<true>($($arg),*)
        }
    };
}

entry!(q4_0 => q4_0_q8_0, q4_0_q8_0_dot, (w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32);
entry!(q4_1 => q4_1_q8_1, q4_1_q8_1_dot, (w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32);
entry!(q5_0 => q5_0_q8_0, q5_0_q8_0_dot, (w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32);
entry!(q5_1 => q5_1_q8_1, q5_1_q8_1_dot, (w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32);
entry!(q8_0 => q8_0_q8_0, q8_0_q8_0_dot, (w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32);
entry!(iq4_nl => iq4_nl_q8_0, iq4_nl_q8_0_dot, (w: &[BlockIQ4NL], a: &[BlockQ8_0]) -> f32);
entry!(q2k => q2k_q8k, q2k_q8k_dot, (w: &[BlockQ2K], a: &[BlockQ8K]) -> f32);
entry!(q3k => q3k_q8k, q3k_q8k_dot, (w: &[BlockQ3K], a: &[BlockQ8K]) -> f32);
entry!(q4k => q4k_q8k, q4k_q8k_dot, (w: &[BlockQ4K], a: &[BlockQ8K]) -> f32);
entry!(q5k => q5k_q8k, q5k_q8k_dot, (w: &[BlockQ5K], a: &[BlockQ8K]) -> f32);
entry!(q6k => q6k_q8k, q6k_q8k_dot, (w: &[BlockQ6K], a: &[BlockQ8K]) -> f32);
entry!(iq4_xs => iq4_xs_q8k, iq4_xs_q8k_dot, (w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32);
entry!(iq2_xxs => iq2_xxs_q8k, iq2_xxs_q8k_dot, (w: &[BlockIQ2XXS], a: &[BlockQ8K]) -> f32);
entry!(iq2_xs => iq2_xs_q8k, iq2_xs_q8k_dot, (w: &[BlockIQ2XS], a: &[BlockQ8K]) -> f32);
entry!(iq2_s => iq2_s_q8k, iq2_s_q8k_dot, (w: &[BlockIQ2S], a: &[BlockQ8K]) -> f32);
entry!(iq3_xxs => iq3_xxs_q8k, iq3_xxs_q8k_dot, (w: &[BlockIQ3XXS], a: &[BlockQ8K]) -> f32);
entry!(iq3_s => iq3_s_q8k, iq3_s_q8k_dot, (w: &[BlockIQ3S], a: &[BlockQ8K]) -> f32);
entry!(iq1_s => iq1_s_q8k, iq1_s_q8k_dot, (w: &[BlockIQ1S], a: &[BlockQ8K]) -> f32);
