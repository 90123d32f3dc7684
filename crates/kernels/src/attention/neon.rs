//! AArch64 Advanced SIMD form of the attention kernels: [`super::kernel`]
//! over 4-lane vectors, an `MR = 4` × `NR = 4` microkernel tile (16 of the
//! 32 vector registers) for the wide layout. f16 rows are widened by
//! `fcvtl` (base Armv8; written as inline assembly because Rust's f16
//! vector types are not stable), and prefetches are `prfm pldl1keep`.

use super::kernel::{self, Scratch, Simd, EXP2_FLOOR};
use super::{KvType, Unit};
use half::f16;
use std::arch::aarch64::*;
use std::arch::asm;

/// 4 f32 lanes.
pub(super) struct Neon;

/// Four f16 values (8 bytes at `p`, any alignment) as f32.
///
/// # Safety
/// NEON available; `p` readable for 8 bytes.
#[inline(always)]
unsafe fn f16x4(p: *const u8) -> float32x4_t {
    // SAFETY: the caller's contract; `fcvtl` only reads and writes the
    // registers named.
    unsafe {
        let h = vreinterpret_u16_u8(vld1_u8(p));
        let out: float32x4_t;
        asm!(
            "fcvtl {o:v}.4s, {i:v}.4h",
            o = out(vreg) out,
            i = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags)
        );
        out
    }
}

impl Simd for Neon {
    type V = float32x4_t;
    /// All-ones lanes where set.
    type M = uint32x4_t;
    const LANES: usize = 4;

