//! AVX2 + FMA + F16C dot products, same contracts as [`super::scalar`].
//!
//! The k-quants sum each super-block exactly in integers and finish it with
//! the scalar kernel's float step (`ksteps`), and the 256-value i-quants
//! finish each block as the scalar kernel does: their results are the scalar
//! kernel's bit for bit, as are the tiled kernels', so they do not depend on
//! the batch. The 32-value types and F16/BF16 accumulate in f32 lanes across
//! blocks (llama.cpp's order, not the scalar code's: tested to a
//! tolerance). The four-row variants repeat the one-row operations per row,
//! so they are bit-identical to it.
//!
//! Every function here is `unsafe` only because it is compiled for CPU
//! features the caller must have checked ([`crate::Isa::Avx2`] available);
//! all memory accesses are unaligned loads inside fixed-size block arrays.

#![allow(clippy::missing_safety_doc)]

use crate::blocks::*;
use std::arch::x86_64::*;

#[inline(always)]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline(always)]
unsafe fn load_i8(p: *const i8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline(always)]
unsafe fn hsum_i32(a: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

#[inline(always)]
pub(super) unsafe fn hsum_f32(a: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// One f16 to f32 with F16C (`F16Le::to_f32` goes through the `half`
/// crate's run-time feature check and a software fallback on every call).
///
/// # Safety
/// F16C available.
#[inline(always)]
pub(crate) unsafe fn f16(x: F16Le) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(x.bits() as i32)))
}

/// One f16 as f32 in all eight lanes. In a loop that multiplies the scale
/// into an accumulator, this form, not `_mm256_set1_ps(f16(..))`: there
/// the compiler, needing one lane, inserts the f16 into whatever register
/// is at hand (an accumulator), and the next block's scale waits on the
/// last block's multiply-add.
///
/// # Safety
/// AVX2 and F16C available.
#[inline(always)]
pub(crate) unsafe fn f16x8(x: F16Le) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(x.bits() as i16))
}

/// Signed i8 × i8 products summed in pairs and quads to i32 lanes.
#[inline(always)]
unsafe fn dot_i8_i32(x: __m256i, y: __m256i) -> __m256i {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
}

/// 32 nibbles (16 bytes) to 32 bytes: low nibbles first, then high nibbles.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let t = _mm_loadu_si128(p as *const __m128i);
    _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16(t, 4), t),
        _mm256_set1_epi8(0xF),
    )
}

/// 32 bits to 32 bytes of 0xFF (bit set) or 0x00.
#[inline(always)]
unsafe fn bytes_from_bits(bits: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuf);
    let mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, mask), _mm256_set1_epi64x(-1))
}

/// i16 lane `j` of both halves of `v` broadcast to all 16 lanes.
#[inline(always)]
unsafe fn bcast_i16<const J: i32>(v: __m256i) -> __m256i {
    let m = _mm256_set1_epi16((((2 * J + 1) << 8) | (2 * J)) as i16);
    _mm256_shuffle_epi8(v, m)
}

/// `Σ_blocks Σ_k d_k·p_k` for the 32-value types, `blk` giving each block's
/// `K` terms (a broadcast scale and products as f32), summed into two
/// interleaved accumulators so consecutive blocks' multiply-adds overlap.
#[inline(always)]
unsafe fn sum_blocks<X, Y, const K: usize>(
    w: &[X],
    a: &[Y],
    blk: impl Fn(&X, &Y) -> [(__m256, __m256); K],
) -> __m256 {
    // Even blocks into `acc0`, odd ones into `acc1`, unrolled by hand: an
    // array indexed by `i % 2` was left on the stack, its multiply-adds
    // chained through stores and loads.
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut pairs = w.chunks_exact(2).zip(a.chunks_exact(2));
    for (x, y) in &mut pairs {
        prefetch_ahead(&x[0]);
        for (d, p) in blk(&x[0], &y[0]) {
            acc0 = _mm256_fmadd_ps(d, p, acc0);
        }
        prefetch_ahead(&x[1]);
        for (d, p) in blk(&x[1], &y[1]) {
            acc1 = _mm256_fmadd_ps(d, p, acc1);
        }
    }
    let n = w.len().min(a.len());
    if n % 2 == 1 {
        prefetch_ahead(&w[n - 1]);
        for (d, p) in blk(&w[n - 1], &a[n - 1]) {
            acc0 = _mm256_fmadd_ps(d, p, acc0);
        }
    }
    _mm256_add_ps(acc0, acc1)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let off = _mm256_set1_epi8(8);
    hsum_f32(sum_blocks(w, a, |x, y| {
        let d = _mm256_mul_ps(f16x8(x.d), f16x8(y.d));
        let qx = _mm256_sub_epi8(nibbles(x.qs.as_ptr()), off);
        let p = dot_i8_i32(qx, load_i8(y.qs.as_ptr()));
        [(d, _mm256_cvtepi32_ps(p))]
    }))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let ones = _mm256_set1_epi16(1);
    let ones8 = _mm256_set1_epi8(1);
    hsum_f32(sum_blocks(w, a, |x, y| {
        let dy = f16x8(y.d);
        let yq = load_i8(y.qs.as_ptr());
        let qx = nibbles(x.qs.as_ptr());
        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qx, yq), ones);
        let sum = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, yq), ones);
        [
            (_mm256_mul_ps(f16x8(x.d), dy), _mm256_cvtepi32_ps(p)),
            (_mm256_mul_ps(f16x8(x.m), dy), _mm256_cvtepi32_ps(sum)),
        ]
    }))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q5_0_q8_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let high = _mm256_set1_epi8(0xF0u8 as i8);
    hsum_f32(sum_blocks(w, a, |x, y| {
        let d = _mm256_mul_ps(f16x8(x.d), f16x8(y.d));
        // nibble | 0xF0 where the 5th bit is clear = nibble + 16 - 32 as i8.
        let hb = _mm256_andnot_si256(bytes_from_bits(u32::from_le_bytes(x.qh)), high);
        let qx = _mm256_or_si256(nibbles(x.qs.as_ptr()), hb);
        let p = dot_i8_i32(qx, load_i8(y.qs.as_ptr()));
        [(d, _mm256_cvtepi32_ps(p))]
    }))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q5_1_q8_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    let ones = _mm256_set1_epi16(1);
    let ones8 = _mm256_set1_epi8(1);
    let bit4 = _mm256_set1_epi8(0x10);
    hsum_f32(sum_blocks(w, a, |x, y| {
        let dy = f16x8(y.d);
        let yq = load_i8(y.qs.as_ptr());
        let hb = _mm256_and_si256(bytes_from_bits(u32::from_le_bytes(x.qh)), bit4);
        let qx = _mm256_or_si256(nibbles(x.qs.as_ptr()), hb);
        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qx, yq), ones);
        let sum = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, yq), ones);
        [
            (_mm256_mul_ps(f16x8(x.d), dy), _mm256_cvtepi32_ps(p)),
            (_mm256_mul_ps(f16x8(x.m), dy), _mm256_cvtepi32_ps(sum)),
        ]
    }))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    hsum_f32(sum_blocks(w, a, |x, y| {
        let d = _mm256_mul_ps(f16x8(x.d), f16x8(y.d));
        let p = dot_i8_i32(load_i8(x.qs.as_ptr()), load_i8(y.qs.as_ptr()));
        [(d, _mm256_cvtepi32_ps(p))]
    }))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn iq4_nl_q8_0(w: &[BlockIQ4NL], a: &[BlockQ8_0]) -> f32 {
    let t = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
    let table = _mm256_set_m128i(t, t);
    hsum_f32(sum_blocks(w, a, |x, y| {
        let d = _mm256_mul_ps(f16x8(x.d), f16x8(y.d));
        let qx = _mm256_shuffle_epi8(table, nibbles(x.qs.as_ptr()));
        let p = dot_i8_i32(qx, load_i8(y.qs.as_ptr()));
        [(d, _mm256_cvtepi32_ps(p))]
    }))
}

