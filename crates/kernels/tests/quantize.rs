//! Quantize → dequantize error per type, against candle's quantizers on the
//! same data and against fixed per-type bounds.

mod common;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::{gaussian, rmse};
use mistral_kernels::{dequantize, quantize_to_vec, GgmlType};

const ROWS: usize = 16;
const COLS: usize = 1024;

fn roundtrip(ty: GgmlType, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let q = quantize_to_vec(ty, x).unwrap();
    let mut y = vec![0f32; x.len()];
    dequantize(ty, &q, &mut y).unwrap();
    (q, y)
}

fn candle_roundtrip(dt: GgmlDType, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let t = Tensor::from_slice(x, (ROWS, COLS), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, dt).unwrap();
    let bytes = q.data().unwrap().to_vec();
    let y = q
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    (bytes, y)
}

/// (type, candle type, bound on RMSE relative to the data's RMS of 1).
const CASES: [(GgmlType, GgmlDType, f64); 11] = [
    (GgmlType::Q4_0, GgmlDType::Q4_0, 0.13),
    (GgmlType::Q4_1, GgmlDType::Q4_1, 0.12),
    (GgmlType::Q5_0, GgmlDType::Q5_0, 0.065),
    (GgmlType::Q5_1, GgmlDType::Q5_1, 0.06),
    (GgmlType::Q8_0, GgmlDType::Q8_0, 0.008),
    (GgmlType::Q2_K, GgmlDType::Q2K, 0.40),
    (GgmlType::Q3_K, GgmlDType::Q3K, 0.22),
    (GgmlType::Q4_K, GgmlDType::Q4K, 0.11),
    (GgmlType::Q5_K, GgmlDType::Q5K, 0.055),
    (GgmlType::Q6_K, GgmlDType::Q6K, 0.03),
    (GgmlType::Q8_K, GgmlDType::Q8K, 0.015),
];

#[test]
fn error_no_worse_than_candle_and_within_bounds() {
    for seed in 0..3 {
        let x = gaussian(ROWS * COLS, seed);
        for (ty, dt, bound) in CASES {
            let (ours_q, ours) = roundtrip(ty, &x);
            let (theirs_q, theirs) = candle_roundtrip(dt, &x);
            let (e_ours, e_theirs) = (rmse(&x, &ours), rmse(&x, &theirs));
            let same = ours_q == theirs_q;
            eprintln!("seed {seed} {ty}: rmse ours {e_ours:.5} candle {e_theirs:.5} identical bytes: {same}");
            assert!(
                e_ours <= e_theirs * 1.0001 + 1e-9,
                "{ty}: {e_ours} > candle {e_theirs}"
            );
            assert!(e_ours < bound, "{ty}: rmse {e_ours} over bound {bound}");
        }
        // IQ4_NL has no candle quantizer: it must beat Q4_0 at the same size.
        let (_, iq4) = roundtrip(GgmlType::IQ4_NL, &x);
        let (_, q40) = roundtrip(GgmlType::Q4_0, &x);
        let (e_iq4, e_q40) = (rmse(&x, &iq4), rmse(&x, &q40));
        eprintln!("seed {seed} IQ4_NL rmse {e_iq4:.5} (Q4_0 {e_q40:.5})");
        assert!(e_iq4 < e_q40 && e_iq4 < 0.11);
    }
}

#[test]
fn plain_types_roundtrip() {
    let x = gaussian(512, 9);
    assert_eq!(roundtrip(GgmlType::F32, &x).1, x);
    let (_, h) = roundtrip(GgmlType::F16, &x);
    assert!(rmse(&x, &h) < 1e-3);
    let (_, b) = roundtrip(GgmlType::BF16, &x);
    assert!(rmse(&x, &b) < 1e-2);
}

#[test]
fn zeros_and_constant_blocks() {
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_NL,
    ] {
        let zeros = vec![0f32; 256];
        let (_, y) = roundtrip(ty, &zeros);
        assert!(y.iter().all(|v| v.abs() < 1e-6), "{ty} zeros");
        let ones = vec![0.75f32; 256];
        let (_, y) = roundtrip(ty, &ones);
        assert!(rmse(&ones, &y) < 0.05, "{ty} constant: {:?}", &y[..4]);
    }
    assert!(quantize_to_vec(GgmlType::Q4_K, &[0f32; 100]).is_err());
    assert!(quantize_to_vec(GgmlType::IQ2_XXS, &[0f32; 256]).is_err());
}
