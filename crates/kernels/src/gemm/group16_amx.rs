//! The packed 16-row-group layouts ([`super::group16::Group16`]: packed
//! Q8_0 and the packed 4-bit 32-value types) × Q8_0 activations on AMX
//! tiles (`tdpbsud`), with [`super::group16`]'s integer sums and float step,
//! so the two give the same bits.
//!
//! A block column of a group's 16 weight rows, read as its 8 steps (step
//! `s`: levels `4s..4s + 4` of the 16 rows in 64 bytes, unsigned), is the
//! paired operand of a tile multiply (8 rows of 16 × 4 unsigned bytes).
//! Packed Q8_0 stores its blocks so ([`Group16::tiles`]) and is read in
//! place; the 4-bit types are expanded per k-block into a worker's panel,
//! once for every activation tile. The activations, quantized per 32-value
//! block, are packed as 16 rows × 32 signed bytes per block and tile. One
//! tile multiply gives a block's 16 × 16 sums `Σ a·u`; adding the row's
//! `−OFF·Σa` makes them exact, and each goes through the type's float step
//! (`group16`'s) in block order. The sum tiles are activation rows × weight
//! rows, so the accumulators are `group16`'s (16 weight rows per vector)
//! and store straight to `y`.

use super::amx::{tile_load, tile_store, tile_zero, Tile, TileConfig};
use super::group16::{act_block, Group16, Steps};
use super::row_block_size;
use crate::blocks::QK;
use crate::packed::GROUP16;
use crate::shared::{OutPtr, Pool};
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Activation rows per tile.
const T: usize = 16;
/// Blocks per k-block.
const KC: usize = 16;
/// Most weight groups (16 rows) per task.
const GB_MAX: usize = 8;

/// One block of 16 activation rows.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct ActTile {
    /// Row `m`'s 32 quants.
    qs: [[i8; QK]; T],
    /// Row scales (rounded to f16, as the GGUF block stores them).
    d: [f32; T],
    /// Per row, `group16::ActBlock::extra`: `−OFF·Σ qs`, or for the types
    /// with a min the bits of `d·Σ qs`.
    extra: [i32; T],
}

const ACT_ZERO: ActTile = ActTile {
    qs: [[0; QK]; T],
    d: [0.0; T],
    extra: [0; T],
};

/// The activations of one call, `tile · nb + block`, reused across calls.
static ACTS: Pool<Vec<ActTile>> = Pool::new();

thread_local! {
    /// A worker's running sums: `(g − g0) · tiles + tile`, 16 vectors each
    /// (one per activation row).
    static ACC: RefCell<Vec<[__m512; T]>> = const { RefCell::new(Vec::new()) };
    /// A worker's expanded weight tiles of one k-block: `(g − g0) · KC + b`.
    static PANEL: RefCell<Vec<Steps>> = const { RefCell::new(Vec::new()) };
}

/// Whether this CPU and OS run the kernel.
pub(crate) fn available() -> bool {
    super::amx::available() && super::amx::has_int8()
}

/// Quantizes activation rows `16i..` (`x` holds `m ≤ 16` of them) into the
/// `nb` blocks of tile `i`, for levels of offset `off`.
fn fill_tile(x: &[f32], cols: usize, off: i32, out: &mut [ActTile]) {
    // SAFETY: the AMX kernel runs only on `Isa::Amx`, which the caller
    // checked available, and which requires AVX-512 F/BW/VL/VNNI, AVX2 and
    // F16C besides AMX (`Isa::available`).
    unsafe { fill_tile_avx512(x, cols, off, out) }
}

/// [`fill_tile`] compiled with the quantizer's features, so that
/// [`act_block`] inlines.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
unsafe fn fill_tile_avx512(x: &[f32], cols: usize, off: i32, out: &mut [ActTile]) {
    let m = x.len() / cols;
    for (b, tile) in out.iter_mut().enumerate() {
        *tile = ACT_ZERO;
        for r in 0..m {
            let v = &x[r * cols + b * QK..r * cols + (b + 1) * QK];
            let q = act_block(v, off);
            (tile.qs[r], tile.d[r], tile.extra[r]) = (q.qs, q.d, q.extra);
        }
    }
}

