//! k-quant weights × Q8_K activations, register-tiled with AVX-512 VNNI.
//!
//! The same sums as the AVX2 kernel ([`super::kquant`]), per super-block
//!
//! ```text
//! dot = (d_a·d_w) · Σ_g sc_g · Σ_{k∈g} q_k·a_k  −  (d_a·dm_w) · Σ_g m_g · bsum_g(a)
//! ```
//!
//! but the products go through `vpdpbusd`, which multiplies 4 unsigned bytes
//! by 4 signed bytes and adds them into an i32 lane in one instruction, with
//! no i16 intermediate to bound. Its unsigned operand is the activations,
//! stored offset as `a + 128` (0..=255) in [`ActPanel`]s of 16 rows, one row
//! per i32 lane; its signed operand is 4 weight levels broadcast to every
//! lane, stored signed (Q6_K's `q − 32`, Q3_K's `q − 4`, the others as they
//! are) in [`WeightSb`]. The offset on the activations adds `128·Σq` to each
//! group's sum, a constant of the weight row alone: [`WeightSb::wcorr`] holds
//! `128·Σ_g sc_g·Σ_{k∈g} q_k`, subtracted once per super-block. So the
//! symmetric types (Q3_K, Q6_K) need no activation sums at all; the types with
//! mins (Q2_K, Q4_K, Q5_K) take `Σ_g m_g·bsum_g` with `vpdpwssd`.
//!
//! Each 16-value group (32-value sub-block for Q4_K/Q5_K) is summed in its own
//! i32 accumulator and multiplied by its scale (`vpmulld`). The integer sums
//! are exact and equal the scalar kernel's; the float steps are the scalar
//! kernel's own, so results are bit-identical to [`crate::dot::scalar`].

use super::kquant::{expand_rows, KRows, WeightSb as Expanded, WEIGHT_ZERO};
use super::tiles::{self, run_tile, KBlockOps, Micro, Sums};
use super::{row_block_size, store_tile_512};
use crate::blocks::*;
use crate::dot::{avx2, avx512};
use crate::packed::{BlockQ4Kx16, GROUP};
use crate::quant::quantize_block_q8k;
use crate::shared::{OutPtr, Pool};
use mistral_gguf::GgmlType;
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;

pub(super) mod amx;

/// Activation rows per panel: one per i32 lane of a `__m512i`.
const PANEL: usize = 16;
/// Weight rows per microkernel tile: `R × H` = 12 independent `vpdpbusd`
/// chains, enough to cover its latency at two per cycle; 6 × 2 is faster
/// than 4 × 2 and than 8 × 2, which spills (measurements:
/// benches/journal/kernel-dispatch.md).
const R: usize = 6;
/// Panels per microkernel tile.
const H: usize = 2;
/// Super-blocks per k-block: the `H` panels of a tile (5 KiB per panel and
/// super-block) stay in L1 while the row block's weights stream past. At 4
/// (20 KiB of activations beside the streaming weights in a 48 KiB L1) they
/// did not; 2 is faster than 4 and than 1 (measurements:
/// benches/journal/kernel-dispatch.md).
const KC: usize = 2;
/// Most weight rows per row block (their expanded k-block stays in L2).
const RB_MAX: usize = 120;
/// Row blocks are a multiple of this: whole tiles, and whole groups of the
/// packed layouts' 8-row units (a Q2_K group, half a Q4_K group).
const RB_STEP: usize = 24;
const _: () = assert!(RB_STEP.is_multiple_of(R) && RB_STEP.is_multiple_of(GROUP));
const _: () = assert!(RB_MAX.is_multiple_of(RB_STEP));

/// One super-block of one weight row, as the microkernel reads it.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct WeightSb {
    /// Signed levels, in order.
    qs: [i8; QK_K],
    /// Scale per 16-value group (Q4_K/Q5_K: per 32-value sub-block, in the
    /// first 8).
    sc: [i32; 16],
    /// Offset multipliers in i16 pairs (`vpdpwssd` operands): Q2_K's 16 group
    /// mins as 8 pairs, Q4_K/Q5_K's 8 sub-block mins as 4.
    m: [i32; 8],
    /// `128·Σ_g sc_g·Σ_{k∈g} q_k`: what the activations' offset adds.
    wcorr: i32,
    d: f32,
    /// The offsets' scale (`dmin`).
    dm: f32,
}

const W_ZERO: WeightSb = WeightSb {
    qs: [0; QK_K],
    sc: [0; 16],
    m: [0; 8],
    wcorr: 0,
    d: 0.0,
    dm: 0.0,
};

/// One super-block of 16 activation rows.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct ActPanel {
    /// 4-value group `j`: row `c`'s values `4j..4j+4`, plus 128, in bytes `4c..4c+4`.
    qs: [[u8; 64]; QK_K / 4],
    /// Group pair `p`: lanes `2c`, `2c+1` = row `c`'s sums of groups `2p`, `2p+1`.
    bsums: [[i16; 32]; 8],
    /// The same for 32-value sub-blocks (pair `q`: sub-blocks `2q`, `2q+1`).
    bsums32: [[i16; 32]; 4],
    /// Row scales.
    d: [f32; PANEL],
}

