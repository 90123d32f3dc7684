//! AVX-512 (F/BW/VL + VNNI) forms of the row dot products, for the types
//! where they measure faster than the AVX2 ones; every other type runs its
//! AVX2 form on [`crate::Isa::Avx512`].
//!
//! Q6_K: one super-block is four `zmm` of 64 levels. The 6-bit levels are
//! built unsigned (`0..63`, the stored `q`), so `vpmaddubsw` takes them as
//! its unsigned operand against the signed Q8_K bytes (pairs at most
//! `2·63·128`, no i16 overflow); `vpdpwssd` multiplies those pair sums by the
//! 16-value group scales and adds them into i32 lanes. The real level is
//! `q − 32`: its effect, `32·Σ_g scale_g·bsum_g`, comes off once per
//! super-block from the activation's group sums. As in the AVX2 kernel each
//! super-block's integer lanes are scaled and added into f32 lanes, so the
//! result agrees with the scalar kernel to rounding, not bit for bit.
//!
//! Q2_K: the same four `zmm` of 64 levels (2-bit fields shifted per 256-bit
//! half by `vpsrlvw`), `vpmaddubsw` and `vpdpwssd` with the 16 group scales.
//! Its 16 i32 lanes are folded to 8 before the float step, which gives the
//! exact integer lanes of the AVX2 kernel (lane `i` sums values `4i..4i + 4`
//! of every 32-value chunk), and the float steps are the AVX2 kernel's own:
//! the result equals [`super::avx2::q2k_q8k`] bit for bit, so its four-row
//! AVX2 form stays interchangeable with it.
//!
//! Q3_K: the same, with each level's high bit (bit `4n + k` of `hmask`)
//! moved to bit 2 by a per-half `vpsllvw`/`vpsrlvw`; also bit-identical to
//! [`super::avx2::q3k_q8k`].
//!
//! Q5_K: zmm `j` is chunk `j` (sub-blocks `2j`, `2j + 1`, in order), its
//! nibbles split and fifth bits placed by per-half variable shifts, the two
//! sub-block scales spread by `vpermw`; folded and finished as the AVX2
//! kernel does, so equal to [`super::avx2::q5k_q8k`] bit for bit.

#![allow(clippy::missing_safety_doc)]

use super::avx2::{f16, prefetch_ahead};
use crate::blocks::{BlockQ2K, BlockQ3K, BlockQ5K, BlockQ6K, BlockQ8K};
use std::arch::x86_64::*;

/// For each of the 4 `zmm` of a Q6_K super-block (64 levels, 4 groups of
/// 16), the scale index of each i16 pair lane: lane `i` of `zmm` `j` sums
/// levels `64j + 2i, 64j + 2i + 1`, which are in group `4j + i / 8`.
const Q6K_SCALE_LANES: [[i16; 32]; 4] = {
    let mut t = [[0i16; 32]; 4];
    let mut j = 0;
    while j < 4 {
        let mut i = 0;
        while i < 32 {
            t[j][i] = (4 * j + i / 8) as i16;
            i += 1;
        }
        j += 1;
    }
    t
};

/// 64 bytes at `p` as two 32-byte loads. A Q6_K block (210 bytes) starts
/// anywhere in a cache line, so a 64-byte load of its `ql` almost always
/// spans two lines; on matrices read from memory (AMD Zen 4, 2 threads,
/// Q6_K 32000×4096, `examples/stream_timing`) the kernel ran at 27.7 GiB/s
/// with one such load and 37.2 with two halves (the AVX2 kernel: 37.5),
/// the same from L3 (48–52 GiB/s).
#[inline(always)]
unsafe fn load_halves(p: *const u8) -> __m512i {
    _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_loadu_si256(p as *const __m256i)),
        _mm256_loadu_si256(p.add(32) as *const __m256i),
    )
}

