//! Model ids from the Hugging Face hub (`BAAI/bge-small-en-v1.5`) resolve to
//! a snapshot folder in the Hugging Face cache (`$HF_HOME/hub`), downloaded
//! on first use. With `HF_HUB_OFFLINE=1` only the cache is consulted.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

const REQUIRED: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];
/// sentence-transformers files; plain transformers repositories lack them.
const OPTIONAL: [&str; 3] = [
    "modules.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
];

/// A model spec names a hub repository when it is `owner/name` and no such local path exists.
pub fn is_hub_id(spec: &Path) -> bool {
    let text = spec.to_string_lossy();
    !spec.exists()
        && !text.starts_with(['.', '/', '~'])
        && text.split('/').count() == 2
        && text.split('/').all(|part| !part.is_empty())
}

/// The local folder holding hub model `id`, downloading it if needed.
pub fn resolve(id: &str) -> Result<PathBuf> {
    let cache = hf_hub::Cache::from_env();
    let cached = cache.model(id.to_string());
    if let Some(config) = REQUIRED
        .iter()
        .map(|f| cached.get(f))
        .collect::<Option<Vec<_>>>()
        .map(|v| v[0].clone())
    {
        return Ok(snapshot_dir(&config));
    }
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1") {
        bail!(
            "model {id} is not in the Hugging Face cache ({}) and HF_HUB_OFFLINE=1 forbids downloading it",
            cache.path().display()
        );
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .context("cannot start the Hugging Face hub client")?;
    let repo = api.model(id.to_string());
    let mut config = None;
    for file in REQUIRED {
        let path = repo
            .get(file)
            .with_context(|| format!("cannot download {file} of {id} from the Hugging Face hub"))?;
        config.get_or_insert(path);
    }
    for file in OPTIONAL {
        // Absent from plain transformers repositories; the defaults apply then.
        let _ = repo.get(file);
    }
    Ok(snapshot_dir(&config.expect("REQUIRED is not empty")))
}

fn snapshot_dir(config_json: &Path) -> PathBuf {
    config_json.parent().unwrap_or(Path::new(".")).to_path_buf()
}
