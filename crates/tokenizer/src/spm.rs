//! SentencePiece BPE (`tokenizer.ggml.model = "llama"`), written here rather
//! than on the `tokenizers` crate: SentencePiece merges by *piece score*
//! (highest first, leftmost on ties), not by a merge list, and only into
//! normal, user-defined and unused pieces; unused pieces are re-split and
//! characters that form no piece fall back to `<0xNN>` byte tokens. This is
//! `bpe_model.cc` from SentencePiece (and llama.cpp's `llm_tokenizer_spm`).
//!
//! Speed: when no mergeable piece contains `▁` after another character (true
//! of every Llama/Mistral vocabulary), no merge can cross a boundary in front
//! of a `▁` that follows a non-`▁` character, so the text is encoded word by
//! word with a per-call cache of repeated words. The result is identical to
//! merging the whole text at once (each word's merges happen in the same
//! relative order); the test `spm_matches_naive_reference` checks it.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::hash::FxHashMap;
use crate::vocab::{TokenKind, Vocab};
use crate::TokenizerError;

/// SentencePiece's whitespace marker, U+2581.
pub const SPACE_MARK: char = '\u{2581}';

#[derive(Debug, Clone, Copy)]
struct Piece {
    id: u32,
    score: f32,
    unused: bool,
}

#[derive(Debug, Clone)]
pub struct Spm {
    pieces: FxHashMap<Box<str>, Piece>,
    byte_ids: [Option<u32>; 256],
    unk: Option<u32>,
    split_words: bool,
}

#[derive(Debug, Clone, Copy)]
struct Sym {
    start: u32,
    end: u32,
    prev: i32,
    next: i32,
}

#[derive(Debug, Clone, Copy)]
struct Bigram {
    score: f32,
    left: u32,
    right: u32,
    size: u32,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        let by_score = if self.score < other.score {
            Ordering::Less
        } else if self.score > other.score {
            Ordering::Greater
        } else {
            Ordering::Equal
        };
        by_score.then_with(|| other.left.cmp(&self.left))
    }
}

/// Scratch buffers for one `encode` call; `'a` is the escaped text.
struct Session<'s, 'a> {
    spm: &'s Spm,
    syms: Vec<Sym>,
    heap: BinaryHeap<Bigram>,
    rev_merge: FxHashMap<&'a str, (&'a str, &'a str)>,
}

impl Spm {
    pub fn new(vocab: &Vocab) -> Spm {
        let mut pieces = FxHashMap::default();
        let mut split_words = true;
        for (id, (text, (&kind, &score))) in vocab
            .texts
            .iter()
            .zip(vocab.kinds.iter().zip(&vocab.scores))
            .enumerate()
        {
            if !matches!(
                kind,
                TokenKind::Normal | TokenKind::UserDefined | TokenKind::Unused
            ) {
                continue;
            }
            let mut prev_mark = true;
            for c in text.chars() {
                if c == SPACE_MARK && !prev_mark {
                    split_words = false;
                }
                prev_mark = c == SPACE_MARK;
            }
            pieces.insert(
                text.clone().into_boxed_str(),
                Piece {
                    id: id as u32,
                    score,
                    unused: kind == TokenKind::Unused,
                },
            );
        }
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            let b = b as u8;
            // llama.cpp's byte_to_token: `<0xNN>`, else the byte itself as a token.
            *slot = vocab.byte_token(b).or_else(|| {
                if b.is_ascii() {
                    vocab.id(std::str::from_utf8(&[b]).unwrap_or_default())
                } else {
                    None
                }
            });
        }
        Spm {
            pieces,
            byte_ids,
            unk: vocab.unk,
            split_words,
        }
    }

    /// Encodes one text fragment: spaces become `▁`, and `prefix` prepends one
    /// (SentencePiece's dummy prefix).
    pub fn encode(
        &self,
        text: &str,
        prefix: bool,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let mut escaped = String::with_capacity(text.len() + text.len() / 4 + 3);
        if prefix {
            escaped.push(SPACE_MARK);
        }
        for (i, part) in text.split(' ').enumerate() {
            if i > 0 {
                escaped.push(SPACE_MARK);
            }
            escaped.push_str(part);
        }
        let mut s = Session {
            spm: self,
            syms: Vec::new(),
            heap: BinaryHeap::new(),
            rev_merge: FxHashMap::default(),
        };
        if !self.split_words {
            return s.encode_chunk(&escaped, out);
        }
        let mut cache: FxHashMap<&str, (usize, usize)> = FxHashMap::default();
        let mut cached_ids: Vec<u32> = Vec::new();
        for word in Words::new(&escaped) {
            if let Some(&(start, len)) = cache.get(word) {
                out.extend_from_slice(&cached_ids[start..start + len]);
                continue;
            }
            let first = out.len();
            s.encode_chunk(word, out)?;
            if word.len() <= 64 {
                let start = cached_ids.len();
                cached_ids.extend_from_slice(&out[first..]);
                cache.insert(word, (start, out.len() - first));
            }
        }
        Ok(())
    }
}

