//! Tests of the encoder against tiktoken's reference counts.

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on a malformed fixture"
)]

use std::sync::LazyLock;

use super::merge::{MinTree, Node};
use super::*;

static O200K: LazyLock<Bpe> = LazyLock::new(Bpe::o200k_base);
static CL100K: LazyLock<Bpe> = LazyLock::new(Bpe::cl100k_base);

const REFERENCE: &str = include_str!("../../../tests/fixtures/tokens/reference.json");

/// tiktoken's `byte_pair_merge`, as written there (a `Vec` of parts and
/// `remove`), for any length: the reference for both merge paths.
fn reference_count(bpe: &Bpe, piece: &[u8]) -> usize {
    if piece.len() < 2 {
        return piece.len();
    }
    if bpe.rank(piece).is_some() {
        return 1;
    }
    let rank = |bytes: &[u8]| bpe.rank(bytes).unwrap_or(NO_RANK);
    let mut parts: Vec<(usize, u32)> = (0..piece.len() - 1)
        .map(|i| (i, rank(&piece[i..i + 2])))
        .collect();
    parts.push((piece.len() - 1, NO_RANK));
    parts.push((piece.len(), NO_RANK));
    let get_rank = |parts: &Vec<(usize, u32)>, i: usize| {
        if i + 3 < parts.len() {
            rank(&piece[parts[i].0..parts[i + 3].0])
        } else {
            NO_RANK
        }
    };
    // The leftmost pair of the lowest rank, if any is a token.
    while let Some((i, _)) = parts[..parts.len() - 1]
        .iter()
        .enumerate()
        .filter(|&(_, &(_, r))| r != NO_RANK)
        .min_by_key(|&(i, &(_, r))| (r, i))
    {
        if i > 0 {
            parts[i - 1].1 = get_rank(&parts, i - 1);
        }
        parts[i].1 = get_rank(&parts, i);
        parts.remove(i + 1);
    }
    parts.len() - 1
}

/// A deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random text from characters that exercise every pattern.
fn random_text(rng: &mut Rng, len: usize) -> String {
    const PARTS: &[&str] = &[
        " ",
        "  ",
        "\n",
        "\r\n",
        "\t",
        "\u{a0}",
        "\u{3000}",
        "\u{2028}",
        "a",
        "e",
        "T",
        "HTTP",
        "Server",
        "'s",
        "'T",
        "'LL",
        "'re",
        "'",
        "ſ",
        "1",
        "23",
        "4567",
        "٣",
        "!",
        "...",
        "/",
        "//",
        "<|endoftext|>",
        "中",
        "文字",
        "한국",
        "🚀",
        "👍🏽",
        "\u{301}",
        "é",
        "ß",
        "Ж",
        "λ",
        "x",
        "_",
        "-",
        "=",
        "\u{200d}",
        "\u{feff}",
        "\0",
        "\u{7f}",
        "ǅ",
        "ʰ",
        "Ⅻ",
    ];
    let mut text = String::new();
    while text.len() < len {
        text.push_str(PARTS[rng.below(PARTS.len())]);
    }
    text
}

#[test]
fn real_encodings_load() {
    let o200k = Bpe::load(O200K_BASE_GZ, &O200K_BASE_PATTERNS);
    let cl100k = Bpe::load(CL100K_BASE_GZ, &CL100K_BASE_PATTERNS);
    assert_eq!(o200k.as_ref().map(Bpe::len), Ok(199_998));
    assert_eq!(cl100k.as_ref().map(Bpe::len), Ok(100_256));
    assert_eq!(O200K.len(), 199_998);
    assert_eq!(CL100K.len(), 100_256);
}

#[test]
fn tokens_are_in_rank_order() {
    // Ranks 0..256 of both encodings are the printable bytes first.
    for bpe in [&*O200K, &*CL100K] {
        assert_eq!(token_bytes(&bpe.bytes, &bpe.offsets, 0), b"!");
        assert_eq!(bpe.rank(b"!"), Some(0));
        assert_eq!(bpe.rank(b"\""), Some(1));
        assert_eq!(bpe.rank(b"not a token at all, surely"), None);
        let last = u32::try_from(bpe.len() - 1).unwrap_or(0);
        let token = token_bytes(&bpe.bytes, &bpe.offsets, last);
        assert_eq!(bpe.rank(token), Some(last));
    }
}

