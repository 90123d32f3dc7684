//! Loading tensors from a [`GgufFile`]: quantized weights are built straight
//! from the file's block bytes (no dequantize / requantize round trip), as
//! the native kernels' matrices or candle [`QTensor`]s; only small vectors
//! (norms, the router) become f32. Progress is reported per tensor.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::Device;
use mistral_gguf::{GgmlType, GgufFile, TensorInfo};

use crate::error::ModelError;

/// GGML types the candle backend can hold and multiply.
pub const SUPPORTED_TYPES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

pub use mistral_kernels::candle_op::candle_dtype;

/// Alignment candle needs for the blocks of a type (their widest field).
fn required_alignment(t: GgmlDType) -> usize {
    match t {
        GgmlDType::F32 | GgmlDType::Q8_1 | GgmlDType::Q8K => 4,
        _ => 2,
    }
}

/// How far loading has come: bytes of tensor data read of the file's total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadProgress {
    pub loaded: u64,
    pub total: u64,
}

/// Reads tensors of one file, checking names, types and shapes.
pub(crate) struct WeightLoader<'a> {
    file: &'a GgufFile,
    device: Device,
    bytes: usize,
    total: u64,
    progress: &'a mut dyn FnMut(LoadProgress),
}

impl<'a> WeightLoader<'a> {
    pub fn new(file: &'a GgufFile, progress: &'a mut dyn FnMut(LoadProgress)) -> Self {
        let total = file.tensors().iter().map(|t| t.n_bytes()).sum();
        WeightLoader {
            file,
            device: Device::Cpu,
            bytes: 0,
            total,
            progress,
        }
    }

    /// The same loader putting candle tensors on `device`.
    pub fn on_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    fn report(&mut self) {
        (self.progress)(LoadProgress {
            loaded: (self.bytes as u64).min(self.total),
            total: self.total,
        });
    }

    /// Bytes of tensor data loaded so far.
    pub fn bytes_loaded(&self) -> usize {
        self.bytes
    }

    /// Drops whatever of the mapped file is resident from this process's
    /// memory: the tensors read so far are copies, and reading a small one
    /// (a norm) maps in the large page-cache folio around it, neighbours
    /// already released included. A hint, as [`GgufFile::release`].
    pub fn release_read(&self) {
        self.file.release(self.file.bytes());
    }

    pub fn file(&self) -> &GgufFile {
        self.file
    }

    fn file_name(&self) -> String {
        self.file.source_name().to_string()
    }

    /// Whether the file has a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.file.tensor_info(name).is_some()
    }

    /// The info of `name`, checking its GGML-order dims.
    pub fn info(&self, name: &str, dims: &[usize]) -> Result<&'a TensorInfo, ModelError> {
        let info = self
            .file
            .tensor_info(name)
            .ok_or_else(|| ModelError::MissingTensor {
                file: self.file_name(),
                name: name.to_string(),
            })?;
        let expected: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        if info.dims != expected {
            return Err(ModelError::BadTensorShape {
                file: self.file_name(),
                name: name.to_string(),
                found: info.dims.clone(),
                expected,
            });
        }
        Ok(info)
    }

    /// Builds a QTensor of `shape` (row-major) from `bytes` of type `dtype`.
    fn qtensor_from_bytes(
        &mut self,
        name: &str,
        bytes: &[u8],
        dtype: GgmlDType,
        shape: &[usize],
    ) -> Result<QTensor, ModelError> {
        // candle reinterprets the bytes as blocks: they must be aligned and whole.
        let n: usize = shape.iter().product();
        let expected = n / dtype.block_size() * dtype.type_size();
        if bytes.len() != expected
            || !(bytes.as_ptr() as usize).is_multiple_of(required_alignment(dtype))
        {
            return Err(ModelError::UnsupportedConfig {
                file: self.file_name(),
                what: format!(
                    "tensor {name:?}: data is misaligned or has {} bytes, expected {expected}",
                    bytes.len()
                ),
            });
        }
        self.bytes += bytes.len();
        self.report();
        let storage = QStorage::from_data(Cow::Borrowed(bytes), &self.device, dtype)?;
        let q = QTensor::new(storage, shape.to_vec())?;
        // candle copied the bytes: the mapped pages need not stay resident.
        self.file.release(bytes);
        Ok(q)
    }

    /// A tensor's GGML type and bytes, checking its dims.
    pub fn raw(&mut self, name: &str, dims: &[usize]) -> Result<(GgmlType, &'a [u8]), ModelError> {
        let info = self.info(name, dims)?;
        let data = self.file.tensor_data(info);
        self.bytes += data.len();
        self.report();
        Ok((info.ggml_type, data))
    }

    /// The error for a tensor type a backend cannot multiply.
    pub fn unsupported(
        &self,
        name: &str,
        ggml_type: GgmlType,
        supported: &'static str,
    ) -> ModelError {
        ModelError::UnsupportedTensorType {
            file: self.file_name(),
            name: name.to_string(),
            ggml_type,
            supported,
        }
    }

    /// A QTensor `[n_out, n_in]` of type `ty` from bytes of this file (not counted
    /// in [`bytes_loaded`](Self::bytes_loaded): callers used [`raw`](Self::raw)).
    pub fn qtensor_from_raw(
        &mut self,
        name: &str,
        ty: GgmlType,
        bytes: &[u8],
        n_out: usize,
        n_in: usize,
    ) -> Result<QTensor, ModelError> {
        let dtype = candle_dtype(ty).ok_or_else(|| self.unsupported(name, ty, SUPPORTED_TYPES))?;
        let q = self.qtensor_from_bytes(name, bytes, dtype, &[n_out, n_in])?;
        self.bytes -= bytes.len();
        Ok(q)
    }

    /// A small tensor dequantized to f32 (norm weights, the router), row-major.
    pub fn f32_values(&mut self, name: &str, dims: &[usize]) -> Result<Vec<f32>, ModelError> {
        let (ty, bytes) = self.raw(name, dims)?;
        let n: usize = dims.iter().product();
        let mut out = vec![0f32; n];
        mistral_kernels::dequantize(ty, bytes, &mut out).map_err(|e| {
            ModelError::UnsupportedConfig {
                file: self.file_name(),
                what: format!("tensor {name:?}: {e}"),
            }
        })?;
        Ok(out)
    }
}
