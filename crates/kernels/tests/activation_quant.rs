//! The Q8_K and Q8_0 activation quantizers against their scalar references (no
//! candle: this file also runs in the AArch64 cross build of `tests/aarch64.sh`).

mod common;

use common::gaussian;

/// The activation quantizer the k-quant kernels run (AVX2 or NEON where available)
/// equals the scalar reference bit for bit, on the cases that decide its
/// result: magnitude ties between a negative and a positive value (the
/// first wins), exact .5 products, zeros, denormals, and NaN / infinity
/// (handed to the scalar code).
#[test]
fn q8k_activation_quantizer_equals_the_scalar_reference() {
    use mistral_kernels::quant::{quantize_block_q8k, quantize_block_q8k_scalar};
    use mistral_kernels::BlockQ8K;
    let mut cases: Vec<Vec<f32>> = (0..40)
        .map(|s| {
            let scale = 10f32.powi(s % 9 - 4);
            gaussian(256, s as u64).iter().map(|v| v * scale).collect()
        })
        .collect();
    // Magnitude ties between a negative and a positive value, far apart and
    // inside one SIMD vector (lanes 1 and 2).
    for (i, j) in [(3, 200), (1, 2)] {
        for sign in [1.0f32, -1.0] {
            let mut tie = vec![0.25f32; 256];
            tie[i] = -2.0 * sign;
            tie[j] = 2.0 * sign;
            cases.push(tie);
        }
    }
    // max = -127 makes iscale = 1, so every k + 0.5 is an exact rounding tie
    // (half to even: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2).
    let mut halves: Vec<f32> = (0..256).map(|k| (k % 254) as f32 - 126.5).collect();
    halves[17] = -127.0;
    cases.push(halves);
    cases.push(vec![0.0; 256]);
    cases.push(vec![-0.0; 256]);
    cases.push((0..256).map(|k| f32::from_bits(k as u32 + 1)).collect());
    let mut special = gaussian(256, 7);
    special[10] = f32::NAN;
    cases.push(special.clone());
    special[10] = f32::INFINITY;
    cases.push(special);
    for (i, x) in cases.iter().enumerate() {
        assert_eq!(x.len(), 256);
        let (mut a, mut b) = (BlockQ8K::ZERO, BlockQ8K::ZERO);
        quantize_block_q8k(x, &mut a);
        quantize_block_q8k_scalar(x, &mut b);
        assert_eq!(a.qs, b.qs, "case {i}");
        assert_eq!(a.bsums, b.bsums, "case {i}");
        assert_eq!(a.d.to_bits(), b.d.to_bits(), "case {i}");
    }
}

/// The Q8_0 activation quantizer of the 32-value block kernels (AVX2 where
/// available) equals [`BlockQ8_0`]'s reference quantizer bit for bit: exact
/// .5 products (half away from zero: 0.5 -> 1, -2.5 -> -3), values just
/// below and above a tie, the largest magnitude at either sign, zeros,
/// denormals (whose inverse scale overflows), and NaN / infinity.
#[test]
fn q8_0_activation_quantizer_equals_the_scalar_reference() {
    use mistral_kernels::quant::{quantize_block_q8_0, quantize_block_q8_0_on};
    use mistral_kernels::{BlockQ8_0, QuantizeBlock};
    let mut cases: Vec<Vec<f32>> = (0..200)
        .map(|s| {
            let scale = 10f32.powi(s % 13 - 6);
            gaussian(32, s as u64).iter().map(|v| v * scale).collect()
        })
        .collect();
    // max = 127 makes the inverse scale 1: every k + 0.5 is a tie.
    for sign in [1.0f32, -1.0] {
        let mut halves: Vec<f32> = (0..32).map(|k| sign * (k as f32 * 4.0 - 63.5)).collect();
        halves[5] = 127.0 * sign;
        cases.push(halves.clone());
        cases.push(halves.iter().map(|v| v.next_up()).collect());
        cases.push(halves.iter().map(|v| v.next_down()).collect());
    }
    cases.push(vec![0.0; 32]);
    cases.push(vec![-0.0; 32]);
    cases.push((0..32).map(|k| f32::from_bits(k as u32 + 1)).collect());
    cases.push(
        (0..32)
            .map(|k| f32::from_bits(k as u32 * 4096 + 1))
            .collect(),
    );
    let mut special = gaussian(32, 7);
    special[10] = f32::NAN;
    cases.push(special.clone());
    special[10] = f32::NEG_INFINITY;
    cases.push(special);
    for (i, x) in cases.iter().enumerate() {
        let (a, b) = (quantize_block_q8_0(x), BlockQ8_0::quantize(x));
        assert_eq!(a.qs, b.qs, "case {i}");
        assert_eq!(a.d.0, b.d.0, "case {i}");
    }
    // Each path's form (AVX2, AVX-512) where this CPU has it.
    let cov = common::Coverage::new("activation_quant::q8_0_activation_quantizer_on_each_path");
    for isa in cov.all() {
        for (i, x) in cases.iter().enumerate() {
            let (a, b) = (quantize_block_q8_0_on(isa, x), BlockQ8_0::quantize(x));
            assert_eq!(a.qs, b.qs, "{isa:?} case {i}");
            assert_eq!(a.d.0, b.d.0, "{isa:?} case {i}");
        }
    }
}
