//! AVX-512 (F/BW/VL + VNNI) forms of the row dot products, for the types
//! where they measure faster than the AVX2 ones; every other type runs its
//! AVX2 form on [`crate::Isa::Avx512`].
//!
//! Q6_K: one super-block is four `zmm` of 64 levels. The 6-bit levels are
//! built unsigned (`0..63`, the stored `q`), so `vpmaddubsw` takes them as
//! its unsigned operand against the signed Q8_K bytes (pairs at most
//! `2·63·128`, no i16 overflow); `vpdpwssd` multiplies those pair sums by the
//! 16-value group scales and adds them into i32 lanes. The real level is
//! `q − 32`: its effect, `−32·Σ_g scale_g·bsum_g` from the activation's
//! group sums, is where the lanes start. Where the CPU has GFNI
//! ([`q6k_q8k_gfni`]) each level's two high bits are placed by one
//! `vgf2p8affineqb` per 64 levels instead of a shift and a mask.
//!
//! Q2_K: the same four `zmm` of 64 levels (2-bit fields shifted per 256-bit
//! half by `vpsrlvw`), `vpmaddubsw` and `vpdpwssd` with the 16 group scales.
//!
//! Q3_K: the same, with each level's high bit (bit `4n + k` of `hmask`)
//! moved to bit 2 by a per-half `vpsllvw`/`vpsrlvw` (with GFNI,
//! [`q3k_q8k_gfni`]: both fields placed by `vgf2p8affineqb`).
//!
//! Q5_K: zmm `j` is chunk `j` (sub-blocks `2j`, `2j + 1`, in order), its
//! nibbles split and fifth bits placed by per-half variable shifts, the two
//! sub-block scales spread by `vpermw` (with GFNI, [`q5k_q8k_gfni`]: the
//! nibbles and fifth bits placed by `vgf2p8affineqb`).
//!
//! Each k-quant super-block's lanes are summed to its exact integer sums and
//! finished with the scalar kernel's float step (`avx2::ksteps`),
//! so the results equal the scalar kernel's, the AVX2 kernels' and the tiled
//! kernels' bit for bit: a product does not depend on the batch it ran in.
//!
//! The 32-value types (Q4_0, Q5_0, IQ4_NL against Q8_0; Q4_1, Q5_1 against
//! Q8_1): two blocks per `zmm`, their levels unsigned bytes (nibbles, plus 16
//! by a mask of the fifth bits, or IQ4_NL's table value + 128), `vpdpbusd`
//! against the activations, the offset or min term from the activations'
//! sums taken by a second `vpdpbusd`, and the two blocks' scales spread over
//! 8 lanes each; an odd last block takes the AVX2 kernel. They agree with
//! the scalar kernels to rounding.
//!
//! The i-quants on lattices: `avx512/lattice.rs` (grid entries gathered,
//! signs as masks).

#![allow(clippy::missing_safety_doc)]

use super::avx2::{ksteps, prefetch_ahead};
use crate::blocks::{
    BlockIQ4NL, BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0,
    BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1, F16Le, KVALUES_IQ4NL,
    KVALUES_IQ4NL_PLUS_128,
};
use std::arch::x86_64::*;

mod lattice;
pub use lattice::{
    iq1_s_q8k, iq1_s_q8k_x4, iq2_s_q8k, iq2_s_q8k_vbmi, iq2_s_q8k_x4, iq2_s_q8k_x4_vbmi,
    iq2_xs_q8k, iq2_xs_q8k_vbmi, iq2_xs_q8k_x4, iq2_xs_q8k_x4_vbmi, iq2_xxs_q8k, iq2_xxs_q8k_vbmi,
    iq2_xxs_q8k_x4, iq2_xxs_q8k_x4_vbmi, iq3_s_q8k, iq3_s_q8k_vbmi, iq3_s_q8k_x4,
    iq3_s_q8k_x4_vbmi, iq3_xxs_q8k, iq3_xxs_q8k_vbmi, iq3_xxs_q8k_x4, iq3_xxs_q8k_x4_vbmi,
};

/// The row kernels of the 32-value types: `$one` (one weight row) and
/// `$two` (two weight rows against the same activation row, which is loaded,
/// and its offset or min sums taken, once for both; each result equals
/// `$one`'s), by [`pair_rows`] with [`Offset`] or [`Min`]; an odd last block
/// takes the AVX2 kernel of the same name.
macro_rules! pair_kernels {
    ($($one:ident, $two:ident: $kind:ident<$B:ty>, $A:ty;)*) => {$(
        #[doc = concat!("`", stringify!($B), "` weights × `", stringify!($A), "` activations.")]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub unsafe fn $one(w: &[$B], a: &[$A]) -> f32 {
            pair_rows::<$kind<$B>, 1>([w], a, super::avx2::$one)[0]
        }

        #[doc = concat!("[`", stringify!($one), "`] of two weight rows.")]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub unsafe fn $two(w: [&[$B]; 2], a: &[$A]) -> [f32; 2] {
            pair_rows::<$kind<$B>, 2>(w, a, super::avx2::$one)
        }
    )*};
}

pair_kernels! {
    q4_0_q8_0, q4_0_q8_0_x2: Offset<BlockQ4_0>, BlockQ8_0;
    q5_0_q8_0, q5_0_q8_0_x2: Offset<BlockQ5_0>, BlockQ8_0;
    iq4_nl_q8_0, iq4_nl_q8_0_x2: Offset<BlockIQ4NL>, BlockQ8_0;
    q4_1_q8_1, q4_1_q8_1_x2: Min<BlockQ4_1>, BlockQ8_1;
    q5_1_q8_1, q5_1_q8_1_x2: Min<BlockQ5_1>, BlockQ8_1;
}

/// A 32-value block type with an f16 scale `d` and min `m` and unsigned
/// levels `u` (`0..=31`) whose value is `d·u + m`.
trait MinBlock {
    fn dm(&self) -> (F16Le, F16Le);
    /// The levels of `x` then `y` (32 each, in value order) as 64 bytes.
    ///
    /// # Safety
    /// AVX-512 F/BW available.
    unsafe fn levels(x: &Self, y: &Self) -> __m512i;
}

impl MinBlock for BlockQ4_1 {
    #[inline(always)]
    fn dm(&self) -> (F16Le, F16Le) {
        (self.d, self.m)
    }
    #[inline(always)]
    unsafe fn levels(x: &Self, y: &Self) -> __m512i {
        nibble_pair(&x.qs, &y.qs)
    }
}

impl MinBlock for BlockQ5_1 {
    #[inline(always)]
    fn dm(&self) -> (F16Le, F16Le) {
        (self.d, self.m)
    }
    #[inline(always)]
    unsafe fn levels(x: &Self, y: &Self) -> __m512i {
        fifth_bits(nibble_pair(&x.qs, &y.qs), x.qh, y.qh)
    }
}

