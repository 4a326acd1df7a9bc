//! AWS CloudTrail records (single records, or `{"Records": [...]}` files split by `split_records`).

use perimeter_model::raw_prelude::*;
use perimeter_model::RawJson as Value;
use perimeter_model::{Ecs, NormalizeError, Normalizer, Outcome};

use super::fields::{self, at, classify, str_at};

/// Normalizes CloudTrail records (`eventTime`, `eventName`, `eventSource`, `userIdentity`, `errorCode`).
///
/// `event.outcome` is `failure` when `errorCode` is present (including throttling:
/// `ThrottlingException` keeps `eventName` as the action) or a console login says `Failure`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CloudTrailNormalizer;

impl CloudTrailNormalizer {
    pub const SOURCE: &'static str = "aws_cloudtrail";

    pub(crate) fn matches(obj: &fields::Obj) -> bool {
        obj.get("eventName").is_some()
            && obj.get("eventSource").is_some()
            && obj.get("eventTime").is_some()
    }

    pub(crate) fn ecs(raw: &Value) -> Result<Ecs, NormalizeError> {
        fields::object(raw)?;
        // Top-level keys read once: each lookup in the DOM would decode the keys before it.
        let raw = &fields::Record::new(raw);
        let name = fields::required_str(raw, &["eventName"])?;
        let service = str_at(raw, &["eventSource"]).unwrap_or("");
        let mut ecs = Ecs {
            timestamp: Some(fields::required_time(raw, &["eventTime"])?),
            event_action: Some(name.to_owned()),
            ..Ecs::default()
        };
        let failed = at(raw, &["errorCode"]).is_some_and(|v| !v.is_null())
            || str_at(raw, &["responseElements", "ConsoleLogin"]) == Some("Failure");
        ecs.event_outcome = if failed {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        categorize(&mut ecs, service, name);

        // The role behind an assumed role's session or a federated user, also a related user.
        let mut issuer_role = None;
        if let Some(id) = at(raw, &["userIdentity"]) {
            // Its keys read once too: up to eight lookups follow.
            let id = &fields::Record::new(id);
            let kind = str_at(id, &["type"]);
            ecs.user_id = fields::id_at(id, &["principalId"]);
            let arn = str_at(id, &["arn"]);
            // An assumed role's session names who acts (`.../assumed-role/<role>/<session>`:
            // the SSO user, the CI job); the role, in `related.user` too, is what they act as.
            issuer_role = str_at(id, &["sessionContext", "sessionIssuer", "userName"]);
            let session = (kind == Some("AssumedRole"))
                .then(|| arn.and_then(|a| a.strip_prefix("arn:")?.split_once(":assumed-role/")))
                .flatten()
                .and_then(|(_, rest)| rest.split_once('/'))
                .map(|(_, session)| session)
                .filter(|s| !s.is_empty() && !is_machine_session(s));
            // A federated user (`.../federated-user/<name>`, from `GetFederationToken`) acts
            // with the credentials of the IAM user in `sessionIssuer`, who only issued them.
            let federated = (kind == Some("FederatedUser"))
                .then(|| arn.and_then(|a| a.split_once(":federated-user/")))
                .flatten()
                .map(|(_, name)| name)
                .filter(|s| !s.is_empty());
            let name = str_at(id, &["userName"])
                .or(session)
                .or(federated)
                .or(issuer_role)
                .or_else(|| {
                    if kind == Some("Root") {
                        Some("root")
                    } else {
                        None
                    }
                })
                .or_else(|| arn.and_then(|a| a.rsplit('/').next()));
            fields::set_login(&mut ecs.user_name, &mut ecs.user_email, name);
            ecs.cloud_account_id = fields::id_at(id, &["accountId"]);
        }
        if let Some(acct) = fields::id_at(raw, &["recipientAccountId"]) {
            ecs.cloud_account_id = Some(acct);
        }
        if ecs.event_category.first().map(String::as_str) == Some("iam")
            || service == "iam.amazonaws.com"
        {
            let target = str_at(raw, &["requestParameters", "userName"]);
            if target.is_some() && target != ecs.user_name.as_deref() {
                ecs.user_target_name = fields::owned(target);
            }
        }
        ecs.source_ip = str_at(raw, &["sourceIPAddress"]).and_then(fields::clean_ip);
        ecs.user_agent_original = fields::owned(str_at(raw, &["userAgent"]));
        ecs.fill_related();
        if let Some(role) = issuer_role {
            if !ecs.related_user.iter().any(|u| u == role) {
                ecs.related_user.push(role.to_string());
            }
        }
        Ok(ecs)
    }
}

fn categorize(ecs: &mut Ecs, service: &str, name: &str) {
    let (cat, kind): (&[&str], &[&str]) = match (service, name) {
        (
            _,
            "ConsoleLogin"
            | "CheckMfa"
            | "SwitchRole"
            | "ExternalIdPDirectoryLogin"
            | "UserAuthentication",
        ) => (&["authentication"], &["start"]),
        ("signin.amazonaws.com" | "sso.amazonaws.com", _) => (&["authentication"], &["info"]),
        (
            _,
            "GetSessionToken"
            | "GetFederationToken"
            | "AssumeRoleWithSAML"
            | "AssumeRoleWithWebIdentity",
        ) => (&["authentication"], &["info"]),
        // Access keys, MFA devices, login profiles: credentials -> configuration by house convention.
        (
            "iam.amazonaws.com",
            "CreateAccessKey"
            | "CreateLoginProfile"
            | "CreateVirtualMFADevice"
            | "EnableMFADevice"
            | "UploadSSHPublicKey"
            | "CreateServiceSpecificCredential"
            | "UploadSigningCertificate",
        ) => (&["configuration"], &["creation"]),
        (
            "iam.amazonaws.com",
            "DeleteAccessKey"
            | "DeleteLoginProfile"
            | "DeactivateMFADevice"
            | "DeleteVirtualMFADevice"
            | "DeleteSSHPublicKey",
        ) => (&["configuration"], &["deletion"]),
        ("iam.amazonaws.com", "UpdateAccessKey" | "UpdateLoginProfile" | "ResyncMFADevice") => {
            (&["configuration"], &["change"])
        }
        ("iam.amazonaws.com", "CreateUser") => (&["iam"], &["user", "creation"]),
        ("iam.amazonaws.com", "DeleteUser") => (&["iam"], &["user", "deletion"]),
        ("iam.amazonaws.com", "CreateGroup") => (&["iam"], &["group", "creation"]),
        ("iam.amazonaws.com", "DeleteGroup") => (&["iam"], &["group", "deletion"]),
        ("iam.amazonaws.com", "AddUserToGroup" | "RemoveUserFromGroup") => {
            (&["iam"], &["group", "change"])
        }
        ("iam.amazonaws.com", n)
            if n.starts_with("Attach")
                || n.starts_with("Detach")
                || n.starts_with("Put")
                || n.contains("Policy") =>
        {
            (&["iam"], &["admin", "change"])
        }
        ("iam.amazonaws.com", n) if n.starts_with("Create") => (&["iam"], &["creation"]),
        ("iam.amazonaws.com", n) if n.starts_with("Delete") => (&["iam"], &["deletion"]),
        ("iam.amazonaws.com", n)
            if n.starts_with("Update") || n.starts_with("Change") || n.starts_with("Tag") =>
        {
            (&["iam"], &["change"])
        }
        ("cloudtrail.amazonaws.com", "DeleteTrail") => (&["configuration"], &["deletion"]),
        ("cloudtrail.amazonaws.com", n) if n.starts_with("Create") => {
            (&["configuration"], &["creation"])
        }
        (
            "cloudtrail.amazonaws.com"
            | "config.amazonaws.com"
            | "guardduty.amazonaws.com"
            | "kms.amazonaws.com"
            | "organizations.amazonaws.com"
            | "securityhub.amazonaws.com",
            n,
        ) if n.starts_with("Stop")
            || n.starts_with("Update")
            || n.starts_with("Put")
            || n.starts_with("Delete")
            || n.starts_with("Disable")
            || n.starts_with("Schedule") =>
        {
            (&["configuration"], &["change"])
        }
        (
            "s3.amazonaws.com",
            "PutBucketPolicy"
            | "PutBucketAcl"
            | "PutBucketPublicAccessBlock"
            | "DeleteBucketPolicy"
            | "PutBucketLogging"
            | "PutBucketEncryption",
        ) => (&["configuration"], &["change"]),
        ("ec2.amazonaws.com", n) if n.contains("SecurityGroup") => {
            (&["configuration"], &["change"])
        }
        ("s3.amazonaws.com", "GetObject" | "CopyObject" | "SelectObjectContent") => {
            (&["file"], &["access"])
        }
        ("s3.amazonaws.com", "PutObject") => (&["file"], &["creation"]),
        ("s3.amazonaws.com", "DeleteObject" | "DeleteObjects") => (&["file"], &["deletion"]),
        (
            "secretsmanager.amazonaws.com" | "ssm.amazonaws.com",
            "GetSecretValue" | "GetParameter" | "GetParameters",
        ) => (&["database"], &["access"]),
        ("rds.amazonaws.com" | "dynamodb.amazonaws.com", n)
            if n.contains("Snapshot") || n.starts_with("Export") =>
        {
            (&["database"], &["access"])
        }
        _ => (&[], &["info"]),
    };
    classify(ecs, cat, kind);
}

impl Normalizer for CloudTrailNormalizer {
    fn source(&self) -> &str {
        Self::SOURCE
    }

