//! k-quant weights (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) × Q8_K activations on AMX
//! tiles (`tdpbsud`), with the same integer sums and float steps as the
//! AVX-512 kernel (its parent module), so bit-identical to the scalar kernel.
//!
//! A tile multiply sums 64 products per output, several 16- or 32-value
//! groups at once, so the per-group scales must already be in the weights:
//! each weight becomes `v = level · scale`, an exact integer of at most 13
//! bits (Q6_K: 32 · 128), split as `v = 64·hi + lo` with `lo` in 0..64 and
//! `hi` in −64..=64, both signed bytes. Each weight tile comes in those two
//! parts, and `Σ_g sc_g·Σ_{k∈g} q_k·a_k` is `64·C_hi + C_lo`, exactly, over
//! a whole super-block. The activations are the parent's panels (`a + 128`,
//! already the paired layout a tile multiply takes for its second operand),
//! so the offset correction `wcorr` and the mins (`vpdpwssd` on the panels'
//! group sums) are the parent's too.
//!
//! Per super-block and pair of activation panels: 16 tile multiplies into
//! 4 sum tiles (2 panels × 2 parts), then per weight row the parent's float
//! step on 16 activation rows at once. Sum tiles are weight rows ×
//! activation rows, as the parent's accumulators (one weight row, 16
//! activation rows per vector).

use super::super::amx::{store_transposed, tile_load, tile_store, tile_zero, Tile, TileConfig};
use super::*;

/// Weight rows per weight tile.
const WT: usize = crate::plan::AMX_TILE_ROWS;
const _: () = assert!(WT == 16);
/// Most weight rows per task.
const RB_MAX_AMX: usize = 128;

/// Whether this CPU and OS run the kernel (AMX-INT8 too).
pub(crate) fn available() -> bool {
    super::super::amx::available() && super::super::amx::has_int8()
}

/// Whether the kernel takes `ty` at this shape: a k-quant, whole weight
/// tiles, whole super-blocks.
pub(crate) fn takes(ty: GgmlType, rows: usize, cols: usize) -> bool {
    matches!(
        ty,
        GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::IQ4_XS
    ) && rows > 0
        && rows.is_multiple_of(WT)
        && cols > 0
        && cols.is_multiple_of(QK_K)
}

/// A worker's buffers: the parent's expanded weights, the same as scaled
/// tiles (`((wt · nsb + s) · 4 + chunk) · 2 + part`), and running sums
/// (`wt · np + panel`, 16 vectors each).
#[derive(Default)]
struct AmxScratch {
    parent: Scratch,
    tiles: Vec<Tile>,
    acc: Vec<[__m512; WT]>,
}

thread_local! {
    static AMX_SCRATCH: RefCell<AmxScratch> = RefCell::new(AmxScratch::default());
}

