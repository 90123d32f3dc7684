//! Q8_0 weights in the packed layout ([`PackedQ8_0`]) × Q8_0 activations,
//! register-tiled with AVX-512 VNNI, read straight from the packed bytes.
//!
//! The packed layout puts word `j` (values `4j..4j + 4`) of a group's 16
//! rows in one 64-byte vector, sign bits flipped (`w + 128`, unsigned): the
//! `vpdpbusd` operand whose lanes are 16 weight rows. The activations are the
//! signed operand, 4 bytes of one activation row broadcast to every lane. A
//! tile of `TG` groups × `TN` activation rows loads each weight vector once
//! for `TN` products and each broadcast once for `TG`, with nothing expanded
//! or copied: [`super::legacy_avx512`] has to rebuild every weight block in
//! its own form first, which at a few dozen activation rows costs more than
//! the products.
//!
//! Per block and lane the sum starts at `−128·Σa` (the flip's offset, kept
//! with the activation block) so it ends at the exact `Σ w·a`; the float step
//! is [`super::legacy_avx512`]'s (`acc = fma(sum, d_w·d_a, acc)`, blocks in
//! order), so the two kernels give the same bits on the same matrix.

use super::row_block_size;
use crate::blocks::{F16Le, QK};
use crate::packed::q8_0::Qs16;
use crate::packed::{PackedQ8_0, GROUP16};
use crate::shared::{OutPtr, Pool};
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Weight groups (16 rows each) per microkernel tile.
const TG: usize = 2;
/// Activation rows per microkernel tile.
const TN: usize = 6;
/// Blocks per k-block.
const KC: usize = 8;
/// Most groups per row block.
const GB_MAX: usize = 4;

/// One block of one activation row.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(super) struct ActBlock {
    pub(super) qs: [i8; QK],
    /// The activation scale (rounded to f16, as the GGUF block stores it).
    pub(super) d: f32,
    /// `−128·Σ qs`: takes off what the weights' flipped sign bits add.
    pub(super) nsum: i32,
}

const ACT_ZERO: ActBlock = ActBlock {
    qs: [0; QK],
    d: 0.0,
    nsum: 0,
};

/// The activations of one call, reused across calls.
static ACTS: Pool<Vec<ActBlock>> = Pool::new();

thread_local! {
    /// A worker's running sums between k-blocks.
    static ACC: RefCell<Vec<__m512>> = const { RefCell::new(Vec::new()) };
}

/// Quantizes one 32-value block of activations (also the AMX kernel's,
/// [`super::q8_0_amx`]).
pub(super) fn act_block(v: &[f32]) -> ActBlock {
    let q = crate::quant::quantize_block_q8_0(v);
    let sum: i32 = q.qs.iter().map(|&v| v as i32).sum();
    ActBlock {
        qs: q.qs,
        d: q.d.to_f32(),
        nsum: -128 * sum,
    }
}

/// Quantizes activation row `t` into `out` (one block per 32 values).
fn fill_row(x: &[f32], cols: usize, t: usize, out: &mut [ActBlock]) {
    let row = &x[t * cols..(t + 1) * cols];
    for (o, v) in out.iter_mut().zip(row.chunks_exact(QK)) {
        *o = act_block(v);
    }
}

/// The microkernel: `acc[g][t] += dot(group g's 16 rows, activation row t)`
/// over `nb` blocks (`w[g]`, `wd[g]`, `a[t]` point at the first).
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and F16C available; the pointers valid for `nb`
/// elements.
#[inline(always)]
unsafe fn tile<const G: usize, const N: usize>(
    w: [*const Qs16; G],
    wd: [*const [F16Le; GROUP16]; G],
    a: [*const ActBlock; N],
    nb: usize,
    acc: &mut [[__m512; N]; G],
) {
    for b in 0..nb {
        let mut isum = [[_mm512_setzero_si512(); N]; G];
        for t in 0..N {
            let s = _mm512_set1_epi32((*a[t].add(b)).nsum);
            for g in 0..G {
                isum[g][t] = s;
            }
        }
        for j in 0..8 {
            let wv: [__m512i; G] = std::array::from_fn(|g| {
                _mm512_load_si512((*w[g].add(b)).0.as_ptr().add(64 * j) as *const __m512i)
            });
            for t in 0..N {
                let ap = (*a[t].add(b)).qs.as_ptr().add(4 * j) as *const i32;
                let av = _mm512_set1_epi32(ap.read_unaligned());
                for g in 0..G {
                    isum[g][t] = _mm512_dpbusd_epi32(isum[g][t], wv[g], av);
                }
            }
        }
        let dw: [__m512; G] = std::array::from_fn(|g| {
            _mm512_cvtph_ps(_mm256_loadu_si256(wd[g].add(b) as *const __m256i))
        });
        for t in 0..N {
            let da = _mm512_set1_ps((*a[t].add(b)).d);
            for g in 0..G {
                let dd = _mm512_mul_ps(dw[g], da);
                acc[g][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[g][t]), dd, acc[g][t]);
            }
        }
    }
}

/// One k-block of one row block: what every tile of it needs.
struct Block<'a> {
    w: &'a PackedQ8_0,
    /// Activation rows.
    n: usize,
    acts: &'a [ActBlock],
    /// Running sums between k-blocks: `(g - g0) * n + t`.
    acc: &'a mut [__m512],
    /// The row block: groups `g0..g1`.
    g0: usize,
    g1: usize,
    /// The k-block: blocks `s0..s0 + nkb`.
    s0: usize,
    nkb: usize,
    y: OutPtr,
}

