//! `benches/mask-issue3-minimum.toml`, the masking scope the `normalize_mask` bench prices
//! against the default (ADR 021): it must enable exactly the value detectors issue 3 lists, and
//! a masker built from it must act on them and on nothing the file turns off.

use std::collections::BTreeSet;

use perimeter_detect::mask::{MaskConfig, MaskCounts, PatternKind, SecretMasker};

fn minimum_config() -> MaskConfig {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../benches/mask-issue3-minimum.toml");
    MaskConfig::from_toml_file(&path).expect("the bench's minimum masking config parses")
}

#[test]
fn the_minimum_scope_enables_the_detectors_issue_3_lists_and_no_others() {
    let config = minimum_config();
    let enabled: BTreeSet<PatternKind> = PatternKind::ALL
        .into_iter()
        .filter(|kind| {
            config
                .patterns
                .get(kind)
                .and_then(|p| p.enabled)
                .unwrap_or(kind.enabled_by_default())
        })
        .collect();
    let issue_3: BTreeSet<PatternKind> = [
        PatternKind::AwsAccessKeyId,
        PatternKind::GithubToken,
        PatternKind::SlackToken,
        PatternKind::OktaApiToken,
        PatternKind::OnepasswordToken,
        PatternKind::Jwt,
        PatternKind::AuthHeader,
        PatternKind::PemPrivateKey,
        PatternKind::CreditCard,
        PatternKind::UsSsn,
    ]
    .into();
    assert_eq!(enabled, issue_3);
}

#[test]
fn a_masker_of_the_minimum_scope_masks_its_detectors_only() {
    let minimum = SecretMasker::new(&minimum_config()).expect("masker");
    let default = SecretMasker::default();
    let mask = |m: &SecretMasker, text: &str| m.mask_text_counted(text, &mut MaskCounts::default());
    let token = "ghp_R8x2mQ4vL9nT1kZ7pW3yB6cF0hJ5sD8gA2eX";
    assert!(
        !mask(&minimum, token).contains("R8x2mQ4v"),
        "a GitHub token is masked"
    );
    // A URL's password is masked by default, and left by the narrower scope.
    let url = "postgres://app:Tr0ub4dor3xyz@db.internal:5432/prod";
    assert!(!mask(&default, url).contains("Tr0ub4dor3xyz"));
    assert!(mask(&minimum, url).contains("Tr0ub4dor3xyz"));
}