/// Q6_K weights × Q8_K activations.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available. Reads
/// `min(w.len(), a.len())` blocks of each slice.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q6k_q8k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let m4 = _mm512_set1_epi8(0x0F);
    let m30 = _mm512_set1_epi8(0x30);
    // Levels 32k + l (k = 0..4 within a 128-level half) take qh[l] bits
    // 2k, 2k + 1 to bits 4, 5: k = 0, 1 (low nibbles, the two 256-bit
    // halves of the first zmm) shift left by 4 and 2, k = 2, 3 shift right
    // by 0 and 2.
    let shl = _mm512_inserti64x4::<1>(_mm512_set1_epi16(4), _mm256_set1_epi16(2));
    let shr = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(2));
    let lanes = Q6K_SCALE_LANES.map(|l| _mm512_loadu_si512(l.as_ptr() as *const __m512i));
    let mut acc = _mm512_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        prefetch_ahead(x);
        let sc8 = _mm_loadu_si128(x.scales.as_ptr() as *const __m128i);
        let sc16 = _mm256_cvtepi8_epi16(sc8);
        let sc = _mm512_castsi256_si512(sc16);
        let mut sumi = _mm512_setzero_si512();
        for n in 0..2 {
            let ql = load_halves(x.ql.as_ptr().add(64 * n));
            let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                x.qh.as_ptr().add(32 * n) as *const __m256i
            ));
            let lo = _mm512_or_si512(
                _mm512_and_si512(ql, m4),
                _mm512_and_si512(_mm512_sllv_epi16(qh, shl), m30),
            );
            let hi = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                _mm512_and_si512(_mm512_srlv_epi16(qh, shr), m30),
            );
            let ylo = _mm512_loadu_si512(y.qs.as_ptr().add(128 * n) as *const __m512i);
            let yhi = _mm512_loadu_si512(y.qs.as_ptr().add(128 * n + 64) as *const __m512i);
            let slo = _mm512_permutexvar_epi16(lanes[2 * n], sc);
            let shi = _mm512_permutexvar_epi16(lanes[2 * n + 1], sc);
            sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(lo, ylo), slo);
            sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(hi, yhi), shi);
        }
        let corr = _mm256_madd_epi16(sc16, _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i));
        let sumi = _mm512_sub_epi32(sumi, _mm512_zextsi256_si512(_mm256_slli_epi32::<5>(corr)));
        let d = y.d * f16(x.d);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// Q2_K weights × Q8_K activations, bit-identical to the AVX2 kernel (see
/// the module docs).
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available. Reads
/// `min(w.len(), a.len())` blocks of each slice.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q2k_q8k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    let m3 = _mm512_set1_epi8(3);
    let m4 = _mm_set1_epi8(0xF);
    let shift = low_bit_shifts();
    let lanes = Q6K_SCALE_LANES.map(|l| _mm512_loadu_si512(l.as_ptr() as *const __m512i));
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        prefetch_ahead(x);
        let raw = _mm_loadu_si128(x.scales.as_ptr() as *const __m128i);
        let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(raw), m4));
        let prod = _mm256_madd_epi16(mins, _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i));
        let sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(raw, m4)));
        let mut sumi = _mm512_setzero_si512();
        for k in 0..4 {
            let lv = low2(&x.qs, k, &shift, m3);
            sumi = scaled_chunk(sumi, lv, y, k, lanes[k], sc);
        }
        let sumi = fold(sumi);
        // The AVX2 kernel's float steps, in its order.
        let d = y.d * f16(x.d);
        let dmin = y.d * f16(x.dmin);
        acc = _mm256_fnmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    super::avx2::hsum_f32(acc)
}

/// zmm `k` of a 2-bit super-block holds levels `64k..64k + 64`: bytes
/// `qs[32(k/2)..]` in both halves, shifted right by `4(k%2)` (low half,
/// chunk `2k`) and `4(k%2) + 2` (high half, chunk `2k + 1`).
#[inline(always)]
unsafe fn low_bit_shifts() -> [__m512i; 2] {
    [0i16, 4].map(|s| halves_i16(s, s + 2))
}

/// The 2-bit fields of zmm `k` (see [`low_bit_shifts`]; `m3`: 3 in every
/// byte), levels `64k..64k + 64` of the Q2_K / Q3_K `qs`.
#[inline(always)]
unsafe fn low2(qs: &[u8; 64], k: usize, shift: &[__m512i; 2], m3: __m512i) -> __m512i {
    let q = _mm512_broadcast_i64x4(_mm256_loadu_si256(
        qs.as_ptr().add(32 * (k / 2)) as *const __m256i
    ));
    _mm512_and_si512(_mm512_srlv_epi16(q, shift[k % 2]), m3)
}

/// `sumi` plus levels `64k..64k + 64` (`lv`, unsigned) times the same
/// activation bytes, pairs scaled by `sc` spread over the lanes by `lane`.
#[inline(always)]
unsafe fn scaled_chunk(
    sumi: __m512i,
    lv: __m512i,
    y: &BlockQ8K,
    k: usize,
    lane: __m512i,
    sc: __m512i,
) -> __m512i {
    let yk = _mm512_loadu_si512(y.qs.as_ptr().add(64 * k) as *const __m512i);
    let sk = _mm512_permutexvar_epi16(lane, sc);
    _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(lv, yk), sk)
}

/// Lanes `i` and `i + 8` added: the AVX2 kernels' 8 lanes (lane `i` sums
/// values `4i..4i + 4` of every 32-value chunk).
#[inline(always)]
unsafe fn fold(v: __m512i) -> __m256i {
    _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v))
}

