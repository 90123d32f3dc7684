//! The dispatch plan: which layout a matrix is stored in and which kernel
//! computes a product, for a given weight type, instruction set and number
//! of activation rows `n`. Decided here and nowhere else; [`crate::gemm`],
//! [`crate::packed`], [`crate::matmul()`] and [`crate::QMatrix`] ask. The
//! measurements behind each threshold are in the lab journal
//! (`benches/journal/kernel-dispatch.md`), not here.
//!
//! | weights | layout ([`pack_kind`]) | `n` below the cut-off | from the cut-off on |
//! |---|---|---|---|
//! | Q2_K…Q6_K | GGUF | row kernels, 4-row form for Q2_K, Q4_K, Q6_K (and Q3_K, Q5_K on AVX-512) | k-quant tiles ([`is_tiled`]: 8 rows; Q6_K on AVX-512 12); AVX-512 form where the CPU has it; AMX tiles from [`AMX_MIN_ROWS_KQUANT`] |
//! | Q4_K (≥ 16 rows) | packed by 16, every ISA | 1- and 4-row packed kernels | AVX-512: always the packed kernels; AVX2: tiles from 8; AMX: tiles from 33 |
//! | Q2_K on AVX-512 | packed by 8 | 1- and 4-row packed kernels | tiles from 128 (AMX: 33) |
//! | Q8_0 | GGUF (AVX2) / packed by 16 (AVX-512) | 4-row kernel (GGUF), 1-row packed | tiles from 8 (GGUF) / 2 (packed); AMX tiles from [`AMX_MIN_ROWS_Q8_0`] |
//! | Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL | packed by 16 ([`packs_q32`]; GGUF on scalar and NEON, and for fewer than 16 rows) | packed: 1- and 4-row kernels (AVX2), 1-row kernel (AVX-512); GGUF: row kernels, 2-row on AVX-512 | packed: tiles read in place from 2 on AVX-512 (AMX tiles from [`AMX_MIN_ROWS_Q32`]), expanded from 16 (Q5_0, Q5_1: 8) on AVX2; GGUF: tiles from 2 (AVX-512: 4), AVX-512 tile form from [`AVX512_MIN_ROWS_LEGACY`] |
//! | F16, BF16 | GGUF | row kernels, 4-row form | tiles from 8: AMX (shapes of [`half_amx_takes`]), `vdpbf16ps` for BF16 on AVX-512 BF16, else FMA |
//! | IQ4_XS | GGUF | row kernels, 4-row form (AVX2, and AVX-512 where the CPU has it) | the k-quant tiles from 8 rows (AMX from [`AMX_MIN_ROWS_KQUANT`]) |
//! | the lattice i-quants | GGUF | row kernels (AVX-512 form: grid entries gathered, or with VBMI looked up for IQ2_XXS…IQ3_S), 4-row form on AVX2 and AVX-512 | (no tiled kernel: the 4-row form at every `n`) |
//!
//! Scalar and NEON run the row kernels at every `n`.

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

/// The tiled kernel family of a weight type.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// Q2_K…Q6_K on Q8_K activations, and IQ4_XS.
    KQuant,
    /// The 32-value block types on Q8_0 activations.
    Legacy,
    /// F16 and BF16 on f32 activations.
    Half,
}

/// The tiled kernel family for `ty`, if it has one.
pub(crate) fn family(ty: GgmlType) -> Option<Family> {
    use GgmlType as T;
    match ty {
        T::Q2_K | T::Q3_K | T::Q4_K | T::Q5_K | T::Q6_K | T::IQ4_XS => Some(Family::KQuant),
        T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1 | T::Q8_0 | T::IQ4_NL => Some(Family::Legacy),
        T::F16 | T::BF16 => Some(Family::Half),
        _ => None,
    }
}

