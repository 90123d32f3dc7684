//! The one place where activations meet weight matrices. A [`Linear`] is either
//! candle's [`QMatMul`] or the project's own kernels ([`mistral_kernels::QMatrix`]),
//! chosen by [`KernelChoice`]; the model code only calls [`Linear::forward`] on
//! row-major `f32` slices.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Module, Tensor};
use mistral_gguf::GgmlType;
use mistral_kernels::QMatrix;

use crate::config::KernelChoice;
use crate::error::ModelError;
use crate::weights::WeightLoader;

/// GGML types the native kernels multiply.
pub const NATIVE_TYPES: &str =
    "F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS";

#[derive(Debug, Clone)]
enum Backend {
    Candle(QMatMul),
    Native(QMatrix),
}

/// A weight matrix `W` of shape `[n_out, n_in]`; `forward(x) = x Wᵀ`.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    inner: Backend,
    n_out: usize,
    n_in: usize,
}

impl Linear {
    /// Wraps a candle matrix `[n_out, n_in]` (shared with another user, e.g. tied embeddings).
    pub fn from_qtensor(q: Arc<QTensor>) -> Result<Linear, ModelError> {
        let (n_out, n_in) = q.shape().dims2()?;
        Ok(Linear {
            inner: Backend::Candle(QMatMul::from_arc(q)?),
            n_out,
            n_in,
        })
    }

    /// A matrix from raw block bytes `[n_out, n_in]` of type `ty`.
    pub fn from_raw(
        w: &mut WeightLoader,
        name: &str,
        ty: GgmlType,
        bytes: &[u8],
        n_out: usize,
        n_in: usize,
        kernels: KernelChoice,
    ) -> Result<Linear, ModelError> {
        match kernels {
            KernelChoice::Candle => {
                Self::from_qtensor(Arc::new(w.qtensor_from_raw(name, ty, bytes, n_out, n_in)?))
            }
            KernelChoice::Native => Self::native(w, name, ty, &[bytes], n_out, n_in),
        }
    }

    /// A native matrix whose rows are those of `parts` (raw block bytes,
    /// `n_out` rows of `n_in` values in all). The matrix owns a copy, packed
    /// straight from the mapped bytes where it packs, built a slice at a
    /// time with each slice's mapped pages released once used: the weights
    /// count once in RSS, and loading holds little more than them.
    fn native(
        w: &mut WeightLoader,
        name: &str,
        ty: GgmlType,
        parts: &[&[u8]],
        n_out: usize,
        n_in: usize,
    ) -> Result<Linear, ModelError> {
        if !mistral_kernels::supports_matmul(ty) {
            return Err(w.unsupported(name, ty, NATIVE_TYPES));
        }
        let file = w.file();
        let bad = |what: String| ModelError::UnsupportedConfig {
            file: file.source_name().to_string(),
            what: format!("tensor {name:?}: {what}"),
        };
        let m = QMatrix::from_parts(ty, n_in, parts, &mut |b| file.release(b))
            .map_err(|e| bad(e.to_string()))?;
        if m.rows() != n_out {
            return Err(bad(format!("{} rows, expected {n_out}", m.rows())));
        }
        Ok(Linear {
            inner: Backend::Native(m),
            n_out,
            n_in,
        })
    }

    /// The matrix `name` with GGML dims `[n_in, n_out]`.
    pub fn load(
        w: &mut WeightLoader,
        name: &str,
        n_in: usize,
        n_out: usize,
        kernels: KernelChoice,
    ) -> Result<Linear, ModelError> {
        let (ty, bytes) = w.raw(name, &[n_in, n_out])?;
        Self::from_raw(w, name, ty, bytes, n_out, n_in, kernels)
    }

    /// The matrices of a stacked 3-D tensor with GGML dims `[n_in, n_out, n]`.
    pub fn load_stack(
        w: &mut WeightLoader,
        name: &str,
        n_in: usize,
        n_out: usize,
        n: usize,
        kernels: KernelChoice,
    ) -> Result<Vec<Linear>, ModelError> {
        let (ty, bytes) = w.raw(name, &[n_in, n_out, n])?;
        let per = bytes.len() / n;
        (0..n)
            .map(|e| {
                Self::from_raw(
                    w,
                    name,
                    ty,
                    &bytes[e * per..(e + 1) * per],
                    n_out,
                    n_in,
                    kernels,
                )
            })
            .collect()
    }

