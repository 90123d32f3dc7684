//! CPU kernels for GGML block-quantized tensors: the block formats with
//! llama.cpp's exact byte layouts, dequantization, quantization, and fused
//! quantized matrix × vector / matrix × matrix products with run-time
//! instruction-set dispatch.

#![allow(clippy::needless_range_loop)] // ported block loops read best with explicit indices

pub mod blocks;
pub mod candle_op;
pub mod dequant;
pub mod dot;
pub mod error;
pub mod isa;
pub mod matmul;
pub mod qmatrix;
pub mod quant;

pub use blocks::*;
pub use dequant::{dequantize, dequantize_f16, dequantize_row, supports_dequantize, DequantBlock};
pub use dot::{supports_matmul, ActFormat};
pub use error::{KernelError, Result};
pub use isa::Isa;
pub use matmul::{matmul, matvec};
pub use mistral_gguf::GgmlType;
pub use qmatrix::{QMatrix, SharedBytes};
pub use quant::{quantize, quantize_to_vec, supports_quantize, QuantizeBlock};
