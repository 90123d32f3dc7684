//! `mistral-run info FILE`.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file.
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// List every tensor (name, type, shape, offset, bytes).
    #[arg(long)]
    pub tensors: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let file = mistral_gguf::GgufFile::open(&args.file)?;
    println!("{} tensors", file.tensors().len());
    Ok(())
}