#[test]
fn matches_tiktoken_reference_fixture() {
    let fixture: serde_json::Value =
        serde_json::from_str(REFERENCE).expect("reference.json parses");
    let texts = fixture["texts"].as_array().expect("texts");
    assert!(texts.len() > 40);
    for entry in texts {
        let text = entry["text"].as_str().expect("text");
        for (name, bpe) in [("o200k_base", &*O200K), ("cl100k_base", &*CL100K)] {
            let expected = entry[name].as_u64().expect("count") as usize;
            assert_eq!(
                bpe.count(text),
                expected,
                "{name} {}: {text:?}",
                entry["name"]
            );
        }
    }
}

#[test]
fn known_counts() {
    assert_eq!(O200K.count(""), 0);
    assert_eq!(O200K.count("Hello, world!"), 4);
    assert_eq!(CL100K.count("Hello, world!"), 4);
    assert_eq!(CL100K.count("hello world"), 2);
    assert_eq!(O200K.count_piece(b""), 0);
    assert_eq!(O200K.count_piece(b"\xff"), 1);
    assert_eq!(O200K.count_piece(b" world"), 1);
}

#[test]
fn splits_like_tiktoken() {
    fn pieces<'a>(bpe: &'a Bpe, text: &'a str) -> Vec<&'a str> {
        bpe.split(text).collect()
    }
    for bpe in [&*O200K, &*CL100K] {
        assert_eq!(pieces(bpe, "hello world   "), ["hello", " world", "   "]);
        assert_eq!(pieces(bpe, "a  b"), ["a", " ", " b"]);
        assert_eq!(pieces(bpe, "a   \tb"), ["a", "   ", "\tb"]);
        assert_eq!(pieces(bpe, "x \n\n  y"), ["x", " \n\n", " ", " y"]);
        assert_eq!(pieces(bpe, "1234567"), ["123", "456", "7"]);
        assert_eq!(pieces(bpe, ""), Vec::<&str>::new());
        assert_eq!(pieces(bpe, " "), [" "]);
    }
    assert_eq!(pieces(&O200K, "HTTPServer's"), ["HTTPServer's"]);
    assert_eq!(pieces(&O200K, "helloWorld"), ["hello", "World"]);
    assert_eq!(pieces(&CL100K, "HTTPServer's"), ["HTTPServer", "'s"]);
    assert_eq!(pieces(&O200K, "a/b\n"), ["a", "/b", "\n"]);
    assert_eq!(pieces(&O200K, "x.//\n"), ["x", ".//\n"]);
    // A whitespace run to the end: one piece for cl100k_base (`\s++$`
    // comes first), split after the last newline for o200k_base.
    assert_eq!(pieces(&CL100K, "x\n\t"), ["x", "\n\t"]);
    assert_eq!(pieces(&O200K, "x\n\t"), ["x", "\n", "\t"]);
    // A lone space before a non-space is its own piece; the look-ahead
    // drops a whole (multi-byte) character.
    assert_eq!(
        pieces(&O200K, "\u{3000}\u{3000}x"),
        ["\u{3000}", "\u{3000}x"]
    );
}

#[test]
fn split_covers_the_text() {
    let mut rng = Rng(0x5eed);
    for _ in 0..300 {
        let len = rng.below(200);
        let text = random_text(&mut rng, len);
        for bpe in [&*O200K, &*CL100K] {
            let joined: String = bpe.split(&text).collect();
            assert_eq!(joined, text);
            assert!(bpe.split(&text).all(|piece| !piece.is_empty()));
        }
    }
}

