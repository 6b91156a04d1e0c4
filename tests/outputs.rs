//! Where a command's output goes: every output path (`mine export -o`,
//! `embed -o`, `report --html/--png`, `export OUT.onnx`) passes through one
//! writer, so symlinks, devices, FIFOs and directories are treated alike by
//! all of them; a closed pipe ends any printing command quietly.

use crate::common::*;
use std::io::Read;
use std::os::unix::fs::{symlink, FileTypeExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The echo workspace with an index and one mined round.
fn mined_workspace(tmp: &Path) -> PathBuf {
    let (ws, _, _) = echo_workspace(tmp);
    ok(&ws, &["index", "build"]);
    ok(
        &ws,
        &["mine", "--split", "test", "--topk", "6", "--skip", "0"],
    );
    ws
}

/// The echo workspace with a finished one-epoch run.
fn trained_workspace(tmp: &Path) -> PathBuf {
    let (ws, _, _) = echo_workspace(tmp);
    ok(
        &ws,
        &[
            "train",
            "--split",
            "test",
            "--eval-split",
            "none",
            "--topk",
            "6",
            "--skip",
            "0",
            "--group-size",
            "2",
            "--train-batch-size",
            "4",
        ],
    );
    ws
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .unwrap()
        .file_type()
        .is_symlink()
}

/// Each command that writes a file the user names, as arguments with the
/// output path last (`OUT` is replaced).
fn output_commands(tmp: &Path) -> Vec<(PathBuf, Vec<String>)> {
    let mined = mined_workspace(&tmp.join("mined"));
    let trained = trained_workspace(&tmp.join("trained"));
    let input = tmp.join("texts.jsonl");
    std::fs::write(&input, "{\"text\": \"car insurance follows the car\"}\n").unwrap();
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let input = input.to_str().unwrap();
    vec![
        (mined.clone(), args(&["mine", "export", "-o", "OUT"])),
        (mined, args(&["embed", "-i", input, "-o", "OUT"])),
        (trained.clone(), args(&["report", "--html", "OUT"])),
        (trained, args(&["report", "--png", "OUT"])),
    ]
}

fn with_output(args: &[String], out: &Path) -> Vec<String> {
    args.iter()
        .map(|a| match a.as_str() {
            "OUT" => out.to_str().unwrap().to_string(),
            _ => a.clone(),
        })
        .collect()
}

fn run(ws: &Path, args: &[String]) -> std::process::Output {
    cpack(ws).args(args).output().unwrap()
}

#[test]
fn outputs_follow_symlinks_write_through_devices_and_refuse_directories() {
    let tmp = tempfile::tempdir().unwrap();
    for (ws, args) in output_commands(tmp.path()) {
        let what = args.join(" ");
        // A symlink stays a link; its target gets the output.
        let target = tmp.path().join("target.out");
        std::fs::write(&target, "old").unwrap();
        let link = tmp.path().join("link.out");
        let _ = std::fs::remove_file(&link);
        symlink(&target, &link).unwrap();
        let out = run(&ws, &with_output(&args, &link));
        assert!(out.status.success(), "{what}: {out:?}");
        assert!(is_symlink(&link), "{what} replaced the symlink");
        let written = std::fs::read(&target).unwrap();
        assert!(written.len() > 3, "{what} left the link's target as it was");

        // A link to a full device: the write fails, nothing is replaced.
        let full = tmp.path().join("full.out");
        let _ = std::fs::remove_file(&full);
        symlink("/dev/full", &full).unwrap();
        let out = run(&ws, &with_output(&args, &full));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what} on /dev/full: {stderr}");
        assert!(stderr.contains("No space left"), "{what}: {stderr}");
        assert!(is_symlink(&full), "{what} replaced the link to /dev/full");

        // A FIFO is written through to its reader.
        let fifo = tmp.path().join("pipe.out");
        let _ = std::fs::remove_file(&fifo);
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let reader_path = fifo.clone();
        let reader = std::thread::spawn(move || std::fs::read(reader_path).unwrap());
        let out = run(&ws, &with_output(&args, &fifo));
        assert!(out.status.success(), "{what} into a FIFO: {out:?}");
        assert!(
            !reader.join().unwrap().is_empty(),
            "{what}: the FIFO read nothing"
        );
        let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(kind.is_fifo(), "{what} replaced the FIFO");

        // A directory is refused with one line naming it.
        let dir = tmp.path().join("a-folder");
        std::fs::create_dir_all(&dir).unwrap();
        let err = fails(&ws, &refs(&with_output(&args, &dir)));
        assert!(
            err.contains("a-folder") && err.contains("is a directory"),
            "{what}: {err}"
        );
    }
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn a_character_device_stays_a_device() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = mined_workspace(tmp.path());
    let node = tmp.path().join("null-device");
    // Only root may make device nodes; elsewhere a link to /dev/null stands in.
    let made = std::process::Command::new("mknod")
        .args([node.to_str().unwrap(), "c", "1", "3"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        symlink("/dev/null", &node).unwrap();
    }
    ok(&ws, &["mine", "export", "-o", node.to_str().unwrap()]);
    let kind = std::fs::metadata(&node).unwrap().file_type();
    assert!(kind.is_char_device(), "the device node became {kind:?}");
}

#[test]
fn dev_stdout_and_dash_write_to_the_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = mined_workspace(tmp.path());
    let dash = ok(&ws, &["mine", "export", "-o", "-"]);
    assert!(!dash.is_empty());
    let through = ok(&ws, &["mine", "export", "-o", "/dev/stdout"]);
    assert_eq!(through, dash, "-o /dev/stdout wrote elsewhere");
    let kind = std::fs::symlink_metadata("/dev/stdout")
        .unwrap()
        .file_type();
    assert!(!kind.is_file(), "/dev/stdout became a regular file");
}

/// Runs `cpack args…` with its standard output a pipe whose reader is
/// already gone; returns (status code, stderr).
fn into_closed_pipe(ws: &Path, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = cpack(ws)
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap().code(), stderr)
}

#[test]
fn a_closed_pipe_ends_every_printing_command_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = trained_workspace(tmp.path());
    let commands: [&[&str]; 8] = [
        &["report"],
        &["report", "--json"],
        &["mine", "stats"],
        &["mine", "export"],
        &["search", "car insurance", "-k", "5", "--json"],
        &["search", "car insurance", "-k", "5"],
        &["index", "info"],
        &["eval", "--split", "test"],
    ];
    for args in commands {
        let (code, stderr) = into_closed_pipe(&ws, args);
        assert_eq!(code, Some(0), "cpack {args:?} into a closed pipe: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "cpack {args:?}: {stderr}"
        );
    }
}

#[test]
fn a_closed_pipe_on_stderr_too_neither_panics_nor_stops_the_work() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    // `cpack index build 2>&1 | head -0`: progress lines meet a closed pipe.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = cpack(&ws)
        .args(["--progress-every", "0", "index", "build"])
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        ws.join(".cpack/index/CURRENT").exists(),
        "the build stopped"
    );
}
