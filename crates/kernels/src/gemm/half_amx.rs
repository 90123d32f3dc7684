//! F16 and BF16 weights × f32 activations on AMX tiles (`tdpbf16ps`).
//!
//! AMX multiplies bfloat16 only, so each operand is split into bfloat16
//! parts whose sum is (almost) the value:
//!
//! - BF16 weights are one part, exactly; F16 weights are two, exactly:
//!   `hi = bf16(w)` (to nearest) keeps 8 of the 11 significant bits and
//!   `lo = w − hi` has at most 3, so it is a bfloat16 as well.
//! - The f32 activations are two parts, `ah = bf16(a)` and
//!   `al = bf16(a − ah)`: 16 significant bits, a relative error of at most
//!   2⁻¹⁷ (llama.cpp rounds them to 8 bits for BF16 and 11 for F16).
//!
//! The products taken are `wh·ah + wh·al` (BF16) and `+ wl·ah` (F16); the
//! dropped `wl·al` is below 2⁻¹⁶ of the product. Each `tdpbf16ps` adds
//! into f32, so the results agree with an f32 product to about 2⁻¹⁶ of the
//! sum of |products|, not bit for bit.
//!
//! Layout: a tile multiply takes the weights as its row-major operand (16
//! weight rows × 32 values) and the activations as the paired operand (16
//! rows of 16 activation rows × 2 values), packed once per call. The output
//! tile is weight rows × activation rows and is transposed on the way to
//! `y`. Per task (a block of weight rows, in parallel) and per k-block of
//! [`KB_STEPS`] steps of 32 values, the weights are packed into contiguous
//! tiles (F16 split into its parts, BF16 copied) in a thread-local buffer;
//! the running 16 × 16 sums wait between k-blocks in another.
//!
//! Where the time goes: the tile loads, 10 per 12 multiplies for F16 (6
//! per 8 for BF16, 2 × 2 output tiles are all the eight registers allow),
//! are most of it; the k-block depth, the loop order and a prefetch of the
//! next k-block's weights made no measurable difference (measurements:
//! benches/journal/kernel-dispatch.md).

use super::amx::{
    store_transposed, tile_dp_bf16, tile_load, tile_store, tile_zero, Tile, TileConfig,
};
use crate::dot::avx2::Half;
use crate::shared::{OutPtr, Pool};
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Rows of a tile (weight rows of an A tile, activation rows of a B tile).
const T: usize = crate::plan::AMX_TILE_ROWS;
/// Values of `k` per tile step (32 bfloat16: one 64-byte tile row).
const KS: usize = crate::plan::AMX_HALF_DEPTH;
const _: () = assert!(T == 16 && KS == 32);
/// Tile steps per k-block: 512 values. The row block's packed weights
/// (`rows × 512 × 2 parts × 2 bytes` for F16) stay in L2.
const KB_STEPS: usize = 16;
/// Most weight rows per task.
const RB_MAX: usize = 128;
/// Most activation rows per pass (bounds the packed activations to
/// `X_CHUNK × cols × 4` bytes).
const X_CHUNK: usize = 512;

/// Packed activations: tile `((i * steps + s) * 2 + part)` holds part
/// `part` (0: `ah`, 1: `al`) of activation rows `16i..16i + 16`, values
/// `32s..32s + 32`, as tile row `p` = the pairs `(2p, 2p + 1)` of the 16
/// rows (zeros past the last row).
static PACKED_X: Pool<Vec<Tile>> = Pool::new();

