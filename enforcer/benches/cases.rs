//! The evaluation cases shared by the criterion bench (`benches/evaluate.rs`) and the
//! instruction-count loop (`examples/evaluate_loop.rs`).

use enforcer::{Principal, Request};
use serde_json::{Map, Value};

pub fn request(command: &str) -> Request {
    let mut args = Map::new();
    args.insert("command".into(), Value::String(command.into()));
    Request {
        tool: "ssh-exec".into(),
        operation: "executeCommand".into(),
        args,
        target: Some("web-01".into()),
    }
}

/// A caller with every capability and the approver role: nothing is denied for lack of them.
pub fn admin() -> Principal {
    Principal {
        id: "admin".into(),
        roles: ["approver".to_string()].into(),
        capabilities: enforcer::policy::BUILTIN_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect(),
    }
}

/// A typical 100-byte command.
pub const TYPICAL: &str = "sudo systemctl restart nginx && journalctl -u nginx --since '-5 min' | tail -n 20 > /tmp/x.log";

/// A 4 KB script: many commands, quoting, pipes and substitutions.
pub fn script_4kb() -> String {
    let line = "find /var/log -name '*.gz' -mtime +30 | xargs -r ls -l; echo \"$(date) done\" >> /tmp/cleanup.log\n";
    line.repeat(4096 / line.len() + 1)
        .chars()
        .take(4096)
        .collect()
}
