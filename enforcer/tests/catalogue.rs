//! The command catalogue through the decision: what the default policy asks about because of
//! what a command does, how it explains it, how `it-mcp-compatible.toml` keeps IT-MCP's rule,
//! and how a policy extends the catalogue.

use enforcer::{evaluate, Action, Category, Decision, PolicySet, Principal};
use serde_json::json;

// The bench's request: `ssh-exec executeCommand` on web-01.
#[allow(dead_code)]
#[path = "../benches/cases.rs"]
mod cases;
use cases::request;

fn caller() -> Principal {
    Principal {
        id: "alice".into(),
        roles: Default::default(),
        capabilities: ["ssh-linux", "remote-exec"]
            .iter()
            .map(|c| c.to_string())
            .collect(),
    }
}

fn default() -> PolicySet {
    enforcer::default_policy().unwrap_or_else(|e| panic!("{e}"))
}

fn decide(policy: &PolicySet, command: &str) -> Decision {
    evaluate(&request(command), &caller(), policy)
}

/// The default policy's ssh-exec with the catalogue settings replaced by `settings`.
fn policy_with(extra_top: &str, settings: &str) -> PolicySet {
    let text = format!(
        r#"
name = "test"
{extra_top}
[tools.ssh-exec.operations.executeCommand]
risk = "HIGH"
requires = ["ssh-linux", "remote-exec"]
shell_args = ["command"]
{settings}
"#
    );
    PolicySet::load("test.toml", &text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_default_policy_asks_about_what_commands_do() {
    let policy = default();
    for (command, category) in [
        ("echo 10.0.0.5 db > /etc/hosts", Category::SystemConfig),
        ("terraform destroy -auto-approve", Category::Destructive),
        (
            "kubectl scale deploy web --replicas=0",
            Category::RemoteState,
        ),
        ("python3 /tmp/x.py", Category::RunsUnreviewedCode),
        ("uniq /etc/shadow", Category::Secrets),
        ("socat TCP-LISTEN:4444 -", Category::NetworkExposure),
        ("git push origin main", Category::RemoteState),
    ] {
        let decision = decide(&policy, command);
        assert_eq!(
            decision.action,
            Action::RequireApproval,
            "{command}: {:?}",
            decision.reasons
        );
        assert!(
            decision
                .commands
                .iter()
                .any(|c| c.effects.iter().any(|e| e.category == category)),
            "{command}: {category:?} not among {:#?}",
            decision.commands
        );
    }
}

#[test]
fn reading_is_still_allowed() {
    let policy = default();
    for command in [
        "uptime",
        "journalctl -u nginx --since today | tail -n 50",
        "df -h && free -m",
        "docker ps --format '{{.Names}}'",
        "kubectl get pods -n prod -o wide",
        "git -C /srv/app log --oneline -5",
        "curl -s https://example.com/health",
        "ss -tlnp",
        "grep -c ERROR /var/log/app.log > /tmp/count.txt",
    ] {
        let decision = decide(&policy, command);
        assert_eq!(
            decision.action,
            Action::Allow,
            "{command}: {:?}",
            decision.reasons
        );
        assert!(decision.commands.iter().all(|c| c.is_read_only()));
    }
}

#[test]
fn reasons_read_like_a_colleague() {
    let policy = default();
    let decision = decide(&policy, "echo x | tee /etc/hosts");
    assert!(
        decision
            .reasons
            .iter()
            .any(|r| r == "`tee` writes /etc/hosts (system configuration)"),
        "{:?}",
        decision.reasons
    );
    let decision = decide(&policy, "frobnicate --now");
    assert!(
        decision
            .reasons
            .contains(&"Countersign does not know what `frobnicate` does".to_string()),
        "{:?}",
        decision.reasons
    );
    let hosts = decide(&policy, "echo x > /etc/hosts");
    let classified = &hosts.commands[0];
    assert_eq!(classified.writes, vec!["/etc/hosts".to_string()]);
    assert!(classified.decided_by.contains("redirection"));
}

#[test]
fn the_compatible_policy_decides_as_it_mcp_did() {
    let compatible = enforcer::it_mcp_compatible_policy().unwrap_or_else(|e| panic!("{e}"));
    let policy = default();
    // HIGH without a pattern, sudo or force flag: IT-MCP allowed it; the default asks.
    for command in ["systemctl restart nginx", "bash deploy.sh", "frobnicate"] {
        assert_eq!(
            decide(&compatible, command).action,
            Action::Allow,
            "{command}"
        );
        assert_eq!(
            decide(&policy, command).action,
            Action::RequireApproval,
            "{command}"
        );
    }
    // The classification is still shown.
    let shown = decide(&compatible, "systemctl restart nginx");
    assert!(!shown.commands[0].effects.is_empty());
    // Patterns ask under both.
    for p in [&compatible, &policy] {
        assert_eq!(decide(p, "rm -rf /srv/app").action, Action::RequireApproval);
    }
}

#[test]
fn the_two_settings_work_apart() {
    let effects_only = policy_with("", r#"effects = "require_approval""#);
    assert_eq!(decide(&effects_only, "frobnicate").action, Action::Allow);
    assert_eq!(
        decide(&effects_only, "systemctl stop nginx").action,
        Action::RequireApproval
    );
    let unknown_only = policy_with("", r#"unknown_commands = "require_approval""#);
    assert_eq!(
        decide(&unknown_only, "frobnicate").action,
        Action::RequireApproval
    );
    assert_eq!(
        decide(&unknown_only, "systemctl stop nginx").action,
        Action::Allow
    );
}

#[test]
fn scratch_paths_come_from_the_policy() {
    let settings = r#"effects = "require_approval""#;
    let default_scratch = policy_with("", settings);
    assert_eq!(
        decide(&default_scratch, "echo x > /tmp/a").action,
        Action::Allow
    );
    assert_eq!(
        decide(&default_scratch, "echo x > /srv/scratch/a").action,
        Action::RequireApproval
    );
    let own = policy_with(r#"scratch_paths = ["/srv/scratch"]"#, settings);
    assert_eq!(
        decide(&own, "echo x > /srv/scratch/a").action,
        Action::Allow
    );
    assert_eq!(
        decide(&own, "echo x > /tmp/a").action,
        Action::RequireApproval
    );
    // Deleting under scratch is no effect; deleting scratch itself is.
    assert_eq!(
        decide(&default_scratch, "rm -r /tmp/build").action,
        Action::Allow
    );
    assert_eq!(
        decide(&default_scratch, "rm -r /tmp").action,
        Action::RequireApproval
    );
}

#[test]
fn a_policy_extends_the_catalogue() {
    let settings = r#"effects = "require_approval"
unknown_commands = "require_approval""#;
    let extended = policy_with(
        r#"
[commands.appctl]
description = "our application's control tool"
value_flags = ["c", "config"]
subcommands = { status = "read-only", restart = { effect = "service-disruption", why = "restarts the application" } }

[groups]
read-only = ["frobnicate"]
"#,
        settings,
    );
    assert_eq!(decide(&extended, "frobnicate --now").action, Action::Allow);
    assert_eq!(
        decide(&extended, "appctl -c /etc/app.conf status").action,
        Action::Allow
    );
    let restart = decide(&extended, "appctl restart");
    assert_eq!(restart.action, Action::RequireApproval);
    assert!(restart
        .reasons
        .contains(&"`appctl restart` restarts the application (service disruption)".to_string()));
    // An unlisted subcommand is decided by its verb, or asked about.
    assert_eq!(
        decide(&extended, "appctl purge-cache").action,
        Action::RequireApproval
    );
    let odd = decide(&extended, "appctl wibble");
    assert!(odd.commands[0].unknown);
    // The extension is part of the policy's hash.
    let plain = policy_with("", settings);
    assert_ne!(plain.hash(), extended.hash());
}

#[test]
fn a_broken_catalogue_entry_is_refused_with_its_place() {
    for (extra, wanted) in [
        (
            "[commands.x]\neffect = \"dangerous\"",
            "unknown effect `dangerous`",
        ),
        (
            "[commands.x]\nrules = [{ args = '(', effect = \"destructive\" }]",
            "commands.x.rules[0].args",
        ),
        (
            "[commands.x]\nsame_as = \"nothing-like-it\"",
            "names a command the catalogue does not have",
        ),
        (
            "[commands.x]\nrules = [{ effect = \"destructive\" }]",
            "a rule needs `flags` or `args`",
        ),
        (
            "[commands.x]\nwrites = \"everything\"",
            "unknown `writes` value",
        ),
        ("[commands.x]\nuses = [\"nope\"]", "no rule set `nope`"),
    ] {
        let text = format!(
            "name = \"t\"\n{extra}\n[tools.t.operations.o]\nrisk = \"LOW\"\nrequires = []\n"
        );
        let error = match PolicySet::load("bad.toml", &text) {
            Ok(_) => panic!("{extra}: loaded"),
            Err(e) => e.to_string(),
        };
        assert!(error.contains(wanted), "{extra}: {error}");
    }
}

#[test]
fn decisions_keep_their_classification_through_the_audit_row() {
    let policy = default();
    let request = request("systemctl restart nginx; cat /etc/shadow");
    let decision = evaluate(&request, &caller(), &policy);
    let stored = enforcer::record::compact(&decision, &request, &policy);
    let joined = enforcer::record::joined_reasons(&decision);
    let columns = enforcer::record::Columns::of(&decision, &joined);
    let back = enforcer::record::expand(&stored, &request, &columns, &policy);
    assert_eq!(back.as_ref(), Some(&decision), "stored as {stored}");
    assert!(!stored.contains("commands"), "stored whole: {stored}");
    assert_eq!(json!(decision.commands).as_array().map(Vec::len), Some(2));
}

#[test]
fn quoting_does_not_hide_a_secret() {
    let policy = default();
    for command in [
        "cat /etc/sha''dow",
        "cat /etc/sha\\dow",
        "cat \"/etc/shadow\"",
    ] {
        let decision = decide(&policy, command);
        assert!(
            decision
                .commands
                .iter()
                .any(|c| c.effects.iter().any(|e| e.category == Category::Secrets)),
            "{command}: {:#?}",
            decision.commands
        );
    }
}
