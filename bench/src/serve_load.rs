//! `cpack-bench serve-load`: what `cpack serve` answers under load, beside
//! the in-process path `cpack search` takes for the same queries.
//!
//! The workspace's test questions (real user queries, in order) are sent as
//! single-query `POST /search` requests (k 10) by `--clients` concurrent
//! loopback clients, bounded by `--requests` and `--seconds`; then again by
//! one client, to show latency without concurrency. In-process, each query
//! is encoded and searched alone, as `cpack search` does after start-up.
//! Every served top 10 is checked against the in-process one.

use crate::Workspace;
use anyhow::{bail, Context, Result};
use cpack_encode::TextKind;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const USAGE: &str = "cpack-bench serve-load --workspace DIR [--cpack BIN] [--requests 400] [--clients 8] [--seconds 60] [--json OUT]";

const K: usize = 10;

struct Args {
    workspace: PathBuf,
    cpack: PathBuf,
    requests: usize,
    clients: usize,
    seconds: f64,
    json: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Args> {
    let beside_me = std::env::current_exe()?.with_file_name("cpack");
    let mut parsed = Args {
        workspace: PathBuf::new(),
        cpack: beside_me,
        requests: 400,
        clients: 8,
        seconds: 60.0,
        json: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--workspace" => parsed.workspace = value.into(),
            "--cpack" => parsed.cpack = value.into(),
            "--requests" => parsed.requests = value.parse()?,
            "--clients" => parsed.clients = value.parse::<usize>()?.max(1),
            "--seconds" => parsed.seconds = value.parse()?,
            "--json" => parsed.json = Some(value.into()),
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    if parsed.workspace.as_os_str().is_empty() {
        bail!("--workspace DIR (a workspace with a built index) is required\n{USAGE}");
    }
    Ok(parsed)
}

pub fn run(args: &[String]) -> Result<()> {
    let args = parse(args)?;
    let threads = cpack::process::configure(0);
    crate::facts::print();
    let queries = test_queries(&args.workspace, args.requests, threads)?;
    let (in_process, expected) = in_process(&args.workspace, &queries, threads)?;
    let server = Server::start(&args.cpack, &args.workspace)?;
    // Warm-up: the first requests pay for lazy allocations.
    load(&server.base, &queries[..queries.len().min(16)], 4, 30.0)?;
    let concurrent = load(&server.base, &queries, args.clients, args.seconds)?;
    let sequential = load(&server.base, &queries, 1, args.seconds)?;
    drop(server);
    let mismatched = concurrent
        .top_ids
        .iter()
        .chain(&sequential.top_ids)
        .filter(|(at, ids)| &expected[*at] != ids)
        .count();
    let report = serde_json::json!({
        "queries": queries.len(),
        "k": K,
        "threads": threads,
        "in_process": in_process.summary(),
        "http_concurrent": { "clients": args.clients, "stats": concurrent.stats.summary() },
        "http_one_client": { "clients": 1, "stats": sequential.stats.summary() },
        "top10_mismatches": mismatched,
    });
    eprintln!(
        "in-process (encode + search, one query at a time): {}\n\
         HTTP, {} clients: {}\nHTTP, 1 client: {}\nserved top 10 ≠ in-process: {mismatched}",
        in_process.line(),
        args.clients,
        concurrent.stats.line(),
        sequential.stats.line()
    );
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }
    if mismatched > 0 {
        bail!("{mismatched} served answers differ from the in-process search");
    }
    Ok(())
}

/// Up to `n` test-split questions of the workspace, in qrels order.
fn test_queries(workspace: &Path, n: usize, threads: usize) -> Result<Vec<String>> {
    let ws = Workspace::open(workspace, threads)?;
    let qrels = ws.dataset.qrels("test")?;
    let queries = &ws.dataset.queries;
    Ok(qrels
        .by_query
        .keys()
        .filter_map(|id| queries.position(id).map(|p| queries.texts[p].clone()))
        .take(n)
        .collect())
}

/// Latencies of requests (or in-process searches), in seconds, over a wall time.
struct Latencies {
    seconds: Vec<f64>,
    wall: f64,
}

impl Latencies {
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.seconds.clone();
        sorted.sort_by(f64::total_cmp);
        let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(at).copied().unwrap_or(f64::NAN)
    }

