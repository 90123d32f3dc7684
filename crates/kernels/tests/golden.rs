//! Dequantization against the golden vectors in tests/data/quant (64 random
//! blocks per type and their f32 dequantization made by the `gguf` Python
//! package, llama.cpp's numpy reference).

use mistral_kernels::{dequantize, dequantize_f16, dequantize_row, GgmlType};
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/quant")
}

/// Distance in units in the last place between two finite f32s.
fn ulps(a: f32, b: f32) -> u32 {
    if a == b {
        return 0;
    }
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            i32::MIN - i
        } else {
            i
        }
    };
    (key(a) as i64 - key(b) as i64).unsigned_abs() as u32
}

const TYPES: [&str; 18] = [
    "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL",
    "IQ4_XS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S",
];

#[test]
fn golden_vectors_match() {
    for name in TYPES {
        let ty = GgmlType::from_name(name).unwrap();
        let blocks = std::fs::read(data_dir().join(format!("{name}.blocks"))).unwrap();
        let want: Vec<f32> = std::fs::read(data_dir().join(format!("{name}.f32")))
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(blocks.len(), 64 * ty.type_size() as usize, "{name}");
        assert_eq!(want.len(), 64 * ty.block_size() as usize, "{name}");
        let mut got = vec![0f32; want.len()];
        dequantize(ty, &blocks, &mut got).unwrap();
        let mut exact = 0;
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let u = ulps(g, w);
            assert!(u <= 1, "{name}[{i}]: got {g} want {w} ({u} ulps)");
            exact += (u == 0) as usize;
        }
        eprintln!(
            "{name}: {exact}/{} bit-exact, rest within 1 ulp",
            want.len()
        );

        // Single rows (embedding lookups): view the 64 blocks as a matrix of 4 rows.
        let cols = want.len() / 4;
        let mut row = vec![0f32; cols];
        for r in 0..4 {
            dequantize_row(ty, &blocks, cols, r, &mut row).unwrap();
            assert_eq!(row, got[r * cols..(r + 1) * cols], "{name} row {r}");
        }
        assert!(dequantize_row(ty, &blocks, cols, 4, &mut row).is_err());

        // f16 output is the f32 result rounded.
        let mut h = vec![half::f16::ZERO; want.len()];
        dequantize_f16(ty, &blocks, &mut h).unwrap();
        for (a, b) in h.iter().zip(&got) {
            assert_eq!(a.to_bits(), half::f16::from_f32(*b).to_bits(), "{name} f16");
        }
    }
}

#[test]
fn plain_float_types() {
    let vals = [0.0f32, -1.5, 3.25, 65504.0, 1e-3, -7.0e-5];
    let f32_bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let f16_bytes: Vec<u8> = vals
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    let bf16_bytes: Vec<u8> = vals
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect();
    let mut out = [0f32; 6];
    dequantize(GgmlType::F32, &f32_bytes, &mut out).unwrap();
    assert_eq!(out, vals);
    dequantize(GgmlType::F16, &f16_bytes, &mut out).unwrap();
    for (o, v) in out.iter().zip(vals) {
        assert_eq!(*o, half::f16::from_f32(v).to_f32());
    }
    dequantize(GgmlType::BF16, &bf16_bytes, &mut out).unwrap();
    for (o, v) in out.iter().zip(vals) {
        assert_eq!(*o, half::bf16::from_f32(v).to_f32());
    }
    let mut h = [half::f16::ZERO; 6];
    dequantize_f16(GgmlType::F16, &f16_bytes, &mut h).unwrap();
    assert_eq!(
        h.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
        f16_bytes
    );
}

#[test]
fn bad_sizes_are_errors_not_panics() {
    let mut out = vec![0f32; 64];
    assert!(dequantize(GgmlType::Q4_K, &[0u8; 144], &mut out).is_err()); // 64 not a block multiple
    let mut out = vec![0f32; 256];
    assert!(dequantize(GgmlType::Q4_K, &[0u8; 143], &mut out).is_err());
    assert!(dequantize(GgmlType::IQ1_M, &[0u8; 56], &mut out).is_err()); // no dequantizer
    assert!(dequantize_row(GgmlType::Q8_0, &[0u8; 34], 32, 1, &mut out[..32]).is_err());
    assert!(dequantize_row(GgmlType::Q8_0, &[0u8; 34], 32, 0, &mut out[..31]).is_err());
}
