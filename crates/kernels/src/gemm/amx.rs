//! Intel AMX (Advanced Matrix Extensions): the tile instructions as inline
//! assembly (Rust's AMX intrinsics and target features are not stable; the
//! assembler knows the instructions whatever the target features), and the
//! tile configuration. Detection is in [`crate::isa`].
//!
//! AMX adds eight tile registers `tmm0..tmm7` of up to 16 rows × 64 bytes
//! and a tile multiply unit: one `tdpbf16ps` multiplies a 16 × 32 bfloat16
//! tile by a 32 × 16 one (stored as 16 rows of 16 bfloat16 pairs) into a
//! 16 × 16 f32 tile, 8192 multiply-adds, where an AVX-512 FMA does 16.
//! (The `tdpbusd` rate measured on our Xeon: benches/journal/kernel-dispatch.md.)
//!
//! Each kernel loads its configuration ([`TileConfig::full`]: all eight
//! tiles 16 rows × 64 bytes, or [`TileConfig::new`]) at the start of each
//! task and releases the tiles at its end.

use std::arch::asm;
use std::arch::x86_64::*;

pub(crate) use crate::isa::amx::{available, has_int8};

/// The 64-byte operand of `ldtilecfg` (palette 1).
#[repr(C, align(64))]
pub(crate) struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    /// Bytes per row of each tile.
    colsb: [u16; 16],
    /// Rows of each tile.
    rows: [u8; 16],
}

const _: () = assert!(size_of::<TileConfig>() == 64);

impl TileConfig {
    /// All eight tiles 16 rows × 64 bytes.
    pub(crate) const fn full() -> TileConfig {
        let mut c = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        let mut t = 0;
        while t < 8 {
            c.colsb[t] = 64;
            c.rows[t] = 16;
            t += 1;
        }
        c
    }

    /// Tiles 0–7 with the given rows and bytes per row.
    pub(crate) const fn new(rows: [u8; 8], colsb: [u16; 8]) -> TileConfig {
        let mut c = TileConfig::full();
        let mut t = 0;
        while t < 8 {
            c.rows[t] = rows[t];
            c.colsb[t] = colsb[t];
            t += 1;
        }
        c
    }

    /// Loads this configuration into the calling thread's tile unit (and
    /// zeroes every tile).
    ///
    /// # Safety
    /// [`available`] returned true.
    #[inline]
    pub(crate) unsafe fn load(&self) {
        // SAFETY: AMX is usable (the caller's contract); `self` is a valid
        // 64-byte configuration.
        unsafe { asm!("ldtilecfg [{}]", in(reg) self, options(nostack, readonly)) };
    }
}