/// `vpshufb` masks picking, from 8 i16 scales repeated in both 128-bit
/// lanes, scale `2k` for the low lane and `2k + 1` for the high lane (the
/// two 16-value groups of the `k`-th 32 values).
static SCALE_PAIR_SHUF: [[u8; 32]; 4] = {
    let mut t = [[0u8; 32]; 4];
    let mut k = 0;
    while k < 4 {
        let mut i = 0;
        while i < 16 {
            t[k][i] = (4 * k + i % 2) as u8;
            t[k][16 + i] = (4 * k + 2 + i % 2) as u8;
            i += 1;
        }
        k += 1;
    }
    t
};

/// `v >> 2k` in each 16-bit lane, `k` known after unrolling.
#[inline(always)]
unsafe fn shr2k(v: __m256i, k: usize) -> __m256i {
    match k {
        0 => v,
        1 => _mm256_srli_epi16(v, 2),
        2 => _mm256_srli_epi16(v, 4),
        _ => _mm256_srli_epi16(v, 6),
    }
}

/// Scales (16 i16 lanes) as two vectors holding groups `8n..8n+8` in both lanes.
#[inline(always)]
unsafe fn scale_halves(sc: __m256i) -> [__m256i; 2] {
    let lo = _mm256_castsi256_si128(sc);
    let hi = _mm256_extracti128_si256(sc, 1);
    [_mm256_set_m128i(lo, lo), _mm256_set_m128i(hi, hi)]
}

/// For 16-value-group types (Q2_K, Q3_K, Q6_K): the scale vector of each
/// 32-value chunk `4n + k` (scales `8n + 2k` and `8n + 2k + 1` in the low
/// and high lanes), from the 16 i16 scales `sc`.
#[inline(always)]
unsafe fn g16_scales(sc: __m256i) -> [__m256i; 8] {
    let halves = scale_halves(sc);
    let mut out = [_mm256_setzero_si256(); 8];
    for (c, o) in out.iter_mut().enumerate() {
        let shuf = load(SCALE_PAIR_SHUF[c % 4].as_ptr());
        *o = _mm256_shuffle_epi8(halves[c / 4], shuf);
    }
    out
}

/// `Σ_g sc_g · Σ_{e∈g} q_e·a_e` of one super-block as 8 i32 lanes (summed
/// in any order): `levels[c]` the 32 levels of chunk `c`, `scales` from
/// [`g16_scales`].
#[inline(always)]
unsafe fn g16_sumi(levels: &[__m256i; 8], scales: &[__m256i; 8], y: &BlockQ8K) -> __m256i {
    let mut sumi = _mm256_setzero_si256();
    for c in 0..8 {
        let yc = load_i8(y.qs.as_ptr().add(32 * c));
        let p = _mm256_madd_epi16(scales[c], _mm256_maddubs_epi16(levels[c], yc));
        sumi = _mm256_add_epi32(sumi, p);
    }
    sumi
}

/// [`g16_sumi`] with the levels from `levels(n, k)` (chunk `4n + k`).
#[inline(always)]
unsafe fn grouped16_lanes(
    sc: __m256i,
    y: &BlockQ8K,
    levels: impl Fn(usize, usize) -> __m256i,
) -> __m256i {
    let mut lv = [_mm256_setzero_si256(); 8];
    for (c, l) in lv.iter_mut().enumerate() {
        *l = levels(c / 4, c % 4);
    }
    g16_sumi(&lv, &g16_scales(sc), y)
}

/// Q2_K, the scalar kernel's result bit for bit (`ksteps`).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q2k_q8k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    ksteps::<_, 1>(
        w,
        [a],
        #[inline(always)]
        |x, [y]| [q2k_lanes(x, y)],
    )[0]
}

/// One Q2_K super-block's integer lanes `(sumi, summ)` (see `ksteps`).
#[inline(always)]
unsafe fn q2k_lanes(x: &BlockQ2K, y: &BlockQ8K) -> (__m256i, __m256i) {
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0xF);
    let raw = _mm_loadu_si128(x.scales.as_ptr() as *const __m128i);
    let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
    let prod = _mm256_madd_epi16(mins, _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i));
    let sc = _mm256_cvtepu8_epi16(_mm_and_si128(raw, m4));
    let q = [load(x.qs.as_ptr()), load(x.qs.as_ptr().add(32))];
    let sumi = grouped16_lanes(
        sc,
        y,
        #[inline(always)]
        |n, k| _mm256_and_si256(shr2k(q[n], k), m3),
    );
    (sumi, prod)
}

/// The 16 signed 6-bit Q3_K scales as i16 lanes (llama.cpp's `kmask` unpacking).
#[inline(always)]
pub(crate) unsafe fn q3k_scales_i16(s: &[u8; 12]) -> __m256i {
    const K1: u32 = 0x0303_0303;
    const K2: u32 = 0x0f0f_0f0f;
    let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    let (a0, a1, t) = (w(0), w(4), w(8));
    let b2 = ((a0 >> 4) & K2) | (((t >> 4) & K1) << 4);
    let b3 = ((a1 >> 4) & K2) | (((t >> 6) & K1) << 4);
    let b0 = (a0 & K2) | ((t & K1) << 4);
    let b1 = (a1 & K2) | (((t >> 2) & K1) << 4);
    let u = _mm_set_epi32(b3 as i32, b2 as i32, b1 as i32, b0 as i32);
    _mm256_cvtepi8_epi16(_mm_sub_epi8(u, _mm_set1_epi8(32)))
}

