//! Block structs with the exact byte layouts of llama.cpp's `ggml-common.h`.
//!
//! Every weight block is made only of byte arrays (f16 fields are stored as
//! two little-endian bytes in [`F16Le`]), so the structs have alignment 1 and
//! any byte slice of the right length can be viewed as a slice of blocks
//! without copying, whatever its address (GGUF tensor data is only 32-byte
//! aligned, and mmapped data must not be copied). [`BlockQ8K`] is the
//! exception: it is an activation format with natural `f32`/`i16` fields.

use crate::error::{KernelError, Result};
use half::f16;
use mistral_gguf::GgmlType;
use std::mem::{align_of, size_of};

/// Elements per super-block of the k-quants.
pub const QK_K: usize = 256;
/// Elements per block of the legacy quants.
pub const QK: usize = 32;
/// Elements per IQ4_NL block.
pub const QK4_NL: usize = 32;

/// The 16 non-linear levels of IQ4_NL / IQ4_XS (`kvalues_iq4nl`).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// [`KVALUES_IQ4NL`] plus 128 (1..=241): unsigned levels for the kernels
/// whose weights are `vpdpbusd`'s unsigned operand (a `vpshufb` table).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const KVALUES_IQ4NL_PLUS_128: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = (KVALUES_IQ4NL[i] as i16 + 128) as u8;
        i += 1;
    }
    t
};

/// An IEEE half stored as two little-endian bytes (alignment 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct F16Le(pub [u8; 2]);

impl F16Le {
    /// Exact widening to f32.
    #[inline(always)]
    pub fn to_f32(self) -> f32 {
        f16::from_bits(u16::from_le_bytes(self.0)).to_f32()
    }
    /// Round-to-nearest-even narrowing, as `GGML_FP32_TO_FP16`.
    #[inline(always)]
    pub fn from_f32(v: f32) -> F16Le {
        F16Le(f16::from_f32(v).to_bits().to_le_bytes())
    }
    /// The raw bits.
    #[inline(always)]
    pub fn bits(self) -> u16 {
        u16::from_le_bytes(self.0)
    }
}

/// Marker for block structs that may be viewed in place from bytes.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, have alignment 1, no padding, and every
/// bit pattern of `size_of::<Self>()` bytes must be a valid value (only `u8`,
/// `i8` and [`F16Le`] fields, arrays thereof).
pub unsafe trait ByteBlock: Copy + Send + Sync + 'static {
    /// The GGML type whose blocks these are.
    const TYPE: GgmlType;
    /// Elements per block.
    const ELEMS: usize;
}

macro_rules! byte_block {
    ($name:ident, $ty:ident, $elems:expr, $size:expr) => {
        const _: () = assert!(size_of::<$name>() == $size);
        const _: () = assert!(align_of::<$name>() == 1);
        // SAFETY: the struct is repr(C), made only of u8 / i8 / F16Le (byte
        // array) fields, so it has alignment 1 (asserted above), no padding
        // (its size equals the sum of its fields, asserted against
        // llama.cpp's type size) and no invalid bit patterns.
        unsafe impl ByteBlock for $name {
            const TYPE: GgmlType = GgmlType::$ty;
            const ELEMS: usize = $elems;
        }
    };
}

/// `block_q4_0`: scale, 32 4-bit quants (value = d * (q - 8)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: F16Le,
    pub qs: [u8; QK / 2],
}
byte_block!(BlockQ4_0, Q4_0, QK, 18);

/// `block_q4_1`: scale, min, 32 4-bit quants (value = d * q + m).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: F16Le,
    pub m: F16Le,
    pub qs: [u8; QK / 2],
}
byte_block!(BlockQ4_1, Q4_1, QK, 20);

/// `block_q5_0`: scale, 32 high bits, 32 low nibbles (value = d * (q - 16)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: F16Le,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
byte_block!(BlockQ5_0, Q5_0, QK, 22);

/// `block_q5_1`: scale, min, 32 high bits, 32 low nibbles (value = d * q + m).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: F16Le,
    pub m: F16Le,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
byte_block!(BlockQ5_1, Q5_1, QK, 24);