/// Whether a product of `n` activation rows with `ty` weights in the GGUF
/// layout on `isa` runs a tiled kernel. The k-quants' and IQ4_XS's tiled
/// kernels give the row kernels' bits (all are the scalar kernel's); the
/// 32-value types' and F16/BF16's take their float steps in another order.
///
/// On AVX-512, Q6_K's four-row kernel keeps ahead of the tiled kernel up to
/// 12 rows, and the 32-value types' row kernels up to 4 rows.
pub fn is_tiled(ty: GgmlType, isa: Isa, n: usize) -> bool {
    let min = match ty {
        GgmlType::Q6_K if isa == Isa::Avx512 => 12,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::IQ4_NL
            if isa.has_avx512() =>
        {
            4
        }
        _ => min_rows(ty),
    };
    isa.has_avx2() && cfg!(target_arch = "x86_64") && n >= min && family(ty).is_some()
}

/// [`is_tiled`] for a matrix in a packed layout ([`crate::packed`]).
///
/// - Packed Q4_K on AVX-512: the 4-row packed kernel at every batch (it
///   beats the tiled kernel, which expands every weight first).
/// - Packed Q2_K on AVX-512: the 4-row packed kernel below 128 rows.
/// - On AMX the k-quants' tiles take over from 33 rows, as in the GGUF
///   layout.
/// - Packed Q8_0 and the packed 32-value types on AVX-512: their tiled
///   kernel reads the packed layout in place, so it wins from 2 rows.
/// - Packed Q4_0, Q4_1, IQ4_NL on AVX2: the 4-row kernel below 16 rows;
///   Q5_0, Q5_1 below 8.
pub fn is_tiled_packed(ty: GgmlType, isa: Isa, n: usize) -> bool {
    let min = match ty {
        GgmlType::Q4_K | GgmlType::Q2_K if isa == Isa::Amx => AMX_MIN_ROWS_KQUANT,
        GgmlType::Q4_K if isa.has_avx512() => usize::MAX,
        GgmlType::Q2_K if isa.has_avx512() => 128,
        GgmlType::Q8_0 if isa.has_avx512() => 2,
        ty if is_q32(ty) && isa.has_avx512() => 2,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::IQ4_NL if isa == Isa::Avx2 => 16,
        GgmlType::Q5_0 | GgmlType::Q5_1 if isa == Isa::Avx2 => 8,
        _ => min_rows(ty),
    };
    isa.has_avx2() && cfg!(target_arch = "x86_64") && family(ty).is_some() && n >= min
}

/// Activation rows from which the k-quants' tiled kernel runs on AMX tiles
/// on [`Isa::Amx`] (below, its AVX-512 form).
pub const AMX_MIN_ROWS_KQUANT: usize = 33;

/// The same for packed Q8_0: below it the AVX-512 tiles keep up with the
/// AMX ones (the per-block float step is most of both).
pub const AMX_MIN_ROWS_Q8_0: usize = 64;

/// The same for the packed 4-bit 32-value types ([`packs_q32`]), whose
/// AMX kernel expands each weight block once for every 16 activation rows
/// where the AVX-512 one unpacks it for every 6.
pub const AMX_MIN_ROWS_Q32: usize = 32;

/// Activation rows from which the 32-value types (in the GGUF layout) run
/// the AVX-512 form of their tiled kernel; below, its AVX2 form.
pub const AVX512_MIN_ROWS_LEGACY: usize = 64;

/// Rows of a weight tile of the AMX kernels (F16/BF16 and k-quants): the
/// row count of the matrices they take is a multiple of it.
pub(crate) const AMX_TILE_ROWS: usize = 16;

/// Values per AMX F16/BF16 tile step (32 bfloat16 per 64-byte tile row).
pub(crate) const AMX_HALF_DEPTH: usize = 32;

/// Whether the k-quants' tiled kernel uses AMX tiles: [`Isa::Amx`], at
/// least [`AMX_MIN_ROWS_KQUANT`] activation rows, whole weight tiles and
/// whole super-blocks (the CPU's AMX-INT8 is checked by the kernel).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn amx_kquant(ty: GgmlType, isa: Isa, n: usize, (rows, cols): (usize, usize)) -> bool {
    isa == Isa::Amx
        && n >= AMX_MIN_ROWS_KQUANT
        && family(ty) == Some(Family::KQuant)
        && rows > 0
        && rows.is_multiple_of(AMX_TILE_ROWS)
        && cols > 0
        && cols.is_multiple_of(crate::blocks::QK_K)
}

