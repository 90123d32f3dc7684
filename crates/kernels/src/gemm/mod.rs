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
//! - `f16`: F16 and BF16 weights on f32 activations; `half_amx` the same on
//!   AMX tiles ([`Isa::Amx`], `amx` the tile instructions).
//! - On [`Isa::Amx`] also `kquant_avx512::amx` (the k-quants) and `q8_0_amx`
//!   (packed Q8_0): AMX-INT8 tiles, the AVX-512 kernels' exact sums and
//!   float steps.
//!
//! `try_matmul` is the entry point [`crate::matmul()`] calls; it declines
//! (returns `None`) for types, instruction sets or batch sizes without a
//! tiled kernel, and the row-at-a-time path runs instead.

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod f16;
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
mod q8_0_amx;
#[cfg(target_arch = "x86_64")]
mod q8_0_avx512;

use crate::isa::Isa;
use mistral_gguf::GgmlType;

/// Activation rows from which the tiled kernels are used for `ty` on
/// [`Isa::Avx2`] (and as the default elsewhere: [`is_tiled`] and
/// [`is_tiled_packed`] give the per-path cut-offs). Below it the
/// row-at-a-time kernels are faster: they need no expanded weights, and the
/// k-quants, Q8_0 and F16 have four-row kernels; the other 32-value types
/// have none, so their tiled kernel wins from two rows on.
pub fn min_rows(ty: GgmlType) -> usize {
    use GgmlType as T;
    match ty {
        T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1 | T::IQ4_NL => 2,
        _ => 8,
    }
}

/// The tiled kernel family for `ty`, if it has one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    KQuant,
    Legacy,
    Half,
}

fn family(ty: GgmlType) -> Option<Family> {
    use GgmlType as T;
    match ty {
        T::Q2_K | T::Q3_K | T::Q4_K | T::Q5_K | T::Q6_K => Some(Family::KQuant),
        T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1 | T::Q8_0 | T::IQ4_NL => Some(Family::Legacy),
        T::F16 | T::BF16 => Some(Family::Half),
        _ => None,
    }
}

/// Whether a product of `n` activation rows with `ty` weights on `isa`
/// runs a tiled kernel (whose float steps may differ from the
/// row-at-a-time kernels').
pub fn is_tiled(ty: GgmlType, isa: Isa, n: usize) -> bool {
    let min = match ty {
        // The AVX-512 Q6_K four-row kernel (`dot::avx512::q6k_q8k_x4`) keeps
        // ahead of the tiled kernel up to about 12 rows: AMD Zen 4, 2
        // threads, 4096×4096, same-process alternated, GFLOP/s against
        // candle's in the same rounds, four-row vs tiled: n = 8: 184/138,
        // 202/146 vs 171/162, 201/211; n = 12: 202/170, 238/220 vs 262/210,
        // 286/244. Not measured with AMX, which keeps 8.
        GgmlType::Q6_K if isa == Isa::Avx512 => 12,
        // The 32-value types have no four-row kernel; on AVX-512 the row
        // kernels still beat the tiled kernel's AVX2 form at 2 rows (Zen 4,
        // 2 threads, 4096×4096, GFLOP/s: Q4_0 48 vs 37, Q5_1 25 vs 30,
        // IQ4_NL 55 vs 42) but not at 4 (50 vs 86, 37 vs 71, 55 vs 66).
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::IQ4_NL
            if isa.has_avx512() =>
        {
            4
        }
        _ => min_rows(ty),
    };
    isa.has_avx2() && cfg!(target_arch = "x86_64") && n >= min && family(ty).is_some()
}

