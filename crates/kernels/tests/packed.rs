//! The packed layouts (`mistral_kernels::packed`): Q4_K by 16 rows, Q2_K by
//! 8, Q8_0 and the 4-bit 32-value types by 16. Packing is lossless, and every product on them (the scalar, AVX2
//! and AVX-512 matrix × vector kernels, the tiled prefill kernels reading
//! packed rows) equals the scalar kernel on the GGUF bytes bit for bit
//! (the tiled kernels: their own result on the GGUF bytes), on row counts
//! that leave a partial group.

mod common;

use common::{assert_bits_eq, gaussian};
use mistral_kernels::blocks::ByteBlock;
use mistral_kernels::packed::{
    BlockQ2Kx8, BlockQ4Kx16, GroupBlock, Packed, PackedQ2K, PackedQ32, PackedQ4K, PackedQ8_0,
};
use mistral_kernels::{quantize_to_vec, GgmlType, Isa, QMatrix, QK_K};
use std::sync::Arc;

/// Q4_K bytes whose rows differ in magnitude (so scales and mins vary).
fn q4k_rows(rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let w: Vec<f32> = gaussian(rows * cols, seed)
        .into_iter()
        .enumerate()
        .map(|(k, v)| v * (1.0 + (k / cols % 7) as f32) + 0.3 * (k / cols % 3) as f32)
        .collect();
    quantize_to_vec(GgmlType::Q4_K, &w).unwrap()
}

/// Arbitrary bytes in every field (any bit pattern is a valid block).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

#[test]
fn packing_is_lossless() {
    for (rows, cols) in [(8, 256), (13, 512), (3, 256), (24, 1024), (17, 768)] {
        let seed = (rows * cols) as u64;
        let bytes = random_bytes(rows * cols / QK_K * 144, seed);
        let p = PackedQ4K::pack(&bytes, rows, cols).unwrap();
        assert_eq!(p.to_bytes(), bytes, "Q4_K {rows}x{cols}");
        let bytes = random_bytes(rows * cols / QK_K * 84, seed + 1);
        let p = PackedQ2K::pack(&bytes, rows, cols).unwrap();
        assert_eq!(p.to_bytes(), bytes, "Q2_K {rows}x{cols}");
    }
}

#[test]
fn packing_rejects_wrong_sizes() {
    assert!(PackedQ4K::pack(&[0u8; 144], 2, 256).is_err());
    assert!(PackedQ4K::pack(&[0u8; 144], 1, 250).is_err());
    assert!(PackedQ4K::pack(&[0u8; 0], usize::MAX, 256).is_err());
    assert!(PackedQ2K::pack(&[0u8; 84], 2, 256).is_err());
    assert!(PackedQ2K::pack(&[0u8; 144], 1, 256).is_err());
    assert!(PackedQ2K::pack(&[0u8; 0], usize::MAX, 256).is_err());
}

#[test]
fn owned_q4k_matrices_are_packed_and_read_back_the_same() {
    let (rows, cols) = (21, 512);
    let bytes = q4k_rows(rows, cols, 5);
    let m = QMatrix::new(GgmlType::Q4_K, rows, cols, bytes.clone()).unwrap();
    assert!(m.is_packed());
    assert_eq!(m.bytes(), &bytes[..]);
    // Borrowed bytes: a range of the wrong length, or past the end, is refused.
    let shared = Arc::new(bytes.clone());
    for range in [0..0, 1..bytes.len() + 1] {
        let r = QMatrix::from_shared(GgmlType::Q4_K, rows, cols, shared.clone(), range.clone());
        assert!(r.is_err(), "range {range:?} of {} bytes", bytes.len());
    }
    let mut a = vec![0f32; cols];
    let mut b = vec![0f32; cols];
    let reference = mistral_kernels::dequantize_row;
    for r in [0, 7, 8, 16, 20] {
        m.dequantize_row(r, &mut a).unwrap();
        reference(GgmlType::Q4_K, &m.bytes(), cols, r, &mut b).unwrap();
        assert_eq!(a, b, "row {r}");
    }
    assert!(m.dequantize_row(rows, &mut a).is_err());
}

