//! Matrix × matrix (prefill) kernels for many activation rows at once:
//! register-tiled microkernels that reuse each loaded weight across several
//! activation rows and each activation across several weight rows, where the
//! row-at-a-time dot products of [`crate::dot`] reuse neither.
//!
//! - `kquant`: the k-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) on Q8_K
//!   activations, integer products bit-identical to [`crate::dot`];
//!   `kquant_avx512` the same sums with AVX-512 VNNI ([`Isa::Avx512`]).
//! - `legacy`: the 32-value block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//!   IQ4_NL) on Q8_0 activations; `legacy_avx512` the same with AVX-512 VNNI.
//! - `group16`: the same types in the packed layouts of 16-row groups
//!   (packed Q8_0, `PackedQ32`) with AVX-512 VNNI, read in place.
//! - `f16`: F16 and BF16 weights on f32 activations; `half_amx` the same on
//!   AMX tiles ([`Isa::Amx`], `amx` the tile instructions).
//! - On [`Isa::Amx`] also `kquant_avx512::amx` (the k-quants) and
//!   `group16_amx` (packed Q8_0 and the packed 4-bit 32-value types):
//!   AMX-INT8 tiles, the AVX-512 kernels' exact sums and float steps.
//!
//! `kquant`, `kquant_avx512`, `legacy_avx512` and `group16` run on one tile
//! driver, `tiles` (after llamafile's tinyBLAS): each gives its microkernel
//! and operands as a `tiles::Micro`, and the driver keeps the running sums
//! between k-blocks and runs the tiles.
//!
//! `try_matmul` is the entry point [`crate::matmul()`] calls; it declines
//! (returns `None`) for types, instruction sets or batch sizes without a
//! tiled kernel, and the row-at-a-time path runs instead.

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod f16;
#[cfg(target_arch = "x86_64")]
mod group16;
#[cfg(target_arch = "x86_64")]
mod group16_amx;
#[cfg(target_arch = "x86_64")]
mod half_amx;
#[cfg(target_arch = "x86_64")]
mod kquant;
#[cfg(target_arch = "x86_64")]
mod kquant_avx512;
#[cfg(target_arch = "x86_64")]
mod legacy;
#[cfg(target_arch = "x86_64")]
mod legacy_avx512;
#[cfg(target_arch = "x86_64")]
mod tiles;

use crate::isa::Isa;
#[cfg(target_arch = "x86_64")]
use crate::plan;
use crate::plan::{family, is_tiled, is_tiled_packed, Family};
use mistral_gguf::GgmlType;

/// `y[t, r] = sum_c w[r, c] * x[t, c]` with a tiled kernel, if there is one
/// for `ty` on `isa` at this batch size. Shapes must already be checked
/// (`w` holds `rows` rows of `cols`, `x` holds `n >= 1` rows, `y` `n * rows`).
/// Returns whether it ran.
pub(crate) fn try_matmul(
    ty: GgmlType,
    isa: Isa,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> bool {
    if !is_tiled(ty, isa, x.len() / cols.max(1)) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        match family(ty) {
            Some(Family::KQuant) => {
                kquant_matmul(ty, isa, kquant::KRows::Plain(w), rows, cols, x, y)
            }
            Some(Family::Legacy) => {
                legacy_matmul(ty, isa, legacy::LRows::Plain(w), (rows, cols), x, y)
            }
            Some(Family::Half) if isa == Isa::Amx && plan::half_amx_takes(rows, cols) => {
                if ty == GgmlType::F16 {
                    half_amx::matmul::<crate::dot::avx2::F16>(w, (rows, cols), x, y)
                } else {
                    half_amx::matmul::<crate::dot::avx2::BF16>(w, (rows, cols), x, y)
                }
            }
            Some(Family::Half) => {
                use f16::Micro;
                let micro = if !isa.has_avx512() {
                    Micro::Avx2
                } else if plan::bf16_pairs(ty, cols) {
                    Micro::Bf16Pairs
                } else {
                    Micro::Avx512
                };
                if ty == GgmlType::F16 {
                    f16::matmul_half::<crate::dot::avx2::F16>(w, (rows, cols), x, y, micro)
                } else {
                    f16::matmul_half::<crate::dot::avx2::BF16>(w, (rows, cols), x, y, micro)
                }
            }
            None => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (ty, w, rows, y);
        false
    }
}

/// [`try_matmul`] for a k-quant matrix regrouped by rows ([`crate::packed::Packed`]).
pub(crate) fn try_matmul_packed_kquant<B: crate::packed::GroupBlock>(
    isa: Isa,
    w: &crate::packed::Packed<B>,
    x: &[f32],
    y: &mut [f32],
) -> bool {
    use crate::blocks::ByteBlock;
    let (ty, cols) = (B::Gguf::TYPE, w.cols());
    is_tiled_packed(ty, isa, x.len() / cols.max(1)) && packed_kquant_matmul(isa, w, x, y)
}

/// The tiled k-quant kernel on a packed matrix, in `isa`'s form (declines
/// what it does not take).
fn packed_kquant_matmul<B: crate::packed::GroupBlock>(
    isa: Isa,
    w: &crate::packed::Packed<B>,
    x: &[f32],
    y: &mut [f32],
) -> bool {
    use crate::blocks::ByteBlock;
    let (ty, rows, cols) = (B::Gguf::TYPE, w.rows(), w.cols());
    #[cfg(target_arch = "x86_64")]
    {
        let any = w as &dyn std::any::Any;
        let src = if let Some(p) = any.downcast_ref::<crate::packed::PackedQ4K>() {
            kquant::KRows::PackedQ4K(p)
        } else if let Some(p) = any.downcast_ref::<crate::packed::PackedQ2K>() {
            kquant::KRows::PackedQ2K(p)
        } else {
            return false;
        };
        kquant_matmul(ty, isa, src, rows, cols, x, y)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, ty, rows, cols, x, y);
        false
    }
}