/// Q3_K, the scalar kernel's result bit for bit (`ksteps`).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q3k_q8k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm256_set1_epi8(4);
    ksteps::<_, 1>(
        w,
        [a],
        #[inline(always)]
        |x, [y]| {
            let sc = q3k_scales_i16(&x.scales);
            // The real level is (low | high << 2) - 4: subtract 4 · Σ sc·bsum.
            let corr =
                _mm256_madd_epi16(sc, _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i));
            let hm = load(x.hmask.as_ptr());
            let q = [load(x.qs.as_ptr()), load(x.qs.as_ptr().add(32))];
            let sumi = grouped16_lanes(
                sc,
                y,
                #[inline(always)]
                |n, k| {
                    let low = _mm256_and_si256(shr2k(q[n], k), m3);
                    // high bit b = 4n + k of hmask moved to bit 2.
                    let hb = match 4 * n + k {
                        0 => _mm256_slli_epi16(hm, 2),
                        1 => _mm256_slli_epi16(hm, 1),
                        2 => hm,
                        3 => _mm256_srli_epi16(hm, 1),
                        4 => _mm256_srli_epi16(hm, 2),
                        5 => _mm256_srli_epi16(hm, 3),
                        6 => _mm256_srli_epi16(hm, 4),
                        _ => _mm256_srli_epi16(hm, 5),
                    };
                    _mm256_or_si256(low, _mm256_and_si256(hb, m4))
                },
            );
            let sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 2));
            [(sumi, _mm256_setzero_si256())]
        },
    )[0]
}

/// Q4_K, the scalar kernel's result bit for bit (`ksteps`).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4k_q8k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    ksteps::<_, 1>(
        w,
        [a],
        #[inline(always)]
        |x, [y]| [k4_lanes(&q4k_weights(x), y)],
    )[0]
}

/// The 8 scales and 8 mins of a Q4_K / Q5_K block as i16 lanes 0..8 / 8..16
/// (llama.cpp's `kmask` unpacking of the 12 scale bytes).
#[inline(always)]
pub(crate) unsafe fn k4_scales_mins_i16(scales: &[u8; 12]) -> __m256i {
    const K1: u32 = 0x3f3f_3f3f;
    const K2: u32 = 0x0f0f_0f0f;
    const K3: u32 = 0x0303_0303;
    let w = |i: usize| u32::from_le_bytes([scales[i], scales[i + 1], scales[i + 2], scales[i + 3]]);
    let (u0, u1, u2) = (w(0), w(4), w(8));
    let m_hi = ((u2 >> 4) & K2) | (((u1 >> 6) & K3) << 4);
    let m_lo = u1 & K1;
    let s_hi = (u2 & K2) | (((u0 >> 6) & K3) << 4);
    let s_lo = u0 & K1;
    _mm256_cvtepu8_epi16(_mm_set_epi32(
        m_hi as i32,
        m_lo as i32,
        s_hi as i32,
        s_lo as i32,
    ))
}

/// The weight side of one Q4_K / Q5_K super-block: everything that does not
/// depend on the activations (shared by the four-row kernels).
struct K4Weights {
    /// Chunk `j`'s 64 levels, as its low and high 32.
    levels: [(__m256i, __m256i); 4],
    /// Scale of 32-value group `g`, broadcast to 16 i16 lanes.
    scales: [__m256i; 8],
    /// The 8 mins as i16 lanes.
    mins: __m128i,
}

#[inline(always)]
unsafe fn k4_weights(scales: &[u8; 12], levels: impl Fn(usize) -> (__m256i, __m256i)) -> K4Weights {
    let ms = k4_scales_mins_i16(scales);
    let sc128 = _mm256_castsi256_si128(ms);
    let sc = _mm256_set_m128i(sc128, sc128);
    K4Weights {
        levels: [levels(0), levels(1), levels(2), levels(3)],
        scales: [
            bcast_i16::<0>(sc),
            bcast_i16::<1>(sc),
            bcast_i16::<2>(sc),
            bcast_i16::<3>(sc),
            bcast_i16::<4>(sc),
            bcast_i16::<5>(sc),
            bcast_i16::<6>(sc),
            bcast_i16::<7>(sc),
        ],
        mins: _mm256_extracti128_si256(ms, 1),
    }
}

/// One Q4_K / Q5_K super-block against one activation block: its integer
/// lanes `(sumi, summ)` (see `ksteps`).
#[inline(always)]
unsafe fn k4_lanes(w: &K4Weights, y: &BlockQ8K) -> (__m256i, __m256i) {
    // mins: Σ_j m_j · (bsums[2j] + bsums[2j+1]) in 4 i32 lanes.
    let q8 = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
    let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(q8), _mm256_extracti128_si256(q8, 1));
    let prod = _mm_madd_epi16(w.mins, q8s);
    let mut sumi = _mm256_setzero_si256();
    for j in 0..4 {
        let (lo, hi) = w.levels[j];
        let y0 = load_i8(y.qs.as_ptr().add(64 * j));
        let y1 = load_i8(y.qs.as_ptr().add(64 * j + 32));
        let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), w.scales[2 * j]);
        let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), w.scales[2 * j + 1]);
        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
    }
    (sumi, _mm256_zextsi128_si256(prod))
}

/// The weight side of one Q4_K super-block.
#[inline(always)]
unsafe fn q4k_weights(x: &BlockQ4K) -> K4Weights {
    let m4 = _mm256_set1_epi8(0xF);
    k4_weights(
        &x.scales,
        #[inline(always)]
        |j| {
            let q = load(x.qs.as_ptr().add(32 * j));
            (
                _mm256_and_si256(q, m4),
                _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
            )
        },
    )
}

/// Q5_K, the scalar kernel's result bit for bit (`ksteps`).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q5k_q8k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let m4 = _mm256_set1_epi8(0xF);
    let m1 = _mm256_set1_epi8(1);
    ksteps::<_, 1>(
        w,
        [a],
        #[inline(always)]
        |x, [y]| {
            let qh = load(x.qh.as_ptr());
            let kw = k4_weights(
                &x.scales,
                #[inline(always)]
                |j| {
                    let q = load(x.qs.as_ptr().add(32 * j));
                    // high bits 2j and 2j + 1 of qh, moved to bit 4.
                    let (h0, h1) = match j {
                        0 => (qh, _mm256_srli_epi16(qh, 1)),
                        1 => (_mm256_srli_epi16(qh, 2), _mm256_srli_epi16(qh, 3)),
                        2 => (_mm256_srli_epi16(qh, 4), _mm256_srli_epi16(qh, 5)),
                        _ => (_mm256_srli_epi16(qh, 6), _mm256_srli_epi16(qh, 7)),
                    };
                    let lo = _mm256_or_si256(
                        _mm256_and_si256(q, m4),
                        _mm256_slli_epi16(_mm256_and_si256(h0, m1), 4),
                    );
                    let hi = _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                        _mm256_slli_epi16(_mm256_and_si256(h1, m1), 4),
                    );
                    (lo, hi)
                },
            );
            [k4_lanes(&kw, y)]
        },
    )[0]
}

/// The four 32-value groups of 6-bit quants (0..64) of one 128-value half of a Q6_K block.
#[inline(always)]
unsafe fn q6k_quants(x: &BlockQ6K, n: usize) -> [__m256i; 4] {
    let m4 = _mm256_set1_epi8(0xF);
    let m30 = _mm256_set1_epi8(0x30);
    let ql0 = load(x.ql.as_ptr().add(64 * n));
    let ql1 = load(x.ql.as_ptr().add(64 * n + 32));
    let qh = load(x.qh.as_ptr().add(32 * n));
    [
        _mm256_or_si256(
            _mm256_and_si256(ql0, m4),
            _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30),
        ),
        _mm256_or_si256(
            _mm256_and_si256(ql1, m4),
            _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
            _mm256_and_si256(qh, m30),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
            _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30),
        ),
    ]
}

