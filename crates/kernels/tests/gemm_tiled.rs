//! The tiled matrix × matrix kernels of `crate::gemm` (used from 8
//! activation rows on AVX2, in their AVX-512 VNNI form on `Isa::Avx512`
//! where it has one, on AMX tiles on `Isa::Amx`) against the scalar row-at-a-time kernel, on every x86
//! path this CPU can run, on
//! shapes that hit every edge of their tiling: row counts that leave a
//! partial tile, activation rows that leave a partial panel and an odd panel,
//! rows longer than one k-block, one-row matrices. The k-quants agree bit for
//! bit; the 32-value types (one FMA per block) to f32 rounding.

mod common;

use common::{assert_bits_eq, gaussian, on_threads};
use mistral_kernels::plan;
use mistral_kernels::{gemm, matmul, quantize_to_vec, GgmlType, Isa, QK_K};

const TYPES: [GgmlType; 5] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// (rows, cols, activation rows).
/// The last three are whole 16-row weight tiles and more than 32 activation
/// rows, as the AMX k-quant kernel (on `Isa::Amx`) takes them: one tile, an
/// odd panel count, a partial last panel, several row blocks and a partial
/// k-block.
const SHAPES: [(usize, usize, usize); 10] = [
    (1, 256, 8),
    (5, 256, 9),
    (13, 4608, 9),
    (70, 512, 25),
    (7, 8960, 16),
    (130, 1024, 40),
    (260, 1280, 48),
    (16, 256, 33),
    (48, 768, 49),
    (144, 1280, 40),
];

/// The x86 paths with tiled kernels this CPU can run, recorded for `test`
/// (tests/isa-report.sh says which ran and which this CPU lacks).
fn tiled_paths(test: &'static str) -> (common::Coverage, Vec<Isa>) {
    let cov = common::Coverage::new(test);
    let paths = cov.paths([Isa::Avx2, Isa::Avx512, Isa::Amx]);
    (cov, paths)
}

/// Real quantized weights with a spread of magnitudes across rows (so
/// scales and mins vary), and activations likewise.
fn operands(ty: GgmlType, rows: usize, cols: usize, n: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let wf: Vec<f32> = gaussian(rows * cols, seed)
        .into_iter()
        .enumerate()
        .map(|(k, v)| v * (1.0 + (k / cols % 7) as f32))
        .collect();
    let x: Vec<f32> = gaussian(n * cols, seed + 1000)
        .into_iter()
        .enumerate()
        .map(|(k, v)| v * (0.1 + (k / cols % 5) as f32))
        .collect();
    (quantize_to_vec(ty, &wf).unwrap(), x)
}

#[test]
fn tiled_legacy_matmul_matches_scalar() {
    let (_cov, paths) = tiled_paths("gemm_tiled::tiled_legacy_matmul_matches_scalar");
    let shapes = [
        (1, 32, 8),
        (5, 576, 9),
        (13, 1536, 17),
        (70, 96, 25),
        (37, 1024, 40),
        (21, 512, 4),
        (19, 320, 70),
    ];
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::IQ4_NL,
    ] {
        for (j, &(rows, cols, n)) in shapes.iter().enumerate() {
            let (w, x) = operands(ty, rows, cols, n, j as u64);
            let mut wf = vec![0f32; rows * cols];
            mistral_kernels::dequantize(ty, &w, &mut wf).unwrap();
            let mut scalar = vec![0f32; n * rows];
            matmul(ty, Isa::Scalar, &w, rows, cols, &x, &mut scalar).unwrap();
            // Every path, then both tiled forms whatever the paths pick at
            // this size (`None`: `matmul` on that path; `Some(avx512)`: the
            // hook).
            let runs = paths.iter().map(|&i| (Some(i), None)).chain(
                [false, true]
                    .into_iter()
                    .filter(|&a| if a { Isa::Avx512 } else { Isa::Avx2 }.available())
                    .map(|a| (None, Some(a))),
            );
            for (isa, form) in runs {
                let mut tiled = vec![f32::NAN; n * rows];
                if let Some(isa) = isa {
                    matmul(ty, isa, &w, rows, cols, &x, &mut tiled).unwrap();
                } else if let Some(avx512) = form {
                    let ran = gemm::matmul_tiled_form(ty, avx512, &w, (rows, cols), &x, &mut tiled);
                    assert!(ran.unwrap(), "{ty} form avx512={avx512} did not run");
                }
                for (k, (a, b)) in tiled.iter().zip(&scalar).enumerate() {
                    let (t, r) = (k / rows, k % rows);
                    let mag: f32 = (0..cols)
                        .map(|c| (wf[r * cols + c] * x[t * cols + c]).abs())
                        .sum();
                    assert!(
                        (a - b).abs() <= 2e-5 * mag + 1e-6,
                        "{ty} {isa:?} {form:?} {rows}x{cols} n={n} [{t}, {r}]: tiled {a} vs scalar {b}"
                    );
                }
            }
        }
    }
}

