//! `mistral-run tokenize -m FILE [--ids] [--no-bos] [--parse-special] (TEXT | --file PATH)`:
//! the tokenizer of any GGUF file (vocab-only files too), like llama.cpp's
//! `llama-tokenize`.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use mistral_tokenizer::{TokenKind, Tokenizer};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file whose tokenizer to use.
    #[arg(short = 'm', long = "model", value_name = "FILE")]
    pub model: PathBuf,
    /// Print only the ids, as a list: [1, 22557, 1526].
    #[arg(long)]
    pub ids: bool,
    /// Do not add the BOS token the model asks for.
    #[arg(long)]
    pub no_bos: bool,
    /// Turn control tokens written in the text (such as the Mistral instruct and ChatML markers, or BOS) into their ids.
    #[arg(long)]
    pub parse_special: bool,
    /// Tokenize this file's exact bytes (UTF-8) instead of TEXT.
    #[arg(long, value_name = "PATH", conflicts_with = "text")]
    pub file: Option<PathBuf>,
    /// The text to tokenize (use --file for text with newlines or leading dashes).
    #[arg(required_unless_present = "file", allow_hyphen_values = true)]
    pub text: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let text = match (&args.file, args.text) {
        (Some(path), _) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            String::from_utf8(bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not UTF-8 text (invalid byte at offset {})",
                    path.display(),
                    e.utf8_error().valid_up_to()
                )
            })?
        }
        (None, Some(text)) => text,
        (None, None) => anyhow::bail!("give the TEXT to tokenize or --file PATH"),
    };
    let file = mistral_gguf::GgufFile::open(&args.model)?;
    let tok = Tokenizer::from_gguf(&file)
        .with_context(|| format!("{}: no usable tokenizer", args.model.display()))?;
    let ids = tok.encode(&text, !args.no_bos, args.parse_special)?;
    let mut out = String::new();
    if args.ids {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "[{}]", list.join(", "))?;
    } else {
        for &id in &ids {
            writeln!(out, "{id:>6} -> '{}'", piece(&tok, id))?;
        }
    }
    print!("{out}");
    Ok(())
}

/// What a token prints as: control tokens as their text, others as their
/// bytes with control characters and stray bytes escaped.
fn piece(tok: &Tokenizer, id: u32) -> String {
    if matches!(
        tok.token_kind(id),
        Some(TokenKind::Control | TokenKind::Unknown)
    ) {
        return tok.token_piece(id).unwrap_or_default().to_string();
    }
    let bytes = tok.token_bytes(id).unwrap_or_default();
    let mut s = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                s.extend(c.escape_default());
            } else {
                s.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(s, "\\x{b:02X}");
        }
    }
    s
}