/// [`is_tiled`] for a matrix in a packed layout ([`crate::packed::Packed`]).
/// Its AVX-512 matrix × vector kernels, which take 4 activation rows per
/// pass over the weights, beat the tiled kernels (which expand every weight
/// first) up to more rows than the GGUF-layout row kernels do:
/// - Q4_K (16-row groups, one `zmm` per word) at every batch: AMD Zen 4, 2
///   threads, `examples/mm_alternate` (two builds alternated twice),
///   GFLOP/s, 4-row kernel against tiled: 4096×4096 n = 64 607–609 /
///   513–515, n = 128 590–607 / 548–550, n = 512 574–611 / 603–611;
///   4096×14336 n = 512 638–644 / 572–585; 1024×4096 n = 512 591–614 /
///   506–533. (With 8-row groups in a `ymm` the tiled kernel won from 64
///   rows.)
/// - Q2_K to 128 rows (3584×1024 and 4096×4096, `examples/mm_timing`:
///   4-row kernel 342–502 GFLOP/s from n = 16 to 128, tiled 252–404 from 16
///   to 64, 465–468 at 128).
///
/// With AMX tiles the k-quants' tiled kernel takes over from 33 rows, as in
/// the plain layout (measured faster than AVX-512 there; these row kernels
/// were not measured on AMX).
///
/// Packed Q8_0 ([`crate::packed::PackedQ8_0`]) is the other way round: its
/// matrix × vector kernel takes one activation row per pass, and its tiled
/// kernel (which needs no expansion: the packed layout is its own) wins from
/// 2 rows. Zen 4, 2 threads, 4096×4096, same-process alternated with
/// candle, GFLOP/s: one row per pass 200 / 215 / 217 at n = 2 / 4 / 6
/// (candle 247 / 315 / 277), tiled 327–389 / 481–559 / 490–545 (candle
/// 194–255 / 330–337 / 300–326).
///
/// The packed 4-bit 32-value types ([`crate::packed::PackedQ32`]) take
/// their 4-row kernel below 256 rows on AVX-512 and below 16 on AVX2 (Q4_0,
/// Q4_1), then the tiled kernel, which expands the packed blocks as fast as
/// GGUF ones. Zen 4, 2 threads, `examples/mm_alternate` (GGUF layout
/// `-plain` and packed alternated), GFLOP/s, tiled on the GGUF layout /
/// packed 4-row kernel: Q4_1 4096² n = 4 106 / 418, n = 16 278 / 470,
/// n = 64 255 / 456, n = 127 320 / 430, n = 256 416 / 474, n = 511 462 /
/// 456; Q5_0 n = 127 322 / 390, n = 256 458 / 430, n = 511 540 / 435;
/// tiled on the packed rows at n = 512: Q4_1 499 (GGUF layout 494), Q5_0
/// 507 (510). AVX2, Q4_1 1536×576: n = 8 136 / 201, n = 16 216 / 212,
/// n = 32 256 / 226, n = 64 281 / 204; tiled on the packed rows n = 16–128
/// 169–241 against the GGUF layout's 169–242 in the same rounds.
pub fn is_tiled_packed(ty: GgmlType, isa: Isa, n: usize) -> bool {
    let min = match ty {
        GgmlType::Q4_K | GgmlType::Q2_K if isa == Isa::Amx => 33,
        GgmlType::Q4_K if isa.has_avx512() => usize::MAX,
        GgmlType::Q2_K if isa.has_avx512() => 128,
        GgmlType::Q8_0 if isa.has_avx512() => 2,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::IQ4_NL
            if isa.has_avx512() =>
        {
            256
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 if isa == Isa::Avx2 => 16,
        _ => min_rows(ty),
    };
    isa.has_avx2() && cfg!(target_arch = "x86_64") && family(ty).is_some() && n >= min
}

/// Whether BF16 weights of `cols` columns take the `vdpbf16ps` kernel on
/// [`Isa::Avx512`] (the CPU has AVX-512 BF16, `cols` is even).
fn bf16_pairs(ty: GgmlType, cols: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        ty == GgmlType::BF16 && cols.is_multiple_of(2) && f16::has_bf16_pairs()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (ty, cols);
        false
    }
}

/// Whether a product of `n` activation rows with a `rows × cols` matrix of
/// `ty` weights on `isa` rounds the activations to bfloat16 (to nearest
/// even) before multiplying, as llama.cpp's BF16 path does: BF16 weights on
/// [`Isa::Avx512`] where the CPU has AVX-512 BF16, in the tiled kernel
/// (`vdpbf16ps`, twice the multiply-adds of an f32 FMA), and on
/// [`Isa::Amx`] for the shapes its tile kernel declines. Every other product
/// takes the activations as f32, or in the Q8 format of
/// [`crate::ActFormat::for_weights`], or (F16/BF16 on [`Isa::Amx`]) split
/// into two bfloat16 parts that keep 16 significant bits.
pub fn rounds_activations_to_bf16(
    ty: GgmlType,
    isa: Isa,
    n: usize,
    (rows, cols): (usize, usize),
) -> bool {
    isa.has_avx512()
        && is_tiled(ty, isa, n)
        && bf16_pairs(ty, cols)
        && !(isa == Isa::Amx && amx_takes(rows, cols))
}