/// `nib` (two blocks' nibbles) plus 16 where the blocks' 32-bit `qh`
/// fields (value order) have their bit set.
#[inline(always)]
unsafe fn fifth_bits(nib: __m512i, qx: [u8; 4], qy: [u8; 4]) -> __m512i {
    let high = u32::from_le_bytes(qx) as u64 | (u32::from_le_bytes(qy) as u64) << 32;
    _mm512_mask_add_epi8(nib, high, nib, _mm512_set1_epi8(0x10))
}

/// A 32-value block type with one f16 scale and unsigned levels `u`
/// (`0..=255`) whose value is `d·(u − OFF)`.
trait OffsetBlock {
    const OFF: u8;
    fn scale(&self) -> F16Le;
    /// The levels of `x` then `y` (32 each, in value order) as 64 bytes.
    ///
    /// # Safety
    /// AVX-512 F/BW available.
    unsafe fn levels(x: &Self, y: &Self) -> __m512i;
}

impl OffsetBlock for BlockQ4_0 {
    const OFF: u8 = 8;
    #[inline(always)]
    fn scale(&self) -> F16Le {
        self.d
    }
    #[inline(always)]
    unsafe fn levels(x: &Self, y: &Self) -> __m512i {
        nibble_pair(&x.qs, &y.qs)
    }
}

impl OffsetBlock for BlockQ5_0 {
    const OFF: u8 = 16;
    #[inline(always)]
    fn scale(&self) -> F16Le {
        self.d
    }
    #[inline(always)]
    unsafe fn levels(x: &Self, y: &Self) -> __m512i {
        fifth_bits(nibble_pair(&x.qs, &y.qs), x.qh, y.qh)
    }
}

impl OffsetBlock for BlockIQ4NL {
    const OFF: u8 = 128;
    #[inline(always)]
    fn scale(&self) -> F16Le {
        self.d
    }
    #[inline(always)]
    unsafe fn levels(x: &Self, y: &Self) -> __m512i {
        // The table + 128, in each 128-bit lane.
        let table = _mm512_broadcast_i32x4(_mm_loadu_si128(KVALUES_IQ4NL_PLUS_128.as_ptr().cast()));
        _mm512_shuffle_epi8(table, nibble_pair(&x.qs, &y.qs))
    }
}

/// One f16 as f32 in all sixteen lanes: [`super::avx2::f16x8`]'s form
/// (no false dependency on an accumulator) for `zmm`.
///
/// # Safety
/// AVX-512 F available.
#[inline(always)]
pub(crate) unsafe fn f16x16(x: F16Le) -> __m512 {
    _mm512_cvtph_ps(_mm256_set1_epi16(x.bits() as i16))
}

/// The 32 levels of each of two blocks' 16 nibble bytes, in value order
/// (low nibbles, then high ones): `[x's 32 | y's 32]`.
#[inline(always)]
pub(crate) unsafe fn nibble_pair(x: &[u8; 16], y: &[u8; 16]) -> __m512i {
    let x = _mm256_broadcastsi128_si256(_mm_loadu_si128(x.as_ptr().cast()));
    let y = _mm256_broadcastsi128_si256(_mm_loadu_si128(y.as_ptr().cast()));
    let v = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(x), y);
    // The second and fourth 128-bit lanes take the high nibbles: a 64-bit
    // shift by 4 moves each byte's high nibble down (the bits it brings in
    // from the next byte are masked off).
    let shift = _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0);
    _mm512_and_si512(_mm512_srlv_epi64(v, shift), _mm512_set1_epi8(0xF))
}

/// Two activation blocks' 64 bytes in one `zmm`.
#[inline(always)]
unsafe fn act_pair(y0: &[i8; 32], y1: &[i8; 32]) -> __m512i {
    _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_loadu_si256(y0.as_ptr().cast())),
        _mm256_loadu_si256(y1.as_ptr().cast()),
    )
}

/// Two products in lanes 0, 1 and 2, 3 of `v`, spread: lanes 0..8 of the
/// result take lane `lo`, lanes 8..16 lane `lo + 1`.
#[inline(always)]
unsafe fn spread_pair(v: __m128, lo: i32) -> __m512 {
    let (a, b) = (lo, lo + 1);
    let idx = _mm512_set_epi32(b, b, b, b, b, b, b, b, a, a, a, a, a, a, a, a);
    _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v))
}

/// Two f16 as the i32 `vcvtph2ps` reads them from.
#[inline(always)]
fn half_pair(a: F16Le, b: F16Le) -> i32 {
    a.bits() as i32 | (b.bits() as i32) << 16
}

/// One pair of blocks of one weight row against an activation pair, whose
/// row-independent part ([`PairKernel::shared`]) is computed once for all
/// the rows of a pass.
trait PairKernel {
    type Block;
    type Act;
    type Shared: Copy;
    /// # Safety
    /// AVX-512 F/BW/VNNI and F16C available.
    unsafe fn shared(y0: &Self::Act, y1: &Self::Act) -> Self::Shared;
    /// `acc` plus blocks `x0`, `x1` against the activation pair.
    ///
    /// # Safety
    /// As [`PairKernel::shared`].
    unsafe fn step(x0: &Self::Block, x1: &Self::Block, s: Self::Shared, acc: __m512) -> __m512;
}

/// `Σ_blocks d_w·d_a·Σ (u − OFF)·q_a`: one `vpdpbusd` takes `OFF·Σ q_a`
/// (shared by the rows) and one per row `Σ u·q_a` of both blocks in 16
/// lanes; the exact difference is converted to f32 and multiplied by the
/// two blocks' `d_w·d_a` in 8 lanes each.
struct Offset<B>(std::marker::PhantomData<B>);

impl<B: OffsetBlock> PairKernel for Offset<B> {
    type Block = B;
    type Act = BlockQ8_0;
    /// The activation pair, `OFF·Σ q_a`, the two `d_a`.
    type Shared = (__m512i, __m512i, i32);
    #[inline(always)]
    unsafe fn shared(y0: &BlockQ8_0, y1: &BlockQ8_0) -> Self::Shared {
        let q = act_pair(&y0.qs, &y1.qs);
        let off = _mm512_set1_epi8(B::OFF as i8);
        let c = _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, q);
        (q, c, half_pair(y0.d, y1.d))
    }
    #[inline(always)]
    unsafe fn step(x0: &B, x1: &B, (q, c, da): Self::Shared, acc: __m512) -> __m512 {
        let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), B::levels(x0, x1), q);
        let sums = _mm512_cvtepi32_ps(_mm512_sub_epi32(p, c));
        // [d_w0, d_w1, d_a0, d_a1] → d_w0·d_a0, d_w1·d_a1 in lanes 0, 1.
        let d = _mm_cvtph_ps(_mm_setr_epi32(half_pair(x0.scale(), x1.scale()), da, 0, 0));
        let dd = _mm_mul_ps(d, _mm_movehl_ps(d, d));
        _mm512_fmadd_ps(sums, spread_pair(dd, 0), acc)
    }
}

