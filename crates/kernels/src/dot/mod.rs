//! Dot products of one weight row with one activation row, per weight type
//! and instruction set, and the activation formats they consume.

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod scalar;

use crate::blocks::*;
use crate::error::{KernelError, Result};
use crate::isa::Isa;
use crate::quant::{quantize_block_q8k, QuantizeBlock};
use mistral_gguf::GgmlType;

/// The format activations are converted to before the dot products with a
/// given weight type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActFormat {
    /// Plain f32 (F32 / F16 / BF16 weights).
    F32,
    /// Q8_0 blocks of 32 (Q4_0, Q5_0, Q8_0, IQ4_NL).
    Q8_0,
    /// Q8_1 blocks of 32 with their sums (Q4_1, Q5_1).
    Q8_1,
    /// Q8_K super-blocks of 256 with group sums (the k-quants and the
    /// 256-value i-quants).
    Q8K,
}

impl ActFormat {
    /// The activation format for weights of type `ty`, if there is a kernel.
    pub fn for_weights(ty: GgmlType) -> Option<ActFormat> {
        use GgmlType::*;
        Some(match ty {
            F32 | F16 | BF16 => ActFormat::F32,
            Q4_0 | Q5_0 | Q8_0 | IQ4_NL => ActFormat::Q8_0,
            Q4_1 | Q5_1 => ActFormat::Q8_1,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_XS => ActFormat::Q8K,
            IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ1_S => ActFormat::Q8K,
            _ => return None,
        })
    }
}

/// Whether [`row_dot`] has a kernel for weights of type `ty`.
pub fn supports_matmul(ty: GgmlType) -> bool {
    ActFormat::for_weights(ty).is_some()
}

/// Reusable buffers holding one or more quantized activation rows.
#[derive(Default)]
pub struct ActBuffers {
    pub(crate) f32: Vec<f32>,
    pub(crate) q8_0: Vec<BlockQ8_0>,
    pub(crate) q8_1: Vec<BlockQ8_1>,
    pub(crate) q8k: Vec<BlockQ8K>,
    /// Each Q8_0 block's quant sum (filled for the packed layouts' kernels).
    pub(crate) q8_0_sums: Vec<i32>,
}

