//! `scale`: how index build, search and mining grow with the corpus, on
//! synthetic data (random unit vectors, no encoder), and where memory goes.
//!
//! Each (rows, factory) case runs in a child process of its own
//! (`cpack-bench scale-case`), so its peak RSS (`VmHWM`) is its own. A case
//! writes `rows` random unit vectors to an f32 file (the layout of an index
//! generation), builds the index from it as `cpack index build` does, searches
//! 1,000 random queries for their top 200, then mines them: the miner's
//! selection (skip 10 raw ranks, drop the positive, sample 7 at random) and its
//! sled store, in chunks of 256 queries as a real round writes them.

use anyhow::{bail, Context, Result};
use cpack_index::embeddings::{EmbeddingMatrix, Precision};
use cpack_index::vector::{IndexBackend, IndexKind};
use cpack_miner::select::{self, Candidate, QueryFacts, Rng};
use cpack_miner::store::{MiningTimings, QueryRecord, RoundManifest, ScoredDoc};
use cpack_miner::NegativeStore;
use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const DIM: usize = 384;
const QUERIES: usize = 1000;
const TOPK: usize = 200;
const CHUNK: usize = 256;

pub fn usage() -> &'static str {
    "usage: cpack-bench scale [--rows 100000,1000000] [--factory Flat --factory IVF1024,Flat \
     --factory HNSW32] [--threads N] [--json OUT]"
}