/// `block_q8_0`: scale and 32 signed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: F16Le,
    pub qs: [i8; QK],
}
byte_block!(BlockQ8_0, Q8_0, QK, 34);

/// `block_q8_1`: scale, `d * sum(qs)`, 32 signed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: F16Le,
    pub s: F16Le,
    pub qs: [i8; QK],
}
byte_block!(BlockQ8_1, Q8_1, QK, 36);

/// `block_q2_K`: 16 (4-bit scale | 4-bit min) bytes, 256 2-bit quants, super scale and min.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: F16Le,
    pub dmin: F16Le,
}
byte_block!(BlockQ2K, Q2_K, QK_K, 84);

/// `block_q3_K`: high-bit mask, 2-bit low quants, 16 packed 6-bit scales, super scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: F16Le,
}
byte_block!(BlockQ3K, Q3_K, QK_K, 110);

/// `block_q4_K`: super scale and min, 8 packed 6-bit (scale, min) pairs, 256 nibbles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ4K {
    pub d: F16Le,
    pub dmin: F16Le,
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}
byte_block!(BlockQ4K, Q4_K, QK_K, 144);

/// `block_q5_K`: as Q4_K plus one high bit per quant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ5K {
    pub d: F16Le,
    pub dmin: F16Le,
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
byte_block!(BlockQ5K, Q5_K, QK_K, 176);

/// `block_q6_K`: low nibbles, high 2 bits, 16 signed 8-bit scales, super scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: F16Le,
}
byte_block!(BlockQ6K, Q6_K, QK_K, 210);

/// `block_iq4_nl`: scale and 32 indices into [`KVALUES_IQ4NL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockIQ4NL {
    pub d: F16Le,
    pub qs: [u8; QK4_NL / 2],
}
byte_block!(BlockIQ4NL, IQ4_NL, QK4_NL, 18);

/// `block_iq4_xs`: super scale, 8 6-bit sub-scales (high 2 bits in `scales_h`,
/// a little-endian u16), 256 indices into [`KVALUES_IQ4NL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockIQ4XS {
    pub d: F16Le,
    pub scales_h: [u8; 2],
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}
byte_block!(BlockIQ4XS, IQ4_XS, QK_K, 136);

impl BlockIQ4XS {
    /// The scale of 32-value sub-block `ib` (0..8), centred: its 6 bits
    /// (low 4 in `scales_l`, high 2 in `scales_h`) minus 32.
    #[inline(always)]
    pub fn sub_scale(&self, ib: usize) -> i32 {
        let sh = u16::from_le_bytes(self.scales_h);
        let lo = ((self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) as i32;
        (lo | (((sh >> (2 * ib)) & 3) as i32) << 4) - 32
    }
}

/// `block_iq2_xxs`: super scale, then per 32 values 4 grid indices (bytes)
/// and a little-endian u32 of 4 × 7 sign bits and a 4-bit scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockIQ2XXS {
    pub d: F16Le,
    pub qs: [u8; QK_K / 4],
}
byte_block!(BlockIQ2XXS, IQ2_XXS, QK_K, 66);

/// `block_iq2_xs`: super scale, 32 little-endian u16 (9-bit grid index,
/// 7 sign bits), 8 bytes of two 4-bit scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockIQ2XS {
    pub d: F16Le,
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; QK_K / 32],
}
byte_block!(BlockIQ2XS, IQ2_XS, QK_K, 74);

/// `block_iq2_s`: super scale, 32 low bytes of 10-bit grid indices, then 32
/// sign bytes; 8 bytes of their high bits; 8 bytes of two 4-bit scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockIQ2S {
    pub d: F16Le,
    pub qs: [u8; QK_K / 4],
    pub qh: [u8; QK_K / 32],
    pub scales: [u8; QK_K / 32],
}
byte_block!(BlockIQ2S, IQ2_S, QK_K, 82);

/// `block_iq3_xxs`: super scale, 64 grid indices (bytes), then per 32
/// values a little-endian u32 of 4 × 7 sign bits and a 4-bit scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockIQ3XXS {
    pub d: F16Le,
    pub qs: [u8; 3 * QK_K / 8],
}
byte_block!(BlockIQ3XXS, IQ3_XXS, QK_K, 98);