const PANEL_ZERO: ActPanel = ActPanel {
    qs: [[128; 64]; QK_K / 4],
    bsums: [[0; 32]; 8],
    bsums32: [[0; 32]; 4],
    d: [0.0; PANEL],
};

/// The activation panels of one call, reused across calls.
static PANELS: Pool<Vec<ActPanel>> = Pool::new();

/// A worker's weight buffers: rows expanded by the AVX2 code, and the same
/// in this kernel's form.
#[derive(Default)]
struct Scratch {
    expanded: Vec<Expanded>,
    wbuf: Vec<WeightSb>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// A worker's running sums between k-blocks.
    static ACC: RefCell<Vec<__m512>> = const { RefCell::new(Vec::new()) };
}

impl Scratch {
    /// Grows the weight buffers for one k-block of rows `rb0..rb1`:
    /// whole 8-row units of the packed layouts (the packed expansion writes
    /// the last unit's padding rows too), and the AVX2 form only for the
    /// layouts that go through the AVX2 expansion first (all but packed
    /// Q4_K).
    fn reserve(&mut self, w: KRows<'_>, (rb0, rb1): (usize, usize), kb: usize) {
        let need = (rb1.next_multiple_of(GROUP) - rb0) * KC.min(kb);
        if self.wbuf.len() < need {
            self.wbuf.resize(need, W_ZERO);
        }
        if !matches!(w, KRows::PackedQ4K(_)) && self.expanded.len() < need {
            self.expanded.resize(need, WEIGHT_ZERO);
        }
    }
}

/// How a weight type maps onto the common form.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Q2_K: 16-value groups, mins per group.
    Group16Min,
    /// Q3_K, Q6_K: 16-value groups, symmetric (the level offset is in the
    /// signed levels).
    Group16Sym,
    /// Q4_K, Q5_K: 32-value sub-blocks, mins per sub-block.
    Sub32Min,
}

impl Form {
    fn of(ty: GgmlType) -> Form {
        match ty {
            GgmlType::Q2_K => Form::Group16Min,
            GgmlType::Q4_K | GgmlType::Q5_K => Form::Sub32Min,
            _ => Form::Group16Sym,
        }
    }
}

/// The level offset of a type's unsigned expanded levels (what its real
/// levels are below them).
fn level_offset(ty: GgmlType) -> i8 {
    match ty {
        GgmlType::Q6_K => 32,
        GgmlType::Q3_K => 4,
        _ => 0,
    }
}

/// Converts the AVX2 expansion of a super-block into this kernel's form.
#[inline(always)]
fn convert(ty: GgmlType, form: Form, e: &Expanded, out: &mut WeightSb) {
    let off = level_offset(ty);
    for (o, &q) in out.qs.iter_mut().zip(&e.qs) {
        *o = q as i8 - off;
    }
    let lo = |v: i32| v as i16 as i32;
    let pair = |a: i16, b: i16| (a as u16 as u32 | ((b as u16 as u32) << 16)) as i32;
    let group = if form == Form::Sub32Min { 32 } else { 16 };
    let ng = QK_K / group;
    let mut wcorr = 0i32;
    for g in 0..ng {
        // Q4_K/Q5_K repeat each sub-block's scale over its two 16-value groups.
        let sc = lo(e.sc2[g * group / 16]);
        out.sc[g] = sc;
        let s: i32 = out.qs[g * group..(g + 1) * group]
            .iter()
            .map(|&q| q as i32)
            .sum();
        wcorr += sc * s;
    }
    out.wcorr = 128 * wcorr;
    match form {
        Form::Group16Min => {
            for p in 0..8 {
                out.m[p] = pair(e.m[2 * p], e.m[2 * p + 1]);
            }
        }
        Form::Sub32Min => {
            for p in 0..4 {
                out.m[p] = pair(e.m32[2 * p], e.m32[2 * p + 1]);
            }
        }
        Form::Group16Sym => {}
    }
    out.d = e.d;
    out.dm = e.dm;
}

/// [`convert`] for a run of super-blocks, compiled for AVX-512 (its byte
/// sums vectorize).
///
/// # Safety
/// AVX-512 F/BW available.
#[target_feature(enable = "avx2,avx512f,avx512bw")]
unsafe fn convert_rows(ty: GgmlType, form: Form, e: &[Expanded], out: &mut [WeightSb]) {
    for (e, o) in e.iter().zip(out) {
        convert(ty, form, e, o);
    }
}

/// Expands one Q6_K super-block straight into this kernel's form (what
/// [`expand_rows`] then [`convert`] give, without the intermediate copy and
/// the byte loops): the levels built by the AVX-512 row kernel's
/// [`avx512::q6k_levels`] (its shift form), stored as `q − 32`, and
/// `wcorr`'s group sums taken with `vpdpbusd` against ones. Faster than those
/// two steps, most at small batches (measurements:
/// benches/journal/kernel-dispatch.md).
///
/// # Safety
/// AVX-512 F/BW/VNNI and F16C available.
#[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn expand_q6k(x: &BlockQ6K, out: &mut WeightSb) {
    let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(x.scales.as_ptr() as *const __m128i));
    store_levels::<2>(avx512::q6k_levels::<false>(x), 32, sc, out);
    out.d = avx2::f16(x.d);
    out.dm = 0.0;
}

