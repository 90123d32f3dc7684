//! AVX2 (+ FMA + F16C) form of the attention kernels: [`super::kernel`] over
//! 8-lane vectors, an `MR = 4` × `NR = 2` microkernel tile (8 accumulators; 4 × 3 measured
//! slower, 8 × 1 and 2 × 4 about the same)
//! for the wide layout.

use super::kernel::{self, Scratch, Simd, EXP2_FLOOR};
use super::{KvType, Unit};
use half::f16;
use std::arch::x86_64::*;

/// 8 f32 lanes.
pub(super) struct Avx2;

/// Key order of [`Simd::dots`]'s accumulators: after the reduction tree,
/// accumulator slots 0, 2, 4, 6, 1, 3, 5, 7 end in lanes 0 to 7, so slot
/// `s` takes key `s / 2` (even) or `4 + s / 2` (odd).
const SLOT_KEY: [usize; 8] = [0, 4, 1, 5, 2, 6, 3, 7];

impl Simd for Avx2 {
    type V = __m256;
    /// All-ones lanes where set.
    type M = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY (all methods): the caller guarantees AVX2, FMA and F16C,
        // and pointers valid for the lanes they name.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn bcast(p: *const f32) -> __m256 {
        unsafe { _mm256_broadcast_ss(&*p) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn hmax(v: __m256) -> f32 {
        unsafe {
            let x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let x = _mm_max_ps(x, _mm_movehl_ps(x, x));
            _mm_cvtss_f32(_mm_max_ss(x, _mm_shuffle_ps::<1>(x, x)))
        }
    }
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        unsafe {
            let x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
            _mm_cvtss_f32(_mm_add_ss(x, _mm_shuffle_ps::<1>(x, x)))
        }
    }
    #[inline(always)]
    unsafe fn exp2(x: __m256) -> __m256 {
        // As the AVX-512 form, with 2^n built in the exponent field: x is
        // clamped to [EXP2_FLOOR, 0] (the callers' x is never above 0) and
        // lanes below the floor (and −∞) are zeroed by a mask.
        unsafe {
            let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(EXP2_FLOOR));
            let x = _mm256_min_ps(
                _mm256_max_ps(x, _mm256_set1_ps(EXP2_FLOOR)),
                _mm256_setzero_ps(),
            );
            let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
            let f = _mm256_sub_ps(x, n);
            let mut p = _mm256_set1_ps(1.535_336_2e-4);
            for c in [
                1.339_887_4e-3,
                9.618_437e-3,
                5.550_332_5e-2,
                2.402_264_8e-1,
                6.931_472e-1,
            ] {
                p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c));
            }
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0));
            let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvtps_epi32(n),
                _mm256_set1_epi32(127),
            ));
            _mm256_and_ps(keep, _mm256_mul_ps(p, _mm256_castsi256_ps(e)))
        }
    }
    #[inline(always)]
    unsafe fn all_one(v: __m256) -> bool {
        unsafe { _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(v, _mm256_set1_ps(1.0))) == 0xff }
    }
    #[inline(always)]
    unsafe fn finite_or_zero(v: __m256) -> __m256 {
        unsafe {
            let inf = _mm256_cmp_ps::<_CMP_EQ_OQ>(v, _mm256_set1_ps(f32::NEG_INFINITY));
            _mm256_andnot_ps(inf, v)
        }
    }
    #[inline(always)]
    unsafe fn visible_rows(lo: *const u32, hi: *const u32, kp: u32) -> __m256 {
        // Unsigned compares as signed ones on values with the top bit flipped.
        unsafe {
            let flip = _mm256_set1_epi32(i32::MIN);
            let k = _mm256_set1_epi32((kp ^ 0x8000_0000) as i32);
            let lo = _mm256_xor_si256(_mm256_loadu_si256(lo as *const _), flip);
            let hi = _mm256_xor_si256(_mm256_loadu_si256(hi as *const _), flip);
            let out = _mm256_or_si256(_mm256_cmpgt_epi32(lo, k), _mm256_cmpgt_epi32(k, hi));
            _mm256_castsi256_ps(_mm256_xor_si256(out, _mm256_set1_epi32(-1)))
        }
    }
    #[inline(always)]
    unsafe fn visible_keys(pos: *const u32, n: usize, lo: u32, hi: u32) -> __m256 {
        unsafe {
            let flip = _mm256_set1_epi32(i32::MIN);
            let k = _mm256_xor_si256(_mm256_loadu_si256(pos as *const _), flip);
            let lo = _mm256_set1_epi32((lo ^ 0x8000_0000) as i32);
            let hi = _mm256_set1_epi32((hi ^ 0x8000_0000) as i32);
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let invalid = _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), lane);
            let out = _mm256_or_si256(_mm256_cmpgt_epi32(lo, k), _mm256_cmpgt_epi32(k, hi));
            _mm256_castsi256_ps(_mm256_andnot_si256(out, invalid))
        }
    }
    #[inline(always)]
    unsafe fn keep(m: __m256, v: __m256) -> __m256 {
        unsafe { _mm256_blendv_ps(_mm256_set1_ps(f32::NEG_INFINITY), v, m) }
    }
    #[inline(always)]
    unsafe fn dots(q: *const f32, k: *const f32, ks: usize, nv: usize) -> __m256 {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 8];
            for v in 0..nv {
                let qv = _mm256_loadu_ps(q.add(8 * v));
                for (a, &key) in acc.iter_mut().zip(&SLOT_KEY) {
                    *a = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k.add(key * ks + 8 * v)), *a);
                }
            }
            // 8 → 4: 128-bit half 0 holds slot 2p's four partial sums, half 1
            // slot 2p + 1's.
            let mut t = [_mm256_setzero_ps(); 4];
            for (p, t) in t.iter_mut().enumerate() {
                let (x, y) = (acc[2 * p], acc[2 * p + 1]);
                *t = _mm256_add_ps(
                    _mm256_permute2f128_ps::<0x20>(x, y),
                    _mm256_permute2f128_ps::<0x31>(x, y),
                );
            }
            // 4 → 2: half h of z_p: slots 4p + h, 4p + 2 + h, two sums each.
            let z0 = _mm256_add_ps(
                _mm256_unpacklo_ps(t[0], t[1]),
                _mm256_unpackhi_ps(t[0], t[1]),
            );
            let z1 = _mm256_add_ps(
                _mm256_unpacklo_ps(t[2], t[3]),
                _mm256_unpackhi_ps(t[2], t[3]),
            );
            // 2 → 1: lanes hold slots 0, 2, 4, 6, 1, 3, 5, 7.
            _mm256_add_ps(
                _mm256_shuffle_ps::<0x44>(z0, z1),
                _mm256_shuffle_ps::<0xee>(z0, z1),
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
                        while x + 8 <= d {
                            let h = _mm_loadu_si128(r.add(2 * x) as *const _);
                            _mm256_storeu_ps(o.add(x), _mm256_cvtph_ps(h));
                            x += 8;
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
                            let scale = _mm256_cvtph_ps(_mm_set1_epi16(bits));
                            for e in 0..4 {
                                let q = _mm_loadl_epi64(blk.add(2 + 8 * e) as *const _);
                                let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                                _mm256_storeu_ps(o.add(32 * b + 8 * e), _mm256_mul_ps(f, scale));
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

/// [`kernel::run_unit`] on 8-lane vectors.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `state` holds `u.rows()` rows of
/// `head_dim + 2`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn run_unit(u: &Unit<'_>, sc: &mut Scratch, state: &mut [f32]) {
    // SAFETY: forwarded contract; this function enables the features.
    unsafe { kernel::run_unit::<Avx2, 4, 2>(u, sc, state) }
}
