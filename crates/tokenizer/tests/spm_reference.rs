//! The SentencePiece encoder (heap of candidate merges, word-by-word with a
//! cache) against a naive one written from the algorithm's definition:
//! repeatedly merge the adjacent pair whose concatenation is the
//! highest-scoring normal piece (leftmost on ties), then spell leftovers as
//! <0xNN> byte tokens.

mod common;

use common::*;
use mistral_tokenizer::{TokenKind, Tokenizer};
use proptest::prelude::*;

fn naive_spm(tok: &Tokenizer, text: &str) -> Vec<u32> {
    if text.is_empty() {
        return Vec::new();
    }
    let escaped = format!("▁{}", text.replace(' ', "▁"));
    let mut syms: Vec<String> = escaped.chars().map(String::from).collect();
    loop {
        let mut best: Option<(f32, usize)> = None;
        for i in 0..syms.len().saturating_sub(1) {
            let merged = format!("{}{}", syms[i], syms[i + 1]);
            let Some(id) = tok.token_id(&merged) else {
                continue;
            };
            if tok.token_kind(id) != Some(TokenKind::Normal) {
                continue;
            }
            let score = tok.token_score(id).unwrap();
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, i));
            }
        }
        let Some((_, i)) = best else { break };
        let right = syms.remove(i + 1);
        syms[i].push_str(&right);
    }
    let mut ids = Vec::new();
    for s in syms {
        match tok
            .token_id(&s)
            .filter(|&id| tok.token_kind(id) == Some(TokenKind::Normal))
        {
            Some(id) => ids.push(id),
            None => {
                for b in s.bytes() {
                    ids.push(tok.token_id(&format!("<0x{b:02X}>")).unwrap());
                }
            }
        }
    }
    ids
}

#[test]
fn spm_matches_naive_reference_on_gpl_text() {
    let text = std::fs::read_to_string(root().join("tests/data/text/gpl-3.txt")).unwrap();
    let tok = mistral_v1();
    // Paragraphs, so the quadratic reference stays quick.
    for para in text.split("\n\n").take(40) {
        assert_eq!(
            tok.encode(para, false, false).unwrap(),
            naive_spm(tok, para),
            "{para:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn spm_matches_naive_reference(text in prop_oneof![
        "[ a-zA-Z.,'!?\n]{0,50}",
        "[ aeiouáéíóúñçß日本語🦙\u{1D518}]{0,25}",
        any::<String>(),
    ]) {
        for tok in [mistral_v1(), llama_spm()] {
            prop_assert_eq!(tok.encode(&text, false, false).unwrap(), naive_spm(tok, &text));
        }
    }
}
