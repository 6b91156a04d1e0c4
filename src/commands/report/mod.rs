//! `cpack report`: a training run's report as a table, JSON, HTML curves or a PNG.

mod png;

use crate::cli::ReportArgs;
use crate::report_table::metric;
use crate::runtime::Context;
use crate::state::StateDir;
use anyhow::{Context as _, Result};
use cpack_core::{OutputTarget, Progress as _};
use cpack_run::Report;
use std::fmt::Write as _;

pub fn run(ctx: &Context, args: ReportArgs) -> Result<()> {
    let runs = StateDir::of(&ctx.workspace)?.runs();
    let run = match args.run {
        Some(name) => runs.run(&name)?,
        None => runs
            .newest()?
            .context("there are no training runs in .cpack/runs; start one with `cpack train`")?,
    };
    let report = Report::load(&run)?;
    // Both outputs are checked before anything is printed or drawn.
    let html_target = args
        .html
        .as_deref()
        .map(OutputTarget::resolve)
        .transpose()?;
    let png_target = args.png.as_deref().map(OutputTarget::resolve).transpose()?;
    let to_stdout = |t: &Option<OutputTarget>| matches!(t, Some(OutputTarget::Stdout));
    // A page or picture sent to stdout is the output; the table would spoil it.
    if !to_stdout(&html_target) && !to_stdout(&png_target) {
        if args.json {
            outln!("{}", serde_json::to_string_pretty(&report)?)?;
        } else {
            crate::report_table::print(&report)?;
        }
    }
    if let Some(target) = html_target {
        target.write(html(&report).as_bytes())?;
        note_written(ctx, &target);
    }
    if let Some(target) = png_target {
        png::write(&Curves::of(&report), &target)?;
        note_written(ctx, &target);
    }
    Ok(())
}

fn note_written(ctx: &Context, target: &OutputTarget) {
    if let Some(path) = target.path() {
        ctx.progress.note(&format!("wrote {}", path.display()));
    }
}

/// One SVG line chart of `points` (x = epoch, base at 0).
fn chart(title: &str, points: &[(f64, f64)]) -> String {
    let (w, h, pad) = (420.0, 240.0, 40.0);
    if points.is_empty() {
        return format!("<p>{title}: no data yet</p>");
    }
    let xmax = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let span = (hi - lo).max(1e-9);
    let x = |v: f64| pad + v / xmax * (w - 2.0 * pad);
    let y = |v: f64| h - pad - (v - lo) / span * (h - 2.0 * pad);
    let path: Vec<String> = points
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
        .collect();
    let mut svg = format!(
        "<figure><figcaption>{title}</figcaption><svg width=\"{w}\" height=\"{h}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\" stroke=\"#ccc\"/>\
         <polyline fill=\"none\" stroke=\"#2563eb\" stroke-width=\"2\" points=\"{}\"/>",
        path.join(" ")
    );
    for p in points {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#2563eb\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{:.4}</text>\
             <text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            x(p.0), y(p.1), x(p.0) + 4.0, y(p.1) - 6.0, p.1, x(p.0), h - pad / 2.0,
            if p.0 == 0.0 { "base".to_string() } else { format!("epoch {}", p.0) }
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// The per-epoch series both pictures draw.
pub struct Curves {
    /// nDCG@10 per epoch, the base model at epoch 0.
    pub ndcg: Vec<(f64, f64)>,
    pub metric_title: String,
    /// Mean training loss per epoch.
    pub loss: Vec<(f64, f64)>,
}

impl Curves {
    fn of(report: &Report) -> Curves {
        let base = report
            .totals
            .base
            .iter()
            .map(|b| (0.0, b.metrics.ndcg_at_10));
        let epochs = report
            .epochs
            .iter()
            .filter_map(|e| Some((e.epoch as f64, e.eval.as_ref()?.metrics.ndcg_at_10)));
        Curves {
            ndcg: base.chain(epochs).collect(),
            metric_title: format!(
                "nDCG@10 on {}",
                report.spec.eval_split.as_deref().unwrap_or("-")
            ),
            loss: report
                .epochs
                .iter()
                .map(|e| (e.epoch as f64, e.mean_loss))
                .collect(),
        }
    }
}

fn html(report: &Report) -> String {
    let curves = Curves::of(report);
    let mut rows = String::new();
    for e in &report.epochs {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{:.4}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.0}</td></tr>",
            e.epoch,
            e.mean_loss,
            metric(e.eval.as_ref(), |m| m.ndcg_at_10),
            e.train_seconds,
            e.encode_seconds,
            e.mine_seconds
        );
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>cpack run {name}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}figure{{display:inline-block;margin:1em}}\
         td,th{{padding:2px 10px;text-align:right}}</style></head><body><h1>cpack run {name}</h1>\
         <pre>{spec}</pre>{c1}{c2}<table><tr><th>epoch</th><th>loss</th><th>nDCG@10</th><th>train s</th>\
         <th>encode s</th><th>mine s</th></tr>{rows}</table></body></html>\n",
        name = report.spec.name,
        spec = serde_json::to_string_pretty(&report.spec).expect("plain data"),
        c1 = chart(&curves.metric_title, &curves.ndcg),
        c2 = chart("mean training loss", &curves.loss),
    )
}