/// k-quant weights `w` times `x` on every path in `paths` where it runs a
/// tiled kernel, and on both forms of the tiled kernel this CPU has (the
/// AVX-512 one and the AVX2 one, at every batch size, through
/// `gemm::matmul_tiled_form`), bit for bit against the scalar kernel.
fn check_kquant_paths(
    paths: &[Isa],
    ty: GgmlType,
    w: &[u8],
    (rows, cols): (usize, usize),
    x: &[f32],
    what: &str,
) {
    let n = x.len() / cols;
    let mut scalar = vec![0f32; n * rows];
    matmul(ty, Isa::Scalar, w, rows, cols, x, &mut scalar).unwrap();
    for &isa in paths {
        if !plan::is_tiled(ty, isa, n) {
            // The row kernels' (tests/matmul.rs); the hook below still runs
            // both tiled forms at this size.
            continue;
        }
        let mut tiled = vec![f32::NAN; n * rows];
        matmul(ty, isa, w, rows, cols, x, &mut tiled).unwrap();
        assert_bits_eq(&format!("{what} {isa:?}"), &tiled, &scalar, rows);
    }
    for avx512 in [false, true] {
        let mut tiled = vec![f32::NAN; n * rows];
        let ran = gemm::matmul_tiled_form(ty, avx512, w, (rows, cols), x, &mut tiled).unwrap();
        let available = if avx512 { Isa::Avx512 } else { Isa::Avx2 }.available();
        assert_eq!(ran, available, "{what}: form avx512={avx512} ran {ran}");
        if ran {
            assert_bits_eq(
                &format!("{what} form avx512={avx512}"),
                &tiled,
                &scalar,
                rows,
            );
        }
    }
}

#[test]
fn tiled_kquant_matmul_is_bit_identical_to_scalar() {
    let (_cov, paths) = tiled_paths("gemm_tiled::tiled_kquant_matmul_is_bit_identical_to_scalar");
    on_threads(3, || {
        for (i, ty) in TYPES.into_iter().enumerate() {
            for (j, &(rows, cols, n)) in SHAPES.iter().enumerate() {
                let seed = (10 * i + j) as u64;
                let (w, x) = operands(ty, rows, cols, n, seed);
                let what = format!("{ty} {rows}x{cols} n={n}");
                check_kquant_paths(&paths, ty, &w, (rows, cols), &x, &what);
            }
        }
    });
}

