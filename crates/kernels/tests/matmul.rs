//! The fused kernels: every instruction-set path against the scalar kernel,
//! and the scalar kernel against a naive dequantize-then-dot reference.

mod common;

use common::{assert_near_f64_dot, gaussian, on_threads, random_weights, round_to_bf16, TYPES};
use mistral_kernels::{dequantize, matmul, plan, quantize_to_vec, ActFormat, GgmlType, Isa};

/// The activations as the kernel sees them (quantized then dequantized).
fn effective_activations(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let act_ty = match ActFormat::for_weights(ty).unwrap() {
        ActFormat::F32 => return x.to_vec(),
        ActFormat::Q8_0 => GgmlType::Q8_0,
        ActFormat::Q8_1 => GgmlType::Q8_1,
        ActFormat::Q8K => GgmlType::Q8_K,
    };
    let q = quantize_to_vec(act_ty, x).unwrap();
    let mut out = vec![0f32; x.len()];
    dequantize(act_ty, &q, &mut out).unwrap();
    out
}

/// The i-quants on lattices (`mistral_kernels::iquant`).
fn is_lattice(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ1_S)
}

/// (rows, cols, activation rows): one row, rows not a multiple of the thread
/// count or chunk size, more activation rows than a tile, a very wide row.
const SHAPES: [(usize, usize, usize); 6] = [
    (1, 256, 1),
    (7, 512, 1),
    (13, 1024, 3),
    (65, 768, 17),
    (3, 10240, 2),
    (37, 4096, 1),
];

/// Relative tolerance of the scalar kernel vs the f64 naive reference, and of
/// SIMD paths with a different f32 summation order vs the scalar kernel.
const REL_TOL: f64 = 2e-5;

/// Relative error bound of rounding an f32 to bfloat16 (to nearest):
/// half a unit in the last of its 8 significant bits.
const BF16_ROUNDING: f64 = 1.0 / 512.0;

fn check_type(ty: GgmlType, rows: usize, cols: usize, n: usize, seed: u64) {
    let cov = common::Coverage::new("matmul::check_type");
    let w = random_weights(ty, rows, cols, seed);
    let x = gaussian(n * cols, seed + 100);
    let mut wf = vec![0f32; rows * cols];
    dequantize(ty, &w, &mut wf).unwrap();
    let xe = effective_activations(ty, &x);

    let mut scalar = vec![0f32; n * rows];
    matmul(ty, Isa::Scalar, &w, rows, cols, &x, &mut scalar).unwrap();
    assert_near_f64_dot(
        &format!("{ty} scalar vs naive, n={n}"),
        &scalar,
        (rows, cols),
        |i| wf[i] as f64,
        |i| xe[i] as f64,
        REL_TOL,
    );
    for isa in cov.all() {
        let mut y = vec![0f32; n * rows];
        matmul(ty, isa, &w, rows, cols, &x, &mut y).unwrap();
        if (isa.is_neon() && ty.is_quantized()) || is_lattice(ty) {
            // The AArch64 kernels, and every kernel of the i-quants on
            // lattices, sum each block exactly in integers and take the
            // scalar kernel's own float steps: equal bit for bit.
            let what = format!("{ty} {isa:?} {rows}x{cols}x{n}");
            common::assert_bits_eq(&what, &y, &scalar, rows);
            continue;
        }
        if plan::rounds_activations_to_bf16(ty, isa, n, (rows, cols)) {
            // This path multiplies bfloat16-rounded activations: checked
            // against the naive product of those.
            let xb = round_to_bf16(&x);
            assert_near_f64_dot(
                &format!("{ty} {isa:?} (bf16 activations) vs naive, n={n}"),
                &y,
                (rows, cols),
                |i| wf[i] as f64,
                |i| xb[i] as f64,
                REL_TOL,
            );
            continue;
        }
        for (i, (&a, &b)) in y.iter().zip(&scalar).enumerate() {
            let (t, r) = (i / rows, i % rows);
            let mag: f64 = (0..cols)
                .map(|c| (wf[r * cols + c] as f64 * xe[t * cols + c] as f64).abs())
                .sum();
            assert!(
                ((a - b) as f64).abs() <= REL_TOL * mag + 1e-6,
                "{ty} {isa:?} [{t},{r}] of {rows}x{cols}x{n}: {a} vs scalar {b}"
            );
        }
    }
}

#[test]
fn every_path_matches_scalar_and_scalar_matches_naive() {
    eprintln!("paths tested: {:?}", Isa::available_paths());
    // 3 threads: row counts are not multiples of the thread count.
    on_threads(3, || {
        for (i, ty) in TYPES.into_iter().enumerate() {
            for (j, &(rows, cols, n)) in SHAPES.iter().enumerate() {
                check_type(ty, rows, cols, n, (i * 10 + j) as u64);
            }
        }
        // Float weights take any row length (exercise the SIMD tails).
        for ty in [GgmlType::F16, GgmlType::BF16, GgmlType::F32] {
            check_type(ty, 5, 77, 3, 1);
            check_type(ty, 2, 9, 1, 2);
        }
        // 32-element types on rows that are not a multiple of 256.
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::IQ4_NL,
        ] {
            check_type(ty, 9, 96, 2, 3);
            check_type(ty, 4, 576, 5, 4);
        }
    });
}

