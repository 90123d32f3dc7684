//! The i-quants on lattices ([`crate::iquant`]) in AVX-512 form.
//!
//! A super-block is read as four `zmm` of 64 unsigned magnitudes, one
//! 64-bit sign mask per `zmm` and the 16 scales of its groups of 16 values.
//! The grid entries are fetched by `vpgatherdd` / `vpgatherdq` from indices
//! built in vector registers (the AVX2 kernel builds each index with scalar
//! instructions, which is where its time goes), or on a CPU with AVX-512
//! VBMI looked up: IQ3_XXS and IQ3_S by `vpermi2b` from byte tables
//! ([`Iq3XxsVbmi`], [`Iq3sVbmi`], which take the values in another order),
//! IQ2_XXS, IQ2_XS and IQ2_S as 16-bit codes of their three levels by
//! `vpermi2w` ([`Iq2Vbmi`], values in order); the signs negate the
//! activations through a mask (`vpsubb` with a `k` register, where AVX2
//! has `vpsignb`); `vpmaddubsw` multiplies magnitudes and activations and
//! `vpdpwssd` adds the pair sums times the group scales into i32 lanes.
//!
//! IQ1_S has no magnitudes: its grid values (−1, 0, 1) are read as
//! `g + 1` (0, 1, 2, unsigned), its scales carry its factor 8, and the
//! extra `8·Σ a` per 32 values, with its ±1 shift, is taken back from the
//! activations' group sums by one more `vpmaddwd` ([`IqZmm::offset`]).
//!
//! The integer sum of a super-block is exact and the float step is the
//! scalar kernel's, so the results equal [`crate::dot::scalar`]'s bit for
//! bit, as the AVX2 kernels' do.

use super::super::avx2::{f16, prefetch_ahead};
use super::{dpwssd, sums};
use crate::blocks::*;
use crate::iquant::grids::*;
use crate::iquant::{u16_at, u32_at, u64_at, IqBlock};
use std::arch::x86_64::*;

/// `[e(0), e(1), e(2), e(3)]` written out: a closure (`array::from_fn`)
/// is a function of its own without the caller's target features, and the
/// intrinsics in it are then calls.
macro_rules! four {
    (|$p:ident| $e:expr) => {
        [
            {
                let $p = 0usize;
                $e
            },
            {
                let $p = 1usize;
                $e
            },
            {
                let $p = 2usize;
                $e
            },
            {
                let $p = 3usize;
                $e
            },
        ]
    };
}

/// A lattice i-quant block as the AVX-512 kernels read it.
pub(crate) trait IqZmm: IqBlock {
    /// The super-block's magnitudes (`zmm` `p`: values `64p..64p + 64`,
    /// unsigned bytes), its sign masks (bit `j` of word `p`: value
    /// `64p + j` is negative) and the scales of its 16 groups of 16 values
    /// times [`IqBlock::MUL`] (i16 lanes, in order). Where a type has no
    /// signs its masks are 0.
    ///
    /// # Safety
    /// AVX-512 F/BW and AVX2 available.
    unsafe fn zmm(&self) -> ([__m512i; 4], [u64; 4], __m256i);

    /// Where the block's integer sum has a part that the `zmm` lanes do
    /// not hold: its weight per activation group sum (i16 lanes, one per
    /// 16 values; `Σ_g offset_g · bsum_g` is that part). `None` where
    /// [`IqBlock::delta_sum`] is zero.
    ///
    /// # Safety
    /// As for [`IqZmm::zmm`].
    #[inline(always)]
    unsafe fn offset(&self) -> Option<__m256i> {
        None
    }
}

/// Eight i16 lanes as 16, each twice (in order).
#[inline(always)]
unsafe fn twice8(x: __m128i) -> __m256i {
    _mm256_set_m128i(_mm_unpackhi_epi16(x, x), _mm_unpacklo_epi16(x, x))
}

/// `2s + 1` of i16 lanes `s` (the odd scales of every lattice type).
#[inline(always)]
unsafe fn odd16(s: __m256i) -> __m256i {
    _mm256_or_si256(_mm256_slli_epi16(s, 1), _mm256_set1_epi16(1))
}

/// Eight u32 lanes `s` (values below 2^16) as 16 i16 lanes, each twice:
/// the scales of types with one per 32 values.
#[inline(always)]
unsafe fn twice16(s: __m256i) -> __m256i {
    _mm256_or_si256(s, _mm256_slli_epi32(s, 16))
}

/// 8 bytes of two 4-bit scales each (values `16k..16k + 16` take nibble
/// `k % 2` of byte `k / 2`, low first) as 16 i16 lanes.
#[inline(always)]
unsafe fn nibble_scales(p: *const u8) -> __m256i {
    let b = _mm_loadl_epi64(p as *const __m128i);
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(b, m);
    let hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
    _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(lo, hi))
}

/// The sign bytes of 7-bit fields (`b` < 128 in every byte): bit 7 set
/// where the number of ones is odd, so every byte has even parity
/// ([`crate::iquant::ksigns`]).
#[inline(always)]
unsafe fn ksigns32(b: __m256i) -> __m256i {
    // Bit 0 of each byte after three folds (shifts 4, 2, 1: less than 8, so
    // no bit of a neighbouring byte reaches it) is the parity of the byte.
    let mut p = _mm256_xor_si256(b, _mm256_srli_epi32(b, 4));
    p = _mm256_xor_si256(p, _mm256_srli_epi32(p, 2));
    p = _mm256_xor_si256(p, _mm256_srli_epi32(p, 1));
    let parity = _mm256_and_si256(p, _mm256_set1_epi8(1));
    _mm256_or_si256(b, _mm256_slli_epi32(parity, 7))
}