/// The k-quant tiled kernel at the limits of its i16 sums: every level at its
/// maximum (or minimum) against activations of the largest magnitude with
/// both signs, where Q6_K's sums of `q·a` leave the i16 range before its
/// level offset is subtracted (they wrap back, exactly). Bit for bit against
/// the scalar kernel.
#[test]
fn tiled_kquant_matmul_is_exact_at_extreme_levels() {
    let (_cov, paths) = tiled_paths("gemm_tiled::tiled_kquant_matmul_is_exact_at_extreme_levels");
    let (rows, cols, n) = (5, 512, 9);
    for ty in TYPES {
        let size = mistral_kernels::bytes_for(ty, QK_K).unwrap();
        for fill in [0xFFu8, 0x00, 0xAA] {
            // Every quant bit set (or clear, or alternating), the block's
            // f16 scale(s) replaced by a small positive value.
            let mut w = vec![fill; rows * cols / QK_K * size];
            for b in w.chunks_exact_mut(size) {
                let at = match ty {
                    GgmlType::Q6_K | GgmlType::Q3_K => size - 2,
                    GgmlType::Q2_K => size - 4,
                    _ => 0,
                };
                let d = half::f16::from_f32(0.01).to_le_bytes();
                b[at..at + 2].copy_from_slice(&d);
                if matches!(ty, GgmlType::Q2_K | GgmlType::Q4_K | GgmlType::Q5_K) {
                    b[at + 2..at + 4].copy_from_slice(&d);
                }
            }
            // Activation rows: all +1, all −1, alternating ±1 in pairs.
            let x: Vec<f32> = (0..n * cols)
                .map(|k| match (k / cols) % 3 {
                    0 => 1.0,
                    1 => -1.0,
                    _ => {
                        if k % 4 < 2 {
                            1.0
                        } else {
                            -1.0
                        }
                    }
                })
                .collect();
            let what = format!("{ty} fill {fill:#x}");
            check_kquant_paths(&paths, ty, &w, (rows, cols), &x, &what);
        }
    }
}

/// Random IQ4_XS rows (every nibble and 6-bit scale pattern) whose super
/// scales `d` are small, finite and vary in sign and size.
fn iq4_xs_rows(rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = GgmlType::IQ4_XS.bytes_for((rows * cols) as u64).unwrap();
    let mut bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
    for block in bytes.chunks_exact_mut(GgmlType::IQ4_XS.type_size() as usize) {
        let d: f32 = rng.random_range(-0.01f32..0.01);
        block[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
    }
    bytes
}

/// IQ4_XS through the k-quants' tiled kernel (its AVX2 form with signed
/// levels, its AVX-512 form, and AMX tiles on `Isa::Amx` from 33 rows): bit
/// for bit the scalar kernel on every path and in both forms, at the
/// shapes of [`SHAPES`] (partial tiles and panels, several k-blocks,
/// whole 16-row tiles with more than 32 activation rows).
#[test]
fn tiled_iq4_xs_matmul_is_bit_identical_to_scalar() {
    let (_cov, paths) = tiled_paths("gemm_tiled::tiled_iq4_xs_matmul_is_bit_identical_to_scalar");
    let ty = GgmlType::IQ4_XS;
    for (j, &(rows, cols, n)) in SHAPES.iter().enumerate() {
        let w = iq4_xs_rows(rows, cols, 500 + j as u64);
        let x: Vec<f32> = gaussian(n * cols, 600 + j as u64)
            .into_iter()
            .enumerate()
            .map(|(k, v)| v * (0.1 + (k / cols % 5) as f32))
            .collect();
        let mut scalar = vec![0f32; n * rows];
        matmul(ty, Isa::Scalar, &w, rows, cols, &x, &mut scalar).unwrap();
        assert!(scalar.iter().all(|v| v.is_finite()) && scalar.iter().any(|&v| v != 0.0));
        for &isa in &paths {
            let tiled = plan::is_tiled(ty, isa, n);
            assert_eq!(tiled, isa.has_avx2() && n >= 8, "{isa:?} n={n}");
            let mut got = vec![f32::NAN; n * rows];
            on_threads(2, || matmul(ty, isa, &w, rows, cols, &x, &mut got).unwrap());
            assert_bits_eq(
                &format!("IQ4_XS {isa:?} {rows}x{cols} n={n}"),
                &got,
                &scalar,
                rows,
            );
        }
        for avx512 in [false, true] {
            let mut got = vec![f32::NAN; n * rows];
            let ran = gemm::matmul_tiled_form(ty, avx512, &w, (rows, cols), &x, &mut got).unwrap();
            let available = if avx512 { Isa::Avx512 } else { Isa::Avx2 }.available();
            assert_eq!(ran, available, "form avx512={avx512}");
            if ran {
                assert_bits_eq(
                    &format!("IQ4_XS form {rows}x{cols} n={n}"),
                    &got,
                    &scalar,
                    rows,
                );
            }
        }
    }
}