/// A worker's buffers.
#[derive(Default)]
struct Scratch {
    /// Split F16 weights of one k-block: `((wt * steps + s) * 2 + part)`.
    w: Vec<Tile>,
    /// Running sums between k-blocks: `wt * n_tiles + i`.
    acc: Vec<Tile>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Whether the AMX kernel takes this shape: whole weight tiles and whole
/// tile steps.
pub(crate) fn takes(rows: usize, cols: usize) -> bool {
    crate::plan::half_amx_takes(rows, cols)
}

/// See [`super::try_matmul`]; declines (false) shapes [`takes`] refuses and
/// CPUs without AMX.
pub(crate) fn matmul<H: Half>(
    w: &[u8],
    (rows, cols): (usize, usize),
    x: &[f32],
    y: &mut [f32],
) -> bool {
    if !takes(rows, cols) || !x.len().is_multiple_of(cols) || !super::amx::available() {
        return false;
    }
    let n = x.len() / cols;
    if n == 0
        || Some(w.len()) != rows.checked_mul(cols).and_then(|e| e.checked_mul(2))
        || Some(y.len()) != n.checked_mul(rows)
    {
        return false;
    }
    PACKED_X.with(|xp| {
        let chunks = n.div_ceil(X_CHUNK);
        for c in 0..chunks {
            let (t0, t1) = (c * n / chunks, (c + 1) * n / chunks);
            // SAFETY: AMX and AVX-512 F/BW/BF16 are available (checked
            // above through `amx::available`); the shapes are checked.
            unsafe {
                multiply_chunk::<H>(
                    w,
                    (rows, cols),
                    &x[t0 * cols..t1 * cols],
                    &mut y[t0 * rows..t1 * rows],
                    xp,
                )
            };
        }
    });
    true
}

/// Splits 32 f32 (`v0`, `v1`: values 0..16, 16..32) into the bfloat16
/// parts `(hi, lo)`, each 32 bfloat16 in order.
#[inline(always)]
unsafe fn split(v0: __m512, v1: __m512) -> (__m512i, __m512i) {
    // SAFETY (of the block): register operations, AVX-512 F/BW/BF16 are the
    // caller's.
    unsafe {
        let hi: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(v1, v0));
        let widen =
            |h: __m256i| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)));
        let h0 = widen(_mm512_castsi512_si256(hi));
        let h1 = widen(_mm512_extracti64x4_epi64::<1>(hi));
        // Exact: the rounding error of a value to 8 significant bits.
        let (r0, r1) = (_mm512_sub_ps(v0, h0), _mm512_sub_ps(v1, h1));
        let lo: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(r1, r0));
        (hi, lo)
    }
}

/// Packs activation rows `16i..` (`m ≤ 16` of them in `x`, zeros after)
/// into the `2 × steps` tiles of `out`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512bf16")]
unsafe fn pack_x(x: &[f32], cols: usize, out: &mut [Tile]) {
    let m = x.len() / cols;
    let steps = cols / KS;
    assert!(m <= T && out.len() == 2 * steps && x.len() == m * cols);
    for s in 0..steps {
        let mut hi = [_mm512_setzero_si512(); T];
        let mut lo = [_mm512_setzero_si512(); T];
        for c in 0..m {
            // SAFETY: c < m rows of `cols` ≥ 32s + 32 values.
            let (h, l) = unsafe {
                let p = x.as_ptr().add(c * cols + KS * s);
                split(_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)))
            };
            (hi[c], lo[c]) = (h, l);
        }
        // SAFETY: register operations; then 16 aligned stores of 64 bytes
        // into each 1 KiB tile.
        unsafe {
            super::amx::transpose16(&mut hi);
            super::amx::transpose16(&mut lo);
            for (part, rows) in [hi, lo].iter().enumerate() {
                let dst = &mut out[2 * s + part];
                for (p, v) in rows.iter().enumerate() {
                    _mm512_store_si512(dst.row_mut(p).cast(), *v);
                }
            }
        }
    }
}

