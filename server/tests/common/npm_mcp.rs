//! The npm MCP servers tests and benchmarks run as upstreams (installed by
//! `scripts/setup.sh e2e` into `end2end/node_modules`).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// An npm package's entry point under `end2end/node_modules/@modelcontextprotocol/`.
fn npm_server(package: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../end2end/node_modules/@modelcontextprotocol/{package}/dist/index.js"
    ));
    assert!(
        path.is_file(),
        "{} is missing: run `bash scripts/setup.sh e2e` (it installs the end2end npm packages)",
        path.display()
    );
    path
}

/// The filesystem server (`@modelcontextprotocol/server-filesystem`).
pub fn filesystem_server() -> PathBuf {
    npm_server("server-filesystem")
}

/// The reference server (`@modelcontextprotocol/server-everything`).
pub fn everything_server() -> PathBuf {
    npm_server("server-everything")
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The reference server speaking Streamable HTTP on 127.0.0.1:`port` only (it would listen on
/// every interface; `tests/support/loopback-only.cjs` keeps it on loopback), stopped on drop.
pub async fn everything_over_http(port: u16) -> tokio::process::Child {
    let preload = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/loopback-only.cjs");
    let child = tokio::process::Command::new("node")
        .arg("--require")
        .arg(preload)
        .arg(everything_server())
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the reference server over HTTP");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the reference server did not listen on 127.0.0.1:{port}");
}
