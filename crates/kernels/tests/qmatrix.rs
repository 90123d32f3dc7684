//! `QMatrix` over a GGUF file's mapped bytes (zero-copy) against an owned copy.

mod common;

use common::gaussian;
use mistral_gguf::{GgufFile, GgufWriter, Metadata, TensorSpec};
use mistral_kernels::{quantize_to_vec, GgmlType, Isa, KernelError, QMatrix};
use std::sync::Arc;

#[test]
fn from_gguf_is_the_same_matrix() {
    let (rows, cols) = (20, 512);
    let w = quantize_to_vec(GgmlType::Q4_K, &gaussian(rows * cols, 1)).unwrap();
    let v = quantize_to_vec(GgmlType::F32, &gaussian(cols, 2)).unwrap();
    let cube = quantize_to_vec(GgmlType::F32, &gaussian(2 * 2 * 32, 3)).unwrap();
    let mut wr = GgufWriter::new(Metadata::new());
    wr.add_tensor(TensorSpec::new(
        "w",
        GgmlType::Q4_K,
        &[cols as u64, rows as u64],
    ));
    wr.add_tensor(TensorSpec::new("v", GgmlType::F32, &[cols as u64]));
    wr.add_tensor(TensorSpec::new("cube", GgmlType::F32, &[32, 2, 2]));
    let bytes = wr.to_bytes(&[&w, &v, &cube]).unwrap();
    let file = Arc::new(GgufFile::from_bytes(bytes, "mem").unwrap());

    let m = QMatrix::from_gguf(&file, "w").unwrap();
    assert_eq!(
        (m.rows(), m.cols(), m.ggml_type()),
        (rows, cols, GgmlType::Q4_K)
    );
    assert_eq!(m.bytes(), &w[..]);
    // The owned copy is regrouped (packed layout); on the scalar path both
    // compute in the same order, so the products agree bit for bit.
    let owned = QMatrix::new(GgmlType::Q4_K, rows, cols, w).unwrap();
    assert!(owned.is_packed() && !m.is_packed());
    let m = m.with_isa(Isa::Scalar).unwrap();
    let owned = owned.with_isa(Isa::Scalar).unwrap();
    let x = gaussian(3 * cols, 4);
    let (mut a, mut b) = (vec![0f32; 3 * rows], vec![0f32; 3 * rows]);
    m.matmul(&x, &mut a).unwrap();
    owned.matmul(&x, &mut b).unwrap();
    assert_eq!(a, b);

    // A vector is a 1-row matrix; a 3-D tensor is not a matrix; a missing name is an error.
    let v = QMatrix::from_gguf(&file, "v").unwrap();
    assert_eq!((v.rows(), v.cols()), (1, cols));
    assert!(matches!(
        QMatrix::from_gguf(&file, "cube"),
        Err(KernelError::NotAMatrix { .. })
    ));
    assert!(matches!(
        QMatrix::from_gguf(&file, "nope"),
        Err(KernelError::Gguf(_))
    ));
}

#[test]
fn matmul_writes_every_output() {
    // The engine reuses its output buffers without clearing them: every
    // kernel, on every path, layout and batch size, must store every
    // element of `y`. Outputs start as NaN; any left over fails.
    let cov = common::Coverage::new("qmatrix::matmul_writes_every_output");
    let (rows, cols) = (48, 512);
    for ty in common::TYPES {
        // Random blocks (every bit pattern, small scales) for the block
        // types, random values for the float ones.
        let w = common::random_weights(ty, rows, cols, 5);
        let m = QMatrix::new(ty, rows, cols, w).unwrap();
        for isa in cov.all() {
            let m = m.clone().with_isa(isa).unwrap();
            for n in [1, 2, 3, 4, 5, 8, 13, 16, 17, 33, 64, 259] {
                let x = gaussian(n * cols, 6 + n as u64);
                let mut y = vec![f32::NAN; n * rows];
                m.matmul(&x, &mut y).unwrap();
                if let Some(i) = y.iter().position(|v| !v.is_finite()) {
                    panic!("{ty} {isa:?} n={n}: y[{i}] = {} not written", y[i]);
                }
            }
        }
    }
}
