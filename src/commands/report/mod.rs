//! `cpack report`: a training run's report as a table, JSON, HTML curves or a PNG.

mod png;

use super::train::{newest_run, runs_dir};
use super::Context;
use crate::cli::ReportArgs;
use anyhow::{Context as _, Result};
use cpack_index::align::StaleVectors;
use cpack_run::{self as run, Report};
use cpack_train::incremental::RefreshScope;
use std::fmt::Write as _;

pub fn run(ctx: &Context, args: ReportArgs) -> Result<()> {
    crate::config::state_dir(&ctx.workspace)?;
    let runs = runs_dir(&ctx.workspace);
    let name = match args.run {
        Some(name) => {
            run::validate_run_name(&name)?;
            name
        }
        None => newest_run(&runs)?
            .context("there are no training runs in .cpack/runs; start one with `cpack train`")?,
    };
    let report = run::load_report(&runs.join(&name))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if let Some(path) = args.html {
        std::fs::write(&path, html(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = args.png {
        png::write(&Curves::of(&report), &path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn metric(
    point: Option<&run::EvalPoint>,
    f: fn(&cpack_data::metrics::RetrievalMetrics) -> f64,
) -> String {
    point.map_or("-".into(), |p| format!("{:.4}", f(&p.metrics)))
}

pub fn print_table(report: &Report) {
    let s = &report.spec;
    println!(
        "run {} · {} epochs · refresh every {} · {} loss τ={} · batch {} × group {} · lr {} · {} training queries{}",
        s.name,
        s.epochs,
        if s.refresh_every == 0 { "never (static)".to_string() } else { format!("{} epoch(s)", s.refresh_every) },
        s.train.loss,
        s.train.temperature,
        s.train.batch_size,
        s.train.group_size,
        s.train.lr,
        report.train_queries,
        s.eval_split.as_ref().map_or(String::new(), |e| format!(" · eval on {e}")),
    );
    let mut strategy = Vec::new();
    if s.train.freeze_passages {
        strategy.push("query side only (--freeze-passages)".to_string());
    }
    if s.refresh == RefreshScope::Incremental {
        let encoded: Vec<String> = report
            .epochs
            .iter()
            .filter(|e| e.passages_encoded > 0)
            .map(|e| format!("{} after epoch {}", e.passages_encoded, e.epoch))
            .collect();
        let eval: f64 = report.epochs.iter().map(|e| e.eval_encode_seconds).sum();
        let whole = match s.full_refresh_every {
            0 => String::new(),
            m => format!(", whole every {m}"),
        };
        let depth = s
            .refresh_depth
            .map_or(String::new(), |k| format!(" of each pool's top {k}"));
        let aligned = aligned_note(report);
        strategy.push(format!(
            "incremental refresh{depth}{whole}{aligned}: passages re-encoded {}; evaluation's own encodes {eval:.0} s",
            if encoded.is_empty() { "none yet".to_string() } else { encoded.join(", ") }
        ));
    }
    if let Some(margin) = s.train.replace_easy {
        let retired: usize = report.epochs.iter().map(|e| e.negatives_retired).sum();
        strategy.push(format!(
            "easy negatives retired at margin {margin}: {retired} so far"
        ));
    }
    if !strategy.is_empty() {
        println!("{}", strategy.join(" · "));
    }
    println!(
        "{:<6} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8}",
        "epoch",
        "round",
        "loss",
        "nDCG@10",
        "MRR@10",
        "R@100",
        "train s",
        "encode s",
        "index s",
        "mine s",
        "eval s",
        "overlap"
    );
    if let Some(base) = &report.base {
        println!(
            "{:<6} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7.0} {:>8}",
            "base",
            "-",
            "-",
            metric(Some(base), |m| m.ndcg_at_10),
            metric(Some(base), |m| m.mrr_at_10),
            metric(Some(base), |m| m.recall_at_100),
            "-",
            "-",
            "-",
            "-",
            base.seconds,
            "-"
        );
    }
    for e in &report.epochs {
        println!(
            "{:<6} {:>5} {:>8.4} {:>8} {:>8} {:>8} {:>8.0} {:>8.0} {:>8.1} {:>7.0} {:>7} {:>8}",
            e.epoch,
            e.round.map_or("-".into(), |r| r.to_string()),
            e.mean_loss,
            metric(e.eval.as_ref(), |m| m.ndcg_at_10),
            metric(e.eval.as_ref(), |m| m.mrr_at_10),
            metric(e.eval.as_ref(), |m| m.recall_at_100),
            e.train_seconds,
            e.encode_seconds,
            e.index_seconds,
            e.mine_seconds,
            e.eval
                .as_ref()
                .map_or("-".into(), |p| format!("{:.0}", p.seconds)),
            e.negatives_overlap
                .map_or("-".into(), |o| format!("{o:.3}")),
        );
    }
}

/// One SVG line chart of `points` (x = epoch, base at 0).
/// ", stale vectors aligned (…)" for a run that aligns them: each refresh's
/// held-out cosine of old and mapped vectors to the new ones.
fn aligned_note(report: &Report) -> String {
    if report.spec.stale_vectors != StaleVectors::Aligned {
        return String::new();
    }
    let fits: Vec<String> = report
        .epochs
        .iter()
        .filter_map(|e| Some((e.epoch, e.alignment?)))
        .filter_map(|(epoch, a)| {
            let (kept, aligned) = (a.cosine_kept?, a.cosine_aligned?);
            Some(format!(
                "cosine {kept:.3} → {aligned:.3} after epoch {epoch}"
            ))
        })
        .collect();
    if fits.is_empty() {
        ", stale vectors aligned".to_string()
    } else {
        format!(", stale vectors aligned ({})", fits.join(", "))
    }
}

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
        let base = report.base.iter().map(|b| (0.0, b.metrics.ndcg_at_10));
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
