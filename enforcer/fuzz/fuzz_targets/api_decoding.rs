//! The decision API's request decoding on arbitrary bytes: never panics; a body it accepts
//! encodes and decodes to the same request, and the enforcer decides on it without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn policy() -> &'static enforcer::PolicySet {
    static POLICY: OnceLock<enforcer::PolicySet> = OnceLock::new();
    POLICY.get_or_init(|| enforcer::default_policy().expect("default policy"))
}

fuzz_target!(|body: &[u8]| {
    let input = match enforcer::wire::parse_decision(body) {
        Ok(input) => input,
        Err(error) => {
            assert!(!error.code.is_empty() && !error.message.is_empty());
            return;
        }
    };
    let encoded = input.to_json().to_string();
    let again = enforcer::wire::parse_decision(encoded.as_bytes()).expect("an accepted request encodes to an accepted body");
    assert_eq!(again.request(), input.request());
    assert_eq!(
        (&again.reason, &again.on_behalf_of, &again.session),
        (&input.reason, &input.on_behalf_of, &input.session)
    );
    let principal = enforcer::Principal { id: "fuzz".into(), ..Default::default() };
    let decision = enforcer::evaluate(&input.request(), &principal, policy());
    assert_eq!(decision.call_hash, enforcer::call_hash(&input.request()));
});
