//! Quantized matrix × vector (decode) and matrix × matrix (prefill): the
//! activations are converted once into a pooled scratch buffer, then the
//! weight rows are split over rayon threads; for several activation rows the
//! work is tiled so a weight row stays in L1 while a tile of activation rows
//! streams past it.

use crate::blocks::bytes_for;
use crate::dot::{row_dot, row_dot2, row_dot4, ActBuffers, ActFormat, ActRow};
use crate::error::{KernelError, Result};
use crate::isa::Isa;
use mistral_gguf::GgmlType;
use rayon::prelude::*;
use std::sync::Mutex;

/// Buffers reused across calls: a call takes one out and puts it back, so
/// concurrent or nested calls each get their own and nothing is allocated
/// once the pool is warm.
pub(crate) struct Pool<T>(Mutex<Vec<T>>);

impl<T: Default> Pool<T> {
    pub(crate) const fn new() -> Pool<T> {
        Pool(Mutex::new(Vec::new()))
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut buf = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        let r = f(&mut buf);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(buf);
        r
    }
}

/// Scratch buffers for quantized activations.
static SCRATCH: Pool<ActBuffers> = Pool::new();

pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut ActBuffers) -> R) -> R {
    SCRATCH.with(f)
}

/// Activation rows per tile in matrix × matrix.
const TOKEN_TILE: usize = 16;

/// A raw output pointer shared by the worker threads of one matrix product
/// (here and in [`crate::gemm`]), each writing a disjoint set of elements.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: every user splits the outputs `y[t * rows + r]` into disjoint sets,
// one per task (by weight rows here and in the integer tiled kernels; by
// weight rows and activation-row groups in the F16 kernel; each says so where
// it writes), so no two threads touch the same element, and nothing else
// reads or writes `y` during the call.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Taking `self` whole makes closures capture the `Send` wrapper, not the raw field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

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

/// Checks that `w` holds `rows` rows of `cols` values of `ty` and that `x`
/// and `y` are whole rows of `cols` and `rows`; returns the bytes per weight
/// row and the number of activation rows.
pub(crate) fn checked_shapes(
    ty: GgmlType,
    w: &[u8],
    (rows, cols): (usize, usize),
    x: &[f32],
    y: &[f32],
) -> Result<(usize, usize)> {
    let row_bytes = bytes_for(ty, cols)?;
    if Some(w.len()) != row_bytes.checked_mul(rows) {
        return Err(KernelError::DataSize {
            ty,
            expected: row_bytes.saturating_mul(rows),
            got: w.len(),
        });
    }
    Ok((row_bytes, activation_rows(rows, cols, x, y)?))
}

/// The number of activation rows `n` of a product `y[n, rows] = x[n, cols]
/// Wᵀ`, checking that `x` is whole rows of `cols` and `y` has `n * rows` values.
pub(crate) fn activation_rows(rows: usize, cols: usize, x: &[f32], y: &[f32]) -> Result<usize> {
    let shape_err = |detail: String| KernelError::Shape {
        op: "matmul",
        detail,
    };
    if cols == 0 || !x.len().is_multiple_of(cols) {
        return Err(shape_err(format!(
            "input of {} values is not rows of {cols}",
            x.len()
        )));
    }
    let n = x.len() / cols;
    if Some(y.len()) != n.checked_mul(rows) {
        return Err(shape_err(format!(
            "output has {} values, expected {n} x {rows}",
            y.len()
        )));
    }
    Ok(n)
}

/// That `x` is one activation row of `cols` values.
pub(crate) fn check_vector(cols: usize, x: &[f32]) -> Result<()> {
    if x.len() != cols {
        return Err(KernelError::Shape {
            op: "matvec",
            detail: format!("input has {} values, expected {cols}", x.len()),
        });
    }
    Ok(())
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