/// One tile of `G` groups (`g0..`) × `N` activation rows (`t0..`) over the
/// k-block: continues the running sums (zero at the first k-block) and
/// stores them, into `y` after the last.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and F16C available; `blk` describes buffers that
/// cover the tile (see [`run_blocks`]) and rows whose outputs belong to this
/// worker.
#[inline(always)]
unsafe fn run_tile<const G: usize, const N: usize>(blk: &mut Block<'_>, g0: usize, t0: usize) {
    let (rows, n, nb) = (blk.w.rows(), blk.n, blk.w.cols() / QK);
    let slot = |g: usize, t: usize| (g0 + g - blk.g0) * n + t0 + t;
    let mut acc = [[_mm512_setzero_ps(); N]; G];
    if blk.s0 > 0 {
        for g in 0..G {
            for t in 0..N {
                acc[g][t] = blk.acc[slot(g, t)];
            }
        }
    }
    let w: [*const Qs16; G] = std::array::from_fn(|g| blk.w.group(g0 + g).0.as_ptr().add(blk.s0));
    let wd: [*const [F16Le; GROUP16]; G] =
        std::array::from_fn(|g| blk.w.group(g0 + g).1.as_ptr().add(blk.s0));
    let a: [*const ActBlock; N] =
        std::array::from_fn(|t| blk.acts.as_ptr().add((t0 + t) * nb + blk.s0));
    tile::<G, N>(w, wd, a, blk.nkb, &mut acc);
    if blk.s0 + blk.nkb < nb {
        for g in 0..G {
            for t in 0..N {
                blk.acc[slot(g, t)] = acc[g][t];
            }
        }
        return;
    }
    for g in 0..G {
        let r0 = GROUP16 * (g0 + g);
        // The last group's padding rows are dropped.
        let live = (rows - r0).min(GROUP16);
        let mask: __mmask16 = if live == GROUP16 { !0 } else { (1 << live) - 1 };
        for t in 0..N {
            // SAFETY: t0 + t < n and rows r0..r0 + live lie inside `y`
            // (n * rows values), in this worker's row block.
            _mm512_mask_storeu_ps(blk.y.get().add((t0 + t) * rows + r0), mask, acc[g][t]);
        }
    }
}

/// Every tile of one k-block of one row block.
///
/// # Safety
/// As [`run_tile`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn row_block(blk: &mut Block<'_>) {
    let mut t0 = 0;
    while t0 < blk.n {
        let left = blk.n - t0;
        let mut g0 = blk.g0;
        while g0 < blk.g1 {
            let pair = g0 + TG <= blk.g1;
            macro_rules! by_rows {
                ($g:literal) => {
                    match left.min(TN) {
                        1 => run_tile::<$g, 1>(blk, g0, t0),
                        2 => run_tile::<$g, 2>(blk, g0, t0),
                        3 => run_tile::<$g, 3>(blk, g0, t0),
                        4 => run_tile::<$g, 4>(blk, g0, t0),
                        5 => run_tile::<$g, 5>(blk, g0, t0),
                        _ => run_tile::<$g, TN>(blk, g0, t0),
                    }
                };
            }
            if pair {
                by_rows!(2);
            } else {
                by_rows!(1);
            }
            g0 += if pair { TG } else { 1 };
        }
        t0 += left.min(TN);
    }
}

/// `y[t, r] = Σ_c w[r, c] · x[t, c]` for `n = x.len() / cols` activation
/// rows; the caller has checked AVX-512 F/BW/VL/VNNI (and AVX2 + FMA +
/// F16C) and the shapes (`y` holds `n * rows`). Declines (returns false)
/// an empty row length.
pub(crate) fn matmul(w: &PackedQ8_0, x: &[f32], y: &mut [f32]) -> bool {
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
        |t, out| fill_row(x, cols, t, out),
        |acts| run_blocks(w, n, acts, y),
    );
    true
}

/// Every row block of one call, in parallel, on quantized activations.
fn run_blocks(w: &PackedQ8_0, n: usize, acts: &[ActBlock], y: &mut [f32]) {
    let nb = w.cols() / QK;
    let groups = w.rows().div_ceil(GROUP16);
    let gb = row_block_size(groups, TG, GB_MAX);
    let y = OutPtr(y.as_mut_ptr());
    (0..groups.div_ceil(gb)).into_par_iter().for_each(|blk| {
        let (g0, g1) = (blk * gb, ((blk + 1) * gb).min(groups));
        ACC.with(|cell| {
            let acc = &mut *cell.borrow_mut();
            let need = (g1 - g0) * n;
            if acc.len() < need {
                // SAFETY: AVX-512F is available (checked by the caller);
                // this only makes a zero vector.
                acc.resize(need, unsafe { _mm512_setzero_ps() });
            }
            for s0 in (0..nb).step_by(KC) {
                let mut b = Block {
                    w,
                    n,
                    acts,
                    acc,
                    g0,
                    g1,
                    s0,
                    nkb: KC.min(nb - s0),
                    y,
                };
                // SAFETY: the caller checked AVX2/FMA/F16C and AVX-512
                // F/BW/VL/VNNI; the groups hold `nb` blocks each, `acts`
                // `nb` per activation row, `acc` `(g1 - g0) * n` entries,
                // and the rows of groups g0..g1 of `y` belong to this block
                // alone.
                unsafe { row_block(&mut b) };
            }
        });
    });
}