    #[inline(always)]
    unsafe fn zero() -> float32x4_t {
        // SAFETY (all methods): the caller guarantees NEON (every AArch64
        // CPU) and pointers valid for the lanes they name.
        unsafe { vdupq_n_f32(0.0) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> float32x4_t {
        unsafe { vdupq_n_f32(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    unsafe fn bcast(p: *const f32) -> float32x4_t {
        unsafe { vld1q_dup_f32(p) }
    }
    #[inline(always)]
    unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vmulq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vaddq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vsubq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vmaxq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn hmax(v: float32x4_t) -> f32 {
        unsafe { vmaxvq_f32(v) }
    }
    #[inline(always)]
    unsafe fn hsum(v: float32x4_t) -> f32 {
        unsafe { vaddvq_f32(v) }
    }
    #[inline(always)]
    unsafe fn exp2(x: float32x4_t) -> float32x4_t {
        // As the AVX2 form: x clamped to [EXP2_FLOOR, 0], 2^n in the
        // exponent field, lanes below the floor (and −∞) zeroed by a mask.
        unsafe {
            let keep = vcgeq_f32(x, vdupq_n_f32(EXP2_FLOOR));
            let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(EXP2_FLOOR)), vdupq_n_f32(0.0));
            let n = vrndnq_f32(x);
            let f = vsubq_f32(x, n);
            let mut p = vdupq_n_f32(1.535_336_2e-4);
            for c in [
                1.339_887_4e-3,
                9.618_437e-3,
                5.550_332_5e-2,
                2.402_264_8e-1,
                6.931_472e-1,
            ] {
                p = vfmaq_f32(vdupq_n_f32(c), p, f);
            }
            p = vfmaq_f32(vdupq_n_f32(1.0), p, f);
            let e = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)));
            let r = vmulq_f32(p, vreinterpretq_f32_s32(e));
            vreinterpretq_f32_u32(vandq_u32(keep, vreinterpretq_u32_f32(r)))
        }
    }
    #[inline(always)]
    unsafe fn all_one(v: float32x4_t) -> bool {
        unsafe { vminvq_u32(vceqq_f32(v, vdupq_n_f32(1.0))) == u32::MAX }
    }
    #[inline(always)]
    unsafe fn finite_or_zero(v: float32x4_t) -> float32x4_t {
        unsafe {
            let inf = vceqq_f32(v, vdupq_n_f32(f32::NEG_INFINITY));
            vbslq_f32(inf, vdupq_n_f32(0.0), v)
        }
    }
    #[inline(always)]
    unsafe fn visible_rows(lo: *const u32, hi: *const u32, kp: u32) -> uint32x4_t {
        unsafe {
            let k = vdupq_n_u32(kp);
            vandq_u32(vcleq_u32(vld1q_u32(lo), k), vcleq_u32(k, vld1q_u32(hi)))
        }
    }
    #[inline(always)]
    unsafe fn visible_keys(pos: *const u32, n: usize, lo: u32, hi: u32) -> uint32x4_t {
        unsafe {
            let k = vld1q_u32(pos);
            let lane = vld1q_u32([0u32, 1, 2, 3].as_ptr());
            let valid = vcltq_u32(lane, vdupq_n_u32(n.min(4) as u32));
            let seen = vandq_u32(vcleq_u32(vdupq_n_u32(lo), k), vcleq_u32(k, vdupq_n_u32(hi)));
            vandq_u32(valid, seen)
        }
    }
    #[inline(always)]
    unsafe fn keep(m: uint32x4_t, v: float32x4_t) -> float32x4_t {
        unsafe { vbslq_f32(m, v, vdupq_n_f32(f32::NEG_INFINITY)) }
    }
    #[inline(always)]
    unsafe fn dots(q: *const f32, k: *const f32, ks: usize, nv: usize) -> float32x4_t {
        unsafe {
            let mut acc = [vdupq_n_f32(0.0); 4];
            for v in 0..nv {
                let qv = vld1q_f32(q.add(4 * v));
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = vfmaq_f32(*a, qv, vld1q_f32(k.add(i * ks + 4 * v)));
                }
            }
            // Pairwise sums twice: lane i is key i's total.
            vpaddq_f32(vpaddq_f32(acc[0], acc[1]), vpaddq_f32(acc[2], acc[3]))
        }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        // SAFETY: a prefetch hint never faults and writes nothing.
        unsafe {
            asm!(
                "prfm pldl1keep, [{p}]",
                p = in(reg) p,
                options(nostack, readonly, preserves_flags)
            )
        }
    }
    #[inline(always)]
    unsafe fn convert(
        ty: KvType,
        src: &[u8],
        row_bytes: usize,
        rows: usize,
        dst: *mut f32,
        ds: usize,
        d: usize,
    ) {
        unsafe {
            let s = src.as_ptr();
            match ty {
                KvType::F32 => {
                    for j in 0..rows {
                        std::ptr::copy_nonoverlapping(
                            s.add(j * row_bytes),
                            dst.add(j * ds) as *mut u8,
                            4 * d,
                        );
                    }
                }
                KvType::F16 => {
                    for j in 0..rows {
                        let (r, o) = (s.add(j * row_bytes), dst.add(j * ds));
                        let mut x = 0;
                        while x + 4 <= d {
                            vst1q_f32(o.add(x), f16x4(r.add(2 * x)));
                            x += 4;
                        }
                        while x < d {
                            *o.add(x) =
                                f16::from_le_bytes([*r.add(2 * x), *r.add(2 * x + 1)]).to_f32();
                            x += 1;
                        }
                    }
                }
                KvType::Q8_0 => {
                    for j in 0..rows {
                        let (r, o) = (s.add(j * row_bytes), dst.add(j * ds));
                        for b in 0..d / 32 {
                            let blk = r.add(34 * b);
                            let scale = f16::from_le_bytes([*blk, *blk.add(1)]).to_f32();
                            for h in 0..2 {
                                let q = vld1q_s8(blk.add(2 + 16 * h) as *const i8);
                                let w = [vmovl_s8(vget_low_s8(q)), vmovl_high_s8(q)];
                                for (e, w) in w.into_iter().enumerate() {
                                    let at = o.add(32 * b + 16 * h + 8 * e);
                                    let lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(w)));
                                    let hi = vcvtq_f32_s32(vmovl_high_s16(w));
                                    vst1q_f32(at, vmulq_n_f32(lo, scale));
                                    vst1q_f32(at.add(4), vmulq_n_f32(hi, scale));
                                }
                            }
                        }
                    }
                }
            }
            if ds > d {
                for j in 0..rows {
                    std::ptr::write_bytes(dst.add(j * ds + d), 0, ds - d);
                }
            }
        }
    }
}

/// [`kernel::run_unit`] on 4-lane vectors.
///
/// # Safety
/// The CPU has NEON; `state` holds `u.rows()` rows of `head_dim + 2`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn run_unit(u: &Unit<'_>, sc: &mut Scratch, state: &mut [f32]) {
    // SAFETY: forwarded contract; this function enables the feature.
    unsafe { kernel::run_unit::<Neon, 4, 4>(u, sc, state) }
}