/// `tdpbsud tmm$c, tmm$a, tmm$b` (signed bytes × unsigned bytes into i32;
/// safety: a configuration is loaded).
macro_rules! tile_dp_su8 {
    ($c:literal, $a:literal, $b:literal) => {
        std::arch::asm!(
            concat!("tdpbsud tmm", $c, ", tmm", $a, ", tmm", $b),
            options(nostack, nomem)
        )
    };
}

/// Tiles 0–3: sums (16 × 16 i32) of two pairs of blocks in turn; 4, 5:
/// activations (16 rows × 32 bytes); 6, 7: weights (8 rows × 64 bytes).
const CFG: TileConfig = TileConfig::new(
    [16, 16, 16, 16, 16, 16, 8, 8],
    [64, 64, 64, 64, 32, 32, 64, 64],
);

/// Starts the sums of blocks `b`, `b + 1` (`a[u]`, `w[u]`) in sum tiles
/// `2P`, `2P + 1` (zeroed first); [`store_pair`] takes them out.
///
/// # Safety
/// [`CFG`] is loaded; the pointers are valid.
#[inline(always)]
unsafe fn start_pair<const P: usize>(w: [*const Steps; 2], a: [*const ActTile; 2]) {
    // SAFETY: the caller's contract; the tiles are this thread's.
    unsafe {
        if P == 0 {
            tile_zero!(0);
            tile_zero!(1);
        } else {
            tile_zero!(2);
            tile_zero!(3);
        }
        tile_load!(4, (*a[0]).qs.as_ptr(), 32usize);
        tile_load!(6, (*w[0]).0.as_ptr(), 64usize);
        if P == 0 {
            tile_dp_su8!(0, 4, 6);
        } else {
            tile_dp_su8!(2, 4, 6);
        }
        tile_load!(5, (*a[1]).qs.as_ptr(), 32usize);
        tile_load!(7, (*w[1]).0.as_ptr(), 64usize);
        if P == 0 {
            tile_dp_su8!(1, 5, 7);
        } else {
            tile_dp_su8!(3, 5, 7);
        }
    }
}

/// Stores sum tiles `2P`, `2P + 1` to `out`.
///
/// # Safety
/// [`CFG`] is loaded.
#[inline(always)]
unsafe fn store_pair<const P: usize>(out: &mut [Tile; 2]) {
    // SAFETY: 1 KiB of `out` each; the tiles are this thread's.
    unsafe {
        if P == 0 {
            tile_store!(0, out[0].0.as_mut_ptr(), 64usize);
            tile_store!(1, out[1].0.as_mut_ptr(), 64usize);
        } else {
            tile_store!(2, out[0].0.as_mut_ptr(), 64usize);
            tile_store!(3, out[1].0.as_mut_ptr(), 64usize);
        }
    }
}

/// One block's sums (the last block of a k-block of odd length).
///
/// # Safety
/// As [`start_pair`].
#[inline(always)]
unsafe fn sums1(w: *const Steps, a: *const ActTile, out: &mut Tile) {
    // SAFETY: as in `start_pair`; 1 KiB of `out`.
    unsafe {
        tile_zero!(0);
        tile_load!(4, (*a).qs.as_ptr(), 32usize);
        tile_load!(6, (*w).0.as_ptr(), 64usize);
        tile_dp_su8!(0, 4, 6);
        tile_store!(0, out.0.as_mut_ptr(), 64usize);
    }
}