/// Q6_K, the scalar kernel's result bit for bit (`ksteps`).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6k_q8k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    ksteps::<_, 1>(
        w,
        [a],
        #[inline(always)]
        |x, [y]| [q6k_lanes(&q6k_weights(x), y)],
    )[0]
}

/// Bytes ahead of the current weight block that the row kernels prefetch
/// (matrices stream row after row, so this runs into the next rows).
const PREFETCH_AHEAD: usize = 4096;

/// Prefetches the cache lines of one block's size, `PREFETCH_AHEAD` bytes on
/// (a software prefetch keeps both cores' streams ahead of the hardware
/// prefetcher, which speeds up matrices streamed from memory; measurements:
/// benches/journal/kernel-dispatch.md).
///
/// SAFETY of the address arithmetic: `wrapping_add` never dereferences, and
/// a prefetch is only a hint that never faults, so addresses past the end of
/// the matrix are harmless (exercised by every AVX2 kernel test, whose
/// matrices end within `PREFETCH_AHEAD` bytes).
#[inline(always)]
pub(crate) unsafe fn prefetch_ahead<B>(x: &B) {
    let p = (x as *const B as *const i8).wrapping_add(PREFETCH_AHEAD);
    let mut off = 0;
    while off < std::mem::size_of::<B>() {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off));
        off += 64;
    }
}

/// The f16 scales of a k-quant super-block, for `ksteps`.
pub(crate) trait KScales {
    /// Whether the block has mins (the scalar kernel's `step_kmin`) or not
    /// (`step_ksym`).
    const MINS: bool;
    /// The bits of the block's `d` and (with mins) `dmin`.
    fn d_dmin_bits(&self) -> (u16, u16);
}

macro_rules! kscales {
    (mins $($B:ty),*) => {$(
        impl KScales for $B {
            const MINS: bool = true;
            #[inline(always)]
            fn d_dmin_bits(&self) -> (u16, u16) {
                (self.d.bits(), self.dmin.bits())
            }
        }
    )*};
    (sym $($B:ty),*) => {$(
        impl KScales for $B {
            const MINS: bool = false;
            #[inline(always)]
            fn d_dmin_bits(&self) -> (u16, u16) {
                (self.d.bits(), 0)
            }
        }
    )*};
}
kscales!(mins BlockQ2K, BlockQ4K, BlockQ5K);
kscales!(sym BlockQ3K, BlockQ6K, BlockIQ4XS);

/// The sums of four i32 vectors, lane `r` of the result the sum of `a[r]`:
/// three horizontal adds for the four.
#[inline(always)]
pub(crate) unsafe fn sums4(a: [__m256i; 4]) -> __m128i {
    let h01 = _mm256_hadd_epi32(a[0], a[1]);
    let h23 = _mm256_hadd_epi32(a[2], a[3]);
    let h = _mm256_hadd_epi32(h01, h23);
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// The k-quants' row kernels for `M` activation rows (`M` is 1 or 4; for 1,
/// the first `min(w.len(), a[0].len())` blocks, for 4, `w.len()` blocks of
/// each row), by the scalar kernel's float steps: `lanes(x, ys)` gives, per
/// activation row, a super-block's i32 lanes `(sumi, summ)` whose sums are
/// its exact integer sums (`summ`, the mins' sum, unused for the symmetric
/// types), and each block is finished as `step_kmin` / `step_ksym` finish it
/// (`d = d_a·d_w`, `dmin = d_a·dmin_w`, `sumf + (d·sumi − dmin·summ)`; or
/// `sumf + (d_a·d_w)·sumi`), the same IEEE operations in the same order. So
/// the result is the scalar kernel's, and the tiled kernels', bit for bit: a
/// product does not depend on the batch it ran in.
///
/// The steps go four at a time in vector lanes, after one reduction of four
/// blocks' lanes (`M` = 1: four blocks of the row, added to the sum in
/// order; `M` = 4: one block of each row). Super-blocks are prefetched
/// [`PREFETCH_AHEAD`] bytes ahead.
///
/// Pass `lanes` as an `#[inline(always)]` closure: a closure is compiled
/// without its caller's target features, and one left out of line runs its
/// intrinsics as calls, many times slower (benches/journal/
/// kernel-dispatch.md, `ksteps`).
#[inline(always)]
pub(crate) unsafe fn ksteps<X: KScales, const M: usize>(
    w: &[X],
    a: [&[BlockQ8K]; M],
    mut lanes: impl FnMut(&X, [&BlockQ8K; M]) -> [(__m256i, __m256i); M],
) -> [f32; M] {
    let zero = _mm256_setzero_si256();
    let mut sumf = [0f32; M];
    if M == 1 {
        let y = a[0];
        let nb = w.len().min(y.len());
        let full = nb / 4 * 4;
        let mut s = 0;
        while s < full {
            let (x, y) = (&w[s..s + 4], &y[s..s + 4]);
            // The four blocks written out (a loop over them is not unrolled,
            // and on AVX-512 runs slower).
            let (mut pi, mut pm) = ([zero; 4], [zero; 4]);
            prefetch_ahead(&x[0]);
            (pi[0], pm[0]) = lanes(&x[0], [&y[0]; M])[0];
            prefetch_ahead(&x[1]);
            (pi[1], pm[1]) = lanes(&x[1], [&y[1]; M])[0];
            prefetch_ahead(&x[2]);
            (pi[2], pm[2]) = lanes(&x[2], [&y[2]; M])[0];
            prefetch_ahead(&x[3]);
            (pi[3], pm[3]) = lanes(&x[3], [&y[3]; M])[0];
            let da = _mm_setr_ps(y[0].d, y[1].d, y[2].d, y[3].d);
            let t = step4(pi, pm, da, [&x[0], &x[1], &x[2], &x[3]]);
            // The four blocks' adds in order.
            sumf[0] += _mm_cvtss_f32(t);
            sumf[0] += _mm_cvtss_f32(_mm_movehdup_ps(t));
            let hi = _mm_movehl_ps(t, t);
            sumf[0] += _mm_cvtss_f32(hi);
            sumf[0] += _mm_cvtss_f32(_mm_movehdup_ps(hi));
            s += 4;
        }
        // The last blocks one at a time, in lane 0 (the other lanes zero).
        for (x, y) in w[full..nb].iter().zip(&y[full..nb]) {
            prefetch_ahead(x);
            let (si, sm) = lanes(x, [y; M])[0];
            let da = _mm_setr_ps(y.d, 0.0, 0.0, 0.0);
            let t = step4([si, zero, zero, zero], [sm, zero, zero, zero], da, [x; 4]);
            sumf[0] += _mm_cvtss_f32(t);
        }
    } else {
        let mut acc = _mm_setzero_ps();
        for (s, x) in w.iter().enumerate() {
            prefetch_ahead(x);
            let mut ys = [&a[0][s]; M];
            for m in 0..M {
                ys[m] = &a[m][s];
            }
            let l = lanes(x, ys);
            let mut li = [zero; 4];
            let mut lm = [zero; 4];
            let mut da = [0f32; 4];
            for m in 0..M {
                (li[m], lm[m]) = l[m];
                da[m] = ys[m].d;
            }
            let da = _mm_loadu_ps(da.as_ptr());
            acc = _mm_add_ps(acc, step4(li, lm, da, [x; 4]));
        }
        let mut out = [0f32; 4];
        _mm_storeu_ps(out.as_mut_ptr(), acc);
        sumf.copy_from_slice(&out[..M]);
    }
    sumf
}

/// Four blocks' (or rows') terms of the scalar float step, lane by lane:
/// `(d_a·d)·sumi`, minus `(d_a·dmin)·summ` with mins, for the weight blocks
/// `xs` and activation scales `da`.
#[inline(always)]
unsafe fn step4<X: KScales>(li: [__m256i; 4], lm: [__m256i; 4], da: __m128, xs: [&X; 4]) -> __m128 {
    let [(d0, m0), (d1, m1), (d2, m2), (d3, m3)] = [
        xs[0].d_dmin_bits(),
        xs[1].d_dmin_bits(),
        xs[2].d_dmin_bits(),
        xs[3].d_dmin_bits(),
    ];
    let h = |v: u16| v as i16;
    let bits = _mm_setr_epi16(h(d0), h(d1), h(d2), h(d3), h(m0), h(m1), h(m2), h(m3));
    let scales = _mm256_cvtph_ps(bits);
    let d = _mm_mul_ps(da, _mm256_castps256_ps128(scales));
    let t = _mm_mul_ps(d, _mm_cvtepi32_ps(sums4(li)));
    if X::MINS {
        let dmin = _mm_mul_ps(da, _mm256_extractf128_ps::<1>(scales));
        _mm_sub_ps(t, _mm_mul_ps(dmin, _mm_cvtepi32_ps(sums4(lm))))
    } else {
        t
    }
}

/// The weight side of one Q6_K super-block.
struct Q6KWeights {
    levels: [__m256i; 8],
    scales: [__m256i; 8],
    /// The 16 scales as i16 lanes.
    sc: __m256i,
}

#[inline(always)]
unsafe fn q6k_weights(x: &BlockQ6K) -> Q6KWeights {
    let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.scales.as_ptr() as *const __m128i));
    let [a, b, c, d] = q6k_quants(x, 0);
    let [e, f, g, h] = q6k_quants(x, 1);
    Q6KWeights {
        levels: [a, b, c, d, e, f, g, h],
        scales: g16_scales(sc),
        sc,
    }
}