#[test]
fn packed_products_equal_the_scalar_kernel_bit_for_bit() {
    let cov = common::Coverage::new("packed::packed_products_equal_the_scalar_kernel_bit_for_bit");
    // (rows, cols, activation rows): partial groups, one group, decode,
    // small batches (per-token kernel) and prefill (tiled kernel).
    let shapes = [
        (16, 256, 1),
        (21, 512, 1),
        (24, 256, 4),
        (37, 1024, 3),
        (64, 256, 5),
        (29, 768, 9),
        (70, 512, 17),
        // Several groups per task, odd group counts (the per-group kernels).
        (200, 1024, 1),
        (45, 2304, 2),
        // Prefill over several row blocks, the last group partial
        // (the AVX-512 kernel expands the packed groups 8 rows at a time,
        // and row blocks start in the middle of a 16-row group).
        (150, 512, 20),
        (261, 768, 33),
        // Whole 16-row tiles and more than 32 activation rows (the AMX
        // kernel on `Isa::Amx`): an odd panel count, several row blocks and a
        // partial k-block.
        (48, 768, 35),
        (160, 1280, 40),
        // 64 activation rows and more (the tiled kernels on AVX-512).
        (150, 512, 70),
        (96, 768, 64),
    ];
    for (i, &(rows, cols, n)) in shapes.iter().enumerate() {
        let bytes = q4k_rows(rows, cols, i as u64);
        let x: Vec<f32> = gaussian(n * cols, 100 + i as u64)
            .into_iter()
            .enumerate()
            .map(|(k, v)| v * (0.1 + (k / cols % 5) as f32))
            .collect();
        let len = bytes.len();
        let plain =
            QMatrix::from_shared(GgmlType::Q4_K, rows, cols, Arc::new(bytes.clone()), 0..len)
                .unwrap()
                .with_isa(Isa::Scalar)
                .unwrap();
        assert!(!plain.is_packed());
        let mut want = vec![0f32; n * rows];
        plain.matmul(&x, &mut want).unwrap();
        for isa in cov.all() {
            let m = QMatrix::new(GgmlType::Q4_K, rows, cols, bytes.clone())
                .unwrap()
                .with_isa(isa)
                .unwrap();
            assert!(m.is_packed());
            let mut got = vec![f32::NAN; n * rows];
            m.matmul(&x, &mut got).unwrap();
            assert_bits_eq(&format!("{isa:?} {rows}x{cols} n={n}"), &got, &want, rows);
        }
        // The tiled kernel reading the packed rows, in both forms, at any
        // batch (the dispatch takes the row kernels at every batch on AVX-512).
        let packed = PackedQ4K::pack(&bytes, rows, cols).unwrap();
        for avx512 in [false, true] {
            let mut got = vec![f32::NAN; n * rows];
            let ran =
                mistral_kernels::gemm::matmul_packed_tiled_form(avx512, &packed, &x, &mut got)
                    .unwrap();
            // It runs wherever its instruction set does: no silent skip.
            let isa = if avx512 { Isa::Avx512 } else { Isa::Avx2 };
            assert_eq!(ran, cov.runs(isa), "tiled avx512={avx512}: ran {ran}");
            if ran {
                let what = format!("tiled avx512={avx512} {rows}x{cols} n={n}");
                assert_bits_eq(&what, &got, &want, rows);
            }
        }
    }
}

