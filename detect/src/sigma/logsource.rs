//! Which Perimeter sources a rule's `logsource` (product / service / category) runs on.

/// A rule's logsource as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSource {
    pub product: Option<String>,
    pub service: Option<String>,
    pub category: Option<String>,
}

/// Default table: Sigma product (and service) -> Perimeter source names. `None` = every source.
pub fn default_sources(ls: &LogSource) -> Option<Vec<String>> {
    let product = ls.product.as_deref()?.to_ascii_lowercase();
    let service = ls.service.as_deref().map(str::to_ascii_lowercase);
    let one = |s: &str| Some(vec![s.to_string()]);
    match product.as_str() {
        // Alert Center alerts are a source of their own, whichever product name is used.
        "gcp" | "google_workspace" if service.as_deref() == Some("alert_center") => {
            one("google_workspace_alerts")
        }
        "okta" => one("okta"),
        "github" => one("github"),
        "gcp"
            if service
                .as_deref()
                .is_some_and(|s| s.starts_with("google_workspace")) =>
        {
            one("google_workspace")
        }
        "google_workspace" => one("google_workspace"),
        "slack" => one("slack"),
        "m365" | "microsoft365" | "office365" => one("m365"),
        "aws" if service.as_deref().is_none_or(|s| s == "cloudtrail") => one("aws_cloudtrail"),
        "onepassword" | "1password" => one("onepassword"),
        "azure" => one("azure"),
        "zoom" => one("zoom"),
        "box" => one("box"),
        "dropbox" => one("dropbox"),
        "cisco" if service.as_deref() == Some("duo") => one("duo"),
        "duo" => one("duo"),
        "onelogin" => one("onelogin"),
        "auth0" => one("auth0"),
        "atlassian" => one("atlassian"),
        "asana" => one("asana"),
        "notion" => one("notion"),
        "zendesk" => one("zendesk"),
        "salesforce" if service.as_deref() == Some("marketing_cloud") => {
            one("salesforce_marketing_cloud")
        }
        "salesforce" => one("salesforce"),
        "terraform" | "hcp_terraform" | "terraform_cloud" => one("terraform_cloud"),
        // Any other product P runs on source P (which, for windows/linux/..., never occurs).
        other => one(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(p: Option<&str>, s: Option<&str>) -> LogSource {
        LogSource {
            product: p.map(Into::into),
            service: s.map(Into::into),
            category: None,
        }
    }

    #[test]
    fn default_table() {
        let s = |p, sv| default_sources(&ls(p, sv));
        assert_eq!(s(Some("okta"), None), Some(vec!["okta".to_string()]));
        assert_eq!(
            s(Some("github"), Some("audit")),
            Some(vec!["github".to_string()])
        );
        assert_eq!(
            s(Some("gcp"), Some("google_workspace.admin")),
            Some(vec!["google_workspace".to_string()])
        );
        assert_eq!(
            s(Some("gcp"), Some("gcp.audit")),
            Some(vec!["gcp".to_string()])
        );
        assert_eq!(
            s(Some("salesforce"), Some("marketing_cloud")),
            Some(vec!["salesforce_marketing_cloud".to_string()])
        );
        assert_eq!(
            s(Some("salesforce"), None),
            Some(vec!["salesforce".to_string()])
        );
        assert_eq!(
            s(Some("terraform"), None),
            Some(vec!["terraform_cloud".to_string()])
        );
        assert_eq!(s(Some("tines"), None), Some(vec!["tines".to_string()]));
        assert_eq!(
            s(Some("aws"), Some("cloudtrail")),
            Some(vec!["aws_cloudtrail".to_string()])
        );
        assert_eq!(
            s(Some("aws"), None),
            Some(vec!["aws_cloudtrail".to_string()])
        );
        assert_eq!(s(Some("cisco"), Some("duo")), Some(vec!["duo".to_string()]));
        assert_eq!(
            s(Some("google_workspace"), Some("alert_center")),
            Some(vec!["google_workspace_alerts".to_string()])
        );
        assert_eq!(s(Some("office365"), None), Some(vec!["m365".to_string()]));
        assert_eq!(
            s(Some("1password"), None),
            Some(vec!["onepassword".to_string()])
        );
        assert_eq!(
            s(Some("windows"), Some("security")),
            Some(vec!["windows".to_string()])
        );
        assert_eq!(s(None, Some("x")), None);
    }
}