/// Q3_K weights × Q8_K activations, bit-identical to the AVX2 kernel (see
/// the module docs).
///
/// # Safety
/// As [`q2k_q8k`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q3k_q8k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    let m3 = _mm512_set1_epi8(3);
    let m4 = _mm512_set1_epi8(4);
    let shift = low_bit_shifts();
    // Levels of zmm k take bit 4(k/2) + 2(k%2) (low half) and the next
    // (high half) of hmask to bit 2: left by 2, 1 for k = 0; right by
    // 0, 1 / 2, 3 / 4, 5 for k = 1, 2, 3.
    let hl = halves_i16(2, 1);
    let hr = [halves_i16(0, 1), halves_i16(2, 3), halves_i16(4, 5)];
    let lanes = Q6K_SCALE_LANES.map(|l| _mm512_loadu_si512(l.as_ptr() as *const __m512i));
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        prefetch_ahead(x);
        let sc16 = super::avx2::q3k_scales_i16(&x.scales);
        // The real level is (low | high << 2) - 4: subtract 4 · Σ sc·bsum.
        let corr = _mm256_madd_epi16(sc16, _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i));
        let sc = _mm512_castsi256_si512(sc16);
        let hm = _mm512_broadcast_i64x4(_mm256_loadu_si256(x.hmask.as_ptr() as *const __m256i));
        let mut sumi = _mm512_setzero_si512();
        for k in 0..4 {
            let low = low2(&x.qs, k, &shift, m3);
            let hb = if k == 0 {
                _mm512_sllv_epi16(hm, hl)
            } else {
                _mm512_srlv_epi16(hm, hr[k - 1])
            };
            let lv = _mm512_or_si512(low, _mm512_and_si512(hb, m4));
            sumi = scaled_chunk(sumi, lv, y, k, lanes[k], sc);
        }
        let sumi = _mm256_sub_epi32(fold(sumi), _mm256_slli_epi32::<2>(corr));
        let d = y.d * f16(x.d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    super::avx2::hsum_f32(acc)
}

/// A vector of i16 lanes: `lo` in the low 256 bits, `hi` in the high.
#[inline(always)]
unsafe fn halves_i16(lo: i16, hi: i16) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_set1_epi16(lo), _mm256_set1_epi16(hi))
}

/// Q5_K weights × Q8_K activations, bit-identical to the AVX2 kernel (see
/// the module docs).
///
/// # Safety
/// As [`q2k_q8k`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q5k_q8k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let m4 = _mm512_set1_epi8(0xF);
    let m16 = _mm512_set1_epi8(0x10);
    // Chunk j: low nibbles (low half), high nibbles (high half).
    let nib = halves_i16(0, 4);
    // qh bits 2j (low half) and 2j + 1 (high half) to bit 4: left by
    // 4, 3 / 2, 1 for j = 0, 1; right by 0, 1 / 2, 3 for j = 2, 3.
    let hl = [halves_i16(4, 3), halves_i16(2, 1)];
    let hr = [halves_i16(0, 1), halves_i16(2, 3)];
    // i16 lane i of zmm j takes the scale of sub-block 2j + i / 16.
    let lanes: [__m512i; 4] = std::array::from_fn(|j| halves_i16(2 * j as i16, 2 * j as i16 + 1));
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        prefetch_ahead(x);
        let ms = super::avx2::k4_scales_mins_i16(&x.scales);
        let sc = _mm512_castsi256_si512(ms);
        let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(x.qh.as_ptr() as *const __m256i));
        let mut sumi = _mm512_setzero_si512();
        for j in 0..4 {
            let q = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                x.qs.as_ptr().add(32 * j) as *const __m256i
            ));
            let low = _mm512_and_si512(_mm512_srlv_epi16(q, nib), m4);
            let hb = if j < 2 {
                _mm512_sllv_epi16(qh, hl[j])
            } else {
                _mm512_srlv_epi16(qh, hr[j - 2])
            };
            let lv = _mm512_or_si512(low, _mm512_and_si512(hb, m16));
            sumi = scaled_chunk(sumi, lv, y, j, lanes[j], sc);
        }
        // The AVX2 kernel's mins and float steps, in its order.
        let q8 = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
        let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(q8), _mm256_extracti128_si256(q8, 1));
        let prod = _mm_madd_epi16(_mm256_extracti128_si256(ms, 1), q8s);
        let dy = _mm256_set1_ps(y.d);
        let dd = _mm256_mul_ps(dy, _mm256_set1_ps(f16(x.d)));
        let dm = _mm256_mul_ps(dy, _mm256_set1_ps(f16(x.dmin)));
        acc = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(fold(sumi)), acc);
        let mins = _mm256_set_m128i(_mm_setzero_si128(), prod);
        acc = _mm256_fnmadd_ps(dm, _mm256_cvtepi32_ps(mins), acc);
    }
    super::avx2::hsum_f32(acc)
}
