//! `cpack serve` end to end: the real binary on a loopback port, called by a
//! real HTTP client, its answers checked against `cpack search` and
//! `cpack embed`, its refusals against malformed input, and its switch to a
//! newly built index while requests keep arriving.

use crate::common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};

/// A running `cpack serve`, killed when dropped.
pub(crate) struct Server {
    child: Child,
    base: String,
    log: std::sync::mpsc::Receiver<String>,
}

impl Server {
    pub(crate) fn start(ws: &Path, extra: &[&str]) -> Server {
        let mut child = cpack(ws)
            .args(["--progress-every", "0", "serve", "--addr", "127.0.0.1:0"])
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let (lines, log) = std::sync::mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = String::new();
        let base = loop {
            let line = log
                .recv_timeout(std::time::Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("the server never said where it listens: {seen}"));
            seen += &line;
            seen.push('\n');
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        Server { child, base, log }
    }

    pub(crate) fn post(&self, path: &str, body: &Value) -> Value {
        ureq::post(&format!("{}{path}", self.base))
            .send_json(body.clone())
            .unwrap_or_else(|e| panic!("POST {path} {body}: {e}"))
            .into_json()
            .unwrap()
    }

    pub(crate) fn get(&self, path: &str) -> Value {
        ureq::get(&format!("{}{path}", self.base))
            .call()
            .unwrap()
            .into_json()
            .unwrap()
    }

    /// Sends a raw body; returns the status and the error message of a refusal.
    pub(crate) fn refused(&self, path: &str, body: &str) -> (u16, String) {
        match ureq::post(&format!("{}{path}", self.base))
            .set("Content-Type", "application/json")
            .send_string(body)
        {
            Ok(r) => panic!("POST {path} was accepted: {}", r.into_string().unwrap()),
            Err(ureq::Error::Status(code, response)) => {
                let body: Value = response.into_json().unwrap();
                (code, body["error"].as_str().unwrap().to_string())
            }
            Err(e) => panic!("POST {path}: {e}"),
        }
    }

    /// The status answered to a body announced as 2 MiB (only its start is
    /// sent: the server refuses on the length, and a client still writing
    /// would see the connection closed under it).
    fn status_of_oversize_body(&self, path: &str) -> u16 {
        use std::io::{Read, Write};
        let mut stream =
            std::net::TcpStream::connect(self.base.trim_start_matches("http://")).unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: cpack\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{{\"query\": \"xxxx",
            2 << 20
        )
        .unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        let head = String::from_utf8_lossy(&head).to_string();
        head[9..12]
            .parse()
            .unwrap_or_else(|_| panic!("not an HTTP status line: {head}"))
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("the server never printed {needle:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn built_echo_workspace(tmp: &Path) -> (std::path::PathBuf, Vec<String>) {
    let (ws, _, passages) = echo_workspace(tmp);
    ok(&ws, &["-q", "index", "build"]);
    (ws, passages)
}

/// `cpack search --json`'s (id, score) list for one query.
fn cli_hits(ws: &Path, query: &str, k: usize) -> Vec<(String, f64)> {
    let out = json(&ok(
        ws,
        &["-q", "search", "--json", "-k", &k.to_string(), query],
    ));
    hits_of(&out["results"])
}

pub(crate) fn hits_of(hits: &Value) -> Vec<(String, f64)> {
    hits.as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["id"].as_str().unwrap().to_string(),
                h["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

pub(crate) fn assert_same_hits(served: &[(String, f64)], cli: &[(String, f64)]) {
    assert_eq!(served.len(), cli.len(), "{served:?} vs {cli:?}");
    for ((a, x), (b, y)) in served.iter().zip(cli) {
        assert_eq!(a, b, "{served:?} vs {cli:?}");
        assert!((x - y).abs() < 1e-5, "{served:?} vs {cli:?}");
    }
}

#[test]
fn serve_answers_as_cpack_search_and_embed_do() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, passages) = built_echo_workspace(tmp.path());
    let server = Server::start(&ws, &[]);

    assert_eq!(server.get("/health")["status"], "ok");
    let info = server.get("/info");
    assert_eq!(info["passages"], passages.len());
    let dim = info["dim"].as_u64().unwrap() as usize;
    assert!(dim > 0 && info["generation"].as_str().unwrap().starts_with("gen-"));
    assert!(!info["model_fingerprint"].as_str().unwrap().is_empty());

    // One query, as `cpack search` answers it.
    for query in [&passages[3], &passages[6]] {
        let served = server.post("/search", &json!({"query": query, "k": 3}));
        assert_same_hits(&hits_of(&served["hits"]), &cli_hits(&ws, query, 3));
        assert_eq!(served["generation"], info["generation"]);
    }
    // A batch: each query's own list, in order, its own k honoured.
    let batch = server.post(
        "/search",
        &json!({"queries": [&passages[0], &passages[5]], "k": 2}),
    );
    let results = batch["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_same_hits(&hits_of(&results[0]), &cli_hits(&ws, &passages[0], 2));
    assert_same_hits(&hits_of(&results[1]), &cli_hits(&ws, &passages[5], 2));
    // Echo queries find their own passage first, with its text.
    assert_eq!(results[1][0]["id"], "p5");
    assert_eq!(results[1][0]["text"], passages[5].as_str());

    // Embeddings: the same vectors as `cpack embed`, one per input.
    let input = tmp.path().join("texts.jsonl");
    std::fs::write(
        &input,
        format!(
            "{}\n{}\n",
            json!({"text": passages[1]}),
            json!({"text": passages[7]})
        ),
    )
    .unwrap();
    for (kind, flag) in [("passage", None), ("query", Some("--query"))] {
        let mut args = vec!["-q", "embed", "--input", input.to_str().unwrap()];
        args.extend(flag);
        let cli: Vec<Value> = ok(&ws, &args).lines().map(json).collect();
        let served = server.post(
            "/embed",
            &json!({"inputs": [&passages[1], &passages[7]], "kind": kind}),
        );
        let served = served.as_array().unwrap();
        assert_eq!(served.len(), 2);
        for (s, c) in served.iter().zip(&cli) {
            let (s, c) = (s.as_array().unwrap(), c["embedding"].as_array().unwrap());
            assert_eq!(s.len(), dim);
            for (a, b) in s.iter().zip(c) {
                assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-5);
            }
        }
    }
    // A single text is accepted as TEI accepts it.
    let one = server.post("/embed", &json!({"inputs": passages[2]}));
    assert_eq!(one.as_array().unwrap().len(), 1);
}

#[test]
fn malformed_requests_get_a_4xx_and_the_server_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, passages) = built_echo_workspace(tmp.path());
    let server = Server::start(&ws, &[]);

    let (code, message) = server.refused("/search", "{\"query\": ");
    assert_eq!(code, 400, "{message}");
    let (code, message) = server.refused("/search", r#"{"query": 5}"#);
    assert_eq!(code, 422, "{message}");
    let (code, message) = server.refused("/search", r#"{"qeury": "typo"}"#);
    assert_eq!(code, 422);
    assert!(message.contains("qeury"), "{message}");
    let (code, message) = server.refused("/search", r#"{"query": "a", "queries": ["b"]}"#);
    assert_eq!(code, 422);
    assert!(message.contains("either"), "{message}");
    let (code, message) = server.refused("/search", r#"{"query": "a", "k": 0}"#);
    assert_eq!(code, 422);
    assert!(message.contains("k must be"), "{message}");
    let (code, _) = server.refused("/embed", r#"{"inputs": []}"#);
    assert_eq!(code, 422);
    let (code, _) = server.refused("/embed", r#"{"inputs": ["a"], "kind": "document"}"#);
    assert_eq!(code, 422);
    let many = json!({ "inputs": vec!["a"; 257] }).to_string();
    let (code, message) = server.refused("/embed", &many);
    assert_eq!(code, 413);
    assert!(message.contains("at most 256"), "{message}");
    assert_eq!(server.status_of_oversize_body("/search"), 413);
    let (code, message) = server.refused("/nowhere", "{}");
    assert_eq!(code, 404);
    assert!(message.contains("POST /search"), "{message}");

    let served = server.post("/search", &json!({"query": passages[4], "k": 8}));
    assert_eq!(served["hits"][0]["id"], "p4");
    // k beyond the index size returns every passage once.
    assert_eq!(served["hits"].as_array().unwrap().len(), passages.len());
}

#[test]
fn a_newly_built_index_is_served_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, passages) = built_echo_workspace(tmp.path());
    let server = Server::start(&ws, &[]);
    let before = server.get("/info");
    assert_eq!(before["index"], "faiss Flat");

    // Requests keep arriving while a different index is built and published.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (base, stop, query) = (server.base.clone(), stop.clone(), passages[2].clone());
        std::thread::spawn(move || {
            let mut generations = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let answer: Value = ureq::post(&format!("{base}/search"))
                    .send_json(json!({"query": query, "k": 8}))
                    .unwrap()
                    .into_json()
                    .unwrap();
                let hits = answer["hits"].as_array().unwrap();
                // Every answer is whole: all passages, each once, its own first.
                assert_eq!(hits.len(), 8, "{answer}");
                assert_eq!(hits[0]["id"], "p2", "{answer}");
                generations.push(answer["generation"].as_str().unwrap().to_string());
            }
            generations
        })
    };
    ok(
        &ws,
        &["-q", "index", "build", "--force", "--factory", "HNSW8"],
    );
    server.wait_for("now serving index");
    let after = server.get("/info");
    assert_eq!(after["index"], "faiss HNSW8");
    assert_ne!(after["generation"], before["generation"]);
    let served = server.post("/search", &json!({"query": passages[2], "k": 3}));
    assert_eq!(served["generation"], after["generation"]);
    assert_same_hits(&hits_of(&served["hits"]), &cli_hits(&ws, &passages[2], 3));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let generations = client.join().unwrap();
    assert!(!generations.is_empty());
    // Answers move from the old generation to the new one, never back.
    let switched = generations
        .iter()
        .position(|g| g.as_str() != before["generation"].as_str().unwrap())
        .unwrap_or(generations.len());
    assert!(generations[switched..]
        .iter()
        .all(|g| g.as_str() == after["generation"].as_str().unwrap()));
}

#[test]
fn serve_refuses_a_workspace_without_an_index_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    let err = fails(&ws, &["serve", "--addr", "127.0.0.1:0"]);
    assert!(err.contains("index build"), "{err}");
    let err = fails(&ws, &["serve", "--run", "../escape"]);
    assert!(err.contains("run name"), "{err}");
}

/// The raw answer to `request` written on a new connection, read until the
/// server closes it (or `within` passes).
fn raw_exchange(base: &str, request: &str, within: std::time::Duration) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(within)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).to_string()
}

#[test]
fn slow_and_idle_clients_are_cut_off_and_connections_are_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, passages) = built_echo_workspace(tmp.path());
    let server = Server::start(&ws, &["--read-timeout", "1", "--max-connections", "4"]);
    let long = std::time::Duration::from_secs(30);
    let started = std::time::Instant::now();

    // A body announced as 100 bytes, 22 sent: a 408 with an error object,
    // and the connection closed (read_to_end returns).
    let partial = "POST /search HTTP/1.1\r\nHost: cpack\r\nContent-Type: application/json\r\n\
                   Content-Length: 100\r\n\r\n{\"query\": \"term life ";
    let answer = raw_exchange(&server.base, partial, long);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    // Half a header: the connection is closed.
    let answer = raw_exchange(&server.base, "GET /health HTTP/1.1\r\nHost: cp", long);
    assert!(!answer.contains("200 OK"), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));

    // Four connections held open use every slot: the fifth gets a 503.
    let held: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(server.base.trim_start_matches("http://")).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let answer = raw_exchange(
        &server.base,
        "GET /health HTTP/1.1\r\nHost: cpack\r\n\r\n",
        long,
    );
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("connections open"), "{answer}");
    // Connections that never send a byte are closed after the timeout,
    // still held by the client: their slots come back.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let served = server.post("/search", &json!({"query": passages[1], "k": 2}));
    assert_eq!(served["hits"][0]["id"], "p1");
    drop(held);
}