/// One activation row in its kernel format.
#[derive(Clone, Copy)]
pub enum ActRow<'a> {
    F32(&'a [f32]),
    Q8_0(&'a [BlockQ8_0]),
    Q8_1(&'a [BlockQ8_1]),
    Q8K(&'a [BlockQ8K]),
}

const Q8_0_ZERO: BlockQ8_0 = BlockQ8_0 {
    d: F16Le([0, 0]),
    qs: [0; 32],
};
const Q8_1_ZERO: BlockQ8_1 = BlockQ8_1 {
    d: F16Le([0, 0]),
    s: F16Le([0, 0]),
    qs: [0; 32],
};

impl ActBuffers {
    /// Converts `n` rows of `cols` f32 values (`x.len() == n * cols`) to
    /// `fmt`, growing the buffers only when they are too small. Rows are
    /// converted in parallel when there are several.
    pub fn prepare(&mut self, fmt: ActFormat, x: &[f32], cols: usize) {
        use rayon::prelude::*;
        fn fill<B: Copy + Send + Sync>(
            buf: &mut Vec<B>,
            zero: B,
            x: &[f32],
            elems: usize,
            q: impl Fn(&[f32], &mut B) + Sync,
        ) {
            let nb = x.len() / elems;
            if buf.len() < nb {
                buf.resize(nb, zero);
            }
            let out = &mut buf[..nb];
            let per = 64usize;
            if nb <= per {
                // One chunk (a decode step): no pool round trip.
                for (b, c) in out.iter_mut().zip(x.chunks_exact(elems)) {
                    q(c, b);
                }
                return;
            }
            out.par_chunks_mut(per)
                .zip(x.par_chunks(per * elems))
                .for_each(|(bs, xs)| {
                    for (b, c) in bs.iter_mut().zip(xs.chunks_exact(elems)) {
                        q(c, b);
                    }
                });
        }
        debug_assert!(cols == 0 || x.len().is_multiple_of(cols));
        match fmt {
            ActFormat::F32 => {
                self.f32.clear();
                self.f32.extend_from_slice(x);
            }
            ActFormat::Q8_0 => fill(&mut self.q8_0, Q8_0_ZERO, x, 32, |c, b| {
                *b = crate::quant::quantize_block_q8_0(c)
            }),
            ActFormat::Q8_1 => fill(&mut self.q8_1, Q8_1_ZERO, x, 32, |c, b| {
                *b = BlockQ8_1::quantize(c)
            }),
            ActFormat::Q8K => fill(&mut self.q8k, BlockQ8K::ZERO, x, QK_K, quantize_block_q8k),
        }
    }

    /// [`ActBuffers::prepare`] in [`ActFormat::Q8_0`], and each block's
    /// quant sum in `q8_0_sums` (the packed layouts' kernels take `Σ a`
    /// off once per block for all rows).
    pub(crate) fn prepare_q8_0_with_sums(&mut self, x: &[f32], cols: usize) {
        self.prepare(ActFormat::Q8_0, x, cols);
        let nb = x.len() / 32;
        self.q8_0_sums.clear();
        self.q8_0_sums.extend(
            self.q8_0[..nb]
                .iter()
                .map(|b| b.qs.iter().map(|&q| q as i32).sum::<i32>()),
        );
    }

    /// Row `t` of the prepared activations (rows of `cols` elements).
    pub fn row(&self, fmt: ActFormat, cols: usize, t: usize) -> ActRow<'_> {
        match fmt {
            ActFormat::F32 => ActRow::F32(&self.f32[t * cols..(t + 1) * cols]),
            ActFormat::Q8_0 => ActRow::Q8_0(&self.q8_0[t * cols / 32..(t + 1) * cols / 32]),
            ActFormat::Q8_1 => ActRow::Q8_1(&self.q8_1[t * cols / 32..(t + 1) * cols / 32]),
            ActFormat::Q8K => ActRow::Q8K(&self.q8k[t * cols / QK_K..(t + 1) * cols / QK_K]),
        }
    }
}

macro_rules! typed {
    ($w:expr, $B:ty) => {
        match cast_blocks::<$B>($w) {
            Ok(b) => b,
            Err(e) => return Err(e),
        }
    };
}

/// [`row_dot`] of two weight rows against one activation row in one pass
/// (the activation loaded and its sums taken once): the AVX-512 kernels of
/// the 32-value types. The results equal two [`row_dot`] calls; `Ok(None)`
/// where there is no such kernel.
pub fn row_dot2(
    ty: GgmlType,
    isa: Isa,
    w: [&[u8]; 2],
    act: ActRow<'_>,
) -> Result<Option<[f32; 2]>> {
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx512() {
        use GgmlType as T;
        macro_rules! two {
            ($name:ident, $B:ty, $a:expr) => {{
                let w = [typed!(w[0], $B), typed!(w[1], $B)];
                // SAFETY: as in `row_dot`'s AVX-512 arm (`isa` checked
                // available by the caller); the kernel reads the blocks all
                // three slices have.
                return Ok(Some(unsafe { avx512::$name(w, $a) }));
            }};
        }
        match (ty, act) {
            (T::Q4_0, ActRow::Q8_0(a)) => two!(q4_0_q8_0_x2, BlockQ4_0, a),
            (T::Q5_0, ActRow::Q8_0(a)) => two!(q5_0_q8_0_x2, BlockQ5_0, a),
            (T::IQ4_NL, ActRow::Q8_0(a)) => two!(iq4_nl_q8_0_x2, BlockIQ4NL, a),
            (T::Q4_1, ActRow::Q8_1(a)) => two!(q4_1_q8_1_x2, BlockQ4_1, a),
            (T::Q5_1, ActRow::Q8_1(a)) => two!(q5_1_q8_1_x2, BlockQ5_1, a),
            _ => {}
        }
    }
    let _ = (ty, isa, w, act);
    Ok(None)
}

/// Dot product of one weight row (`w`: the row's bytes, type `ty`) with one
/// activation row in the matching format, on instruction set `isa` (which
/// the caller must have checked is available: [`Isa::checked`]).
pub fn row_dot(ty: GgmlType, isa: Isa, w: &[u8], act: ActRow<'_>) -> Result<f32> {
    use GgmlType as T;
    let mismatch = || KernelError::Shape {
        op: "row_dot",
        detail: format!("{ty} weights with the wrong activation format"),
    };
    #[cfg(target_arch = "aarch64")]
    if isa.is_neon() {
        if let Some(v) = neon_row_dot(ty, isa == Isa::NeonDot, w, act)? {
            return Ok(v);
        }
    }
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx512() {
        macro_rules! avx512 {
            ($name:ident, $B:ty, $a:expr) => {{
                let wb = typed!(w, $B);
                // SAFETY: `isa` is Avx512 or Amx only when the caller
                // checked the CPU has AVX-512 F/BW/VL/VNNI, AVX2, FMA and
                // F16C (`Isa::available`), a `_gfni` kernel is only named
                // after `has_gfni` and a `_vbmi` one after `has_vbmi` (the
                // arms below); the kernel reads min(wb.len(), a.len())
                // blocks of each slice.
                return Ok(unsafe { avx512::$name(wb, $a) });
            }};
            // A kernel with a GFNI form: that one where the CPU has GFNI.
            ($name:ident, $gfni:ident, $B:ty, $a:expr) => {{
                if avx512::has_gfni() {
                    avx512!($gfni, $B, $a)
                }
                avx512!($name, $B, $a)
            }};
            // A kernel with a VBMI form: that one where the CPU has VBMI.
            ($name:ident, vbmi $vbmi:ident, $B:ty, $a:expr) => {{
                if avx512::has_vbmi() {
                    avx512!($vbmi, $B, $a)
                }
                avx512!($name, $B, $a)
            }};
        }
        match (ty, act) {
            (T::Q4_0, ActRow::Q8_0(a)) => avx512!(q4_0_q8_0, BlockQ4_0, a),
            (T::Q5_0, ActRow::Q8_0(a)) => avx512!(q5_0_q8_0, BlockQ5_0, a),
            (T::Q4_1, ActRow::Q8_1(a)) => avx512!(q4_1_q8_1, BlockQ4_1, a),
            (T::IQ4_NL, ActRow::Q8_0(a)) => avx512!(iq4_nl_q8_0, BlockIQ4NL, a),
            (T::Q5_1, ActRow::Q8_1(a)) => avx512!(q5_1_q8_1, BlockQ5_1, a),
            (T::Q2_K, ActRow::Q8K(a)) => avx512!(q2k_q8k, BlockQ2K, a),
            (T::Q3_K, ActRow::Q8K(a)) => avx512!(q3k_q8k, q3k_q8k_gfni, BlockQ3K, a),
            (T::Q5_K, ActRow::Q8K(a)) => avx512!(q5k_q8k, q5k_q8k_gfni, BlockQ5K, a),
            (T::Q6_K, ActRow::Q8K(a)) => avx512!(q6k_q8k, q6k_q8k_gfni, BlockQ6K, a),
            (T::IQ4_XS, ActRow::Q8K(a)) => avx512!(iq4_xs_q8k, BlockIQ4XS, a),
            (T::IQ2_XXS, ActRow::Q8K(a)) => {
                avx512!(iq2_xxs_q8k, vbmi iq2_xxs_q8k_vbmi, BlockIQ2XXS, a)
            }
            (T::IQ2_XS, ActRow::Q8K(a)) => avx512!(iq2_xs_q8k, vbmi iq2_xs_q8k_vbmi, BlockIQ2XS, a),
            (T::IQ2_S, ActRow::Q8K(a)) => avx512!(iq2_s_q8k, vbmi iq2_s_q8k_vbmi, BlockIQ2S, a),
            (T::IQ3_XXS, ActRow::Q8K(a)) => {
                avx512!(iq3_xxs_q8k, vbmi iq3_xxs_q8k_vbmi, BlockIQ3XXS, a)
            }
            (T::IQ3_S, ActRow::Q8K(a)) => avx512!(iq3_s_q8k, vbmi iq3_s_q8k_vbmi, BlockIQ3S, a),
            (T::IQ1_S, ActRow::Q8K(a)) => avx512!(iq1_s_q8k, BlockIQ1S, a),
            _ => {}
        }
    }
    let avx2 = isa.has_avx2() && cfg!(target_arch = "x86_64");
    macro_rules! pick {
        ($name:ident, $B:ty, $a:expr) => {{
            let wb = typed!(w, $B);
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: `isa` is Avx2 or Avx512 only when the caller checked the CPU
                // has AVX2, FMA and F16C (`Isa::available`); the kernel only
                // reads inside the block slices it is given.
                return Ok(unsafe { avx2::$name(wb, $a) });
            }
            let _ = avx2;
            Ok(scalar::$name(wb, $a))
        }};
    }
    match (ty, act) {
        (T::Q4_0, ActRow::Q8_0(a)) => pick!(q4_0_q8_0, BlockQ4_0, a),
        (T::Q4_1, ActRow::Q8_1(a)) => pick!(q4_1_q8_1, BlockQ4_1, a),
        (T::Q5_0, ActRow::Q8_0(a)) => pick!(q5_0_q8_0, BlockQ5_0, a),
        (T::Q5_1, ActRow::Q8_1(a)) => pick!(q5_1_q8_1, BlockQ5_1, a),
        (T::Q8_0, ActRow::Q8_0(a)) => pick!(q8_0_q8_0, BlockQ8_0, a),
        (T::IQ4_NL, ActRow::Q8_0(a)) => pick!(iq4_nl_q8_0, BlockIQ4NL, a),
        (T::Q2_K, ActRow::Q8K(a)) => pick!(q2k_q8k, BlockQ2K, a),
        (T::Q3_K, ActRow::Q8K(a)) => pick!(q3k_q8k, BlockQ3K, a),
        (T::Q4_K, ActRow::Q8K(a)) => pick!(q4k_q8k, BlockQ4K, a),
        (T::Q5_K, ActRow::Q8K(a)) => pick!(q5k_q8k, BlockQ5K, a),
        (T::Q6_K, ActRow::Q8K(a)) => pick!(q6k_q8k, BlockQ6K, a),
        (T::IQ4_XS, ActRow::Q8K(a)) => pick!(iq4_xs_q8k, BlockIQ4XS, a),
        (T::IQ2_XXS, ActRow::Q8K(a)) => pick!(iq2_xxs_q8k, BlockIQ2XXS, a),
        (T::IQ2_XS, ActRow::Q8K(a)) => pick!(iq2_xs_q8k, BlockIQ2XS, a),
        (T::IQ2_S, ActRow::Q8K(a)) => pick!(iq2_s_q8k, BlockIQ2S, a),
        (T::IQ3_XXS, ActRow::Q8K(a)) => pick!(iq3_xxs_q8k, BlockIQ3XXS, a),
        (T::IQ3_S, ActRow::Q8K(a)) => pick!(iq3_s_q8k, BlockIQ3S, a),
        (T::IQ1_S, ActRow::Q8K(a)) => pick!(iq1_s_q8k, BlockIQ1S, a),
        (T::F16, ActRow::F32(a)) => {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: as above; the kernel reads min(w.len()/2, a.len())
                // elements from both slices.
                return Ok(unsafe { avx2::f16_f32(w, a) });
            }
            Ok(scalar::f16_f32(w, a))
        }
        (T::BF16, ActRow::F32(a)) => {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: as for F16.
                return Ok(unsafe { avx2::bf16_f32(w, a) });
            }
            Ok(scalar::bf16_f32(w, a))
        }
        (T::F32, ActRow::F32(a)) => Ok(scalar::f32_f32(w, a)),
        _ => Err(if supports_matmul(ty) {
            mismatch()
        } else {
            KernelError::Unsupported { ty, op: "matmul" }
        }),
    }
}

