//! `countersign`: the approval portal and policy enforcer for IT-MCP. Everything it does is in
//! the library; the command line is `server::cli`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    server::cli::run().await
}
