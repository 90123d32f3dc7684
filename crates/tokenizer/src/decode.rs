//! Ids back to text: each token's bytes (looked up once at load), joined and
//! read as UTF-8; and the streaming decoder that emits text as ids arrive.

use std::collections::HashMap;

use crate::bpe::{byte_to_char_table, decode_byte_level};
use crate::spm::SPACE_MARK;
use crate::vocab::{parse_byte_token, ModelKind, TokenKind, Vocab};
use crate::{Tokenizer, TokenizerError};

/// The bytes every token decodes to. Control and unknown tokens decode to
/// nothing (their text is kept apart for `decode_special`).
pub fn piece_bytes(vocab: &Vocab, model: ModelKind) -> Vec<Box<[u8]>> {
    let inverse: HashMap<char, u8> = byte_to_char_table()
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect();
    vocab
        .texts
        .iter()
        .zip(&vocab.kinds)
        .map(|(text, &kind)| {
            let mut out = Vec::new();
            match kind {
                TokenKind::Control | TokenKind::Unknown | TokenKind::Undefined => {}
                TokenKind::UserDefined => out.extend_from_slice(text.as_bytes()),
                TokenKind::Byte => match parse_byte_token(text) {
                    Some(b) => out.push(b),
                    None => out.extend_from_slice(text.as_bytes()),
                },
                TokenKind::Normal | TokenKind::Unused => match model {
                    ModelKind::SentencePiece => {
                        let mut buf = [0u8; 4];
                        for c in text.chars() {
                            let c = if c == SPACE_MARK { ' ' } else { c };
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                    ModelKind::ByteLevelBpe => decode_byte_level(text, &inverse, &mut out),
                },
            }
            out.into_boxed_slice()
        })
        .collect()
}

/// Joins the tokens' bytes; the first token that has any loses one leading
/// space when the tokenizer adds a dummy prefix (SentencePiece).
pub fn decode_bytes(
    tok: &Tokenizer,
    ids: &[u32],
    special: bool,
) -> Result<Vec<u8>, TokenizerError> {
    let mut out = Vec::new();
    let mut strip = tok.strips_leading_space();
    for &id in ids {
        let bytes = tok.piece_for(id, special)?;
        if bytes.is_empty() {
            continue;
        }
        let bytes = if strip && bytes[0] == b' ' {
            &bytes[1..]
        } else {
            bytes
        };
        strip = false;
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

/// Emits text as generated ids arrive. Text is held back only while it ends in
/// an incomplete UTF-8 sequence (a multi-byte character split over several
/// byte-fallback or byte-level tokens); bytes that can never form a character
/// come out as U+FFFD, exactly where `Tokenizer::decode` puts one, so the
/// concatenated output always equals `decode` of the same ids.
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    /// A clone of the tokenizer (shared vocabulary), so the decoder can live
    /// as long as a request that outlives any borrow.
    tok: Tokenizer,
    pending: Vec<u8>,
    strip: bool,
}

impl StreamDecoder {
    pub(crate) fn new(tok: &Tokenizer) -> Self {
        StreamDecoder {
            tok: tok.clone(),
            pending: Vec::new(),
            strip: tok.strips_leading_space(),
        }
    }

    /// Feeds one id; returns the text that is now complete, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        let bytes = self.tok.piece_for(id, false)?;
        if bytes.is_empty() {
            return Ok(None);
        }
        let bytes = if self.strip && bytes[0] == b' ' {
            &bytes[1..]
        } else {
            bytes
        };
        self.strip = false;
        self.pending.extend_from_slice(bytes);
        Ok(self.drain(false))
    }

    /// Flushes what is left (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> Result<Option<String>, TokenizerError> {
        Ok(self.drain(true))
    }

    fn drain(&mut self, at_end: bool) -> Option<String> {
        let mut out = String::new();
        let mut pos = 0;
        while pos < self.pending.len() {
            match std::str::from_utf8(&self.pending[pos..]) {
                Ok(s) => {
                    out.push_str(s);
                    pos = self.pending.len();
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Checked by from_utf8 just above.
                    out.push_str(
                        std::str::from_utf8(&self.pending[pos..pos + valid]).unwrap_or_default(),
                    );
                    pos += valid;
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            pos += n;
                        }
                        None if at_end => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            pos = self.pending.len();
                        }
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..pos);
        (!out.is_empty()).then_some(out)
    }
}
