//! `corpus.jsonl` / `queries.jsonl`: any bytes give a table or an error naming a line.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.jsonl");
    match cpack_data::dataset::TextTable::parse_jsonl(path, data) {
        Ok(table) => assert_eq!(table.ids.len(), table.texts.len()),
        Err(e) => assert!(e.to_string().starts_with("fuzz.jsonl")),
    }
});
