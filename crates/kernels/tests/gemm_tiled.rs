//! The tiled k-quant matrix × matrix kernel (`gemm::kquant`, used from 8
//! activation rows on AVX2) against the scalar row-at-a-time kernel, bit for
//! bit, on shapes that hit every edge of its tiling: row counts that leave a
//! partial tile, activation rows that leave a partial panel and an odd panel,
//! rows longer than one k-block (16 super-blocks), one-row matrices.

mod common;

use common::gaussian;
use mistral_kernels::{matmul, quantize_to_vec, GgmlType, Isa};

const TYPES: [GgmlType; 5] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// (rows, cols, activation rows).
const SHAPES: [(usize, usize, usize); 6] = [
    (1, 256, 8),
    (5, 256, 9),
    (13, 4608, 9),
    (70, 512, 25),
    (7, 8960, 16),
    (130, 1024, 40),
];

#[test]
fn tiled_kquant_matmul_is_bit_identical_to_scalar() {
    if !Isa::Avx2.available() {
        eprintln!("AVX2 unavailable: the tiled kernel cannot run here");
        return;
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    pool.install(|| {
        for (i, ty) in TYPES.into_iter().enumerate() {
            for (j, &(rows, cols, n)) in SHAPES.iter().enumerate() {
                let seed = (10 * i + j) as u64;
                // Real quantized weights, with a spread of magnitudes across
                // rows so scales and mins vary.
                let wf: Vec<f32> = gaussian(rows * cols, seed)
                    .into_iter()
                    .enumerate()
                    .map(|(k, v)| v * (1.0 + (k / cols % 7) as f32))
                    .collect();
                let w = quantize_to_vec(ty, &wf).unwrap();
                let x: Vec<f32> = gaussian(n * cols, seed + 1000)
                    .into_iter()
                    .enumerate()
                    .map(|(k, v)| v * (0.1 + (k / cols % 5) as f32))
                    .collect();
                let mut scalar = vec![0f32; n * rows];
                matmul(ty, Isa::Scalar, &w, rows, cols, &x, &mut scalar).unwrap();
                let mut tiled = vec![f32::NAN; n * rows];
                matmul(ty, Isa::Avx2, &w, rows, cols, &x, &mut tiled).unwrap();
                for (k, (a, b)) in tiled.iter().zip(&scalar).enumerate() {
                    assert!(
                        a.to_bits() == b.to_bits(),
                        "{ty} {rows}x{cols} n={n} [{}, {}]: tiled {a} vs scalar {b}",
                        k / rows,
                        k % rows
                    );
                }
            }
        }
    });
}
