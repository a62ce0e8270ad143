//! What PII masking costs a request: finding and masking every kind in an ordinary prompt
//! without personal data (about 2 KB and 20 KB of prose with numbers, dates, versions, prices,
//! code), in one with several values, and restoring an answer whole and streamed in small
//! pieces. The same code the gateway runs in its prepare phase and its unmasking stage.
//!
//! `cargo run --release -p proxima --example pii_bench` (or `bench/pii.sh`); prints Markdown.
#![allow(clippy::expect_used)]

use proxima::config::PiiEntity;
use proxima::pii::detect::{self, Entities};
use proxima::pii::mask::{Action, Masker};
use tokio::time::Instant;

/// Ordinary text: what prompts are made of, with the numbers that must not be taken for
/// personal data.
const PROSE: &str = "The release v2.10.3 shipped on 2024-05-06 at 12:30:45 UTC, fixing the \
    parser regression reported in issue #4821 (see ORD-2024-555-1234 for the customer's order). \
    The new plan costs $1,299.99 a year, or 1.234,56 EUR, and 3 of the 12 teams moved to it \
    within 48 hours. In Python, `for i in range(10): print(i * 3.14159)` still runs in 0.2 ms; \
    the UUID 123e4567-e89b-12d3-a456-426614174000 names the job. Revenue grew 17% to 4.2 \
    million, with 1717171717 as the snapshot's timestamp and 5 x 1000 mg as the dose. \
    Meet at 10:30 on 12/05/2024 in room 12, then review the API key rotation policy and the \
    password rules with the security team before the quarterly audit.\n";

/// Values of every kind, to be found among ordinary words.
const WITH_PII: &str = "Customer Ann Lee (ann.lee@example.com, +44 20 7946 0958) asked us to \
    refund card 4111 1111 1111 1111 to IBAN DE89 3704 0044 0532 0130 00. Her SSN is \
    123-45-6789; the request came from 192.168.10.24 and 2001:db8:85a3::8a2e:370:7334. The \
    leaked key sk-proj-4fT9xQ2mN8vB1kL7pR3sZ6wY0 was revoked; call (415) 555-2671.\n";

fn prose(bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + PROSE.len());
    while text.len() < bytes {
        text.push_str(PROSE);
    }
    text
}

/// Median and 99th percentile in microseconds of `runs` timed calls of `f`.
fn time(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..runs / 10 {
        f();
    }
    let mut samples: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    (samples[runs / 2], samples[runs * 99 / 100])
}

fn row(case: &str, bytes: usize, (p50, p99): (f64, f64)) {
    println!("| {case} | {bytes} | {p50:.1} | {p99:.1} |");
}

fn main() {
    let all = Entities::of(&PiiEntity::ALL);
    println!("| case | bytes | p50 µs | p99 µs |");
    println!("|---|---|---|---|");
    for (label, bytes, runs) in [("2 KB", 2048, 5000), ("20 KB", 20 * 1024, 1000)] {
        let mut text = prose(bytes);
        assert!(
            detect::find(&text, all).is_empty(),
            "ordinary text has no PII"
        );
        row(
            &format!("ordinary prompt, {label}, mask (nothing found)"),
            text.len(),
            time(runs, || {
                let mut masker = Masker::new(all, Action::Mask);
                masker.text(&mut text);
                assert!(masker.into_restore().is_none());
            }),
        );
    }
    let mut with_pii = prose(1536);
    with_pii.push_str(WITH_PII);
    let found = detect::find(&with_pii, all).len();
    let (mut masked, mut restore) = (with_pii.clone(), None);
    row(
        &format!("prompt with {found} values, ~2 KB, mask"),
        with_pii.len(),
        time(5000, || {
            let mut text = with_pii.clone();
            let mut masker = Masker::new(all, Action::Mask);
            masker.text(&mut text);
            restore = masker.into_restore();
            masked = text;
        }),
    );
    let restore = restore.expect("values were masked");
    row(
        &format!("answer with {found} placeholders, ~2 KB, restore whole"),
        masked.len(),
        time(5000, || {
            let back = restore.text(&masked, false);
            assert_eq!(back.len(), with_pii.len());
        }),
    );
    let pieces: Vec<String> = masked
        .chars()
        .collect::<Vec<_>>()
        .chunks(4)
        .map(|c| c.iter().collect())
        .collect();
    row(
        &format!(
            "the same answer streamed in {} pieces of 4 characters, restore",
            pieces.len()
        ),
        masked.len(),
        time(2000, || {
            let mut held = String::new();
            let mut out = 0;
            for piece in &pieces {
                out += restore.stream(&mut held, piece, false).len();
            }
            out += restore.release(&mut held, false).len();
            assert_eq!(out, with_pii.len());
        }),
    );
}