#[test]
fn quantized_weights_track_the_f32_product() {
    // End to end with realistic data: quantize f32 weights, multiply, compare
    // with the exact f32 product. Bounds are loose multiples of the types'
    // weight + activation quantization error.
    let (rows, cols, n) = (32, 1024, 4);
    let wf = gaussian(rows * cols, 1);
    let x = gaussian(n * cols, 2);
    for (ty, tol) in [
        (GgmlType::Q8_0, 0.02),
        (GgmlType::Q4_0, 0.12),
        (GgmlType::Q4_1, 0.12),
        (GgmlType::Q5_0, 0.07),
        (GgmlType::Q5_1, 0.07),
        (GgmlType::IQ4_NL, 0.1),
        (GgmlType::Q2_K, 0.35),
        (GgmlType::Q3_K, 0.2),
        (GgmlType::Q4_K, 0.1),
        (GgmlType::Q5_K, 0.06),
        (GgmlType::Q6_K, 0.04),
        (GgmlType::F16, 0.001),
    ] {
        let w = quantize_to_vec(ty, &wf).unwrap();
        let mut y = vec![0f32; n * rows];
        matmul(ty, Isa::best(), &w, rows, cols, &x, &mut y).unwrap();
        let (mut err, mut norm) = (0f64, 0f64);
        for t in 0..n {
            for r in 0..rows {
                let exact: f64 = (0..cols)
                    .map(|c| wf[r * cols + c] as f64 * x[t * cols + c] as f64)
                    .sum();
                err += (y[t * rows + r] as f64 - exact).powi(2);
                norm += exact * exact;
            }
        }
        let rel = (err / norm).sqrt();
        assert!(rel < tol, "{ty}: relative error {rel} over {tol}");
    }
}

#[test]
fn bad_shapes_are_errors() {
    let w = random_weights(GgmlType::Q4_K, 2, 256, 0);
    let x = vec![0f32; 256];
    let mut y = vec![0f32; 2];
    assert!(matmul(GgmlType::Q4_K, Isa::Scalar, &w, 2, 256, &x, &mut y).is_ok());
    assert!(matmul(GgmlType::Q4_K, Isa::Scalar, &w, 3, 256, &x, &mut y).is_err());
    assert!(matmul(GgmlType::Q4_K, Isa::Scalar, &w, 2, 256, &x[..255], &mut y).is_err());
    assert!(matmul(GgmlType::Q4_K, Isa::Scalar, &w, 2, 256, &x, &mut y[..1]).is_err());
    assert!(matmul(
        GgmlType::Q4_K,
        Isa::Scalar,
        &w[..200],
        1,
        256,
        &x,
        &mut y[..1]
    )
    .is_err());
    // A type without a kernel.
    assert!(matmul(
        GgmlType::IQ1_M,
        Isa::Scalar,
        &[0u8; 56],
        1,
        256,
        &x,
        &mut y[..1]
    )
    .is_err());
    assert!(matmul(GgmlType::Q4_K, Isa::Scalar, &w, 2, 100, &x[..100], &mut y).is_err());
}