/// Whether this CPU and OS run the AMX tile kernels ([`Isa::Amx`]); only
/// the x86-64 instruction-set detection asks.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn amx_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        amx::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AMX F16/BF16 kernel takes a `rows × cols` matrix.
fn amx_takes(rows: usize, cols: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        half_amx::takes(rows, cols)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (rows, cols);
        false
    }
}

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
            Some(Family::Half) if isa == Isa::Amx && amx_takes(rows, cols) => {
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
                } else if bf16_pairs(ty, cols) {
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
    let n = crate::matmul::activation_rows(rows, cols, x, y)?;
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
        if isa == Isa::Amx && x.len() / cols >= AMX_MIN_ROWS_Q8_0 && q8_0_amx::available() {
            q8_0_amx::matmul(w, x, y)
        } else if isa.has_avx512() {
            q8_0_avx512::matmul(w, x, y)
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
/// layout: the tiled kernel expands the packed rows.
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
        legacy_matmul(ty, isa, legacy::LRows::PackedQ32(w), (rows, cols), x, y)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (rows, y);
        false
    }
}

/// Activation rows from which the AMX k-quant kernel runs on [`Isa::Amx`]
/// (below, the AVX-512 one). Same-binary pairs, 2 threads, GFLOP/s AVX-512
/// vs AMX: Q4_K 3584×1024 n = 16: 493 vs 384, n = 32: 628 vs 593, n = 64:
/// 770 vs 983; 2048×2048 n = 32: 592 vs 614, n = 48: 573 vs 784.
#[cfg(target_arch = "x86_64")]
const AMX_MIN_ROWS_KQUANT: usize = 33;

/// The same for packed Q8_0, whose AMX kernel gains little over the
/// AVX-512 one (the per-block float step is most of both): 4096² n = 32:
/// 927 vs 735, n = 64: 974 vs 970, n = 128: 1011 vs 988, n = 256: 969 vs 992,
/// n = 512: 877–934 vs 938–991.
#[cfg(target_arch = "x86_64")]
const AMX_MIN_ROWS_Q8_0: usize = 256;

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
        let tiles = isa == Isa::Amx
            && x.len() / cols.max(1) >= AMX_MIN_ROWS_KQUANT
            && kquant_avx512::amx::takes(ty, rows, cols)
            && kquant_avx512::amx::available();
        kquant_avx512::matmul(ty, w, (rows, cols), x, y, tiles)
    } else {
        kquant::matmul(ty, w, rows, cols, x, y)
    }
}

/// Activation rows from which the 32-value types (in the GGUF layout) run
/// the AVX-512 form of their tiled kernel; below, its AVX2 form is faster.
/// Zen 4, 2 threads, 4096×4096, GFLOP/s AVX-512 vs AVX2 form: Q4_0 n = 8:
/// 39–52 vs 137–235, 32: 147 vs 193, 64: 244 vs 252, 128: 313 vs 234, 512:
/// 481–535 vs 297–397; Q5_1 n = 32: 150 vs 252, 64: 234 vs 250, 128: 335 vs
/// 295; IQ4_NL n = 32: 158 vs 197, 64: 270 vs 209, 128: 362 vs 209.
#[cfg(target_arch = "x86_64")]
const AVX512_MIN_ROWS_LEGACY: usize = 64;

/// The 32-value types' tiled kernel of `isa`: its AVX-512 form where `isa`
/// has AVX-512 and there are [`AVX512_MIN_ROWS_LEGACY`] activation rows,
/// else its AVX2 form.
#[cfg(target_arch = "x86_64")]
fn legacy_matmul(
    ty: GgmlType,
    isa: Isa,
    w: legacy::LRows<'_>,
    (rows, cols): (usize, usize),
    x: &[f32],
    y: &mut [f32],
) -> bool {
    let avx512 = isa.has_avx512() && x.len() / cols.max(1) >= AVX512_MIN_ROWS_LEGACY;
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
    let (_, n) = crate::matmul::checked_shapes(ty, w, (rows, cols), x, y)?;
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
    pool: &crate::matmul::Pool<Vec<P>>,
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
    rows.div_ceil(threads * 4)
        .next_multiple_of(tile)
        .clamp(tile, max)
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
    y: crate::matmul::OutPtr,
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
    y: crate::matmul::OutPtr,
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