#[test]
fn both_merge_paths_match_tiktoken() {
    let mut rng = Rng(42);
    let sources: Vec<Vec<u8>> = vec![
        b"a".repeat(400),
        b"ab".repeat(200),
        b"abc ".repeat(100),
        "中文字".repeat(50).into_bytes(),
        "🚀👍🏽".repeat(30).into_bytes(),
        b"-=".repeat(200),
        b"0123456789".repeat(40),
        (0..400u32).map(|i| (i * 7 % 256) as u8).collect(),
        random_text(&mut rng, 400).into_bytes(),
        random_text(&mut rng, 400).replace(' ', "").into_bytes(),
        b"Zm9vYmFyYmF6cXV4".repeat(25),
    ];
    for bpe in [&*O200K, &*CL100K] {
        for source in &sources {
            for len in (2..=160).chain([200, 255, 256, 257, 399]) {
                for offset in [0, 1, 3] {
                    let Some(piece) = source.get(offset..offset + len) else {
                        continue;
                    };
                    let expected = reference_count(bpe, piece);
                    assert_eq!(bpe.count_piece(piece), expected, "{piece:?}");
                    if bpe.rank(piece).is_none() {
                        assert_eq!(bpe.merge_long::<u32>(piece), expected, "{piece:?}");
                        assert_eq!(bpe.merge_long::<usize>(piece), expected);
                        if len <= SHORT_PIECE {
                            assert_eq!(bpe.merge_short(piece), expected, "{piece:?}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn min_tree_finds_the_leftmost_lowest() {
    let mut rng = Rng(3);
    for n in [1, 2, 3, 5, 8, 13, 64, 100, 1000] {
        let mut nodes: Vec<Node<u32>> = (0..n)
            .map(|_| Node {
                end: 1,
                pair: (rng.next() % 20) as u32,
            })
            .collect();
        let mut tree = MinTree::new(&nodes);
        for round in 0..2000 {
            let expected = (0..n).min_by_key(|&i| (nodes[i].pair, i)).unwrap_or(0);
            assert_eq!(tree.min(), expected, "n {n} round {round}");
            let i = rng.below(n);
            nodes[i].pair = match rng.below(3) {
                0 => NO_RANK,
                _ => (rng.next() % 20) as u32,
            };
            tree.update(&nodes, i);
        }
    }
}

#[test]
fn long_single_letter_piece() {
    let text = "a".repeat(1 << 20);
    assert_eq!(O200K.split(&text).count(), 1);
    let count = O200K.count(&text);
    assert!(count > 0 && count < text.len() / 4, "{count}");
    // Equal to the reference on a length it can afford.
    let piece = &text.as_bytes()[..3000];
    assert_eq!(O200K.count_piece(piece), reference_count(&O200K, piece));
    assert_eq!(CL100K.count_piece(piece), reference_count(&CL100K, piece));
}

#[test]
fn fallback_counts_bytes() {
    let bpe = Bpe::bytes_only();
    assert_eq!(bpe.len(), 0);
    assert_eq!(bpe.count(""), 0);
    assert_eq!(bpe.count("héllo world"), 12);
    assert_eq!(bpe.split("a b").collect::<Vec<_>>(), ["a b"]);
    assert_eq!(bpe.count_piece(&[b'x'; 300]), 300);
}

#[test]
fn bad_data_is_an_error() {
    assert!(Bpe::load(b"not gzip", &O200K_BASE_PATTERNS).is_err());
    assert!(Bpe::load(O200K_BASE_GZ, &[("(", false)]).is_err());
    assert!(Bpe::load(&[], &O200K_BASE_PATTERNS).is_err());
}

#[test]
fn decodes_base64() {
    let decode = |text: &[u8]| {
        let mut out = Vec::new();
        decode_base64(text, &mut out).map(|()| out)
    };
    assert_eq!(decode(b"IQ=="), Some(b"!".to_vec()));
    assert_eq!(decode(b"IHdvcmxk"), Some(b" world".to_vec()));
    assert_eq!(decode(b"4pyF"), Some("✅".as_bytes().to_vec()));
    assert_eq!(decode(b"/+8="), Some(vec![0xff, 0xef]));
    assert_eq!(decode(b"I"), None);
    assert_eq!(decode(b"I*=="), None);
    assert_eq!(parse_decimal(b"199997"), Some(199_997));
    assert_eq!(parse_decimal(b""), None);
    assert_eq!(parse_decimal(b"1x"), None);
}

#[test]
fn is_shareable() {
    fn check<T: Send + Sync + UnwindSafe + RefUnwindSafe>() {}
    check::<Bpe>();
}

#[test]
fn counts_from_many_threads() {
    let text = random_text(&mut Rng(7), 5000);
    let expected = O200K.count(&text);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..20 {
                    assert_eq!(O200K.count(&text), expected);
                }
            });
        }
    });
}
