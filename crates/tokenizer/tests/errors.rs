//! Broken or unsupported tokenizer metadata gives a clear error naming the
//! key or token; a tiny hand-made SentencePiece vocabulary checks the merge
//! order, the unknown-token fallback and the flags.

use mistral_gguf::{keys, Array, Metadata, Value};
use mistral_tokenizer::{ModelKind, Tokenizer, TokenizerError};

fn strings(v: &[&str]) -> Value {
    Value::Array(Array::String(v.iter().map(|s| s.to_string()).collect()))
}

/// A SentencePiece vocabulary: <unk> <s> </s> ▁ a b ▁a ab.
fn spm_md(scores: &[f32]) -> Metadata {
    let mut md = Metadata::new();
    md.insert(keys::TOKENIZER_MODEL, Value::String("llama".into()))
        .unwrap();
    md.insert(
        keys::TOKENIZER_TOKENS,
        strings(&["<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "ab"]),
    )
    .unwrap();
    md.insert(
        keys::TOKENIZER_SCORES,
        Value::Array(Array::F32(scores.to_vec())),
    )
    .unwrap();
    md.insert(
        keys::TOKENIZER_TOKEN_TYPE,
        Value::Array(Array::I32(vec![2, 3, 3, 1, 1, 1, 1, 1])),
    )
    .unwrap();
    md
}

fn gpt2_md(pre: Option<&str>) -> Metadata {
    let mut md = Metadata::new();
    md.insert(keys::TOKENIZER_MODEL, Value::String("gpt2".into()))
        .unwrap();
    if let Some(p) = pre {
        md.insert(keys::TOKENIZER_PRE, Value::String(p.into()))
            .unwrap();
    }
    md.insert(
        keys::TOKENIZER_TOKENS,
        strings(&["a", "b", "ab", "<|end|>"]),
    )
    .unwrap();
    md.insert(
        keys::TOKENIZER_TOKEN_TYPE,
        Value::Array(Array::I32(vec![1, 1, 1, 3])),
    )
    .unwrap();
    md.insert(keys::TOKENIZER_MERGES, strings(&["a b"]))
        .unwrap();
    md.insert(keys::TOKENIZER_BOS_ID, Value::U32(3)).unwrap();
    md
}

fn err(md: &Metadata) -> String {
    Tokenizer::from_metadata(md).unwrap_err().to_string()
}

#[test]
fn merge_order_follows_scores() {
    // "ab" -> ▁ a b. With "ab" scoring higher than "▁a", SentencePiece merges a+b first.
    let tok =
        Tokenizer::from_metadata(&spm_md(&[0.0, 0.0, 0.0, -5.0, -5.0, -5.0, -1.0, -0.5])).unwrap();
    assert_eq!(tok.encode("ab", false, false).unwrap(), vec![3, 7]);
    // The other way round: ▁a first, then b stays alone.
    let tok =
        Tokenizer::from_metadata(&spm_md(&[0.0, 0.0, 0.0, -5.0, -5.0, -5.0, -0.5, -1.0])).unwrap();
    assert_eq!(tok.encode("ab", false, false).unwrap(), vec![6, 5]);
    // Defaults for a llama vocabulary: BOS 1, EOS 2, add BOS, dummy prefix.
    assert_eq!(tok.model_kind(), ModelKind::SentencePiece);
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.unk_id()),
        (Some(1), Some(2), Some(0))
    );
    assert_eq!(tok.encode("ab", true, false).unwrap(), vec![1, 6, 5]);
    assert!(tok.is_eog(2) && !tok.is_eog(1));
    // No byte tokens: an unknown character is one <unk>, and decodes to nothing.
    assert_eq!(tok.encode("aé", false, false).unwrap(), vec![6, 0]);
    assert_eq!(tok.decode(&[6, 0, 5]).unwrap(), "ab");
    assert!(matches!(
        tok.decode(&[8]),
        Err(TokenizerError::IdOutOfRange { id: 8, n_vocab: 8 })
    ));
}