/// Stores a super-block's levels (`lv[k]`: levels `64k..64k + 64`, unsigned)
/// minus the type's offset `off` as this kernel's bytes, the group scales
/// `sc` (an i32 per group), and `wcorr`: 128 times the levels' sums by 4
/// (`vpdpbusd` against ones) times their group's scale. Lane `i` of zmm `k`
/// is in group `k·(16 >> S) + (i >> S)`: `S = 2` for 16-value groups, 3 for
/// 32-value sub-blocks.
///
/// # Safety
/// AVX-512 F/BW/VNNI available.
#[inline(always)]
unsafe fn store_levels<const S: u32>(lv: [__m512i; 4], off: i8, sc: __m512i, out: &mut WeightSb) {
    _mm512_store_si512(out.sc.as_mut_ptr() as *mut __m512i, sc);
    let lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    let mut corr = _mm512_setzero_si512();
    for (k, &v) in lv.iter().enumerate() {
        let q = _mm512_sub_epi8(v, _mm512_set1_epi8(off));
        _mm512_store_si512(out.qs.as_mut_ptr().add(64 * k) as *mut __m512i, q);
        // The levels are below 128 in magnitude: as the signed operand
        // against unsigned ones, whatever their sign.
        let sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), q);
        let idx = _mm512_add_epi32(
            _mm512_set1_epi32((k as i32) * (16 >> S)),
            _mm512_srli_epi32::<S>(lane),
        );
        let scl = _mm512_permutexvar_epi32(idx, sc);
        corr = _mm512_add_epi32(corr, _mm512_mullo_epi32(sums, scl));
    }
    out.wcorr = 128 * _mm512_reduce_add_epi32(corr);
}

/// [`expand_q6k`] for Q5_K: the levels of [`avx512::q5k_levels`] (zmm `j`
/// holds sub-blocks `2j` and `2j + 1`), the 6-bit scales and mins unpacked
/// as the AVX2 kernels do.
///
/// # Safety
/// AVX-512 F/BW/VNNI and F16C available.
#[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn expand_q5k(x: &BlockQ5K, out: &mut WeightSb) {
    // Scales in i32 lanes 0..8, mins in 8..16; the mins as i16 pairs in `m`.
    let ms = avx2::k4_scales_mins_i16(&x.scales);
    let sc = _mm512_cvtepi16_epi32(ms);
    _mm_storeu_si128(
        out.m.as_mut_ptr() as *mut __m128i,
        _mm256_extracti128_si256::<1>(ms),
    );
    // 32-value sub-blocks: lane i of zmm j in sub-block 2j + i/8.
    store_levels::<3>(avx512::q5k_levels::<false>(x), 0, sc, out);
    out.d = avx2::f16(x.d);
    out.dm = avx2::f16(x.dmin);
}

/// [`expand_q6k`] for Q3_K: the levels of [`avx512::q3k_levels`], stored as
/// `q − 4`.
///
/// # Safety
/// AVX-512 F/BW/VNNI and F16C available.
#[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn expand_q3k(x: &BlockQ3K, out: &mut WeightSb) {
    let sc = _mm512_cvtepi16_epi32(avx2::q3k_scales_i16(&x.scales));
    store_levels::<2>(avx512::q3k_levels::<false>(x), 4, sc, out);
    out.d = avx2::f16(x.d);
    out.dm = 0.0;
}

/// [`expand_q6k`] for IQ4_XS: each 32-value sub-block's 16 nibble bytes
/// give its levels 0..16 (low nibbles) and 16..32 (high ones), looked up in
/// [`KVALUES_IQ4NL`] by one byte shuffle (the signed values, already what
/// the kernel multiplies); the sub-block's 6-bit scale less 32 is the scale
/// of both its 16-value groups, so the symmetric form's sums are the scalar
/// kernel's `Σ_ib sc_ib·Σ_{k∈ib} q_k·a_k`.
///
/// # Safety
/// AVX-512 F/BW/VNNI and F16C available.
#[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn expand_iq4xs(x: &BlockIQ4XS, out: &mut WeightSb) {
    let table = _mm512_broadcast_i32x4(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
    // Plain loops rather than `array::from_fn`: a closure of the i-quant
    // kernel was found not inlined into its target-feature function.
    let mut lv = [_mm512_setzero_si512(); 4];
    for (k, lv) in lv.iter_mut().enumerate() {
        // Sub-blocks 2k and 2k + 1, their levels in value order.
        let sub = |i: usize| &*(x.qs.as_ptr().add(16 * i) as *const [u8; 16]);
        *lv = _mm512_shuffle_epi8(table, avx512::nibble_pair(sub(2 * k), sub(2 * k + 1)));
    }
    let mut sc = [0i32; 16];
    for (g, sc) in sc.iter_mut().enumerate() {
        *sc = x.sub_scale(g / 2);
    }
    let sc = _mm512_loadu_si512(sc.as_ptr() as *const __m512i);
    store_levels::<2>(lv, 0, sc, out);
    out.d = avx2::f16(x.d);
    out.dm = 0.0;
}