/// Packs weight rows `r0..r0 + 16·wts`, steps `s0..s0 + ns`, into
/// contiguous tiles `out[(wt * ns + s) * P + part]` (row `m` of a tile =
/// row `r0 + 16wt + m`): F16 split into its two bfloat16 parts (`P = 2`),
/// BF16 copied (`P = 1`). Loading tiles straight from the matrix instead
/// (16 rows `2·cols` bytes apart, one L1 set for every row) left BF16
/// slower than packed F16, its time in those loads (measurements:
/// benches/journal/kernel-dispatch.md).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512bf16")]
unsafe fn pack_w<H: Half>(
    w: &[u8],
    cols: usize,
    (r0, wts): (usize, usize),
    (s0, ns): (usize, usize),
    out: &mut [Tile],
) {
    let parts = w_parts::<H>();
    assert!(
        (r0 + T * wts) * cols * 2 <= w.len()
            && (s0 + ns) * KS <= cols
            && out.len() >= wts * ns * parts
    );
    for wt in 0..wts {
        for s in 0..ns {
            let tiles = &mut out[(wt * ns + s) * parts..][..parts];
            for m in 0..T {
                // SAFETY: row r0 + 16wt + m < r0 + 16wts, values
                // 32(s0 + s)..+32 < cols (the assert): 64 bytes of `w`; the
                // stores are row m of 1 KiB tiles, 64-byte aligned.
                unsafe {
                    let p = w
                        .as_ptr()
                        .add(2 * ((r0 + T * wt + m) * cols + KS * (s0 + s)));
                    let row = |t: &mut Tile| t.row_mut(m).cast::<__m512i>();
                    if H::IS_BF16 {
                        _mm512_store_si512(row(&mut tiles[0]), _mm512_loadu_si512(p.cast()));
                    } else {
                        let v0 = _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()));
                        let v1 = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32).cast()));
                        let (h, l) = split(v0, v1);
                        _mm512_store_si512(row(&mut tiles[0]), h);
                        _mm512_store_si512(row(&mut tiles[1]), l);
                    }
                }
            }
        }
    }
}

/// Bfloat16 parts per weight: BF16 1, F16 2.
const fn w_parts<H: Half>() -> usize {
    if H::IS_BF16 {
        1
    } else {
        2
    }
}

/// One k-block of `ns` steps for `WT × AT` tiles: the sums start from
/// `acc` (or zero) and go back to it. `WP`: weight parts (1 BF16, 2 F16).
///
/// # Safety
/// A [`TileConfig::full`] is loaded; `w[i]` (`WP` weight tiles per step)
/// and `x[i]` (2 activation tiles per step: part 0, part 1) cover `ns`
/// steps; `acc[wt][at]` are readable and writable.
#[inline(always)]
unsafe fn kblock<const WT: usize, const AT: usize, const WP: usize>(
    w: [*const Tile; 2],
    x: [*const Tile; 2],
    ns: usize,
    acc: [[*mut Tile; 2]; 2],
    first: bool,
) {
    const S: usize = 64;
    // SAFETY (of the block): the caller's contract covers every tile
    // address; the tile registers are this thread's.
    unsafe {
        if first {
            tile_zero!(0);
            if AT == 2 {
                tile_zero!(1);
            }
            if WT == 2 {
                tile_zero!(2);
                if AT == 2 {
                    tile_zero!(3);
                }
            }
        } else {
            tile_load!(0, acc[0][0], S);
            if AT == 2 {
                tile_load!(1, acc[0][1], S);
            }
            if WT == 2 {
                tile_load!(2, acc[1][0], S);
                if AT == 2 {
                    tile_load!(3, acc[1][1], S);
                }
            }
        }
        macro_rules! dp4 {
            () => {
                // The users of tmm6 first: it is reloaded first.
                tile_dp_bf16!(0, 4, 6);
                if WT == 2 {
                    tile_dp_bf16!(2, 5, 6);
                }
                if AT == 2 {
                    tile_dp_bf16!(1, 4, 7);
                    if WT == 2 {
                        tile_dp_bf16!(3, 5, 7);
                    }
                }
            };
        }
        for s in 0..ns {
            let wp = |t: usize, part: usize| w[t].add(WP * s + part);
            let xp = |t: usize, part: usize| x[t].add(2 * s + part);
            tile_load!(4, wp(0, 0), S);
            if WT == 2 {
                tile_load!(5, wp(1, 0), S);
            }
            tile_load!(6, xp(0, 0), S);
            if AT == 2 {
                tile_load!(7, xp(1, 0), S);
            }
            dp4!();
            tile_load!(6, xp(0, 1), S);
            if AT == 2 {
                tile_load!(7, xp(1, 1), S);
            }
            dp4!();
            if WP == 2 {
                tile_load!(4, wp(0, 1), S);
                if WT == 2 {
                    tile_load!(5, wp(1, 1), S);
                }
                tile_load!(6, xp(0, 0), S);
                if AT == 2 {
                    tile_load!(7, xp(1, 0), S);
                }
                dp4!();
            }
        }
        tile_store!(0, acc[0][0], S);
        if AT == 2 {
            tile_store!(1, acc[0][1], S);
        }
        if WT == 2 {
            tile_store!(2, acc[1][0], S);
            if AT == 2 {
                tile_store!(3, acc[1][1], S);
            }
        }
    }
}