/// `Σ_blocks d_w·d_a·Σ u·q_a + m_w·d_a·Σ q_a`, as the scalar kernel (with
/// the exact `Σ q_a`, not the block's rounded `s`): `vpdpbusd` takes `Σ q_a`
/// against ones (shared by the rows) and `Σ u·q_a` per row, both blocks in
/// 16 lanes; each is converted to f32 and multiplied by the blocks'
/// `d_w·d_a`, `m_w·d_a` in 8 lanes each.
struct Min<B>(std::marker::PhantomData<B>);

impl<B: MinBlock> PairKernel for Min<B> {
    type Block = B;
    type Act = BlockQ8_1;
    /// The activation pair, `Σ q_a` as f32, `[d_a0, d_a1, d_a0, d_a1]`.
    type Shared = (__m512i, __m512, __m128);
    #[inline(always)]
    unsafe fn shared(y0: &BlockQ8_1, y1: &BlockQ8_1) -> Self::Shared {
        let q = act_pair(&y0.qs, &y1.qs);
        let ones = _mm512_set1_epi8(1);
        let qsum = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, q));
        let da = half_pair(y0.d, y1.d);
        (q, qsum, _mm_cvtph_ps(_mm_setr_epi32(da, da, 0, 0)))
    }
    #[inline(always)]
    unsafe fn step(x0: &B, x1: &B, (q, qsum, av): Self::Shared, acc: __m512) -> __m512 {
        let u = B::levels(x0, x1);
        let p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), u, q));
        // [d_w0, d_w1, m_w0, m_w1] · [d_a0, d_a1, d_a0, d_a1].
        let ((d0, m0), (d1, m1)) = (x0.dm(), x1.dm());
        let wv = _mm_cvtph_ps(_mm_setr_epi32(half_pair(d0, d1), half_pair(m0, m1), 0, 0));
        let prod = _mm_mul_ps(wv, av);
        let t = _mm512_fmadd_ps(p, spread_pair(prod, 0), acc);
        _mm512_fmadd_ps(qsum, spread_pair(prod, 2), t)
    }
}

/// A row kernel of another instruction set, for `K`'s odd last block.
type OneBlock<K> = unsafe fn(&[<K as PairKernel>::Block], &[<K as PairKernel>::Act]) -> f32;

/// `K`'s sums of `R` weight rows over their whole pairs of blocks, two
/// accumulators per row; an odd last block of each row by `tail` (the
/// one-block kernel of another instruction set).
#[inline(always)]
unsafe fn pair_rows<K: PairKernel, const R: usize>(
    w: [&[K::Block]; R],
    a: &[K::Act],
    tail: OneBlock<K>,
) -> [f32; R] {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let len = w.iter().fold(a.len(), |n, w| n.min(w.len()));
    let n = len / 2;
    // Block pair `i` into accumulator `k` of every row (a macro, not a
    // closure or an indexed accumulator: both left the sums in memory).
    macro_rules! pair {
        ($i:expr, $k:literal) => {{
            let i = $i;
            let s = K::shared(&a[2 * i], &a[2 * i + 1]);
            for r in 0..R {
                let (x0, x1) = (&w[r][2 * i], &w[r][2 * i + 1]);
                prefetch_ahead(x0);
                acc[r][$k] = K::step(x0, x1, s, acc[r][$k]);
            }
        }};
    }
    let mut i = 0;
    while i + 2 <= n {
        pair!(i, 0);
        pair!(i + 1, 1);
        i += 2;
    }
    if i < n {
        pair!(i, 0);
    }
    let mut out = acc.map(|[a0, a1]| _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)));
    if len % 2 == 1 {
        for (o, w) in out.iter_mut().zip(w) {
            *o += tail(&w[len - 1..len], &a[len - 1..len]);
        }
    }
    out
}

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

/// The entry points of a k-quant's AVX-512 row kernel `$rows` (one row and four
/// rows, each with and without GFNI): `$one` and `$gfni` take their
/// doc comments from the invocation, the four-row forms share theirs.
macro_rules! kquant_entries {
    ($B:ty, $rows:ident, $(#[$one_doc:meta])* $one:ident, $(#[$gfni_doc:meta])* $gfni:ident,
     $four:ident, $four_gfni:ident) => {
        $(#[$one_doc])*
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub unsafe fn $one(w: &[$B], a: &[BlockQ8K]) -> f32 {
            $rows::<false, 1>(w, [a])[0]
        }

        $(#[$gfni_doc])*
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,gfni,avx2,fma,f16c")]
        pub unsafe fn $gfni(w: &[$B], a: &[BlockQ8K]) -> f32 {
            $rows::<true, 1>(w, [a])[0]
        }

        #[doc = concat!("[`", stringify!($one), "`] for 4 activation rows: each super-block's \
            levels and spread scales are built once for the four. Each result equals [`",
            stringify!($one), "`]'s on that row bit for bit.\n\n# Safety\nAs [`",
            stringify!($one), "`]; reads `w.len()` blocks of each row, which must hold them.")]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub unsafe fn $four(w: &[$B], a: [&[BlockQ8K]; 4]) -> [f32; 4] {
            $rows::<false, 4>(w, a)
        }

        #[doc = concat!("[`", stringify!($four), "`] with GFNI, as [`", stringify!($gfni),
            "`].\n\n# Safety\nAs [`", stringify!($four), "`], and GFNI available.")]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,gfni,avx2,fma,f16c")]
        pub unsafe fn $four_gfni(w: &[$B], a: [&[BlockQ8K]; 4]) -> [f32; 4] {
            $rows::<true, 4>(w, a)
        }
    };
}

kquant_entries!(
    BlockQ6K,
    q6k_rows,
    /// Q6_K weights × Q8_K activations.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available. Reads
    /// `min(w.len(), a.len())` blocks of each slice.
    q6k_q8k,
    /// [`q6k_q8k`] with the level bits placed by GFNI: the two bits of `qh`
    /// that each level takes go to bits 4–5 through one `vgf2p8affineqb` per
    /// 64 levels (the bit pair chosen per 256-bit half by the matrix), where
    /// [`q6k_q8k`] needs a variable shift and a mask. The levels, the integer
    /// lanes and the result are those of [`q6k_q8k`] bit for bit.
    ///
    /// # Safety
    /// As [`q6k_q8k`], and GFNI available.
    q6k_q8k_gfni,
    q6k_q8k_x4,
    q6k_q8k_x4_gfni
);

/// The Q6_K kernel body for `M` activation rows (`M` is 1 or 4, as
/// `ksteps` takes them); `GFNI`: place the high bits with GFNI (only
/// inlined into a function that enables it).
#[inline(always)]
unsafe fn q6k_rows<const GFNI: bool, const M: usize>(
    w: &[BlockQ6K],
    a: [&[BlockQ8K]; M],
) -> [f32; M] {
    let lanes = Q6K_SCALE_LANES.map(|l| _mm512_loadu_si512(l.as_ptr() as *const __m512i));
    ksteps(
        w,
        a,
        #[inline(always)]
        |x, ys| {
            let l = q6k_block_lanes::<GFNI, M>(x, &lanes, ys);
            let mut out = [(_mm256_setzero_si256(), _mm256_setzero_si256()); M];
            for m in 0..M {
                out[m].0 = fold(l[m]);
            }
            out
        },
    )
}