/// The float step of one block for one sum tile, `group16`'s: per
/// activation row `m` the exact sum `Σ a·u − OFF·Σ a`, then `acc[m] +=
/// sum·(d_w·d_a_m)` (plus `m_w·(d_a_m·Σ a_m)` for the types with a min)
/// where [`Group16::ROW_STEP`], else `acc[m] = fma(sum, d_w·d_a_m,
/// acc[m])`; lanes = the group's 16 weight rows.
///
/// # Safety
/// AVX-512F available.
#[inline(always)]
unsafe fn float_step<W: Group16>(
    sums: &Tile,
    (dw, mw): (__m512, __m512),
    a: &ActTile,
    acc: &mut [__m512; T],
) {
    // SAFETY: aligned row loads inside the tile.
    unsafe {
        for (m, acc_m) in acc.iter_mut().enumerate() {
            let mut isum = _mm512_load_si512(sums.row(m).cast());
            if W::OFF != 0 {
                isum = _mm512_add_epi32(isum, _mm512_set1_epi32(a.extra[m]));
            }
            let dd = _mm512_mul_ps(dw, _mm512_set1_ps(a.d[m]));
            let sumi = _mm512_cvtepi32_ps(isum);
            if W::ROW_STEP {
                let mut term = _mm512_mul_ps(sumi, dd);
                if W::MIN {
                    let sd = _mm512_set1_ps(f32::from_bits(a.extra[m] as u32));
                    term = _mm512_add_ps(term, _mm512_mul_ps(mw, sd));
                }
                *acc_m = _mm512_add_ps(*acc_m, term);
            } else {
                *acc_m = _mm512_fmadd_ps(sumi, dd, *acc_m);
            }
        }
    }
}

/// Blocks `0..nkb` of a k-block of one group (`p`: its block columns,
/// `w`: their weight tiles) × one activation tile (`a`: its blocks of the
/// k-block), continuing the running sums `acc` (kept in registers over the
/// k-block).
///
/// # Safety
/// [`CFG`] is loaded; AVX-512 F/BW and F16C available; the pointers are
/// valid for `nkb` blocks.
#[inline(always)]
unsafe fn k_block<W: Group16>(
    p: W::Ptr,
    w: *const Steps,
    a: *const ActTile,
    nkb: usize,
    acc: &mut [__m512; T],
) {
    let mut out = [Tile::ZERO; 2];
    let mut regs = *acc;
    let pairs = nkb / 2;
    // SAFETY (of each call): blocks < nkb; the caller's features and
    // configuration.
    unsafe {
        let ptrs = |b: usize| ([w.add(b), w.add(b + 1)], [a.add(b), a.add(b + 1)]);
        // Pairs of blocks alternate between sum tiles 0, 1 and 2, 3: the
        // next pair's multiplies run while this pair's float steps do.
        if pairs > 0 {
            let (w, a) = ptrs(0);
            start_pair::<0>(w, a);
        }
        for i in 0..pairs {
            let b = 2 * i;
            if i + 1 < pairs {
                let (w, a) = ptrs(b + 2);
                if i % 2 == 0 {
                    start_pair::<1>(w, a);
                } else {
                    start_pair::<0>(w, a);
                }
            }
            if i % 2 == 0 {
                store_pair::<0>(&mut out);
            } else {
                store_pair::<1>(&mut out);
            }
            float_step::<W>(&out[0], W::scales(p, b), &*a.add(b), &mut regs);
            float_step::<W>(&out[1], W::scales(p, b + 1), &*a.add(b + 1), &mut regs);
        }
        if nkb % 2 == 1 {
            let b = nkb - 1;
            sums1(w.add(b), a.add(b), &mut out[0]);
            float_step::<W>(&out[0], W::scales(p, b), &*a.add(b), &mut regs);
        }
    }
    *acc = regs;
}

/// `y[t, r] = Σ_c w[r, c] · x[t, c]` on AMX tiles (as
/// [`super::group16::matmul`]); declines (false) CPUs without AMX-INT8 and
/// an empty row length.
pub(super) fn matmul<W: Group16>(w: &W, x: &[f32], y: &mut [f32]) -> bool {
    let (rows, cols) = (w.rows(), w.cols());
    if cols == 0 || !available() {
        return false;
    }
    let nb = cols / QK;
    let n = x.len() / cols;
    let tiles = n.div_ceil(T);
    debug_assert_eq!(y.len(), n * rows);
    super::with_panels(
        &ACTS,
        ACT_ZERO,
        (tiles, nb),
        |i, out| {
            let (t0, t1) = (T * i, (T * i + T).min(n));
            fill_tile(&x[t0 * cols..t1 * cols], cols, W::OFF, out);
        },
        |acts| run_blocks(w, n, acts, y),
    );
    true
}