/// `rows` × `cols` weights of `B`'s GGUF type made of `block(r)` for every
/// super-block of row `r`, against activation rows of +1 (max > 0: Q8_K
/// bytes −128), −1 (+128 clamps to 127) and mixed signs: on every path the
/// packed matrix gives the scalar kernel's bits for 1 and 3 activation rows
/// (the matrix × vector kernels: the SIMD ones, or the scalar reference on
/// the packed layout).
fn assert_packed_exact<B: GroupBlock>(
    (rows, cols): (usize, usize),
    block: impl Fn(usize) -> Vec<u8>,
) {
    let cov = common::Coverage::new("packed::assert_packed_exact");
    let ty = <B::Gguf as ByteBlock>::TYPE;
    let bytes: Vec<u8> = (0..rows)
        .flat_map(|r| (0..cols / QK_K).flat_map(|_| block(r)).collect::<Vec<u8>>())
        .collect();
    let x: Vec<f32> = (0..3 * cols)
        .map(|k| match k / cols {
            0 => 1.0,
            1 => -1.0,
            _ if k % 4 == 3 => -1.0,
            _ => 1.0,
        })
        .collect();
    let len = bytes.len();
    let plain = QMatrix::from_shared(ty, rows, cols, Arc::new(bytes.clone()), 0..len)
        .unwrap()
        .with_isa(Isa::Scalar)
        .unwrap();
    let mut want = vec![0f32; 3 * rows];
    plain.matmul(&x, &mut want).unwrap();
    assert!(want.iter().all(|v| v.is_finite() && *v != 0.0));
    let packed = Packed::<B>::pack(&bytes, rows, cols).unwrap();
    for isa in cov.all() {
        for n in [1, 3] {
            let mut got = vec![f32::NAN; n * rows];
            packed.matmul(isa, &x[..n * cols], &mut got).unwrap();
            assert_bits_eq(
                &format!("{ty} {isa:?} n={n}"),
                &got,
                &want[..n * rows],
                rows,
            );
        }
    }
}