/// One Q6_K super-block against `M` activation blocks: i32 lanes whose sum
/// is the block's exact integer sum `Σ_g sc_g·Σ_{k∈g} (q_k − 32)·a_k`
/// (`lanes`: [`Q6K_SCALE_LANES`] loaded).
#[inline(always)]
unsafe fn q6k_block_lanes<const GFNI: bool, const M: usize>(
    x: &BlockQ6K,
    lanes: &[__m512i; 4],
    ys: [&BlockQ8K; M],
) -> [__m512i; M] {
    let sc8 = _mm_loadu_si128(x.scales.as_ptr() as *const __m128i);
    let sc16 = _mm256_cvtepi8_epi16(sc8);
    let sc = _mm512_castsi256_si512(sc16);
    // Levels 64k..64k + 64 in zmm k (0..4), and their scales per pair.
    let lv = q6k_levels::<GFNI>(x);
    let spread = four_spread(lanes, sc);
    // −32 per level: the lanes start at −32·Σ scale_g·bsum_g.
    let sc32 = _mm256_mullo_epi16(sc16, _mm256_set1_epi16(-32));
    let mut out = [_mm512_setzero_si512(); M];
    for (sumi, y) in out.iter_mut().zip(ys) {
        let corr = _mm256_madd_epi16(sc32, _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i));
        *sumi = _mm512_zextsi256_si512(corr);
        for k in 0..4 {
            let yk = _mm512_loadu_si512(y.qs.as_ptr().add(64 * k) as *const __m512i);
            *sumi = dpwssd(*sumi, _mm512_maddubs_epi16(lv[k], yk), spread[k]);
        }
    }
    out
}

/// The 16 i16 scales in `sc` spread by each of the four lane patterns.
#[inline(always)]
unsafe fn four_spread(lanes: &[__m512i; 4], sc: __m512i) -> [__m512i; 4] {
    [
        _mm512_permutexvar_epi16(lanes[0], sc),
        _mm512_permutexvar_epi16(lanes[1], sc),
        _mm512_permutexvar_epi16(lanes[2], sc),
        _mm512_permutexvar_epi16(lanes[3], sc),
    ]
}

/// The unsigned levels (`0..63`, the stored `q`) of a Q6_K super-block:
/// zmm `k` holds levels `64k..64k + 64`. Levels `32k + l` of a 128-level
/// half take `qh[l]` bits `2k, 2k + 1` to bits 4, 5: `k = 0, 1` are the low
/// nibbles (the two 256-bit halves of the first zmm), `k = 2, 3` the high
/// nibbles. `GFNI`: place those bits with `vgf2p8affineqb` (only inlined
/// into a function that enables GFNI), else shift left by 4 and 2, right
/// by 0 and 2, and mask.
#[inline(always)]
pub(crate) unsafe fn q6k_levels<const GFNI: bool>(x: &BlockQ6K) -> [__m512i; 4] {
    let m4 = _mm512_set1_epi8(0x0F);
    let m30 = _mm512_set1_epi8(0x30);
    let (hlo, hhi) = if GFNI {
        let pair = |k: u32| gf_halves(gf_move(2 * k, 4, 2), gf_move(2 * k + 2, 4, 2));
        (pair(0), pair(2))
    } else {
        (halves_i16(4, 2), halves_i16(0, 2))
    };
    let high = |qh: __m512i, lo: bool| {
        if GFNI {
            _mm512_gf2p8affine_epi64_epi8::<0>(qh, if lo { hlo } else { hhi })
        } else if lo {
            _mm512_and_si512(_mm512_sllv_epi16(qh, hlo), m30)
        } else {
            _mm512_and_si512(_mm512_srlv_epi16(qh, hhi), m30)
        }
    };
    // (A & C) | B for A = nibbles, B = high bits (zero outside 4–5), C = m4.
    const NIB_OR: i32 = 0xEC;
    let mut lv = [_mm512_setzero_si512(); 4];
    for n in 0..2 {
        let ql = _mm512_loadu_si512(x.ql.as_ptr().add(64 * n) as *const __m512i);
        let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(
            x.qh.as_ptr().add(32 * n) as *const __m256i
        ));
        lv[2 * n] = _mm512_ternarylogic_epi32::<NIB_OR>(ql, high(qh, true), m4);
        lv[2 * n + 1] =
            _mm512_ternarylogic_epi32::<NIB_OR>(_mm512_srli_epi16::<4>(ql), high(qh, false), m4);
    }
    lv
}

/// `vpdpwssd`: `acc` plus the sums of pairwise i16 products of `a` and
/// `b`, in i32 lanes. Written out because LLVM turns the intrinsic's
/// chains into `vpmaddwd` and `vpaddd`, an extra operation on the vector
/// pipes each time (Zen 4, Q6_K 4096×4096 from L3, 2 threads, with the
/// GFNI levels: 48.4 → 57.7 GiB/s for the two changes together).
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn dpwssd(mut acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    // SAFETY: a register-only instruction of AVX-512 VNNI, which this
    // function's callers have checked the CPU has.
    unsafe {
        std::arch::asm!(
            "vpdpwssd {acc}, {a}, {b}",
            acc = inout(zmm_reg) acc,
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Q2_K weights × Q8_K activations, the scalar kernel's result bit for bit
/// (see the module docs).
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
    ksteps(
        w,
        [a],
        #[inline(always)]
        |x, [y]| {
            let raw = _mm_loadu_si128(x.scales.as_ptr() as *const __m128i);
            let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(raw), m4));
            let prod =
                _mm256_madd_epi16(mins, _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i));
            let sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(raw, m4)));
            let mut sumi = _mm512_setzero_si512();
            for k in 0..4 {
                let lv = low2(&x.qs, k, &shift, m3);
                sumi = scaled_chunk(sumi, lv, y, k, lanes[k], sc);
            }
            [(fold(sumi), prod)]
        },
    )[0]
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

/// The sums of each of `R` i32 vectors.
#[inline(always)]
pub(super) unsafe fn sums<const R: usize>(acc: [__m512i; R]) -> [i32; R] {
    let mut out = [0i32; R];
    if R == 4 {
        let s = super::avx2::sums4([fold(acc[0]), fold(acc[1]), fold(acc[2]), fold(acc[3])]);
        _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, s);
    } else {
        for r in 0..R {
            out[r] = _mm512_reduce_add_epi32(acc[r]);
        }
    }
    out
}

