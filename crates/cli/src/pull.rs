//! `mistral-run pull REPO FILE`: download a GGUF file from a Hugging Face
//! repository (or any server speaking the same `resolve` protocol) into the
//! hf-hub cache and print its local path.

use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Repository id, e.g. `TheBloke/Mistral-7B-Instruct-v0.2-GGUF`.
    pub repo: String,
    /// File in the repository, e.g. `mistral-7b-instruct-v0.2.Q4_K_M.gguf`.
    pub file: String,
    /// Revision (branch, tag or commit).
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Hub endpoint (default: $HF_ENDPOINT, else the Hugging Face hub).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Cache folder (default: $HF_HOME/hub, else ~/.cache/huggingface/hub).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let path = download(&args)?;
    println!("{}", path.display());
    Ok(())
}

/// Downloads (or finds in the cache) `args.file` of `args.repo` and returns its local path.
/// The file is checked to be a valid GGUF before the path is returned.
pub fn download(args: &Args) -> anyhow::Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};

    let mut builder =
        ApiBuilder::from_env().with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if let Some(e) = &args.endpoint {
        builder = builder.with_endpoint(e.trim_end_matches('/').to_string());
    }
    if let Some(dir) = &args.cache_dir {
        builder = builder.with_cache_dir(dir.clone());
    }
    let api = builder.build().context("cannot set up the hub client")?;
    let repo = api.repo(Repo::with_revision(
        args.repo.clone(),
        RepoType::Model,
        args.revision.clone(),
    ));
    let path = repo
        .get(&args.file)
        .map_err(|e| anyhow::anyhow!("cannot download {} from {}: {e}", args.file, args.repo))?;
    mistral_gguf::GgufFile::open(&path)?;
    Ok(path)
}