#[test]
fn flags_from_the_file() {
    let mut md = spm_md(&[0.0; 8]);
    md.insert(keys::TOKENIZER_ADD_BOS, Value::Bool(false))
        .unwrap();
    md.insert(keys::TOKENIZER_ADD_EOS, Value::Bool(true))
        .unwrap();
    md.insert(keys::TOKENIZER_ADD_SPACE_PREFIX, Value::Bool(false))
        .unwrap();
    let tok = Tokenizer::from_metadata(&md).unwrap();
    assert_eq!(tok.encode("ab", true, false).unwrap(), vec![7, 2]);
    assert_eq!(tok.decode(&[3, 7]).unwrap(), " ab");
}

#[test]
fn unsupported_models_and_pre_tokenizers() {
    let mut md = spm_md(&[0.0; 8]);
    md.set(keys::TOKENIZER_MODEL, Value::String("bert".into()));
    let e = err(&md);
    assert!(
        e.contains("\"bert\"") && e.contains("tokenizer.ggml.model"),
        "{e}"
    );
    let e = err(&gpt2_md(Some("qwen9")));
    assert!(
        e.contains("\"qwen9\"") && e.contains("tokenizer.ggml.pre") && e.contains("smollm"),
        "{e}"
    );
    for pre in [
        None,
        Some("default"),
        Some("gpt2"),
        Some("llama-bpe"),
        Some("smollm"),
        Some("tekken"),
    ] {
        let tok = Tokenizer::from_metadata(&gpt2_md(pre)).unwrap();
        assert_eq!(tok.encode("ab", false, false).unwrap(), vec![2], "{pre:?}");
        // llama-bpe and tekken add BOS unless the file says otherwise.
        let bos = matches!(pre, Some("llama-bpe" | "tekken"));
        assert_eq!(
            tok.encode("ab", true, false).unwrap().len(),
            1 + bos as usize,
            "{pre:?}"
        );
    }
    // A control token ending a turn.
    assert!(Tokenizer::from_metadata(&gpt2_md(None)).unwrap().is_eog(3));
}

#[test]
fn broken_metadata() {
    let mut md = spm_md(&[0.0; 8]);
    md.remove(keys::TOKENIZER_MODEL);
    assert!(err(&md).contains("tokenizer.ggml.model"));

    let md = spm_md(&[0.0; 5]);
    let e = err(&md);
    assert!(
        e.contains("tokenizer.ggml.scores") && e.contains('5') && e.contains('8'),
        "{e}"
    );

    let mut md = spm_md(&[0.0; 8]);
    md.set(
        keys::TOKENIZER_TOKENS,
        strings(&["<unk>", "<s>", "</s>", "a", "a", "b", "c", "d"]),
    );
    assert!(err(&md).contains("\"a\" appears twice"), "{}", err(&md));

    let mut md = spm_md(&[0.0; 8]);
    md.set(keys::TOKENIZER_TOKENS, strings(&[]));
    assert!(err(&md).contains("empty"));

    let mut md = spm_md(&[0.0; 8]);
    md.insert(keys::TOKENIZER_BOS_ID, Value::U32(99)).unwrap();
    let e = err(&md);
    assert!(
        e.contains("tokenizer.ggml.bos_token_id") && e.contains("99"),
        "{e}"
    );

    let mut md = spm_md(&[0.0; 8]);
    md.set(keys::TOKENIZER_TOKEN_TYPE, strings(&["x"; 8]));
    assert!(
        err(&md).contains("tokenizer.ggml.token_type"),
        "{}",
        err(&md)
    );

    let mut md = gpt2_md(None);
    md.remove(keys::TOKENIZER_MERGES);
    assert!(err(&md).contains("tokenizer.ggml.merges"));

    let mut md = gpt2_md(None);
    md.set(keys::TOKENIZER_MERGES, strings(&["ab"]));
    assert!(err(&md).contains("\"ab\""), "{}", err(&md));

    // Asked to add a BOS it does not have.
    let mut md = gpt2_md(Some("llama-bpe"));
    md.remove(keys::TOKENIZER_BOS_ID);
    assert!(err(&md).contains("BOS"));
}