#[test]
fn a_wrong_method_gets_a_405_with_an_error_object() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _) = built_echo_workspace(tmp.path());
    let server = Server::start(&ws, &[]);
    match ureq::get(&format!("{}/search", server.base)).call() {
        Err(ureq::Error::Status(405, response)) => {
            let body: Value = response.into_json().unwrap();
            let message = body["error"].as_str().unwrap();
            assert!(
                message.contains("GET /search") && message.contains("POST /search"),
                "{body}"
            );
        }
        other => panic!("GET /search: {other:?}"),
    }
}

#[test]
fn a_generation_that_cannot_be_served_is_reported_once_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, passages) = built_echo_workspace(tmp.path());
    let server = Server::start(&ws, &[]);
    // Built for another passage length than the server encodes with.
    ok(
        &ws,
        &["-q", "index", "build", "--force", "--passage-max-len", "16"],
    );
    for _ in 0..5 {
        let served = server.post("/search", &json!({"query": passages[3], "k": 1}));
        assert_eq!(served["hits"][0]["id"], "p3");
    }
    let first = server.wait_for("cannot be served");
    assert!(first.contains("restart `cpack serve`"), "{first}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let again: Vec<String> = server
        .log
        .try_iter()
        .filter(|l| l.contains("cannot be served"))
        .collect();
    assert!(again.is_empty(), "said again: {again:?}");
}

#[test]
fn a_finished_run_without_an_index_of_its_last_checkpoint_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, passages) = built_echo_workspace(tmp.path());
    let train = [&["-q"][..], &ECHO_INCREMENTAL_RUN].concat();
    ok(&ws, &train);
    let run = ws.join(".cpack/runs/run-001");
    let current = |dir: &str| std::fs::read_to_string(run.join(dir).join("CURRENT")).ok();
    let run_index_before = current("index");
    let server = Server::start(&ws, &["--run", "run-001"]);
    let info = server.get("/info");
    // Served from an index of its own: the run's, which it resumes from, is untouched.
    assert_eq!(current("index"), run_index_before);
    assert!(current("serve-index").is_some());
    let model = info["model"].as_str().unwrap();
    assert!(model.ends_with("epoch-2"), "{info}");
    let served = server.post("/search", &json!({"query": passages[5], "k": 8}));
    assert_eq!(served["hits"].as_array().unwrap().len(), passages.len());
    drop(server);
    // The index built for it is kept: a second serve finds it up to date.
    let again = Server::start(&ws, &["--run", "run-001"]);
    assert_eq!(again.get("/info")["generation"], info["generation"]);
}
