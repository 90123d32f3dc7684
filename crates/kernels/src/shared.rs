//! What every kernel family shares, below all of them: the buffer pool,
//! the pooled activation scratch, the output pointer that worker threads
//! split, and the shape checks of a product.

use crate::blocks::bytes_for;
use crate::dot::ActBuffers;
use crate::error::{KernelError, Result};
use mistral_gguf::GgmlType;
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
