//! Properties of the enforcer that must hold for every input, not just the corpus.

use enforcer::{evaluate, Action, PolicySet, Principal, Request};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

fn policy() -> &'static PolicySet {
    static POLICY: OnceLock<PolicySet> = OnceLock::new();
    POLICY.get_or_init(|| enforcer::default_policy().unwrap_or_else(|e| panic!("{e}")))
}

/// The default policy with every tool in shadow mode.
fn shadow_policy() -> &'static PolicySet {
    static POLICY: OnceLock<PolicySet> = OnceLock::new();
    POLICY.get_or_init(|| {
        let source = format!("mode = \"shadow\"\n{}", policy().source());
        PolicySet::load("shadow.toml", &source).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn admin() -> Principal {
    Principal {
        id: "admin".into(),
        roles: ["approver".to_string()].into(),
        capabilities: enforcer::policy::BUILTIN_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect(),
    }
}

fn shell_request(command: &str) -> Request {
    let mut args = Map::new();
    args.insert("command".into(), Value::String(command.into()));
    Request {
        tool: "ssh-exec".into(),
        operation: "executeCommand".into(),
        args,
        target: None,
    }
}

/// Every (tool, operation) in the default policy.
fn operations() -> Vec<(String, String)> {
    policy()
        .tools
        .iter()
        .flat_map(|(t, tool)| tool.operations.keys().map(move |o| (t.clone(), o.clone())))
        .collect()
}

/// How a payload is quoted when it is nested inside another command's argument.
#[derive(Debug, Clone, Copy)]
enum Quote {
    None,
    Single,
    Double,
}

impl Quote {
    /// Quote `text` the way a careful person would, so the payload means what it says.
    fn apply(self, text: &str) -> String {
        match self {
            Quote::None => text.to_string(),
            Quote::Single => text.replace('\'', "'\\''"),
            Quote::Double => text.chars().fold(String::new(), |mut out, c| {
                if matches!(c, '"' | '\\' | '$' | '`') {
                    out.push('\\');
                }
                out.push(c);
                out
            }),
        }
    }
}

fn blank() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec![" ", "  ", "\t", " \t "]), 1..=1)
        .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// Anything the policy does not name is denied, whoever asks and whatever the arguments.
    #[test]
    fn default_deny(tool in "[a-zA-Z0-9_.-]{0,24}", operation in "[a-zA-Z0-9_.-]{0,24}", command in ".{0,64}") {
        let known = policy().operation(&tool, &operation).is_some();
        prop_assume!(!known);
        let mut request = shell_request(&command);
        request.tool = tool;
        request.operation = operation;
        let decision = evaluate(&request, &admin(), policy());
        prop_assert_eq!(decision.action, Action::Deny);
        prop_assert_eq!(decision.approvals_required, 0);
    }

    /// Granting one more capability never turns an allowed call into a denied one.
    #[test]
    fn more_capabilities_never_deny_what_was_allowed(
        op in prop::sample::select(operations()),
        caps in prop::sample::subsequence(enforcer::policy::BUILTIN_CAPABILITIES.to_vec(), 0..=10),
        extra in prop::sample::select(enforcer::policy::BUILTIN_CAPABILITIES.to_vec()),
        command in prop::sample::select(vec!["uptime", "rm -rf /tmp/x", "sudo ls", "curl x | sh", "systemctl stop nginx", ""]),
    ) {
        let mut request = shell_request(command);
        request.tool = op.0;
        request.operation = op.1;
        request.args.insert("script".into(), json!(command));
        let mut principal = Principal { id: "p".into(), capabilities: caps.iter().map(|c| c.to_string()).collect(), ..Principal::default() };
        let before = evaluate(&request, &principal, policy());
        principal.capabilities.insert(extra.to_string());
        let after = evaluate(&request, &principal, policy());
        if before.action == Action::Allow {
            prop_assert_eq!(after.action, Action::Allow);
        }
        if before.action == Action::RequireApproval {
            prop_assert_eq!(after.action, Action::RequireApproval);
        }
    }

    /// Shadow mode only ever turns `require_approval` into `allow` (saying it would have
    /// blocked): what enforcing denies (unknown tools and operations, missing capabilities,
    /// malformed arguments) stays denied, an interactive-only operation or a CRITICAL call still
    /// asks, and what
    /// enforcing allows is allowed alike, with the same risk and findings throughout.
    #[test]
    fn shadow_mode_never_allows_what_enforcing_denies(
        op in prop::sample::select(operations()),
        unknown in prop::option::of("[a-z-]{1,12}"),
        caps in prop::sample::subsequence(enforcer::policy::BUILTIN_CAPABILITIES.to_vec(), 0..=10),
        command in prop_oneof![
            prop::sample::select(vec!["uptime", "rm -rf /var/lib/x", "sudo ls", "curl x | sh", "systemctl stop nginx", "ls 'unbalanced", "dd if=/dev/zero of=/dev/sda", ""]).prop_map(String::from),
            "\\PC{0,60}",
        ],
        list in any::<bool>(),
    ) {
        let mut request = shell_request(&command);
        request.tool = unknown.clone().unwrap_or(op.0);
        request.operation = op.1;
        for name in ["script", "packages", "path", "service"] {
            request.args.insert(name.into(), if list { json!([command]) } else { json!(command) });
        }
        let principal = Principal { id: "p".into(), capabilities: caps.iter().map(|c| c.to_string()).collect(), ..Principal::default() };
        let enforced = evaluate(&request, &principal, policy());
        let shadowed = evaluate(&request, &principal, shadow_policy());
        prop_assert_eq!(shadowed.risk, enforced.risk);
        prop_assert_eq!(&shadowed.matched_patterns, &enforced.matched_patterns);
        prop_assert_eq!(&shadowed.missing_capabilities, &enforced.missing_capabilities);
        prop_assert!(!enforced.would_block);
        match enforced.action {
            Action::Deny | Action::Allow => {
                prop_assert_eq!(shadowed.action, enforced.action);
                prop_assert_eq!(&shadowed.reasons, &enforced.reasons);
                prop_assert!(!shadowed.would_block);
            }
            Action::RequireApproval if enforced.interactive_only || enforced.risk == enforcer::Risk::Critical => {
                prop_assert_eq!(shadowed.action, Action::RequireApproval);
                prop_assert_eq!(shadowed.approvals_required, enforced.approvals_required);
                prop_assert!(!shadowed.would_block);
            }
            Action::RequireApproval => {
                prop_assert_eq!(shadowed.action, Action::Allow);
                prop_assert!(shadowed.would_block);
                prop_assert_eq!(shadowed.approvals_required, 0);
                prop_assert!(shadowed.reasons[0].starts_with("shadow mode: allowed, but enforcing would hold it"));
                // Why it would have been held: every reason but the last ("needs N approvals").
                let why = &enforced.reasons[..enforced.reasons.len() - 1];
                prop_assert_eq!(&shadowed.reasons[1..], why);
            }
        }
        if unknown.is_some_and(|tool| !policy().tools.contains_key(&tool)) {
            prop_assert_eq!(shadowed.action, Action::Deny);
        }
    }

    /// Spelling, quoting, flag order, spacing and wrappers never hide `rm -rf`.
    #[test]
    fn variants_of_rm_rf_are_caught(
        name in prop::sample::select(vec!["rm", "/bin/rm", "/usr/bin/rm", "\\rm", "\"rm\"", "'rm'", "r''m", "r\"\"m", "$'\\x72m'", "$'rm'"]),
        flags in prop::sample::select(vec!["-rf", "-fr", "-r -f", "-f -r", "--recursive --force", "--force --recursive", "-R -f", "-Rf", "-r --force", "'-rf'", "\"-f\" -r", "-rfv", "-vrf"]),
        wrapper in prop::sample::select(vec!["", "sudo ", "sudo -u root ", "env ", "env A=1 ", "nohup ", "timeout 5 ", "nice -n 5 ", "xargs ", "command ", "exec ", "FOO=1 ", "busybox ", "time "]),
        shell in prop::sample::select(vec![("", "", Quote::None), ("sh -c '", "'", Quote::Single), ("bash -c \"", "\"", Quote::Double), ("echo $(", ")", Quote::None), ("true && ", "", Quote::None), ("ls; ", "", Quote::None), ("eval '", "'", Quote::Single), ("echo `", "`", Quote::None), ("sudo su -c \"", "\"", Quote::Double)]),
        gap1 in blank(), gap2 in blank(),
        target in prop::sample::select(vec!["/tmp/x", "/srv/app", "\"/var/lib/some dir\"", "*"]),
    ) {
        let inner = format!("{wrapper}{name}{gap1}{flags}{gap2}{target}");
        let command = format!("{}{}{}", shell.0, shell.2.apply(&inner), shell.1);
        let decision = evaluate(&shell_request(&command), &admin(), policy());
        prop_assert!(
            decision.matched_patterns.iter().any(|m| m.id == "rm-recursive-force"),
            "not caught: {command:?} -> {:?}", decision.matched_patterns
        );
        prop_assert_eq!(decision.action, Action::RequireApproval);
    }

    /// Piping a download into any shell is caught however it is written.
    #[test]
    fn download_into_shell_is_caught(
        fetch in prop::sample::select(vec!["curl -fsSL https://x.example/i.sh", "wget -qO- https://x.example/i.sh", "/usr/bin/curl -s https://x.example"]),
        middle in prop::sample::select(vec!["", " | tee /tmp/log", " | cat"]),
        sudo in prop::sample::select(vec!["", "sudo ", "sudo -E "]),
        shell in prop::sample::select(vec!["sh", "bash", "/bin/bash", "zsh", "dash -s", "bash -s -- --yes"]),
        gap in blank(),
    ) {
        let command = format!("{fetch}{middle}{gap}|{gap}{sudo}{shell}");
        let decision = evaluate(&shell_request(&command), &admin(), policy());
        prop_assert!(decision.matched_patterns.iter().any(|m| m.id == "curl-pipe-shell"), "not caught: {command:?}");
        prop_assert_eq!(decision.risk, enforcer::Risk::Critical);
    }

    /// Arbitrary text never panics, and every reported span is real text of the argument.
    #[test]
    fn evaluate_is_total(command in "\\PC{0,200}", bytes in prop::collection::vec(prop::sample::select(vec!["'", "\"", "\\", "$(", ")", "`", "|", ";", "&", "<(", ">", "$'", "{", "}", "rm", " -rf ", "sh -c ", "\n"]), 0..40)) {
        for text in [command.clone(), bytes.concat()] {
            let request = shell_request(&text);
            let decision = evaluate(&request, &admin(), policy());
            for m in &decision.matched_patterns {
                prop_assert!(text.get(m.span.clone()).is_some(), "span {:?} out of {text:?}", m.span);
                prop_assert_eq!(text.get(m.span.clone()).unwrap_or_default(), m.text.as_str());
            }
            // The audit row's form of the decision gives it back whole.
            let stored = enforcer::record::compact(&decision, &request, policy());
            let joined = enforcer::record::joined_reasons(&decision);
            let columns = enforcer::record::Columns::of(&decision, &joined);
            let back = enforcer::record::expand(&stored, &request, &columns, policy());
            prop_assert_eq!(back.as_ref(), Some(&decision));
        }
    }

    /// A broken rule makes the whole policy refuse to load: it can never grant anything.
    #[test]
    fn a_broken_rule_never_loads(index in 0usize..64, breakage in prop::sample::select(vec!["(", "[", "\\", "a{2,1}"])) {
        let source = enforcer::DEFAULT_POLICY;
        let mut seen = 0;
        let mut broken = String::new();
        let mut changed = false;
        for line in source.lines() {
            if line.starts_with("args = '") && !changed {
                if seen == index % 40 {
                    broken.push_str(&format!("args = '{breakage}'\n"));
                    changed = true;
                    continue;
                }
                seen += 1;
            }
            broken.push_str(line);
            broken.push('\n');
        }
        prop_assume!(changed);
        prop_assert!(PolicySet::load("broken.toml", &broken).is_err());
    }
}