/// [`row_dot`] on the AArch64 paths (`dot`: with `sdot`); `Ok(None)` for
/// the types without a NEON kernel, which take the scalar one.
#[cfg(target_arch = "aarch64")]
fn neon_row_dot(ty: GgmlType, dot: bool, w: &[u8], act: ActRow<'_>) -> Result<Option<f32>> {
    use GgmlType as T;
    macro_rules! pick {
        ($plain:ident, $dot:ident, $B:ty, $a:expr) => {{
            let wb = typed!(w, $B);
            // SAFETY: the caller checked that `Isa::Neon` (or, for `dot`,
            // `Isa::NeonDot`) is available (`Isa::checked`); the kernels
            // read only inside the block slices they are given.
            Ok(Some(unsafe {
                if dot {
                    neon::$dot(wb, $a)
                } else {
                    neon::$plain(wb, $a)
                }
            }))
        }};
    }
    match (ty, act) {
        (T::Q4_0, ActRow::Q8_0(a)) => pick!(q4_0_q8_0, q4_0_q8_0_dot, BlockQ4_0, a),
        (T::Q4_1, ActRow::Q8_1(a)) => pick!(q4_1_q8_1, q4_1_q8_1_dot, BlockQ4_1, a),
        (T::Q5_0, ActRow::Q8_0(a)) => pick!(q5_0_q8_0, q5_0_q8_0_dot, BlockQ5_0, a),
        (T::Q5_1, ActRow::Q8_1(a)) => pick!(q5_1_q8_1, q5_1_q8_1_dot, BlockQ5_1, a),
        (T::Q8_0, ActRow::Q8_0(a)) => pick!(q8_0_q8_0, q8_0_q8_0_dot, BlockQ8_0, a),
        (T::IQ4_NL, ActRow::Q8_0(a)) => pick!(iq4_nl_q8_0, iq4_nl_q8_0_dot, BlockIQ4NL, a),
        (T::Q2_K, ActRow::Q8K(a)) => pick!(q2k_q8k, q2k_q8k_dot, BlockQ2K, a),
        (T::Q3_K, ActRow::Q8K(a)) => pick!(q3k_q8k, q3k_q8k_dot, BlockQ3K, a),
        (T::Q4_K, ActRow::Q8K(a)) => pick!(q4k_q8k, q4k_q8k_dot, BlockQ4K, a),
        (T::Q5_K, ActRow::Q8K(a)) => pick!(q5k_q8k, q5k_q8k_dot, BlockQ5K, a),
        (T::Q6_K, ActRow::Q8K(a)) => pick!(q6k_q8k, q6k_q8k_dot, BlockQ6K, a),
        (T::IQ4_XS, ActRow::Q8K(a)) => pick!(iq4_xs_q8k, iq4_xs_q8k_dot, BlockIQ4XS, a),
        (T::IQ2_XXS, ActRow::Q8K(a)) => pick!(iq2_xxs_q8k, iq2_xxs_q8k_dot, BlockIQ2XXS, a),
        (T::IQ2_XS, ActRow::Q8K(a)) => pick!(iq2_xs_q8k, iq2_xs_q8k_dot, BlockIQ2XS, a),
        (T::IQ2_S, ActRow::Q8K(a)) => pick!(iq2_s_q8k, iq2_s_q8k_dot, BlockIQ2S, a),
        (T::IQ3_XXS, ActRow::Q8K(a)) => pick!(iq3_xxs_q8k, iq3_xxs_q8k_dot, BlockIQ3XXS, a),
        (T::IQ3_S, ActRow::Q8K(a)) => pick!(iq3_s_q8k, iq3_s_q8k_dot, BlockIQ3S, a),
        (T::IQ1_S, ActRow::Q8K(a)) => pick!(iq1_s_q8k, iq1_s_q8k_dot, BlockIQ1S, a),
        // SAFETY: NEON was checked available as above; the kernels read
        // min(w.len() / 2, a.len()) values of both slices.
        (T::F16, ActRow::F32(a)) => Ok(Some(unsafe { neon::f16_f32(w, a) })),
        (T::BF16, ActRow::F32(a)) => Ok(Some(unsafe { neon::bf16_f32(w, a) })),
        _ => Ok(None),
    }
}

