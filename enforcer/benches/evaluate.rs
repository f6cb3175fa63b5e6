//! Evaluation cost against the full default policy. Run: `cargo bench -p enforcer`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use enforcer::{evaluate, Principal, Request};
use serde_json::{Map, Value};

fn request(command: &str) -> Request {
    let mut args = Map::new();
    args.insert("command".into(), Value::String(command.into()));
    Request {
        tool: "ssh-exec".into(),
        operation: "executeCommand".into(),
        args,
        target: Some("web-01".into()),
    }
}

fn bench(c: &mut Criterion) {
    let policy = match enforcer::default_policy() {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let admin = Principal {
        id: "admin".into(),
        roles: ["approver".to_string()].into(),
        capabilities: enforcer::policy::BUILTIN_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect(),
    };
    // A typical 100-byte command.
    let typical = "sudo systemctl restart nginx && journalctl -u nginx --since '-5 min' | tail -n 20 > /tmp/x.log";
    // A 4 KB script: many commands, quoting, pipes and substitutions.
    let line = "find /var/log -name '*.gz' -mtime +30 | xargs -r ls -l; echo \"$(date) done\" >> /tmp/cleanup.log\n";
    let big: String = line
        .repeat(4096 / line.len() + 1)
        .chars()
        .take(4096)
        .collect();

    let mut group = c.benchmark_group("evaluate");
    for (name, text) in [("typical-100B", typical.to_string()), ("script-4KB", big)] {
        let req = request(&text);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| evaluate(black_box(&req), black_box(&admin), black_box(&policy)))
        });
        // The shell reading alone, to see where an evaluation's time goes.
        group.bench_function(format!("{name}/shell-analysis"), |b| {
            b.iter(|| enforcer::analysis::invocations(black_box(&text)))
        });
    }
    group.bench_function("unknown-tool", |b| {
        let mut req = request("uptime");
        req.tool = "nope".into();
        b.iter(|| evaluate(black_box(&req), black_box(&admin), black_box(&policy)))
    });
    group.finish();
    c.bench_function("policy-load", |b| b.iter(enforcer::default_policy));
}

criterion_group!(benches, bench);
criterion_main!(benches);
