//! The shipped default policy loads and behaves as the reference note describes.

#[test]
fn the_default_policy_loads() {
    let policy = enforcer::default_policy().unwrap_or_else(|e| panic!("{e}"));
    assert!(policy.tools.contains_key("ssh-exec"));
}