    fn normalize_ecs(&self, raw: &Value) -> Result<Ecs, NormalizeError> {
        Self::ecs(raw)
    }
}

/// Whether an assumed role's session name is one a machine made up for a single run (an EC2
/// instance id, an ECS task id, an SDK's default `botocore-session-<n>`, a UUID): who acts is
/// then the role. QA: a nightly job whose session was its ECS task id was a new user every
/// night, and its routine volume an anomaly every night.
fn is_machine_session(session: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(id) = session.strip_prefix("i-") {
        return (8..=17).contains(&id.len()) && hex(id);
    }
    [
        "botocore-session-",
        "aws-go-sdk-",
        "aws-sdk-java-",
        "aws-sdk-js-",
    ]
    .iter()
    .any(|p| session.strip_prefix(p).is_some_and(digits))
        || (session.len() == 32 && hex(session))
        || (session.len() == 36
            && session.bytes().filter(|&b| b == b'-').count() == 4
            && hex(&session.replace('-', "")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn machine_made_session_names_are_told_from_people_and_jobs() {
        for machine in [
            "i-0abc123def4567890",
            "0123456789abcdef0123456789abcdef",
            "botocore-session-1733480000",
            "aws-go-sdk-1733480000123",
            "3f1c2a44-0000-4000-8000-000000000003",
        ] {
            assert!(super::is_machine_session(machine), "{machine}");
        }
        for person in [
            "alice@example.com",
            "GitHubActions",
            "terraform-deploy",
            "i-am-bob",
            "deadbeef",
        ] {
            assert!(!super::is_machine_session(person), "{person}");
        }
    }
}
