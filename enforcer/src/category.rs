//! The kinds of danger: what a dangerous-argument pattern describes and what a command's
//! effects are.

use serde::{Deserialize, Serialize};

/// The kinds of danger a pattern can describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Destructive,
    ServiceDisruption,
    /// Firewall rules, routes, interfaces, DNS (`firewall-network` in the command catalogue).
    #[serde(alias = "firewall-network")]
    Firewall,
    RemoteCodeExecution,
    Permissions,
    ForceFlag,
    PrivilegeEscalation,
    WritesFiles,
    SystemConfig,
    Packages,
    ProcessKill,
    NetworkExposure,
    RunsUnreviewedCode,
    Secrets,
    RemoteState,
    DeviceWrite,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Destructive => "destructive",
            Category::ServiceDisruption => "service-disruption",
            Category::Firewall => "firewall",
            Category::RemoteCodeExecution => "remote-code-execution",
            Category::Permissions => "permissions",
            Category::ForceFlag => "force-flag",
            Category::PrivilegeEscalation => "privilege-escalation",
            Category::WritesFiles => "writes-files",
            Category::SystemConfig => "system-config",
            Category::Packages => "packages",
            Category::ProcessKill => "process-kill",
            Category::NetworkExposure => "network-exposure",
            Category::RunsUnreviewedCode => "runs-unreviewed-code",
            Category::Secrets => "secrets",
            Category::RemoteState => "remote-state",
            Category::DeviceWrite => "device-write",
        }
    }
}