/// [`matmul`] on one chunk of activation rows.
///
/// # Safety
/// AMX is usable and AVX-512 F/BW/BF16 available; the shapes are checked
/// (`takes(rows, cols)`, `w` is `rows × cols` 16-bit values, `x` holds
/// `n ≥ 1` rows, `y` `n × rows`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512bf16")]
unsafe fn multiply_chunk<H: Half>(
    w: &[u8],
    (rows, cols): (usize, usize),
    x: &[f32],
    y: &mut [f32],
    xp: &mut Vec<Tile>,
) {
    let n = x.len() / cols;
    let steps = cols / KS;
    let n_tiles = n.div_ceil(T);
    if xp.len() < n_tiles * steps * 2 {
        xp.resize(n_tiles * steps * 2, Tile::ZERO);
    }
    xp[..n_tiles * steps * 2]
        .par_chunks_mut(steps * 2)
        .enumerate()
        .for_each(|(i, out)| {
            let (t0, t1) = (T * i, (T * i + T).min(n));
            // SAFETY: the caller's CPU features; rows t0..t1 of `x`.
            unsafe { pack_x(&x[t0 * cols..t1 * cols], cols, out) };
        });
    let xp = &xp[..n_tiles * steps * 2];
    let rb = super::row_block_size(rows, T, RB_MAX);
    let out = OutPtr(y.as_mut_ptr());
    (0..rows.div_ceil(rb)).into_par_iter().for_each(|b| {
        let (r0, r1) = (b * rb, ((b + 1) * rb).min(rows));
        SCRATCH.with(|cell| {
            let mut local = Scratch::default();
            let mut borrowed = cell.try_borrow_mut();
            let scratch = match borrowed.as_mut() {
                Ok(s) => &mut **s,
                Err(_) => &mut local,
            };
            // SAFETY: the caller's CPU features and shapes; rows r0..r1 of
            // every activation row of `y` belong to this task.
            unsafe { row_block::<H>(w, (rows, cols), (r0, r1), (n, xp), out.get(), scratch) };
        });
    });
}