kquant_entries!(
    BlockQ3K,
    q3k_rows,
    /// Q3_K weights × Q8_K activations, the scalar kernel's result bit for bit
    /// (see the module docs).
    ///
    /// # Safety
    /// As [`q2k_q8k`].
    q3k_q8k,
    /// [`q3k_q8k`] with each level's three bits placed by GFNI: one
    /// `vgf2p8affineqb` takes the 2-bit field to bits 0–1 and one takes the
    /// `hmask` bit to bit 2 (the bits chosen per 256-bit half by the
    /// matrices), where [`q3k_q8k`] shifts and masks each. Same levels, so
    /// bit-identical to it.
    ///
    /// # Safety
    /// As [`q2k_q8k`], and GFNI available.
    q3k_q8k_gfni,
    q3k_q8k_x4,
    q3k_q8k_x4_gfni
);

/// Whether the CPU has GFNI, which the `_gfni` forms of the kernels need on
/// top of AVX-512 (detected once by the standard library, then a load).
pub fn has_gfni() -> bool {
    is_x86_feature_detected!("gfni")
}

/// Whether the CPU has AVX-512 VBMI, which the `_vbmi` forms of the kernels
/// need on top of AVX-512 (detected once by the standard library).
pub fn has_vbmi() -> bool {
    is_x86_feature_detected!("avx512vbmi")
}

/// The `vgf2p8affineqb` matrix that moves bit `from + i` of every byte to
/// bit `to + i` for `i < width` and clears the rest (output bit `j` is the
/// parity of the input ANDed with byte `7 − j` of the matrix).
const fn gf_move(from: u32, to: u32, width: u32) -> i64 {
    let mut m = 0i64;
    let mut i = 0;
    while i < width {
        m |= (1i64 << (from + i)) << (8 * (7 - (to + i)));
        i += 1;
    }
    m
}

/// A `vgf2p8affineqb` matrix per 256-bit half.
#[inline(always)]
unsafe fn gf_halves(lo: i64, hi: i64) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_set1_epi64(lo), _mm256_set1_epi64x(hi))
}

/// The Q3_K kernel body for `M` activation rows (1 or 4, as
/// `avx2::ksteps` takes them); `GFNI`: place the bits with GFNI
/// (only inlined into a function that enables it).
#[inline(always)]
unsafe fn q3k_rows<const GFNI: bool, const M: usize>(
    w: &[BlockQ3K],
    a: [&[BlockQ8K]; M],
) -> [f32; M] {
    let mut lanes = [_mm512_setzero_si512(); 4];
    for (l, t) in lanes.iter_mut().zip(&Q6K_SCALE_LANES) {
        *l = _mm512_loadu_si512(t.as_ptr() as *const __m512i);
    }
    ksteps(
        w,
        a,
        #[inline(always)]
        |x, ys| {
            let sc16 = super::avx2::q3k_scales_i16(&x.scales);
            let lv = q3k_levels::<GFNI>(x);
            let sk = four_spread(&lanes, _mm512_castsi256_si512(sc16));
            let mut out = [(_mm256_setzero_si256(), _mm256_setzero_si256()); M];
            for m in 0..M {
                let y = ys[m];
                // The real level is (low | high << 2) - 4: subtract 4 · Σ sc·bsum.
                let bsums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
                let corr = _mm256_madd_epi16(sc16, bsums);
                let mut sumi = _mm512_setzero_si512();
                for k in 0..4 {
                    let yk = _mm512_loadu_si512(y.qs.as_ptr().add(64 * k) as *const __m512i);
                    sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(lv[k], yk), sk[k]);
                }
                out[m].0 = _mm256_sub_epi32(fold(sumi), _mm256_slli_epi32::<2>(corr));
            }
            out
        },
    )
}

/// The unsigned levels (`0..7`, low field and high bit) of a Q3_K
/// super-block: zmm `k` holds levels `64k..64k + 64`. `GFNI`: place the
/// bits with `vgf2p8affineqb` (only inlined into a function that enables
/// GFNI), else with per-half variable shifts and masks.
#[inline(always)]
pub(crate) unsafe fn q3k_levels<const GFNI: bool>(x: &BlockQ3K) -> [__m512i; 4] {
    let m3 = _mm512_set1_epi8(3);
    let m4 = _mm512_set1_epi8(4);
    let shift = low_bit_shifts();
    // Levels of zmm k take bit 4(k/2) + 2(k%2) (low half) and the next
    // (high half) of hmask to bit 2: left by 2, 1 for k = 0; right by
    // 0, 1 / 2, 3 / 4, 5 for k = 1, 2, 3.
    let hl = halves_i16(2, 1);
    let hr = [halves_i16(0, 1), halves_i16(2, 3), halves_i16(4, 5)];
    // With GFNI, for zmm k: the 2-bit field at bits 4(k%2) (low half) and
    // 4(k%2) + 2 (high half) of qs to bits 0–1; bits 2k, 2k + 1 of hmask
    // to bit 2.
    let gl: [__m512i; 2] = std::array::from_fn(|j| {
        gf_halves(gf_move(4 * j as u32, 0, 2), gf_move(4 * j as u32 + 2, 0, 2))
    });
    let gh: [__m512i; 4] = std::array::from_fn(|k| {
        gf_halves(gf_move(2 * k as u32, 2, 1), gf_move(2 * k as u32 + 1, 2, 1))
    });
    let hm = _mm512_broadcast_i64x4(_mm256_loadu_si256(x.hmask.as_ptr() as *const __m256i));
    // A loop, not `array::from_fn`: a closure is compiled without the
    // caller's target features and is not inlined.
    let mut lv = [_mm512_setzero_si512(); 4];
    for (k, v) in lv.iter_mut().enumerate() {
        *v = if GFNI {
            let q = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                x.qs.as_ptr().add(32 * (k / 2)) as *const __m256i
            ));
            _mm512_or_si512(
                _mm512_gf2p8affine_epi64_epi8::<0>(q, gl[k % 2]),
                _mm512_gf2p8affine_epi64_epi8::<0>(hm, gh[k]),
            )
        } else {
            let low = low2(&x.qs, k, &shift, m3);
            let hb = if k == 0 {
                _mm512_sllv_epi16(hm, hl)
            } else {
                _mm512_srlv_epi16(hm, hr[k - 1])
            };
            _mm512_or_si512(low, _mm512_and_si512(hb, m4))
        };
    }
    lv
}