/// Scales the expanded weights of rows `rb0..rb0 + 16·wts`, super-blocks
/// `0..nsb` of the k-block (`wbuf[(r - rb0) · nsb + s]`), into the two
/// parts' tiles: tile row `m` of chunk `c` holds row `m`'s levels
/// `64c..64c + 64` times their group's scale (`group` values per group),
/// `v >> 6` in part 0 and `v & 63` in part 1.
///
/// # Safety
/// AVX-512 F/BW available.
#[target_feature(enable = "avx2,avx512f,avx512bw")]
unsafe fn scale_tiles(wbuf: &[WeightSb], group: usize, wts: usize, nsb: usize, out: &mut [Tile]) {
    assert!(wbuf.len() >= wts * WT * nsb && out.len() >= wts * nsb * 8);
    assert!(group == 16 || group == 32);
    for wt in 0..wts {
        for s in 0..nsb {
            for m in 0..WT {
                let ws = &wbuf[(wt * WT + m) * nsb + s];
                // 32 values at a time: one 32-value sub-block, or two
                // 16-value groups (scales in the two 256-bit halves).
                for j in 0..8 {
                    // SAFETY: 32 bytes of `qs` from 32j; the stores are 32
                    // bytes inside a 1 KiB tile.
                    unsafe {
                        let q = _mm512_cvtepi8_epi16(_mm256_loadu_si256(
                            ws.qs.as_ptr().add(32 * j).cast(),
                        ));
                        let (s0, s1) = if group == 32 {
                            (ws.sc[j], ws.sc[j])
                        } else {
                            (ws.sc[2 * j], ws.sc[2 * j + 1])
                        };
                        let sc = _mm512_inserti64x4::<1>(
                            _mm512_castsi256_si512(_mm256_set1_epi16(s0 as i16)),
                            _mm256_set1_epi16(s1 as i16),
                        );
                        let v = _mm512_mullo_epi16(q, sc);
                        let hi = _mm512_srai_epi16::<6>(v);
                        let lo = _mm512_and_si512(v, _mm512_set1_epi16(63));
                        let base = ((wt * nsb + s) * 4 + j / 2) * 2;
                        for (part, x) in [(0, hi), (1, lo)] {
                            let dst = out[base + part].row_mut(m).add(32 * (j % 2));
                            _mm256_store_si256(dst.cast(), _mm512_cvtepi16_epi8(x));
                        }
                    }
                }
            }
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

/// The sums of one super-block for weight tile `wt` × panels `p0..p0 + AP`:
/// tile `2h + part` = `C_part` of panel `p0 + h`, stored to `out[2h + part]`.
///
/// # Safety
/// A full configuration is loaded; `w` points at the super-block's 8 weight
/// tiles, `a[h]` at the panels.
#[inline(always)]
unsafe fn sums<const AP: usize>(w: *const Tile, a: [*const ActPanel; 2], out: &mut [Tile; 4]) {
    const S: usize = 64;
    // SAFETY: the caller's contract; the tiles are this thread's.
    unsafe {
        tile_zero!(0);
        tile_zero!(1);
        if AP == 2 {
            tile_zero!(2);
            tile_zero!(3);
        }
        for c in 0..4 {
            tile_load!(4, w.add(2 * c), S);
            tile_load!(5, w.add(2 * c + 1), S);
            tile_load!(6, (*a[0]).qs[16 * c].as_ptr(), S);
            tile_dp_su8!(0, 4, 6);
            tile_dp_su8!(1, 5, 6);
            if AP == 2 {
                tile_load!(7, (*a[1]).qs[16 * c].as_ptr(), S);
                tile_dp_su8!(2, 4, 7);
                tile_dp_su8!(3, 5, 7);
            }
        }
        tile_store!(0, out[0].0.as_mut_ptr(), S);
        tile_store!(1, out[1].0.as_mut_ptr(), S);
        if AP == 2 {
            tile_store!(2, out[2].0.as_mut_ptr(), S);
            tile_store!(3, out[3].0.as_mut_ptr(), S);
        }
    }
}

/// The parent's float step for one super-block of 16 weight rows (`ws(m)`)
/// × one panel, from the two parts' sum tiles (row `m`: weight row `m`,
/// lane: activation row): `isum = 64·C_hi + C_lo`.
///
/// # Safety
/// AVX-512 F/BW/VNNI available; `ws(m)` valid for `m < 16`.
#[inline(always)]
unsafe fn float_step<const MINS: usize>(
    (hi, lo): (&Tile, &Tile),
    ws: impl Fn(usize) -> *const WeightSb,
    ap: &ActPanel,
    acc: &mut [__m512; WT],
) {
    // SAFETY: aligned row loads inside the tiles; `ws(m)` is valid (the
    // caller's); the features are the caller's.
    unsafe {
        for (m, acc_m) in acc.iter_mut().enumerate() {
            let h = _mm512_load_si512(hi.row(m).cast());
            let l = _mm512_load_si512(lo.row(m).cast());
            let isum = _mm512_add_epi32(_mm512_slli_epi32::<6>(h), l);
            let t = super_block_term::<MINS>(isum, &*ws(m), ap);
            *acc_m = _mm512_add_ps(*acc_m, t);
        }
    }
}

/// Every row block of one call, in parallel (the parent's `run_blocks` on
/// tiles).
pub(super) fn run_blocks(
    ty: GgmlType,
    w: KRows<'_>,
    row_bytes: usize,
    dims: Dims,
    panels: &[ActPanel],
    y: &mut [f32],
) {
    let rows = dims.rows;
    // Whole weight tiles, and whole groups of the packed layout.
    const STEP: usize = if WT > GROUP { WT } else { GROUP };
    let rb = row_block_size(rows, STEP, RB_MAX_AMX);
    let y_out = OutPtr(y.as_mut_ptr());
    (0..rows.div_ceil(rb)).into_par_iter().for_each(|b| {
        let (rb0, rb1) = (b * rb, ((b + 1) * rb).min(rows));
        AMX_SCRATCH.with(|cell| {
            let scratch = &mut *cell.borrow_mut();
            // SAFETY: the caller checked AVX2/FMA/F16C, AVX-512
            // F/BW/VL/VNNI and AMX-INT8; `w` holds `rows` rows of
            // `row_bytes`; rb0 is a multiple of 16 (so of GROUP) and rb1 -
            // rb0 too (rows is); the panels cover every activation row and
            // super-block; rows rb0..rb1 of `y` belong to this block alone.
            unsafe { row_block(ty, w, (row_bytes, dims), (rb0, rb1), panels, y_out, scratch) };
        });
    });
}

/// Weight rows `rb0..rb1` against every activation panel.
///
/// # Safety
/// As [`run_blocks`]' call.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn row_block(
    ty: GgmlType,
    w: KRows<'_>,
    (row_bytes, dims): (usize, Dims),
    (rb0, rb1): (usize, usize),
    panels: &[ActPanel],
    y: OutPtr,
    scratch: &mut AmxScratch,
) {
    let Dims { rows, n, kb } = dims;
    let np = n.div_ceil(PANEL);
    let wts = (rb1 - rb0) / WT;
    let form = Form::of(ty);
    let group = if form == Form::Sub32Min { 32 } else { 16 };
    let parent = &mut scratch.parent;
    parent.reserve(w, (rb0, rb1), kb);
    if scratch.tiles.len() < wts * KC.min(kb) * 8 {
        scratch.tiles.resize(wts * KC.min(kb) * 8, Tile::ZERO);
    }
    if scratch.acc.len() < wts * np {
        scratch.acc.resize(wts * np, [_mm512_setzero_ps(); WT]);
    }
    const CFG: TileConfig = TileConfig::full();
    // SAFETY: AMX is usable (the caller's contract).
    unsafe { CFG.load() };
    let mut sums_buf = [Tile::ZERO; 4];
    for s0 in (0..kb).step_by(KC) {
        let nsb = KC.min(kb - s0);
        // SAFETY: as the parent's call: rows rb0..rb1 (whole groups),
        // super-blocks s0..s0 + nsb, buffers sized above.
        unsafe {
            expand_k_block(ty, w, (row_bytes, kb), (rb0, rb1), (s0, nsb), parent);
            scale_tiles(&parent.wbuf, group, wts, nsb, &mut scratch.tiles);
        }
        let wbuf = &parent.wbuf;
        let mut p0 = 0;
        while p0 < np {
            let two = p0 + 1 < np;
            for wt in 0..wts {
                let slot = wt * np + p0;
                if s0 == 0 {
                    scratch.acc[slot] = [_mm512_setzero_ps(); WT];
                    if two {
                        scratch.acc[slot + 1] = [_mm512_setzero_ps(); WT];
                    }
                }
                for s in 0..nsb {
                    let a = [
                        &panels[p0 * kb + s0 + s] as *const ActPanel,
                        &panels[(p0 + two as usize) * kb + s0 + s] as *const ActPanel,
                    ];
                    let wtile = scratch.tiles[(wt * nsb + s) * 8..].as_ptr();
                    // SAFETY: a configuration is loaded; 8 tiles of this
                    // super-block from `wtile`; the panels exist.
                    unsafe {
                        if two {
                            sums::<2>(wtile, a, &mut sums_buf);
                        } else {
                            sums::<1>(wtile, a, &mut sums_buf);
                        }
                    }
                    let ws = |m: usize| &wbuf[(wt * WT + m) * nsb + s] as *const WeightSb;
                    for h in 0..1 + two as usize {
                        let sums = (&sums_buf[2 * h], &sums_buf[2 * h + 1]);
                        let acc = &mut scratch.acc[slot + h];
                        // SAFETY: the features are this function's; `a[h]`
                        // points at an activation panel of `panels`.
                        unsafe {
                            let ap = &*a[h];
                            match form {
                                Form::Group16Sym => float_step::<0>(sums, ws, ap, acc),
                                Form::Sub32Min => float_step::<4>(sums, ws, ap, acc),
                                Form::Group16Min => float_step::<8>(sums, ws, ap, acc),
                            }
                        };
                    }
                }
                if s0 + nsb == kb {
                    for h in 0..1 + two as usize {
                        let t0 = (p0 + h) * PANEL;
                        let sums = scratch.acc[slot + h].map(|v| _mm512_castps_si512(v));
                        // SAFETY: activation rows t0..t0 + valid < n; rows
                        // rb0 + 16wt.. + 16 of `y` are this block's.
                        unsafe {
                            let at = (rb0 + WT * wt, t0, (n - t0).min(PANEL));
                            store_transposed(sums, y.get(), rows, at)
                        };
                    }
                }
            }
            p0 += 1 + two as usize;
        }
    }
    // SAFETY: AMX is usable; nothing more runs on the tiles in this task.
    unsafe { super::super::amx::release() };
}