/// Expands half `half` (rows `8·half..8·half + 8`) of super-block `x` of a
/// packed group of 16 Q4_K rows straight into this kernel's form (what
/// [`expand_rows`] then [`convert`] give, without the intermediate copy):
/// the half's row `r` goes to `out.add(r * stride)`.
///
/// The group block holds, per 64-value chunk `p`, word `t` of the 16 rows
/// side by side (`qs[512p + 64t + 4r..]`, see [`BlockQ4Kx16`]), the half's 8
/// rows in 32 bytes of it. Four vectors of two such 32-byte parts hold the
/// chunk as 64 words `(t, r)`, `t` major. They are split
/// into low nibbles (sub-block `2p`) and high ones (`2p + 1`), and two rounds
/// of two-source word permutes turn each `r` major, 2 rows per vector, whose
/// 256-bit halves are the rows' 32 levels of that sub-block. The nibble sums
/// that `wcorr` needs are taken before the permutes, where the 8 rows sit in
/// the lanes: `Σ_j sc_j·S_j` for all 8 rows in one vector.
///
/// # Safety
/// AVX-512 F/BW/VNNI and F16C available; `half < 2`; `out.add(r * stride)`
/// valid for writes for `r < 8`.
#[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn expand_q4k_half(x: &BlockQ4Kx16, half: usize, out: *mut WeightSb, stride: usize) {
    // Round 1, from words (t, r) of loads Z_{2h}, Z_{2h+1} (t = 4h..4h + 4):
    // lane l gets row `4·half + l/4`, word `4h + l%4`.
    const fn round1(half: usize) -> [i32; 16] {
        let mut idx = [0; 16];
        let mut l = 0;
        while l < 16 {
            let (row, t) = (4 * half + l / 4, l % 4);
            idx[l] = ((t / 2) * 16 + 8 * (t % 2) + row) as i32;
            l += 1;
        }
        idx
    }
    // Round 2, from the round-1 vectors of t 0..4 and 4..8: lane l gets row
    // `2·pair + l/8` (of that half's 4), word `l%8`.
    const fn round2(pair: usize) -> [i32; 16] {
        let mut idx = [0; 16];
        let mut l = 0;
        while l < 16 {
            let (row, t) = (2 * pair + l / 8, l % 8);
            idx[l] = if t < 4 {
                4 * row + t
            } else {
                16 + 4 * row + t - 4
            } as i32;
            l += 1;
        }
        idx
    }
    const R1: [[i32; 16]; 2] = [round1(0), round1(1)];
    const R2: [[i32; 16]; 2] = [round2(0), round2(1)];
    let r1: [__m512i; 2] = std::array::from_fn(|h| _mm512_loadu_si512(R1[h].as_ptr().cast()));
    let r2: [__m512i; 2] = std::array::from_fn(|h| _mm512_loadu_si512(R2[h].as_ptr().cast()));
    let m4 = _mm512_set1_epi8(0xF);
    let ones = _mm512_set1_epi8(1);
    let mut wsum = _mm512_setzero_si512();
    for p in 0..4 {
        let base = x.qs.as_ptr().add(512 * p + 32 * half);
        let mut lo = [_mm512_setzero_si512(); 4];
        let mut hi = [_mm512_setzero_si512(); 4];
        for k in 0..4 {
            // Words 2k and 2k + 1 of the half's 8 rows.
            let w0 = _mm256_load_si256(base.add(128 * k).cast());
            let w1 = _mm256_load_si256(base.add(128 * k + 64).cast());
            let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(w0), w1);
            lo[k] = _mm512_and_si512(z, m4);
            hi[k] = _mm512_and_si512(_mm512_srli_epi16(z, 4), m4);
        }
        // Nibble sums per lane (4 loads × 4 bytes: at most 16·15 per lane);
        // lanes r and r + 8 are row r.
        let add4 = |v: &[__m512i; 4]| {
            let s = _mm512_add_epi8(_mm512_add_epi8(v[0], v[1]), _mm512_add_epi8(v[2], v[3]));
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), s, ones)
        };
        let (sl, sh) = (add4(&lo), add4(&hi));
        // [S_2p of rows 0..8 | S_2p+1 of rows 0..8] · their scales
        // (sc[16j + 8·half + r]: 8 bytes from 32p + 8·half and from 16 on).
        let s = _mm512_add_epi32(
            _mm512_shuffle_i64x2::<0x44>(sl, sh),
            _mm512_shuffle_i64x2::<0xEE>(sl, sh),
        );
        let scp = x.sc.as_ptr().add(32 * p + 8 * half);
        let sc = _mm_unpacklo_epi64(
            _mm_loadl_epi64(scp.cast()),
            _mm_loadl_epi64(scp.add(16).cast()),
        );
        let sc = _mm512_cvtepu8_epi32(sc);
        wsum = _mm512_add_epi32(wsum, _mm512_mullo_epi32(s, sc));
        for (v, dst) in [(&lo, 0), (&hi, 32)] {
            let a = [
                _mm512_permutex2var_epi32(v[0], r1[0], v[1]),
                _mm512_permutex2var_epi32(v[0], r1[1], v[1]),
            ];
            let b = [
                _mm512_permutex2var_epi32(v[2], r1[0], v[3]),
                _mm512_permutex2var_epi32(v[2], r1[1], v[3]),
            ];
            for m in 0..4 {
                // Rows 2m (low half) and 2m + 1 (high half), words 0..8.
                let o = _mm512_permutex2var_epi32(a[m / 2], r2[m % 2], b[m / 2]);
                let q0 = (*out.add(2 * m * stride)).qs.as_mut_ptr().add(64 * p + dst);
                let q1 = (*out.add((2 * m + 1) * stride))
                    .qs
                    .as_mut_ptr()
                    .add(64 * p + dst);
                _mm256_store_si256(q0.cast(), _mm512_castsi512_si256(o));
                _mm256_store_si256(q1.cast(), _mm512_extracti64x4_epi64::<1>(o));
            }
        }
    }
    let wsum = _mm256_add_epi32(
        _mm512_castsi512_si256(wsum),
        _mm512_extracti64x4_epi64::<1>(wsum),
    );
    let mut wcorr = [0i32; GROUP];
    _mm256_storeu_si256(wcorr.as_mut_ptr().cast(), _mm256_slli_epi32(wsum, 7));
    let (mut d, mut dm) = ([0f32; GROUP], [0f32; GROUP]);
    _mm256_storeu_ps(
        d.as_mut_ptr(),
        _mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr().add(8 * half).cast())),
    );
    _mm256_storeu_ps(
        dm.as_mut_ptr(),
        _mm256_cvtph_ps(_mm_loadu_si128(x.dmin.as_ptr().add(8 * half).cast())),
    );
    for r in 0..GROUP {
        let o = &mut *out.add(r * stride);
        let row = 8 * half + r;
        for j in 0..8 {
            o.sc[j] = x.scale_min(row, j).0 as i32;
        }
        for q in 0..4 {
            // Row r's mins of sub-blocks 2q, 2q + 1.
            let (a, b) = (x.scale_min(row, 2 * q).1, x.scale_min(row, 2 * q + 1).1);
            o.m[q] = (a as u32 | (b as u32) << 16) as i32;
        }
        o.wcorr = wcorr[r];
        o.d = d[r];
        o.dm = dm[r];
    }
}

