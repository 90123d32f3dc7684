//! AVX-512 (F/BW/VL, with AVX2, FMA and F16C) form of the attention
//! kernels: [`super::kernel`] over 16-lane vectors, an `MR = 4` × `NR = 4`
//! microkernel tile (16 accumulators) for the wide layout.

use super::kernel::{self, Scratch, Simd, EXP2_FLOOR};
use super::{KvType, Unit};
use half::f16;
use std::arch::x86_64::*;

/// 16 f32 lanes.
pub(super) struct Avx512;

/// Key order of [`Simd::dots`]'s accumulators: after the reduction tree,
/// accumulator slot `s` ends in lane `4·(s % 4) + s / 4`, so slot `s` takes
/// that key.
const SLOT_KEY: [usize; 16] = {
    let mut k = [0; 16];
    let mut s = 0;
    while s < 16 {
        k[s] = 4 * (s % 4) + s / 4;
        s += 1;
    }
    k
};

impl Simd for Avx512 {
    type V = __m512;
    type M = __mmask16;
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY (all methods): the caller guarantees AVX-512 F/BW/VL, AVX2,
        // FMA and F16C, and pointers valid for the lanes they name.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn bcast(p: *const f32) -> __m512 {
        unsafe { _mm512_set1_ps(*p) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn hmax(v: __m512) -> f32 {
        unsafe { _mm512_reduce_max_ps(v) }
    }
    #[inline(always)]
    unsafe fn hsum(v: __m512) -> f32 {
        unsafe { _mm512_reduce_add_ps(v) }
    }
    #[inline(always)]
    unsafe fn exp2(x: __m512) -> __m512 {
        // x = n + f, n = round(x), |f| ≤ 1/2; 2^f = 1 + f·P(f) (Cephes
        // exp2f, relative error about 2⁻²³) and `scalef` multiplies by
        // 2^n; lanes below EXP2_FLOOR (and −∞) are zeroed by its mask.
        unsafe {
            let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(EXP2_FLOOR));
            let x = _mm512_max_ps(x, _mm512_set1_ps(EXP2_FLOOR));
            let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
            let f = _mm512_sub_ps(x, n);
            let mut p = _mm512_set1_ps(1.535_336_2e-4);
            for c in [
                1.339_887_4e-3,
                9.618_437e-3,
                5.550_332_5e-2,
                2.402_264_8e-1,
                6.931_472e-1,
            ] {
                p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
            }
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0));
            _mm512_maskz_scalef_ps(keep, p, n)
        }
    }
    #[inline(always)]
    unsafe fn all_one(v: __m512) -> bool {
        unsafe { _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(v, _mm512_set1_ps(1.0)) == 0xffff }
    }
    #[inline(always)]
    unsafe fn finite_or_zero(v: __m512) -> __m512 {
        unsafe {
            let inf = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(v, _mm512_set1_ps(f32::NEG_INFINITY));
            _mm512_mask_blend_ps(inf, v, _mm512_setzero_ps())
        }
    }
    #[inline(always)]
    unsafe fn visible_rows(lo: *const u32, hi: *const u32, kp: u32) -> __mmask16 {
        unsafe {
            let k = _mm512_set1_epi32(kp as i32);
            let lo = _mm512_loadu_si512(lo as *const _);
            let hi = _mm512_loadu_si512(hi as *const _);
            _mm512_cmple_epu32_mask(lo, k) & _mm512_cmple_epu32_mask(k, hi)
        }
    }
    #[inline(always)]
    unsafe fn visible_keys(pos: *const u32, n: usize, lo: u32, hi: u32) -> __mmask16 {
        unsafe {
            let k = _mm512_loadu_si512(pos as *const _);
            let valid = ((1u32 << n.min(16)) - 1) as u16;
            valid
                & _mm512_cmple_epu32_mask(_mm512_set1_epi32(lo as i32), k)
                & _mm512_cmple_epu32_mask(k, _mm512_set1_epi32(hi as i32))
        }
    }
    #[inline(always)]
    unsafe fn keep(m: __mmask16, v: __m512) -> __m512 {
        unsafe { _mm512_mask_blend_ps(m, _mm512_set1_ps(f32::NEG_INFINITY), v) }
    }
    #[inline(always)]
    unsafe fn dots(q: *const f32, k: *const f32, ks: usize, nv: usize) -> __m512 {
        unsafe {
            let mut acc = [_mm512_setzero_ps(); 16];
            for v in 0..nv {
                let qv = _mm512_loadu_ps(q.add(16 * v));
                for (a, &key) in acc.iter_mut().zip(&SLOT_KEY) {
                    *a = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k.add(key * ks + 16 * v)), *a);
                }
            }
            // 16 → 8: 128-bit quarters 0, 1 of slot 2p and 0, 1 of 2p + 1
            // plus their quarters 2, 3.
            let mut t = [_mm512_setzero_ps(); 8];
            for (p, t) in t.iter_mut().enumerate() {
                let (x, y) = (acc[2 * p], acc[2 * p + 1]);
                *t = _mm512_add_ps(
                    _mm512_shuffle_f32x4::<0x44>(x, y),
                    _mm512_shuffle_f32x4::<0xee>(x, y),
                );
            }
            // 8 → 4: quarter i holds slot 4p + i's four partial sums.
            let mut w = [_mm512_setzero_ps(); 4];
            for (p, w) in w.iter_mut().enumerate() {
                let (x, y) = (t[2 * p], t[2 * p + 1]);
                *w = _mm512_add_ps(
                    _mm512_shuffle_f32x4::<0x88>(x, y),
                    _mm512_shuffle_f32x4::<0xdd>(x, y),
                );
            }
            // 4 → 2: within each quarter, two slots' pair sums.
            let z0 = _mm512_add_ps(
                _mm512_unpacklo_ps(w[0], w[1]),
                _mm512_unpackhi_ps(w[0], w[1]),
            );
            let z1 = _mm512_add_ps(
                _mm512_unpacklo_ps(w[2], w[3]),
                _mm512_unpackhi_ps(w[2], w[3]),
            );
            // 2 → 1: lane 4i + e holds slot i + 4e, that is key 4i + e.
            _mm512_add_ps(
                _mm512_shuffle_ps::<0x44>(z0, z1),
                _mm512_shuffle_ps::<0xee>(z0, z1),
            )
        }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
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
                        while x + 16 <= d {
                            let h = _mm256_loadu_si256(r.add(2 * x) as *const _);
                            _mm512_storeu_ps(o.add(x), _mm512_cvtph_ps(h));
                            x += 16;
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
                            // The scale in every lane by F16C (no call).
                            let bits = u16::from_le_bytes([*blk, *blk.add(1)]) as i16;
                            let scale = _mm512_cvtph_ps(_mm256_set1_epi16(bits));
                            for h in 0..2 {
                                let q = _mm_loadu_si128(blk.add(2 + 16 * h) as *const _);
                                let f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
                                _mm512_storeu_ps(o.add(32 * b + 16 * h), _mm512_mul_ps(f, scale));
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

/// [`kernel::run_unit`] on 16-lane vectors.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VL, AVX2, FMA and F16C; `state` holds
/// `u.rows()` rows of `head_dim + 2`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn run_unit(u: &Unit<'_>, sc: &mut Scratch, state: &mut [f32]) {
    // SAFETY: forwarded contract; this function enables the features.
    unsafe { kernel::run_unit::<Avx512, 4, 4>(u, sc, state) }
}
