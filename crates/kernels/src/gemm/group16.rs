//! The 32-value block types in a packed layout of 16-row groups
//! ([`PackedQ8_0`], [`PackedQ32`]) × Q8_0 activations, register-tiled with
//! AVX-512 VNNI, read straight from the packed bytes: one microkernel over
//! [`Group16`], which says how a layout gives its weight vectors, on the
//! shared tile driver ([`super::tiles`]).
//!
//! Both layouts put 4 values of each of a group's 16 rows in one 64-byte
//! vector (after unpacking the nibbles for [`PackedQ32`]): the `vpdpbusd`
//! operand whose lanes are 16 weight rows, unsigned levels `u` (Q8_0: the
//! value with its sign bit flipped, `w + 128`). The activations are the
//! signed operand, 4 bytes of one activation row broadcast to every lane. A
//! tile of `G` groups × `N` activation rows loads (and unpacks) each weight
//! vector once for `N` products and each broadcast once for `G`, with
//! nothing expanded or copied: [`super::legacy_avx512`] has to rebuild every
//! weight block in its own form first, which at a few dozen activation rows
//! costs more than the products.
//!
//! Per block and lane the sum starts at `−OFF·Σa` (the levels' offset,
//! `OFF` 128 for Q8_0 and IQ4_NL's table plus 128, 8 for Q4_0, 16 for Q5_0,
//! 0 for the types with a min) so it ends at the exact `Σ w·a`. The float
//! step, blocks in order:
//!
//! - [`PackedQ32`]: the row kernels' (`acc + sum·(d_w·d_a)`, Q4_1 / Q5_1
//!   adding `m_w·(d_a·Σa)` to the product first), so a product gives the
//!   matrix × vector kernel's bits, and the scalar kernel's, at any number
//!   of activation rows: a token's result does not depend on how many
//!   others share its batch (the server's streams check it). The AMX
//!   kernel ([`super::group16_amx`]) takes the same step.
//! - Packed Q8_0: [`super::legacy_avx512`]'s fused multiply-adds
//!   (`acc = fma(sum, d_w·d_a, acc)`), the same bits as that kernel and the
//!   AMX one ([`super::group16_amx`]).

use super::row_block_size;
use super::tiles::{self, run_tile, Micro, Sums};
use crate::blocks::KVALUES_IQ4NL_PLUS_128;
use crate::blocks::{F16Le, QK};
use crate::packed::q32::{Block32, HighBits16, Nibbles16};
use crate::packed::q8_0::Qs16;
use crate::packed::{PackedQ32, PackedQ8_0, GROUP16};
use crate::shared::{OutPtr, Pool};
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Weight groups (16 rows each) per microkernel tile.
const TG: usize = 2;
/// Most activation rows per microkernel tile.
const TN: usize = 6;
/// Blocks per k-block.
const KC: usize = 8;
/// Most groups per row block.
const GB_MAX: usize = 4;

/// One block of one activation row, for weights whose levels have offset
/// `OFF` ([`Group16::OFF`]).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(super) struct ActBlock {
    pub(super) qs: [i8; QK],
    /// The activation scale (rounded to f16, as the GGUF block stores it).
    pub(super) d: f32,
    /// For levels with an offset (`OFF ≠ 0`), `−OFF·Σ qs`: where a block's
    /// integer sums start. For the types with a min (`OFF = 0`), the bits
    /// of `d·Σ qs` (f32): what the min multiplies. (One field keeps the
    /// block at 40 bytes, the packed Q8_0 kernel's before: lab journal,
    /// 2026-12-07 second session.)
    pub(super) extra: i32,
}

const ACT_ZERO: ActBlock = ActBlock {
    qs: [0; QK],
    d: 0.0,
    extra: 0,
};

/// The activations of one call, reused across calls.
static ACTS: Pool<Vec<ActBlock>> = Pool::new();

thread_local! {
    /// A worker's running sums between k-blocks.
    static ACC: RefCell<Vec<__m512>> = const { RefCell::new(Vec::new()) };
}

