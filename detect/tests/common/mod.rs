//! Shared by the integration tests of this crate.

/// The recorded SaaS API pages: `shared/` sits next to the repository clone
/// (`<clone>/../shared`); in a git worktree under `wt/<name>/` it is one level further up.
pub fn shared() -> String {
    let near = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/saas-api-pages"
    );
    let worktree = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/saas-api-pages"
    );
    if std::path::Path::new(near).is_dir() {
        near.to_owned()
    } else {
        worktree.to_owned()
    }
}

/// A record of tenant `test` as the CLI reads it (source `auto`), received after every
/// sample's own time: a vendor time more than a day after receipt would be replaced by this one
/// (`Event::new`).
pub fn record(raw: perimeter_model::RawJson, line: Option<u64>) -> perimeter_model::RawRecord {
    use chrono::TimeZone;
    perimeter_model::RawRecord {
        source: "auto".into(),
        tenant: "test".into(),
        received_at: chrono::Utc
            .with_ymd_and_hms(2026, 12, 31, 0, 0, 0)
            .single()
            .expect("valid date"),
        line,
        raw,
    }
}