/// `block_iq3_s`: super scale, 64 low bytes of 9-bit grid indices, 8 bytes
/// of their high bits, 32 sign bytes, 4 bytes of two 4-bit scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockIQ3S {
    pub d: F16Le,
    pub qs: [u8; QK_K / 4],
    pub qh: [u8; QK_K / 32],
    pub signs: [u8; QK_K / 8],
    pub scales: [u8; QK_K / 64],
}
byte_block!(BlockIQ3S, IQ3_S, QK_K, 110);

/// `block_iq1_s`: super scale, 32 low bytes of 11-bit grid indices, 8
/// little-endian u16 (3 high bits per index, a 3-bit scale, the delta's sign).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BlockIQ1S {
    pub d: F16Le,
    pub qs: [u8; QK_K / 8],
    pub qh: [u8; QK_K / 16],
}
byte_block!(BlockIQ1S, IQ1_S, QK_K, 50);

/// `block_q8_K`: the activation format of the k-quant dot products. Unlike
/// the weight blocks it has natural `f32` / `i16` fields (it lives in scratch
/// buffers, not in files); [`BlockQ8K::read`] / [`BlockQ8K::write`] convert
/// from / to the 292-byte file layout.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(size_of::<BlockQ8K>() == 292);

impl BlockQ8K {
    /// An all-zero block.
    pub const ZERO: BlockQ8K = BlockQ8K {
        d: 0.0,
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
    };

    /// Parses the 292-byte little-endian file layout.
    pub fn read(bytes: &[u8; 292]) -> BlockQ8K {
        let mut b = BlockQ8K::ZERO;
        b.d = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        for (q, &v) in b.qs.iter_mut().zip(&bytes[4..4 + QK_K]) {
            *q = v as i8;
        }
        for (i, s) in b.bsums.iter_mut().enumerate() {
            let o = 4 + QK_K + 2 * i;
            *s = i16::from_le_bytes([bytes[o], bytes[o + 1]]);
        }
        b
    }

    /// Writes the 292-byte little-endian file layout.
    pub fn write(&self, out: &mut [u8; 292]) {
        out[..4].copy_from_slice(&self.d.to_le_bytes());
        for (o, &q) in out[4..4 + QK_K].iter_mut().zip(&self.qs) {
            *o = q as u8;
        }
        for (i, s) in self.bsums.iter().enumerate() {
            let o = 4 + QK_K + 2 * i;
            out[o..o + 2].copy_from_slice(&s.to_le_bytes());
        }
    }
}

/// Views `bytes` as a slice of blocks (zero-copy, any address).
pub fn cast_blocks<B: ByteBlock>(bytes: &[u8]) -> Result<&[B]> {
    let size = size_of::<B>();
    if !bytes.len().is_multiple_of(size) {
        return Err(KernelError::DataSize {
            ty: B::TYPE,
            expected: bytes.len() / size * size,
            got: bytes.len(),
        });
    }
    // SAFETY: `B: ByteBlock` guarantees alignment 1, no padding and no
    // invalid bit patterns, so any initialized bytes of a multiple of
    // size_of::<B>() form valid `B`s; the length is checked above, and the
    // returned slice borrows `bytes` so it cannot outlive it.
    Ok(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / size) })
}

/// Mutable counterpart of [`cast_blocks`].
pub fn cast_blocks_mut<B: ByteBlock>(bytes: &mut [u8]) -> Result<&mut [B]> {
    let size = size_of::<B>();
    if !bytes.len().is_multiple_of(size) {
        return Err(KernelError::DataSize {
            ty: B::TYPE,
            expected: bytes.len() / size * size,
            got: bytes.len(),
        });
    }
    let n = bytes.len() / size;
    // SAFETY: as in `cast_blocks`; additionally every byte pattern written
    // through the blocks is a valid u8, so the bytes stay valid after the
    // exclusive borrow ends.
    Ok(unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), n) })
}