/// Quantizes one 32-value block of activations for levels of offset `off`
/// (also the AMX kernel's, [`super::group16_amx`]).
///
/// # Safety
/// AVX-512 F/BW/VL, AVX2 and F16C available (the callers run only where
/// AVX-512 VNNI or AMX is).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
pub(super) unsafe fn act_block(v: &[f32], off: i32) -> ActBlock {
    assert_eq!(v.len(), QK);
    let Some((qs, d)) = crate::quant::quantize_q8_0_regs_avx512(v.as_ptr()) else {
        // NaN, infinities, a subnormal scale: the scalar quantizer's
        // handling.
        let q = crate::quant::quantize_block_q8_0(v);
        let sum: i32 = q.qs.iter().map(|&v| v as i32).sum();
        return act_finish(q.qs, q.d.to_f32(), sum, off);
    };
    // The scale as the GGUF block stores it (f16, to nearest even, as
    // `F16Le::from_f32`).
    let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(
        _mm_set_ss(d),
    )));
    // Σ qs: the bytes biased to unsigned, summed by `vpsadbw`.
    let b = _mm256_xor_si256(qs, _mm256_set1_epi8(-128));
    let s = _mm256_sad_epu8(b, _mm256_setzero_si256());
    let s = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    let sum = (_mm_cvtsi128_si64(s) + _mm_extract_epi64::<1>(s)) as i32 - 128 * QK as i32;
    let mut q = [0i8; QK];
    _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, qs);
    act_finish(q, d, sum, off)
}

#[inline(always)]
fn act_finish(qs: [i8; QK], d: f32, sum: i32, off: i32) -> ActBlock {
    let extra = if off != 0 {
        -off * sum
    } else {
        (d * sum as f32).to_bits() as i32
    };
    ActBlock { qs, d, extra }
}

