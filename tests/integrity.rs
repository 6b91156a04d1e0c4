//! Bad names, damaged files and odd disks: each case gets one clear error
//! (or the right result) from the real binary and leaves nothing broken.

mod common;
use common::*;
use std::path::Path;

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn run_names_cannot_leave_the_runs_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    std::fs::write(ws.join("../data/qrels/train.tsv"), "query-id\tcorpus-id\tscore\nq0\tp0\t1\nq1\tp1\t1\n").unwrap();
    let before = tree(tmp.path());
    for bad in ["../../../escape", "/an/absolute/path", "", "..", ".", "a/b", ".hidden", "sp ace"] {
        let err = fails(&ws, &["train", "--run", bad, "--group-size", "1", "--eval-split", "none"]);
        assert!(err.contains("run name"), "{bad:?}: {err}");
        let err = fails(&ws, &["report", "--run", bad]);
        assert!(err.contains("run name"), "{bad:?}: {err}");
    }
    assert_eq!(tree(tmp.path()), before, "a refused run wrote something");
    let err = fails(&ws, &["report", "--run", "nosuch"]);
    assert!(err.contains("there is no training run") && err.contains("nosuch"), "{err}");
}

#[test]
fn an_export_onto_a_directory_fails_and_leaves_no_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    let target = tmp.path().join("some-dir");
    std::fs::create_dir(&target).unwrap();
    let before = tree(tmp.path());
    let model = tmp.path().join("model");
    let err = fails(&ws, &["export", "--onnx", model.to_str().unwrap(), target.to_str().unwrap()]);
    assert!(err.contains("some-dir"), "{err}");
    assert_eq!(tree(tmp.path()), before, "the failed export left files behind");
}
