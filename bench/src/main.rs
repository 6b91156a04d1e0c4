fn main() {
    let model_dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let model = cpack_index::model::ModelDir::open(&model_dir).unwrap();
    let settings = cpack_index::EncoderSettings { passage_max_len: 128, ..cpack_index::EncoderSettings::declared_by(&model) };
    let backend = cpack_index::candle_backend::CandleBackend::load(&model, settings.pooling, settings.normalize).unwrap();
    let enc = cpack_index::Encoder::new(&model, settings, Box::new(backend)).unwrap();
    let text = "insurance coverage policy premium ".repeat(40);
    let texts: Vec<&str> = vec![text.as_str(); 32];
    for _ in 0..4 {
        let t = std::time::Instant::now();
        let mut tok = 0;
        enc.encode(&texts, cpack_index::TextKind::Passage, &mut |_, n| tok += n).unwrap();
        let s = t.elapsed().as_secs_f64();
        println!("{tok} tokens in {s:.3}s = {:.0} tok/s", tok as f64 / s);
    }
}
