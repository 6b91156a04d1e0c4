//! `cpack export --onnx`: a checkpoint as one ONNX file.

use crate::cli::ExportArgs;
use crate::runtime::Context;
use anyhow::Result;

#[cfg(feature = "ort")]
pub fn run(ctx: &Context, args: ExportArgs) -> Result<()> {
    use anyhow::Context as _;
    use cpack_encode::onnx::{export_bytes, ExportOptions};
    use cpack_encode::WeightPrecision;
    use cpack_model::{ModelDir, Pooling};
    use std::time::Instant;
    let model_dir = crate::config::locate_model(&ctx.workspace, &args.model)?;
    let model = ModelDir::open(&model_dir)?;
    let pooling = args
        .pooling
        .or(model.declared_pooling)
        .unwrap_or(Pooling::Mean);
    let options = ExportOptions {
        pooling,
        normalize: model.declared_normalize,
        precision: if args.int8 {
            WeightPrecision::Int8
        } else {
            WeightPrecision::F32
        },
    };
    let started = Instant::now();
    let graph = export_bytes(&model, options)
        .with_context(|| format!("cannot export {}", model_dir.display()))?;
    let bytes = graph.len();
    create_parent(&args.output)?;
    cpack_core::write_output(&args.output, &graph)?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let summary = serde_json::json!({
            "model": model_dir.display().to_string(),
            "output": args.output.display().to_string(),
            "precision": options.precision.to_string(),
            "pooling": pooling.to_string(),
            "normalize": options.normalize,
            "opset": cpack_encode::onnx::OPSET,
            "bytes": bytes,
            "seconds": seconds,
        });
        outln!("{}", serde_json::to_string_pretty(&summary)?)?;
    } else {
        outln!(
            "wrote {} ({:.1} MB, {} weights, {pooling} pooling{}, opset {}) in {seconds:.1} s",
            args.output.display(),
            bytes as f64 / 1e6,
            options.precision,
            if options.normalize {
                ", normalized"
            } else {
                ""
            },
            cpack_encode::onnx::OPSET,
        )?;
    }
    Ok(())
}

/// `OUT.onnx` may name a folder that does not exist yet.
#[cfg(feature = "ort")]
fn create_parent(output: &std::path::Path) -> Result<()> {
    use anyhow::Context as _;
    match output.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display())),
        None => Ok(()),
    }
}

#[cfg(not(feature = "ort"))]
pub fn run(_: &Context, _: ExportArgs) -> Result<()> {
    anyhow::bail!("this cpack was built without the `ort` feature, which writes ONNX")
}