/// One Q6_K super-block against one activation block: its integer lanes
/// `(sumi, 0)` (see `ksteps`).
#[inline(always)]
unsafe fn q6k_lanes(w: &Q6KWeights, y: &BlockQ8K) -> (__m256i, __m256i) {
    // The real level is q - 32: subtract 32 · Σ sc·bsum.
    let corr = _mm256_madd_epi16(w.sc, _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i));
    let sumi = g16_sumi(&w.levels, &w.scales, y);
    (
        _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 5)),
        _mm256_setzero_si256(),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn iq4_xs_q8k(w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32 {
    let t = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
    let table = _mm256_set_m128i(t, t);
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        prefetch_ahead(x);
        let mut acc = _mm256_setzero_si256();
        for ib in 0..8 {
            let qx = _mm256_shuffle_epi8(table, nibbles(x.qs.as_ptr().add(16 * ib)));
            let p = dot_i8_i32(qx, load_i8(y.qs.as_ptr().add(32 * ib)));
            acc = _mm256_add_epi32(
                acc,
                _mm256_mullo_epi32(p, _mm256_set1_epi32(x.sub_scale(ib))),
            );
        }
        sumf += y.d * f16(x.d) * hsum_i32(acc) as f32;
    }
    sumf
}

/// [`iq4_xs_q8k`] for four activation rows: each sub-block's values looked
/// up once; the same operations per row, so the same bits.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn iq4_xs_q8k_x4(w: &[BlockIQ4XS], a: [&[BlockQ8K]; 4]) -> [f32; 4] {
    let t = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
    let table = _mm256_set_m128i(t, t);
    let mut sumf = [0f32; 4];
    for (i, x) in w.iter().enumerate() {
        prefetch_ahead(x);
        let y = [&a[0][i], &a[1][i], &a[2][i], &a[3][i]];
        let mut acc = [_mm256_setzero_si256(); 4];
        for ib in 0..8 {
            let qx = _mm256_shuffle_epi8(table, nibbles(x.qs.as_ptr().add(16 * ib)));
            let sc = _mm256_set1_epi32(x.sub_scale(ib));
            for r in 0..4 {
                let p = dot_i8_i32(qx, load_i8(y[r].qs.as_ptr().add(32 * ib)));
                acc[r] = _mm256_add_epi32(acc[r], _mm256_mullo_epi32(p, sc));
            }
        }
        let d = f16(x.d);
        for r in 0..4 {
            sumf[r] += y[r].d * d * hsum_i32(acc[r]) as f32;
        }
    }
    sumf
}

/// A 16-bit float weight format: how 8 of them widen to f32.
pub(crate) trait Half {
    /// The 8 values at `p` (16 bytes, little-endian), as f32.
    ///
    /// # Safety
    /// AVX2 and F16C available; `p` valid for 16 bytes.
    unsafe fn widen8(p: *const u8) -> __m256;
    /// One value, for the tails.
    fn to_f32(b: [u8; 2]) -> f32;
    /// Whether this is bfloat16 (which has a `vdpbf16ps` prefill kernel).
    const IS_BF16: bool;
}

/// IEEE half ([`F16Le`]).
pub(crate) struct F16;
/// bfloat16: the top half of an f32.
pub(crate) struct BF16;

impl Half for F16 {
    const IS_BF16: bool = false;
    #[inline(always)]
    unsafe fn widen8(p: *const u8) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    fn to_f32(b: [u8; 2]) -> f32 {
        F16Le(b).to_f32()
    }
}

impl Half for BF16 {
    const IS_BF16: bool = true;
    #[inline(always)]
    unsafe fn widen8(p: *const u8) -> __m256 {
        // Zero-extend to 32 bits and shift into the top half: exact.
        let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v))
    }
    fn to_f32(b: [u8; 2]) -> f32 {
        half::bf16::from_le_bytes(b).to_f32()
    }
}

/// 16-bit float weights (little-endian bytes) × f32 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_f32(w: &[u8], x: &[f32]) -> f32 {
    half_f32::<F16>(w, x)
}

/// bf16 weights × f32 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn bf16_f32(w: &[u8], x: &[f32]) -> f32 {
    half_f32::<BF16>(w, x)
}

#[inline(always)]
unsafe fn half_f32<H: Half>(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(w.len() / 2);
    let wp = w.as_ptr();
    let xp = x.as_ptr();
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        // 64 bytes of weights per step: one line ahead per step.
        _mm_prefetch::<_MM_HINT_T0>((wp as *const i8).wrapping_add(2 * i + PREFETCH_AHEAD));
        for (k, a) in acc.iter_mut().enumerate() {
            let wv = H::widen8(wp.add(2 * (i + 8 * k)));
            *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp.add(i + 8 * k)), *a);
        }
        i += 32;
    }
    while i + 8 <= n {
        let wv = H::widen8(wp.add(2 * i));
        acc[0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp.add(i)), acc[0]);
        i += 8;
    }
    let mut sum = hsum_f32(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    while i < n {
        sum += H::to_f32([w[2 * i], w[2 * i + 1]]) * x[i];
        i += 1;
    }
    sum
}

