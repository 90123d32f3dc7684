//! CPU kernels for GGML block-quantized tensors: the block formats with
//! llama.cpp's exact byte layouts, dequantization, quantization, and fused
//! quantized matrix × vector / matrix × matrix products with run-time
//! instruction-set dispatch.

pub mod blocks;
pub mod dequant;
pub mod error;
pub mod isa;

pub use blocks::*;
pub use dequant::{dequantize, dequantize_f16, dequantize_row, supports_dequantize, DequantBlock};
pub use error::{KernelError, Result};
pub use isa::Isa;
pub use mistral_gguf::GgmlType;