/// Weight rows `r0..r1` (whole tiles) against every activation row.
///
/// # Safety
/// As [`multiply_chunk`]; `xp` holds the packed activations of `n` rows;
/// columns `r0..r1` of `y` belong to the caller.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512bf16")]
unsafe fn row_block<H: Half>(
    w: &[u8],
    (rows, cols): (usize, usize),
    (r0, r1): (usize, usize),
    (n, xp): (usize, &[Tile]),
    y: *mut f32,
    scratch: &mut Scratch,
) {
    let steps = cols / KS;
    let n_tiles = n.div_ceil(T);
    let wts = (r1 - r0) / T;
    let parts = w_parts::<H>();
    if scratch.acc.len() < wts * n_tiles {
        scratch.acc.resize(wts * n_tiles, Tile::ZERO);
    }
    if scratch.w.len() < wts * KB_STEPS.min(steps) * parts {
        scratch
            .w
            .resize(wts * KB_STEPS.min(steps) * parts, Tile::ZERO);
    }
    const CFG: TileConfig = TileConfig::full();
    // SAFETY: AMX is usable (the caller's contract).
    unsafe { CFG.load() };
    let mut s0 = 0;
    while s0 < steps {
        let ns = KB_STEPS.min(steps - s0);
        let (first, last) = (s0 == 0, s0 + ns == steps);
        // SAFETY: rows r0..r1 and steps s0..s0 + ns lie inside `w`;
        // `scratch.w` holds wts · ns · parts tiles.
        unsafe { pack_w::<H>(w, cols, (r0, wts), (s0, ns), &mut scratch.w) };
        let wsrc = |wt: usize| scratch.w[wt * ns * parts..].as_ptr();
        let acc = scratch.acc.as_mut_ptr();
        // Activation pairs outer: their tiles of this k-block stay in L1
        // while the row block's weight tiles (L2) pass them.
        let mut i = 0;
        while i < n_tiles {
            let two_x = i + 1 < n_tiles;
            let i1 = if two_x { i + 1 } else { i };
            let xs = [
                xp[(i * steps + s0) * 2..].as_ptr(),
                xp[(i1 * steps + s0) * 2..].as_ptr(),
            ];
            let mut wt = 0;
            while wt < wts {
                let two_w = wt + 1 < wts;
                let ws = [wsrc(wt), wsrc((wt + 1).min(wts - 1))];
                let wt1 = if two_w { wt + 1 } else { wt };
                // SAFETY: slot indices < wts · n_tiles.
                let a = unsafe {
                    [
                        [acc.add(wt * n_tiles + i), acc.add(wt * n_tiles + i1)],
                        [acc.add(wt1 * n_tiles + i), acc.add(wt1 * n_tiles + i1)],
                    ]
                };
                // SAFETY: a full configuration is loaded; the weight and
                // activation tiles cover steps s0..s0 + ns; the sum slots
                // are this task's.
                unsafe {
                    match (two_w, two_x, parts) {
                        (true, true, 2) => kblock::<2, 2, 2>(ws, xs, ns, a, first),
                        (true, false, 2) => kblock::<2, 1, 2>(ws, xs, ns, a, first),
                        (false, true, 2) => kblock::<1, 2, 2>(ws, xs, ns, a, first),
                        (false, false, 2) => kblock::<1, 1, 2>(ws, xs, ns, a, first),
                        (true, true, _) => kblock::<2, 2, 1>(ws, xs, ns, a, first),
                        (true, false, _) => kblock::<2, 1, 1>(ws, xs, ns, a, first),
                        (false, true, _) => kblock::<1, 2, 1>(ws, xs, ns, a, first),
                        (false, false, _) => kblock::<1, 1, 1>(ws, xs, ns, a, first),
                    }
                }
                if last {
                    for (dw, wrow) in a.iter().enumerate().take(1 + two_w as usize) {
                        for (dx, slot) in wrow.iter().enumerate().take(1 + two_x as usize) {
                            let t0 = T * (i + dx);
                            // SAFETY: the slot was just written (weight
                            // rows × activation rows); rows t0..t0 + valid
                            // < n of `y`, columns of rows r0 + 16(wt + dw)..
                            // + 16 < r1.
                            unsafe {
                                let sums = (**slot).rows();
                                let at = (r0 + T * (wt + dw), t0, (n - t0).min(T));
                                store_transposed(sums, y, rows, at)
                            };
                        }
                    }
                }
                wt += 1 + two_w as usize;
            }
            i += 1 + two_x as usize;
        }
        s0 += ns;
    }
    // SAFETY: AMX is usable; nothing more runs on the tiles in this task.
    unsafe { super::amx::release() };
}