/// A small normal f16 per row (the sums, not the scales, are what is tested).
fn f16_bytes(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// Every level 15 and every 6-bit scale and min 63: the largest integer
/// sums a Q4_K super-block can make (the AVX-512 kernel keeps 16 × the high
/// nibbles' scaled sums in i32).
#[test]
fn packed_products_are_exact_at_the_extreme_levels() {
    assert_packed_exact::<BlockQ4Kx16>((24, 1024), |r| {
        let mut b = vec![0xFFu8; 144];
        b[..2].copy_from_slice(&f16_bytes(1e-3 * (1 + r % 5) as f32));
        b[2..4].copy_from_slice(&f16_bytes(2e-4 * (1 + r % 3) as f32));
        b
    });
}

/// Every level 3 and every 4-bit scale and min 15: the largest integer sums
/// a Q2_K super-block can make (the AVX-512 kernel keeps 4^k × the sums of
/// bit-pair k in i32).
#[test]
fn packed_q2k_products_are_exact_at_the_extreme_levels() {
    assert_packed_exact::<BlockQ2Kx8>((16, 768), |r| {
        let mut b = vec![0xFFu8; 84];
        b[80..82].copy_from_slice(&f16_bytes(1e-3 * (1 + r % 5) as f32));
        b[82..84].copy_from_slice(&f16_bytes(2e-4 * (1 + r % 3) as f32));
        b
    });
}

/// Q2_K bytes whose rows differ in magnitude and offset (so scales and mins vary).
fn q2k_rows(rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let w: Vec<f32> = gaussian(rows * cols, seed)
        .into_iter()
        .enumerate()
        .map(|(k, v)| v * (1.0 + (k / cols % 5) as f32) + 0.5 * (k / cols % 3) as f32)
        .collect();
    quantize_to_vec(GgmlType::Q2_K, &w).unwrap()
}

/// Q2_K is packed on AVX-512 only, and goes back to the GGUF layout for
/// other paths. On every path, the packed matrix's matrix × vector kernel
/// (AVX-512, or the scalar reference on the packed layout) gives the scalar
/// kernel's bits, and the tiled prefill on the packed rows the plain
/// layout's; an owned `QMatrix` gives the one or the other.
#[test]
fn packed_q2k_products_equal_the_plain_layout_bit_for_bit() {
    let shapes = [
        (8, 256, 1),
        (13, 512, 1),
        (16, 256, 1),
        (21, 512, 1),
        (24, 256, 4),
        (37, 1024, 3),
        (200, 1024, 1),
        (45, 2304, 2),
        // Small batches (row kernel on AVX-512) and prefill (the tiled
        // kernels expand the packed rows).
        (150, 512, 20),
        (261, 768, 33),
        (48, 768, 50),
        (72, 512, 64),
        (40, 512, 130),
    ];
    for (i, &shape) in shapes.iter().enumerate() {
        let (rows, cols, _) = shape;
        let case = Case::new(
            GgmlType::Q2_K,
            shape,
            i,
            q2k_rows(rows, cols, 50 + i as u64),
        );
        let packed = PackedQ2K::pack(&case.bytes, rows, cols).unwrap();
        case.check_packed(
            |isa, x, y| packed.matmul(isa, x, y).unwrap(),
            |isa| isa.has_avx512() && rows >= 8,
        );
    }
}

/// One product of a test: the weights' GGUF bytes and `n` activation rows
/// of varied magnitude.
struct Case {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    bytes: Vec<u8>,
    x: Vec<f32>,
}

impl Case {
    fn new(ty: GgmlType, (rows, cols, n): (usize, usize, usize), i: usize, bytes: Vec<u8>) -> Case {
        let x: Vec<f32> = gaussian(n * cols, 200 + i as u64)
            .into_iter()
            .enumerate()
            .map(|(k, v)| v * (0.1 + (k / cols % 5) as f32))
            .collect();
        Case {
            ty,
            rows,
            cols,
            bytes,
            x,
        }
    }

    /// The product of the GGUF layout (never packed) on `isa`.
    /// The tiled kernel's form for `isa` (AVX-512 or AVX2) on the GGUF
    /// bytes: the kernels that read a packed layout in place give its bits.
    fn tiled_form(&self, isa: Isa) -> Vec<f32> {
        let mut y = vec![0f32; self.x.len() / self.cols * self.rows];
        let (rows, cols) = (self.rows, self.cols);
        let ran = mistral_kernels::gemm::matmul_tiled_form(
            self.ty,
            isa.has_avx512(),
            &self.bytes,
            (rows, cols),
            &self.x,
            &mut y,
        )
        .unwrap();
        assert!(
            ran,
            "{} {isa:?}: the tiled form runs where the dispatch tiles",
            self.ty
        );
        y
    }

    fn plain(&self, isa: Isa) -> Vec<f32> {
        let len = self.bytes.len();
        let m = QMatrix::from_shared(
            self.ty,
            self.rows,
            self.cols,
            Arc::new(self.bytes.clone()),
            0..len,
        )
        .unwrap()
        .with_isa(isa)
        .unwrap();
        let mut y = vec![0f32; self.x.len() / self.cols * self.rows];
        m.matmul(&self.x, &mut y).unwrap();
        y
    }

    /// On every path: the packed matrix (`packed(isa, x, y)`) and an owned
    /// `QMatrix` (packed where `packs(isa)`, else in the GGUF layout) give the scalar kernel's bits where the packed
    /// matrix × vector kernel runs (not tiled), and elsewhere the GGUF
    /// layout's product on the same path (the tiled kernel, which reads the
    /// packed rows, equals itself on the GGUF bytes).
    fn check_packed(&self, packed: impl Fn(Isa, &[f32], &mut [f32]), packs: impl Fn(Isa) -> bool) {
        let cov = common::Coverage::new("packed::Case::check_packed");
        let (ty, rows, cols) = (self.ty, self.rows, self.cols);
        let n = self.x.len() / cols;
        let scalar = self.plain(Isa::Scalar);
        for isa in cov.all() {
            let what = format!("{ty} {isa:?} {rows}x{cols} n={n}");
            let tiled = mistral_kernels::plan::is_tiled_packed(ty, isa, n);
            // The 4-bit types' AVX-512 tiles keep the row kernels' float
            // step: the scalar bits at every batch.
            let exact = mistral_kernels::plan::is_q32(ty) && isa.has_avx512();
            let want = if tiled && !exact {
                self.tiled_form(isa)
            } else {
                scalar.clone()
            };
            let mut got = vec![f32::NAN; n * rows];
            packed(isa, &self.x, &mut got);
            assert_bits_eq(&format!("packed {what}"), &got, &want, rows);
            let m = QMatrix::new(ty, rows, cols, self.bytes.clone())
                .unwrap()
                .with_isa(isa)
                .unwrap();
            assert_eq!(m.is_packed(), packs(isa), "{what}");
            assert_eq!(m.bytes(), &self.bytes[..]);
            let mut got = vec![f32::NAN; n * rows];
            m.matmul(&self.x, &mut got).unwrap();
            let want = match (m.is_packed(), tiled && !exact) {
                (true, false) => scalar.clone(),
                (true, true) => self.tiled_form(isa),
                (false, _) => self.plain(isa),
            };
            assert_bits_eq(&what, &got, &want, rows);
        }
    }
}

#[test]
fn packed_products_check_shapes() {
    let m = QMatrix::new(GgmlType::Q4_K, 8, 256, q4k_rows(8, 256, 1)).unwrap();
    let mut y = vec![0f32; 8];
    assert!(m.matvec(&[0.0; 255], &mut y).is_err());
    assert!(m.matmul(&[0.0; 256], &mut y[..7]).is_err());
    assert!(m.matmul(&[0.0; 300], &mut y).is_err());
}

/// Q8_0 bytes whose rows differ in magnitude.
fn q8_0_rows(rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let w: Vec<f32> = gaussian(rows * cols, seed)
        .into_iter()
        .enumerate()
        .map(|(k, v)| v * (0.5 + (k / cols % 5) as f32))
        .collect();
    quantize_to_vec(GgmlType::Q8_0, &w).unwrap()
}

#[test]
fn q8_0_packing_is_lossless() {
    for (rows, cols) in [(16, 32), (13, 64), (1, 32), (40, 320), (33, 96)] {
        let bytes = random_bytes(rows * cols / 32 * 34, (rows * cols) as u64);
        let p = PackedQ8_0::pack(&bytes, rows, cols).unwrap();
        assert_eq!(p.to_bytes(), bytes, "{rows}x{cols}");
    }
    assert!(PackedQ8_0::pack(&[0u8; 34], 2, 32).is_err());
    assert!(PackedQ8_0::pack(&[0u8; 34], 1, 30).is_err());
}

#[test]
fn owned_q8_0_matrices_are_packed_for_avx512_and_read_back_the_same() {
    let (rows, cols) = (37, 256);
    let bytes = q8_0_rows(rows, cols, 9);
    let m = QMatrix::new(GgmlType::Q8_0, rows, cols, bytes.clone()).unwrap();
    assert_eq!(m.is_packed(), Isa::best().has_avx512());
    assert_eq!(m.bytes(), &bytes[..]);
    let (mut a, mut b) = (vec![0f32; cols], vec![0f32; cols]);
    for r in [0, 15, 16, 36] {
        m.dequantize_row(r, &mut a).unwrap();
        mistral_kernels::dequantize_row(GgmlType::Q8_0, &bytes, cols, r, &mut b).unwrap();
        assert_eq!(a, b, "row {r}");
    }
    assert!(m.dequantize_row(rows, &mut a).is_err());
    assert!(m.dequantize_row(0, &mut a[..cols - 1]).is_err());
    // Any other path reads the GGUF layout again.
    let m = m.with_isa(Isa::Scalar).unwrap();
    assert!(!m.is_packed());
    assert_eq!(m.bytes(), &bytes[..]);
}

#[test]
fn packed_q8_0_products_equal_the_plain_kernels() {
    let cov = common::Coverage::new("packed::packed_q8_0_products_equal_the_plain_kernels");
    let shapes = [
        (16, 256, 1),
        (13, 512, 1),
        (37, 1024, 3),
        (200, 1024, 1),
        (45, 2304, 2),
        (29, 768, 5),
        (70, 512, 17),
        (33, 256, 40),
        (45, 2304, 13),
        (16, 256, 64),
        (45, 2304, 70),
        // Many activation rows (the AMX kernel on `Isa::Amx` from
        // `AMX_MIN_ROWS_Q8_0`): a partial last group and tile, and an odd
        // tile count.
        (37, 1024, 257),
        (48, 512, 270),
        // 17 blocks: a k-block of 16, then one block alone.
        (32, 544, 256),
    ];
    for (i, &shape) in shapes.iter().enumerate() {
        let (rows, cols, n) = shape;
        let case = Case::new(
            GgmlType::Q8_0,
            shape,
            i,
            q8_0_rows(rows, cols, 50 + i as u64),
        );
        let (bytes, x) = (&case.bytes, &case.x);
        let plain = |isa: Isa| case.plain(isa);
        let scalar = plain(Isa::Scalar);
        let packed = PackedQ8_0::pack(bytes, rows, cols).unwrap();
        for isa in cov.all() {
            let tiled = mistral_kernels::plan::is_tiled_packed(GgmlType::Q8_0, isa, n);
            let mut got = vec![f32::NAN; n * rows];
            packed.matmul(isa, x, &mut got).unwrap();
            let what = format!("{isa:?} {rows}x{cols} n={n}");
            if isa.has_avx512() {
                // The AVX-512 kernels (matrix × vector, tiles, AMX tiles)
                // take one FMA per block, in order: each token's result is
                // the same bits at every batch size (the one-row product's)
                // and agrees with the scalar kernel to rounding.
                for t in 0..n {
                    let mut one = vec![f32::NAN; rows];
                    packed
                        .matmul(isa, &x[t * cols..(t + 1) * cols], &mut one)
                        .unwrap();
                    assert_bits_eq(
                        &format!("{what} token {t} vs alone"),
                        &got[t * rows..(t + 1) * rows],
                        &one,
                        rows,
                    );
                }
            }
            if isa.has_avx512()
                || (tiled && !mistral_kernels::plan::is_tiled(GgmlType::Q8_0, isa, n))
            {
                // One FMA per block where the scalar kernel multiplies and
                // adds: equal to f32 rounding.
                let mut w = vec![0f32; rows * cols];
                mistral_kernels::dequantize(GgmlType::Q8_0, bytes, &mut w).unwrap();
                for (i, (&g, &s)) in got.iter().zip(&scalar).enumerate() {
                    let (t, r) = (i / rows, i % rows);
                    let mag: f32 = (0..cols)
                        .map(|c| (w[r * cols + c] * x[t * cols + c]).abs())
                        .sum();
                    assert!((g - s).abs() <= 1e-5 * mag, "{what} [{t}, {r}]: {g} vs {s}");
                }
                continue;
            }
            let want = if tiled { plain(isa) } else { scalar.clone() };
            assert_bits_eq(&what, &got, &want, rows);
        }
    }
}

/// The 4-bit 32-value types [`PackedQ32`] holds.
const Q32_TYPES: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::IQ4_NL,
];

