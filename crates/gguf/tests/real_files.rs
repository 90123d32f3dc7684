//! The reader on real files: SmolLM2 (fetched by models/fetch-smollm2.sh) and the
//! vocab-only GGUFs of llama.cpp / mistral-common (fetched by models/fetch-vocab.sh).

use mistral_gguf::{keys, GgmlType, GgufFile, GgufWriter, LlamaHparams, Value};
use mistral_test_support::smollm2_path as smollm2;

#[test]
fn smollm2_header() {
    let path = smollm2();
    let f = GgufFile::open(&path).unwrap();
    let md = f.metadata();
    assert_eq!(md.get_str(keys::GENERAL_ARCHITECTURE).unwrap(), "llama");
    assert_eq!(f.tensors().len(), 272);
    let hp = LlamaHparams::from_metadata(md).unwrap();
    assert_eq!(hp.block_count, 30);
    assert_eq!(hp.embedding_length, 576);
    assert_eq!(hp.head_count, 9);
    assert_eq!(hp.head_count_kv, 3);
    assert_eq!(hp.head_dim, 64);
    assert_eq!(hp.expert_count, 0);
    assert_eq!(
        md.get_string_array(keys::TOKENIZER_TOKENS).unwrap().len(),
        49152
    );
    assert!(
        f.tensor_info("output.weight").is_none(),
        "SmolLM2 ties its embeddings"
    );
    let (emb, data) = f.tensor("token_embd.weight").unwrap();
    assert_eq!(emb.dims, vec![576, 49152]);
    assert_eq!(data.len() as u64, emb.n_bytes());
    // Tensor data ends exactly where the file does (the writer pads between tensors only).
    let end = f
        .tensors()
        .iter()
        .map(|t| f.header().data_offset + t.offset + t.n_bytes())
        .max()
        .unwrap();
    assert_eq!(end, std::fs::metadata(&path).unwrap().len());
    // Wrong type in a typed accessor names the key and the type found.
    let err = md.get_str("llama.block_count").unwrap_err().to_string();
    assert!(
        err.contains("llama.block_count") && err.contains("u32"),
        "{err}"
    );
}

/// Metadata parsing reads only the header: the parser's last byte is the end of
/// the tensor infos, under 5% of the file; tensor data is never touched.
#[test]
fn smollm2_header_is_small_part_of_file() {
    let path = smollm2();
    let f = GgufFile::open(&path).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    let frac = f.header().header_len as f64 / len as f64;
    assert!(frac < 0.05, "header is {:.2}% of the file", frac * 100.0);
}

/// A reader that counts the bytes handed out.
struct CountingReader<R> {
    inner: R,
    read: u64,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Reads the header through a byte-counting reader, growing the prefix (64 KiB,
/// doubling) until `Gguf::parse_prefix` stops asking for more: the header of SmolLM2
/// needs under 5% of the file's bytes, and gives exactly what the memory-mapped open does.
#[test]
fn smollm2_metadata_reads_under_5_percent() {
    use std::io::Read;
    let path = smollm2();
    let len = std::fs::metadata(&path).unwrap().len();
    let mut r = CountingReader {
        inner: std::fs::File::open(&path).unwrap(),
        read: 0,
    };
    let mut prefix = Vec::new();
    let mut want = 64 << 10;
    let header = loop {
        (&mut r)
            .take(want - prefix.len() as u64)
            .read_to_end(&mut prefix)
            .unwrap();
        match mistral_gguf::Gguf::parse_prefix(&prefix, len, "counted") {
            Ok(h) => break h,
            Err(e)
                if matches!(e.kind, mistral_gguf::ErrorKind::Truncated { .. })
                    && (prefix.len() as u64) < len =>
            {
                want *= 2
            }
            Err(e) => panic!("{e}"),
        }
    };
    let frac = r.read as f64 / len as f64;
    println!(
        "read {} of {len} bytes ({:.2}%) to parse a {}-byte header",
        r.read,
        frac * 100.0,
        header.header_len
    );
    assert!(frac < 0.05, "read {:.2}% of the file", frac * 100.0);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(&header.metadata, f.metadata());
    assert_eq!(header.tensors.as_slice(), f.tensors());
    assert_eq!(header.data_offset, f.header().data_offset);
}

#[test]
fn vocab_files_parse() {
    for name in [
        "ggml-vocab-mistral-v1.gguf",
        "ggml-vocab-mistral-v3.gguf",
        "ggml-vocab-llama-spm.gguf",
    ] {
        let f = GgufFile::open(mistral_test_support::vocab_path(name)).unwrap();
        let md = f.metadata();
        let tokens = md.get_string_array(keys::TOKENIZER_TOKENS).unwrap();
        let scores = md.get_f32_array(keys::TOKENIZER_SCORES).unwrap();
        assert_eq!(tokens.len(), scores.len(), "{name}");
        assert!(tokens.len() >= 32000, "{name}");
        assert_eq!(md.get_str(keys::TOKENIZER_MODEL).unwrap(), "llama");
    }
}

/// Re-writing a real file with our writer gives a file that reads back identically,
/// with byte-identical tensor data.
#[test]
fn smollm2_rewrite_round_trip() {
    let f = GgufFile::open(smollm2()).unwrap();
    let mut w = GgufWriter::new(f.metadata().clone());
    for t in f.tensors() {
        w.add_tensor(mistral_gguf::TensorSpec::new(&t.name, t.ggml_type, &t.dims));
    }
    let data: Vec<&[u8]> = f.tensors().iter().map(|t| f.tensor_data(t)).collect();
    let bytes = w.to_bytes(&data).unwrap();
    let g = GgufFile::from_bytes(bytes, "rewritten").unwrap();
    assert_eq!(g.metadata(), f.metadata());
    assert_eq!(g.tensors(), f.tensors());
    for t in f.tensors() {
        assert_eq!(g.tensor_data(t), f.tensor_data(t), "{}", t.name);
    }
    let q41 = f
        .tensors()
        .iter()
        .filter(|t| t.ggml_type == GgmlType::Q4_1)
        .count();
    assert!(q41 > 0);
    assert!(matches!(
        f.metadata().get(keys::GENERAL_FILE_TYPE),
        Some(Value::U32(3))
    ));
}
