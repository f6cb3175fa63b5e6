//! What the server provides to the portal's server functions, in each request's context: one
//! service bound to the signed-in person. Errors are sentences to show them.

#[cfg(feature = "ssr")]
use crate::views::{
    ApprovalView, AuditList, AuditQuery, AuditRowDetail, DashboardView, ExportProgress, GrantList,
    JobDetail, JobList, JobQuery, PendingApproval, PolicySource, ReportPreview, ReportQuery,
};
#[cfg(feature = "ssr")]
use crate::AppError;
#[cfg(feature = "ssr")]
use leptos::prelude::*;

#[cfg(feature = "ssr")]
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The portal's data and actions, implemented by the server.
#[cfg(feature = "ssr")]
pub trait PortalService: Send + Sync {
    fn pending(&self) -> BoxFuture<Result<Vec<PendingApproval>, AppError>>;
    fn approval(&self, job_id: String) -> BoxFuture<Result<Option<ApprovalView>, AppError>>;
    /// Cast the signed-in person's vote (`approve` or `deny`); where the page goes next: the
    /// request, with the outcome or the refusal in its address (forms work without WASM).
    fn vote(&self, job_id: String, verdict: String, reason: String) -> BoxFuture<String>;
    fn jobs(&self, query: JobQuery) -> BoxFuture<Result<JobList, AppError>>;
    fn job(&self, job_id: String) -> BoxFuture<Result<Option<JobDetail>, AppError>>;
    fn dashboard(&self) -> BoxFuture<Result<DashboardView, AppError>>;
    fn policy(&self) -> BoxFuture<Result<PolicySource, AppError>>;
    fn audit(&self, query: AuditQuery) -> BoxFuture<Result<AuditList, AppError>>;
    fn audit_row(&self, seq: i64) -> BoxFuture<Result<Option<AuditRowDetail>, AppError>>;
    /// What an export would hold (auditors and admins).
    fn report_preview(&self, query: ReportQuery) -> BoxFuture<Result<ReportPreview, AppError>>;
    /// How far the signed-in person's download `token` has got (on this replica).
    fn export_progress(&self, token: String)
        -> BoxFuture<Result<Option<ExportProgress>, AppError>>;
    /// Put a dead-lettered notification back in the queue (admins).
    /// Where the dashboard goes next: with the retry's outcome, or why it was refused.
    fn retry_delivery(&self, id: i64) -> BoxFuture<String>;
    /// Every standing grant (approvers, auditors and admins).
    fn grants(&self) -> BoxFuture<Result<GrantList, AppError>>;
    /// Remember the signed-in approver's approval of a job; where the page goes next (the
    /// request, with the grant or the refusal in its address).
    fn remember(&self, form: RememberForm) -> BoxFuture<String>;
    /// Revoke a grant; where the page goes next (the Grants page, with the outcome).
    fn revoke_grant(&self, id: String) -> BoxFuture<String>;
}

/// The approval page's "remember" form, as posted.
#[cfg(feature = "ssr")]
#[derive(Debug, Clone, Default)]
pub struct RememberForm {
    pub job_id: String,
    /// Empty: this exact call; else the one field generalised (`command[2]`, `service`).
    pub generalise: String,
    pub target: String,
    /// Empty: the requester; else a role.
    pub group: String,
    pub ttl_secs: String,
    /// Empty: no limit.
    pub max_uses: String,
}

#[cfg(feature = "ssr")]
pub fn service() -> Result<std::sync::Arc<dyn PortalService>, AppError> {
    use_context::<std::sync::Arc<dyn PortalService>>().ok_or(AppError::Internal)
}