    /// `x [n, n_in] -> [n, n_out]` for `n = x.len() / n_in` rows.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>, ModelError> {
        let mut y = Vec::new();
        self.forward_into(x, &mut y)?;
        Ok(y)
    }

    /// [`Linear::forward`] into `y` (resized; its allocation is reused).
    pub fn forward_into(&self, x: &[f32], y: &mut Vec<f32>) -> Result<(), ModelError> {
        let n = x.len() / self.n_in;
        match &self.inner {
            Backend::Native(m) => {
                // The kernels store every element (`tests/qmatrix.rs`,
                // `matmul_writes_every_output`): a reused buffer of the
                // right length is not cleared first.
                y.resize(n * self.n_out, 0.0);
                m.matmul(x, y)?
            }
            Backend::Candle(m) => {
                y.clear();
                let t = Tensor::from_slice(x, (n, self.n_in), &candle_core::Device::Cpu)?;
                y.extend(m.forward(&t)?.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        Ok(())
    }

    /// Rows `ids` of the matrix as f32 `[ids.len(), n_in]` (an embedding lookup that
    /// dequantizes only those rows). Ids must be below `n_out`.
    pub fn rows(&self, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
        let cpu = candle_core::Device::Cpu;
        match &self.inner {
            Backend::Candle(QMatMul::QTensor(q)) => Ok(q
                .embedding(&Tensor::from_slice(ids, ids.len(), &cpu)?)?
                .flatten_all()?
                .to_vec1::<f32>()?),
            Backend::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => Ok(t
                .index_select(&Tensor::from_slice(ids, ids.len(), &cpu)?, 0)?
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?),
            Backend::Native(m) => {
                let mut out = vec![0f32; ids.len() * self.n_in];
                for (row, &id) in out.chunks_exact_mut(self.n_in).zip(ids) {
                    m.dequantize_row(id as usize, row).map_err(|e| {
                        ModelError::InvalidInput(format!("embedding row {id}: {e}"))
                    })?;
                }
                Ok(out)
            }
        }
    }
}

/// Matrices applied to the same input (q/k/v, gate/up): stacked into one
/// matrix when the native kernels run them and they share a type, so the
/// input is converted once and the product is one parallel pass; kept apart
/// otherwise. The outputs come back apart either way.
#[derive(Debug, Clone)]
pub(crate) enum Stack {
    /// One matrix whose rows are the parts' rows, part after part.
    One { m: Linear, parts: Vec<usize> },
    /// The parts as they are.
    Many(Vec<Linear>),
}

impl Stack {
    /// Loads the matrices `names` (GGML dims `[n_in, n_out]` each).
    pub fn load(
        w: &mut WeightLoader,
        names: &[(String, usize)],
        n_in: usize,
        kernels: KernelChoice,
    ) -> Result<Stack, ModelError> {
        let mut parts = Vec::with_capacity(names.len());
        for (name, n_out) in names {
            let (ty, bytes) = w.raw(name, &[n_in, *n_out])?;
            parts.push((name.as_str(), ty, bytes, *n_out));
        }
        Self::from_parts(w, &parts, n_in, kernels)
    }

    /// Builds the stack from raw parts `(name, type, bytes, n_out)`.
    pub fn from_parts(
        w: &mut WeightLoader,
        parts: &[(&str, GgmlType, &[u8], usize)],
        n_in: usize,
        kernels: KernelChoice,
    ) -> Result<Stack, ModelError> {
        let same = parts.windows(2).all(|p| p[0].1 == p[1].1);
        if kernels == KernelChoice::Native && same && parts.len() > 1 {
            let bytes: Vec<&[u8]> = parts.iter().map(|p| p.2).collect();
            let rows = parts.iter().map(|p| p.3).sum();
            let name = parts.iter().map(|p| p.0).collect::<Vec<_>>().join("+");
            let m = Linear::native(w, &name, parts[0].1, &bytes, rows, n_in)?;
            return Ok(Stack::One {
                m,
                parts: parts.iter().map(|p| p.3).collect(),
            });
        }
        let many = parts
            .iter()
            .map(|&(name, ty, bytes, n_out)| {
                Linear::from_raw(w, name, ty, bytes, n_out, n_in, kernels)
            })
            .collect::<Result<_, _>>()?;
        Ok(Stack::Many(many))
    }

    /// `x [n, n_in]` through every part, part `i` into `outs[i]` (`[n,
    /// n_out_i]`); `tmp` holds the stacked product.
    pub fn forward_into(
        &self,
        x: &[f32],
        tmp: &mut Vec<f32>,
        outs: &mut [&mut Vec<f32>],
    ) -> Result<(), ModelError> {
        match self {
            Stack::Many(ms) => {
                for (m, o) in ms.iter().zip(outs.iter_mut()) {
                    m.forward_into(x, o)?;
                }
            }
            Stack::One { m, parts } => {
                m.forward_into(x, tmp)?;
                let total: usize = parts.iter().sum();
                for o in outs.iter_mut() {
                    o.clear();
                }
                for row in tmp.chunks_exact(total) {
                    let mut at = 0;
                    for (o, &p) in outs.iter_mut().zip(parts) {
                        o.extend_from_slice(&row[at..at + p]);
                        at += p;
                    }
                }
            }
        }
        Ok(())
    }
}
