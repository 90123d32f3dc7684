//! Q8_0 weights in the packed layout ([`PackedQ8_0`]) × Q8_0 activations on
//! AMX tiles (`tdpbsud`), with the AVX-512 kernel's integer sums and float
//! step ([`super::group16`]), so the two give the same bits.
//!
//! A packed block column of 16 weight rows ([`Qs16`]: word `j` of the 16
//! rows in 64 bytes, `w + 128`) is already the paired operand of a tile
//! multiply (8 rows of 16 × 4 unsigned bytes), so the weights are read as
//! they are. The activations, quantized per 32-value block, are packed as
//! 16 rows × 32 signed bytes per block and tile. One tile multiply gives a
//! block's 16 × 16 sums `Σ a·(w + 128)`; adding `−128·Σa` makes them exact,
//! and each goes through `acc = fma(sum, d_w·d_a, acc)` in block order.
//! The sum tiles are activation rows × weight rows, so the accumulators are
//! the AVX-512 kernel's (16 weight rows per vector) and store straight to `y`.

use super::amx::{tile_load, tile_store, tile_zero, Tile, TileConfig};
use super::row_block_size;
use crate::blocks::{F16Le, QK};
use crate::packed::q8_0::Qs16;
use crate::packed::{PackedQ8_0, GROUP16};
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
    /// `−128·Σ qs` per row: takes off what the weights' flipped sign bits add.
    nsum: [i32; T],
}

const ACT_ZERO: ActTile = ActTile {
    qs: [[0; QK]; T],
    d: [0.0; T],
    nsum: [0; T],
};

/// The activations of one call, `tile · nb + block`, reused across calls.
static ACTS: Pool<Vec<ActTile>> = Pool::new();

thread_local! {
    /// A worker's running sums: `(g − g0) · tiles + tile`, 16 vectors each
    /// (one per activation row).
    static ACC: RefCell<Vec<[__m512; T]>> = const { RefCell::new(Vec::new()) };
}

/// Whether this CPU and OS run the kernel.
pub(crate) fn available() -> bool {
    super::amx::available() && super::amx::has_int8()
}