/// The unsigned levels (`0..31`) of a Q5_K super-block: zmm `j` is chunk
/// `j`, sub-blocks `2j` (low 256 bits) and `2j + 1`. `GFNI`: place the
/// nibbles and fifth bits with `vgf2p8affineqb` (only inlined into a
/// function that enables GFNI), else with per-half variable shifts and
/// masks.
#[inline(always)]
pub(crate) unsafe fn q5k_levels<const GFNI: bool>(x: &BlockQ5K) -> [__m512i; 4] {
    let m4 = _mm512_set1_epi8(0xF);
    let m16 = _mm512_set1_epi8(0x10);
    // Chunk j: low nibbles (low half), high nibbles (high half).
    let nib = halves_i16(0, 4);
    // qh bits 2j (low half) and 2j + 1 (high half) to bit 4: left by
    // 4, 3 / 2, 1 for j = 0, 1; right by 0, 1 / 2, 3 for j = 2, 3.
    let hl = [halves_i16(4, 3), halves_i16(2, 1)];
    let hr = [halves_i16(0, 1), halves_i16(2, 3)];
    // The same with GFNI: the nibbles to bits 0–3, the qh bits to bit 4.
    let gnib = gf_halves(gf_move(0, 0, 4), gf_move(4, 0, 4));
    let gh: [__m512i; 4] = std::array::from_fn(|j| {
        let b = 2 * j as u32;
        gf_halves(gf_move(b, 4, 1), gf_move(b + 1, 4, 1))
    });
    let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(x.qh.as_ptr() as *const __m256i));
    // A loop, not `array::from_fn` (see `q3k_levels`).
    let mut lv = [_mm512_setzero_si512(); 4];
    for (j, v) in lv.iter_mut().enumerate() {
        let q = _mm512_broadcast_i64x4(_mm256_loadu_si256(
            x.qs.as_ptr().add(32 * j) as *const __m256i
        ));
        *v = if GFNI {
            _mm512_or_si512(
                _mm512_gf2p8affine_epi64_epi8::<0>(q, gnib),
                _mm512_gf2p8affine_epi64_epi8::<0>(qh, gh[j]),
            )
        } else {
            let low = _mm512_and_si512(_mm512_srlv_epi16(q, nib), m4);
            let hb = if j < 2 {
                _mm512_sllv_epi16(qh, hl[j])
            } else {
                _mm512_srlv_epi16(qh, hr[j - 2])
            };
            _mm512_or_si512(low, _mm512_and_si512(hb, m16))
        };
    }
    lv
}

/// A vector of i16 lanes: `lo` in the low 256 bits, `hi` in the high.
#[inline(always)]
unsafe fn halves_i16(lo: i16, hi: i16) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_set1_epi16(lo), _mm256_set1_epi16(hi))
}

kquant_entries!(
    BlockQ5K,
    q5k_rows,
    /// Q5_K weights × Q8_K activations, the scalar kernel's result bit for bit
    /// (see the module docs).
    ///
    /// # Safety
    /// As [`q2k_q8k`].
    q5k_q8k,
    /// [`q5k_q8k`] with the nibbles and fifth bits placed by GFNI (one
    /// `vgf2p8affineqb` each per 64 levels, the bits chosen per 256-bit half by
    /// the matrices) instead of variable shifts and masks. Same levels, so
    /// bit-identical to it.
    ///
    /// # Safety
    /// As [`q2k_q8k`], and GFNI available.
    q5k_q8k_gfni,
    q5k_q8k_x4,
    q5k_q8k_x4_gfni
);

/// The Q5_K kernel body for `M` activation rows (1 or 4, as
/// `avx2::ksteps` takes them); `GFNI`: place the bits with GFNI
/// (only inlined into a function that enables it).
#[inline(always)]
unsafe fn q5k_rows<const GFNI: bool, const M: usize>(
    w: &[BlockQ5K],
    a: [&[BlockQ8K]; M],
) -> [f32; M] {
    // i16 lane i of zmm j takes the scale of sub-block 2j + i / 16.
    let mut lanes = [_mm512_setzero_si512(); 4];
    for (j, l) in lanes.iter_mut().enumerate() {
        *l = halves_i16(2 * j as i16, 2 * j as i16 + 1);
    }
    ksteps(
        w,
        a,
        #[inline(always)]
        |x, ys| {
            let ms = super::avx2::k4_scales_mins_i16(&x.scales);
            let lv = q5k_levels::<GFNI>(x);
            let sk = four_spread(&lanes, _mm512_castsi256_si512(ms));
            let mins = _mm256_extracti128_si256(ms, 1);
            let mut out = [(_mm256_setzero_si256(), _mm256_setzero_si256()); M];
            for m in 0..M {
                let y = ys[m];
                let mut sumi = _mm512_setzero_si512();
                for k in 0..4 {
                    let yk = _mm512_loadu_si512(y.qs.as_ptr().add(64 * k) as *const __m512i);
                    sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(lv[k], yk), sk[k]);
                }
                // The mins: Σ_j m_j · (bsums[2j] + bsums[2j + 1]).
                let q8 = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
                let q8s =
                    _mm_hadd_epi16(_mm256_castsi256_si128(q8), _mm256_extracti128_si256(q8, 1));
                let prod = _mm_madd_epi16(mins, q8s);
                out[m] = (fold(sumi), _mm256_zextsi128_si256(prod));
            }
            out
        },
    )
}

/// IQ4_XS weights × Q8_K activations, the scalar kernel's result bit for
/// bit (`avx2::ksteps`). `zmm` `k` holds sub-blocks `2k`, `2k + 1`
/// in the activations' order (the low nibbles of a sub-block's 16 bytes are
/// its values 0–15, the high nibbles 16–31): the 64 nibble bytes of four
/// sub-blocks, each 128-bit lane doubled (`vshufi64x2`) and shifted by 0 or
/// 4, looked up in the 16-value table (`vpshufb`). The signed values go in
/// as magnitudes (`vpabsb`) with the activations negated where a value is
/// negative (activations are at most 127 in magnitude, so the negation is
/// exact); `vpmaddubsw` and `vpdpwssd` with the sub-block scales spread over
/// the product lanes, as the lattice types do.
///
/// # Safety
/// As [`q2k_q8k`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn iq4_xs_q8k(w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32 {
    iq4_xs_rows::<1>(w, [a])[0]
}

/// [`iq4_xs_q8k`] for 4 activation rows: each super-block's values and
/// scales built once for the four; each result equals [`iq4_xs_q8k`]'s.
///
/// # Safety
/// As [`iq4_xs_q8k`]; reads `w.len()` blocks of each row, which must hold
/// them.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn iq4_xs_q8k_x4(w: &[BlockIQ4XS], a: [&[BlockQ8K]; 4]) -> [f32; 4] {
    iq4_xs_rows::<4>(w, a)
}