/// The four 7-bit sign fields (bits `7l..7l + 7`) of each u32 lane `aux`
/// (IQ2_XXS, IQ3_XXS) as its four bytes, parity-completed: 32 sign bytes,
/// one per group of 8 values, in order.
#[inline(always)]
unsafe fn aux_signs(aux: __m256i) -> [u64; 4] {
    to_words(aux_sign_bytes(aux))
}

/// [`aux_signs`] as the 32 sign bytes in a vector.
#[inline(always)]
unsafe fn aux_sign_bytes(aux: __m256i) -> __m256i {
    let b = _mm256_or_si256(
        _mm256_or_si256(
            _mm256_and_si256(aux, _mm256_set1_epi32(0x7F)),
            _mm256_and_si256(_mm256_slli_epi32(aux, 1), _mm256_set1_epi32(0x7F00)),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_slli_epi32(aux, 2), _mm256_set1_epi32(0x7F_0000)),
            _mm256_and_si256(_mm256_slli_epi32(aux, 3), _mm256_set1_epi32(0x7F00_0000)),
        ),
    );
    ksigns32(b)
}

/// The scales `2·s + 1` of the 8 sub-blocks whose u32 lanes are `aux`
/// (IQ2_XXS, IQ3_XXS: `s` in the top 4 bits), as 16 i16 lanes, each twice.
#[inline(always)]
unsafe fn aux_scales(aux: __m256i) -> __m256i {
    odd16(twice16(_mm256_srli_epi32(aux, 28)))
}

#[inline(always)]
unsafe fn to_words(v: __m256i) -> [u64; 4] {
    let mut w = [0u64; 4];
    _mm256_storeu_si256(w.as_mut_ptr() as *mut __m256i, v);
    w
}

/// Grid entries of 8 bytes (IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S) at 8 indices:
/// 64 values.
///
/// # Safety
/// Every lane of `idx` is below `grid.len()`.
#[inline(always)]
unsafe fn gather8(grid: &[u64], idx: __m256i) -> __m512i {
    _mm512_i32gather_epi64::<8>(idx, grid.as_ptr() as *const _)
}

/// Grid entries of 4 bytes (IQ3_XXS, IQ3_S) at 16 indices: 64 values.
///
/// # Safety
/// Every lane of `idx` is below `grid.len()`.
#[inline(always)]
unsafe fn gather4(grid: &[u32], idx: __m512i) -> __m512i {
    _mm512_i32gather_epi32::<4>(idx, grid.as_ptr() as *const _)
}

impl IqZmm for BlockIQ2XXS {
    #[inline(always)]
    unsafe fn zmm(&self) -> ([__m512i; 4], [u64; 4], __m256i) {
        // Sub-block `ib`: index bytes 8ib..8ib + 4, then its u32 of signs
        // and scale.
        let pick = _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, -1, -1, -1, -1, -1, -1, -1, -1);
        let m = four!(|p| {
            let b = _mm_loadu_si128(self.qs.as_ptr().add(16 * p) as *const __m128i);
            // Byte indices: below 256 = IQ2XXS_GRID.len().
            gather8(
                &IQ2XXS_GRID,
                _mm256_cvtepu8_epi32(_mm_shuffle_epi8(b, pick)),
            )
        });
        let (s, sc) = self.signs_scales();
        (m, s, sc)
    }
}

impl IqZmm for BlockIQ2XS {
    #[inline(always)]
    unsafe fn zmm(&self) -> ([__m512i; 4], [u64; 4], __m256i) {
        // 32 u16: a 9-bit grid index, then 7 sign bits.
        let m = four!(|p| {
            let q = _mm_loadu_si128(self.qs.as_ptr().add(16 * p) as *const __m128i);
            let idx = _mm256_and_si256(_mm256_cvtepu16_epi32(q), _mm256_set1_epi32(511));
            // Masked to 9 bits: below 512 = IQ2XS_GRID.len().
            gather8(&IQ2XS_GRID, idx)
        });
        let (s, sc) = self.signs_scales();
        (m, s, sc)
    }
}

impl IqZmm for BlockIQ2S {
    #[inline(always)]
    unsafe fn zmm(&self) -> ([__m512i; 4], [u64; 4], __m256i) {
        // Group k of a pair of sub-blocks takes bits 2k, 2k + 1 of their
        // two `qh` bytes as its index bits 8 and 9.
        let shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
        let m = four!(|p| {
            let lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                self.qs.as_ptr().add(8 * p) as *const __m128i
            ));
            let h = _mm256_set1_epi32((u16_at(&self.qh, p) << 8) as i32);
            let hi = _mm256_and_si256(_mm256_srlv_epi32(h, shifts), _mm256_set1_epi32(0x300));
            // 8 + 2 bits: below 1024 = IQ2S_GRID.len().
            gather8(&IQ2S_GRID, _mm256_or_si256(lo, hi))
        });
        let (s, sc) = self.signs_scales();
        (m, s, sc)
    }
}

/// The IQ2 types (grid values 8, 25 and 43 only) with their grid looked up
/// as 16-bit codes ([`Iq2Vbmi`]).
trait Iq2Codes: IqZmm {
    /// The grid index of each of the 32 groups of 8 values, in order, as
    /// i16 lanes (each below the grid's length).
    ///
    /// # Safety
    /// AVX-512 F/BW and VBMI available.
    unsafe fn indices(&self) -> __m512i;

