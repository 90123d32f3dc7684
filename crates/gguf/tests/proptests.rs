//! Property tests: write/read round trips over random metadata (every value type,
//! nested arrays, string arrays) and random tensors; and random corruptions of valid
//! files (bit flips, truncations, overwrites, insertions, removals), which must give
//! `Err` or a valid parse, never a panic.

use mistral_gguf::{
    Array, ErrorKind, GgmlType, Gguf, GgufFile, GgufWriter, Metadata, TensorSpec, Value,
};
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------------------
// Strategies.

/// Floats without NaN, so that `PartialEq` is a fair comparison.
fn f32s() -> impl Strategy<Value = f32> {
    use proptest::num::f32::*;
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO | INFINITE
}

fn f64s() -> impl Strategy<Value = f64> {
    use proptest::num::f64::*;
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO | INFINITE
}

fn strings() -> impl Strategy<Value = String> {
    // Any Unicode, including empty strings and multi-byte characters.
    ".{0,12}"
}

/// An array nested at most `depth` more levels (the reader accepts 4 in all).
fn arrays(depth: u32) -> BoxedStrategy<Array> {
    let n = 0..6usize;
    let leaf = prop_oneof![
        prop::collection::vec(any::<u8>(), n.clone()).prop_map(Array::U8),
        prop::collection::vec(any::<i8>(), n.clone()).prop_map(Array::I8),
        prop::collection::vec(any::<u16>(), n.clone()).prop_map(Array::U16),
        prop::collection::vec(any::<i16>(), n.clone()).prop_map(Array::I16),
        prop::collection::vec(any::<u32>(), n.clone()).prop_map(Array::U32),
        prop::collection::vec(any::<i32>(), n.clone()).prop_map(Array::I32),
        prop::collection::vec(f32s(), n.clone()).prop_map(Array::F32),
        prop::collection::vec(any::<bool>(), n.clone()).prop_map(Array::Bool),
        prop::collection::vec(strings(), n.clone()).prop_map(Array::String),
        prop::collection::vec(any::<u64>(), n.clone()).prop_map(Array::U64),
        prop::collection::vec(any::<i64>(), n.clone()).prop_map(Array::I64),
        prop::collection::vec(f64s(), n.clone()).prop_map(Array::F64),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    prop_oneof![
        4 => leaf,
        1 => prop::collection::vec(arrays(depth - 1), 0..4).prop_map(Array::Array),
    ]
    .boxed()
}

fn values() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        f32s().prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        strings().prop_map(Value::String),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        f64s().prop_map(Value::F64),
        // A top-level array is level 1: three more levels reach the limit of 4.
        arrays(3).prop_map(Value::Array),
    ]
}

fn metadata() -> impl Strategy<Value = Metadata> {
    let alignment = prop::option::of((0u32..9).prop_map(|k| 1u32 << k));
    (
        prop::collection::btree_map("[a-z_.]{0,16}", values(), 0..10),
        alignment,
    )
        .prop_map(|(kvs, alignment)| {
            let mut md = Metadata::new();
            for (k, v) in kvs {
                if k != mistral_gguf::keys::GENERAL_ALIGNMENT {
                    md.set(k, v);
                }
            }
            if let Some(a) = alignment {
                md.set(mistral_gguf::keys::GENERAL_ALIGNMENT, Value::U32(a));
            }
            md
        })
}

/// A tensor with a shape valid for its type (rows a whole number of blocks), kept small.
fn tensor_specs() -> impl Strategy<Value = (GgmlType, Vec<u64>)> {
    let types: Vec<GgmlType> = GgmlType::all().collect();
    (
        prop::sample::select(types),
        1u64..3,
        prop::collection::vec(1u64..4, 0..4),
    )
        .prop_map(|(t, blocks, rest)| {
            let mut dims = vec![t.block_size() * blocks];
            dims.extend(rest);
            (t, dims)
        })
}

