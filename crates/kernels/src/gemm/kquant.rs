//! k-quant weights × Q8_K activations, tiled (being written).

use mistral_gguf::GgmlType;

/// See [`super::try_matmul`]; the caller has checked AVX2 + FMA + F16C.
pub(crate) fn matmul(ty: GgmlType, w: &[u8], rows: usize, cols: usize, x: &[f32], y: &mut [f32]) -> bool {
    let _ = (ty, w, rows, cols, x, y);
    false
}