    /// The codes of the grid entries at `idx` ([`lookup_codes`]).
    ///
    /// # Safety
    /// As for [`Iq2Codes::indices`]; `idx` from it.
    unsafe fn codes(idx: __m512i) -> __m512i;

    /// The sign masks and the 16 group scales of [`IqZmm::zmm`].
    ///
    /// # Safety
    /// AVX-512 F/BW and AVX2 available.
    unsafe fn signs_scales(&self) -> ([u64; 4], __m256i);
}

impl Iq2Codes for BlockIQ2XXS {
    #[inline(always)]
    unsafe fn indices(&self) -> __m512i {
        // Word g: index byte 8·(g / 4) + g % 4, the high byte zero.
        let v = _mm512_loadu_si512(self.qs.as_ptr() as *const _);
        let pick = _mm512_load_si512(IQ2XXS_PICK.0.as_ptr() as *const _);
        _mm512_maskz_permutexvar_epi8(EVEN_BYTES, pick, v)
    }

    #[inline(always)]
    unsafe fn codes(idx: __m512i) -> __m512i {
        lookup_codes(&IQ2XXS_CODES, idx)
    }

    #[inline(always)]
    unsafe fn signs_scales(&self) -> ([u64; 4], __m256i) {
        // Sub-block `ib`'s u32 of signs and scale: bytes 8ib + 4..8ib + 8.
        let v = _mm512_loadu_si512(self.qs.as_ptr() as *const _);
        let aux = _mm512_castsi512_si256(_mm512_permutexvar_epi32(
            _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 0, 0, 0, 0, 0, 0, 0, 0),
            v,
        ));
        (aux_signs(aux), aux_scales(aux))
    }
}

impl Iq2Codes for BlockIQ2XS {
    #[inline(always)]
    unsafe fn indices(&self) -> __m512i {
        let v = _mm512_loadu_si512(self.qs.as_ptr() as *const _);
        _mm512_and_si512(v, _mm512_set1_epi16(511))
    }

    #[inline(always)]
    unsafe fn codes(idx: __m512i) -> __m512i {
        lookup_codes(&IQ2XS_CODES, idx)
    }

    #[inline(always)]
    unsafe fn signs_scales(&self) -> ([u64; 4], __m256i) {
        // 32 u16: a 9-bit grid index, then 7 sign bits.
        let v = _mm512_loadu_si512(self.qs.as_ptr() as *const _);
        let signs = _mm512_cvtepi16_epi8(_mm512_srli_epi16(v, 9));
        let sc = odd16(nibble_scales(self.scales.as_ptr()));
        (to_words(ksigns32(signs)), sc)
    }
}

impl Iq2Codes for BlockIQ2S {
    #[inline(always)]
    unsafe fn indices(&self) -> __m512i {
        // Word g: index byte g, and bits 2·(g % 4), + 1 of `qh[g / 4]` as
        // its bits 8 and 9.
        let v = _mm512_loadu_si512(self.qs.as_ptr() as *const _);
        let lo = _mm512_maskz_permutexvar_epi8(
            EVEN_BYTES,
            _mm512_load_si512(IQ2S_PICK_LO.0.as_ptr() as *const _),
            v,
        );
        let qh = _mm512_castsi128_si512(_mm_loadl_epi64(self.qh.as_ptr() as *const __m128i));
        let h = _mm512_maskz_permutexvar_epi8(
            EVEN_BYTES,
            _mm512_load_si512(IQ2S_PICK_QH.0.as_ptr() as *const _),
            qh,
        );
        let shifts = _mm512_load_si512(IQ2S_QH_SHIFT.0.as_ptr() as *const _);
        let hi = _mm512_and_si512(_mm512_srlv_epi16(h, shifts), _mm512_set1_epi16(3));
        _mm512_or_si512(lo, _mm512_slli_epi16(hi, 8))
    }

    #[inline(always)]
    unsafe fn codes(idx: __m512i) -> __m512i {
        lookup_codes(&IQ2S_CODES, idx)
    }

    #[inline(always)]
    unsafe fn signs_scales(&self) -> ([u64; 4], __m256i) {
        let s = four!(|p| u64_at(&self.qs, QK_K / 8 + 8 * p));
        (s, odd16(nibble_scales(self.scales.as_ptr())))
    }
}

impl IqZmm for BlockIQ3XXS {
    #[inline(always)]
    unsafe fn zmm(&self) -> ([__m512i; 4], [u64; 4], __m256i) {
        let m = four!(|p| {
            let b = _mm_loadu_si128(self.qs.as_ptr().add(16 * p) as *const __m128i);
            // Byte indices: below 256 = IQ3XXS_GRID.len().
            gather4(&IQ3XXS_GRID, _mm512_cvtepu8_epi32(b))
        });
        let aux = _mm256_loadu_si256(self.qs.as_ptr().add(QK_K / 4) as *const __m256i);
        let sc = aux_scales(aux);
        (m, aux_signs(aux), sc)
    }
}

