//! Local ports for the servers tests start.

/// A port nothing listens on right now: the one definition every test
/// binary uses (the lib's unit tests include this file by path).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}
