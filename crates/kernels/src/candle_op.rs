//! candle integration: [`QMatrix`] as a `CustomOp1` (`[.., cols] -> [.., rows]`)
//! and a `Module`, so the transformer can swap it in for candle's `QMatMul`;
//! [`candle_dtype`], candle's name for a GGML type.

use crate::qmatrix::QMatrix;
use candle_core::backend::BackendStorage;
use candle_core::quantized::GgmlDType;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Shape, Tensor};
use mistral_gguf::GgmlType;

/// candle's name for a GGML type, if candle supports it.
pub fn candle_dtype(t: GgmlType) -> Option<GgmlDType> {
    Some(match t {
        GgmlType::F32 => GgmlDType::F32,
        GgmlType::F16 => GgmlDType::F16,
        GgmlType::BF16 => GgmlDType::BF16,
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q2_K => GgmlDType::Q2K,
        GgmlType::Q3_K => GgmlDType::Q3K,
        GgmlType::Q4_K => GgmlDType::Q4K,
        GgmlType::Q5_K => GgmlDType::Q5K,
        GgmlType::Q6_K => GgmlDType::Q6K,
        _ => return None,
    })
}

impl CustomOp1 for QMatrix {
    fn name(&self) -> &'static str {
        "mistral-qmatmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("mistral-qmatmul: input is not contiguous {layout:?}")
        };
        let dims = layout.shape().dims();
        match dims.last() {
            Some(&k) if k == self.cols() => {}
            _ => candle_core::bail!(
                "mistral-qmatmul: input {dims:?} does not end in {} columns",
                self.cols()
            ),
        }
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = self.rows();
        }
        let n = layout.shape().elem_count() / self.cols().max(1);
        let mut y = vec![0f32; n * self.rows()];
        let run = |x: &[f32], y: &mut [f32]| self.matmul(x, y).map_err(candle_core::Error::wrap);
        let out = match storage {
            CpuStorage::F32(x) => {
                run(&x[start..end], &mut y)?;
                CpuStorage::F32(y)
            }
            CpuStorage::F16(x) => {
                let xf: Vec<f32> = x[start..end].iter().map(|v| v.to_f32()).collect();
                run(&xf, &mut y)?;
                CpuStorage::F16(y.iter().map(|&v| half::f16::from_f32(v)).collect())
            }
            CpuStorage::BF16(x) => {
                let xf: Vec<f32> = x[start..end].iter().map(|v| v.to_f32()).collect();
                run(&xf, &mut y)?;
                CpuStorage::BF16(y.iter().map(|&v| half::bf16::from_f32(v)).collect())
            }
            other => candle_core::bail!(
                "mistral-qmatmul: unsupported input dtype {:?}",
                other.dtype()
            ),
        };
        Ok((out, Shape::from(out_dims)))
    }
}

impl Module for QMatrix {
    /// `xs [.., cols] -> [.., rows]` on the CPU (f32, f16 or bf16 input).
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        if !matches!(xs.dtype(), DType::F32 | DType::F16 | DType::BF16) {
            candle_core::bail!("mistral-qmatmul: unsupported input dtype {:?}", xs.dtype())
        }
        xs.contiguous()?.apply_op1_no_bwd(self)
    }
}
