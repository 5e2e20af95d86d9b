//! Token counting: `tiktoken-rs` (a port of OpenAI's tiktoken) against `bpe-openai`
//! (exact, linear-time BPE) and sluice's own compact encoder (`sluice::tokens::Bpe`,
//! and `Encoding::count`, the same with sluice's per-thread table of short piece
//! counts, warm after the first pass), for the `o200k_base` and `cl100k_base`
//! encodings.
//!
//! Inputs:
//! - `repo-100k`: ~100 KiB of this repository's own files (README.md,
//!   config/sluice.toml, then src/**/*.rs in path order), read when the bench starts;
//! - `readme`: README.md alone, English prose with some markdown;
//! - `no-whitespace-1m`: 1 MiB of pseudo-random ASCII letters and digits (fixed seed);
//! - `cjk-char-1m`: '中' repeated to ~1 MiB (one pre-tokenizer piece of 1 MiB);
//! - `digits-1m`: 1 MiB of pseudo-random digits;
//! - `letter-{64k,256k,1m}`: 'a' repeated, the linearity check (one piece each).
//!
//! Before an input is benchmarked, both crates count it once (outside criterion's
//! timing) and the counts must be equal; the count and the one-shot time of each
//! crate are printed. A crate whose one-shot count took longer than
//! `ONE_SHOT_LIMIT` is not sampled by criterion for that input: its one-shot time is
//! the figure. (`tiktoken-rs` is superlinear on one long piece: 0.12 merges pieces of
//! 100+ bytes with a heap, O(n log n), ~0.4 s for `letter-1m` on a 2-vCPU EPYC, so
//! today every case is sampled; a quadratic merge would not be.)
//!
//!     cargo bench --bench tokens
//!     cargo bench --bench tokens -- letter     # one family of inputs
//!
//! (The exactness pass runs for every input even when criterion filters.)

#![expect(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "benchmark harness"
)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use sluice::tokens::Encoding;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Target size of the repository-text input.
const REPO_TEXT_BYTES: usize = 100 * KIB;

/// One-shot counts slower than this are not sampled by criterion.
const ONE_SHOT_LIMIT: Duration = Duration::from_millis(1500);

/// A deterministic pseudo-random sequence (64-bit LCG), so the adversarial inputs
/// are the same bytes on every run and machine.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// `len` bytes drawn uniformly from `alphabet` (ASCII).
    fn string(&mut self, alphabet: &[u8], len: usize) -> String {
        let bytes = (0..len)
            .map(|_| alphabet[(self.next() as usize) % alphabet.len()])
            .collect();
        String::from_utf8(bytes).unwrap()
    }
}

