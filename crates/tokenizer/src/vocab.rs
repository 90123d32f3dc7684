//! The vocabulary as GGUF stores it: token strings, scores, token types and the
//! special ids and flags (llama.cpp's `llama-vocab` loading rules).

use mistral_gguf::{keys, Metadata};

use crate::hash::FxHashMap;
use crate::TokenizerError;

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    Normal,
    Unknown,
    /// Special tokens such as `<s>`, `</s>`, `[INST]`, `<|im_start|>`: parsed in
    /// a prompt only on request, not printed by `decode`.
    Control,
    /// Added tokens that are always matched in the text and printed verbatim.
    UserDefined,
    Unused,
    /// SentencePiece byte-fallback tokens `<0xNN>`.
    Byte,
    Undefined,
}

impl TokenKind {
    pub fn from_gguf(t: i32) -> TokenKind {
        match t {
            1 => TokenKind::Normal,
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Undefined,
        }
    }

    /// Tokens split out of the text before the model runs: control and unknown
    /// tokens only when the caller asks for special parsing, user-defined always.
    pub fn is_special(self, parse_special: bool) -> bool {
        match self {
            TokenKind::UserDefined => true,
            TokenKind::Control | TokenKind::Unknown => parse_special,
            _ => false,
        }
    }
}

/// The tokenizer model named by `tokenizer.ggml.model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// `llama`: SentencePiece BPE with scores and byte fallback.
    SentencePiece,
    /// `gpt2`: byte-level BPE with merges and a regex pre-tokenizer.
    ByteLevelBpe,
}

impl ModelKind {
    pub fn from_name(name: &str) -> Result<ModelKind, TokenizerError> {
        match name {
            "llama" => Ok(ModelKind::SentencePiece),
            "gpt2" => Ok(ModelKind::ByteLevelBpe),
            other => Err(TokenizerError::UnsupportedModel(other.to_string())),
        }
    }
}

/// Texts of control tokens that end a turn (llama.cpp's end-of-generation list).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "<|end_of_text|>",
];

#[derive(Debug, Clone)]
pub struct Vocab {
    pub(crate) texts: Vec<String>,
    pub(crate) scores: Vec<f32>,
    pub(crate) kinds: Vec<TokenKind>,
    pub(crate) ids: FxHashMap<Box<str>, u32>,
    pub(crate) bos: Option<u32>,
    pub(crate) eos: Option<u32>,
    pub(crate) unk: Option<u32>,
    pub(crate) add_bos: bool,
    pub(crate) add_eos: bool,
    pub(crate) add_space_prefix: bool,
    /// Sorted end-of-generation ids.
    pub(crate) eog: Vec<u32>,
}

impl Vocab {
    /// Reads tokens, scores, types and special ids. `default_add_bos` is the
    /// model's default when `tokenizer.ggml.add_bos_token` is absent.
    pub fn from_metadata(
        md: &Metadata,
        model: ModelKind,
        default_add_bos: bool,
    ) -> Result<Vocab, TokenizerError> {
        let tokens = md.get_string_array(keys::TOKENIZER_TOKENS)?;
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if n > u32::MAX as usize {
            return Err(TokenizerError::LengthMismatch {
                key: keys::TOKENIZER_TOKENS,
                found: n,
                expected: u32::MAX as usize,
            });
        }
        let scores = match md.get(keys::TOKENIZER_SCORES) {
            None => vec![0.0; n],
            Some(_) => {
                // llama.cpp also accepts integer scores.
                let s: Vec<f32> = match md.get_f32_array(keys::TOKENIZER_SCORES) {
                    Ok(s) => s.to_vec(),
                    Err(e) => match md.get_i32_array(keys::TOKENIZER_SCORES) {
                        Ok(s) => s.into_iter().map(|x| x as f32).collect(),
                        Err(_) => return Err(e.into()),
                    },
                };
                check_len(keys::TOKENIZER_SCORES, s.len(), n)?;
                s[..n].to_vec()
            }
        };
        let kinds = match md.get(keys::TOKENIZER_TOKEN_TYPE) {
            None => vec![TokenKind::Normal; n],
            Some(_) => {
                let t = md.get_i32_array(keys::TOKENIZER_TOKEN_TYPE)?;
                check_len(keys::TOKENIZER_TOKEN_TYPE, t.len(), n)?;
                t[..n].iter().map(|&t| TokenKind::from_gguf(t)).collect()
            }
        };
        let mut texts = Vec::with_capacity(n);
        let mut ids: FxHashMap<Box<str>, u32> = FxHashMap::default();
        ids.reserve(n);
        for (i, t) in tokens.iter().enumerate() {
            let id = i as u32;
            // llama.cpp gives empty strings a placeholder so they can never match text.
            let text = if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                t.clone()
            };
            if let Some(&first) = ids.get(text.as_str()) {
                return Err(TokenizerError::DuplicateToken {
                    text,
                    first,
                    second: id,
                });
            }
            ids.insert(text.clone().into_boxed_str(), id);
            texts.push(text);
        }