/// Test hook: [`crate::packed::Packed::matmul`] on the tiled k-quant
/// kernel reading the packed rows, in its AVX-512 form (`avx512`) or its
/// AVX2 form, at any batch size (the dispatch takes the row kernels at
/// every batch for packed Q4_K on AVX-512). `Ok(false)` where that form
/// cannot run on this CPU.
#[doc(hidden)]
pub fn matmul_packed_tiled_form<B: crate::packed::GroupBlock>(
    avx512: bool,
    w: &crate::packed::Packed<B>,
    x: &[f32],
    y: &mut [f32],
) -> crate::Result<bool> {
    let isa = if avx512 { Isa::Avx512 } else { Isa::Avx2 };
    let (rows, cols) = (w.rows(), w.cols());
    let n = crate::shared::activation_rows(rows, cols, x, y)?;
    if !isa.available() || rows == 0 || n == 0 {
        return Ok(false);
    }
    Ok(packed_kquant_matmul(isa, w, x, y))
}

/// [`try_matmul`] for a Q8_0 matrix in the packed layout.
pub(crate) fn try_matmul_packed_q8_0(
    isa: Isa,
    w: &crate::packed::PackedQ8_0,
    x: &[f32],
    y: &mut [f32],
) -> bool {
    let (rows, cols) = (w.rows(), w.cols());
    if !is_tiled_packed(GgmlType::Q8_0, isa, x.len() / cols.max(1)) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if plan::amx_q8_0(isa, x.len() / cols) && group16_amx::available() {
            group16_amx::matmul(w, x, y)
        } else if isa.has_avx512() {
            group16::matmul(w, x, y)
        } else {
            legacy::matmul(
                GgmlType::Q8_0,
                legacy::LRows::PackedQ8_0(w),
                rows,
                cols,
                x,
                y,
            )
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (rows, y);
        false
    }
}

/// [`try_matmul`] for a matrix of a 4-bit 32-value type in the packed
/// layout: on AVX-512 the kernel that reads it in place (on AMX tiles where
/// [`plan::amx_q32`] says), on AVX2 the tiled kernel expanding the packed
/// rows.
pub(crate) fn try_matmul_packed_q32(
    isa: Isa,
    w: &crate::packed::PackedQ32,
    x: &[f32],
    y: &mut [f32],
) -> bool {
    let (ty, rows, cols) = (w.ggml_type(), w.rows(), w.cols());
    if !is_tiled_packed(ty, isa, x.len() / cols.max(1)) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if isa.has_avx512() {
            let amx = plan::amx_q32(isa, x.len() / cols) && group16_amx::available();
            packed_q32_tiled(w, amx, x, y)
        } else {
            legacy_matmul(ty, isa, legacy::LRows::PackedQ32(w), (rows, cols), x, y)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (rows, y);
        false
    }
}

