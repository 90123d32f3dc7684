//! GGML tensor types: ids, block sizes and bytes per block, as llama.cpp's
//! `ggml.c` type traits define them.

use std::fmt;

/// A GGML tensor element type as stored in a GGUF tensor info.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[allow(non_camel_case_types)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
}

/// `(type, name, elements per block, bytes per block)`: the one table of type traits.
const TRAITS: &[(GgmlType, &str, u64, u64)] = &[
    (GgmlType::F32, "F32", 1, 4),
    (GgmlType::F16, "F16", 1, 2),
    (GgmlType::Q4_0, "Q4_0", 32, 18),
    (GgmlType::Q4_1, "Q4_1", 32, 20),
    (GgmlType::Q5_0, "Q5_0", 32, 22),
    (GgmlType::Q5_1, "Q5_1", 32, 24),
    (GgmlType::Q8_0, "Q8_0", 32, 34),
    (GgmlType::Q8_1, "Q8_1", 32, 36),
    (GgmlType::Q2_K, "Q2_K", 256, 84),
    (GgmlType::Q3_K, "Q3_K", 256, 110),
    (GgmlType::Q4_K, "Q4_K", 256, 144),
    (GgmlType::Q5_K, "Q5_K", 256, 176),
    (GgmlType::Q6_K, "Q6_K", 256, 210),
    (GgmlType::Q8_K, "Q8_K", 256, 292),
    (GgmlType::IQ2_XXS, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, "IQ4_XS", 256, 136),
    (GgmlType::I8, "I8", 1, 1),
    (GgmlType::I16, "I16", 1, 2),
    (GgmlType::I32, "I32", 1, 4),
    (GgmlType::I64, "I64", 1, 8),
    (GgmlType::F64, "F64", 1, 8),
    (GgmlType::IQ1_M, "IQ1_M", 256, 56),
    (GgmlType::BF16, "BF16", 1, 2),
    (GgmlType::TQ1_0, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, "TQ2_0", 256, 66),
    (GgmlType::MXFP4, "MXFP4", 32, 17),
];

impl GgmlType {
    /// Every known type, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TRAITS.iter().map(|t| t.0)
    }

    fn traits(self) -> &'static (GgmlType, &'static str, u64, u64) {
        // The table holds every variant (checked by a unit test), so the search cannot fail;
        // fall back to the first row rather than panicking.
        TRAITS.iter().find(|t| t.0 == self).unwrap_or(&TRAITS[0])
    }

    /// The type with this on-disk id, if llama.cpp defines it (removed ids 4, 5, 31-33, 36-38 are not).
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TRAITS.iter().find(|t| t.0 as u32 == id).map(|t| t.0)
    }

    /// The on-disk id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// llama.cpp's name for the type (`Q4_K`, `F16`, ...).
    pub fn name(self) -> &'static str {
        self.traits().1
    }

    /// Parses a name as printed by [`GgmlType::name`] (case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TRAITS
            .iter()
            .find(|t| t.1.eq_ignore_ascii_case(name))
            .map(|t| t.0)
    }

    /// Elements per block (1 for plain types, 32 or 256 for quantized ones).
    pub fn block_size(self) -> u64 {
        self.traits().2
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.traits().3
    }

    /// Whether the type is a block-quantized one.
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes taken by `n_elements` elements, or `None` if `n_elements` is not a whole
    /// number of blocks or the size overflows.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        if !n_elements.is_multiple_of(self.block_size()) {
            return None;
        }
        (n_elements / self.block_size()).checked_mul(self.type_size())
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for (i, t) in TRAITS.iter().enumerate() {
            assert_eq!(GgmlType::from_id(t.0 as u32), Some(t.0));
            assert_eq!(GgmlType::from_name(t.1), Some(t.0));
            assert!(TRAITS[..i].iter().all(|u| u.0 != t.0), "{} twice", t.1);
        }
        for removed in [4, 5, 31, 32, 33, 36, 37, 38, 40, u32::MAX] {
            assert_eq!(GgmlType::from_id(removed), None);
        }
    }

    #[test]
    fn sizes_match_block_structs() {
        // Derived from the C structs: scales, mins, quants, per block.
        assert_eq!(GgmlType::Q4_K.type_size(), 2 + 2 + 12 + 256 / 2);
        assert_eq!(GgmlType::Q2_K.type_size(), 256 / 16 + 256 / 4 + 2 + 2);
        assert_eq!(GgmlType::Q3_K.type_size(), 256 / 8 + 256 / 4 + 12 + 2);
        assert_eq!(GgmlType::Q5_K.type_size(), 2 + 2 + 12 + 256 / 8 + 256 / 2);
        assert_eq!(GgmlType::Q6_K.type_size(), 256 / 2 + 256 / 4 + 256 / 16 + 2);
        assert_eq!(GgmlType::Q8_K.type_size(), 4 + 256 + 256 / 16 * 2);
        assert_eq!(GgmlType::Q8_0.type_size(), 2 + 32);
        assert_eq!(GgmlType::IQ4_XS.type_size(), 2 + 2 + 256 / 64 + 256 / 2);
        assert_eq!(GgmlType::Q4_K.bytes_for(512), Some(288));
        assert_eq!(GgmlType::Q4_K.bytes_for(100), None);
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
    }
}
