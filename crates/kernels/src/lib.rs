//! CPU kernels for GGML block-quantized tensors: the block formats with
//! llama.cpp's exact byte layouts, dequantization, quantization, and fused
//! quantized matrix × vector / matrix × matrix products with run-time
//! instruction-set dispatch.
//!
//! - [`blocks`]: `#[repr(C)]` block structs (size-asserted against llama.cpp),
//!   viewed in place from unaligned bytes ([`cast_blocks`]).
//! - [`dequant`]: scalar reference dequantization of every supported type to
//!   f32 / f16, whole tensors or single rows (bit-exact with the `gguf`
//!   Python package's golden vectors).
//! - [`iquant`]: the i-quants on lattices (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS,
//!   IQ3_S, IQ1_S) decoded to integers, one definition for dequantization,
//!   the scalar dot products and the SIMD kernels (AVX2 with one or four
//!   activation rows per pass, NEON), which equal the scalar ones bit for bit.
//! - [`quant`]: llama.cpp's reference quantizers, and [`quant::mix`], the
//!   per-tensor type choice of `llama-quantize`.
//! - [`plan`]: which layout a matrix is kept in and which kernel runs for a
//!   weight type, instruction set and batch size, decided in one place.
//! - [`dot`] / [`matmul`](mod@matmul): activations are converted once per call to Q8_0 /
//!   Q8_1 / Q8_K (k-quants) or kept f32 (float weights), then integer dot
//!   products per weight row, rows split over rayon threads, four activation
//!   rows per weight-row pass for small batches. Paths: [`Isa::Scalar`] (the
//!   reference), [`Isa::Avx2`] (AVX2 + FMA + F16C) and [`Isa::Avx512`]
//!   (AVX-512 F/BW/VL + VNNI: the tiled prefill kernels, packed Q4_K / Q2_K /
//!   Q8_0 matrix × vector, and Q2_K, Q3_K, Q5_K and Q6_K row kernels
//!   ([`dot::avx512`]), equal to the AVX2 ones to f32 rounding; AVX2
//!   elsewhere) and [`Isa::Amx`] (AVX-512
//!   plus Intel AMX tiles for prefill, see [`gemm`]) on
//!   x86-64, [`Isa::Neon`] and [`Isa::NeonDot`] (with `sdot`) on AArch64,
//!   chosen at run time by [`Isa::best`] (override:
//!   `MISTRAL_KERNELS_ISA=scalar|avx2|avx512|amx|neon|neon-dot`)
//!   or forced per matrix with [`QMatrix::with_isa`]. The AVX2 dot products
//!   sum in f32 lanes (llama.cpp's order), equal to the scalar ones to f32
//!   rounding; the NEON ones keep the scalar float steps and are
//!   bit-identical (tested under qemu: `tests/aarch64.sh`; no speed figures,
//!   as no ARM hardware was at hand).
//! - [`gemm`]: matrix × matrix (prefill) from a few activation rows on, with
//!   register-tiled kernels for the k-quants (bit-identical to the scalar
//!   kernels), the 32-value types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) and
//!   F16/BF16, each in an AVX2 form and an AVX-512 form ([`Isa::Avx512`]:
//!   `vpdpbusd` for the integer types, 16-lane FMAs for F16/BF16, and for
//!   BF16 where the CPU has AVX-512 BF16 `vdpbf16ps` on activations rounded
//!   to bfloat16, as llama.cpp's BF16 path: [`plan::rounds_activations_to_bf16`]);
//!   on [`Isa::Amx`] F16/BF16 (`tdpbf16ps`, activations split into two
//!   bfloat16 parts, to about 2⁻¹⁶ of each product), the k-quants (`tdpbsud`,
//!   bit-identical to the scalar kernels) and packed Q8_0 (`tdpbsud`, the
//!   AVX-512 kernel's bits) run on AMX tiles.
//! - [`packed`]: weight layouts regrouped once at load for faster kernels;
//!   Q4_K in groups of 16 rows ([`packed::PackedQ4K`]), which [`QMatrix::new`]
//!   uses for every Q4_K matrix it owns (bit-identical results, +2.8% bytes),
//!   and on AVX-512 Q2_K by 8 rows ([`packed::PackedQ2K`], same bytes),
//!   Q8_0 by 16 ([`packed::PackedQ8_0`]) and Q4_0, Q4_1, Q5_0, Q5_1 and
//!   IQ4_NL by 16 ([`packed::PackedQ32`], same bytes; Q4_0 and Q4_1 also on
//!   AVX2). Their matrix × vector kernels take 1 or 4 activation rows per
//!   pass over the weights, up to the batch where the tiled kernels win
//!   ([`plan::is_tiled_packed`]).
//! - [`attention`]: fused attention over a paged f32 / f16 / Q8_0 KV cache
//!   for a batch of decoding and prefilling sequences (online softmax,
//!   grouped-query heads, causal and sliding-window masks from positions),
//!   split over rayon so each sequence's bits do not depend on the batch or
//!   the thread count; scalar, AVX2, AVX-512 and NEON block kernels.
//! - [`QMatrix`]: the weight type the transformer multiplies by, also a candle
//!   `CustomOp1` / `Module` (`[.., cols] -> [.., rows]`), a drop-in for
//!   candle's `QMatMul`.

#![allow(clippy::needless_range_loop)] // ported block loops read best with explicit indices

pub mod attention;
pub mod blocks;
#[cfg(feature = "candle")]
pub mod candle_op;
pub mod dequant;
pub mod dot;
pub mod elementwise;
pub mod error;
pub mod gemm;
pub mod iquant;
pub mod isa;
pub mod matmul;
pub mod packed;
pub mod plan;
pub mod qmatrix;
pub mod quant;
mod shared;

pub use blocks::*;
pub use dequant::{dequantize, dequantize_f16, dequantize_row, supports_dequantize, DequantBlock};
pub use dot::{supports_matmul, ActFormat};
pub use error::{KernelError, Result};
pub use isa::Isa;
pub use matmul::{matmul, matvec};
pub use mistral_gguf::GgmlType;
pub use qmatrix::{QMatrix, SharedBytes, BUILD_SLICE};
pub use quant::{quantize, quantize_to_vec, supports_quantize, QuantizeBlock};
