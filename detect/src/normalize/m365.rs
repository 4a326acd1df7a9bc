//! Microsoft 365 Office 365 Management Activity API records (Azure AD, Exchange, SharePoint, ...).

use perimeter_model::raw_prelude::*;
use perimeter_model::RawJson as Value;
use perimeter_model::{Ecs, NormalizeError, Normalizer, Outcome};

use super::fields::{self, at, classify, str_at};

/// Normalizes Management Activity API records (`CreationTime`, `Operation`, `UserId`, `ClientIP`,
/// `ResultStatus`, `OrganizationId`, `ExtendedProperties`, `Target[]`).
#[derive(Debug, Default, Clone, Copy)]
pub struct M365ManagementActivityNormalizer;

impl M365ManagementActivityNormalizer {
    pub const SOURCE: &'static str = "m365";

    pub(crate) fn matches(obj: &fields::Obj) -> bool {
        obj.get("CreationTime").is_some()
            && obj.get("Operation").is_some()
            && (obj.get("Workload").is_some() || obj.get("RecordType").is_some())
    }

    pub(crate) fn ecs(raw: &Value) -> Result<Ecs, NormalizeError> {
        fields::object(raw)?;
        // Top-level keys read once: each lookup in the DOM would decode the keys before it.
        let raw = &fields::Record::new(raw);
        let op = fields::required_str(raw, &["Operation"])?;
        let mut ecs = Ecs {
            // CreationTime carries no zone; the API documents it as UTC.
            timestamp: Some(fields::required_time(raw, &["CreationTime"])?),
            event_action: Some(op.to_owned()),
            ..Ecs::default()
        };
        ecs.event_outcome = match str_at(raw, &["ResultStatus"]) {
            Some(s)
                if s.eq_ignore_ascii_case("success")
                    || s.eq_ignore_ascii_case("succeeded")
                    || s.eq_ignore_ascii_case("true") =>
            {
                Outcome::Success
            }
            Some(s)
                if s.eq_ignore_ascii_case("failed")
                    || s.eq_ignore_ascii_case("failure")
                    || s.eq_ignore_ascii_case("false")
                    || s.eq_ignore_ascii_case("partiallysucceeded") =>
            {
                Outcome::Failure
            }
            _ => Outcome::Unknown,
        };
        if op == "UserLoginFailed" {
            ecs.event_outcome = Outcome::Failure;
        }
        categorize(&mut ecs, op);

        let user = str_at(raw, &["UserId"]);
        fields::set_login(&mut ecs.user_name, &mut ecs.user_email, user);
        ecs.user_id = fields::id_at(raw, &["UserKey"]);
        ecs.source_ip = str_at(raw, &["ClientIP"])
            .and_then(fields::clean_ip)
            .or_else(|| str_at(raw, &["ActorIpAddress"]).and_then(fields::clean_ip))
            .or_else(|| str_at(raw, &["ClientIPAddress"]).and_then(fields::clean_ip));
        ecs.organization_id = fields::id_at(raw, &["OrganizationId"]);
        ecs.user_agent_original = fields::owned(str_at(raw, &["UserAgent"]));
        if let Some(props) = fields::opt_array(raw, &["ExtendedProperties"])? {
            for p in props {
                if str_at(p, &["Name"]) == Some("UserAgent") && ecs.user_agent_original.is_none() {
                    ecs.user_agent_original = fields::owned(str_at(p, &["Value"]));
                }
            }
        }
        // Directory changes name the affected account in ObjectId (a UPN) or in Target[] (Type 5 = UPN).
        if ecs.event_category.first().map(String::as_str) == Some("iam") {
            let mut target = str_at(raw, &["ObjectId"]).filter(|s| fields::is_email(s));
            if target.is_none() {
                if let Some(targets) = fields::opt_array(raw, &["Target"])? {
                    target = targets
                        .iter()
                        .filter_map(|t| str_at(t, &["ID"]))
                        .find(|s| fields::is_email(s));
                }
            }
            fields::set_login(
                &mut ecs.user_target_name,
                &mut ecs.user_target_email,
                target,
            );
        }
        // A record re-serialized with every schema key has `"LogonError": null` (or `""`) on a
        // successful sign-in: no error (QA: such sign-ins came out as failures).
        if at(raw, &["LogonError"])
            .is_some_and(|e| !e.is_null() && e.as_str().is_none_or(|s| !s.trim().is_empty()))
        {
            ecs.event_outcome = Outcome::Failure;
        }
        ecs.fill_related();
        Ok(ecs)
    }
}