/// Whether the packed 4-bit 32-value types use AMX tiles for `n`
/// activation rows.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn amx_q32(isa: Isa, n: usize) -> bool {
    isa == Isa::Amx && n >= AMX_MIN_ROWS_Q32
}

/// Whether packed Q8_0 uses AMX tiles for `n` activation rows.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn amx_q8_0(isa: Isa, n: usize) -> bool {
    isa == Isa::Amx && n >= AMX_MIN_ROWS_Q8_0
}

/// Whether the 32-value types' tiled kernel takes its AVX-512 form.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn legacy_avx512(isa: Isa, n: usize) -> bool {
    isa.has_avx512() && n >= AVX512_MIN_ROWS_LEGACY
}

/// Whether the AMX F16/BF16 kernel takes a `rows × cols` matrix: whole
/// weight tiles and whole tile steps.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn half_amx_takes(rows: usize, cols: usize) -> bool {
    rows > 0
        && rows.is_multiple_of(AMX_TILE_ROWS)
        && cols > 0
        && cols.is_multiple_of(AMX_HALF_DEPTH)
}

/// Whether BF16 weights of `cols` columns take the `vdpbf16ps` kernel on
/// [`Isa::Avx512`] (the CPU has AVX-512 BF16, `cols` is even).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn bf16_pairs(ty: GgmlType, cols: usize) -> bool {
    ty == GgmlType::BF16 && cols.is_multiple_of(2) && crate::isa::has_avx512_bf16()
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
        && !(isa == Isa::Amx && half_amx_takes(rows, cols))
}

/// The 32-value types with 4-bit nibbles, which have a packed layout
/// ([`crate::packed::PackedQ32`]).
pub fn is_q32(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::IQ4_NL
    )
}

/// Whether [`crate::QMatrix`] holds matrices of `ty` computing on `isa` as
/// [`crate::packed::PackedQ32`]: every type of [`is_q32`] on AVX2 and
/// AVX-512, where its packed kernels are.
pub fn packs_q32(ty: GgmlType, isa: Isa) -> bool {
    is_q32(ty) && isa.has_avx2()
}

/// A packed layout ([`crate::packed`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PackKind {
    /// Q4_K by 16 rows, on every instruction set.
    Q4K,
    /// Q2_K by 8 rows, on AVX-512.
    Q2K,
    /// Q8_0 by 16 rows, on AVX-512.
    Q8_0,
    /// The 32-value 4-bit types by 16 rows ([`packs_q32`]).
    Q32,
}

impl PackKind {
    /// Rows per group of the layout.
    pub(crate) fn group(self) -> usize {
        match self {
            PackKind::Q4K | PackKind::Q8_0 | PackKind::Q32 => 16,
            PackKind::Q2K => 8,
        }
    }

    /// Whether a matrix in this layout keeps it when computing on `isa`
    /// (else it goes back to the GGUF layout).
    pub(crate) fn kept_on(self, ty: GgmlType, isa: Isa) -> bool {
        match self {
            PackKind::Q4K => true,
            PackKind::Q2K | PackKind::Q8_0 => isa.has_avx512(),
            PackKind::Q32 => packs_q32(ty, isa),
        }
    }
}

/// The packed layout [`crate::QMatrix`] stores a `rows`-row matrix of `ty`
/// in, computing on `isa` (`None`: the GGUF layout). A matrix smaller than
/// one group stays in the GGUF layout.
pub(crate) fn pack_kind(ty: GgmlType, rows: usize, isa: Isa) -> Option<PackKind> {
    let kind = match ty {
        GgmlType::Q4_K => PackKind::Q4K,
        GgmlType::Q2_K => PackKind::Q2K,
        GgmlType::Q8_0 => PackKind::Q8_0,
        ty if is_q32(ty) => PackKind::Q32,
        _ => return None,
    };
    (kind.kept_on(ty, isa) && rows >= kind.group()).then_some(kind)
}