/// Quantizes activation rows `16i..` (`x` holds `m ≤ 16` of them) into the
/// `nb` blocks of tile `i`.
fn fill_tile(x: &[f32], cols: usize, out: &mut [ActTile]) {
    let m = x.len() / cols;
    for (b, tile) in out.iter_mut().enumerate() {
        *tile = ACT_ZERO;
        for r in 0..m {
            let v = &x[r * cols + b * QK..r * cols + (b + 1) * QK];
            // SAFETY: the AMX kernel runs only where AVX-512 (and AVX2) was
            // checked besides AMX.
            let q = unsafe { super::group16::act_block(v, 128) };
            (tile.qs[r], tile.d[r], tile.nsum[r]) = (q.qs, q.d, q.extra);
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
unsafe fn start_pair<const P: usize>(w: [*const Qs16; 2], a: [*const ActTile; 2]) {
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
unsafe fn sums1(w: *const Qs16, a: *const ActTile, out: &mut Tile) {
    // SAFETY: as in `start_pair`; 1 KiB of `out`.
    unsafe {
        tile_zero!(0);
        tile_load!(4, (*a).qs.as_ptr(), 32usize);
        tile_load!(6, (*w).0.as_ptr(), 64usize);
        tile_dp_su8!(0, 4, 6);
        tile_store!(0, out.0.as_mut_ptr(), 64usize);
    }
}

/// The float step of one block for one sum tile: `acc[m] = fma(sum_m −
/// 128·Σa_m, d_w·d_a_m, acc[m])`, lanes = the group's 16 weight rows.
///
/// # Safety
/// AVX-512F and F16C available.
#[inline(always)]
unsafe fn float_step(sums: &Tile, wd: &[F16Le; GROUP16], a: &ActTile, acc: &mut [__m512; T]) {
    // SAFETY: aligned row loads inside the tile, an unaligned load of the scales.
    unsafe {
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(wd.as_ptr().cast()));
        for (m, acc_m) in acc.iter_mut().enumerate() {
            let isum = _mm512_add_epi32(
                _mm512_load_si512(sums.row(m).cast()),
                _mm512_set1_epi32(a.nsum[m]),
            );
            let dd = _mm512_mul_ps(dw, _mm512_set1_ps(a.d[m]));
            *acc_m = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), dd, *acc_m);
        }
    }
}

/// Blocks `s0..s0 + nkb` of group `g` × activation tile `i`, continuing
/// the running sums `acc` (kept in registers over the k-block).
///
/// # Safety
/// [`CFG`] is loaded; AVX-512F and F16C available; the blocks exist.
#[inline(always)]
unsafe fn k_block(
    (wq, wd): (&[Qs16], &[[F16Le; GROUP16]]),
    acts: &[ActTile],
    (s0, nkb): (usize, usize),
    acc: &mut [__m512; T],
) {
    let mut out = [Tile::ZERO; 2];
    let mut regs = *acc;
    let end = s0 + nkb;
    let pairs = nkb / 2;
    let ptrs = |b: usize| {
        (
            [&wq[b] as *const Qs16, &wq[b + 1] as *const Qs16],
            [&acts[b] as *const ActTile, &acts[b + 1] as *const ActTile],
        )
    };
    // SAFETY (of each call): blocks < end of the group and the tile; the
    // caller's features and configuration.
    unsafe {
        // Pairs of blocks alternate between sum tiles 0, 1 and 2, 3: the
        // next pair's multiplies run while this pair's float steps do.
        if pairs > 0 {
            let (w, a) = ptrs(s0);
            start_pair::<0>(w, a);
        }
        for i in 0..pairs {
            let b = s0 + 2 * i;
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
            float_step(&out[0], &wd[b], &acts[b], &mut regs);
            float_step(&out[1], &wd[b + 1], &acts[b + 1], &mut regs);
        }
        if nkb % 2 == 1 {
            let b = end - 1;
            sums1(&wq[b], &acts[b], &mut out[0]);
            float_step(&out[0], &wd[b], &acts[b], &mut regs);
        }
    }
    *acc = regs;
}

/// See [`super::group16::matmul_q8_0`]; declines (false) CPUs without AMX-INT8.
pub(crate) fn matmul(w: &PackedQ8_0, x: &[f32], y: &mut [f32]) -> bool {
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
            fill_tile(&x[t0 * cols..t1 * cols], cols, out);
        },
        |acts| run_blocks(w, n, acts, y),
    );
    true
}

/// Every row block of one call, in parallel.
fn run_blocks(w: &PackedQ8_0, n: usize, acts: &[ActTile], y: &mut [f32]) {
    let groups = w.rows().div_ceil(GROUP16);
    let gb = row_block_size(groups, 2, GB_MAX);
    let y = OutPtr(y.as_mut_ptr());
    (0..groups.div_ceil(gb)).into_par_iter().for_each(|blk| {
        let (g0, g1) = (blk * gb, ((blk + 1) * gb).min(groups));
        ACC.with(|cell| {
            let acc = &mut *cell.borrow_mut();
            // SAFETY: the caller checked AMX-INT8 (with AVX-512 F/BW/BF16
            // and F16C, `amx::available`); the groups hold `nb` blocks each,
            // `acts` `nb` per tile; rows of groups g0..g1 of `y` belong to
            // this block alone.
            unsafe { row_block(w, n, acts, (g0, g1), acc, y) };
        });
    });
}

/// Groups `g0..g1` against every activation tile.
///
/// # Safety
/// As [`run_blocks`]' call.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
unsafe fn row_block(
    w: &PackedQ8_0,
    n: usize,
    acts: &[ActTile],
    (g0, g1): (usize, usize),
    acc: &mut Vec<[__m512; T]>,
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
                // function's; the group and the tile hold `nb` blocks.
                unsafe { k_block(w.group(g), &acts[i * nb..(i + 1) * nb], (s0, nkb), slot) };
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
