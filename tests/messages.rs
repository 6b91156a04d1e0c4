//! What a user sees on stderr when it is not a terminal (CI logs, `nohup`):
//! long stages print plain progress lines, and everyday snags get plain words.

use crate::common::*;

/// Runs `cpack args…` with stderr captured (a pipe, not a terminal); returns stderr.
fn stderr_of(ws: &std::path::Path, args: &[&str]) -> String {
    let out = cpack(ws).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "cpack {args:?} failed: {stderr}");
    stderr
}

#[test]
fn long_stages_print_progress_lines_when_stderr_is_not_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let data = shared("data/cmrc2018");
    let model = tiny_model_for(&data, &tmp.path().join("model"));
    let ws = tmp.path().join("ws");
    init_workspace(&ws, &data, &model, &[]);
    let stderr = stderr_of(
        &ws,
        &[
            "--progress-every",
            "0",
            "index",
            "build",
            "--chunk-rows",
            "256",
        ],
    );
    assert!(stderr.contains("encoding passages: 1104 to do"), "{stderr}");
    let running: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("encoding passages: ") && l.contains(" eta "))
        .collect();
    assert!(!running.is_empty(), "no running line: {stderr}");
    assert!(
        running[0].contains("/1104 (") && running[0].contains("/s"),
        "{}",
        running[0]
    );
    assert!(
        stderr.contains("encoding passages: done 1104 in "),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\r') && !stderr.contains("\u{1b}["),
        "terminal control codes in a log: {stderr:?}"
    );

    // The default interval keeps a short job to its start and end lines.
    let stderr = stderr_of(&ws, &["eval", "--split", "test"]);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("encoding queries"))
        .collect();
    assert!(lines.len() <= 3, "{stderr}");
    // --quiet prints nothing at all.
    assert_eq!(stderr_of(&ws, &["-q", "eval", "--split", "test"]), "");
}

#[test]
fn a_stage_that_fails_is_not_reported_done() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, data, _) = echo_workspace(tmp.path());
    std::fs::write(data.join("corpus.jsonl"), "{\"id\": 1}\n").unwrap();
    let err = fails(&ws, &["index", "build"]);
    assert!(err.contains("loading corpus"), "{err}");
    assert!(!err.contains("loading corpus: done"), "{err}");
    assert!(err.lines().last().unwrap().starts_with("error: "), "{err}");
}

#[test]
fn a_store_held_by_another_process_is_named_with_its_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    ok(&ws, &["index", "build"]);
    // This test process holds the lock, as a running `cpack train` would.
    let lock_path = ws.join(".cpack/negatives.lock");
    std::fs::write(&lock_path, "4242").unwrap();
    let held = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&lock_path)
        .unwrap();
    held.try_lock().unwrap();
    let err = fails(&ws, &["mine", "stats"]);
    drop(held);
    assert!(
        err.contains("the negatives store is in use by another cpack process, pid 4242"),
        "{err}"
    );
    assert!(!err.contains("WouldBlock"), "{err}");
}

#[test]
fn a_device_this_build_cannot_use_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    let err = fails(&ws, &["index", "build", "--device", "cuda:1"]);
    assert!(
        err.contains("cannot compute on cuda:1") && err.contains("scripts/build-cuda.sh"),
        "{err}"
    );
    assert!(
        !ws.join(".cpack/index/CURRENT").exists(),
        "nothing was built"
    );
    let usage = cpack(&ws)
        .args(["index", "build", "--device", "tpu"])
        .output()
        .unwrap();
    assert_eq!(
        usage.status.code(),
        Some(2),
        "a bad flag value is a usage error"
    );
    let err = String::from_utf8_lossy(&usage.stderr);
    assert!(err.contains("expected cpu, cuda or cuda:N"), "{err}");
    ok(&ws, &["index", "build"]);
    let err = fails(&ws, &["train", "--run", "on-gpu", "--device", "cuda"]);
    assert!(err.contains("cannot compute on cuda:0"), "{err}");
    assert!(
        !ws.join(".cpack/runs/on-gpu").exists(),
        "no run folder for a run that cannot start"
    );
    let toml = std::fs::read_to_string(ws.join("cpack.toml")).unwrap();
    let toml = toml.replacen("[encode]\n", "[encode]\ndevice = \"gpu\"\n", 1);
    std::fs::write(ws.join("cpack.toml"), toml).unwrap();
    let err = fails(&ws, &["index", "build"]);
    assert!(
        err.contains("cpack.toml") && err.contains("expected cpu, cuda or cuda:N"),
        "{err}"
    );
}

#[test]
fn an_index_opens_on_the_cpu_and_asks_for_a_cuda_build_to_search_on_a_gpu() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    ok(&ws, &["index", "build"]);
    let on_cpu = ok(&ws, &["search", "--json", "--index-device", "cpu", "hello"]);
    assert!(json(&on_cpu).is_array() || json(&on_cpu).is_object());
    let err = fails(&ws, &["search", "--index-device", "gpu", "hello"]);
    assert!(
        err.contains("index.device") && err.contains("scripts/build-cuda.sh"),
        "{err}"
    );
    let usage = cpack(&ws)
        .args(["search", "--index-device", "cuda", "hello"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("expected cpu, gpu or gpu:N"));
}

#[test]
fn quiet_commands_write_nothing_on_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, data, _) = echo_workspace(tmp.path());
    let model = ws.parent().unwrap().join("model");
    let init = |dir: &std::path::Path, quiet: bool| {
        let mut cmd = cpack(dir);
        if quiet {
            cmd.arg("-q");
        }
        let out = cmd
            .args(["init", "--data", data.to_str().unwrap(), "--model"])
            .arg(&model)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let loud = tmp.path().join("loud");
    let quiet = tmp.path().join("quiet");
    for dir in [&loud, &quiet] {
        std::fs::create_dir_all(dir).unwrap();
    }
    assert!(init(&loud, false).contains("wrote"));
    assert_eq!(init(&quiet, true), "");
    for args in [
        &["-q", "index", "build"][..],
        &[
            "-q", "mine", "--split", "test", "--topk", "5", "--skip", "0",
        ],
        &[
            "-q",
            "mine",
            "export",
            "--format",
            "ids",
            "--output",
            "round.jsonl",
        ],
    ] {
        let out = cpack(&quiet).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "cpack {args:?}: {stderr}");
        assert_eq!(stderr, "", "cpack {args:?}");
    }
    assert!(quiet.join("round.jsonl").exists());
}

#[test]
fn version_names_the_features_and_the_matrix_kernels() {
    let tmp = tempfile::tempdir().unwrap();
    let text = ok(tmp.path(), &["--version"]);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(concat!("cpack ", env!("CARGO_PKG_VERSION")))
    );
    let features = lines.next().unwrap();
    assert!(features.starts_with("features: "), "{text}");
    assert_eq!(
        features.contains("faiss"),
        cfg!(feature = "faiss"),
        "{text}"
    );
    assert_eq!(features.contains("ort"), cfg!(feature = "ort"), "{text}");
    let kernel = lines.next().unwrap();
    assert_eq!(
        kernel,
        format!("matrix kernel: {}", cpack_model::matmul::kernel())
    );
    assert_eq!(
        lines.next().unwrap(),
        format!(
            "bf16 products: {}",
            cpack_model::matmul::Bf16Kernel::detect().name()
        )
    );
}