#[test]
fn q32_packing_is_lossless() {
    for ty in Q32_TYPES {
        let size = mistral_kernels::blocks::bytes_for(ty, 32).unwrap();
        for (rows, cols) in [(16, 32), (13, 64), (1, 32), (40, 320), (33, 96)] {
            let bytes = random_bytes(rows * cols / 32 * size, (rows * cols) as u64 + size as u64);
            let p = PackedQ32::pack(ty, &bytes, rows, cols).unwrap();
            assert_eq!(p.to_bytes(), bytes, "{ty} {rows}x{cols}");
            let mut block = [0u8; 24];
            for (r, i) in [(0, 0), (rows - 1, cols / 32 - 1), (rows / 2, cols / 64)] {
                let at = (r * cols / 32 + i) * size;
                assert_eq!(
                    p.block_bytes(r, i, &mut block),
                    &bytes[at..at + size],
                    "{ty} ({r}, {i})"
                );
            }
        }
        assert!(PackedQ32::pack(ty, &vec![0u8; size], 2, 32).is_err());
        assert!(PackedQ32::pack(ty, &vec![0u8; size], 1, 30).is_err());
        assert!(PackedQ32::pack(ty, &[], usize::MAX, 32).is_err());
    }
    assert!(PackedQ32::pack(GgmlType::Q8_0, &[0u8; 34], 1, 32).is_err());
}