impl IqZmm for BlockIQ3S {
    #[inline(always)]
    unsafe fn zmm(&self) -> ([__m512i; 4], [u64; 4], __m256i) {
        // Entry k (of 16) of a pair of sub-blocks takes bit k of their two
        // `qh` bytes as its index bit 8.
        let shifts = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let m = four!(|p| {
            let lo = _mm512_cvtepu8_epi32(_mm_loadu_si128(
                self.qs.as_ptr().add(16 * p) as *const __m128i
            ));
            let h = _mm512_set1_epi32((u16_at(&self.qh, p) << 8) as i32);
            let hi = _mm512_and_si512(_mm512_srlv_epi32(h, shifts), _mm512_set1_epi32(256));
            // 8 + 1 bits: below 512 = IQ3S_GRID.len().
            gather4(&IQ3S_GRID, _mm512_or_si512(lo, hi))
        });
        let s = four!(|p| u64_at(&self.signs, 8 * p));
        (m, s, self.scales16())
    }
}

impl BlockIQ3S {
    /// The 16 group scales `2·s + 1` as i16 lanes: sub-block `ib`'s scale
    /// `s` is nibble `ib % 2` of byte `ib / 2`, each twice.
    #[inline(always)]
    unsafe fn scales16(&self) -> __m256i {
        let b = _mm_cvtsi32_si128(u32_at(&self.scales, 0) as i32);
        let n = _mm_set1_epi8(0x0F);
        let nib = _mm_unpacklo_epi8(_mm_and_si128(b, n), _mm_and_si128(_mm_srli_epi16(b, 4), n));
        odd16(_mm256_cvtepu8_epi16(_mm_unpacklo_epi8(nib, nib)))
    }
}

impl IqZmm for BlockIQ1S {
    #[inline(always)]
    unsafe fn zmm(&self) -> ([__m512i; 4], [u64; 4], __m256i) {
        // Group l of sub-block ib takes bits 3l..3l + 3 of `qh[ib]` (u16)
        // as its index bits 8..11; a pair's two u16 are one u32.
        let shifts = _mm256_setr_epi32(0, 3, 6, 9, 16, 19, 22, 25);
        let one = _mm512_set1_epi8(1);
        let m = four!(|p| {
            let lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                self.qs.as_ptr().add(8 * p) as *const __m128i
            ));
            let h = _mm256_set1_epi32(u32_at(&self.qh, 4 * p) as i32);
            let hi = _mm256_and_si256(_mm256_srlv_epi32(h, shifts), _mm256_set1_epi32(7));
            let hi = _mm256_slli_epi32(hi, 8);
            // 8 + 3 bits: below 2048 = IQ1S_GRID.len(). Values −1, 0, 1
            // read as 0, 1, 2.
            _mm512_add_epi8(gather8(&IQ1S_GRID, _mm256_or_si256(lo, hi)), one)
        });
        let sc = self.scales8();
        (m, [0; 4], twice8(_mm_slli_epi16(sc, 3)))
    }

    /// Sub-block `ib`'s scale times `δ − 8`: its shift `δ` (−1 where bit
    /// 15 of `qh[ib]` is set, else 1) less the `8·a` per value that
    /// reading the grid values as `g + 1` added ([`IqBlock::MUL`] = 8).
    #[inline(always)]
    unsafe fn offset(&self) -> Option<__m256i> {
        let qh = _mm_loadu_si128(self.qh.as_ptr() as *const __m128i);
        let shift = _mm_add_epi16(
            _mm_set1_epi16(1 - Self::MUL as i16),
            _mm_slli_epi16(_mm_srai_epi16(qh, 15), 1),
        );
        Some(twice8(_mm_mullo_epi16(self.scales8(), shift)))
    }
}

impl BlockIQ1S {
    /// The 8 sub-block scales `2·s + 1` as i16 lanes.
    #[inline(always)]
    unsafe fn scales8(&self) -> __m128i {
        let qh = _mm_loadu_si128(self.qh.as_ptr() as *const __m128i);
        let s = _mm_and_si128(_mm_srli_epi16(qh, 12), _mm_set1_epi16(7));
        _mm_or_si128(_mm_slli_epi16(s, 1), _mm_set1_epi16(1))
    }
}

/// The group scales of pair `p` spread over its 32 i16 product lanes (lane
/// `i` holds values `2i`, `2i + 1`: group `4p + i / 8`).
#[inline(always)]
unsafe fn spread(sc: __m256i) -> [__m512i; 4] {
    spread_by(
        sc,
        _mm512_set_epi64(
            0x0003_0003_0003_0003,
            0x0003_0003_0003_0003,
            0x0002_0002_0002_0002,
            0x0002_0002_0002_0002,
            0x0001_0001_0001_0001,
            0x0001_0001_0001_0001,
            0,
            0,
        ),
    )
}

/// The group scales (16 i16 lanes) spread over the 32 i16 product lanes of
/// each pair `p`: lane `i` takes group `4p + group[i]`.
#[inline(always)]
unsafe fn spread_by(sc: __m256i, group: __m512i) -> [__m512i; 4] {
    let sc = _mm512_castsi256_si512(sc);
    four!(|p| {
        let idx = _mm512_add_epi16(_mm512_set1_epi16(4 * p as i16), group);
        _mm512_permutexvar_epi16(idx, sc)
    })
}

/// The order a kernel takes a super-block's values in, within each of its
/// four `zmm` of 64: [`InOrder`], or [`Iq3XxsVbmi`]'s.
trait Layout<B> {
    /// The magnitudes and sign masks of [`IqZmm::zmm`] in this order, and
    /// the group scales spread over the `vpmaddubsw` product lanes.
    ///
    /// # Safety
    /// As for [`IqZmm::zmm`], and what the layout's entry points enable.
    unsafe fn decode(x: &B) -> ([__m512i; 4], [u64; 4], [__m512i; 4]);
    /// 64 activation bytes, in order, put in this order.
    ///
    /// # Safety
    /// As for [`Layout::decode`].
    unsafe fn act(q: __m512i) -> __m512i;
}

