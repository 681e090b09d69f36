//! verl-layout JSONL prompt rows and their errors.
use entrl_rl::data::parse_jsonl;

#[test]
fn reads_verl_rows() {
    let text = r#"{"data_source": "math_dapo", "prompt": [{"role": "user", "content": "What is 6*7?"}], "reward_model": {"ground_truth": "42", "style": "rule"}}

{"prompt": "2+2?", "reward_model": {"ground_truth": 4}}
"#;
    let rows = parse_jsonl(text).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].messages[0].content, "What is 6*7?");
    assert_eq!(rows[0].ground_truth, "42");
    assert_eq!(rows[1].ground_truth, "4");
    assert_eq!(rows[1].data_source, "math_dapo");
}

#[test]
fn malformed_rows_name_the_line() {
    let e = parse_jsonl("{\"prompt\": \"a\", \"reward_model\": {\"ground_truth\": \"1\"}}\n{\"prompt\": \"b\"}\n")
        .unwrap_err();
    assert!(e.starts_with("line 2: not a verl prompt row"), "{e}");
    let e = parse_jsonl(
        "{\"prompt\": [{\"role\": \"robot\", \"content\": \"x\"}], \"reward_model\": {\"ground_truth\": \"1\"}}",
    )
    .unwrap_err();
    assert!(e.contains("line 1: unknown message role \"robot\""), "{e}");
    let e = parse_jsonl("{\"prompt\": 5, \"reward_model\": {\"ground_truth\": \"1\"}}").unwrap_err();
    assert!(e.contains("prompt must be a string or a list"), "{e}");
    let e = parse_jsonl("{\"prompt\": \"x\", \"reward_model\": {\"ground_truth\": [1]}}").unwrap_err();
    assert!(e.contains("ground_truth must be a string or number"), "{e}");
    assert_eq!(parse_jsonl("\n\n").unwrap_err(), "no prompt rows");
}

#[test]
fn reads_verl_parquet() {
    // tests/data/verl_sample.parquet: written by pyarrow (snappy) in DAPO-Math-17k's column layout.
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/verl_sample.parquet");
    let rows = entrl_rl::data::read_prompts(&p).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].messages, vec![entrl_qwen3::Message::new("user", "What is 2 + 3? Answer: $Answer")]);
    assert_eq!((rows[1].data_source.as_str(), rows[1].ground_truth.as_str()), ("aime2024", "1"));
    assert_eq!(rows[2].ground_truth, "144");
    // Not parquet at all: a clear error naming the file.
    let bad = std::env::temp_dir().join(format!("entrl-bad-{}.parquet", std::process::id()));
    std::fs::write(&bad, b"not parquet").unwrap();
    let e = entrl_rl::data::read_prompts(&bad).unwrap_err();
    assert!(e.contains("not a readable parquet file") && e.contains("entrl-bad-"), "{e}");
    std::fs::remove_file(&bad).unwrap();
}