/// Asks for every cache line of the `len` bytes from `base` (T0: with T1
/// the expansion waited longer in `perf`; measurements:
/// benches/journal/kernel-dispatch.md).
///
/// # Safety
/// `base..base + len` lies inside one allocation.
#[inline(always)]
unsafe fn prefetch_lines(base: *const u8, len: usize) {
    for line in (0..len).step_by(64) {
        // SAFETY: in bounds (the caller's contract); a prefetch reads
        // nothing architecturally and cannot fault.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(line).cast()) };
    }
}

/// [`prefetch_lines`] of a packed group block.
#[inline(always)]
fn prefetch_block(x: &BlockQ4Kx16) {
    // SAFETY: the block's own bytes.
    unsafe { prefetch_lines((x as *const BlockQ4Kx16).cast(), size_of::<BlockQ4Kx16>()) }
}

/// Quantizes activation rows `16p..16p+16` (zeros past `n`) of `x` into the
/// `kb` panels of panel row `p`.
fn fill_panels(x: &[f32], cols: usize, n: usize, p: usize, out: &mut [ActPanel]) {
    let mut q = BlockQ8K::ZERO;
    for (b, panel) in out.iter_mut().enumerate() {
        *panel = PANEL_ZERO;
        for c in 0..PANEL {
            let t = p * PANEL + c;
            if t >= n {
                break;
            }
            quantize_block_q8k(&x[t * cols + b * QK_K..t * cols + (b + 1) * QK_K], &mut q);
            for j in 0..QK_K / 4 {
                for k in 0..4 {
                    // a + 128 in 0..=255 (two's complement: flip the sign bit).
                    panel.qs[j][4 * c + k] = q.qs[4 * j + k] as u8 ^ 0x80;
                }
            }
            for pair in 0..8 {
                panel.bsums[pair][2 * c] = q.bsums[2 * pair];
                panel.bsums[pair][2 * c + 1] = q.bsums[2 * pair + 1];
            }
            // Each sum of 32 is at most 32·127 in magnitude: fits i16.
            for pair in 0..4 {
                let b = &q.bsums[4 * pair..4 * pair + 4];
                panel.bsums32[pair][2 * c] = b[0] + b[1];
                panel.bsums32[pair][2 * c + 1] = b[2] + b[3];
            }
            panel.d[c] = q.d;
        }
    }
}