/// Every `.rs` file under `dir`, recursively, in path order.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// README.md, config/sluice.toml, then the sources, cut to `REPO_TEXT_BYTES` on a
/// char boundary.
fn repo_text(root: &Path) -> String {
    let mut files = vec![root.join("README.md"), root.join("config/sluice.toml")];
    rust_files(&root.join("src"), &mut files);
    let mut text = String::new();
    for file in files {
        if text.len() >= REPO_TEXT_BYTES {
            break;
        }
        text.push_str(&std::fs::read_to_string(&file).unwrap());
    }
    let mut end = REPO_TEXT_BYTES.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// `c` repeated to at most `bytes` bytes.
fn repeated(c: char, bytes: usize) -> String {
    std::iter::repeat_n(c, bytes / c.len_utf8()).collect()
}

/// The benchmark inputs, by name.
fn inputs() -> Vec<(&'static str, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut rng = Lcg(0x0123_4567_89AB_CDEF);
    let alnum = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    vec![
        ("repo-100k", repo_text(root)),
        ("readme", readme),
        ("no-whitespace-1m", rng.string(alnum, MIB)),
        ("cjk-char-1m", repeated('中', MIB)),
        ("digits-1m", rng.string(b"0123456789", MIB)),
        ("letter-64k", repeated('a', 64 * KIB)),
        ("letter-256k", repeated('a', 256 * KIB)),
        ("letter-1m", repeated('a', MIB)),
    ]
}

/// Counts `text` once with `count`, returning the count and the time it took.
fn one_shot(count: impl Fn(&str) -> usize, text: &str) -> (usize, Duration) {
    let start = Instant::now();
    let n = count(black_box(text));
    (n, start.elapsed())
}

fn mib_per_s(text: &str, elapsed: Duration) -> f64 {
    text.len() as f64 / MIB as f64 / elapsed.as_secs_f64()
}

fn tokens(c: &mut Criterion) {
    let inputs = inputs();
    let encodings = [
        (
            "o200k_base",
            tiktoken_rs::o200k_base().unwrap(),
            bpe_openai::o200k_base(),
            Encoding::O200kBase,
        ),
        (
            "cl100k_base",
            tiktoken_rs::cl100k_base().unwrap(),
            bpe_openai::cl100k_base(),
            Encoding::Cl100kBase,
        ),
    ];
    // Build the lazily initialised bpe-openai tables before anything is timed.
    for (_, _, bpe, sluice) in &encodings {
        black_box(bpe.count("warm up"));
        black_box(sluice.count("warm up"));
    }

    for (encoding, tiktoken, bpe, sluice) in &encodings {
        let tiktoken_count = |text: &str| tiktoken.encode_ordinary(text).len();
        let bpe_count = |text: &str| bpe.count(text);
        let sluice_count = |text: &str| sluice.tokenizer().count(text);
        let sluice_cached = |text: &str| sluice.count(text) as usize;
        for (name, text) in &inputs {
            let text = text.as_str();
            let (tiktoken_n, tiktoken_once) = one_shot(tiktoken_count, text);
            let (bpe_n, bpe_once) = one_shot(bpe_count, text);
            println!(
                "exactness {encoding}/{name}: {} bytes, tiktoken-rs {tiktoken_n} tokens \
                 (one shot {tiktoken_once:.2?}), bpe-openai {bpe_n} tokens (one shot {bpe_once:.2?})",
                text.len(),
            );
            assert_eq!(
                tiktoken_n, bpe_n,
                "{encoding}/{name}: tiktoken-rs and bpe-openai disagree"
            );
            let (sluice_n, sluice_once) = one_shot(sluice_count, text);
            println!(
                "exactness {encoding}/{name}: sluice {sluice_n} tokens (one shot {sluice_once:.2?})"
            );
            assert_eq!(tiktoken_n, sluice_n, "{encoding}/{name}: sluice disagrees");

            let mut group = c.benchmark_group(format!("{encoding}/{name}"));
            group.throughput(Throughput::Bytes(text.len() as u64));
            if text.len() >= 64 * KIB {
                group
                    .sample_size(10)
                    .sampling_mode(SamplingMode::Flat)
                    .warm_up_time(Duration::from_millis(500))
                    .measurement_time(Duration::from_secs(2));
            } else {
                group
                    .warm_up_time(Duration::from_secs(1))
                    .measurement_time(Duration::from_secs(3));
            }
            if tiktoken_once <= ONE_SHOT_LIMIT {
                group.bench_function("tiktoken-rs", |b| {
                    b.iter(|| tiktoken_count(black_box(text)))
                });
            } else {
                println!(
                    "skipped {encoding}/{name}/tiktoken-rs: one shot {tiktoken_once:.2?} > \
                     {ONE_SHOT_LIMIT:?}, {:.2} MiB/s",
                    mib_per_s(text, tiktoken_once),
                );
            }
            if bpe_once <= ONE_SHOT_LIMIT {
                group.bench_function("bpe-openai", |b| b.iter(|| bpe_count(black_box(text))));
            } else {
                println!(
                    "skipped {encoding}/{name}/bpe-openai: one shot {bpe_once:.2?} > \
                     {ONE_SHOT_LIMIT:?}, {:.2} MiB/s",
                    mib_per_s(text, bpe_once),
                );
            }
            group.bench_function("sluice", |b| b.iter(|| sluice_count(black_box(text))));
            group.bench_function("sluice-piece-table", |b| {
                b.iter(|| sluice_cached(black_box(text)))
            });
            group.finish();
        }
    }
}

criterion_group!(benches, tokens);
criterion_main!(benches);