/// Quantizes activation row `t` into `out` (one block per 32 values).
fn fill_row(x: &[f32], cols: usize, t: usize, off: i32, out: &mut [ActBlock]) {
    // SAFETY: this kernel runs only where AVX-512 F/BW/VL/VNNI with AVX2
    // and F16C was checked (`matmul_q8_0` / `matmul_q32`'s callers).
    unsafe { fill_row_avx512(&x[t * cols..(t + 1) * cols], off, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
unsafe fn fill_row_avx512(row: &[f32], off: i32, out: &mut [ActBlock]) {
    for (o, v) in out.iter_mut().zip(row.chunks_exact(QK)) {
        *o = act_block(v, off);
    }
}

/// One block column of a group as its 8 steps in turn (see [`Group16`]),
/// 64 bytes each: packed Q8_0's block layout, and the AMX kernel's weight
/// tile (8 rows × 64 bytes).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Steps(pub(super) [u8; 8 * 64]);

/// A matrix in a layout of 16-row groups whose block columns the
/// microkernel reads in place. Block `b` of a group gives 8 weight vectors
/// (steps `s = 0..8`), step `s` holding levels `4s..4s + 4` of the 16 rows
/// (lane `r`: row `r`), against activation bytes `4s..4s + 4`.
pub(super) trait Group16: Sync {
    /// Subtracted from every level: the block sums are `Σ (u − OFF)·a`.
    const OFF: i32;
    /// Whether the type has a min (`d·u + m`).
    const MIN: bool;
    /// Whether the float step is the row kernels' (`step_d` / `step_dm`
    /// of [`crate::dot::scalar`]: a multiply, then an add), so the tiled
    /// products equal the matrix × vector ones bit for bit whatever the
    /// batch; else `legacy_avx512`'s fused multiply-adds (types without a
    /// min only).
    const ROW_STEP: bool;
    /// Where a group's block columns start.
    type Ptr: Copy;
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
    /// Group `g`'s block columns from block `s0` on.
    fn at(&self, g: usize, s0: usize) -> Self::Ptr;
    /// Step `s` (`s < 8`) of block `b`.
    ///
    /// # Safety
    /// AVX-512 F/BW available; `b` inside the group.
    unsafe fn step(p: Self::Ptr, b: usize, s: usize) -> __m512i;
    /// Block `b`'s 16 scales `d` (and mins `m` where [`Group16::MIN`]).
    ///
    /// # Safety
    /// AVX-512 F and F16C available; `b` inside the group.
    unsafe fn scales(p: Self::Ptr, b: usize) -> (__m512, __m512);
    /// Where the layout stores each block's 8 steps in turn ([`Steps`],
    /// from `p`'s block on), which the AMX kernel reads as weight tiles
    /// ([`super::group16_amx`]). `None` where the steps are computed (the
    /// AMX kernel then expands them).
    fn tiles(p: Self::Ptr) -> Option<*const Steps> {
        let _ = p;
        None
    }
}

/// [`PackedQ8_0`]: 8 words of sign-flipped values per block.
impl Group16 for PackedQ8_0 {
    const OFF: i32 = 128;
    const MIN: bool = false;
    const ROW_STEP: bool = false;
    type Ptr = (*const Qs16, *const [F16Le; GROUP16]);
    fn rows(&self) -> usize {
        self.rows()
    }
    fn cols(&self) -> usize {
        self.cols()
    }
    fn at(&self, g: usize, s0: usize) -> Self::Ptr {
        let (qs, d) = self.group(g);
        (qs[s0..].as_ptr(), d[s0..].as_ptr())
    }
    #[inline(always)]
    unsafe fn step((qs, _): Self::Ptr, b: usize, s: usize) -> __m512i {
        // SAFETY: block `b` of the group (the caller's contract), 512 bytes
        // aligned to 64.
        unsafe { _mm512_load_si512((*qs.add(b)).0.as_ptr().add(64 * s) as *const __m512i) }
    }
    #[inline(always)]
    unsafe fn scales((_, d): Self::Ptr, b: usize) -> (__m512, __m512) {
        // SAFETY: block `b` of the group (the caller's contract).
        unsafe {
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(d.add(b) as *const __m256i));
            (d, _mm512_setzero_ps())
        }
    }
    fn tiles((qs, _): Self::Ptr) -> Option<*const Steps> {
        const _: () = assert!(size_of::<Qs16>() == 512 && align_of::<Qs16>() == 64);
        // A `Qs16` is its 8 words (the steps) in turn: the same bytes.
        Some(qs.cast())
    }
}

/// A [`PackedQ32`] read as block type `B`: per block 4 words of nibbles,
/// word `t` the levels `4t..4t + 4` (low nibbles, step `t`) and `16 + 4t..`
/// (high nibbles, step `t + 4`), plus the fifth bits, or through IQ4_NL's
/// table plus 128. A word is loaded once per step (twice per block, from
/// L1), so the microkernel holds one weight vector per group, as for Q8_0.
pub(super) struct Q32<'a, B> {
    w: &'a PackedQ32,
    _b: std::marker::PhantomData<B>,
}

impl<'a, B: Block32> Q32<'a, B> {
    /// `w` read as `B` (`B`'s type is `w`'s).
    pub(super) fn new(w: &'a PackedQ32) -> Self {
        debug_assert_eq!(w.ggml_type(), B::TYPE);
        Q32 {
            w,
            _b: std::marker::PhantomData,
        }
    }
}

/// Pointers to a [`PackedQ32`] group's fields (null where the type has none).
#[derive(Clone, Copy)]
pub(super) struct Q32Ptr {
    qs: *const Nibbles16,
    qh: *const HighBits16,
    d: *const [F16Le; GROUP16],
    m: *const [F16Le; GROUP16],
}

impl<B: Block32> Group16 for Q32<'_, B> {
    const OFF: i32 = B::OFF;
    const MIN: bool = B::MIN;
    const ROW_STEP: bool = true;
    type Ptr = Q32Ptr;
    fn rows(&self) -> usize {
        self.w.rows()
    }
    fn cols(&self) -> usize {
        self.w.cols()
    }
    fn at(&self, g: usize, s0: usize) -> Q32Ptr {
        let grp = self.w.group(g);
        let at = |len: usize| s0.min(len);
        Q32Ptr {
            qs: grp.qs[s0..].as_ptr(),
            qh: grp.qh[at(grp.qh.len())..].as_ptr(),
            d: grp.d[s0..].as_ptr(),
            m: grp.m[at(grp.m.len())..].as_ptr(),
        }
    }
    #[inline(always)]
    unsafe fn step(p: Q32Ptr, b: usize, s: usize) -> __m512i {
        // Word `s % 4`, low nibbles for steps 0..4, high ones for 4..8.
        let (t, h) = (s % 4, s / 4);
        // SAFETY: block `b` of the group (the caller's contract): 256 bytes
        // of nibbles aligned to 64, and fifth bits where `B` has them.
        unsafe {
            let low = _mm512_set1_epi8(0x0F);
            let v = _mm512_load_si512((*p.qs.add(b)).0.as_ptr().add(64 * t) as *const __m512i);
            let mut u = if h == 0 {
                _mm512_and_si512(v, low)
            } else {
                _mm512_and_si512(_mm512_srli_epi16::<4>(v), low)
            };
            if B::QH {
                let bits = (*p.qh.add(b)).0[2 * t + h];
                u = _mm512_mask_add_epi8(u, bits, u, _mm512_set1_epi8(0x10));
            }
            if B::LOOKUP {
                let table = _mm512_broadcast_i32x4(_mm_loadu_si128(
                    KVALUES_IQ4NL_PLUS_128.as_ptr() as *const __m128i,
                ));
                u = _mm512_shuffle_epi8(table, u);
            }
            u
        }
    }
    #[inline(always)]
    unsafe fn scales(p: Q32Ptr, b: usize) -> (__m512, __m512) {
        // SAFETY: block `b` of the group (the caller's contract), mins
        // where `B` has them.
        unsafe {
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(p.d.add(b) as *const __m256i));
            let m = if B::MIN {
                _mm512_cvtph_ps(_mm256_loadu_si256(p.m.add(b) as *const __m256i))
            } else {
                _mm512_setzero_ps()
            };
            (d, m)
        }
    }
}