/// Weights of `ty` whose rows differ in magnitude and offset (so scales
/// and mins vary, with both signs).
fn q32_rows(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let w: Vec<f32> = gaussian(rows * cols, seed)
        .into_iter()
        .enumerate()
        .map(|(k, v)| v * (0.5 + (k / cols % 5) as f32) + 0.7 * (k / cols % 3) as f32 - 0.5)
        .collect();
    quantize_to_vec(ty, &w).unwrap()
}

/// Every level at its top (nibbles 15, fifth bits set) with small positive
/// scales and mins: the largest integer sums a block can make.
fn q32_extreme_rows(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let size = mistral_kernels::blocks::bytes_for(ty, 32).unwrap();
    let mut bytes = vec![0xFFu8; rows * cols / 32 * size];
    for (k, b) in bytes.chunks_exact_mut(size).enumerate() {
        b[..2].copy_from_slice(&f16_bytes(1e-3 * (1 + k % 5) as f32));
        if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
            b[2..4].copy_from_slice(&f16_bytes(-2e-4 * (1 + k % 3) as f32));
        }
    }
    bytes
}

/// On every path, the packed matrix's matrix × vector kernels (AVX-512, or
/// the scalar reference on the packed layout) give the scalar kernel's
/// bits on the GGUF bytes at every batch, the AVX-512 tiles reading the
/// packed rows in place included; the AVX2 tiled kernel expanding them gives
/// the bits of its tiled form on the GGUF bytes; an owned `QMatrix` is packed where
/// a packed kernel exists (AVX2 and AVX-512) and gives the one or the other.
#[test]
fn packed_q32_products_equal_the_plain_kernels() {
    let shapes = [
        (16, 32, 1),
        (13, 64, 1),
        (37, 576, 1),
        (200, 1024, 1),
        (45, 2304, 2),
        (29, 768, 3),
        (48, 576, 4),
        (37, 1024, 5),
        (70, 512, 7),
        (33, 256, 8),
        (45, 1536, 13),
        (70, 512, 17),
        (40, 256, 70),
        // On AVX-512 every shape from 2 activation rows runs the tiled
        // kernel reading the packed rows (6-row tiles and what is left, a
        // partial last group, partial k-blocks); on AVX2 from 16 the tiled
        // kernel expanding them. Many rows:
        (40, 256, 260),
        // From 32 rows on `Isa::Amx`, the AMX kernel: 33 blocks (k-blocks
        // of 16, 16 and a block alone), a partial last group and tile.
        (37, 1056, 33),
        // 17 blocks, several row blocks, a full last tile.
        (200, 544, 48),
    ];
    for ty in Q32_TYPES {
        for (i, &shape) in shapes.iter().enumerate() {
            let (rows, cols, _) = shape;
            let bytes = if i == 2 {
                q32_extreme_rows(ty, rows, cols)
            } else {
                q32_rows(ty, rows, cols, 70 + i as u64)
            };
            let case = Case::new(ty, shape, i, bytes);
            let packed = PackedQ32::pack(ty, &case.bytes, rows, cols).unwrap();
            case.check_packed(
                |isa, x, y| packed.matmul(isa, x, y).unwrap(),
                // Fewer than 16 rows stay in the GGUF layout.
                |isa| mistral_kernels::plan::packs_q32(ty, isa) && rows >= 16,
            );
        }
    }
}

