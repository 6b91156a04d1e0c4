//! The `cpack` binary: everything is in the `cpack` library (`lib.rs`).

fn main() -> std::process::ExitCode {
    cpack::main()
}