/// A [`crate::packed::PackedQ32`] product by `group16`'s kernel, or on AMX
/// tiles (`amx`), with the matrix read as its block type.
#[cfg(target_arch = "x86_64")]
fn packed_q32_tiled(w: &crate::packed::PackedQ32, amx: bool, x: &[f32], y: &mut [f32]) -> bool {
    use crate::blocks::{BlockIQ4NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1};
    use crate::packed::q32::Block32;
    fn typed<B: Block32>(
        w: &crate::packed::PackedQ32,
        amx: bool,
        x: &[f32],
        y: &mut [f32],
    ) -> bool {
        let q = group16::Q32::<B>::new(w);
        if amx {
            group16_amx::matmul(&q, x, y)
        } else {
            group16::matmul(&q, x, y)
        }
    }
    match w.ggml_type() {
        GgmlType::Q4_0 => typed::<BlockQ4_0>(w, amx, x, y),
        GgmlType::Q4_1 => typed::<BlockQ4_1>(w, amx, x, y),
        GgmlType::Q5_0 => typed::<BlockQ5_0>(w, amx, x, y),
        GgmlType::Q5_1 => typed::<BlockQ5_1>(w, amx, x, y),
        _ => typed::<BlockIQ4NL>(w, amx, x, y),
    }
}