/// The microkernel: `acc[g][t] += dot(group g's 16 rows, activation row t)`
/// over `nb` blocks (`w[g]`, `a[t]` point at the first).
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and F16C available; the pointers valid for `nb`
/// blocks.
#[inline(always)]
unsafe fn tile<W: Group16, const G: usize, const N: usize>(
    w: [W::Ptr; G],
    a: [*const ActBlock; N],
    nb: usize,
    acc: &mut [[__m512; N]; G],
) {
    debug_assert!(W::ROW_STEP || !W::MIN, "the FMA step takes no min");
    for b in 0..nb {
        let mut isum = [[_mm512_setzero_si512(); N]; G];
        if W::OFF != 0 {
            for t in 0..N {
                let s = _mm512_set1_epi32((*a[t].add(b)).extra);
                for g in 0..G {
                    isum[g][t] = s;
                }
            }
        }
        for s in 0..8 {
            let wv: [__m512i; G] = std::array::from_fn(|g| W::step(w[g], b, s));
            for t in 0..N {
                let q = (*a[t].add(b)).qs.as_ptr().add(4 * s) as *const i32;
                let av = _mm512_set1_epi32(q.read_unaligned());
                for g in 0..G {
                    isum[g][t] = _mm512_dpbusd_epi32(isum[g][t], wv[g], av);
                }
            }
        }
        let dw: [(__m512, __m512); G] = std::array::from_fn(|g| W::scales(w[g], b));
        for t in 0..N {
            let ab = &*a[t].add(b);
            let da = _mm512_set1_ps(ab.d);
            let sd = _mm512_set1_ps(f32::from_bits(ab.extra as u32));
            for g in 0..G {
                let dd = _mm512_mul_ps(dw[g].0, da);
                let sumi = _mm512_cvtepi32_ps(isum[g][t]);
                if W::ROW_STEP {
                    let mut term = _mm512_mul_ps(sumi, dd);
                    if W::MIN {
                        term = _mm512_add_ps(term, _mm512_mul_ps(dw[g].1, sd));
                    }
                    acc[g][t] = _mm512_add_ps(acc[g][t], term);
                } else {
                    acc[g][t] = _mm512_fmadd_ps(sumi, dd, acc[g][t]);
                }
            }
        }
    }
}

/// The operands of one k-block of one row block: the microkernel's
/// [`Micro`] (weight units are 16-row groups, activation units rows).
struct Kernel<'a, W> {
    w: &'a W,
    /// Activation rows.
    n: usize,
    acts: &'a [ActBlock],
    /// Blocks per row.
    nb: usize,
    /// The k-block: blocks `s0..s0 + nkb`.
    s0: usize,
    nkb: usize,
    y: OutPtr,
}

impl<W: Group16> Micro for Kernel<'_, W> {
    type Acc = __m512;
    type WPtr = W::Ptr;
    type APtr = *const ActBlock;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }

    #[inline(always)]
    unsafe fn weights(&self, g: usize) -> W::Ptr {
        self.w.at(g, self.s0)
    }

    #[inline(always)]
    unsafe fn acts(&self, t: usize) -> *const ActBlock {
        self.acts.as_ptr().add(t * self.nb + self.s0)
    }

    #[inline(always)]
    unsafe fn tile<const G: usize, const N: usize>(
        &self,
        w: [W::Ptr; G],
        a: [*const ActBlock; N],
        acc: &mut [[__m512; N]; G],
    ) {
        tile::<W, G, N>(w, a, self.nkb, acc);
    }

    #[inline(always)]
    unsafe fn store<const G: usize, const N: usize>(
        &self,
        (g0, t0): (usize, usize),
        acc: &[[__m512; N]; G],
    ) {
        let rows = self.w.rows();
        for g in 0..G {
            let r0 = GROUP16 * (g0 + g);
            // The last group's padding rows are dropped.
            let live = (rows - r0).min(GROUP16);
            let mask: __mmask16 = if live == GROUP16 { !0 } else { (1 << live) - 1 };
            for t in 0..N {
                // SAFETY: t0 + t < n and rows r0..r0 + live lie inside `y`
                // (n * rows values), in this worker's row block.
                _mm512_mask_storeu_ps(self.y.get().add((t0 + t) * rows + r0), mask, acc[g][t]);
            }
        }
    }
}