/// The IQ4_XS kernel body for `M` (1 or 4) activation rows.
#[inline(always)]
unsafe fn iq4_xs_rows<const M: usize>(w: &[BlockIQ4XS], a: [&[BlockQ8K]; M]) -> [f32; M] {
    let table = _mm512_broadcast_i32x4(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
    // i16 shifts per 128-bit lane: 0, 4, 0, 4 (low, high nibbles).
    let h = _mm256_inserti128_si256::<1>(_mm256_setzero_si256(), _mm_set1_epi16(4));
    let shift = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(h), h);
    let m4 = _mm512_set1_epi8(0x0F);
    // Product lane i of zmm k takes sub-block 2k + i / 16.
    let half = halves_i16(0, 1);
    ksteps(
        w,
        a,
        #[inline(always)]
        |x, ys| {
            let q = [
                _mm512_loadu_si512(x.qs.as_ptr() as *const __m512i),
                _mm512_loadu_si512(x.qs.as_ptr().add(64) as *const __m512i),
            ];
            let sc = _mm512_castsi128_si512(iq4_xs_scales(x));
            let mut mag = [_mm512_setzero_si512(); 4];
            let mut neg = [0u64; 4];
            let mut spread = [_mm512_setzero_si512(); 4];
            for k in 0..4 {
                let d = if k % 2 == 0 {
                    _mm512_shuffle_i64x2::<0x50>(q[k / 2], q[k / 2])
                } else {
                    _mm512_shuffle_i64x2::<0xFA>(q[k / 2], q[k / 2])
                };
                let nib = _mm512_and_si512(_mm512_srlv_epi16(d, shift), m4);
                let v = _mm512_shuffle_epi8(table, nib);
                mag[k] = _mm512_abs_epi8(v);
                neg[k] = _mm512_movepi8_mask(v);
                let idx = _mm512_add_epi16(half, _mm512_set1_epi16(2 * k as i16));
                spread[k] = _mm512_permutexvar_epi16(idx, sc);
            }
            let zero = _mm512_setzero_si512();
            let mut out = [(_mm256_setzero_si256(), _mm256_setzero_si256()); M];
            for m in 0..M {
                let mut sumi = zero;
                for k in 0..4 {
                    let y = _mm512_loadu_si512(ys[m].qs.as_ptr().add(64 * k) as *const __m512i);
                    let y = _mm512_mask_sub_epi8(y, neg[k], zero, y);
                    sumi = dpwssd(sumi, _mm512_maddubs_epi16(mag[k], y), spread[k]);
                }
                out[m].0 = fold(sumi);
            }
            out
        },
    )
}

