//! `cpack init`: write a commented cpack.toml.

use crate::cli::InitArgs;
use crate::config::{self, FILE_NAME};
use crate::runtime::Context;
use crate::template::Template;
use anyhow::{bail, Context as _, Result};
use cpack_core::Progress as _;
use cpack_data::dataset::DatasetPaths;
use cpack_encode::EncoderSettings;
use cpack_model::ModelDir;

pub fn run(ctx: &Context, args: InitArgs) -> Result<()> {
    let target = ctx.workspace.join(FILE_NAME);
    if target.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to overwrite it",
            target.display()
        );
    }
    let data = absolute(&args.data)?;
    let paths = DatasetPaths::beir(&data);
    for required in [&paths.corpus, &paths.queries] {
        if !required.exists() {
            bail!(
                "{} is missing: --data must be a BEIR-layout folder",
                required.display()
            );
        }
    }
    // Hub ids are written as given, so the workspace stays portable.
    let (model_path, model) = if crate::hub::is_hub_id(&args.model) {
        let folder = crate::hub::resolve(&args.model.to_string_lossy())?;
        (args.model.clone(), ModelDir::open(&folder)?)
    } else {
        let folder = absolute(&args.model)?;
        (folder.clone(), ModelDir::open(&folder)?)
    };
    let declared = EncoderSettings::declared_by(&model);
    let instruction = config::expand_instruction(&args.query_instruction);
    std::fs::create_dir_all(&ctx.workspace)
        .with_context(|| format!("cannot create {}", ctx.workspace.display()))?;
    let text = Template {
        data: &data,
        model: &model_path,
        query_instruction: instruction,
        declared: &declared,
    }
    .render();
    cpack_core::write_output(&target, text.as_bytes())?;
    ctx.progress.note(&format!(
        "wrote {} (model {}, {} pooling{}, dataset {})",
        target.display(),
        model_path.display(),
        declared.pooling,
        if declared.normalize {
            ", normalised"
        } else {
            ""
        },
        data.display()
    ));
    Ok(())
}

fn absolute(path: &std::path::Path) -> Result<std::path::PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("{} does not exist", path.display()))
}
