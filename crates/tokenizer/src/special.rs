//! Splitting a prompt into raw-text fragments and special tokens, as llama.cpp's
//! `tokenizer_st_partition` does: special tokens are taken longest first, each
//! one splitting every remaining text fragment at all its occurrences.

use std::ops::Range;

use crate::vocab::Vocab;

/// A piece of the input: text to run through the model, or one special token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fragment {
    /// A byte range of the input.
    Text(Range<usize>),
    Token(u32),
}

/// Splits `text` around special tokens. `specials` are ids in llama.cpp's
/// order (longest text first); control and unknown tokens are only matched
/// when `parse_special` is set, user-defined tokens always.
pub fn partition(
    vocab: &Vocab,
    specials: &[u32],
    text: &str,
    parse_special: bool,
) -> Vec<Fragment> {
    let mut frags = Vec::new();
    if text.is_empty() {
        return frags;
    }
    frags.push(Fragment::Text(0..text.len()));
    for &id in specials {
        let kind = vocab.kinds[id as usize];
        if !kind.is_special(parse_special) {
            continue;
        }
        let needle = vocab.texts[id as usize].as_str();
        if !text.contains(needle) {
            continue;
        }
        let mut out = Vec::with_capacity(frags.len() + 2);
        for f in frags {
            match f {
                Fragment::Token(_) => out.push(f),
                Fragment::Text(r) => {
                    let mut start = r.start;
                    let hay = &text[r.clone()];
                    for (pos, _) in hay.match_indices(needle) {
                        let at = r.start + pos;
                        if at > start {
                            out.push(Fragment::Text(start..at));
                        }
                        out.push(Fragment::Token(id));
                        start = at + needle.len();
                    }
                    if start < r.end {
                        out.push(Fragment::Text(start..r.end));
                    }
                }
            }
        }
        frags = out;
    }
    frags
}