/// The microkernel: `acc[r][h] += dot(weight row r, panel h)` over `nsb`
/// super-blocks (`w[r]`, `a[h]` point at the first), the float steps per
/// super-block in the scalar kernels' order.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI available; `w[r]` and `a[h]` valid for `nsb` elements.
#[inline(always)]
unsafe fn tile<const TR: usize, const TH: usize, const DEPTH: usize, const MINS: usize>(
    w: [*const WeightSb; TR],
    a: [*const ActPanel; TH],
    nsb: usize,
    acc: &mut [[__m512; TH]; TR],
) {
    for s in 0..nsb {
        let mut isum = [[_mm512_setzero_si512(); TH]; TR];
        for g in 0..QK_K / 4 / DEPTH {
            let mut gs = [[_mm512_setzero_si512(); TH]; TR];
            for q in 0..DEPTH {
                let j = DEPTH * g + q;
                let mut av = [_mm512_setzero_si512(); TH];
                for h in 0..TH {
                    av[h] = _mm512_load_si512((*a[h].add(s)).qs[j].as_ptr() as *const __m512i);
                }
                for r in 0..TR {
                    let wp = (*w[r].add(s)).qs.as_ptr().add(4 * j) as *const i32;
                    let wv = _mm512_set1_epi32(wp.read_unaligned());
                    for h in 0..TH {
                        gs[r][h] = _mm512_dpbusd_epi32(gs[r][h], av[h], wv);
                    }
                }
            }
            for r in 0..TR {
                let sc = _mm512_set1_epi32((*w[r].add(s)).sc[g]);
                for h in 0..TH {
                    isum[r][h] = _mm512_add_epi32(isum[r][h], _mm512_mullo_epi32(gs[r][h], sc));
                }
            }
        }
        for r in 0..TR {
            let ws = &*w[r].add(s);
            for h in 0..TH {
                let t = super_block_term::<MINS>(isum[r][h], ws, &*a[h].add(s));
                acc[r][h] = _mm512_add_ps(acc[r][h], t);
            }
        }
    }
}

/// One super-block's float step for one weight row × one panel, in the
/// scalar kernels' order: `(d_a·d_w)·(isum − wcorr) − (d_a·dm_w)·corr`,
/// `corr` the `MINS` pairs of group mins times the panel's group sums (0:
/// the symmetric types, 4: Q4_K/Q5_K's 32-value sums, 8: Q2_K's 16-value
/// ones); lane = activation row. `isum` is `Σ_g sc_g·Σ_{k∈g} q_k·(a_k + 128)`.
///
/// # Safety
/// AVX-512 F/BW/VNNI available.
#[inline(always)]
unsafe fn super_block_term<const MINS: usize>(
    isum: __m512i,
    ws: &WeightSb,
    ap: &ActPanel,
) -> __m512 {
    // SAFETY: 64-byte aligned loads inside the panel; register operations.
    unsafe {
        let sumi = _mm512_sub_epi32(isum, _mm512_set1_epi32(ws.wcorr));
        let da = _mm512_load_ps(ap.d.as_ptr());
        let d = _mm512_mul_ps(da, _mm512_set1_ps(ws.d));
        if MINS == 0 {
            return _mm512_mul_ps(d, _mm512_cvtepi32_ps(sumi));
        }
        let bs: &[[i16; 32]] = if MINS == 4 { &ap.bsums32 } else { &ap.bsums };
        let mut corr = _mm512_setzero_si512();
        for p in 0..MINS {
            let bv = _mm512_load_si512(bs[p].as_ptr() as *const __m512i);
            corr = _mm512_dpwssd_epi32(corr, bv, _mm512_set1_epi32(ws.m[p]));
        }
        let dm = _mm512_mul_ps(da, _mm512_set1_ps(ws.dm));
        _mm512_sub_ps(
            _mm512_mul_ps(d, _mm512_cvtepi32_ps(sumi)),
            _mm512_mul_ps(dm, _mm512_cvtepi32_ps(corr)),
        )
    }
}

/// Shape of one call.
#[derive(Clone, Copy)]
struct Dims {
    rows: usize,
    n: usize,
    /// Super-blocks per row.
    kb: usize,
}

/// The operands of one k-block of one row block: the microkernel's
/// [`Micro`] (weight units are rows, activation units panels).
struct Kernel<'a, const DEPTH: usize, const MINS: usize> {
    /// Super-blocks of the expanded weights and of the panels.
    ops: KBlockOps<'a, WeightSb, ActPanel>,
    dims: Dims,
    y: OutPtr,
}

impl<const DEPTH: usize, const MINS: usize> Micro for Kernel<'_, DEPTH, MINS> {
    type Acc = __m512;
    type WPtr = *const WeightSb;
    type APtr = *const ActPanel;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }

    #[inline(always)]
    unsafe fn weights(&self, r: usize) -> *const WeightSb {
        self.ops.weights(r)
    }

    #[inline(always)]
    unsafe fn acts(&self, p: usize) -> *const ActPanel {
        self.ops.acts(p)
    }

    #[inline(always)]
    unsafe fn tile<const TR: usize, const TH: usize>(
        &self,
        w: [*const WeightSb; TR],
        a: [*const ActPanel; TH],
        acc: &mut [[__m512; TH]; TR],
    ) {
        tile::<TR, TH, DEPTH, MINS>(w, a, self.ops.nk, acc);
    }

    #[inline(always)]
    unsafe fn store<const TR: usize, const TH: usize>(
        &self,
        at: (usize, usize),
        acc: &[[__m512; TH]; TR],
    ) {
        store_tile_512(acc, self.y, (self.dims.rows, self.dims.n), at);
    }
}

