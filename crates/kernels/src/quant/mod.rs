//! Quantization of f32 data into the block types, following llama.cpp's
//! reference quantizers (what `llama-quantize` runs without an importance
//! matrix), so files we write match llama.cpp's bit for bit.

mod kquants;
mod legacy;
pub mod mix;
#[cfg(target_arch = "x86_64")]
mod q8_0_avx2;
#[cfg(target_arch = "x86_64")]
mod q8_0_avx512;
#[cfg(target_arch = "x86_64")]
mod q8k_avx2;
#[cfg(target_arch = "aarch64")]
mod q8k_neon;
pub mod search;

pub(crate) use kquants::pack_scale_min_k4;
pub use kquants::{quantize_block_q8k, quantize_block_q8k_scalar};
pub use legacy::{quantize_block_q8_0, quantize_block_q8_0_on};
#[cfg(target_arch = "x86_64")]
pub(crate) use q8_0_avx512::quantize_q8_0_regs as quantize_q8_0_regs_avx512;

use crate::blocks::*;
use crate::error::{KernelError, Result};
use half::{bf16, f16};
use mistral_gguf::GgmlType;
use rayon::prelude::*;

/// A block type with a reference quantizer.
pub trait QuantizeBlock: ByteBlock {
    /// Quantizes `x` (`x.len() == ELEMS`).
    fn quantize(x: &[f32]) -> Self;
}

/// Whether [`quantize`] can produce `ty`.
pub fn supports_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q8_1
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | Q8_K
            | IQ4_NL
    )
}

/// Blocks per parallel work item.
const PAR_BLOCKS: usize = 64;

fn quantize_blocks<B: QuantizeBlock>(src: &[f32], dst: &mut [u8]) -> Result<()> {
    let out = cast_blocks_mut::<B>(dst)?;
    out.par_chunks_mut(PAR_BLOCKS)
        .zip(src.par_chunks(PAR_BLOCKS * B::ELEMS))
        .for_each(|(bs, xs)| {
            for (b, x) in bs.iter_mut().zip(xs.chunks_exact(B::ELEMS)) {
                *b = B::quantize(x);
            }
        });
    Ok(())
}

/// Quantizes `src` (any whole number of blocks, e.g. a whole row-major
/// tensor) into `dst`, which must be exactly the size `src.len()` elements of
/// `ty` take.
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    check_data(ty, src.len(), dst)?;
    use GgmlType::*;
    match ty {
        F32 => {
            for (o, v) in dst.chunks_exact_mut(4).zip(src) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        F16 => {
            for (o, v) in dst.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        BF16 => {
            for (o, v) in dst.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
            }
        }
        Q4_0 => quantize_blocks::<BlockQ4_0>(src, dst)?,
        Q4_1 => quantize_blocks::<BlockQ4_1>(src, dst)?,
        Q5_0 => quantize_blocks::<BlockQ5_0>(src, dst)?,
        Q5_1 => quantize_blocks::<BlockQ5_1>(src, dst)?,
        Q8_0 => quantize_blocks::<BlockQ8_0>(src, dst)?,
        Q8_1 => quantize_blocks::<BlockQ8_1>(src, dst)?,
        Q2_K => quantize_blocks::<BlockQ2K>(src, dst)?,
        Q3_K => quantize_blocks::<BlockQ3K>(src, dst)?,
        Q4_K => quantize_blocks::<BlockQ4K>(src, dst)?,
        Q5_K => quantize_blocks::<BlockQ5K>(src, dst)?,
        Q6_K => quantize_blocks::<BlockQ6K>(src, dst)?,
        IQ4_NL => quantize_blocks::<BlockIQ4NL>(src, dst)?,
        Q8_K => {
            let mut b = BlockQ8K::ZERO;
            for (x, o) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(292)) {
                quantize_block_q8k(x, &mut b);
                let o: &mut [u8; 292] = o.try_into().map_err(|_| KernelError::Shape {
                    op: "quantize",
                    detail: "Q8_K chunk".into(),
                })?;
                b.write(o);
            }
        }
        _ => return Err(KernelError::Unsupported { ty, op: "quantize" }),
    }
    Ok(())
}

/// Quantizes and returns a fresh buffer.
pub fn quantize_to_vec(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; bytes_for(ty, src.len())?];
    quantize(ty, src, &mut out)?;
    Ok(out)
}