/// Deterministic filler for tensor data.
fn fill(seed: u64, n: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Model {
    writer: GgufWriter,
    data: Vec<Vec<u8>>,
}

fn models(max_tensors: usize) -> impl Strategy<Value = Model> {
    (
        metadata(),
        prop::collection::vec((tensor_specs(), any::<u64>()), 0..max_tensors),
    )
        .prop_map(|(md, ts)| {
            let mut writer = GgufWriter::new(md);
            let mut data = Vec::new();
            for (i, ((t, dims), seed)) in ts.into_iter().enumerate() {
                let spec = TensorSpec::new(format!("blk.{i}.weight"), t, &dims);
                data.push(fill(seed, spec.n_bytes().expect("valid shape")));
                writer.add_tensor(spec);
            }
            Model { writer, data }
        })
}

impl Model {
    fn bytes(&self) -> Vec<u8> {
        let parts: Vec<&[u8]> = self.data.iter().map(Vec::as_slice).collect();
        self.writer.to_bytes(&parts).expect("write")
    }
}

// ---------------------------------------------------------------------------
// Round trips.

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// read(write(x)) == x for metadata, tensor infos and data; v2 files read the same.
    #[test]
    fn write_read_round_trip(model in models(6)) {
        let bytes = model.bytes();
        let layout = model.writer.layout().unwrap();
        let f = GgufFile::from_bytes(bytes.clone(), "round-trip").map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(f.metadata(), &model.writer.metadata);
        prop_assert_eq!(f.tensors(), layout.as_slice());
        for (i, t) in f.tensors().iter().enumerate() {
            prop_assert_eq!(f.tensor_data(t), model.data[i].as_slice());
            let (info, data) = f.tensor(&t.name).unwrap();
            prop_assert_eq!(info, t);
            prop_assert_eq!(data.len() as u64, t.ggml_type.bytes_for(t.n_elements()).unwrap());
        }
        prop_assert_eq!(f.header().data_offset % f.header().alignment, 0);

        // Version 2 has the same layout as version 3.
        let mut v2 = bytes;
        v2[4] = 2;
        let g = Gguf::parse(&v2, "v2").map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(g.version, 2);
        prop_assert_eq!(&g.metadata, f.metadata());
        prop_assert_eq!(g.tensors.as_slice(), f.tensors());
    }

    /// Parsing from a prefix of the file with the full length gives the same header
    /// once the prefix holds it, and `Truncated` before.
    #[test]
    fn prefix_parse_matches_full_parse(model in models(4), cut in any::<Index>()) {
        let bytes = model.bytes();
        let full = Gguf::parse(&bytes, "full").unwrap();
        let n = cut.index(bytes.len() + 1);
        match Gguf::parse_prefix(&bytes[..n], bytes.len() as u64, "prefix") {
            Ok(g) => {
                prop_assert!(n as u64 >= full.header_len);
                prop_assert_eq!(g.metadata, full.metadata);
                prop_assert_eq!(g.tensors, full.tensors);
                prop_assert_eq!(g.data_offset, full.data_offset);
            }
            Err(e) => {
                prop_assert!((n as u64) < full.header_len, "{}", e);
                prop_assert!(matches!(e.kind, ErrorKind::Truncated { .. }), "{}", e);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Corruptions.

#[derive(Debug, Clone)]
enum Corruption {
    FlipBit(Index, u8),
    Truncate(Index),
    Overwrite(Index, Vec<u8>),
    /// Overwrite 8 bytes with an interesting 64-bit value (a count, length or offset).
    OverwriteU64(Index, u64),
    OverwriteU32(Index, u32),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
}

fn corruptions() -> impl Strategy<Value = Corruption> {
    let interesting = prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(1 << 60),
        Just(1 << 32),
        Just(i64::MAX as u64 + 1),
        any::<u64>(),
        0u64..1024,
    ];
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Corruption::FlipBit(i, b)),
        any::<Index>().prop_map(Corruption::Truncate),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Corruption::Overwrite(i, v)),
        (any::<Index>(), interesting).prop_map(|(i, v)| Corruption::OverwriteU64(i, v)),
        (any::<Index>(), prop_oneof![0u32..40, any::<u32>()])
            .prop_map(|(i, v)| Corruption::OverwriteU32(i, v)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Corruption::Insert(i, v)),
        (any::<Index>(), 1usize..32).prop_map(|(i, n)| Corruption::Remove(i, n)),
    ]
}

/// Applies a corruption at a position inside the first `region` bytes.
fn corrupt(mut b: Vec<u8>, c: &Corruption, region: usize) -> Vec<u8> {
    let region = region.clamp(1, b.len().max(1));
    let at = |i: &Index| i.index(region);
    match c {
        Corruption::FlipBit(i, bit) => {
            if !b.is_empty() {
                let p = at(i);
                b[p] ^= 1 << bit;
            }
        }
        Corruption::Truncate(i) => b.truncate(at(i)),
        Corruption::Overwrite(i, v) => overwrite(&mut b, at(i), v),
        Corruption::OverwriteU64(i, v) => overwrite(&mut b, at(i), &v.to_le_bytes()),
        Corruption::OverwriteU32(i, v) => overwrite(&mut b, at(i), &v.to_le_bytes()),
        Corruption::Insert(i, v) => {
            let p = at(i).min(b.len());
            b.splice(p..p, v.iter().copied());
        }
        Corruption::Remove(i, n) => {
            let p = at(i).min(b.len());
            let end = (p + n).min(b.len());
            b.drain(p..end);
        }
    }
    b
}