/// Four activation rows against one weight row, where a fused kernel exists
/// for `(ty, isa)` (`Ok(None)` otherwise: call [`row_dot`] per row). Results
/// are bit-identical to four [`row_dot`] calls.
pub fn row_dot4(
    ty: GgmlType,
    isa: Isa,
    w: &[u8],
    acts: [ActRow<'_>; 4],
) -> Result<Option<[f32; 4]>> {
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        use ActRow as A;
        use GgmlType as T;
        macro_rules! q8k4 {
            ($name:ident, $B:ty) => {
                q8k4!(avx2, $name, $B)
            };
            ($isa:ident, $name:ident, $B:ty) => {{
                let wb = typed!(w, $B);
                if let [A::Q8K(a0), A::Q8K(a1), A::Q8K(a2), A::Q8K(a3)] = acts {
                    if [a0.len(), a1.len(), a2.len(), a3.len()]
                        .iter()
                        .all(|&l| l >= wb.len())
                    {
                        // SAFETY: Avx2 was checked available by the caller
                        // (`Isa::checked`), and AVX-512 F/BW/VL/VNNI where
                        // `$isa` is `avx512` (only under `isa.has_avx512()`),
                        // VBMI too for a `_vbmi` kernel (after `has_vbmi`),
                        // GFNI for a `_gfni` one (after `has_gfni`);
                        // every activation row has at least as many blocks as
                        // the weight row, which is all the kernel reads.
                        return Ok(Some(unsafe { $isa::$name(wb, [a0, a1, a2, a3]) }));
                    }
                }
                Ok(None)
            }};
        }
        // The AVX-512 four-row forms of the lattice i-quants, IQ4_XS, Q3_K
        // and Q5_K (bit-identical to the AVX2 ones, as all are to the
        // scalar kernels).
        if isa.has_avx512() {
            match ty {
                T::IQ4_XS => return q8k4!(avx512, iq4_xs_q8k_x4, BlockIQ4XS),
                T::Q3_K if avx512::has_gfni() => return q8k4!(avx512, q3k_q8k_x4_gfni, BlockQ3K),
                T::Q3_K => return q8k4!(avx512, q3k_q8k_x4, BlockQ3K),
                T::Q5_K if avx512::has_gfni() => return q8k4!(avx512, q5k_q8k_x4_gfni, BlockQ5K),
                T::Q5_K => return q8k4!(avx512, q5k_q8k_x4, BlockQ5K),
                T::IQ2_XXS if avx512::has_vbmi() => {
                    return q8k4!(avx512, iq2_xxs_q8k_x4_vbmi, BlockIQ2XXS)
                }
                T::IQ2_XXS => return q8k4!(avx512, iq2_xxs_q8k_x4, BlockIQ2XXS),
                T::IQ2_XS if avx512::has_vbmi() => {
                    return q8k4!(avx512, iq2_xs_q8k_x4_vbmi, BlockIQ2XS)
                }
                T::IQ2_XS => return q8k4!(avx512, iq2_xs_q8k_x4, BlockIQ2XS),
                T::IQ2_S if avx512::has_vbmi() => {
                    return q8k4!(avx512, iq2_s_q8k_x4_vbmi, BlockIQ2S)
                }
                T::IQ2_S => return q8k4!(avx512, iq2_s_q8k_x4, BlockIQ2S),
                T::IQ3_XXS if avx512::has_vbmi() => {
                    return q8k4!(avx512, iq3_xxs_q8k_x4_vbmi, BlockIQ3XXS)
                }
                T::IQ3_XXS => return q8k4!(avx512, iq3_xxs_q8k_x4, BlockIQ3XXS),
                T::IQ3_S if avx512::has_vbmi() => {
                    return q8k4!(avx512, iq3_s_q8k_x4_vbmi, BlockIQ3S)
                }
                T::IQ3_S => return q8k4!(avx512, iq3_s_q8k_x4, BlockIQ3S),
                T::IQ1_S => return q8k4!(avx512, iq1_s_q8k_x4, BlockIQ1S),
                _ => {}
            }
        }
        return match ty {
            T::Q4_K => q8k4!(q4k_q8k_x4, BlockQ4K),
            // On AVX-512 Q6_K takes its own four-row form (faster; every
            // k-quant kernel gives the scalar kernel's bits, so the forms mix
            // freely).
            T::Q6_K if isa.has_avx512() => {
                let wb = typed!(w, BlockQ6K);
                if let [A::Q8K(a0), A::Q8K(a1), A::Q8K(a2), A::Q8K(a3)] = acts {
                    if [a0.len(), a1.len(), a2.len(), a3.len()]
                        .iter()
                        .all(|&l| l >= wb.len())
                    {
                        let a = [a0, a1, a2, a3];
                        // SAFETY: AVX-512 F/BW/VL/VNNI with AVX2, FMA and
                        // F16C checked by the caller (`Isa::checked`), GFNI
                        // just here; every activation row has at least as
                        // many blocks as the weight row, which is all the
                        // kernels read.
                        return Ok(Some(unsafe {
                            if avx512::has_gfni() {
                                avx512::q6k_q8k_x4_gfni(wb, a)
                            } else {
                                avx512::q6k_q8k_x4(wb, a)
                            }
                        }));
                    }
                }
                Ok(None)
            }
            T::Q6_K => q8k4!(q6k_q8k_x4, BlockQ6K),
            T::Q2_K => q8k4!(q2k_q8k_x4, BlockQ2K),
            T::IQ4_XS => q8k4!(iq4_xs_q8k_x4, BlockIQ4XS),
            T::IQ2_XXS => q8k4!(iq2_xxs_q8k_x4, BlockIQ2XXS),
            T::IQ2_XS => q8k4!(iq2_xs_q8k_x4, BlockIQ2XS),
            T::IQ2_S => q8k4!(iq2_s_q8k_x4, BlockIQ2S),
            T::IQ3_XXS => q8k4!(iq3_xxs_q8k_x4, BlockIQ3XXS),
            T::IQ3_S => q8k4!(iq3_s_q8k_x4, BlockIQ3S),
            T::IQ1_S => q8k4!(iq1_s_q8k_x4, BlockIQ1S),
            T::Q8_0 => {
                let wb = typed!(w, BlockQ8_0);
                if let [A::Q8_0(a0), A::Q8_0(a1), A::Q8_0(a2), A::Q8_0(a3)] = acts {
                    if [a0.len(), a1.len(), a2.len(), a3.len()]
                        .iter()
                        .all(|&l| l >= wb.len())
                    {
                        // SAFETY: as above.
                        return Ok(Some(unsafe { avx2::q8_0_q8_0_x4(wb, [a0, a1, a2, a3]) }));
                    }
                }
                Ok(None)
            }
            T::F16 | T::BF16 => {
                if let [A::F32(a0), A::F32(a1), A::F32(a2), A::F32(a3)] = acts {
                    let x = [a0, a1, a2, a3];
                    // SAFETY: as above; the kernels read min(w.len()/2, row
                    // lengths) elements of each slice.
                    return Ok(Some(unsafe {
                        if ty == T::F16 {
                            avx2::f16_f32_x4(w, x)
                        } else {
                            avx2::bf16_f32_x4(w, x)
                        }
                    }));
                }
                Ok(None)
            }
            _ => Ok(None),
        };
    }
    let _ = (ty, isa, w, acts);
    Ok(None)
}