/// The bytes of a slice of blocks.
pub fn blocks_as_bytes<B: ByteBlock>(blocks: &[B]) -> &[u8] {
    // SAFETY: `B: ByteBlock` has no padding, so all its bytes are
    // initialized; u8 has alignment 1 and the length is the exact byte size.
    unsafe {
        std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), std::mem::size_of_val(blocks))
    }
}

/// Number of bytes that `n` elements of `ty` take, checking block divisibility.
pub fn bytes_for(ty: GgmlType, n: usize) -> Result<usize> {
    let block = ty.block_size() as usize;
    if !n.is_multiple_of(block) {
        return Err(KernelError::NotBlockMultiple { ty, n, block });
    }
    (n / block)
        .checked_mul(ty.type_size() as usize)
        .ok_or(KernelError::Shape {
            op: "bytes_for",
            detail: format!("{n} elements of {ty} overflow usize"),
        })
}

/// Number of bytes of a `[rows, cols]` matrix of `ty` (whole blocks per row).
pub fn matrix_bytes(ty: GgmlType, rows: usize, cols: usize) -> Result<usize> {
    bytes_for(ty, cols)?
        .checked_mul(rows)
        .ok_or(KernelError::Shape {
            op: "matrix_bytes",
            detail: format!("{rows} x {cols} {ty} overflows usize"),
        })
}

/// Checks that `data` holds exactly `n` elements of `ty`.
pub fn check_data(ty: GgmlType, n: usize, data: &[u8]) -> Result<()> {
    let expected = bytes_for(ty, n)?;
    if data.len() != expected {
        return Err(KernelError::DataSize {
            ty,
            expected,
            got: data.len(),
        });
    }
    Ok(())
}

/// `get_scale_min_k4`: the j-th 6-bit (scale, min) pair of Q4_K / Q5_K.
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The 16 signed 6-bit scales of a Q3_K block (already minus 32).
#[inline(always)]
pub fn q3k_scales(s: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = ((low | (high << 4)) as i8) - 32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_agree_with_gguf_type_table() {
        fn check<B: ByteBlock>() {
            assert_eq!(size_of::<B>() as u64, B::TYPE.type_size(), "{}", B::TYPE);
            assert_eq!(B::ELEMS as u64, B::TYPE.block_size(), "{}", B::TYPE);
        }
        check::<BlockQ4_0>();
        check::<BlockQ4_1>();
        check::<BlockQ5_0>();
        check::<BlockQ5_1>();
        check::<BlockQ8_0>();
        check::<BlockQ8_1>();
        check::<BlockQ2K>();
        check::<BlockQ3K>();
        check::<BlockQ4K>();
        check::<BlockQ5K>();
        check::<BlockQ6K>();
        check::<BlockIQ4NL>();
        check::<BlockIQ4XS>();
        assert_eq!(GgmlType::Q8_K.type_size(), 292);
    }

    #[test]
    fn cast_works_at_odd_addresses_and_checks_length() {
        // Bytes at offset 1 of a buffer: an address no f16/f32 field could use.
        let mut buf = vec![0u8; 1 + 2 * 144];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = i as u8;
        }
        let blocks = cast_blocks::<BlockQ4K>(&buf[1..]).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].d.0, [1, 2]);
        assert_eq!(blocks[1].qs[127], (1 + 144 + 16 + 127) as u8);
        assert_eq!(blocks_as_bytes(blocks), &buf[1..]);
        assert!(cast_blocks::<BlockQ4K>(&buf[..100]).is_err());
        let m = cast_blocks_mut::<BlockQ8_0>(&mut buf[1..1 + 34]).unwrap();
        m[0].qs[0] = -1;
        assert_eq!(buf[3], 255);
    }

    #[test]
    fn q8k_file_layout_roundtrip() {
        let mut bytes = [0u8; 292];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        let b = BlockQ8K::read(&bytes);
        let mut back = [0u8; 292];
        b.write(&mut back);
        assert_eq!(bytes, back);
    }

    #[test]
    fn f16_conversion() {
        assert_eq!(F16Le::from_f32(1.0).0, [0x00, 0x3c]);
        assert_eq!(F16Le([0x00, 0xc0]).to_f32(), -2.0);
    }
}
