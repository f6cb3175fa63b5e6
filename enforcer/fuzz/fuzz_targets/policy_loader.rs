//! Loading arbitrary policy text: an error or a policy, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(policy) = enforcer::PolicySet::load("fuzz.toml", text) {
        assert_eq!(policy.hash().len(), 64);
    }
});