#[test]
fn owned_q32_matrices_read_back_the_same_rows() {
    let (rows, cols) = (37, 320);
    for ty in Q32_TYPES {
        let bytes = q32_rows(ty, rows, cols, 3);
        let m = QMatrix::new(ty, rows, cols, bytes.clone()).unwrap();
        assert_eq!(
            m.is_packed(),
            mistral_kernels::plan::packs_q32(ty, Isa::best())
        );
        let (mut a, mut b) = (vec![0f32; cols], vec![0f32; cols]);
        for r in [0, 15, 16, 36] {
            m.dequantize_row(r, &mut a).unwrap();
            mistral_kernels::dequantize_row(ty, &bytes, cols, r, &mut b).unwrap();
            assert_eq!(a, b, "{ty} row {r}");
        }
        assert!(m.dequantize_row(rows, &mut a).is_err());
        assert!(m.dequantize_row(0, &mut a[..cols - 1]).is_err());
        let mut full = vec![0f32; rows * cols];
        mistral_kernels::dequantize(ty, &bytes, &mut full).unwrap();
        assert_eq!(m.dequantize().unwrap(), full, "{ty}");
    }
}

/// Types the packed layouts take (one of each) and types kept in the GGUF
/// layout.
const PACKED_AND_PLAIN: [GgmlType; 7] = [
    GgmlType::Q4_K,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q6_K,
    GgmlType::F16,
];