/// Every tile of one k-block of the row block of groups `g0..g1`.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and F16C available; `k` and `sums` describe
/// buffers that cover the row block (see [`run_blocks`]), whose outputs
/// belong to this worker.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn row_block<W: Group16>(
    k: &Kernel<'_, W>,
    sums: &mut Sums<'_, __m512>,
    (g0, g1): (usize, usize),
) {
    let mut t0 = 0;
    while t0 < k.n {
        let step = (k.n - t0).min(TN);
        let mut g = g0;
        while g < g1 {
            let pair = g + TG <= g1;
            macro_rules! by_rows {
                ($g:literal) => {
                    match step {
                        1 => run_tile::<_, $g, 1>(k, sums, g, t0),
                        2 => run_tile::<_, $g, 2>(k, sums, g, t0),
                        3 => run_tile::<_, $g, 3>(k, sums, g, t0),
                        4 => run_tile::<_, $g, 4>(k, sums, g, t0),
                        5 => run_tile::<_, $g, 5>(k, sums, g, t0),
                        _ => run_tile::<_, $g, TN>(k, sums, g, t0),
                    }
                };
            }
            if pair {
                by_rows!(2);
            } else {
                by_rows!(1);
            }
            g += if pair { TG } else { 1 };
        }
        t0 += step;
    }
}

/// `y[t, r] = Σ_c w[r, c] · x[t, c]` for a matrix in a 16-row-group layout
/// (packed Q8_0, or a [`Q32`] view) and `n = x.len() / cols` activation
/// rows; the caller has checked AVX-512 F/BW/VL/VNNI (and AVX2 + FMA +
/// F16C) and the shapes (`y` holds `n * rows`). Declines (returns false) an
/// empty row length.
pub(super) fn matmul<W: Group16>(w: &W, x: &[f32], y: &mut [f32]) -> bool {
    let (rows, cols) = (w.rows(), w.cols());
    if cols == 0 {
        return false;
    }
    let nb = cols / QK;
    let n = x.len() / cols;
    debug_assert_eq!(y.len(), n * rows);
    super::with_panels(
        &ACTS,
        ACT_ZERO,
        (n, nb),
        |t, out| fill_row(x, cols, t, W::OFF, out),
        |acts| run_blocks(w, n, acts, y),
    );
    true
}

/// Every row block of one call, in parallel, on quantized activations.
fn run_blocks<W: Group16>(w: &W, n: usize, acts: &[ActBlock], y: &mut [f32]) {
    let nb = w.cols() / QK;
    let groups = w.rows().div_ceil(GROUP16);
    let gb = row_block_size(groups, TG, GB_MAX);
    let y = OutPtr(y.as_mut_ptr());
    (0..groups.div_ceil(gb)).into_par_iter().for_each(|blk| {
        let (g0, g1) = (blk * gb, ((blk + 1) * gb).min(groups));
        ACC.with(|cell| {
            let acc = &mut *cell.borrow_mut();
            // SAFETY: AVX-512F is available (checked by the caller); this
            // only makes a zero vector.
            let zero = unsafe { _mm512_setzero_ps() };
            tiles::k_blocks(acc, zero, g0..g1, n, (nb, KC), |ks, sums| {
                let k = Kernel {
                    w,
                    n,
                    acts,
                    nb,
                    s0: ks.start,
                    nkb: ks.len(),
                    y,
                };
                // SAFETY: the caller checked AVX2/FMA/F16C and AVX-512
                // F/BW/VL/VNNI; the groups hold `nb` blocks each, `acts`
                // `nb` per activation row, and the rows of groups g0..g1 of
                // `y` belong to this block alone.
                unsafe { row_block(&k, sums, (g0, g1)) };
            });
        });
    });
}