/// Values in order ([`IqZmm::zmm`] as it is).
struct InOrder;

impl<B: IqZmm> Layout<B> for InOrder {
    #[inline(always)]
    unsafe fn decode(x: &B) -> ([__m512i; 4], [u64; 4], [__m512i; 4]) {
        let (m, s, sc) = x.zmm();
        (m, s, spread(sc))
    }

    #[inline(always)]
    unsafe fn act(q: __m512i) -> __m512i {
        q
    }
}

/// IQ3_XXS with its grid looked up by `vpermi2b` (AVX-512 VBMI) instead of
/// gathered: the grid is four 256-byte tables (byte `j` of every entry),
/// and one lookup of all 64 indices of a super-block per table and half
/// gives byte `j` of every entry. In that order, byte `16j + i` of `zmm p`
/// holds value `64p + 4i + j`: four 128-bit lanes moved, no byte shuffle.
/// The activations (`vpermb`), sign masks (`vpermb`, `vptestmb`) and
/// scales take the same order; the integer sums are the in-order ones'.
struct Iq3XxsVbmi;

/// Byte `k` of an in-order `zmm` of 64 values that goes to byte `k` of
/// [`Iq3XxsVbmi`]'s: value `4·(k % 16) + k / 16`.
const fn order4() -> [u8; 64] {
    let mut o = [0u8; 64];
    let mut k = 0;
    while k < 64 {
        o[k] = (4 * (k % 16) + k / 16) as u8;
        k += 1;
    }
    o
}

/// A grid of `N` four-byte entries as four byte tables: `.0[j][i]` is byte
/// `j` of entry `i` (64-byte aligned: each table is `N / 64` `zmm`).
#[repr(C, align(64))]
struct GridBytes<const N: usize>([[u8; N]; 4]);

const fn grid_bytes<const N: usize>(grid: &[u32; N]) -> GridBytes<N> {
    let mut t = [[0u8; N]; 4];
    let mut i = 0;
    while i < N {
        let mut j = 0;
        while j < 4 {
            t[j][i] = (grid[i] >> (8 * j)) as u8;
            j += 1;
        }
        i += 1;
    }
    GridBytes(t)
}

static IQ3XXS_BYTES: GridBytes<256> = grid_bytes(&IQ3XXS_GRID_VALUES);
static IQ3S_BYTES: GridBytes<512> = grid_bytes(&IQ3S_GRID_VALUES);

/// `zmm` `k` (of `N / 64`) of byte table `j` of `t`.
///
/// # Safety
/// `j < 4`, `k < N / 64`.
#[inline(always)]
unsafe fn table<const N: usize>(t: &GridBytes<N>, j: usize, k: usize) -> __m512i {
    _mm512_load_si512((t.0[j].as_ptr() as *const __m512i).add(k))
}

/// [`Iq3XxsVbmi`]'s order from the four lookups `l[j]` (byte `j` of the
/// entry of every index, in index order): `zmm p` is lane `p` of `l[0]`,
/// `l[1]`, `l[2]`, `l[3]`, a 4 × 4 transpose of 128-bit lanes.
#[inline(always)]
unsafe fn lanes_transposed(l: [__m512i; 4]) -> [__m512i; 4] {
    let t0 = _mm512_shuffle_i64x2::<0b01_00_01_00>(l[0], l[1]);
    let t1 = _mm512_shuffle_i64x2::<0b01_00_01_00>(l[2], l[3]);
    let t2 = _mm512_shuffle_i64x2::<0b11_10_11_10>(l[0], l[1]);
    let t3 = _mm512_shuffle_i64x2::<0b11_10_11_10>(l[2], l[3]);
    [
        _mm512_shuffle_i64x2::<0b10_00_10_00>(t0, t1),
        _mm512_shuffle_i64x2::<0b11_01_11_01>(t0, t1),
        _mm512_shuffle_i64x2::<0b10_00_10_00>(t2, t3),
        _mm512_shuffle_i64x2::<0b11_01_11_01>(t2, t3),
    ]
}

/// The sign masks in [`Iq3XxsVbmi`]'s order from the 32 sign bytes in
/// order (byte `b`: values `8b..8b + 8`; the low 32 bytes of `sb`): byte
/// `k` of zmm p is value v = 4·(k % 16) + k / 16, whose sign is bit
/// v % 8 = 4·(k % 2) + k / 16 of sign byte 8p + v / 8 = 8p + (k % 16) / 2.
#[inline(always)]
unsafe fn signs_transposed(sb: __m512i) -> [u64; 4] {
    let from = _mm512_load_si512(ORDER4_SIGN_BYTE.0.as_ptr() as *const _);
    let bit = _mm512_load_si512(ORDER4_SIGN_BIT.0.as_ptr() as *const _);
    four!(|p| {
        let from = _mm512_add_epi8(_mm512_set1_epi8(8 * p as i8), from);
        _mm512_test_epi8_mask(_mm512_permutexvar_epi8(from, sb), bit)
    })
}

/// 64 activation bytes in [`Iq3XxsVbmi`]'s order.
#[inline(always)]
unsafe fn acts_transposed(q: __m512i) -> __m512i {
    _mm512_permutexvar_epi8(_mm512_load_si512(ORDER4_BYTES.0.as_ptr() as *const _), q)
}

