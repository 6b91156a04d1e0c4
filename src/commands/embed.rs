//! `cpack embed`: JSONL texts in, the same objects with "embedding" out.

use crate::cli::EmbedArgs;
use crate::runtime::{open_encoder, Context};
use anyhow::{anyhow, bail, Context as _, Result};
use cpack_core::Progress;
use cpack_encode::TextKind;
use std::io::{BufRead, BufReader, Read};

pub fn run(ctx: &Context, args: EmbedArgs) -> Result<()> {
    let config = ctx.config(&args.overrides)?;
    let input_name = args.input.display().to_string();
    let reader: Box<dyn Read> = if input_name == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&args.input)
                .with_context(|| format!("cannot open {input_name}"))?,
        )
    };
    let records = read_records(reader, &input_name)?;
    let encoder = open_encoder(&config)?;
    let texts: Vec<&str> = records.iter().map(|(_, text)| text.as_str()).collect();
    let kind = if args.query {
        TextKind::Query
    } else {
        TextKind::Passage
    };
    ctx.progress.stage("embedding", texts.len() as u64);
    let vectors = encoder.encode(&texts, kind, &mut |n, t| {
        ctx.progress.advance(n as u64, t as u64)
    })?;
    ctx.progress.finish();

    let mut lines = Vec::with_capacity(records.len());
    for (i, (mut object, _)) in records.into_iter().enumerate() {
        let row = &vectors[i * encoder.dim()..(i + 1) * encoder.dim()];
        object.insert("embedding".into(), serde_json::json!(row));
        lines.push(serde_json::to_string(&object)?);
    }
    let body = lines.join("\n") + "\n";
    cpack_core::write_output(&args.output, body.as_bytes())?;
    Ok(())
}

type Record = (serde_json::Map<String, serde_json::Value>, String);

/// Parses `{"text": …}` objects, one per line, naming the line of any problem.
fn read_records(reader: impl Read, name: &str) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    for (n, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {name}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{name}:{}", n + 1);
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| anyhow!("{}: invalid JSON: {e}", at()))?;
        let serde_json::Value::Object(object) = value else {
            bail!("{}: expected a JSON object with a \"text\" field", at());
        };
        let text = match object.get("text") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => bail!("{}: \"text\" must be a string", at()),
            None => bail!("{}: missing \"text\" field", at()),
        };
        records.push((object, text));
    }
    Ok(records)
}
