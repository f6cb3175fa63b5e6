//! Evaluation cost against the full default policy. Run: `cargo bench -p enforcer`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use enforcer::evaluate;

mod cases;

fn bench(c: &mut Criterion) {
    let policy = match enforcer::default_policy() {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let admin = cases::admin();
    let mut group = c.benchmark_group("evaluate");
    for (name, text) in [
        ("typical-100B", cases::TYPICAL.to_string()),
        ("script-4KB", cases::script_4kb()),
    ] {
        let req = cases::request(&text);
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
        let mut req = cases::request("uptime");
        req.tool = "nope".into();
        b.iter(|| evaluate(black_box(&req), black_box(&admin), black_box(&policy)))
    });
    group.finish();
    c.bench_function("policy-load", |b| b.iter(enforcer::default_policy));
}

criterion_group!(benches, bench);
criterion_main!(benches);