        let (def_bos, def_eos, def_unk) = match model {
            ModelKind::SentencePiece => (Some(1), Some(2), Some(0)),
            ModelKind::ByteLevelBpe => (None, None, None),
        };
        let special =
            |key: &'static str, default: Option<u32>| -> Result<Option<u32>, TokenizerError> {
                match md.opt(key, Metadata::get_i64)? {
                    // Some converters write -1 for "no such token".
                    Some(id) if id < 0 => Ok(None),
                    Some(id) if id >= n as i64 => Err(TokenizerError::SpecialIdOutOfRange {
                        key,
                        id,
                        n_vocab: n,
                    }),
                    Some(id) => Ok(Some(id as u32)),
                    None => Ok(default.filter(|&d| (d as usize) < n)),
                }
            };
        let bos = special(keys::TOKENIZER_BOS_ID, def_bos)?;
        let eos = special(keys::TOKENIZER_EOS_ID, def_eos)?;
        let unk = special(keys::TOKENIZER_UNK_ID, def_unk)?;
        let eot = special(keys::TOKENIZER_EOT_ID, None)?;
        let eom = special(keys::TOKENIZER_EOM_ID, None)?;

        let add_bos = md
            .opt(keys::TOKENIZER_ADD_BOS, Metadata::get_bool)?
            .unwrap_or(default_add_bos);
        let add_eos = md
            .opt(keys::TOKENIZER_ADD_EOS, Metadata::get_bool)?
            .unwrap_or(false);
        let add_space_prefix = md
            .opt(keys::TOKENIZER_ADD_SPACE_PREFIX, Metadata::get_bool)?
            .unwrap_or(model == ModelKind::SentencePiece);
        if add_bos && bos.is_none() {
            return Err(TokenizerError::MissingBos);
        }
        if add_eos && eos.is_none() {
            return Err(TokenizerError::MissingEos);
        }

        let mut eog: Vec<u32> = [eos, eot, eom].into_iter().flatten().collect();
        eog.extend(EOG_TEXTS.iter().filter_map(|t| ids.get(*t).copied()));
        eog.sort_unstable();
        eog.dedup();

        Ok(Vocab {
            texts,
            scores,
            kinds,
            ids,
            bos,
            eos,
            unk,
            add_bos,
            add_eos,
            add_space_prefix,
            eog,
        })
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    pub fn text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    pub fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    pub fn check_id(&self, id: u32) -> Result<(), TokenizerError> {
        if (id as usize) < self.len() {
            Ok(())
        } else {
            Err(TokenizerError::IdOutOfRange {
                id,
                n_vocab: self.len(),
            })
        }
    }

    /// The id of the byte-fallback token `<0xNN>` for `b`.
    pub fn byte_token(&self, b: u8) -> Option<u32> {
        let hex = format!("<0x{b:02X}>");
        self.id(&hex)
            .filter(|&id| self.kinds[id as usize] == TokenKind::Byte)
    }

    /// Special tokens that `partition` splits out of the text, longest text first
    /// (ties by id), as llama.cpp's special-token cache orders them.
    pub fn special_tokens(&self) -> Vec<u32> {
        let mut v: Vec<u32> = (0..self.len() as u32)
            .filter(|&id| {
                matches!(
                    self.kinds[id as usize],
                    TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown
                )
            })
            .collect();
        v.sort_by(|&a, &b| {
            self.texts[b as usize]
                .len()
                .cmp(&self.texts[a as usize].len())
                .then(a.cmp(&b))
        });
        v
    }
}

fn check_len(key: &'static str, found: usize, expected: usize) -> Result<(), TokenizerError> {
    if found < expected {
        Err(TokenizerError::LengthMismatch {
            key,
            found,
            expected,
        })
    } else {
        Ok(())
    }
}

/// Parses a byte token's text `<0xNN>`.
pub fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