/// `QMatrix::from_bytes` (packs straight from borrowed bytes) is the matrix
/// `QMatrix::new` makes from an owned copy: the same layout, bytes and
/// products, for types it packs and types it keeps in the GGUF layout.
#[test]
fn from_bytes_is_new() {
    let (rows, cols) = (40, 512);
    let x: Vec<f32> = gaussian(3 * cols, 11);
    for ty in PACKED_AND_PLAIN {
        let bytes = quantize_to_vec(ty, &gaussian(rows * cols, 12)).unwrap();
        let a = QMatrix::new(ty, rows, cols, bytes.clone()).unwrap();
        let b = QMatrix::from_bytes(ty, rows, cols, &bytes).unwrap();
        assert_eq!(a.is_packed(), b.is_packed(), "{ty}");
        assert_eq!(b.bytes(), &bytes[..], "{ty}");
        let (mut ya, mut yb) = (vec![0f32; 3 * rows], vec![f32::NAN; 3 * rows]);
        a.matmul(&x, &mut ya).unwrap();
        b.matmul(&x, &mut yb).unwrap();
        assert_bits_eq(&format!("{ty}"), &yb, &ya, rows);
        assert!(
            QMatrix::from_bytes(ty, rows + 1, cols, &bytes).is_err(),
            "{ty}"
        );
    }
}

/// `QMatrix::from_parts` over row ranges that do not fill whole groups,
/// spanning more than two build slices, is the matrix `QMatrix::new` makes
/// from their concatenation (same layout, bytes and products), and hands
/// back every input byte exactly once, in order, each stretch after it was
/// used; bad part sizes are errors.
#[test]
fn from_parts_is_new_of_the_concatenation() {
    let cols = 4096;
    let x: Vec<f32> = gaussian(2 * cols, 21);
    for ty in PACKED_AND_PLAIN {
        let row = mistral_kernels::blocks::matrix_bytes(ty, 1, cols).unwrap();
        let rows = 2 * mistral_kernels::BUILD_SLICE / row + 37;
        // Any bit pattern is a block; scales that are not finite give NaN
        // products, compared by bits all the same.
        let bytes = random_bytes(rows * row, 5 + ty as u64);
        let cuts = [0, 333, 334, rows / 2 + 5, rows - 1, rows];
        let parts: Vec<&[u8]> = cuts
            .windows(2)
            .map(|c| &bytes[c[0] * row..c[1] * row])
            .collect();
        let mut seen: Vec<(usize, usize)> = Vec::new();
        let base = bytes.as_ptr() as usize;
        let m = QMatrix::from_parts(ty, cols, &parts, &mut |b: &[u8]| {
            seen.push((b.as_ptr() as usize - base, b.len()))
        })
        .unwrap();
        let mut next = 0;
        for &(at, len) in &seen {
            assert_eq!(at, next, "{ty}: stretches in order, none twice");
            next += len;
        }
        assert_eq!(next, bytes.len(), "{ty}: every byte handed back");
        assert!(
            seen.len() > 2,
            "{ty}: built in slices ({} stretches)",
            seen.len()
        );
        let whole = QMatrix::new(ty, rows, cols, bytes.clone()).unwrap();
        assert_eq!(m.is_packed(), whole.is_packed(), "{ty}");
        assert_eq!((m.rows(), m.cols()), (rows, cols), "{ty}");
        assert!(m.bytes() == &bytes[..], "{ty}: the same bytes");
        let (mut ya, mut yb) = (vec![0f32; 2 * rows], vec![f32::NAN; 2 * rows]);
        whole.matmul(&x, &mut ya).unwrap();
        m.matmul(&x, &mut yb).unwrap();
        assert_bits_eq(&format!("{ty}"), &yb, &ya, rows);
        let short = &bytes[..row - 1];
        assert!(
            QMatrix::from_parts(ty, cols, &[short], &mut |_| {}).is_err(),
            "{ty}"
        );
    }
}
