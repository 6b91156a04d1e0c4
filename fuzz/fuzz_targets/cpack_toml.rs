//! `cpack.toml`: any text parses into the file's schema or is refused.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = cpack::config::TomlFile::parse(text);
    }
});