// ---------------------------------------------------------------------------
// Four activation rows at once (matrix × matrix): the weight block is
// unpacked once and multiplied with four activation blocks. Each result is
// computed with exactly the operations of the one-row kernel above, so the
// two agree bit for bit.
// ---------------------------------------------------------------------------

// The k-quants' four-row kernels: the weight side once per block (Q4_K,
// Q6_K; Q2_K shares its loads through the cache), the same integer lanes
// and, by `ksteps`, the same float steps as the one-row kernels: the scalar
// kernel's bits.

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4k_q8k_x4(w: &[BlockQ4K], a: [&[BlockQ8K]; 4]) -> [f32; 4] {
    ksteps::<_, 4>(
        w,
        a,
        #[inline(always)]
        |x, ys| {
            let kw = q4k_weights(x);
            let mut l = [(_mm256_setzero_si256(), _mm256_setzero_si256()); 4];
            for m in 0..4 {
                l[m] = k4_lanes(&kw, ys[m]);
            }
            l
        },
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6k_q8k_x4(w: &[BlockQ6K], a: [&[BlockQ8K]; 4]) -> [f32; 4] {
    ksteps::<_, 4>(
        w,
        a,
        #[inline(always)]
        |x, ys| {
            let qw = q6k_weights(x);
            let mut l = [(_mm256_setzero_si256(), _mm256_setzero_si256()); 4];
            for m in 0..4 {
                l[m] = q6k_lanes(&qw, ys[m]);
            }
            l
        },
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q2k_q8k_x4(w: &[BlockQ2K], a: [&[BlockQ8K]; 4]) -> [f32; 4] {
    ksteps::<_, 4>(
        w,
        a,
        #[inline(always)]
        |x, ys| {
            let mut l = [(_mm256_setzero_si256(), _mm256_setzero_si256()); 4];
            for m in 0..4 {
                l[m] = q2k_lanes(x, ys[m]);
            }
            l
        },
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_0_q8_0_x4(w: &[BlockQ8_0], a: [&[BlockQ8_0]; 4]) -> [f32; 4] {
    // `q8_0_q8_0`'s operations per row, the weight block loaded once.
    #[inline(always)]
    unsafe fn step(x: &BlockQ8_0, a: [&[BlockQ8_0]; 4], i: usize, acc: &mut [__m256; 4]) {
        let qx = load_i8(x.qs.as_ptr());
        let dx = f16x8(x.d);
        for t in 0..4 {
            let y = &a[t][i];
            let d = _mm256_mul_ps(dx, f16x8(y.d));
            let p = dot_i8_i32(qx, load_i8(y.qs.as_ptr()));
            acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[t]);
        }
    }
    let mut acc0 = [_mm256_setzero_ps(); 4];
    let mut acc1 = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 2 <= w.len() {
        step(&w[i], a, i, &mut acc0);
        step(&w[i + 1], a, i + 1, &mut acc1);
        i += 2;
    }
    if i < w.len() {
        step(&w[i], a, i, &mut acc0);
    }
    [
        hsum_f32(_mm256_add_ps(acc0[0], acc1[0])),
        hsum_f32(_mm256_add_ps(acc0[1], acc1[1])),
        hsum_f32(_mm256_add_ps(acc0[2], acc1[2])),
        hsum_f32(_mm256_add_ps(acc0[3], acc1[3])),
    ]
}

/// f16 weights × four f32 activation rows; same summation as [`f16_f32`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_f32_x4(w: &[u8], x: [&[f32]; 4]) -> [f32; 4] {
    half_f32_x4::<F16>(w, x)
}

/// bf16 weights × four f32 activation rows; same summation as [`bf16_f32`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn bf16_f32_x4(w: &[u8], x: [&[f32]; 4]) -> [f32; 4] {
    half_f32_x4::<BF16>(w, x)
}

#[inline(always)]
unsafe fn half_f32_x4<H: Half>(w: &[u8], x: [&[f32]; 4]) -> [f32; 4] {
    let n = x
        .iter()
        .map(|r| r.len())
        .min()
        .unwrap_or(0)
        .min(w.len() / 2);
    let wp = w.as_ptr();
    let mut acc = [[_mm256_setzero_ps(); 4]; 4];
    let mut i = 0;
    while i + 32 <= n {
        for k in 0..4 {
            let wv = H::widen8(wp.add(2 * (i + 8 * k)));
            for t in 0..4 {
                acc[t][k] =
                    _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[t].as_ptr().add(i + 8 * k)), acc[t][k]);
            }
        }
        i += 32;
    }
    while i + 8 <= n {
        let wv = H::widen8(wp.add(2 * i));
        for t in 0..4 {
            acc[t][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[t].as_ptr().add(i)), acc[t][0]);
        }
        i += 8;
    }
    let mut out = [0f32; 4];
    for t in 0..4 {
        let a = &acc[t];
        let mut sum = hsum_f32(_mm256_add_ps(
            _mm256_add_ps(a[0], a[1]),
            _mm256_add_ps(a[2], a[3]),
        ));
        for j in i..n {
            sum += H::to_f32([w[2 * j], w[2 * j + 1]]) * x[t][j];
        }
        out[t] = sum;
    }
    out
}

// ---------------------------------------------------------------------------
// A whole super-block's unsigned quant levels as 8 vectors of 32 consecutive
// values (element 32i + l in byte l of vector i), for the tiled matrix ×
// matrix kernels of `crate::gemm`, which expand each weight once per call.
// ---------------------------------------------------------------------------

/// Q4_K: 0..16.
#[inline(always)]
pub(crate) unsafe fn levels_q4k(x: &BlockQ4K) -> [__m256i; 8] {
    levels_q4k_nibbles(&x.qs)
}

/// Q5_K: 0..32.
#[inline(always)]
pub(crate) unsafe fn levels_q5k(x: &BlockQ5K) -> [__m256i; 8] {
    let m1 = _mm256_set1_epi8(1);
    let qh = load(x.qh.as_ptr());
    let mut v = levels_q4k_nibbles(&x.qs);
    for (j, vj) in v.iter_mut().enumerate() {
        let h = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(j as i32)), m1);
        *vj = _mm256_or_si256(*vj, _mm256_slli_epi16(h, 4));
    }
    v
}