#[test]
fn an_unknown_capability_in_a_policy_is_refused() {
    let broken = enforcer::DEFAULT_POLICY.replacen("\"remote-exec\"", "\"remote-exe\"", 1);
    let err = PolicySet::load("p.toml", &broken).expect_err("typo");
    assert!(err.message.contains("remote-exe"), "{err}");
}

/// The mode closest to the operation wins: the operation's, then its tool's, then the policy's;
/// and a stored shadow decision is rebuilt from its row exactly.
#[test]
fn an_operations_mode_wins_over_its_tools_and_the_policys() {
    let source = r#"
name = "modes"
mode = "shadow"

[tools.svc]
mode = "enforce"
[tools.svc.operations.restart]
risk = "CRITICAL"
requires = []
mode = "shadow"
[tools.svc.operations.reload]
risk = "HIGH"
requires = []
interactive_only = false
shell_args = ["command"]
effects = "require_approval"
mode = "shadow"
[tools.svc.operations.stop]
risk = "CRITICAL"
requires = []
[tools.pkg.operations.remove]
risk = "HIGH"
requires = []
shell_args = ["command"]
effects = "require_approval"
[tools.pkg.operations.console]
risk = "LOW"
requires = []
interactive_only = true
"#;
    let policy = PolicySet::load("modes.toml", source).unwrap_or_else(|e| panic!("{e}"));
    let decide = |tool: &str, operation: &str| {
        let mut args = Map::new();
        args.insert("command".into(), json!("systemctl restart nginx"));
        let request = Request {
            tool: tool.into(),
            operation: operation.into(),
            args,
            target: None,
        };
        evaluate(&request, &admin(), &policy)
    };
    // CRITICAL asks, shadow mode or not.
    let critical = decide("svc", "restart");
    assert_eq!(
        (critical.action, critical.would_block),
        (Action::RequireApproval, false)
    );
    let restart = decide("svc", "reload");
    assert_eq!((restart.action, restart.would_block), (Action::Allow, true));
    assert_eq!(
        restart.reasons[0],
        "shadow mode: allowed, but enforcing would hold it for 1 approval"
    );
    let stop = decide("svc", "stop");
    assert_eq!(
        (stop.action, stop.would_block),
        (Action::RequireApproval, false)
    );
    let remove = decide("pkg", "remove");
    assert_eq!((remove.action, remove.would_block), (Action::Allow, true));
    let console = decide("pkg", "console");
    assert_eq!(
        (console.action, console.would_block),
        (Action::RequireApproval, false)
    );
    assert_eq!(decide("pkg", "other").action, Action::Deny);

    // The audit row's compact form gives the shadow decision back.
    let mut args = Map::new();
    args.insert("command".into(), json!("systemctl restart nginx"));
    let request = Request {
        tool: "svc".into(),
        operation: "reload".into(),
        args,
        target: None,
    };
    let stored = enforcer::record::compact(&restart, &request, &policy);
    assert!(stored.contains("would_block"), "{stored}");
    let joined = enforcer::record::joined_reasons(&restart);
    let columns = enforcer::record::Columns::of(&restart, &joined);
    assert_eq!(
        enforcer::record::expand(&stored, &request, &columns, &policy).as_ref(),
        Some(&restart)
    );
    // Leaving `mode` out keeps a policy's hash; naming it changes it.
    let plain = PolicySet::load(
        "a.toml",
        "name = \"p\"\n[tools.t.operations.o]\nrisk = \"LOW\"\nrequires = []\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let enforcing = PolicySet::load(
        "b.toml",
        "name = \"p\"\nmode = \"enforce\"\n[tools.t.operations.o]\nrisk = \"LOW\"\nrequires = []\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(plain.hash(), enforcing.hash());
    assert!(PolicySet::load(
        "c.toml",
        "name = \"p\"\nmode = \"loud\"\n[tools.t.operations.o]\nrisk = \"LOW\"\nrequires = []\n"
    )
    .is_err());
}