/// Runs every (rows, factory) case in its own process and prints the table.
pub fn run(args: &[String]) -> Result<()> {
    let mut rows = vec![100_000usize, 1_000_000];
    let mut factories: Vec<String> = Vec::new();
    let mut threads = 0usize;
    let mut json_out = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value\n{}", usage()))?;
        match flag.as_str() {
            "--rows" => {
                rows = value
                    .split(',')
                    .map(|r| r.parse())
                    .collect::<Result<_, _>>()?
            }
            "--factory" => factories.push(value.clone()),
            "--threads" => threads = value.parse()?,
            "--json" => json_out = Some(value.clone()),
            other => bail!("unknown flag {other}\n{}", usage()),
        }
    }
    if factories.is_empty() {
        factories = ["Flat", "IVF1024,Flat", "HNSW32"]
            .map(String::from)
            .to_vec();
    }
    let exe = std::env::current_exe()?;
    let mut results = Vec::new();
    println!("| passages | factory | build s | search q/s (top {TOPK}) | select + store s | peak RSS MiB |");
    println!("|---:|---|---:|---:|---:|---:|");
    for &n in &rows {
        for factory in &factories {
            let out = std::process::Command::new(&exe)
                .args(["scale-case", &n.to_string(), factory, &threads.to_string()])
                .output()?;
            if !out.status.success() {
                bail!(
                    "case {n} × {factory} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let case: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            println!(
                "| {n} | {factory} | {:.1} | {:.0} | {:.2} | {:.0} |",
                case["build_seconds"].as_f64().unwrap_or(f64::NAN),
                case["search_queries_per_second"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                case["select_store_seconds"].as_f64().unwrap_or(f64::NAN),
                case["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
            );
            results.push(case);
        }
    }
    if let Some(path) = json_out {
        let report = serde_json::json!({
            "benchmark": "scale",
            "dim": DIM,
            "queries": QUERIES,
            "topk": TOPK,
            "machine": crate::facts::machine(),
            "cases": results,
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

/// One case, in a fresh process: prints its figures as JSON. `ROWS` random
/// unit vectors, or with `EMBEDDINGS` an f32 file of 384-wide rows (an index
/// generation's `embeddings.f32`), whose first 1,000 rows are the queries.
pub fn case(args: &[String]) -> Result<()> {
    let (rows, factory, threads, file) = match args {
        [rows, factory, threads] => (rows.parse::<usize>()?, factory, threads, None),
        [_, factory, threads, file] => (0, factory, threads, Some(Path::new(file))),
        _ => bail!("usage: cpack-bench scale-case ROWS FACTORY THREADS [EMBEDDINGS]"),
    };
    let threads = cpack::process::configure(threads.parse()?);
    let dir = tempfile::tempdir()?;
    let (path, rows) = match file {
        Some(file) => (
            file.to_path_buf(),
            std::fs::metadata(file)?.len() as usize / (DIM * 4),
        ),
        None => {
            let path = dir.path().join(Precision::F32.file_name());
            write_random_unit_vectors(&path, rows, 7)?;
            (path, rows)
        }
    };
    let embeddings = Arc::new(EmbeddingMatrix::open(&path, rows, DIM, Precision::F32)?);
    let queries = match file {
        Some(_) => embeddings.rows_f32(0, QUERIES.min(rows)),
        None => random_unit_vectors(QUERIES, 99),
    };

    // As `IndexDir::build`: every thread for building.
    let started = Instant::now();
    let mut index = IndexKind::new(IndexBackend::Faiss, factory)?.build(embeddings, threads)?;
    let build_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let hits = index.search(&queries, TOPK, threads)?;
    let search_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    mine_hits(&hits, queries.len() / DIM, rows, dir.path())?;
    let select_store_seconds = started.elapsed().as_secs_f64();

    let report = serde_json::json!({
        "rows": rows,
        "factory": factory,
        "threads": threads,
        "build_seconds": build_seconds,
        "search_seconds": search_seconds,
        "search_queries_per_second": (queries.len() / DIM) as f64 / search_seconds,
        "select_store_seconds": select_store_seconds,
        "embeddings_mib": (rows * DIM * 4) as f64 / (1 << 20) as f64,
        "peak_rss_mib": crate::facts::peak_rss_mib()?,
    });
    println!("{report}");
    Ok(())
}

/// `n` Gaussian vectors normalised to unit length, from a seeded generator.
fn random_unit_vectors(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::for_query(seed, "synthetic");
    let mut uniform = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let mut out = Vec::with_capacity(n * DIM);
    for _ in 0..n {
        // Box–Muller: pairs of uniforms to pairs of standard normals.
        let row: Vec<f32> = (0..DIM / 2)
            .flat_map(|_| {
                let (u, v) = (uniform().max(f64::MIN_POSITIVE), uniform());
                let r = (-2.0 * u.ln()).sqrt();
                let t = std::f64::consts::TAU * v;
                [(r * t.cos()) as f32, (r * t.sin()) as f32]
            })
            .collect();
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        out.extend(row.iter().map(|x| x / norm));
    }
    out
}

/// Writes `rows` random unit vectors as little-endian f32, in blocks.
fn write_random_unit_vectors(path: &Path, rows: usize, seed: u64) -> Result<()> {
    let mut file = BufWriter::new(std::fs::File::create(path)?);
    for (block, start) in (0..rows).step_by(10_000).enumerate() {
        let n = 10_000.min(rows - start);
        for v in random_unit_vectors(n, seed + block as u64) {
            file.write_all(&v.to_le_bytes())?;
        }
    }
    file.flush()?;
    Ok(())
}

/// The miner's selection and sled storage over `hits`: each query's positive
/// is a random row, so the guards have something to remove.
fn mine_hits(
    hits: &cpack_index::vector::Hits,
    queries: usize,
    rows: usize,
    dir: &Path,
) -> Result<()> {
    let store = NegativeStore::open(&dir.join("negatives"))?;
    let params = crate::mining_params(TOPK, 10);
    let manifest = RoundManifest {
        round: 1,
        params: params.clone(),
        model_fingerprint: "bench".into(),
        corpus_fingerprint: "bench".into(),
        query_instruction: String::new(),
        index_generation: "bench".into(),
        chunk_queries: CHUNK,
        total_queries: queries,
        complete: false,
        created_unix: 0,
        seconds: 0.0,
        timings: MiningTimings::default(),
        query_model_fingerprint: None,
        index_embeddings: None,
        teacher: None,
        queries: None,
    };
    let no_text = |_: usize| 0u64;
    for (chunk, batch) in (0..queries).collect::<Vec<_>>().chunks(CHUNK).enumerate() {
        let mut records = Vec::with_capacity(batch.len());
        for &q in batch {
            let qid = format!("q{q}");
            let mut rng = Rng::for_query(params.seed, &qid);
            let positive_rows: HashSet<usize> = [rng.below(rows)].into();
            let candidates = Candidate::from_hits(hits, q);
            let facts = QueryFacts {
                text: 1,
                positive_rows: &positive_rows,
                positive_texts: HashSet::new(),
                lowest_positive_score: None,
            };
            let selection = select::select(&candidates, &no_text, &facts, &params, rows, &mut rng);
            let doc = |c: &Candidate| ScoredDoc {
                id: c.row.to_string(),
                rank: c.rank,
                score: c.score,
            };
            records.push((
                qid,
                QueryRecord {
                    negatives: selection.chosen.iter().map(doc).collect(),
                    positives: Vec::new(),
                    survivors: selection.survivors,
                    shortfall: selection.shortfall,
                    filtered: selection.filtered,
                    teacher: None,
                },
            ));
        }
        store.put_chunk(&manifest, chunk as u32, &records)?;
    }
    Ok(())
}