fn overwrite(b: &mut [u8], p: usize, v: &[u8]) {
    for (k, x) in v.iter().enumerate() {
        if let Some(slot) = b.get_mut(p + k) {
            *slot = *x;
        }
    }
}

/// What an accepted file must satisfy: every tensor's data inside the file, of the size
/// its type and shape give, aligned; names unique.
fn check_valid(f: &GgufFile) -> Result<(), TestCaseError> {
    let h = f.header();
    let len = f.bytes().len() as u64;
    let mut names = std::collections::HashSet::new();
    for t in f.tensors() {
        prop_assert!(names.insert(&t.name));
        prop_assert!((1..=4).contains(&t.dims.len()));
        prop_assert!(t.dims.iter().all(|&d| d > 0));
        prop_assert_eq!(t.offset % h.alignment, 0);
        prop_assert!(h.data_offset + t.offset + t.n_bytes() <= len);
        prop_assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random corruptions, three out of four aimed at the header: `Err` with a one-line
    /// message naming the file, or a file that satisfies every invariant. Never a panic.
    #[test]
    fn corruptions_never_panic(
        model in models(4),
        cs in prop::collection::vec(corruptions(), 1..4),
        in_header in prop::bool::weighted(0.75),
    ) {
        let bytes = model.bytes();
        let header_len = Gguf::parse(&bytes, "valid").unwrap().header_len as usize;
        let region = if in_header { header_len } else { bytes.len() };
        let bad = cs.iter().fold(bytes, |b, c| corrupt(b, c, region));
        match GgufFile::from_bytes(bad, "corrupt.gguf") {
            Ok(f) => check_valid(&f)?,
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.starts_with("corrupt.gguf: "), "{}", msg);
                prop_assert!(!msg.contains('\n'), "{}", msg);
            }
        }
    }
}

/// Every truncation of a valid file (each byte length) is `Truncated` (or, for a cut
/// that leaves the header's counts impossible, `CountTooLarge`), never accepted.
#[test]
fn every_truncation_is_an_error() {
    let mut md = Metadata::new();
    md.set("general.architecture", Value::String("llama".into()));
    md.set(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(vec!["<s>".into(), "é".into()])),
    );
    md.set(
        "x.nested",
        Value::Array(Array::Array(vec![
            Array::F64(vec![1.5]),
            Array::Bool(vec![true]),
        ])),
    );
    let mut w = GgufWriter::new(md);
    w.add_tensor(TensorSpec::new("a", GgmlType::Q8_0, &[64, 2]));
    w.add_tensor(TensorSpec::new("b", GgmlType::F16, &[3]));
    let bytes = w.to_bytes(&[&fill(1, 136), &fill(2, 6)]).unwrap();
    assert!(Gguf::parse(&bytes, "whole").is_ok());
    for n in 0..bytes.len() {
        let e = Gguf::parse(&bytes[..n], "cut").expect_err("a truncated file was accepted");
        assert!(
            matches!(
                e.kind,
                ErrorKind::Truncated { .. } | ErrorKind::CountTooLarge { .. }
            ),
            "cut at {n}: {e}"
        );
    }
}

/// Arrays nested exactly `MAX_ARRAY_DEPTH` deep are read back; one level more is not.
#[test]
fn nesting_limit_is_exact() {
    let nested = |levels: usize| {
        let mut a = Array::U8(vec![1]);
        for _ in 1..levels {
            a = Array::Array(vec![a]);
        }
        a
    };
    for levels in 1..=mistral_gguf::MAX_ARRAY_DEPTH + 1 {
        let mut md = Metadata::new();
        md.set("deep", Value::Array(nested(levels)));
        let bytes = GgufWriter::new(md.clone()).to_bytes(&[]).unwrap();
        match Gguf::parse(&bytes, "nested") {
            Ok(g) => {
                assert!(levels <= mistral_gguf::MAX_ARRAY_DEPTH);
                assert_eq!(g.metadata, md);
            }
            Err(e) => {
                assert_eq!(levels, mistral_gguf::MAX_ARRAY_DEPTH + 1, "{e}");
                assert_eq!(e.kind.name(), "NestingTooDeep");
            }
        }
    }
}