    fn per_second(&self) -> f64 {
        self.seconds.len() as f64 / self.wall
    }

    fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.seconds.len(),
            "wall_seconds": self.wall,
            "per_second": self.per_second(),
            "p50_ms": self.percentile(0.5) * 1e3,
            "p99_ms": self.percentile(0.99) * 1e3,
        })
    }

    fn line(&self) -> String {
        format!(
            "{} requests in {:.1}s: {:.1}/s, p50 {:.1} ms, p99 {:.1} ms",
            self.seconds.len(),
            self.wall,
            self.per_second(),
            self.percentile(0.5) * 1e3,
            self.percentile(0.99) * 1e3
        )
    }
}

/// Each query encoded and searched on its own; returns latencies and the top ids.
fn in_process(
    workspace: &Path,
    queries: &[String],
    threads: usize,
) -> Result<(Latencies, Vec<Vec<String>>)> {
    let mut ws = Workspace::open(workspace, threads)?;
    let started = Instant::now();
    let mut seconds = Vec::with_capacity(queries.len());
    let mut top = Vec::with_capacity(queries.len());
    for query in queries {
        let t = Instant::now();
        let vector = ws
            .encoder
            .encode(&[query.as_str()], TextKind::Query, &mut |_, _| {})?;
        let hits = ws.index.vectors.search(&vector, K, threads)?;
        seconds.push(t.elapsed().as_secs_f64());
        top.push(
            hits.of(0)
                .map(|(row, _)| ws.index.ids[row].clone())
                .collect(),
        );
    }
    let wall = started.elapsed().as_secs_f64();
    Ok((Latencies { seconds, wall }, top))
}

/// A `cpack serve` child on a free loopback port, stopped when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(cpack: &Path, workspace: &Path) -> Result<Server> {
        let mut child = Command::new(cpack)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .current_dir(workspace)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", cpack.display()))?;
        let stderr = BufReader::new(child.stderr.take().context("stderr")?);
        let mut lines = stderr.lines();
        let base = loop {
            let line = lines
                .next()
                .context("cpack serve exited before listening")??;
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
        };
        // Keep draining its stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Server { child, base })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one load phase measured, and each answered query's top ids.
struct Load {
    stats: Latencies,
    top_ids: Vec<(usize, Vec<String>)>,
}

/// One answered request: the query's position, its latency, the ids it got.
type Answered = (usize, f64, Vec<String>);

/// Sends `queries` as single-query searches from `clients` threads, until
/// all are sent or `seconds` have passed.
fn load(base: &str, queries: &[String], clients: usize, seconds: f64) -> Result<Load> {
    let next = AtomicUsize::new(0);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let url = format!("{base}/search");
    let started = Instant::now();
    let per_client: Vec<Result<Vec<Answered>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let at = next.fetch_add(1, Ordering::Relaxed);
                        if at >= queries.len() || Instant::now() > deadline {
                            return Ok(done);
                        }
                        let t = Instant::now();
                        let answer: serde_json::Value = agent
                            .post(&url)
                            .send_json(serde_json::json!({"query": queries[at], "k": K}))?
                            .into_json()?;
                        let ids = answer["hits"]
                            .as_array()
                            .context("no hits in the answer")?
                            .iter()
                            .map(|h| h["id"].as_str().unwrap_or_default().to_string())
                            .collect();
                        done.push((at, t.elapsed().as_secs_f64(), ids));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a client thread panicked"))
            .collect()
    });
    let wall = started.elapsed().as_secs_f64();
    let mut seconds_each = Vec::new();
    let mut top_ids = Vec::new();
    for client in per_client {
        for (at, s, ids) in client? {
            seconds_each.push(s);
            top_ids.push((at, ids));
        }
    }
    Ok(Load {
        stats: Latencies {
            seconds: seconds_each,
            wall,
        },
        top_ids,
    })
}
