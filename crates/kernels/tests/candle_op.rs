//! `QMatrix` as a candle op against candle's own `QMatMul` on the same weights.
//!
//! candle's kernels quantize the activations in their own way, which depends
//! on the CPU (on AVX-512 VNNI machines its repacked Q8_0 kernel takes Q8_K
//! activations, one scale per 256 values, where the scalar path and ours use
//! Q8_0), so the two results may differ by candle's own error: the tolerance
//! is a fixed part plus candle's measured distance from the exact product of
//! the dequantized weights.

mod common;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use common::gaussian;
use mistral_kernels::{GgmlType, QMatrix};

/// The root mean square of a tensor's values.
fn rms(t: &Tensor) -> f32 {
    t.sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt()
}

#[test]
fn custom_op_matches_candle_qmatmul() {
    let cov = common::Coverage::new("candle_op::custom_op_matches_candle_qmatmul");
    let dev = Device::Cpu;
    let (rows, cols) = (48, 1024);
    let wf = Tensor::from_vec(gaussian(rows * cols, 5), (rows, cols), &dev).unwrap();
    for (ty, dt) in [
        (GgmlType::Q4_0, GgmlDType::Q4_0),
        (GgmlType::Q4_1, GgmlDType::Q4_1),
        (GgmlType::Q5_0, GgmlDType::Q5_0),
        (GgmlType::Q5_1, GgmlDType::Q5_1),
        (GgmlType::Q8_0, GgmlDType::Q8_0),
        (GgmlType::Q2_K, GgmlDType::Q2K),
        (GgmlType::Q3_K, GgmlDType::Q3K),
        (GgmlType::Q4_K, GgmlDType::Q4K),
        (GgmlType::Q5_K, GgmlDType::Q5K),
        (GgmlType::Q6_K, GgmlDType::Q6K),
        (GgmlType::F16, GgmlDType::F16),
    ] {
        let q = QTensor::quantize(&wf, dt).unwrap();
        let bytes = q.data().unwrap().to_vec();
        let wd = q.dequantize(&dev).unwrap();
        let theirs = QMatMul::from_qtensor(q).unwrap();
        for isa in cov.all() {
            let ours = QMatrix::new(ty, rows, cols, bytes.clone())
                .unwrap()
                .with_isa(isa)
                .unwrap();
            for shape in [vec![1, cols], vec![5, cols], vec![2, 3, cols]] {
                let n: usize = shape.iter().product::<usize>() / cols;
                let x = Tensor::from_vec(gaussian(n * cols, 7), shape.as_slice(), &dev).unwrap();
                let a = ours.forward(&x).unwrap();
                let b = theirs.forward(&x).unwrap();
                assert_eq!(a.dims(), b.dims());
                let diff = rms(&(&a - &b).unwrap());
                let norm = rms(&b);
                let exact = x.broadcast_matmul(&wd.t().unwrap()).unwrap();
                let theirs_err = rms(&(&b - &exact).unwrap());
                assert!(
                    diff <= 2e-3 * norm + theirs_err,
                    "{ty} {isa:?} {shape:?}: rms diff {diff} vs rms {norm} \
                     (candle's own rms error {theirs_err})"
                );
            }
        }
    }
}

#[test]
fn custom_op_dtypes_and_errors() {
    let dev = Device::Cpu;
    let (rows, cols) = (8, 256);
    let wf = gaussian(rows * cols, 1);
    let m = QMatrix::quantize(GgmlType::Q8_0, rows, cols, &wf).unwrap();
    let x = Tensor::from_vec(gaussian(2 * cols, 3), (2, cols), &dev).unwrap();
    let y32 = m.forward(&x).unwrap();
    let ymax = y32
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    // Relative rounding of the 16-bit input and output: 2^-11 (f16), 2^-8 (bf16).
    for (dt, rel) in [(DType::F16, 0.002), (DType::BF16, 0.02)] {
        let y = m.forward(&x.to_dtype(dt).unwrap()).unwrap();
        assert_eq!(y.dtype(), dt);
        let d = (y.to_dtype(DType::F32).unwrap() - &y32)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < rel * ymax, "{dt:?}: {d} (max |y| {ymax})");
    }
    // Non-contiguous input is made contiguous; a wrong width is an error.
    let xt = Tensor::from_vec(gaussian(2 * cols, 3), (cols, 2), &dev)
        .unwrap()
        .t()
        .unwrap();
    let yt = m.forward(&xt).unwrap();
    assert_eq!(yt.dims(), &[2, rows]);
    let yc = m.forward(&xt.contiguous().unwrap()).unwrap();
    assert_eq!(
        yt.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        yc.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        "a non-contiguous input gives what its contiguous copy gives"
    );
    let bad = Tensor::zeros((2, cols + 32), DType::F32, &dev).unwrap();
    assert!(m.forward(&bad).is_err());
    assert!(m
        .forward(&Tensor::zeros((2, cols), DType::U32, &dev).unwrap())
        .is_err());
    // Matvec / row lookup through the struct, against the dequantized
    // matrix (the kernel quantizes the activations to Q8_0: ~1% per dot).
    let deq = m.dequantize().unwrap();
    let xv = &wf[..cols];
    let mut y = vec![0f32; rows];
    m.matvec(xv, &mut y).unwrap();
    for (r, &got) in y.iter().enumerate() {
        let want: f64 = (0..cols)
            .map(|c| deq[r * cols + c] as f64 * xv[c] as f64)
            .sum();
        let scale: f64 = (0..cols)
            .map(|c| (deq[r * cols + c] as f64 * xv[c] as f64).abs())
            .sum();
        assert!(
            (got as f64 - want).abs() <= 1e-2 * scale,
            "row {r}: {got} vs {want} (scale {scale})"
        );
    }
    let mut row = vec![0f32; cols];
    m.dequantize_row(3, &mut row).unwrap();
    assert_eq!(row, deq[3 * cols..4 * cols]);
    assert!(m.dequantize_row(rows, &mut row).is_err());
    assert!(QMatrix::new(GgmlType::Q8_0, rows, cols, vec![0u8; 10]).is_err());
    assert!(QMatrix::new(GgmlType::IQ1_M, 1, 256, vec![0u8; 56]).is_err()); // no kernel
}
