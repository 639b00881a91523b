//! Property tests of the spec parser: seeded random mutations of every shipped spec and random
//! filter texts never make parsing panic, and a filter that parses is only ever columns
//! compared with bound literals. `LETHE_TEST_SEED` replays a failing seed.

use super::{Filter, parse_job};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

fn seed() -> u64 {
    std::env::var("LETHE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

/// Every shipped spec, as text.
fn shipped() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["jobs", "jobs/packs/llm-traces", "jobs/packs/inference"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                out.push(std::fs::read_to_string(p).unwrap());
            }
        }
    }
    out
}

/// Pieces worth splicing into a spec or a filter: quotes, separators, SQL and TOML syntax.
const PIECES: &[&str] = &[
    "'",
    "\"",
    ";",
    "--",
    "/*",
    "*/",
    "=",
    " OR ",
    " AND ",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "\\",
    "\n",
    "\r\n",
    "\u{feff}",
    "\0",
    "é",
    "0",
    "-1",
    "99999999999999999999",
    "1.5",
    "true",
    "NULL",
    "IS",
    "NOT",
    "IN",
    "SELECT",
    "DROP TABLE runs",
    "{key}",
    "{owner}",
    "../",
    "s3://",
    "[[rows]]",
    "[window]",
    "grace = ",
    "\"0d\"",
    "filter = ",
    "'x'",
    "1=1",
    "#",
];

fn mutate(rng: &mut StdRng, text: &str) -> String {
    let mut s: Vec<char> = text.chars().collect();
    for _ in 0..rng.random_range(1..4) {
        let at = rng.random_range(0..=s.len());
        match rng.random_range(0..3) {
            0 => {
                let end = (at + rng.random_range(1..8)).min(s.len());
                s.drain(at..end);
            }
            1 => {
                let piece = PIECES[rng.random_range(0..PIECES.len())];
                s.splice(at..at, piece.chars());
            }
            _ => {
                if at < s.len() {
                    s[at] = char::from(rng.random_range(0x20u8..0x7f));
                }
            }
        }
    }
    s.into_iter().collect()
}

#[test]
fn mutated_specs_never_make_the_parser_panic() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let specs = shipped();
    assert!(specs.len() >= 9, "the shipped specs were not found");
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..3_000 {
        let text = mutate(&mut rng, &specs[i % specs.len()]);
        let parsed = std::panic::catch_unwind(|| parse_job(&text, Path::new("x.toml")).is_ok());
        match parsed {
            Ok(true) => accepted += 1,
            Ok(false) => refused += 1,
            Err(_) => panic!("seed {seed}: parsing panicked on:\n{text}"),
        }
    }
    // Both outcomes happen, so the mutations neither all break nor all miss the specs.
    assert!(
        accepted > 0 && refused > 0,
        "seed {seed}: {accepted} accepted, {refused} refused"
    );
}

#[test]
fn random_filters_never_panic_and_accepted_ones_are_columns_against_literals() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut accepted = 0;
    for _ in 0..20_000 {
        let mut text = String::new();
        for _ in 0..rng.random_range(1..8) {
            text.push_str(PIECES[rng.random_range(0..PIECES.len())]);
            if rng.random_bool(0.3) {
                text.push_str(["status", "id", "a_b", " "][rng.random_range(0..4)]);
            }
        }
        let parsed = std::panic::catch_unwind(|| Filter::parse(&text));
        let Ok(result) = parsed else {
            panic!("seed {seed}: the filter parser panicked on {text:?}");
        };
        if let Ok(f) = result {
            accepted += 1;
            // Whatever was accepted names only plain identifiers, and every value is a
            // literal to bind: nothing of the text reaches SQL unquoted.
            for c in f.columns() {
                assert!(
                    c.as_str()
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_'),
                    "seed {seed}: {text:?} names column {c}"
                );
            }
        }
    }
    assert!(
        accepted > 0,
        "seed {seed}: no random filter was valid, so none was checked"
    );
}
