//! Quantized matrix × vector (decode) and matrix × matrix (prefill): the
//! activations are converted once into a pooled scratch buffer, then the
//! weight rows are split over rayon threads; for several activation rows the
//! work is tiled so a weight row stays in L1 while a tile of activation rows
//! streams past it.

use crate::dot::{row_dot, row_dot2, row_dot4, ActFormat, ActRow};
use crate::error::{KernelError, Result};
use crate::isa::Isa;
use crate::shared::{check_vector, checked_shapes, with_scratch, OutPtr};
use mistral_gguf::GgmlType;
use rayon::prelude::*;

/// Activation rows per tile in matrix × matrix.
const TOKEN_TILE: usize = 16;

/// `y[t, r] = sum_c w[r, c] * x[t, c]` for a `[rows, cols]` weight matrix `w`
/// of type `ty` (row-major bytes), `n = x.len() / cols` activation rows, and
/// `y` of `n * rows` elements, on instruction set `isa`.
pub fn matmul(
    ty: GgmlType,
    isa: Isa,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let isa = isa.checked()?;
    let fmt = ActFormat::for_weights(ty).ok_or(KernelError::Unsupported { ty, op: "matmul" })?;
    let (row_bytes, n) = checked_shapes(ty, w, (rows, cols), x, y)?;
    if rows == 0 || n == 0 {
        return Ok(());
    }
    if crate::gemm::try_matmul(ty, isa, w, rows, cols, x, y) {
        return Ok(());
    }
    // Check the kernel exists (and the formats agree) before going parallel.
    with_scratch(|buf| {
        if fmt != ActFormat::F32 {
            buf.prepare(fmt, x, cols);
        }
        let act = |t: usize| -> ActRow<'_> {
            if fmt == ActFormat::F32 {
                ActRow::F32(&x[t * cols..(t + 1) * cols])
            } else {
                buf.row(fmt, cols, t)
            }
        };
        row_dot(ty, isa, &w[..row_bytes], act(0))?;
        // Whether a kernel takes two weight rows per pass (the activation
        // read once for both), asked on empty rows.
        let pairs = row_dot2(ty, isa, [&[], &[]], act(0))?.is_some();

        let threads = rayon::current_num_threads().max(1);
        // Enough chunks to balance uneven progress, each at least a few rows.
        let chunk = rows.div_ceil(threads * 8).max(4);
        let out = OutPtr(y.as_mut_ptr());
        (0..rows.div_ceil(chunk)).into_par_iter().for_each(|c| {
            let r0 = c * chunk;
            let r1 = (r0 + chunk).min(rows);
            for t0 in (0..n).step_by(TOKEN_TILE) {
                let t1 = (t0 + TOKEN_TILE).min(n);
                // Fewer than 4 tokens: two weight rows per pass where a
                // kernel takes them.
                let mut r2 = r0;
                if t1 - t0 < 4 && pairs {
                    while r2 + 2 <= r1 {
                        let wr = [
                            &w[r2 * row_bytes..(r2 + 1) * row_bytes],
                            &w[(r2 + 1) * row_bytes..(r2 + 2) * row_bytes],
                        ];
                        for t in t0..t1 {
                            let v = match row_dot2(ty, isa, wr, act(t)) {
                                Ok(Some(v)) => v,
                                _ => [f32::NAN; 2],
                            };
                            for (k, v) in v.into_iter().enumerate() {
                                // SAFETY: t < n and r2 + k < rows; this chunk
                                // alone owns rows r0..r1 (see `OutPtr`).
                                unsafe { *out.get().add(t * rows + r2 + k) = v };
                            }
                        }
                        r2 += 2;
                    }
                }
                for r in r2..r1 {
                    let wr = &w[r * row_bytes..(r + 1) * row_bytes];
                    let mut t = t0;
                    // The kernels were checked above for these types and lengths;
                    // a failure here cannot happen and would show as NaN.
                    while t + 4 <= t1 {
                        let acts = [act(t), act(t + 1), act(t + 2), act(t + 3)];
                        match row_dot4(ty, isa, wr, acts) {
                            Ok(Some(v)) => {
                                for (k, v) in v.into_iter().enumerate() {
                                    // SAFETY: t + k < n and r < rows, so the index is
                                    // inside y; this chunk alone owns rows r0..r1.
                                    unsafe { *out.get().add((t + k) * rows + r) = v };
                                }
                                t += 4;
                            }
                            _ => break,
                        }
                    }
                    for t in t..t1 {
                        let v = row_dot(ty, isa, wr, act(t)).unwrap_or(f32::NAN);
                        // SAFETY: t < n and r < rows, so t * rows + r < y.len();
                        // this chunk alone owns rows r0..r1 (see `OutPtr`).
                        unsafe { *out.get().add(t * rows + r) = v };
                    }
                }
            }
        });
        Ok(())
    })
}

/// Matrix × vector: `matmul` with one activation row.
pub fn matvec(
    ty: GgmlType,
    isa: Isa,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    check_vector(cols, x)?;
    matmul(ty, isa, w, rows, cols, x, y)
}

// The packed layouts' products: here rather than in `crate::packed`, which
// holds their row kernels, so that `packed` does not import `gemm` (whose
// tiled kernels read the packed layouts).

impl<B: crate::packed::GroupBlock> crate::packed::Packed<B> {
    /// `y[t, r] = Σ_c w[r, c] · x[t, c]` (`x`: `n` rows of `cols`, `y`: `n * rows`).
    pub fn matmul(&self, isa: Isa, x: &[f32], y: &mut [f32]) -> Result<()> {
        self.matmul_with(isa, x, y, |isa, x, y| {
            crate::gemm::try_matmul_packed_kquant(isa, self, x, y)
        })
    }
}

impl crate::packed::PackedQ32 {
    /// `y[t, r] = Σ_c w[r, c] · x[t, c]` (`x`: `n` rows of `cols`, `y`: `n * rows`).
    pub fn matmul(&self, isa: Isa, x: &[f32], y: &mut [f32]) -> Result<()> {
        self.matmul_with(isa, x, y, |isa, x, y| {
            crate::gemm::try_matmul_packed_q32(isa, self, x, y)
        })
    }
}

impl crate::packed::PackedQ8_0 {
    /// `y[t, r] = Σ_c w[r, c] · x[t, c]` (`x`: `n` rows of `cols`, `y`: `n * rows`).
    pub fn matmul(&self, isa: Isa, x: &[f32], y: &mut [f32]) -> Result<()> {
        self.matmul_with(isa, x, y, |isa, x, y| {
            crate::gemm::try_matmul_packed_q8_0(isa, self, x, y)
        })
    }
}