/// The 8 sub-block scales of an IQ4_XS block (`BlockIQ4XS::sub_scale`) as
/// i16 lanes: 4 low bits from a nibble of `scales_l`, 2 high bits from
/// `scales_h`, less 32.
#[inline(always)]
unsafe fn iq4_xs_scales(x: &BlockIQ4XS) -> __m128i {
    let l = _mm_cvtsi32_si128(i32::from_le_bytes(x.scales_l));
    let m = _mm_set1_epi8(0x0F);
    let nib = _mm_unpacklo_epi8(
        _mm_and_si128(l, m),
        _mm_and_si128(_mm_srli_epi16::<4>(l), m),
    );
    let lo = _mm_cvtepu8_epi16(nib);
    let sh = _mm_set1_epi16(u16::from_le_bytes(x.scales_h) as i16);
    let hi = _mm_and_si128(
        _mm_srlv_epi16(sh, _mm_setr_epi16(0, 2, 4, 6, 8, 10, 12, 14)),
        _mm_set1_epi16(3),
    );
    _mm_sub_epi16(
        _mm_or_si128(lo, _mm_slli_epi16::<4>(hi)),
        _mm_set1_epi16(32),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize_block_q8k;
    use rand::{Rng, SeedableRng};

    /// `n` Q6_K blocks of random bytes (every level and `qh` bit pattern)
    /// with small f16 scales; `extreme`: every level 63 (the largest
    /// `vpmaddubsw` operand) and every group scale −128.
    fn q6k_blocks(n: usize, extreme: bool, rng: &mut impl Rng) -> Vec<BlockQ6K> {
        let mut w: Vec<BlockQ6K> = random_blocks(n, &[208], rng);
        if extreme {
            for b in &mut w {
                b.ql = [0xFF; 128];
                b.qh = [0xFF; 64];
                b.scales = [-128; 16];
            }
        }
        w
    }

    fn q8k_blocks(n: usize, extreme: bool, rng: &mut impl Rng) -> Vec<BlockQ8K> {
        (0..n)
            .map(|_| {
                let x: Vec<f32> = (0..256)
                    .map(|i| match extreme {
                        // Full-scale bytes of both signs: −128 where the
                        // quantizer meets the most negative value.
                        true if i % 2 == 0 => -1.0,
                        true => 127.0 / 128.0,
                        false => rng.random_range(-1.0f32..1.0),
                    })
                    .collect();
                let mut b = BlockQ8K::ZERO;
                quantize_block_q8k(&x, &mut b);
                b
            })
            .collect()
    }

    #[test]
    fn q6k_gfni_equals_the_shift_form_and_the_scalar_kernel() {
        // The GFNI form builds the same levels, so the two agree bit for bit;
        // on a CPU with GFNI only it is dispatched, and this is what checks
        // the shift form there. Against the scalar kernel: bit for bit too
        // (exact integer sums per block, then its float steps).
        if !(crate::Isa::Avx512.available() && has_gfni()) {
            eprintln!("no AVX-512 with GFNI: nothing to compare");
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        for (n, extreme) in [(1, false), (3, false), (16, false), (57, false), (5, true)] {
            let w = q6k_blocks(n, extreme, &mut rng);
            let a = q8k_blocks(n, extreme, &mut rng);
            // SAFETY: AVX-512 F/BW/VL/VNNI with AVX2, FMA and F16C
            // (`Isa::Avx512`) and GFNI checked above; both read n blocks of
            // slices that hold n.
            let (plain, gfni) = unsafe { (q6k_q8k(&w, &a), q6k_q8k_gfni(&w, &a)) };
            assert_eq!(
                plain.to_bits(),
                gfni.to_bits(),
                "{n} blocks: {plain} vs {gfni}"
            );
            let want = crate::dot::scalar::q6k_q8k(&w, &a);
            // The four-row forms: each row as the one-row kernel.
            let rows: [Vec<BlockQ8K>; 4] =
                std::array::from_fn(|_| q8k_blocks(n, extreme, &mut rng));
            let four = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
            // SAFETY: as above; every row holds the n blocks the kernels read.
            let (x4, x4g, one) = unsafe {
                (
                    q6k_q8k_x4(&w, four),
                    q6k_q8k_x4_gfni(&w, four),
                    four.map(|r| q6k_q8k_gfni(&w, r)),
                )
            };
            for m in 0..4 {
                assert_eq!(x4[m].to_bits(), one[m].to_bits(), "{n} blocks, row {m}: x4");
                assert_eq!(
                    x4g[m].to_bits(),
                    one[m].to_bits(),
                    "{n} blocks, row {m}: x4 GFNI"
                );
            }
            // The scalar kernel's float steps on the exact integer sums: the
            // same bits (what keeps a product independent of the batch it
            // ran in, as the tiled kernel gives these bits too).
            assert_eq!(
                gfni.to_bits(),
                want.to_bits(),
                "{n} blocks, extreme {extreme}: {gfni} vs scalar {want}"
            );
            for m in 0..4 {
                let want = crate::dot::scalar::q6k_q8k(&w, four[m]);
                assert_eq!(
                    x4[m].to_bits(),
                    want.to_bits(),
                    "{n} blocks, row {m}: x4 vs scalar"
                );
            }
        }
    }

    /// `n` blocks of random bytes (every level, high-bit and scale
    /// pattern), with small f16 values at the byte offsets `f16_at`.
    fn random_blocks<B: crate::blocks::ByteBlock + Clone>(
        n: usize,
        f16_at: &[usize],
        rng: &mut impl Rng,
    ) -> Vec<B> {
        let size = size_of::<B>();
        let mut bytes: Vec<u8> = (0..n * size).map(|_| rng.random()).collect();
        for block in bytes.chunks_exact_mut(size) {
            for &o in f16_at {
                let v = half::f16::from_f32(rng.random_range(-0.02f32..0.02));
                block[o..o + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        crate::blocks::cast_blocks::<B>(&bytes).unwrap().to_vec()
    }

    #[test]
    fn q3k_q5k_gfni_equal_the_shift_forms_the_avx2_and_the_scalar_kernels() {
        // Bit for bit against each other (same levels), the AVX2 kernels and
        // the scalar kernels (exact integer sums, the scalar float steps).
        if !(crate::Isa::Avx512.available() && has_gfni()) {
            eprintln!("no AVX-512 with GFNI: nothing to compare");
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for n in [1, 2, 16, 23] {
            let w3: Vec<BlockQ3K> = random_blocks(n, &[108], &mut rng);
            let w5: Vec<BlockQ5K> = random_blocks(n, &[0, 2], &mut rng);
            let a = q8k_blocks(n, false, &mut rng);
            // SAFETY: AVX-512 F/BW/VL/VNNI with AVX2, FMA and F16C
            // (`Isa::Avx512`) and GFNI checked above; each kernel reads n
            // blocks of slices that hold n.
            let (q3, q5) = unsafe {
                use super::super::avx2;
                (
                    [
                        q3k_q8k(&w3, &a),
                        q3k_q8k_gfni(&w3, &a),
                        avx2::q3k_q8k(&w3, &a),
                        crate::dot::scalar::q3k_q8k(&w3, &a),
                    ],
                    [
                        q5k_q8k(&w5, &a),
                        q5k_q8k_gfni(&w5, &a),
                        avx2::q5k_q8k(&w5, &a),
                        crate::dot::scalar::q5k_q8k(&w5, &a),
                    ],
                )
            };
            for (ty, [plain, gfni, avx2, scalar]) in [("Q3_K", q3), ("Q5_K", q5)] {
                assert_eq!(
                    scalar.to_bits(),
                    gfni.to_bits(),
                    "{ty} {n} blocks: scalar {scalar} vs {gfni}"
                );
                assert_eq!(
                    plain.to_bits(),
                    gfni.to_bits(),
                    "{ty} {n} blocks: {plain} vs {gfni}"
                );
                assert_eq!(
                    avx2.to_bits(),
                    gfni.to_bits(),
                    "{ty} {n} blocks: AVX2 {avx2}"
                );
            }
        }
    }

    /// A lattice i-quant's VBMI form against its gather form and the scalar
    /// kernel, bit for bit, rows of 1 and 4: `$B` blocks of random bytes
    /// (every grid index, both halves of each table, sign and scale), f16
    /// scale at byte 0. On a CPU with VBMI only the VBMI form is dispatched,
    /// and this is what checks the gather form there.
    macro_rules! vbmi_matches {
        ($B:ty, $gather:ident, $vbmi:ident, $gather4:ident, $vbmi4:ident, $seed:expr) => {{
            if !(crate::Isa::Avx512.available() && has_vbmi()) {
                eprintln!("no AVX-512 with VBMI: nothing to compare");
                return;
            }
            let mut rng = rand::rngs::StdRng::seed_from_u64($seed);
            for (n, extreme) in [(1, false), (2, false), (8, false), (33, false), (4, true)] {
                let w: Vec<$B> = random_blocks(n, &[0], &mut rng);
                let a = q8k_blocks(n, extreme, &mut rng);
                let rows: [Vec<BlockQ8K>; 4] =
                    std::array::from_fn(|_| q8k_blocks(n, extreme, &mut rng));
                let rows_ref = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
                // SAFETY: AVX-512 F/BW/VL/VNNI with AVX2, FMA and F16C
                // (`Isa::Avx512`) and VBMI checked above; every kernel
                // reads n blocks of slices that hold n.
                let (gather, vbmi, gather4, vbmi4) = unsafe {
                    (
                        $gather(&w, &a),
                        $vbmi(&w, &a),
                        $gather4(&w, rows_ref),
                        $vbmi4(&w, rows_ref),
                    )
                };
                let want = crate::dot::scalar::$gather(&w, &a);
                assert_eq!(
                    want.to_bits(),
                    gather.to_bits(),
                    "{n} blocks: gather {gather} vs {want}"
                );
                assert_eq!(
                    want.to_bits(),
                    vbmi.to_bits(),
                    "{n} blocks: VBMI {vbmi} vs {want}"
                );
                for r in 0..4 {
                    let want = crate::dot::scalar::$gather(&w, &rows[r]);
                    assert_eq!(
                        want.to_bits(),
                        gather4[r].to_bits(),
                        "{n} blocks, x4 row {r}"
                    );
                    assert_eq!(
                        want.to_bits(),
                        vbmi4[r].to_bits(),
                        "{n} blocks, x4 VBMI row {r}"
                    );
                }
            }
        }};
    }

    #[test]
    fn iq2_vbmi_equals_the_gather_forms_and_the_scalar_kernels() {
        use crate::blocks::{BlockIQ2S, BlockIQ2XS, BlockIQ2XXS};
        vbmi_matches!(
            BlockIQ2XXS,
            iq2_xxs_q8k,
            iq2_xxs_q8k_vbmi,
            iq2_xxs_q8k_x4,
            iq2_xxs_q8k_x4_vbmi,
            11
        );
        vbmi_matches!(
            BlockIQ2XS,
            iq2_xs_q8k,
            iq2_xs_q8k_vbmi,
            iq2_xs_q8k_x4,
            iq2_xs_q8k_x4_vbmi,
            12
        );
        vbmi_matches!(
            BlockIQ2S,
            iq2_s_q8k,
            iq2_s_q8k_vbmi,
            iq2_s_q8k_x4,
            iq2_s_q8k_x4_vbmi,
            13
        );
    }

    #[test]
    fn iq3_xxs_vbmi_equals_the_gather_form_and_the_scalar_kernel() {
        use crate::blocks::BlockIQ3XXS;
        vbmi_matches!(
            BlockIQ3XXS,
            iq3_xxs_q8k,
            iq3_xxs_q8k_vbmi,
            iq3_xxs_q8k_x4,
            iq3_xxs_q8k_x4_vbmi,
            9
        );
    }

    #[test]
    fn iq3_s_vbmi_equals_the_gather_form_and_the_scalar_kernel() {
        use crate::blocks::BlockIQ3S;
        vbmi_matches!(
            BlockIQ3S,
            iq3_s_q8k,
            iq3_s_q8k_vbmi,
            iq3_s_q8k_x4,
            iq3_s_q8k_x4_vbmi,
            10
        );
    }
}
