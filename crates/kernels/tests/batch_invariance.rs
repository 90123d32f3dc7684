//! Batch invariance: the product of one activation row with a matrix of
//! k-quant or 256-value i-quant weights has the same bits whatever batch it
//! is computed in (one row, a four-row kernel, the tiled kernels, AMX
//! tiles), in the GGUF layout and in the packed ones, on every path: all of
//! them give the scalar kernel's bits. A chunked prefill, or a token decoded
//! beside other sessions, then computes what it would alone.
//!
//! The 32-value types (Q4_0…Q5_1, IQ4_NL) and Q8_0 have the property on
//! AVX-512 in their packed layouts (checked here too); in the GGUF layout,
//! on AVX2, and for F16/BF16, their tiled kernels take one FMA per block or
//! value where the row kernels multiply and add (`tests/gemm_tiled.rs`
//! holds them to a tolerance). The scalar and NEON paths run one kernel at
//! every batch.

mod common;

use common::{assert_bits_eq, gaussian, q8k_types, random_weights};
use mistral_kernels::{GgmlType, Isa, QMatrix};
use std::sync::Arc;

/// Batch sizes: one row, below and at the four-row kernels, below and at
/// the tiled kernels' cut-offs (8; Q6_K on AVX-512 12), AMX's (33), the
/// packed Q2_K's (128), and a partial last panel beyond.
const BATCHES: [usize; 13] = [1, 2, 3, 4, 5, 7, 8, 11, 12, 13, 33, 64, 130];

#[test]
fn k_quant_products_do_not_depend_on_the_batch() {
    let cov =
        common::Coverage::new("batch_invariance::k_quant_products_do_not_depend_on_the_batch");
    let paths = cov.all();
    let most = *BATCHES.iter().max().unwrap();
    // (rows, cols): 24 rows are packed where a layout exists (Q4_K from 16
    // rows, Q2_K on AVX-512 from 8), 5 are not; 7 and 9 super-blocks a row
    // leave 3 and 1 past the one-row kernels' groups of four, 1 leaves all.
    for (i, (rows, cols)) in [(24, 2304), (5, 1792), (16, 256)].into_iter().enumerate() {
        let x: Vec<f32> = gaussian(most * cols, 100 + i as u64)
            .into_iter()
            .enumerate()
            .map(|(k, v)| v * (0.05 + (k / cols % 7) as f32))
            .collect();
        for (j, ty) in q8k_types().enumerate() {
            let w = random_weights(ty, rows, cols, (10 * i + j) as u64);
            let plain = |isa| {
                QMatrix::from_shared(ty, rows, cols, Arc::new(w.clone()), 0..w.len())
                    .unwrap()
                    .with_isa(isa)
                    .unwrap()
            };
            // The reference: the scalar kernel, one row at a time.
            let scalar = plain(Isa::Scalar);
            let mut want = vec![0f32; most * rows];
            for (xt, yt) in x.chunks_exact(cols).zip(want.chunks_exact_mut(rows)) {
                scalar.matvec(xt, yt).unwrap();
            }
            assert!(want.iter().all(|v| v.is_finite()) && want.iter().any(|&v| v != 0.0));
            for &isa in &paths {
                let owned = QMatrix::new(ty, rows, cols, w.clone())
                    .unwrap()
                    .with_isa(isa)
                    .unwrap();
                for m in [plain(isa), owned] {
                    for n in BATCHES {
                        let mut got = vec![f32::NAN; n * rows];
                        m.matmul(&x[..n * cols], &mut got).unwrap();
                        let what =
                            format!("{ty} {isa:?} packed={} {rows}x{cols} n={n}", m.is_packed());
                        assert_bits_eq(&what, &got, &want[..n * rows], rows);
                    }
                }
            }
        }
    }
}

/// The 32-value types and Q8_0 in their packed layouts on AVX-512 (and AMX):
/// every batch gives the one-row product's bits.
#[test]
fn packed_32_value_products_on_avx512_do_not_depend_on_the_batch() {
    let cov = common::Coverage::new(
        "batch_invariance::packed_32_value_products_on_avx512_do_not_depend_on_the_batch",
    );
    let paths: Vec<Isa> = cov.paths([Isa::Avx512, Isa::Amx]);
    let most = *BATCHES.iter().max().unwrap();
    let (rows, cols) = (40, 1056);
    let x = gaussian(most * cols, 7);
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::IQ4_NL,
        GgmlType::Q8_0,
    ];
    for (j, ty) in types.into_iter().enumerate() {
        let w = random_weights(ty, rows, cols, 300 + j as u64);
        for &isa in &paths {
            let m = QMatrix::new(ty, rows, cols, w.clone())
                .unwrap()
                .with_isa(isa)
                .unwrap();
            assert!(m.is_packed(), "{ty} {isa:?}: not packed");
            let mut want = vec![0f32; most * rows];
            for (xt, yt) in x.chunks_exact(cols).zip(want.chunks_exact_mut(rows)) {
                m.matvec(xt, yt).unwrap();
            }
            for n in BATCHES {
                let mut got = vec![f32::NAN; n * rows];
                m.matmul(&x[..n * cols], &mut got).unwrap();
                let what = format!("{ty} {isa:?} packed {rows}x{cols} n={n}");
                assert_bits_eq(&what, &got, &want[..n * rows], rows);
            }
        }
    }
}