/// The k-quant tiled kernel of `isa`: AVX-512 VNNI where available, else
/// AVX2.
///
/// Q3_K, Q5_K and Q6_K in the GGUF layout expand straight into the AVX-512
/// form (`kquant_avx512::expand_q3k` etc.). Through the AVX2 expansion and
/// a byte-loop conversion, as before, the AVX2 form had been faster at
/// small batches; expanded directly, the AVX-512 form wins at every tiled
/// batch (measurements: benches/journal/kernel-dispatch.md).
#[cfg(target_arch = "x86_64")]
fn kquant_matmul(
    ty: GgmlType,
    isa: Isa,
    w: kquant::KRows<'_>,
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> bool {
    if isa.has_avx512() {
        let tiles = plan::amx_kquant(ty, isa, x.len() / cols.max(1), (rows, cols))
            && kquant_avx512::amx::available();
        kquant_avx512::matmul(ty, w, (rows, cols), x, y, tiles)
    } else {
        kquant::matmul(ty, w, rows, cols, x, y)
    }
}

/// The 32-value types' tiled kernel of `isa`: its AVX-512 form where the
/// plan says so ([`plan::legacy_avx512`]), else its AVX2 form.
#[cfg(target_arch = "x86_64")]
fn legacy_matmul(
    ty: GgmlType,
    isa: Isa,
    w: legacy::LRows<'_>,
    (rows, cols): (usize, usize),
    x: &[f32],
    y: &mut [f32],
) -> bool {
    let avx512 = plan::legacy_avx512(isa, x.len() / cols.max(1));
    legacy_form(ty, avx512, w, (rows, cols), x, y)
}

/// The 32-value types' tiled kernel on weights in the GGUF layout or a
/// packed one, in its AVX-512 form (`avx512`) or its AVX2 one.
#[cfg(target_arch = "x86_64")]
fn legacy_form(
    ty: GgmlType,
    avx512: bool,
    w: legacy::LRows<'_>,
    (rows, cols): (usize, usize),
    x: &[f32],
    y: &mut [f32],
) -> bool {
    if avx512 {
        legacy_avx512::matmul(ty, w, rows, cols, x, y)
    } else {
        legacy::matmul(ty, w, rows, cols, x, y)
    }
}

/// Test hook: `y = x · wᵀ` for weights in the GGUF layout (shapes as
/// [`crate::matmul`]) on the tiled kernel of their family (k-quants or the
/// 32-value types) in its AVX-512 form (`avx512`) or its AVX2 form, at any
/// batch size, so that tests reach both forms wherever [`crate::matmul`]
/// picks the other form or a row kernel. `Ok(false)` where that form
/// cannot run on this CPU, `ty` has no such kernel or the rows are not
/// whole blocks.
#[doc(hidden)]
pub fn matmul_tiled_form(
    ty: GgmlType,
    avx512: bool,
    w: &[u8],
    (rows, cols): (usize, usize),
    x: &[f32],
    y: &mut [f32],
) -> crate::Result<bool> {
    let isa = if avx512 { Isa::Avx512 } else { Isa::Avx2 };
    let fam = family(ty);
    if !matches!(fam, Some(Family::KQuant | Family::Legacy)) || !isa.available() {
        return Ok(false);
    }
    let (_, n) = crate::shared::checked_shapes(ty, w, (rows, cols), x, y)?;
    if rows == 0 || n == 0 {
        return Ok(true);
    }
    #[cfg(target_arch = "x86_64")]
    {
        Ok(if fam == Some(Family::KQuant) {
            // `kquant_matmul` takes the AVX-512 form exactly where `isa` has it.
            kquant_matmul(ty, isa, kquant::KRows::Plain(w), rows, cols, x, y)
        } else {
            legacy_form(ty, avx512, legacy::LRows::Plain(w), (rows, cols), x, y)
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = y;
        Ok(false)
    }
}

/// Activation rows per panel of the integer kernels (one `__m256i` holds 4
/// values of each).
#[cfg(target_arch = "x86_64")]
const PANEL: usize = 8;

/// Runs `f` on the activation panels of one call: `np` panel rows of `nb`
/// blocks each, taken from `pool` (grown if short), panel row `p` filled by
/// `fill(p, blocks)` in parallel.
#[cfg(target_arch = "x86_64")]
fn with_panels<P: Clone + Send + Sync, R>(
    pool: &crate::shared::Pool<Vec<P>>,
    zero: P,
    (np, nb): (usize, usize),
    fill: impl Fn(usize, &mut [P]) + Sync,
    f: impl FnOnce(&[P]) -> R,
) -> R {
    use rayon::prelude::*;
    pool.with(|panels| {
        if panels.len() < np * nb {
            panels.resize(np * nb, zero);
        }
        let panels = &mut panels[..np * nb];
        panels
            .par_chunks_mut(nb.max(1))
            .enumerate()
            .for_each(|(p, out)| fill(p, out));
        f(panels)
    })
}

/// Rows per parallel row block: enough blocks for every thread to have
/// several, each a multiple of the tile height `tile` and at most `max`.
#[cfg(target_arch = "x86_64")]
fn row_block_size(rows: usize, tile: usize, max: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let size = rows
        .div_ceil(threads * 4)
        .next_multiple_of(tile)
        .clamp(tile, max);
    // A block count that is not a multiple of the threads leaves some
    // threads a block more than the others (576 rows in blocks of 64 on two
    // threads: 5 against 4): smaller blocks, down to half the size, that
    // make it a multiple are taken first.
    let mut s = size;
    while s >= tile && 2 * s >= size {
        if rows.div_ceil(s).is_multiple_of(threads) {
            return s;
        }
        s -= tile;
    }
    size
}

/// Stores a finished tile: `acc[r][h]` lane `c` is the output of weight row
/// `r0 + r` for activation row `(p0 + h) * PANEL + c`, `y[t * rows + row]`;
/// lanes past the `n` activation rows (panel padding) are dropped.
///
/// # Safety
/// AVX available; the rows `r0..r0 + TR` of `y` (`n * rows` values) belong to
/// the caller.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_tile<const TR: usize, const TH: usize>(
    acc: &[[std::arch::x86_64::__m256; TH]; TR],
    y: crate::shared::OutPtr,
    (rows, n): (usize, usize),
    (r0, p0): (usize, usize),
) {
    let mut lanes = [[0f32; PANEL]; TR];
    for h in 0..TH {
        for r in 0..TR {
            std::arch::x86_64::_mm256_storeu_ps(lanes[r].as_mut_ptr(), acc[r][h]);
        }
        store_lanes(&lanes, y, (rows, n), (r0, (p0 + h) * PANEL));
    }
}

/// [`store_tile`] for the AVX-512 kernels' tiles, whose panels are 16
/// activation rows (one per lane of a `__m512`).
///
/// # Safety
/// AVX-512F available; the rows `r0..r0 + TR` of `y` (`n * rows` values)
/// belong to the caller.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_tile_512<const TR: usize, const TH: usize>(
    acc: &[[std::arch::x86_64::__m512; TH]; TR],
    y: crate::shared::OutPtr,
    (rows, n): (usize, usize),
    (r0, p0): (usize, usize),
) {
    const LANES: usize = 16;
    let mut lanes = [[0f32; LANES]; TR];
    for h in 0..TH {
        for r in 0..TR {
            std::arch::x86_64::_mm512_storeu_ps(lanes[r].as_mut_ptr(), acc[r][h]);
        }
        store_lanes(&lanes, y, (rows, n), (r0, (p0 + h) * LANES));
    }
}

/// Stores one panel's outputs transposed: `lanes[r][c]` is the output of
/// weight row `r0 + r` for activation row `t0 + c`, `y[t * rows + row]`, so
/// each activation row's `TR` outputs go out as one run of adjacent values
/// (storing lane by lane instead touches a new cache line, `rows` values
/// apart, at every store). Lanes from the `n`-th activation row on (panel
/// padding) are dropped.
///
/// # Safety
/// The rows `r0..r0 + TR` of `y` (`n * rows` values) belong to the caller.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_lanes<const TR: usize, const L: usize>(
    lanes: &[[f32; L]; TR],
    y: crate::shared::OutPtr,
    (rows, n): (usize, usize),
    (r0, t0): (usize, usize),
) {
    for c in 0..L.min(n.saturating_sub(t0)) {
        let out = y.get().add((t0 + c) * rows + r0);
        for (r, l) in lanes.iter().enumerate() {
            // SAFETY: t0 + c < n and r0 + r < rows: inside `y`, in rows the
            // caller owns.
            *out.add(r) = l[c];
        }
    }
}
