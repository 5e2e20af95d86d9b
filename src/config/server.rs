//! `[server]`: the listening side.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::*;

/// `[server]`: the listening side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address clients connect to.
    #[serde(deserialize_with = "de::socket_addr")]
    pub listen: SocketAddr,
    /// Largest request body accepted (larger: 413).
    #[serde(with = "de::size")]
    pub max_body_size: ByteSize,
    /// Longest wait for an answer to begin (its head); past it, 504.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Requests handled at once; more are shed with 503.
    pub max_concurrency: usize,
    /// Client connections open at once, all workers together; a new one
    /// past it is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Time a client gets to send its request headers (on a new connection:
    /// its first request, HTTP/1.1 or HTTP/2); also how long an idle
    /// keep-alive HTTP/1.1 connection, or an HTTP/2 connection with no
    /// stream open, is kept waiting for its next request.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest wait for the next piece of a request body, read or streamed
    /// through (past it: 408), so a client trickling its body cannot hold a
    /// request slot or an upstream connection.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Most request headers accepted (more: 431).
    pub max_headers: usize,
    /// Largest request head (request line and headers) accepted (larger: 431).
    #[serde(with = "de::size")]
    pub max_header_size: ByteSize,
    /// Longest request URI (path and query) accepted (longer: 414).
    #[serde(with = "de::size")]
    pub max_uri_length: ByteSize,
    /// Deepest nesting of arrays and objects in an understood request's JSON
    /// body (deeper: 400).
    pub max_json_depth: usize,
    /// Worker threads, each serving its own share of connections with its
    /// own upstream pools; 0 = one per CPU core.
    pub workers: usize,
    /// How often the config file is checked for changes, which are then
    /// loaded as on SIGHUP; 0 = only on SIGHUP.
    #[serde(with = "humantime_serde")]
    pub config_poll_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            max_body_size: ByteSize::mib(32),
            request_timeout: Duration::from_secs(10 * 60),
            shutdown_grace: Duration::from_secs(30),
            max_concurrency: 4096,
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            max_headers: 100,
            max_header_size: ByteSize::kib(64),
            max_uri_length: ByteSize::kib(8),
            max_json_depth: 64,
            workers: 0,
            config_poll_interval: Duration::from_secs(5),
        }
    }
}
