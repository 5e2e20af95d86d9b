//! serde helpers for config values with a human form: sizes and listen addresses.

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer};

/// `(name, bytes)` of the units sizes are written in, largest first: binary units, then
/// decimal ones, so that the written form is exact and parses back to the same size.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("EiB", 1 << 60),
    ("PiB", 1 << 50),
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("EB", 1_000_000_000_000_000_000),
    ("PB", 1_000_000_000_000_000),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("kB", 1_000),
];

/// `bytes` in the largest unit that divides it exactly (`"32 MiB"`), else `"N B"`.
pub(super) fn format_size(bytes: u64) -> String {
    SIZE_UNITS
        .iter()
        .find(|(_, factor)| bytes != 0 && bytes % factor == 0)
        .map(|(unit, factor)| format!("{} {unit}", bytes / factor))
        .unwrap_or_else(|| format!("{bytes} B"))
}

/// Sizes: written like `"32 MiB"`; read from strings such as `"10MiB"`, `"512 kB"` or
/// from a plain integer number of bytes.
pub(super) mod size {
    use std::fmt;

    use bytesize::ByteSize;
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(in crate::config) fn serialize<S: Serializer>(
        size: &ByteSize,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_size(size.as_u64()))
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<ByteSize, D::Error> {
        deserializer.deserialize_any(SizeVisitor)
    }

    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = ByteSize;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size such as \"32MiB\" or a number of bytes")
        }

        fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
            Ok(ByteSize::b(bytes))
        }

        fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<ByteSize, E> {
            u64::try_from(bytes)
                .map(ByteSize::b)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(bytes), &self))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
            text.trim().parse::<ByteSize>().map_err(|_| {
                E::custom(format!(
                    "invalid size {text:?}, expected e.g. \"32MiB\", \"512KiB\", \"10MB\" or a number of bytes"
                ))
            })
        }
    }
}

/// Reads a listen address (`"127.0.0.1:8080"`, `"[::1]:8080"`).
pub(super) fn socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_listen(&text).map_err(serde::de::Error::custom)
}

/// Parses a listen address; the error is the message shown to the user.
pub(super) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("invalid socket address {text:?}, expected IP:port such as \"127.0.0.1:8080\"")
    })
}