/// The 16 group scales spread over the product lanes in [`Iq3XxsVbmi`]'s
/// order: product lane q holds bytes 2q, 2q + 1, values 4·(2q % 16) + q / 8
/// and the next but three, both in group (q % 8) / 2 of the zmm.
#[inline(always)]
unsafe fn scales_transposed(sc: __m256i) -> [__m512i; 4] {
    let (lo, hi) = (0x0001_0001_0000_0000, 0x0003_0003_0002_0002);
    spread_by(sc, _mm512_set_epi64(hi, lo, hi, lo, hi, lo, hi, lo))
}

#[repr(C, align(64))]
struct Bytes64([u8; 64]);

static ORDER4_BYTES: Bytes64 = Bytes64(order4());

/// For byte `k` of [`Iq3XxsVbmi`]'s order: the sign byte of its value
/// within the `zmm`'s eight, `(k % 16) / 2`.
static ORDER4_SIGN_BYTE: Bytes64 = Bytes64({
    let mut o = [0u8; 64];
    let mut k = 0;
    while k < 64 {
        o[k] = ((k % 16) / 2) as u8;
        k += 1;
    }
    o
});

/// For byte `k` of [`Iq3XxsVbmi`]'s order: its value's bit in that sign
/// byte, `1 << (4·(k % 2) + k / 16)`.
static ORDER4_SIGN_BIT: Bytes64 = Bytes64({
    let mut o = [0u8; 64];
    let mut k = 0;
    while k < 64 {
        o[k] = 1 << (4 * (k % 2) + k / 16);
        k += 1;
    }
    o
});

impl Layout<BlockIQ3XXS> for Iq3XxsVbmi {
    #[inline(always)]
    unsafe fn decode(x: &BlockIQ3XXS) -> ([__m512i; 4], [u64; 4], [__m512i; 4]) {
        let idx = _mm512_loadu_si512(x.qs.as_ptr() as *const _);
        // Indices from 128 take the upper half of each table.
        let high = _mm512_movepi8_mask(idx);
        let t = &IQ3XXS_BYTES;
        let l = four!(|j| {
            let lo = _mm512_permutex2var_epi8(table(t, j, 0), idx, table(t, j, 1));
            let hi = _mm512_permutex2var_epi8(table(t, j, 2), idx, table(t, j, 3));
            _mm512_mask_blend_epi8(high, lo, hi)
        });
        let aux = _mm256_loadu_si256(x.qs.as_ptr().add(QK_K / 4) as *const __m256i);
        let s = signs_transposed(_mm512_castsi256_si512(aux_sign_bytes(aux)));
        let sc = aux_scales(aux);
        (lanes_transposed(l), s, scales_transposed(sc))
    }

    #[inline(always)]
    unsafe fn act(q: __m512i) -> __m512i {
        acts_transposed(q)
    }
}

/// IQ3_S the same way as [`Iq3XxsVbmi`]: its 512-entry grid as four
/// 512-byte tables, four `vpermi2b` per table (a 128-entry quarter each)
/// and blends by index bits 7 (the index byte's top bit) and 8 (`qh`, one
/// bit per index in order); the sign bytes as they are stored.
struct Iq3sVbmi;

impl Layout<BlockIQ3S> for Iq3sVbmi {
    #[inline(always)]
    unsafe fn decode(x: &BlockIQ3S) -> ([__m512i; 4], [u64; 4], [__m512i; 4]) {
        let idx = _mm512_loadu_si512(x.qs.as_ptr() as *const _);
        let bit7 = _mm512_movepi8_mask(idx);
        let bit8 = u64::from_le_bytes(x.qh);
        let t = &IQ3S_BYTES;
        let l = four!(|j| {
            let q0 = _mm512_permutex2var_epi8(table(t, j, 0), idx, table(t, j, 1));
            let q1 = _mm512_permutex2var_epi8(table(t, j, 2), idx, table(t, j, 3));
            let q2 = _mm512_permutex2var_epi8(table(t, j, 4), idx, table(t, j, 5));
            let q3 = _mm512_permutex2var_epi8(table(t, j, 6), idx, table(t, j, 7));
            let lo = _mm512_mask_blend_epi8(bit7, q0, q1);
            let hi = _mm512_mask_blend_epi8(bit7, q2, q3);
            _mm512_mask_blend_epi8(bit8, lo, hi)
        });
        let sb = _mm512_castsi256_si512(_mm256_loadu_si256(x.signs.as_ptr() as *const __m256i));
        (
            lanes_transposed(l),
            signs_transposed(sb),
            scales_transposed(x.scales16()),
        )
    }

    #[inline(always)]
    unsafe fn act(q: __m512i) -> __m512i {
        acts_transposed(q)
    }
}

/// The IQ2 types (IQ2_XXS, IQ2_XS, IQ2_S) with their grids looked up as
/// 16-bit codes instead of gathered (AVX-512 VBMI): every byte of those
/// grids is 8, 25 or 43, so an entry is eight 2-bit levels. `vpermi2w`
/// looks up 64 entries' codes for all 32 indices of a super-block at once
/// (four, eight or sixteen lookups, blended by index bits 6 up); each `zmm`
/// of 64 values then takes its eight codes into its eight qwords
/// (`vpermw`), `vpmultishiftqb` puts value `j`'s level in the low bits of
/// byte `j`, and `vpermb` maps the levels to their bytes. The values come
/// in order, as gathered: the activations, signs and scales are those of
/// [`InOrder`], and so are the integer sums.
struct Iq2Vbmi;