/// Every tile of one k-block of the row block `rb0..rb1`.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI available; `k` and `sums` describe buffers that
/// cover the row block (see [`run_blocks`]), whose outputs belong to this
/// worker.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn row_block<const DEPTH: usize, const MINS: usize>(
    k: &Kernel<'_, DEPTH, MINS>,
    sums: &mut Sums<'_, __m512>,
    (rb0, rb1): (usize, usize),
) {
    let np = k.dims.n.div_ceil(PANEL);
    // Panels outer: a pair of activation panels stays in L1 while the row
    // block's weights (L2) stream past it.
    let mut p0 = 0;
    while p0 < np {
        let wide = p0 + H <= np;
        let mut r0 = rb0;
        while r0 < rb1 {
            // The last rows of a matrix whose row count is not a multiple of
            // R: 4 and 2 rows keep more chains going than 1.
            let tr = match rb1 - r0 {
                left if left >= R => R,
                4 | 5 => 4,
                2 | 3 => 2,
                _ => 1,
            };
            macro_rules! by_panels {
                ($tr:expr) => {
                    if wide {
                        run_tile::<_, $tr, H>(k, sums, r0, p0)
                    } else {
                        run_tile::<_, $tr, 1>(k, sums, r0, p0)
                    }
                };
            }
            match tr {
                R => by_panels!(R),
                4 => by_panels!(4),
                2 => by_panels!(2),
                _ => by_panels!(1),
            }
            r0 += tr;
        }
        p0 += if wide { H } else { 1 };
    }
}

/// See [`super::try_matmul`]; the caller has checked AVX-512 F/BW/VL/VNNI
/// (and AVX2 + FMA + F16C) and the shapes. Declines rows that are not whole
/// super-blocks. `tiles`: run the row blocks on AMX tiles ([`amx`]; the
/// caller has checked [`amx::available`] and [`amx::takes`]).
pub(crate) fn matmul(
    ty: GgmlType,
    w: KRows<'_>,
    (rows, cols): (usize, usize),
    x: &[f32],
    y: &mut [f32],
    tiles: bool,
) -> bool {
    if cols == 0
        || !cols.is_multiple_of(QK_K)
        || (tiles && !(amx::takes(ty, rows, cols) && amx::available()))
    {
        return false;
    }
    let kb = cols / QK_K;
    let n = x.len() / cols;
    let Ok(row_bytes) = bytes_for(ty, cols) else {
        return false;
    };
    let dims = Dims { rows, n, kb };
    let np = n.div_ceil(PANEL);

    super::with_panels(
        &PANELS,
        PANEL_ZERO,
        (np, kb),
        |p, out| fill_panels(x, cols, n, p, out),
        |panels| {
            if tiles {
                amx::run_blocks(ty, w, row_bytes, dims, panels, y)
            } else {
                run_blocks(ty, w, row_bytes, dims, panels, y)
            }
        },
    );
    true
}

