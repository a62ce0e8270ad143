//! What counting tokens costs, against `tiktoken-rs` (the tokenizer the gateway used before its
//! vocabulary became static tables): microseconds per text of each kind, and the memory each
//! takes once ready. Both count `o200k_base`; the bench checks that they agree.
//!
//! `cargo run --release -p proxima --example tokenizer_bench [WORD]` (or `bench/tokenizer.sh`);
//! prints Markdown. With a word, only the texts whose name has it are timed (to profile one).
#![allow(clippy::expect_used)]

use tokio::time::Instant;

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Median microseconds of `runs` timed calls of `f`, after a tenth as many untimed.
fn median_us(runs: usize, mut f: impl FnMut() -> u64) -> f64 {
    for _ in 0..runs / 10 {
        std::hint::black_box(f());
    }
    let mut samples: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[runs / 2]
}

fn main() {
    let texts = [
        (
            "English prose and code (README)",
            include_str!("../../../README.md").to_owned(),
        ),
        ("Rust source", include_str!("../src/pipeline.rs").to_owned()),
        (
            "German, Russian, Chinese, Japanese, Korean, Arabic",
            "Grüße aus Köln, wir sehen uns morgen früh am Bahnhof. Привет, как дела? Сегодня \
             хорошая погода. 北京欢迎你，今天天气很好。東京都の天気は晴れです。서울특별시에 \
             오신 것을 환영합니다. مرحبا بالعالم، كيف حالك اليوم؟\n"
                .repeat(40),
        ),
        ("one 30 KB run of letters", "abcdefghij".repeat(3_000)),
    ];

    let before = rss_kib();
    let ready = Instant::now();
    assert!(proxima::tokenizer::count_once("ready") > 0);
    let ours_ready_ms = ready.elapsed().as_secs_f64() * 1e3;
    let ours_kib = rss_kib() - before;
    let before = rss_kib();
    let ready = Instant::now();
    let reference = tiktoken_rs::o200k_base().expect("o200k_base");
    let reference_ready_ms = ready.elapsed().as_secs_f64() * 1e3;
    let reference_kib = rss_kib() - before;

    println!("| text | bytes | tokens | Proxima µs | tiktoken-rs µs | Proxima ns/byte |");
    println!("|---|---:|---:|---:|---:|---:|");
    let only = std::env::args().nth(1).unwrap_or_default();
    for (name, text) in texts.iter().filter(|(name, _)| name.contains(&only)) {
        let ours = proxima::tokenizer::count_once(text);
        let theirs = reference.encode_ordinary(text).len() as u64;
        assert_eq!(ours, theirs, "the two disagree on {name}");
        let runs = (2_000_000 / text.len()).clamp(20, 2_000);
        let ours_us = median_us(runs, || proxima::tokenizer::count_once(text));
        let theirs_us = median_us(runs, || reference.encode_ordinary(text).len() as u64);
        println!(
            "| {name} | {} | {ours} | {ours_us:.1} | {theirs_us:.1} | {:.1} |",
            text.len(),
            ours_us * 1e3 / text.len() as f64
        );
    }
    println!();
    println!("| | ready in | resident memory it added |");
    println!("|---|---:|---:|");
    println!(
        "| Proxima (static tables; the pattern compiled) | {ours_ready_ms:.1} ms | {:.1} MiB |",
        ours_kib as f64 / 1024.0
    );
    println!(
        "| tiktoken-rs (`o200k_base()`) | {reference_ready_ms:.1} ms | {:.1} MiB |",
        reference_kib as f64 / 1024.0
    );
}