impl<B: Iq2Codes> Layout<B> for Iq2Vbmi {
    #[inline(always)]
    unsafe fn decode(x: &B) -> ([__m512i; 4], [u64; 4], [__m512i; 4]) {
        let m = expand_codes(B::codes(x.indices()));
        let (s, sc) = x.signs_scales();
        (m, s, spread(sc))
    }

    #[inline(always)]
    unsafe fn act(q: __m512i) -> __m512i {
        q
    }
}

/// The bytes of the IQ2 grids, level 0, 1 and 2 of a 2-bit code.
const IQ2_LEVELS: [u8; 3] = [8, 25, 43];

/// A grid of `N` eight-byte entries of [`IQ2_LEVELS`] as 16-bit codes:
/// value `j`'s level in bits `2j`, `2j + 1` (64-byte aligned: `N / 32`
/// `zmm`).
#[repr(C, align(64))]
struct GridCodes<const N: usize>([u16; N]);

const fn grid_codes<const N: usize>(grid: &[u64; N]) -> GridCodes<N> {
    let mut c = [0u16; N];
    let mut i = 0;
    while i < N {
        let mut j = 0;
        while j < 8 {
            let b = (grid[i] >> (8 * j)) as u8;
            let level = if b == IQ2_LEVELS[0] {
                0
            } else if b == IQ2_LEVELS[1] {
                1
            } else if b == IQ2_LEVELS[2] {
                2
            } else {
                panic!("an IQ2 grid byte other than 8, 25 or 43")
            };
            c[i] |= level << (2 * j);
            j += 1;
        }
        i += 1;
    }
    GridCodes(c)
}

static IQ2XXS_CODES: GridCodes<256> = grid_codes(&IQ2XXS_GRID_VALUES);
static IQ2XS_CODES: GridCodes<512> = grid_codes(&IQ2XS_GRID_VALUES);
static IQ2S_CODES: GridCodes<1024> = grid_codes(&IQ2S_GRID_VALUES);

/// The codes of `t`'s entries at the 32 indices `idx` (i16 lanes, each
/// below `N`): one `vpermi2w` per 64 entries, then blends by index bits
/// 6, 7, ... down to one vector.
///
/// # Safety
/// AVX-512 F/BW available; `N` is 64, 128, ... up to 1024.
#[inline(always)]
unsafe fn lookup_codes<const N: usize>(t: &GridCodes<N>, idx: __m512i) -> __m512i {
    let z = t.0.as_ptr() as *const __m512i;
    let mut r = [_mm512_setzero_si512(); 16];
    let mut n = N / 64;
    for (q, v) in r.iter_mut().enumerate().take(n) {
        *v = _mm512_permutex2var_epi16(
            _mm512_load_si512(z.add(2 * q)),
            idx,
            _mm512_load_si512(z.add(2 * q + 1)),
        );
    }
    let mut bit = 6;
    while n > 1 {
        let high = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(1 << bit));
        for q in 0..n / 2 {
            r[q] = _mm512_mask_blend_epi16(high, r[2 * q], r[2 * q + 1]);
        }
        n /= 2;
        bit += 1;
    }
    r[0]
}

/// The values of the 32 entries whose codes are `codes` (i16 lanes, in
/// order): `zmm` `p` holds entries `8p..8p + 8`, values `64p..64p + 64`.
///
/// # Safety
/// AVX-512 F/BW and VBMI available.
#[inline(always)]
unsafe fn expand_codes(codes: __m512i) -> [__m512i; 4] {
    // Byte j of every qword: the code's bits 2j.. (its value j's level in
    // the low two).
    let shifts = _mm512_set1_epi64(0x0E0C_0A08_0604_0200);
    let levels = _mm512_load_si512(IQ2_LEVEL_BYTES.0.as_ptr() as *const _);
    let spread = _mm512_load_si512(QWORD_OF_WORD.0.as_ptr() as *const _);
    four!(|p| {
        // Qword e: code 8p + e in each of its words.
        let idx = _mm512_add_epi16(spread, _mm512_set1_epi16(8 * p as i16));
        let q = _mm512_permutexvar_epi16(idx, codes);
        let f = _mm512_multishift_epi64_epi8(shifts, q);
        _mm512_permutexvar_epi8(f, levels)
    })
}

/// 32 i16 lanes `$e` for `$w` = 0..32, as 64 bytes (little-endian).
macro_rules! words64 {
    (|$w:ident| $e:expr) => {
        Bytes64({
            let mut o = [0u8; 64];
            let mut $w = 0usize;
            while $w < 32 {
                let v: u16 = $e;
                o[2 * $w] = v as u8;
                o[2 * $w + 1] = (v >> 8) as u8;
                $w += 1;
            }
            o
        })
    };
}

/// Bytes 0, 2, 4, ...: the low byte of every i16 lane.
const EVEN_BYTES: u64 = 0x5555_5555_5555_5555;

/// Byte `x` (of 64): the grid byte of level `x % 4` (level 3 is unused).
static IQ2_LEVEL_BYTES: Bytes64 = Bytes64({
    let mut o = [0u8; 64];
    let mut x = 0;
    while x < 64 {
        if x % 4 < 3 {
            o[x] = IQ2_LEVELS[x % 4];
        }
        x += 1;
    }
    o
});

