//! `qrels/<split>.tsv` against a small corpus and query set.
#![no_main]
use cpack_data::dataset::{Qrels, TextTable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ids = |prefix: &str| (0..4).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>();
    let texts = vec!["a".to_string(); 4];
    let queries = TextTable::from_texts(ids("q"), texts.clone());
    let corpus = TextTable::from_texts(ids("d"), texts);
    let path = std::path::Path::new("fuzz.tsv");
    if let Ok(qrels) = Qrels::parse_tsv(path, data, &queries, &corpus) {
        for (query, judged) in &qrels.by_query {
            assert!(queries.position(query).is_some());
            assert!(judged.iter().all(|(doc, _)| corpus.position(doc).is_some()));
        }
    }
});
