//! The `process` executor: run a program with a filled argv template — no shell unless the
//! policy names one, a cleared environment except the allow-list, a working directory, a
//! timeout, and the output capped (the first 64 KiB kept, the SHA-256 of all of it recorded).
//! The agent runs jobs with the same function.

use crate::services::execution::{RunReport, OUTPUT_KEEP};
use enforcer::Executor;
use sha2::{Digest, Sha256};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Standard output and error as they arrive: the first [`OUTPUT_KEEP`] bytes and a digest of all.
#[derive(Default)]
struct Capture {
    kept: Vec<u8>,
    total: u64,
    digest: Sha256,
}

impl Capture {
    fn push(&mut self, bytes: &[u8]) {
        self.digest.update(bytes);
        self.total = self.total.saturating_add(bytes.len() as u64);
        let room = OUTPUT_KEEP.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// Read some bytes, or wait forever once the stream is gone (so `select!` ignores it).
async fn read_some<R: AsyncRead + Unpin>(stream: &mut Option<R>, buf: &mut [u8]) -> usize {
    match stream {
        Some(reader) => match reader.read(buf).await {
            Ok(0) | Err(_) => {
                *stream = None;
                0
            }
            Ok(n) => n,
        },
        None => std::future::pending().await,
    }
}

fn report(status: &str, started: Instant, capture: Capture, error: Option<String>) -> RunReport {
    let Capture {
        kept,
        total,
        digest,
    } = capture;
    RunReport {
        status: status.to_string(),
        duration_ms: Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
        exit_code: None,
        output: Some(String::from_utf8_lossy(&kept).into_owned()),
        output_bytes: Some(total),
        output_digest: Some(crate::store::audit::hex(&digest.finalize())),
        side_effects: Vec::new(),
        error,
    }
}

/// Run `argv` as `executor` says and report how it went (never fails: a program that cannot
/// start is a `failure` with the reason).
pub async fn run(executor: &Executor, argv: &[String]) -> RunReport {
    let started = Instant::now();
    let Some((program, args)) = argv.split_first() else {
        return report(
            "failure",
            started,
            Capture::default(),
            Some("no program to run".into()),
        );
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for name in &executor.env {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    if let Some(dir) = &executor.workdir {
        command.current_dir(dir);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return report(
                "failure",
                started,
                Capture::default(),
                Some(format!("could not start `{program}`: {error}")),
            )
        }
    };
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut capture = Capture::default();
    let limit = Duration::from_secs(executor.timeout_secs);
    let outcome = tokio::time::timeout(limit, async {
        let (mut out_buf, mut err_buf) = (vec![0u8; 8192], vec![0u8; 8192]);
        while stdout.is_some() || stderr.is_some() {
            tokio::select! {
                n = read_some(&mut stdout, &mut out_buf) => capture.push(&out_buf[..n]),
                n = read_some(&mut stderr, &mut err_buf) => capture.push(&err_buf[..n]),
            }
        }
        child.wait().await
    })
    .await;
    match outcome {
        Ok(Ok(status)) => {
            let code = status.code();
            let mut done = report(
                if status.success() {
                    "success"
                } else {
                    "failure"
                },
                started,
                capture,
                match code {
                    Some(0) => None,
                    Some(code) => Some(format!("`{program}` exited with status {code}")),
                    None => Some(format!("`{program}` was ended by a signal")),
                },
            );
            done.exit_code = code.map(i64::from);
            done
        }
        Ok(Err(error)) => report(
            "failure",
            started,
            capture,
            Some(format!("waiting for `{program}` failed: {error}")),
        ),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            report(
                "timeout",
                started,
                capture,
                Some(format!(
                    "`{program}` ran longer than {} s and was stopped",
                    executor.timeout_secs
                )),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use enforcer::ExecutorKind;

    fn executor(timeout_secs: u64, env: &[&str]) -> Executor {
        Executor {
            name: "t".into(),
            kind: ExecutorKind::Process,
            description: String::new(),
            argv: Vec::new(),
            shell: false,
            timeout_secs,
            env: env.iter().map(|s| s.to_string()).collect(),
            workdir: Some("/".into()),
            agent: None,
            url: None,
            secret_env: None,
            attempts: 1,
        }
    }

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn arguments_are_not_read_by_a_shell_and_exit_codes_are_kept() {
        let done = run(
            &executor(10, &[]),
            &argv(&["/bin/echo", "a; rm -rf / $(id)"]),
        )
        .await;
        assert_eq!(done.status, "success");
        assert_eq!(done.output.as_deref(), Some("a; rm -rf / $(id)\n"));
        assert_eq!(done.exit_code, Some(0));
        let failed = run(
            &executor(10, &[]),
            &argv(&["/bin/sh", "-c", "echo oops >&2; exit 3"]),
        )
        .await;
        assert_eq!(
            (failed.status.as_str(), failed.exit_code),
            ("failure", Some(3))
        );
        assert_eq!(failed.output.as_deref(), Some("oops\n"));
        let missing = run(&executor(10, &[]), &argv(&["/nonexistent/program"])).await;
        assert!(missing
            .error
            .as_deref()
            .is_some_and(|e| e.contains("could not start")));
    }

    #[tokio::test]
    async fn the_environment_is_an_allow_list_and_the_working_directory_is_set() {
        let done = run(&executor(10, &["PATH"]), &argv(&["/usr/bin/env"])).await;
        let output = done.output.unwrap_or_default();
        assert!(output.lines().all(|l| l.starts_with("PATH=")), "{output}");
        let pwd = run(&executor(10, &[]), &argv(&["/bin/pwd"])).await;
        assert_eq!(pwd.output.as_deref(), Some("/\n"));
    }

    #[tokio::test]
    async fn output_is_capped_with_a_digest_of_all_of_it() {
        let done = run(
            &executor(30, &[]),
            &argv(&["/usr/bin/head", "-c", "200000", "/dev/zero"]),
        )
        .await;
        assert_eq!(done.output, Some("\0".repeat(OUTPUT_KEEP)));
        assert_eq!(done.output_bytes, Some(200_000));
        assert_eq!(
            done.output_digest.as_deref(),
            Some(enforcer::sha256_hex(&vec![0u8; 200_000]).as_str())
        );
    }

    #[tokio::test]
    async fn a_run_past_its_timeout_is_stopped() {
        let done = run(&executor(1, &[]), &argv(&["/bin/sleep", "30"])).await;
        assert_eq!(done.status, "timeout");
        assert!(done.duration_ms.is_some_and(|ms| ms < 20_000));
    }
}
