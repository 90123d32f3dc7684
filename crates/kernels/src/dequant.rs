//! Scalar reference dequantization of every supported type, written from the
//! block definitions (llama.cpp's `dequantize_row_*`, same operation order so
//! results are bit-identical).

use crate::blocks::*;
use crate::error::{KernelError, Result};
use half::{bf16, f16};
use mistral_gguf::GgmlType;
use rayon::prelude::*;

/// A block that dequantizes to `ELEMS` f32 values.
pub trait DequantBlock: ByteBlock {
    /// Writes the block's `ELEMS` values to `y` (`y.len() == ELEMS`).
    fn dequantize(&self, y: &mut [f32]);
}

impl DequantBlock for BlockQ4_0 {
    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for j in 0..QK / 2 {
            let x0 = (self.qs[j] & 0x0F) as i32 - 8;
            let x1 = (self.qs[j] >> 4) as i32 - 8;
            y[j] = x0 as f32 * d;
            y[j + QK / 2] = x1 as f32 * d;
        }
    }
}

impl DequantBlock for BlockQ4_1 {
    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for j in 0..QK / 2 {
            y[j] = (self.qs[j] & 0x0F) as f32 * d + m;
            y[j + QK / 2] = (self.qs[j] >> 4) as f32 * d + m;
        }
    }
}

impl DequantBlock for BlockQ5_0 {
    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let qh = u32::from_le_bytes(self.qh);
        for j in 0..QK / 2 {
            let xh0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
            let x0 = ((self.qs[j] & 0x0F) | xh0) as i32 - 16;
            let x1 = ((self.qs[j] >> 4) | xh1) as i32 - 16;
            y[j] = x0 as f32 * d;
            y[j + QK / 2] = x1 as f32 * d;
        }
    }
}

impl DequantBlock for BlockQ5_1 {
    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        let qh = u32::from_le_bytes(self.qh);
        for j in 0..QK / 2 {
            let xh0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
            y[j] = ((self.qs[j] & 0x0F) | xh0) as f32 * d + m;
            y[j + QK / 2] = ((self.qs[j] >> 4) | xh1) as f32 * d + m;
        }
    }
}