#[test]
fn batched_rows_equal_one_row_at_a_time() {
    let cov = common::Coverage::new("matmul::batched_rows_equal_one_row_at_a_time");
    // Matrix x matrix must give exactly the one-row results where it runs
    // the same per-row operations (the scalar path, the four-row kernels).
    // The tiled kernels of crate::gemm sum in another order (the k-quants in
    // the scalar kernel's, Q4_0/Q4_1/Q5_0/Q5_1 and F16 with one FMA per
    // block or value): those agree to the tolerance of `check_type`.
    for ((rows, cols, n), ty) in [(6, 512, 11), (5, 512, 6)]
        .into_iter()
        .flat_map(|s| TYPES.map(|ty| (s, ty)))
    {
        let w = random_weights(ty, rows, cols, 42);
        let x = gaussian(n * cols, 43);
        let mut wf = vec![0f32; rows * cols];
        dequantize(ty, &w, &mut wf).unwrap();
        for isa in cov.all() {
            let mut y = vec![0f32; n * rows];
            matmul(ty, isa, &w, rows, cols, &x, &mut y).unwrap();
            for t in 0..n {
                let mut yt = vec![0f32; rows];
                mistral_kernels::matvec(
                    ty,
                    isa,
                    &w,
                    rows,
                    cols,
                    &x[t * cols..(t + 1) * cols],
                    &mut yt,
                )
                .unwrap();
                let tiled = mistral_kernels::plan::is_tiled(ty, isa, n);
                if ty.is_quantized() && !tiled {
                    assert_eq!(yt, y[t * rows..(t + 1) * rows], "{ty} {isa:?} token {t}");
                    continue;
                }
                // Rounding an activation to bfloat16 moves it by at most
                // 2^-9 of itself: the batched sum by at most 2^-9 of `mag`.
                let tol = if mistral_kernels::plan::rounds_activations_to_bf16(
                    ty,
                    isa,
                    n,
                    (rows, cols),
                ) {
                    BF16_ROUNDING + REL_TOL
                } else {
                    REL_TOL
                };
                for r in 0..rows {
                    let mag: f64 = (0..cols)
                        .map(|c| (wf[r * cols + c] as f64 * x[t * cols + c] as f64).abs())
                        .sum();
                    let (a, b) = (y[t * rows + r], yt[r]);
                    assert!(
                        ((a - b) as f64).abs() <= tol * mag + 1e-6,
                        "{ty} {isa:?} [{t},{r}]: batched {a} vs one row {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn q8k_type_row_kernels_equal_the_scalar_kernel_bit_for_bit() {
    // Every path's row kernels for the types on Q8_K activations sum each
    // super-block exactly and finish it with the scalar kernel's float step,
    // so they agree with it (and with the tiled kernels) exactly: one,
    // several and an odd number of super-blocks (the one-row kernels take
    // four at a time); rows of very different magnitude.
    // `tests/batch_invariance.rs` holds every batch to the same bits.
    let cov = common::Coverage::new("matmul::q8k_type_row_kernels_equal_the_scalar_kernel");
    let cases = [(3, 256, 1), (17, 2304, 2), (9, 4096, 3), (5, 1792, 4)];
    for (ty, (rows, cols, seed)) in common::q8k_types().flat_map(|ty| cases.map(|c| (ty, c))) {
        let w = random_weights(ty, rows, cols, seed);
        let x: Vec<f32> = gaussian(cols, seed + 10)
            .into_iter()
            .enumerate()
            .map(|(k, v)| v * (0.01 + (k % 7) as f32))
            .collect();
        let run = |isa| {
            let mut y = vec![f32::NAN; rows];
            mistral_kernels::matvec(ty, isa, &w, rows, cols, &x, &mut y).unwrap();
            y
        };
        let want = run(Isa::Scalar);
        for isa in cov.all() {
            common::assert_bits_eq(
                &format!("{ty} {isa:?} {rows}x{cols}"),
                &run(isa),
                &want,
                rows,
            );
        }
    }
}

#[test]
fn two_row_kernels_equal_the_one_row_kernel_bit_for_bit() {
    use mistral_kernels::dot::{row_dot, row_dot2, ActRow};
    use mistral_kernels::{cast_blocks, BlockQ8_0, BlockQ8_1};
    let cov = common::Coverage::new("matmul::two_row_kernels_equal_the_one_row_kernel");
    let mut ran = 0;
    for ty in TYPES {
        let fmt = ActFormat::for_weights(ty).unwrap();
        if fmt == ActFormat::Q8K {
            continue;
        }
        // The half types (no two-row kernel today; one added is checked
        // here) take any length: a tail of 3 past the last 8.
        let cols = if fmt == ActFormat::F32 { 555 } else { 544 };
        let w = random_weights(ty, 2, cols, 7);
        let row = w.len() / 2;
        let x = gaussian(cols, 8);
        let q8_0 = quantize_to_vec(GgmlType::Q8_0, &x[..544]).unwrap();
        let q8_1 = quantize_to_vec(GgmlType::Q8_1, &x[..544]).unwrap();
        let act = match fmt {
            ActFormat::F32 => ActRow::F32(&x),
            ActFormat::Q8_0 => ActRow::Q8_0(cast_blocks::<BlockQ8_0>(&q8_0).unwrap()),
            ActFormat::Q8_1 => ActRow::Q8_1(cast_blocks::<BlockQ8_1>(&q8_1).unwrap()),
            ActFormat::Q8K => unreachable!(),
        };
        for isa in cov.all() {
            let Some(two) = row_dot2(ty, isa, [&w[..row], &w[row..]], act).unwrap() else {
                continue;
            };
            let one = [
                row_dot(ty, isa, &w[..row], act).unwrap(),
                row_dot(ty, isa, &w[row..], act).unwrap(),
            ];
            assert_eq!(two.map(f32::to_bits), one.map(f32::to_bits), "{ty} {isa:?}");
            ran += 1;
        }
    }
    // The 32-value types have two-row kernels on AVX-512.
    if cov.runs(Isa::Avx512) {
        assert!(ran >= 5, "only {ran} two-row kernels ran");
    }
}