fn categorize(ecs: &mut Ecs, op: &str) {
    let (cat, kind): (&[&str], &[&str]) = match op {
        "UserLoggedIn" | "UserLoginFailed" | "MailboxLogin" | "SignInEvent" => {
            (&["authentication"], &["start"])
        }
        "UserLoggedOut" => (&["authentication"], &["end"]),
        "Add member to role." | "Remove member from role." | "Add eligible member to role." => {
            (&["iam"], &["admin", "change"])
        }
        "Add user." => (&["iam"], &["user", "creation"]),
        "Delete user." | "Hard Delete user." => (&["iam"], &["user", "deletion"]),
        "Update user."
        | "Reset user password."
        | "Change user password."
        | "Change user license."
        | "Set force change user password."
        | "Disable account."
        | "Enable account."
        // A user's MFA switched off or on, or their sign-in methods (security info) changed:
        // an account change (the user acted on is the target).
        | "Disable Strong Authentication."
        | "Enable Strong Authentication."
        | "Admin deleted security info"
        | "User deleted security info"
        | "Admin registered security info"
        | "User registered security info"
        | "Admin updated security info"
        | "User changed default security info" => (&["iam"], &["user", "change"]),
        "Add member to group." | "Remove member from group." | "Update group." => {
            (&["iam"], &["group", "change"])
        }
        "Add group." => (&["iam"], &["group", "creation"]),
        "Delete group." => (&["iam"], &["group", "deletion"]),
        "Consent to application."
        | "Add service principal."
        | "Add application."
        | "Add OAuth2PermissionGrant."
        | "Add app role assignment to service principal."
        | "Add service principal credentials."
        | "New-InboxRule"
        | "New-TransportRule"
        | "New-ManagementRoleAssignment"
        | "Add delegated permission grant." => (&["configuration"], &["creation"]),
        "Remove service principal."
        | "Delete application."
        | "Remove-InboxRule"
        | "Remove-TransportRule"
        | "Remove service principal credentials."
        | "Remove OAuth2PermissionGrant." => (&["configuration"], &["deletion"]),
        o if o.starts_with("Set-")
            || o.starts_with("Update policy")
            || o.starts_with("Update application")
            || o.starts_with("Update service principal")
            || o.starts_with("Set ")
            || o.starts_with("Update StsRefreshTokenValidFrom")
            || o.starts_with("Enable-")
            || o.starts_with("Disable-") =>
        {
            (&["configuration"], &["change"])
        }
        "FileDownloaded"
        | "FileSyncDownloadedFull"
        | "FileSyncDownloadedPartial"
        | "FileAccessed"
        | "FilePreviewed"
        | "FileCopied" => (&["file"], &["access"]),
        "FileUploaded" | "FileSyncUploadedFull" => (&["file"], &["creation"]),
        "FileDeleted" | "FileRecycled" => (&["file"], &["deletion"]),
        "FileModified"
        | "FileRenamed"
        | "FileMoved"
        | "SharingSet"
        | "AnonymousLinkCreated"
        | "SharingInvitationCreated" => (&["file"], &["change"]),
        "MailItemsAccessed"
        | "SearchQueryInitiatedExchange"
        | "New-ComplianceSearch"
        | "SearchExported" => (&["email"], &["access"]),
        _ => (&[], &["info"]),
    };
    classify(ecs, cat, kind);
}

impl Normalizer for M365ManagementActivityNormalizer {
    fn source(&self) -> &str {
        Self::SOURCE
    }

    fn normalize_ecs(&self, raw: &Value) -> Result<Ecs, NormalizeError> {
        Self::ecs(raw)
    }
}
