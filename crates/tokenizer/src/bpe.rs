//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`) on the `tokenizers` crate:
//! its `Split` pre-tokenizers (fancy-regex) for `tokenizer.ggml.pre`, its
//! `ByteLevel` byte-to-unicode mapping and its rank-ordered `BPE` model.

use std::collections::HashSet;

use tokenizers::models::bpe::{Merges, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;

use crate::pretok::PreTokenizer;
use crate::vocab::Vocab;
use crate::TokenizerError;

#[derive(Clone)]
pub struct ByteBpe {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for ByteBpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ByteBpe")
    }
}

fn bpe_err(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Bpe(e.to_string())
}

impl ByteBpe {
    pub fn new(
        vocab: &Vocab,
        merges: &[String],
        pre: PreTokenizer,
    ) -> Result<ByteBpe, TokenizerError> {
        let model_vocab: tokenizers::models::bpe::Vocab = vocab
            .texts
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        // llama.cpp splits each merge at the first space after its first byte and
        // keeps the first rank of a repeated pair; merges naming tokens that are
        // not in the vocabulary can never fire and are dropped.
        let mut seen = HashSet::new();
        let mut model_merges: Merges = Vec::with_capacity(merges.len());
        for (index, m) in merges.iter().enumerate() {
            let pos = m
                .as_bytes()
                .iter()
                .skip(1)
                .position(|&b| b == b' ')
                .map(|p| p + 1)
                .ok_or_else(|| TokenizerError::BadMerge {
                    index,
                    merge: m.clone(),
                })?;
            let (a, b) = (&m[..pos], &m[pos + 1..]);
            let joined = format!("{a}{b}");
            if vocab.id(a).is_none() || vocab.id(b).is_none() || vocab.id(&joined).is_none() {
                continue;
            }
            if seen.insert((a.to_string(), b.to_string())) {
                model_merges.push((a.to_string(), b.to_string()));
            }
        }
        let model = BPE::builder()
            .vocab_and_merges(model_vocab, model_merges)
            .ignore_merges(pre.ignore_merges())
            .build()
            .map_err(bpe_err)?;
        let mut steps = pre.steps()?;
        steps.push(ByteLevel::new(false, false, false).into());
        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(Sequence::new(steps)));
        Ok(ByteBpe { inner })
    }

    pub fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        let enc = self.inner.encode_fast(text, false).map_err(bpe_err)?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }
}

/// GPT-2's reversible byte-to-character table: printable bytes map to
/// themselves, the others to U+0100 onwards.
pub fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            b as char
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\0');
            n += 1;
            c
        };
    }
    table
}

/// Decodes a byte-level token string to its bytes; characters outside the
/// table (never produced by the converter) are kept as their UTF-8.
pub fn decode_byte_level(
    text: &str,
    inverse: &std::collections::HashMap<char, u8>,
    out: &mut Vec<u8>,
) {
    for c in text.chars() {
        match inverse.get(&c) {
            Some(&b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}