#[inline(always)]
unsafe fn levels_q4k_nibbles(qs: &[u8; QK_K / 2]) -> [__m256i; 8] {
    let m4 = _mm256_set1_epi8(0xF);
    let mut v = [_mm256_setzero_si256(); 8];
    for j in 0..4 {
        let q = load(qs.as_ptr().add(32 * j));
        v[2 * j] = _mm256_and_si256(q, m4);
        v[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    }
    v
}

/// Q6_K: 0..64 (the real level is this minus 32).
#[inline(always)]
pub(crate) unsafe fn levels_q6k(x: &BlockQ6K) -> [__m256i; 8] {
    let [a, b, c, d] = q6k_quants(x, 0);
    let [e, f, g, h] = q6k_quants(x, 1);
    [a, b, c, d, e, f, g, h]
}

/// Q2_K: 0..4.
#[inline(always)]
pub(crate) unsafe fn levels_q2k(x: &BlockQ2K) -> [__m256i; 8] {
    levels_q2k_qs([load(x.qs.as_ptr()), load(x.qs.as_ptr().add(32))])
}

/// [`levels_q2k`] from the two 32-byte halves of a block's `qs`.
#[inline(always)]
pub(crate) unsafe fn levels_q2k_qs(qs: [__m256i; 2]) -> [__m256i; 8] {
    let m3 = _mm256_set1_epi8(3);
    let mut v = [_mm256_setzero_si256(); 8];
    for (n, &q) in qs.iter().enumerate() {
        for k in 0..4 {
            v[4 * n + k] =
                _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * k as i32)), m3);
        }
    }
    v
}

/// Q3_K: 0..8 (the real level is this minus 4).
#[inline(always)]
pub(crate) unsafe fn levels_q3k(x: &BlockQ3K) -> [__m256i; 8] {
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm256_set1_epi8(4);
    let hm = load(x.hmask.as_ptr());
    let mut v = [_mm256_setzero_si256(); 8];
    for n in 0..2 {
        let q = load(x.qs.as_ptr().add(32 * n));
        for k in 0..4 {
            let low = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * k as i32)), m3);
            let b = (4 * n + k) as i32;
            let hb = if b >= 2 {
                _mm256_and_si256(_mm256_srl_epi16(hm, _mm_cvtsi32_si128(b - 2)), m4)
            } else {
                _mm256_and_si256(_mm256_sll_epi16(hm, _mm_cvtsi32_si128(2 - b)), m4)
            };
            v[4 * n + k] = _mm256_or_si256(low, hb);
        }
    }
    v
}

/// Q4_0 / Q4_1: the 32 levels 0..16 of a block's nibbles, in order.
#[inline(always)]
pub(crate) unsafe fn levels_q4_32(qs: &[u8; 16]) -> __m256i {
    nibbles(qs.as_ptr())
}

/// [`KVALUES_IQ4NL`] in each 128-bit lane, for `vpshufb`.
#[inline(always)]
pub(crate) unsafe fn iq4nl_table() -> __m256i {
    let t = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
    _mm256_set_m128i(t, t)
}

/// IQ4_NL: the 32 signed values (table entries), in order.
#[inline(always)]
pub(crate) unsafe fn values_iq4nl_32(qs: &[u8; 16]) -> __m256i {
    _mm256_shuffle_epi8(iq4nl_table(), nibbles(qs.as_ptr()))
}

/// The fifth bits of 32 levels (bit `i` of `bits` for byte `i`) as 0x10 in
/// each byte whose bit is set.
#[inline(always)]
pub(crate) unsafe fn fifth_bits(bits: u32) -> __m256i {
    _mm256_and_si256(bytes_from_bits(bits), _mm256_set1_epi8(0x10))
}

/// Q5_0 / Q5_1: the 32 levels 0..32 (nibble | high bit << 4), in order.
#[inline(always)]
pub(crate) unsafe fn levels_q5_32(qs: &[u8; 16], qh: [u8; 4]) -> __m256i {
    _mm256_or_si256(nibbles(qs.as_ptr()), fifth_bits(u32::from_le_bytes(qh)))
}

// ---- The i-quants on lattices ([`crate::iquant`]) ----
//
// Each 32-value sub-block is read as three vectors: the weights' magnitudes
// (unsigned grid bytes), their signs (±1 bytes, applied to the activations
// with `vpsignb`) and the i16 scale of each 16. The integer sum of a block
// is exact, and the float step is the scalar kernel's, so results equal
// [`super::scalar`]'s bit for bit. IQ1_S's magnitudes are all one and its
// grid values (−1, 0, 1) are the signs.

use crate::iquant::IqBlock;

/// Sub-block `ib`: magnitudes, signs, and the scales of its two halves.
#[inline(always)]
unsafe fn iq_sub<B: IqBlock>(x: &B, ib: usize) -> (__m256i, __m256i, __m256i) {
    // Four calls, not `[0, 1, 2, 3].map(..)`: that one is not inlined, and
    // the call between vector instructions spills them. Where a type gives
    // its grid entries or sign bytes whole, those are used instead (the
    // unused parts of `group` are then dropped by the compiler).
    let (g0, g1, g2, g3) = (
        x.group(ib, 0),
        x.group(ib, 1),
        x.group(ib, 2),
        x.group(ib, 3),
    );
    let m = match x.grid4(ib) {
        Some(g) => _mm256_setr_epi32(
            g[0] as i32,
            g[1] as i32,
            g[2] as i32,
            g[3] as i32,
            g[4] as i32,
            g[5] as i32,
            g[6] as i32,
            g[7] as i32,
        ),
        None => _mm256_setr_epi64x(g0.0 as i64, g1.0 as i64, g2.0 as i64, g3.0 as i64),
    };
    let s = match x.sign_bytes(ib) {
        Some(bits) => expand_signs(bits),
        None => _mm256_setr_epi64x(g0.1 as i64, g1.1 as i64, g2.1 as i64, g3.1 as i64),
    };
    let [lo, hi] = x.scales(ib);
    let sc = _mm256_setr_m128i(_mm_set1_epi16(lo as i16), _mm_set1_epi16(hi as i16));
    (m, s, sc)
}