impl<'a> Session<'_, 'a> {
    fn encode_chunk(&mut self, text: &'a str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        if text.is_empty() {
            return Ok(());
        }
        self.syms.clear();
        self.heap.clear();
        self.rev_merge.clear();
        let n = text.chars().count();
        for (idx, (i, c)) in text.char_indices().enumerate() {
            self.syms.push(Sym {
                start: i as u32,
                end: (i + c.len_utf8()) as u32,
                prev: idx as i32 - 1,
                next: if idx + 1 == n { -1 } else { idx as i32 + 1 },
            });
        }
        for i in 1..self.syms.len() {
            self.try_add(text, i as i32 - 1, i as i32);
        }
        while let Some(b) = self.heap.pop() {
            let (l, r) = (b.left as usize, b.right as usize);
            let (ls, rs) = (self.syms[l], self.syms[r]);
            let (ln, rn) = (ls.end - ls.start, rs.end - rs.start);
            // Stale entry: one side was merged away or grew since it was queued.
            if ln == 0 || rn == 0 || ln + rn != b.size {
                continue;
            }
            self.syms[l].end = rs.end;
            self.syms[l].next = rs.next;
            self.syms[r].start = rs.end;
            if rs.next >= 0 {
                self.syms[rs.next as usize].prev = l as i32;
            }
            let prev = self.syms[l].prev;
            let next = self.syms[l].next;
            self.try_add(text, prev, l as i32);
            self.try_add(text, l as i32, next);
        }
        let mut i = 0i32;
        while i >= 0 {
            let s = self.syms[i as usize];
            self.resegment(&text[s.start as usize..s.end as usize], out)?;
            i = s.next;
        }
        Ok(())
    }

    fn try_add(&mut self, text: &'a str, left: i32, right: i32) {
        if left < 0 || right < 0 {
            return;
        }
        let (l, r) = (self.syms[left as usize], self.syms[right as usize]);
        let merged = &text[l.start as usize..r.end as usize];
        let Some(piece) = self.spm.pieces.get(merged) else {
            return;
        };
        self.heap.push(Bigram {
            score: piece.score,
            left: left as u32,
            right: right as u32,
            size: r.end - l.start,
        });
        if piece.unused {
            self.rev_merge.insert(
                merged,
                (
                    &text[l.start as usize..l.end as usize],
                    &text[r.start as usize..r.end as usize],
                ),
            );
        }
    }

    fn resegment(&self, piece: &'a str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        match self.spm.pieces.get(piece) {
            Some(p) if !p.unused => out.push(p.id),
            Some(p) => match self.rev_merge.get(piece) {
                Some(&(a, b)) => {
                    self.resegment(a, out)?;
                    self.resegment(b, out)?;
                }
                None => out.push(p.id),
            },
            None => {
                // Byte fallback; without byte tokens the piece is one <unk>, as in SentencePiece.
                if piece
                    .bytes()
                    .all(|b| self.spm.byte_ids[b as usize].is_some())
                {
                    out.extend(piece.bytes().filter_map(|b| self.spm.byte_ids[b as usize]));
                } else {
                    let first = piece.bytes().next().unwrap_or(0);
                    out.push(self.spm.unk.ok_or(TokenizerError::Unencodable(first))?);
                }
            }
        }
        Ok(())
    }
}

/// Splits escaped text in front of every `▁` that follows another character.
struct Words<'a> {
    rest: &'a str,
}

impl<'a> Words<'a> {
    fn new(text: &'a str) -> Self {
        Words { rest: text }
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let mut prev_mark = true;
        let mut cut = self.rest.len();
        for (i, c) in self.rest.char_indices() {
            let mark = c == SPACE_MARK;
            if mark && !prev_mark {
                cut = i;
                break;
            }
            prev_mark = mark;
        }
        let (word, rest) = self.rest.split_at(cut);
        self.rest = rest;
        Some(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_before_space_runs() {
        let w: Vec<&str> = Words::new("▁Hello▁▁world!▁x").collect();
        assert_eq!(w, vec!["▁Hello", "▁▁world!", "▁x"]);
        let w: Vec<&str> = Words::new("ab").collect();
        assert_eq!(w, vec!["ab"]);
        assert_eq!(Words::new("").count(), 0);
    }
}