impl DequantBlock for BlockQ8_0 {
    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in y.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

impl DequantBlock for BlockQ8_1 {
    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in y.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

impl DequantBlock for BlockQ2K {
    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        let mut is = 0;
        let mut yi = 0;
        for n in 0..2 {
            let q = &self.qs[32 * n..32 * n + 32];
            for shift in [0, 2, 4, 6] {
                for half in 0..2 {
                    let sc = self.scales[is];
                    is += 1;
                    let dl = d * (sc & 0xF) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for l in 0..16 {
                        y[yi] = dl * ((q[l + 16 * half] >> shift) & 3) as f32 - ml;
                        yi += 1;
                    }
                }
            }
        }
    }
}

impl DequantBlock for BlockQ3K {
    fn dequantize(&self, y: &mut [f32]) {
        let d_all = self.d.to_f32();
        let scales = q3k_scales(&self.scales);
        let mut is = 0;
        let mut yi = 0;
        let mut m = 1u8;
        for n in 0..2 {
            let q = &self.qs[32 * n..32 * n + 32];
            for shift in [0, 2, 4, 6] {
                for half in 0..2 {
                    let dl = d_all * scales[is] as f32;
                    is += 1;
                    for l in 0..16 {
                        let lo = ((q[l + 16 * half] >> shift) & 3) as i8;
                        let h = if self.hmask[l + 16 * half] & m != 0 {
                            0
                        } else {
                            4
                        };
                        y[yi] = dl * (lo - h) as f32;
                        yi += 1;
                    }
                }
                m <<= 1;
            }
        }
    }
}

impl DequantBlock for BlockQ4K {
    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for j in 0..4 {
            let q = &self.qs[32 * j..32 * j + 32];
            let (sc, m) = scale_min_k4(2 * j, &self.scales);
            let (d1, m1) = (d * sc as f32, min * m as f32);
            let (sc, m) = scale_min_k4(2 * j + 1, &self.scales);
            let (d2, m2) = (d * sc as f32, min * m as f32);
            let y = &mut y[64 * j..64 * j + 64];
            for l in 0..32 {
                y[l] = d1 * (q[l] & 0xF) as f32 - m1;
                y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

impl DequantBlock for BlockQ5K {
    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        let (mut u1, mut u2) = (1u8, 2u8);
        for j in 0..4 {
            let ql = &self.qs[32 * j..32 * j + 32];
            let (sc, m) = scale_min_k4(2 * j, &self.scales);
            let (d1, m1) = (d * sc as f32, min * m as f32);
            let (sc, m) = scale_min_k4(2 * j + 1, &self.scales);
            let (d2, m2) = (d * sc as f32, min * m as f32);
            let y = &mut y[64 * j..64 * j + 64];
            for l in 0..32 {
                let h1 = if self.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if self.qh[l] & u2 != 0 { 16 } else { 0 };
                y[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
                y[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
            }
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}

impl DequantBlock for BlockQ6K {
    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for n in 0..2 {
            let ql = &self.ql[64 * n..64 * n + 64];
            let qh = &self.qh[32 * n..32 * n + 32];
            let sc = &self.scales[8 * n..8 * n + 8];
            let y = &mut y[128 * n..128 * n + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                y[l] = d * sc[is] as f32 * q1 as f32;
                y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

impl DequantBlock for BlockIQ4NL {
    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for j in 0..QK4_NL / 2 {
            y[j] = d * KVALUES_IQ4NL[(self.qs[j] & 0xF) as usize] as f32;
            y[j + QK4_NL / 2] = d * KVALUES_IQ4NL[(self.qs[j] >> 4) as usize] as f32;
        }
    }
}

impl DequantBlock for BlockIQ4XS {
    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for ib in 0..QK_K / 32 {
            let dl = d * self.sub_scale(ib) as f32;
            let qs = &self.qs[16 * ib..16 * ib + 16];
            let y = &mut y[32 * ib..32 * ib + 32];
            for j in 0..16 {
                y[j] = dl * KVALUES_IQ4NL[(qs[j] & 0xF) as usize] as f32;
                y[j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
            }
        }
    }
}

/// The i-quants on lattices: `(d · (sc · FACTOR)) · q`, the rounding of
/// llama.cpp's `d · (0.5 + s) · 0.25` and the like (scales by powers of two
/// are exact).
macro_rules! iq_dequant {
    ($($B:ty),*) => {$(
        impl DequantBlock for $B {
            fn dequantize(&self, y: &mut [f32]) {
                let mut dec = crate::iquant::Decoded::ZERO;
                crate::iquant::IqBlock::decode(self, &mut dec);
                let d = self.d.to_f32();
                for (k, (ys, qs)) in y.chunks_exact_mut(16).zip(dec.q.chunks_exact(16)).enumerate() {
                    let dl = d * (dec.sc[k] as f32 * <$B as crate::iquant::IqBlock>::FACTOR);
                    for (o, &q) in ys.iter_mut().zip(qs) {
                        *o = dl * q as f32;
                    }
                }
            }
        }
    )*};
}
iq_dequant!(
    BlockIQ2XXS,
    BlockIQ2XS,
    BlockIQ2S,
    BlockIQ3XXS,
    BlockIQ3S,
    BlockIQ1S
);

/// Whether [`dequantize`] handles `ty`.
pub fn supports_dequantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q8_1
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | Q8_K
            | IQ4_NL
            | IQ4_XS
            | IQ2_XXS
            | IQ2_XS
            | IQ2_S
            | IQ3_XXS
            | IQ3_S
            | IQ1_S
    )
}

/// Elements per parallel work item when dequantizing big tensors.
const PAR_CHUNK: usize = 1 << 16;

fn dequant_blocks<B: DequantBlock>(data: &[u8], out: &mut [f32]) -> Result<()> {
    let blocks = cast_blocks::<B>(data)?;
    let per_chunk = PAR_CHUNK / B::ELEMS;
    let run = |(bs, ys): (&[B], &mut [f32])| {
        for (b, y) in bs.iter().zip(ys.chunks_exact_mut(B::ELEMS)) {
            b.dequantize(y);
        }
    };
    if out.len() > PAR_CHUNK {
        blocks
            .par_chunks(per_chunk)
            .zip(out.par_chunks_mut(per_chunk * B::ELEMS))
            .for_each(run);
    } else {
        run((blocks, out));
    }
    Ok(())
}

fn plain<T, const N: usize>(data: &[u8], out: &mut [f32], f: impl Fn([u8; N]) -> T + Sync)
where
    T: Into<f32>,
{
    for (o, c) in out.iter_mut().zip(data.chunks_exact(N)) {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        *o = f(a).into();
    }
}

/// Dequantizes `out.len()` elements of type `ty` from `data` (a whole tensor,
/// a row, or any whole number of blocks).
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<()> {
    check_data(ty, out.len(), data)?;
    use GgmlType::*;
    match ty {
        F32 => plain(data, out, f32::from_le_bytes),
        F16 => plain(data, out, |b| f16::from_le_bytes(b).to_f32()),
        BF16 => plain(data, out, |b| bf16::from_le_bytes(b).to_f32()),
        Q4_0 => dequant_blocks::<BlockQ4_0>(data, out)?,
        Q4_1 => dequant_blocks::<BlockQ4_1>(data, out)?,
        Q5_0 => dequant_blocks::<BlockQ5_0>(data, out)?,
        Q5_1 => dequant_blocks::<BlockQ5_1>(data, out)?,
        Q8_0 => dequant_blocks::<BlockQ8_0>(data, out)?,
        Q8_1 => dequant_blocks::<BlockQ8_1>(data, out)?,
        Q2_K => dequant_blocks::<BlockQ2K>(data, out)?,
        Q3_K => dequant_blocks::<BlockQ3K>(data, out)?,
        Q4_K => dequant_blocks::<BlockQ4K>(data, out)?,
        Q5_K => dequant_blocks::<BlockQ5K>(data, out)?,
        Q6_K => dequant_blocks::<BlockQ6K>(data, out)?,
        IQ4_NL => dequant_blocks::<BlockIQ4NL>(data, out)?,
        IQ4_XS => dequant_blocks::<BlockIQ4XS>(data, out)?,
        IQ2_XXS => dequant_blocks::<BlockIQ2XXS>(data, out)?,
        IQ2_XS => dequant_blocks::<BlockIQ2XS>(data, out)?,
        IQ2_S => dequant_blocks::<BlockIQ2S>(data, out)?,
        IQ3_XXS => dequant_blocks::<BlockIQ3XXS>(data, out)?,
        IQ3_S => dequant_blocks::<BlockIQ3S>(data, out)?,
        IQ1_S => dequant_blocks::<BlockIQ1S>(data, out)?,
        Q8_K => {
            for (c, y) in data.chunks_exact(292).zip(out.chunks_exact_mut(QK_K)) {
                let mut a = [0u8; 292];
                a.copy_from_slice(c);
                let b = BlockQ8K::read(&a);
                for (o, &q) in y.iter_mut().zip(&b.qs) {
                    *o = b.d * q as f32;
                }
            }
        }
        _ => {
            return Err(KernelError::Unsupported {
                ty,
                op: "dequantize",
            })
        }
    }
    Ok(())
}

/// Dequantizes to f16 (values rounded to nearest even; F16 data is copied exactly).
pub fn dequantize_f16(ty: GgmlType, data: &[u8], out: &mut [f16]) -> Result<()> {
    check_data(ty, out.len(), data)?;
    if ty == GgmlType::F16 {
        for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
            *o = f16::from_le_bytes([c[0], c[1]]);
        }
        return Ok(());
    }
    let block = ty.block_size() as usize;
    let block_bytes = ty.type_size() as usize;
    // Dequantize a bounded number of blocks at a time through an f32 buffer.
    let per = (4096 / block).max(1);
    let mut buf = vec![0f32; per * block];
    for (d, o) in data
        .chunks(per * block_bytes)
        .zip(out.chunks_mut(per * block))
    {
        let tmp = &mut buf[..o.len()];
        dequantize(ty, d, tmp)?;
        for (x, y) in o.iter_mut().zip(tmp.iter()) {
            *x = f16::from_f32(*y);
        }
    }
    Ok(())
}

/// Dequantizes row `row` of a `[rows, cols]` matrix stored row-major in `data`
/// (an embedding lookup). `out.len()` must be `cols`.
pub fn dequantize_row(
    ty: GgmlType,
    data: &[u8],
    cols: usize,
    row: usize,
    out: &mut [f32],
) -> Result<()> {
    if out.len() != cols {
        return Err(KernelError::Shape {
            op: "dequantize_row",
            detail: format!("output has {} elements, row has {cols}", out.len()),
        });
    }
    let rb = bytes_for(ty, cols)?;
    let rows = data.len().checked_div(rb).unwrap_or(0);
    if row >= rows {
        return Err(KernelError::RowOutOfRange { row, rows });
    }
    dequantize(ty, &data[row * rb..(row + 1) * rb], out)
}