/// 4 sign bytes (byte `l` for values `8l..8l + 8`) to 32 bytes of ±1.
#[inline(always)]
unsafe fn expand_signs(bits: u32) -> __m256i {
    let bytes = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_setr_epi64x(
            0,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let neg = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    _mm256_or_si256(neg, _mm256_set1_epi8(1))
}

/// `Σ scale · magnitude · (sign · a)` of one sub-block as i32 lanes.
#[inline(always)]
unsafe fn iq_sub_dot((m, s, sc): (__m256i, __m256i, __m256i), a: *const i8) -> __m256i {
    let a = _mm256_sign_epi8(load_i8(a), s);
    _mm256_madd_epi16(_mm256_maddubs_epi16(m, a), sc)
}

/// A lattice i-quant block as the AVX2 kernels read it: [`IqBlock`] and,
/// where the block's integer sum has a part its sub-block lanes do not
/// hold (IQ1_S's shifts), that part's weights in vector form.
trait IqYmm: IqBlock {
    /// Per group of 16 values, the weight of its activations' sum (i16
    /// lanes, in order): `Σ_g offset_g · bsum_g` is
    /// [`IqBlock::delta_sum`]. `None` where that is zero.
    #[inline(always)]
    unsafe fn offset(&self) -> Option<__m256i> {
        None
    }
}

impl IqYmm for BlockIQ2XXS {}
impl IqYmm for BlockIQ2XS {}
impl IqYmm for BlockIQ2S {}
impl IqYmm for BlockIQ3XXS {}
impl IqYmm for BlockIQ3S {}

impl IqYmm for BlockIQ1S {
    /// Sub-block `ib`'s scale `2·s + 1` (bits 12..15 of `qh[ib]`) times
    /// its shift `δ` (−1 where bit 15 is set, else 1), once per half.
    #[inline(always)]
    unsafe fn offset(&self) -> Option<__m256i> {
        let qh = _mm_loadu_si128(self.qh.as_ptr() as *const __m128i);
        let s = _mm_and_si128(_mm_srli_epi16(qh, 12), _mm_set1_epi16(7));
        let s = _mm_or_si128(_mm_slli_epi16(s, 1), _mm_set1_epi16(1));
        // `vpsignw` negates where `qh` is negative (bit 15); `| 1` keeps a
        // zero `qh` from zeroing its scale.
        let sd = _mm_sign_epi16(s, _mm_or_si128(qh, _mm_set1_epi16(1)));
        Some(_mm256_set_m128i(
            _mm_unpackhi_epi16(sd, sd),
            _mm_unpacklo_epi16(sd, sd),
        ))
    }
}

/// Block `x`'s integer sum against `y` as i32 lanes (their sum is the
/// scalar kernel's `sumi`, exactly). `o`: `x`'s [`IqYmm::offset`].
#[inline(always)]
unsafe fn iq_block<B: IqYmm>(x: &B, o: Option<__m256i>, y: &BlockQ8K) -> __m256i {
    let mut acc = _mm256_setzero_si256();
    for ib in 0..8 {
        acc = _mm256_add_epi32(acc, iq_sub_dot(iq_sub(x, ib), y.qs.as_ptr().add(32 * ib)));
    }
    iq_finish::<B>(acc, o, y)
}

/// `MUL · acc` plus the offset part of the sum, where the type has one.
#[inline(always)]
unsafe fn iq_finish<B: IqBlock>(acc: __m256i, o: Option<__m256i>, y: &BlockQ8K) -> __m256i {
    match o {
        Some(o) => {
            let bsums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
            let acc = _mm256_mullo_epi32(acc, _mm256_set1_epi32(B::MUL));
            _mm256_add_epi32(acc, _mm256_madd_epi16(bsums, o))
        }
        None => {
            debug_assert_eq!(B::MUL, 1);
            acc
        }
    }
}

/// The lane sums of four i32 vectors, in order.
#[inline(always)]
unsafe fn hsum4_i32(a: [__m256i; 4]) -> __m128i {
    let t = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
    _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1))
}

/// The scalar kernel's float products `(FACTOR·d_a)·d·sumi` of four blocks
/// at once (each lane rounds as the scalar step does).
#[inline(always)]
unsafe fn iq_products<B: IqBlock>(da: [f32; 4], d: [F16Le; 4], sumi: __m128i) -> __m128 {
    let da = _mm_mul_ps(
        _mm_set1_ps(B::FACTOR),
        _mm_setr_ps(da[0], da[1], da[2], da[3]),
    );
    let d = _mm_cvtph_ps(_mm_setr_epi16(
        d[0].bits() as i16,
        d[1].bits() as i16,
        d[2].bits() as i16,
        d[3].bits() as i16,
        0,
        0,
        0,
        0,
    ));
    _mm_mul_ps(_mm_mul_ps(da, d), _mm_cvtepi32_ps(sumi))
}

/// The i-quants' one-row kernel. Four blocks share one horizontal sum and
/// one vector of float products; their steps into `sumf` stay in order.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq_q8k<B: IqYmm>(w: &[B], a: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    let mut xs = w.chunks_exact(4);
    let mut ys = a.chunks_exact(4);
    for (x, y) in (&mut xs).zip(&mut ys) {
        let acc = [
            iq_block(&x[0], x[0].offset(), &y[0]),
            iq_block(&x[1], x[1].offset(), &y[1]),
            iq_block(&x[2], x[2].offset(), &y[2]),
            iq_block(&x[3], x[3].offset(), &y[3]),
        ];
        let p = iq_products::<B>(
            [y[0].d, y[1].d, y[2].d, y[3].d],
            [x[0].d(), x[1].d(), x[2].d(), x[3].d()],
            hsum4_i32(acc),
        );
        let mut p4 = [0f32; 4];
        _mm_storeu_ps(p4.as_mut_ptr(), p);
        sumf += p4[0];
        sumf += p4[1];
        sumf += p4[2];
        sumf += p4[3];
    }
    for (x, y) in xs.remainder().iter().zip(ys.remainder()) {
        let sumi = hsum_i32(iq_block(x, x.offset(), y));
        sumf += B::FACTOR * y.d * f16(x.d()) * sumi as f32;
    }
    sumf
}

/// The i-quants' four-row kernel: each sub-block read once for four rows,
/// whose block sums share one horizontal sum and one vector of products.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq_q8k_x4<B: IqYmm>(w: &[B], a: [&[BlockQ8K]; 4]) -> [f32; 4] {
    let mut sumf = _mm_setzero_ps();
    for (i, x) in w.iter().enumerate() {
        let y = [&a[0][i], &a[1][i], &a[2][i], &a[3][i]];
        let mut acc = [_mm256_setzero_si256(); 4];
        for ib in 0..8 {
            let sub = iq_sub(x, ib);
            for r in 0..4 {
                let p = iq_sub_dot(sub, y[r].qs.as_ptr().add(32 * ib));
                acc[r] = _mm256_add_epi32(acc[r], p);
            }
        }
        let o = x.offset();
        let acc = [
            iq_finish::<B>(acc[0], o, y[0]),
            iq_finish::<B>(acc[1], o, y[1]),
            iq_finish::<B>(acc[2], o, y[2]),
            iq_finish::<B>(acc[3], o, y[3]),
        ];
        let d = x.d();
        let p = iq_products::<B>([y[0].d, y[1].d, y[2].d, y[3].d], [d; 4], hsum4_i32(acc));
        sumf = _mm_add_ps(sumf, p);
    }
    let mut out = [0f32; 4];
    _mm_storeu_ps(out.as_mut_ptr(), sumf);
    out
}

macro_rules! iq_entries {
    ($($one:ident, $four:ident, $B:ty;)*) => {$(
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $one(w: &[$B], a: &[BlockQ8K]) -> f32 {
            iq_q8k(w, a)
        }
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $four(w: &[$B], a: [&[BlockQ8K]; 4]) -> [f32; 4] {
            iq_q8k_x4(w, a)
        }
    )*};
}

iq_entries! {
    iq2_xxs_q8k, iq2_xxs_q8k_x4, BlockIQ2XXS;
    iq2_xs_q8k, iq2_xs_q8k_x4, BlockIQ2XS;
    iq2_s_q8k, iq2_s_q8k_x4, BlockIQ2S;
    iq3_xxs_q8k, iq3_xxs_q8k_x4, BlockIQ3XXS;
    iq3_s_q8k, iq3_s_q8k_x4, BlockIQ3S;
    iq1_s_q8k, iq1_s_q8k_x4, BlockIQ1S;
}