/// Releases the calling thread's tile state (so context switches stop
/// saving it).
///
/// # Safety
/// [`available`] returned true.
#[inline]
pub(crate) unsafe fn release() {
    // SAFETY: AMX is usable (the caller's contract).
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// One tile in memory: 16 rows of 64 bytes (1 KiB), as `tileloadd` /
/// `tilestored` move it with a 64-byte stride.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Tile(pub(crate) [u8; 1024]);

const _: () = assert!(size_of::<Tile>() == 1024);

impl Tile {
    pub(crate) const ZERO: Tile = Tile([0; 1024]);

    /// Row `m` (< 16): 64 bytes, 64-byte aligned.
    #[inline(always)]
    pub(crate) fn row(&self, m: usize) -> *const u8 {
        self.0[64 * m..].as_ptr()
    }

    /// Row `m` (< 16), writable.
    #[inline(always)]
    pub(crate) fn row_mut(&mut self, m: usize) -> *mut u8 {
        self.0[64 * m..].as_mut_ptr()
    }

    /// Rows `0..16` as vectors.
    ///
    /// # Safety
    /// AVX-512F available.
    #[inline(always)]
    pub(crate) unsafe fn rows(&self) -> [__m512i; 16] {
        // SAFETY: 16 aligned 64-byte loads inside the tile.
        std::array::from_fn(|m| unsafe { _mm512_load_si512(self.row(m).cast()) })
    }
}

/// 16 × 16 transpose of 32-bit elements: `r[i][j]` becomes `r[j][i]`.
///
/// # Safety
/// AVX-512F available.
#[inline(always)]
pub(crate) unsafe fn transpose16(r: &mut [__m512i; 16]) {
    // SAFETY (of the block): register operations, AVX-512F is the caller's.
    unsafe {
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        // u[4i + q], 128-bit lane L: rows 4i..4i + 4 at column 4L + q.
        let mut u = [_mm512_setzero_si512(); 16];
        for i in 0..4 {
            u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
            u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
        }
        // Column 4L + q: lane L' is lane L of u[4L' + q].
        for q in 0..4 {
            let va = _mm512_shuffle_i32x4::<0x44>(u[q], u[4 + q]);
            let vb = _mm512_shuffle_i32x4::<0xEE>(u[q], u[4 + q]);
            let wa = _mm512_shuffle_i32x4::<0x44>(u[8 + q], u[12 + q]);
            let wb = _mm512_shuffle_i32x4::<0xEE>(u[8 + q], u[12 + q]);
            r[q] = _mm512_shuffle_i32x4::<0x88>(va, wa);
            r[4 + q] = _mm512_shuffle_i32x4::<0xDD>(va, wa);
            r[8 + q] = _mm512_shuffle_i32x4::<0x88>(vb, wb);
            r[12 + q] = _mm512_shuffle_i32x4::<0xDD>(vb, wb);
        }
    }
}

/// Stores 16 × 16 f32 sums (`v[m]` lane `c`: weight row `r0 + m`,
/// activation row `t0 + c`) transposed into `y` (`ldy` f32 per activation
/// row), the first `valid` activation rows: one 64-byte store per row.
///
/// # Safety
/// AVX-512F available; rows `t0..t0 + valid` of `y` have columns
/// `r0..r0 + 16` that belong to the caller.
#[inline(always)]
pub(crate) unsafe fn store_transposed(
    mut v: [__m512i; 16],
    y: *mut f32,
    ldy: usize,
    (r0, t0, valid): (usize, usize, usize),
) {
    // SAFETY: register operations, then stores inside the caller's part of `y`.
    unsafe {
        transpose16(&mut v);
        for (c, row) in v.iter().enumerate().take(valid) {
            _mm512_storeu_si512(y.add((t0 + c) * ldy + r0).cast(), *row);
        }
    }
}

/// `tileloadd tmm$t, [$ptr + $stride]`: 16 rows of 64 bytes, row `i` at
/// `ptr + i * stride`.
///
/// Safety (of each use): a configuration is loaded, and the 16 rows are
/// readable.
macro_rules! tile_load {
    ($t:literal, $ptr:expr, $stride:expr) => {
        std::arch::asm!(
            concat!("tileloadd tmm", $t, ", [{p} + {s}*1]"),
            p = in(reg) $ptr,
            s = in(reg) $stride,
            options(nostack, readonly)
        )
    };
}

/// `tilestored [$ptr + $stride], tmm$t` (safety: as [`tile_load`], rows writable).
macro_rules! tile_store {
    ($t:literal, $ptr:expr, $stride:expr) => {
        std::arch::asm!(
            concat!("tilestored [{p} + {s}*1], tmm", $t),
            p = in(reg) $ptr,
            s = in(reg) $stride,
            options(nostack)
        )
    };
}

/// `tilezero tmm$t` (safety: a configuration is loaded).
macro_rules! tile_zero {
    ($t:literal) => {
        std::arch::asm!(concat!("tilezero tmm", $t), options(nostack, nomem))
    };
}

/// `tdpbf16ps tmm$c, tmm$a, tmm$b`: `c[m][n] += Σ_k a[m][k] · b[k/2][2n + k%2]`
/// over the 32 bfloat16 of a row (safety: a configuration is loaded).
macro_rules! tile_dp_bf16 {
    ($c:literal, $a:literal, $b:literal) => {
        std::arch::asm!(
            concat!("tdpbf16ps tmm", $c, ", tmm", $a, ", tmm", $b),
            options(nostack, nomem)
        )
    };
}

pub(crate) use {tile_dp_bf16, tile_load, tile_store, tile_zero};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose16_transposes() {
        if !is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512F: nothing to test");
            return;
        }
        let src: Vec<i32> = (0..256).collect();
        // SAFETY: AVX-512F checked; 16 loads and stores of 64 bytes inside
        // 1 KiB buffers.
        let out = unsafe {
            let mut r: [__m512i; 16] =
                std::array::from_fn(|i| _mm512_loadu_si512(src.as_ptr().add(16 * i).cast()));
            transpose16(&mut r);
            let mut out = vec![0i32; 256];
            for (i, v) in r.iter().enumerate() {
                _mm512_storeu_si512(out.as_mut_ptr().add(16 * i).cast(), *v);
            }
            out
        };
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(out[16 * i + j], src[16 * j + i], "({i}, {j})");
            }
        }
    }
}