/// Expands rows `rb0..rb1`, super-blocks `s0..s0 + nsb`, into
/// `scratch.wbuf` (`(r - rb0) * nsb + s`), and asks for the next k-block's
/// weight bytes: the expansion is their first touch, and they are in cache
/// by the time this k-block's tiles are done.
///
/// # Safety
/// AVX2/FMA/F16C and AVX-512 F/BW/VL/VNNI available; `w` holds the matrix
/// rows of `row_bytes` (`kb` super-blocks each); `rb0` is a multiple of
/// [`GROUP`]; `scratch.wbuf` (and for all but packed Q4_K `scratch.expanded`)
/// holds `(rb1.next_multiple_of(GROUP) - rb0) * nsb` entries.
unsafe fn expand_k_block(
    ty: GgmlType,
    w: KRows<'_>,
    (row_bytes, kb): (usize, usize),
    (rb0, rb1): (usize, usize),
    (s0, nsb): (usize, usize),
    scratch: &mut Scratch,
) {
    match w {
        KRows::PackedQ4K(p) => {
            // Whole halves of groups, the last one's padding rows included.
            let wb = scratch.wbuf.as_mut_ptr();
            for r in (rb0..rb1).step_by(GROUP) {
                let half = r / GROUP % 2;
                for s in 0..nsb {
                    let out = wb.add((r - rb0) * nsb + s);
                    expand_q4k_half(p.group_block(r, s0 + s), half, out, nsb);
                    if s0 + s + KC < kb && (half == 0 || r == rb0) {
                        prefetch_block(p.group_block(r, s0 + s + KC));
                    }
                }
            }
        }
        KRows::Plain(bytes)
            if matches!(
                ty,
                GgmlType::Q3_K | GgmlType::Q5_K | GgmlType::Q6_K | GgmlType::IQ4_XS
            ) =>
        {
            let size = row_bytes / kb;
            for r in rb0..rb1 {
                let row = &bytes[r * row_bytes..(r + 1) * row_bytes];
                for s in 0..nsb {
                    let x = row.as_ptr().add((s0 + s) * size);
                    let out = &mut scratch.wbuf[(r - rb0) * nsb + s];
                    // SAFETY: the row holds `kb` blocks of `size` bytes (the
                    // caller's contract) and `s0 + s < kb`; block structs
                    // have alignment 1 and any bit pattern is valid.
                    match ty {
                        GgmlType::Q6_K => expand_q6k(&*(x as *const BlockQ6K), out),
                        GgmlType::Q5_K => expand_q5k(&*(x as *const BlockQ5K), out),
                        GgmlType::IQ4_XS => expand_iq4xs(&*(x as *const BlockIQ4XS), out),
                        _ => expand_q3k(&*(x as *const BlockQ3K), out),
                    }
                }
                if s0 + KC < kb {
                    let next = &row[(s0 + KC) * size..(s0 + KC + KC.min(kb - s0 - KC)) * size];
                    prefetch_lines(next.as_ptr(), next.len());
                }
            }
        }
        KRows::Plain(_) | KRows::PackedQ2K(_) => {
            let count = (rb1 - rb0) * nsb;
            expand_rows(
                ty,
                w,
                row_bytes,
                (rb0, rb1),
                (s0, nsb),
                &mut scratch.expanded,
            );
            convert_rows(
                ty,
                Form::of(ty),
                &scratch.expanded[..count],
                &mut scratch.wbuf[..count],
            );
            if let (KRows::Plain(bytes), true) = (w, s0 + KC < kb) {
                let block = row_bytes / kb;
                let next = KC.min(kb - s0 - KC) * block;
                for r in rb0..rb1 {
                    let run = &bytes[r * row_bytes + (s0 + KC) * block..][..next];
                    prefetch_lines(run.as_ptr(), run.len());
                }
            }
        }
    }
}

/// Every row block of one call, in parallel, on filled activation panels.
fn run_blocks(
    ty: GgmlType,
    w: KRows<'_>,
    row_bytes: usize,
    dims: Dims,
    panels: &[ActPanel],
    y: &mut [f32],
) {
    match Form::of(ty) {
        Form::Group16Min => run_blocks_as::<4, 8>(ty, w, row_bytes, dims, panels, y),
        Form::Group16Sym => run_blocks_as::<4, 0>(ty, w, row_bytes, dims, panels, y),
        Form::Sub32Min => run_blocks_as::<8, 4>(ty, w, row_bytes, dims, panels, y),
    }
}

/// [`run_blocks`] for one form of the microkernel.
fn run_blocks_as<const DEPTH: usize, const MINS: usize>(
    ty: GgmlType,
    w: KRows<'_>,
    row_bytes: usize,
    dims: Dims,
    panels: &[ActPanel],
    y: &mut [f32],
) {
    let Dims { rows, n, kb } = dims;
    let np = n.div_ceil(PANEL);
    let rb = row_block_size(rows, RB_STEP, RB_MAX);
    let y = OutPtr(y.as_mut_ptr());
    (0..rows.div_ceil(rb)).into_par_iter().for_each(|blk| {
        let (rb0, rb1) = (blk * rb, ((blk + 1) * rb).min(rows));
        SCRATCH.with(|cell| {
            ACC.with(|acc| {
                let scratch = &mut *cell.borrow_mut();
                scratch.reserve(w, (rb0, rb1), kb);
                // SAFETY: AVX-512F is available (checked by the caller);
                // this only makes a zero vector.
                let zero = unsafe { _mm512_setzero_ps() };
                let acc = &mut *acc.borrow_mut();
                tiles::k_blocks(acc, zero, rb0..rb1, np, (kb, KC), |ks, sums| {
                    // SAFETY: the caller checked AVX2/FMA/F16C and AVX-512
                    // F/BW/VL/VNNI; `w` holds `rows` rows of `row_bytes`
                    // (checked by `crate::matmul`), rb0 is a multiple of
                    // RB_STEP (so of GROUP), `wbuf` (and for the plain layout
                    // `expanded`) has whole groups of `nsb` entries per row,
                    // the panels cover every activation row and super-block,
                    // and rows rb0..rb1 of `y` belong to this block alone.
                    unsafe {
                        let (s0, nsb) = (ks.start, ks.len());
                        expand_k_block(ty, w, (row_bytes, kb), (rb0, rb1), (s0, nsb), scratch);
                        let k = Kernel::<DEPTH, MINS> {
                            ops: KBlockOps {
                                wbuf: &scratch.wbuf,
                                rb0,
                                panels,
                                kb,
                                s0,
                                nk: nsb,
                            },
                            dims,
                            y,
                        };
                        row_block(&k, sums, (rb0, rb1));
                    }
                });
            });
        });
    });
}
