//! The shell reader and the decision on arbitrary text: never panic, spans always valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn policy() -> &'static enforcer::PolicySet {
    static POLICY: OnceLock<enforcer::PolicySet> = OnceLock::new();
    POLICY.get_or_init(|| enforcer::default_policy().expect("default policy"))
}

fuzz_target!(|text: &str| {
    let analysis = enforcer::analysis::invocations(text);
    for invocation in analysis.invocations() {
        assert!(text.get(invocation.span()).is_some(), "invocation span {:?}", invocation.span());
        for arg in invocation.args() {
            assert!(text.get(arg.span()).is_some(), "word span {:?}", arg.span());
        }
        for redirect in invocation.redirects() {
            let span = redirect.target.span();
            assert!(text.get(span.clone()).is_some(), "redirect span {span:?}");
        }
    }
    let mut args = serde_json::Map::new();
    args.insert("command".into(), serde_json::Value::String(text.to_string()));
    let request = enforcer::Request { tool: "ssh-exec".into(), operation: "executeCommand".into(), args, target: None };
    let principal = enforcer::Principal { id: "fuzz".into(), ..Default::default() };
    let decision = enforcer::evaluate(&request, &principal, policy());
    for m in &decision.matched_patterns {
        assert_eq!(text.get(m.span.clone()), Some(m.text.as_str()));
    }
});