/// i16 lane `w` (of 32): `w / 4`, the qword it lies in.
static QWORD_OF_WORD: Bytes64 = words64!(|w| (w / 4) as u16);

/// IQ2_XXS: for i16 lane `g`, the byte of its grid index, `8·(g / 4) + g % 4`.
static IQ2XXS_PICK: Bytes64 = words64!(|g| (8 * (g / 4) + g % 4) as u16);

/// IQ2_S: for i16 lane `g`, the byte of its index's low 8 bits, `g`.
static IQ2S_PICK_LO: Bytes64 = words64!(|g| g as u16);

/// IQ2_S: for i16 lane `g`, the `qh` byte of its index's bits 8 and 9, `g / 4`.
static IQ2S_PICK_QH: Bytes64 = words64!(|g| (g / 4) as u16);

/// IQ2_S: for i16 lane `g`, where those bits are in that byte, `2·(g % 4)`.
static IQ2S_QH_SHIFT: Bytes64 = words64!(|g| (2 * (g % 4)) as u16);

/// The lattice i-quants against `R` activation rows: each super-block
/// decoded once for all of them, its values in `L`'s order.
#[inline(always)]
unsafe fn iq_rows<B: IqZmm, L: Layout<B>, const R: usize>(
    w: &[B],
    a: [&[BlockQ8K]; R],
) -> [f32; R] {
    let mut sumf = [0f32; R];
    let zero = _mm512_setzero_si512();
    for (i, x) in w.iter().enumerate() {
        prefetch_ahead(x);
        let (m, s, sc) = L::decode(x);
        let offset = x.offset();
        let mut acc = [zero; R];
        for r in 0..R {
            let y = &a[r][i];
            for p in 0..4 {
                let q = _mm512_loadu_si512(y.qs.as_ptr().add(64 * p) as *const _);
                let q = L::act(q);
                let q = _mm512_mask_sub_epi8(q, s[p], zero, q);
                acc[r] = dpwssd(acc[r], _mm512_maddubs_epi16(m[p], q), sc[p]);
            }
            if let Some(o) = offset {
                let bsums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
                let t = _mm512_zextsi256_si512(_mm256_madd_epi16(bsums, o));
                acc[r] = _mm512_add_epi32(acc[r], t);
            }
        }
        let sumi = sums(acc);
        let d = f16(x.d());
        for r in 0..R {
            // The scalar kernel's float step.
            sumf[r] += B::FACTOR * a[r][i].d * d * sumi[r] as f32;
        }
    }
    sumf
}

/// A one-row and a four-row entry point per type, by [`iq_rows`] with the
/// layout `$L`, compiled for `$features`.
macro_rules! iq_entries {
    ($L:ty, $features:literal, $how:literal; $($one:ident, $four:ident, $B:ty;)*) => {$(
        #[doc = concat!("Weights × Q8_K activations, ", $how, ", bit-identical to the scalar kernel.")]
        ///
        /// # Safety
        /// AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available, and VBMI for
        /// a `_vbmi` kernel. Reads `min(w.len(), a.len())` blocks of each
        /// slice.
        #[target_feature(enable = $features)]
        pub unsafe fn $one(w: &[$B], a: &[BlockQ8K]) -> f32 {
            let n = w.len().min(a.len());
            iq_rows::<$B, $L, 1>(&w[..n], [a])[0]
        }

        /// The same against four activation rows, each result equal to
        /// the one-row kernel's.
        ///
        /// # Safety
        /// As for the one-row kernel; every row of `a` has at least
        /// `w.len()` blocks.
        #[target_feature(enable = $features)]
        pub unsafe fn $four(w: &[$B], a: [&[BlockQ8K]; 4]) -> [f32; 4] {
            iq_rows::<$B, $L, 4>(w, a)
        }
    )*};
}

iq_entries! {
    InOrder, "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c", "the grid entries gathered";
    iq2_xxs_q8k, iq2_xxs_q8k_x4, BlockIQ2XXS;
    iq2_xs_q8k, iq2_xs_q8k_x4, BlockIQ2XS;
    iq2_s_q8k, iq2_s_q8k_x4, BlockIQ2S;
    iq3_xxs_q8k, iq3_xxs_q8k_x4, BlockIQ3XXS;
    iq3_s_q8k, iq3_s_q8k_x4, BlockIQ3S;
    iq1_s_q8k, iq1_s_q8k_x4, BlockIQ1S;
}

iq_entries! {
    Iq2Vbmi, "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c",
    "the grid looked up as 16-bit codes (`Iq2Vbmi`)";
    iq2_xxs_q8k_vbmi, iq2_xxs_q8k_x4_vbmi, BlockIQ2XXS;
    iq2_xs_q8k_vbmi, iq2_xs_q8k_x4_vbmi, BlockIQ2XS;
    iq2_s_q8k_vbmi, iq2_s_q8k_x4_vbmi, BlockIQ2S;
}

iq_entries! {
    Iq3XxsVbmi, "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c",
    "the grid looked up by `vpermi2b` (`Iq3XxsVbmi`)";
    iq3_xxs_q8k_vbmi, iq3_xxs_q8k_x4_vbmi, BlockIQ3XXS;
}

iq_entries! {
    Iq3sVbmi, "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c",
    "the grid looked up by `vpermi2b` (`Iq3sVbmi`)";
    iq3_s_q8k_vbmi, iq3_s_q8k_x4_vbmi, BlockIQ3S;
}