/// Every row block of one call, in parallel.
fn run_blocks<W: Group16>(w: &W, n: usize, acts: &[ActTile], y: &mut [f32]) {
    let groups = w.rows().div_ceil(GROUP16);
    let gb = row_block_size(groups, 2, GB_MAX);
    let y = OutPtr(y.as_mut_ptr());
    (0..groups.div_ceil(gb)).into_par_iter().for_each(|blk| {
        let (g0, g1) = (blk * gb, ((blk + 1) * gb).min(groups));
        ACC.with(|acc| {
            PANEL.with(|panel| {
                let (acc, panel) = (&mut *acc.borrow_mut(), &mut *panel.borrow_mut());
                // SAFETY: the caller checked AMX-INT8 (with AVX-512 F/BW/BF16
                // and F16C, `amx::available`); the groups hold `nb` blocks
                // each, `acts` `nb` per tile; rows of groups g0..g1 of `y`
                // belong to this block alone.
                unsafe { row_block(w, n, acts, (g0, g1), (acc, panel), y) };
            })
        });
    });
}

/// Groups `g0..g1` against every activation tile.
///
/// # Safety
/// As [`run_blocks`]' call.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
unsafe fn row_block<W: Group16>(
    w: &W,
    n: usize,
    acts: &[ActTile],
    (g0, g1): (usize, usize),
    (acc, panel): (&mut Vec<[__m512; T]>, &mut Vec<Steps>),
    y: OutPtr,
) {
    let (rows, nb) = (w.rows(), w.cols() / QK);
    let tiles = n.div_ceil(T);
    let ng = g1 - g0;
    if acc.len() < ng * tiles {
        acc.resize(ng * tiles, [_mm512_setzero_ps(); T]);
    }
    // SAFETY: AMX is usable (the caller's contract).
    unsafe { CFG.load() };
    for s0 in (0..nb).step_by(KC) {
        let nkb = KC.min(nb - s0);
        // The k-block's weight tiles, per group: in place, or expanded
        // into the panel once for all the activation tiles.
        let mut wt = [std::ptr::null::<Steps>(); GB_MAX];
        for (k, wt) in wt.iter_mut().enumerate().take(ng) {
            let p = w.at(g0 + k, s0);
            *wt = match W::tiles(p) {
                Some(t) => t,
                None => {
                    // Only the layouts that are expanded need the panel.
                    if panel.len() < ng * KC {
                        panel.resize(ng * KC, Steps([0; 512]));
                    }
                    let out = &mut panel[k * KC..k * KC + nkb];
                    for (b, t) in out.iter_mut().enumerate() {
                        for s in 0..8 {
                            // SAFETY: block `b < nkb` of the group from
                            // `s0` (the caller's contract); 64 aligned
                            // bytes of the tile.
                            unsafe {
                                let v = W::step(p, b, s);
                                _mm512_store_si512(t.0.as_mut_ptr().add(64 * s).cast(), v)
                            };
                        }
                    }
                    out.as_ptr()
                }
            };
        }
        // Activation tiles outer: a tile's k-block stays in L1 while the
        // row block's weights pass it.
        for i in 0..tiles {
            let t0 = T * i;
            for g in g0..g1 {
                let slot = &mut acc[(g - g0) * tiles + i];
                if s0 == 0 {
                    *slot = [_mm512_setzero_ps(); T];
                }
                // SAFETY: CFG is loaded and the features are this
                // function's; the group and the tile hold `nb` blocks, the
                // weight tiles the k-block's `nkb`.
                unsafe {
                    let a = acts.as_ptr().add(i * nb + s0);
                    k_block::<W>(w.at(g, s0), wt[g - g0], a, nkb, slot)
                };
                if s0 + nkb == nb {
                    let r0 = GROUP16 * g;
                    // The last group's padding rows are dropped.
                    let live = (rows - r0).min(GROUP16);
                    let mask: __mmask16 = if live == GROUP16 { !0 } else { (1 << live) - 1 };
                    for (m, v) in slot.iter().enumerate().take(n - t0) {
                        // SAFETY: t0 + m < n and rows r0..r0 + live lie
                        // inside `y` (n × rows), in this task's row block.
                        unsafe {
                            _mm512_mask_storeu_ps(y.get().add((t0 + m) * rows + r0), mask, *v)
                        };
                    }
                }
            }
        }
    }
    // SAFETY: AMX is usable; nothing more runs on the tiles in this task.
    unsafe { super::amx::release() };
}
