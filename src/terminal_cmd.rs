//! `perimeter tokens|search|alerts|sources|dead-letters|triage`: terminal use against a data directory or a running server.

use crate::config::PerimeterConfig;
use anyhow::Context;
use perimeter_query_api::auth::{Revocation, Role, TokenStore};
use perimeter_query_api::routes::sources::SourceItem;
use perimeter_store::MAX_PAGE_LIMIT;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum TokensCommand {
    /// Create an API token; prints it once (only its hash is stored).
    Create {
        /// Tenant the token may see.
        #[arg(long)]
        tenant: String,
        /// viewer (reads), responder (also changes alerts, ingests), admin (also rules, exports, audit log).
        #[arg(long, value_parser = ["viewer", "responder", "admin"])]
        role: String,
        /// A name to recognise the token by in the audit log.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Refuse the token after this long: a whole number and a unit, s, m, h, d or w (`90d`,
        /// `12h`). Without it the token works until revoked.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// List tokens (ids, tenants, roles; never the tokens themselves).
    List,
    /// Revoke a token by id. Exit code 0 when the token is revoked, by this call or already
    /// before (said so, with when: running it twice is safe); an unknown id is an error
    /// (exit code 2).
    Revoke {
        /// The token's id (12 hex characters, as `tokens list` shows it), not the token itself.
        id: String,
    },
}

fn parse_role(s: &str) -> Role {
    match s {
        "admin" => Role::Admin,
        "responder" => Role::Responder,
        _ => Role::Viewer,
    }
}

pub fn tokens(config: &PerimeterConfig, cmd: TokensCommand) -> anyhow::Result<ExitCode> {
    // Only creating a token makes the data directory; the other commands read it, and a
    // config pointing elsewhere must not pass for "no tokens".
    let data_dir = &config.data_dir;
    if matches!(cmd, TokensCommand::Create { .. }) {
        // Said when it is new: run from another directory, a relative `data_dir` made a new,
        // empty one, and the service knew nothing of the token it held.
        if !data_dir.exists() {
            eprintln!(
                "note: created a new data directory {} (it held no Perimeter data): a service reading another one will not know this token; check `data_dir` and --config",
                std::path::absolute(data_dir)
                    .unwrap_or_else(|_| data_dir.to_path_buf())
                    .display()
            );
        }
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    } else {
        anyhow::ensure!(
            data_dir.is_dir(),
            "no Perimeter data in {} (is `data_dir` or --config right?)",
            data_dir.display()
        );
    }
    let store = TokenStore::open_in(data_dir)
        .with_context(|| format!("opening the token store in {}", data_dir.display()))?;
    match cmd {
        TokensCommand::Create {
            tenant,
            role,
            name,
            expires_in,
        } => {
            let expires_at = expires_in
                .as_deref()
                .map(|d| {
                    perimeter_model::parse_time_delta(d)
                        .map(|after| chrono::Utc::now() + after)
                        .with_context(|| format!("--expires-in {d}"))
                })
                .transpose()?;
            // Tenant names are compared exactly (and are directory names): `ACME` beside `acme`
            // is a second, empty tenant, most likely a typo.
            let mut near: Vec<String> = store
                .list()
                .into_iter()
                .map(|t| t.tenant)
                .filter(|t| t != &tenant && t.eq_ignore_ascii_case(&tenant))
                .collect();
            near.dedup();
            if let Some(other) = near.first() {
                eprintln!(
                    "warning: tenant `{tenant}` is not `{other}`, which has tokens already: names are case-sensitive, and this token sees only `{tenant}`'s data"
                );
            }
            let (info, token) =
                store.create_until(&tenant, parse_role(&role), Some(&name), expires_at)?;
            let until = info
                .expires_at
                .map(|t| {
                    format!(
                        ", expires {}",
                        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )
                })
                .unwrap_or_default();
            // A new credential leaves a trail in the tenant's audit log (QA: none did).
            audit_token_change(
                data_dir,
                &info,
                "tokens.create",
                serde_json::json!({"role": info.role.as_str(), "name": info.name, "expires_at": info.expires_at}),
            )?;
            eprintln!(
                "created token {} (tenant {}, role {}{until}); store it now, it is not shown again:",
                info.id,
                info.tenant,
                info.role.as_str()
            );
            println!("{token}");
        }
        TokensCommand::List => {
            for t in store.list() {
                say_json(&t)?;
            }
        }
        TokensCommand::Revoke { id } => match store.revoke(&id)? {
            Revocation::Revoked => {
                if let Some(info) = store.list().into_iter().find(|t| t.id == id) {
                    audit_token_change(
                        data_dir,
                        &info,
                        "tokens.revoke",
                        serde_json::json!({"role": info.role.as_str(), "name": info.name}),
                    )?;
                }
                eprintln!("revoked {id}")
            }
            Revocation::AlreadyRevoked(at) => eprintln!(
                "token {id} was already revoked at {}; nothing changed",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            Revocation::Unknown => anyhow::bail!("no token with id {id}"),
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// Write `action` on token `info` to its tenant's audit log in `data_dir` (beside a running
/// service, which appends to the same file: each entry is one write of one line).
fn audit_token_change(
    data_dir: &std::path::Path,
    info: &perimeter_query_api::auth::TokenInfo,
    action: &str,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    let entry =
        perimeter_query_api::AuditEntry::by_cli(&info.tenant, action, Some(&info.id), details);
    perimeter_query_api::AuditLog::open_in(data_dir)
        .and_then(|log| log.append(&entry))
        .context("writing the audit log")
}

/// A `--server` value: an `http://` or `https://` URL (a bare `127.0.0.1:8080` got the HTTP
/// client's "relative URL without a base"). The API's own base (`.../api/v1`, as `perimeter
/// demo` prints it) and trailing slashes are taken off: requests add `/api/v1/...` themselves.
fn server_url(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let base = text.trim_end_matches('/');
        let base = base.strip_suffix("/api/v1").unwrap_or(base);
        Ok(base.trim_end_matches('/').to_string())
    } else {
        Err(format!(
            "`{text}` needs its scheme: http://{text} (or https:// for a TLS server)"
        ))
    }
}

/// Where `search`/`alerts`/`export` read from: a running server, or a data directory.
#[derive(clap::Args)]
pub struct Access {
    /// A running server (`http://127.0.0.1:8080`); without it the data directory is read directly.
    #[arg(long, env = "PERIMETER_SERVER", value_parser = server_url, hide_env_values = true)]
    pub server: Option<String>,
    /// API token for `--server`.
    #[arg(long, env = "PERIMETER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA an `https://` server's certificate is checked against, besides the
    /// public roots: a server behind an internal CA. A self-signed server certificate works when
    /// made with `basicConstraints=CA:FALSE` (`openssl req -x509` marks it a CA by default, and a
    /// CA certificate is refused as a server's own).
    #[arg(long, env = "PERIMETER_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Data directory to read when no `--server` is given (default: the configuration's
    /// `data_dir`; `data/demo` holds what `perimeter demo` stored).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Tenant to read when reading the data directory directly (default: the configuration's
    /// `tenant`, or the directory's only tenant when that one has no data there). With
    /// `--server` the token's tenant is read (a warning says so).
    #[arg(long)]
    pub tenant: Option<String>,
}

/// Where `search`/`alerts` read from, and how many results they print how.
#[derive(clap::Args)]
pub struct Target {
    #[command(flatten)]
    pub at: Access,
    /// Most results to print (fetched page by page, so any number works; at least 1).
    #[arg(long, default_value_t = 20,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub limit: usize,
    /// `json`: one JSON object per line (for scripts); `table`: aligned columns (for people);
    /// `auto`: a table at a terminal, JSON otherwise.
    #[arg(long, value_enum, default_value_t = OutputFormat::Auto)]
    pub format: OutputFormat,
}

/// How `search` and `alerts` print what they found.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Auto,
    Json,
    Table,
}

impl OutputFormat {
    /// Whether to print a table to `stdout`: asked for, or `auto` at a terminal.
    fn is_table(self, stdout: &std::io::Stdout) -> bool {
        use std::io::IsTerminal;
        match self {
            OutputFormat::Table => true,
            OutputFormat::Json => false,
            OutputFormat::Auto => stdout.is_terminal(),
        }
    }
}

/// A table column: its header, its width, and where its value is in each item's JSON; a `time`
/// column holds an RFC 3339 time, printed `YYYY-MM-DD hh:mm:ss` (UTC); an `identity` column
/// (users, entities) is cut in the middle, since its end tells ARNs and addresses apart
/// (`arn:aws:sts::3141…/dana.kim@acme-corp.example`).
pub struct Column {
    header: &'static str,
    width: usize,
    path: &'static [&'static str],
    /// Where the value is when `path` holds none.
    or_path: &'static [&'static str],
    time: bool,
    identity: bool,
}

impl Column {
    pub const fn new(header: &'static str, width: usize, path: &'static [&'static str]) -> Self {
        Column {
            header,
            width,
            path,
            or_path: &[],
            time: false,
            identity: false,
        }
    }

    /// This column, read at `path` when its own path holds nothing.
    pub const fn or(self, path: &'static [&'static str]) -> Self {
        Column {
            or_path: path,
            ..self
        }
    }

    pub const fn time(header: &'static str, width: usize, path: &'static [&'static str]) -> Self {
        Column {
            time: true,
            ..Column::new(header, width, path)
        }
    }

    pub const fn identity(
        header: &'static str,
        width: usize,
        path: &'static [&'static str],
    ) -> Self {
        Column {
            identity: true,
            ..Column::new(header, width, path)
        }
    }

    /// This column's cell of `item` (absent values empty).
    fn cell(&self, item: &serde_json::Value) -> String {
        let at = |path: &[&str]| path.iter().fold(item, |v, k| &v[*k]);
        let value = match at(self.path) {
            serde_json::Value::Null if !self.or_path.is_empty() => at(self.or_path),
            value => value,
        };
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        match chrono::DateTime::parse_from_rfc3339(&text) {
            Ok(t) if self.time => t
                .with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string(),
            _ => terminal_safe(&text).into_owned(),
        }
    }
}

/// `text` with control characters (escape sequences, BEL, newlines, tabs) and bidirectional
/// overrides written out as escapes (`\u{1b}`). Values come from audit logs that attackers can
/// write to: printed raw to an analyst's terminal they could clear the screen, retitle the
/// window, hide rows of the alert list or reorder what is shown.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// [`terminal_safe`] line by line: a message of several lines (a config file's error quoting
/// its lines) stays readable, and a control character inside a line is written out.
pub fn terminal_safe_lines(text: &str) -> String {
    let lines: Vec<_> = text.lines().map(terminal_safe).collect();
    lines.join("\n")
}

const ALERT_COLUMNS: &[Column] = &[
    // Its first occurrence: a repeat delivered late, dated before the alert, is its first (QA: an
    // alert listed for a window showed no time inside it).
    Column::time("TIME (UTC)", 20, &["first_seen"]).or(&["alert", "@timestamp"]),
    Column::new("SEVERITY", 13, &["alert", "severity"]),
    Column::new("STATUS", 14, &["alert", "status"]),
    Column::new("SOURCE", 16, &["alert", "source"]),
    Column::new("ALERT", 54, &["alert", "title"]),
    Column::identity("ENTITY", 32, &["alert", "entity"]),
    Column::new("COUNT", 5, &["alert", "count"]),
    // Empty unless repeats were grouped into the alert.
    Column::time("LAST SEEN (UTC)", 20, &["last_seen"]),
    Column::new("ID", 32, &["alert", "id"]),
];

const EVENT_COLUMNS: &[Column] = &[
    Column::time("TIME (UTC)", 20, &["@timestamp"]),
    Column::new("SOURCE", 16, &["event", "module"]),
    Column::new("ACTION", 40, &["event", "action"]),
    Column::new("OUTCOME", 8, &["event", "outcome"]),
    Column::identity("USER", 32, &["user", "name"]),
    Column::new("SOURCE IP", 20, &["source", "ip"]),
    Column::new("ID", 32, &["event", "id"]),
];

/// `s` cut to `n` characters, the last one an ellipsis when cut. A closing qualifier in
/// parentheses (` (repeated)`) is kept after the ellipsis: it is what tells two alerts of one
/// rule apart, and cut off, the first alert and its grouped repeats looked the same.
fn cut(s: &str, n: usize) -> String {
    let len = s.chars().count();
    let qualifier = s
        .rfind(" (")
        .filter(|_| s.ends_with(')'))
        .map(|i| (i, s[i..].chars().count()))
        .filter(|(_, q)| *q <= n / 3);
    if len <= n {
        s.to_string()
    } else if let Some((i, q)) = qualifier {
        let mut t: String = s[..i].chars().take(n - q - 1).collect();
        t.push('…');
        t.push_str(&s[i..]);
        t
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// `s` cut to `n` characters by an ellipsis in the middle: a quarter of the room for its start,
/// the rest for its end.
fn cut_middle(s: &str, n: usize) -> String {
    let len = s.chars().count();
    if len <= n || n < 3 {
        return cut(s, n);
    }
    let head = (n - 1) / 4;
    let tail = n - 1 - head;
    let mut t: String = s.chars().take(head).collect();
    t.push('…');
    t.extend(s.chars().skip(len - tail));
    t
}

/// `items` as aligned columns, headers first.
pub fn write_table(
    out: &mut impl std::io::Write,
    columns: &[Column],
    items: &[serde_json::Value],
) -> std::io::Result<()> {
    writeln!(out, "{}", table_line(columns, &|c| c.header.to_string()))?;
    for item in items {
        writeln!(out, "{}", table_line(columns, &|c| c.cell(item)))?;
    }
    Ok(())
}

/// One line of a table: each column's `cell`, fitted to the column's width. The widths are
/// fixed, so a row is printed without looking at the others.
fn table_line(columns: &[Column], cell: &dyn Fn(&Column) -> String) -> String {
    let cells: Vec<String> = columns
        .iter()
        .map(|c| {
            let text = cell(c);
            let fitted = if c.identity {
                cut_middle(&text, c.width)
            } else {
                cut(&text, c.width)
            };
            format!("{fitted:<w$}", w = c.width)
        })
        .collect();
    cells.join(" ").trim_end().to_string()
}

#[derive(clap::Args)]
pub struct SearchArgs {
    /// Query in tantivy syntax, e.g. 'event.action:user.session.start AND event.outcome:failure'
    /// (a query may start with `-`: `-event.outcome:success`).
    #[arg(allow_hyphen_values = true)]
    pub query: String,
    /// Only events at or after this time: RFC 3339, a date (2024-05-01, UTC) or relative to
    /// now (now-15m, now-24h, now-7d).
    #[arg(long)]
    pub from: Option<String>,
    /// Only events before this time (same forms as --from).
    #[arg(long)]
    pub to: Option<String>,
    /// newest (default) or oldest first (a timeline, to read what happened in order).
    #[arg(long, value_parser = ["newest", "oldest"])]
    pub sort: Option<String>,
    /// Counts instead of events: how many events the query matches per interval of time, and
    /// the total. The interval is `--interval`, or else a round one giving at most 100 buckets.
    /// Buckets start on the minute (hour, day) in UTC; at most 1000 of them.
    #[arg(long, conflicts_with = "sort")]
    pub histogram: bool,
    /// The bucket width of `--histogram`: a whole number and a unit, s, m, h, d or w (`5m`,
    /// `1h`, `1d`).
    #[arg(long, value_name = "INTERVAL", requires = "histogram")]
    pub interval: Option<String>,
    /// Counts instead of events: the most frequent values of this field among the events the
    /// query matches (`--top user.name`: who is behind these hits), at most `--limit` of them
    /// (up to 100). Fields: event.module, event.action, event.outcome, event.category,
    /// event.type, source.ip, source.geo.country_iso_code, organization.id, cloud.account.id,
    /// related.ip (counted exactly in the index), user.name, user.email, user.id,
    /// user.target.name, user.target.email, user.target.id, user_agent.original, related.user
    /// (exact up to `--sample` matches, else counted over the newest ones, and said so).
    #[arg(long, value_name = "FIELD", conflicts_with_all = ["sort", "histogram"])]
    pub top: Option<String>,
    /// With `--top`: the most matching events read from storage (default 10000, at most
    /// 100000).
    #[arg(long, value_name = "N", requires = "top")]
    pub sample: Option<usize>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args)]
pub struct AlertsArgs {
    /// Minimum severity (informational, low, medium, high, critical).
    #[arg(long)]
    pub severity: Option<String>,
    /// open, acknowledged, resolved, false_positive; several separated by commas
    /// (open,acknowledged: the queue still to be worked).
    #[arg(long)]
    pub status: Option<String>,
    /// Only alerts with an occurrence at or after this time (a grouped alert that began
    /// earlier and fired again since counts): RFC 3339, a date (2024-05-01, UTC) or relative
    /// to now (now-15m, now-24h, now-7d).
    #[arg(long)]
    pub from: Option<String>,
    /// Only alerts whose first occurrence is before this time (same forms as --from).
    #[arg(long)]
    pub to: Option<String>,
    /// Only alerts of this rule id.
    #[arg(long)]
    pub rule: Option<String>,
    /// Only alerts from this source (okta, github, ...).
    #[arg(long)]
    pub source: Option<String>,
    /// Only alerts about this entity (user or IP, case-insensitive).
    #[arg(long)]
    pub entity: Option<String>,
    /// Only alerts with each of these words (and "quoted phrases"), case-insensitive, somewhere
    /// in title, description, explanation, entity, rule id, a matched value, tags, ATT&CK
    /// technique ids (T1098), assignee or notes.
    #[arg(long, short = 'q')]
    pub query: Option<String>,
    /// newest (default), oldest, or severity (highest first).
    #[arg(long, value_parser = ["newest", "oldest", "severity"])]
    pub sort: Option<String>,
    /// Counts instead of alerts: total, per severity and status, the busiest rules and entities
    /// of the alerts the filters select (`--status open --from now-24h --summary`).
    #[arg(long, conflicts_with = "sort")]
    pub summary: bool,
    #[command(flatten)]
    pub target: Target,
}

/// The summary's rule lines at a terminal.
const SUMMARY_RULE_COLUMNS: &[Column] = &[
    Column::new("COUNT", 7, &["count"]),
    // The highest among the rule's alerts: a behavioural detector raises one rule at several
    // severities (QA: "4 high" read as four high alerts when three were medium).
    Column::new("MAX SEVERITY", 13, &["severity"]),
    Column::new("RULE", 60, &["title"]),
    Column::new("ID", 36, &["rule_id"]),
];
/// The summary's entity lines at a terminal.
const SUMMARY_ENTITY_COLUMNS: &[Column] = &[
    Column::new("COUNT", 7, &["count"]),
    Column::identity("ENTITY", 60, &["entity"]),
];

fn get_json(target: &Access, path_and_query: &str) -> anyhow::Result<serde_json::Value> {
    if let Some(tenant) = &target.tenant {
        // A token reads its own tenant only; the flag is for data directories. Said once, not
        // per page.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            eprintln!(
                "warning: --tenant {} is not used with --server: the server answers for the token's tenant",
                terminal_safe(tenant)
            )
        });
    }
    let token = target
        .token
        .as_deref()
        // Errors are masked on their way out, and `--token <word>` reads as a credential there:
        // the message names the option last.
        .context("an API token is required with --server: set PERIMETER_TOKEN or pass --token")?;
    api_call(
        target.server.as_deref().unwrap_or_default(),
        token,
        target.ca_cert.as_deref(),
        reqwest::Method::GET,
        path_and_query,
        None,
    )
}

/// An HTTP client for a running server: `ca_cert` trusted besides the public roots, requests
/// given up after `timeout` (`None`: never, for a download of any length).
pub(crate) fn http_client(
    ca_cert: Option<&std::path::Path>,
    timeout: Option<std::time::Duration>,
) -> anyhow::Result<reqwest::blocking::Client> {
    let mut client = reqwest::blocking::Client::builder().timeout(timeout);
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the CA certificate {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .with_context(|| format!("{}: no PEM certificate in it", path.display()))?;
        for cert in certs {
            client = client.add_root_certificate(cert);
        }
    }
    client.build().context("building the HTTP client")
}

/// What to do about a request that got no answer, from its error's words (`failure`, its cause
/// chain): a certificate of a CA the system does not trust (a self-signed one), TLS spoken to
/// a plain `http://` URL. reqwest's words (`UnknownIssuer`, `invalid HTTP version parsed`) said
/// what failed, not how to fix it.
fn send_failure_hint(failure: &str) -> Option<&'static str> {
    if failure.contains("UnknownIssuer") || failure.contains("certificate") {
        Some("the server's certificate is not one this machine trusts: pass its certificate or its CA's with --ca-cert (or PERIMETER_CA_CERT)")
    } else if failure.contains("invalid HTTP version") {
        Some("the server speaks HTTPS: use https:// in --server")
    } else {
        None
    }
}

/// One API request to a running server; an error answer is an error naming the request.
fn api_call(
    server: &str,
    token: &str,
    ca_cert: Option<&std::path::Path>,
    method: reqwest::Method,
    path_and_query: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}/api/v1{path_and_query}", server.trim_end_matches('/'));
    let client = http_client(ca_cert, Some(std::time::Duration::from_secs(30)))?;
    let mut request = client.request(method.clone(), &url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let resp = request
        .send()
        .map_err(|e| {
            let e = anyhow::Error::new(e);
            let hint = send_failure_hint(&format!("{e:#}"));
            match hint {
                Some(hint) => e.context(hint),
                None => e,
            }
        })
        .with_context(|| format!("{method} {url}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .with_context(|| format!("{method} {url}: response is not JSON"))?;
    anyhow::ensure!(status.is_success(), "{method} {url}: {status}: {body}");
    Ok(body)
}

#[derive(clap::Args)]
pub struct TriageArgs {
    /// Alert ids (the ID column of `perimeter alerts`). `-` reads them from stdin, one per
    /// line: plain ids, or the JSON lines `perimeter alerts` prints
    /// (`perimeter alerts --rule R --format json | perimeter triage - --status resolved`).
    #[arg(required = true, num_args = 1..)]
    pub ids: Vec<String>,
    /// New status: open, acknowledged, resolved or false_positive.
    #[arg(long, value_parser = ["open", "acknowledged", "resolved", "false_positive"])]
    pub status: Option<String>,
    /// Who works on it ("" unassigns).
    #[arg(long)]
    pub assignee: Option<String>,
    /// A note added to the alert's history (masked like everything Perimeter stores).
    #[arg(long)]
    pub note: Option<String>,
    #[command(flatten)]
    pub server: ServerAccess,
}

/// A running server and a token, for commands that work only through one (the server records
/// who made a change and when).
#[derive(clap::Args)]
pub struct ServerAccess {
    /// The running server (`http://127.0.0.1:8080`).
    #[arg(long, env = "PERIMETER_SERVER", value_parser = server_url, hide_env_values = true)]
    pub server: String,
    /// API token. Any role may look; changing an alert takes responder, changing a rule admin.
    #[arg(long, env = "PERIMETER_TOKEN", hide_env_values = true)]
    pub token: String,
    /// PEM file of the CA an `https://` server's certificate is checked against, besides the
    /// public roots: a server behind an internal CA. A self-signed server certificate works when
    /// made with `basicConstraints=CA:FALSE` (`openssl req -x509` marks it a CA by default, and a
    /// CA certificate is refused as a server's own).
    #[arg(long, env = "PERIMETER_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<std::path::PathBuf>,
}

impl ServerAccess {
    /// One API request with this token (see [`api_call`]).
    fn call(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        api_call(
            &self.server,
            &self.token,
            self.ca_cert.as_deref(),
            method,
            path_and_query,
            body,
        )
    }
}

#[derive(clap::Args)]
pub struct DeadLettersArgs {
    /// Only input from this source (case-insensitive: `OKTA` finds `okta`'s).
    #[arg(long)]
    pub source: Option<String>,
    /// Only those whose reason or masked excerpt holds this text (case-insensitive).
    #[arg(long, short = 'q')]
    pub query: Option<String>,
    /// When the input was received.
    #[command(flatten)]
    pub time: TimeRange,
    #[command(flatten)]
    pub target: Target,
}

/// `--from`/`--to` of the listings that take them as they are.
#[derive(clap::Args)]
pub struct TimeRange {
    /// Only those at or after this time: RFC 3339, a date (2024-05-01, UTC) or relative to now
    /// (now-15m, now-24h, now-7d).
    #[arg(long)]
    pub from: Option<String>,
    /// Only those before this time (same forms as --from).
    #[arg(long)]
    pub to: Option<String>,
}

impl TimeRange {
    /// The two bounds parsed, for reading a data directory.
    pub(crate) fn parsed(&self) -> anyhow::Result<[Option<chrono::DateTime<chrono::Utc>>; 2]> {
        Ok([
            parse_time(&self.from).context("--from")?,
            parse_time(&self.to).context("--to")?,
        ])
    }
}

const DEAD_LETTER_COLUMNS: &[Column] = &[
    Column::time("RECEIVED (UTC)", 20, &["received_at"]),
    Column::new("SOURCE", 16, &["source"]),
    Column::new("LINE", 8, &["line"]),
    Column::new("REASON", 60, &["reason"]),
    Column::new("EXCERPT (MASKED)", 60, &["excerpt"]),
];

/// `perimeter dead-letters`: the input that could not be used, newest first, with line, reason
/// and a masked excerpt, from a data directory or a running server.
pub fn dead_letters(config: &PerimeterConfig, args: DeadLettersArgs) -> anyhow::Result<ExitCode> {
    let mut printer = ItemPrinter::new(args.target.format, DEAD_LETTER_COLUMNS);
    if args.target.at.server.is_some() {
        let filters = [
            ("source", &args.source),
            ("q", &args.query),
            ("from", &args.time.from),
            ("to", &args.time.to),
        ];
        server_items(&args.target, "/dead-letters", &filters, &mut printer)?
    } else {
        let (store, tenant) = local_store(&args.target.at, config)?;
        let [from, to] = args.time.parsed()?;
        let query = perimeter_store::DeadLetterQuery {
            source: args.source.clone(),
            text: args.query.clone(),
            from,
            to,
            ..Default::default()
        };
        paged(args.target.limit, &mut printer, |limit, cursor| {
            let page = store.list_dead_letters(
                &tenant,
                &perimeter_store::DeadLetterQuery {
                    limit,
                    cursor,
                    ..query.clone()
                },
            )?;
            Ok((page.items, page.next_cursor))
        })?
    };
    printer.finish("dead letters")
}

#[derive(clap::Args)]
pub struct AuditArgs {
    /// Only this action: alerts.update, alerts.get, alerts.list, events.search, events.export,
    /// rules.test, audit.list, ...; a trailing * matches a prefix (`alerts.*`).
    #[arg(long)]
    pub action: Option<String>,
    /// Only what this API token did (its id or its name).
    #[arg(long, value_name = "TOKEN_ID_OR_NAME")]
    pub by: Option<String>,
    /// Only the entries about this alert or event id.
    #[arg(long, value_name = "ID")]
    pub about: Option<String>,
    #[command(flatten)]
    pub time: TimeRange,
    #[command(flatten)]
    pub target: Target,
}

const AUDIT_COLUMNS: &[Column] = &[
    Column::time("TIME (UTC)", 20, &["timestamp"]),
    Column::new("ACTION", 18, &["action"]),
    Column::identity("TOKEN", 20, &["token_name"]),
    Column::new("ROLE", 9, &["role"]),
    Column::new("TARGET", 32, &["target"]),
    Column::new("DETAILS", 70, &["details"]),
];

/// `perimeter audit`: the API's audit log, newest first, from a running server (admin token)
/// or the data directory's `audit.jsonl` (read only, beside a running server).
pub fn audit(config: &PerimeterConfig, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let filters = [
        ("action", &args.action),
        ("token", &args.by),
        ("target", &args.about),
        ("from", &args.time.from),
        ("to", &args.time.to),
    ];
    let mut printer = ItemPrinter::new(args.target.format, AUDIT_COLUMNS);
    if args.target.at.server.is_some() {
        server_items(&args.target, "/audit", &filters, &mut printer)?
    } else {
        let dir = args.target.at.data_dir.as_ref().unwrap_or(&config.data_dir);
        let path = dir.join(perimeter_query_api::audit::AUDIT_FILE);
        anyhow::ensure!(
            path.is_file(),
            "no API audit log in {}: the API was never used on this data directory (or it is not \
             one: pass --data-dir, or --server for a running `perimeter run`)",
            dir.display()
        );
        let log = perimeter_query_api::AuditLog::open_read_only(&path)?;
        let [from, to] = args.time.parsed()?;
        // The tenant as the other commands choose it (those with data in the directory),
        // except that a tenant named with `--tenant` may have used the API without storing
        // anything: its entries are in the log all the same.
        let tenant = match (local_store(&args.target.at, config), &args.target.at.tenant) {
            (Ok((_, tenant)), _) => tenant,
            (Err(e), Some(t)) => {
                let has_entries = log
                    .query(&perimeter_query_api::AuditQuery {
                        tenant: t.clone(),
                        limit: 1,
                        ..Default::default()
                    })
                    .is_ok_and(|page| !page.items.is_empty());
                // A misspelt tenant is still an error, not an empty log.
                if !has_entries {
                    return Err(e);
                }
                t.clone()
            }
            (Err(e), None) => return Err(e),
        };
        let query = perimeter_query_api::AuditQuery {
            tenant,
            action: args.action.clone(),
            token: args.by.clone(),
            target: args.about.clone(),
            from,
            to,
            ..Default::default()
        };
        paged(args.target.limit, &mut printer, |limit, cursor| {
            let page = log.query(&perimeter_query_api::AuditQuery {
                limit,
                cursor,
                ..query.clone()
            })?;
            Ok((page.items, page.next_cursor))
        })?
    };
    printer.finish("audit entries")
}

#[derive(clap::Args)]
pub struct ContextArgs {
    /// The event's id (`event.id` of a search hit, or an id of an alert's evidence).
    pub id: String,
    /// user: the events of the event's user (as actor or target); ip: those from or about its
    /// addresses.
    #[arg(long, default_value = "user", value_parser = ["user", "ip"])]
    pub by: String,
    /// How far before and after the event (`15m`, `2h`, `1d`; at most 30d).
    #[arg(long, default_value = "15m", value_name = "DURATION")]
    pub window: String,
    #[command(flatten)]
    pub target: Target,
}

/// `perimeter context ID`: the events of an event's user (or address) around it, oldest first;
/// what was searched, and whether there is more, on stderr.
pub fn context(config: &PerimeterConfig, args: ContextArgs) -> anyhow::Result<ExitCode> {
    let limit = args
        .target
        .limit
        .clamp(1, perimeter_store::MAX_CONTEXT_EVENTS);
    let body = if args.target.at.server.is_some() {
        let params = query_string(&[
            ("by", &Some(args.by.clone())),
            ("window", &Some(args.window.clone())),
            ("limit", &Some(limit.to_string())),
        ]);
        get_json(
            &args.target.at,
            &format!("/events/{}/context?{params}", enc(&args.id)),
        )?
    } else {
        let (store, tenant) = local_store(&args.target.at, config)?;
        let by: perimeter_store::ContextPivot = args.by.parse().map_err(anyhow::Error::msg)?;
        let window = perimeter_model::parse_time_delta(&args.window)
            .with_context(|| format!("--window {}", args.window))?;
        let found = store
            .event_context(&tenant, &args.id, by, window, limit)?
            .with_context(|| format!("no event `{}` in tenant {tenant}", args.id))?;
        serde_json::to_value(found)?
    };
    let items = body["items"].as_array().cloned().unwrap_or_default();
    let values: Vec<&str> = body["values"]
        .as_array()
        .map(|v| v.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    eprintln!(
        "events of {} {} from {} to {} (search: {})",
        args.by,
        terminal_safe(&values.join(", ")),
        terminal_safe(body["from"].as_str().unwrap_or("")),
        terminal_safe(body["to"].as_str().unwrap_or("")),
        terminal_safe(body["query"].as_str().unwrap_or(""))
    );
    if body["more"].as_bool() == Some(true) {
        eprintln!(
            "more events matched than --limit {limit} (at most {}); the search above pages on",
            perimeter_store::MAX_CONTEXT_EVENTS
        );
    }
    print_items(&items, "events", args.target.format, EVENT_COLUMNS)
}

#[derive(clap::Args)]
pub struct SourcesArgs {
    /// Only the sources quiet for at least this long (`30m`, `6h`, `2d`), and exit code 1 when
    /// there is any, or when the tenant has no source at all (nothing ever delivered, or all of
    /// it past retention): `perimeter sources --silent-for 6h || <alert someone>` in a cron job.
    #[arg(long, value_name = "DURATION", value_parser = parse_silence)]
    pub silent_for: Option<i64>,
    #[command(flatten)]
    pub target: Target,
}

fn parse_silence(s: &str) -> Result<i64, String> {
    perimeter_model::parse_duration(s).map_err(|e| e.to_string())
}

const SOURCE_COLUMNS: &[Column] = &[
    Column::new("SOURCE", 26, &["source"]),
    Column::time("NEWEST EVENT (UTC)", 20, &["newest_event"]),
    Column::new("SILENT FOR", 12, &["silent_for"]),
    Column::new("EVENTS (24H)", 12, &["events_24h"]),
];

/// `perimeter sources`: each source's newest event and how long it has been quiet, from a data
/// directory or a running server.
pub fn sources(config: &PerimeterConfig, args: SourcesArgs) -> anyhow::Result<ExitCode> {
    let mut items: Vec<serde_json::Value> = if args.target.at.server.is_some() {
        let body = get_json(&args.target.at, "/sources")?;
        body["items"].as_array().cloned().unwrap_or_default()
    } else {
        let (store, tenant) = local_store(&args.target.at, config)?;
        let now = chrono::Utc::now();
        // The API's items, so both ways of reading print the same.
        store
            .source_activity(&tenant, now)?
            .into_iter()
            .map(|a| serde_json::to_value(SourceItem::new(a, now)))
            .collect::<Result<_, _>>()?
    };
    let silent = |item: &serde_json::Value| item["silent_seconds"].as_i64().unwrap_or(0);
    // A tenant none of whose integrations ever delivered is the quietest of all (QA: a
    // monitor pointed at one reported green).
    let none_at_all = items.is_empty();
    if none_at_all && args.silent_for.is_some() {
        eprintln!("no source has stored an event for this tenant: every source is silent");
    }
    if let Some(at_least) = args.silent_for {
        items.retain(|item| silent(item) >= at_least);
    }
    let any_silent = !items.is_empty();
    // `--limit` bounds what is printed; the exit code of `--silent-for` is of all of them.
    let more = items.len().saturating_sub(args.target.limit);
    items.truncate(args.target.limit);
    let stdout = std::io::stdout();
    if args.target.format.is_table(&stdout) {
        for item in &mut items {
            item["silent_for"] = serde_json::Value::String(rough_duration(silent(item)));
        }
    }
    print_items(&items, "sources", args.target.format, SOURCE_COLUMNS)?;
    if more > 0 {
        eprintln!("... and {more} more source(s) (raise --limit to see them)");
    }
    Ok(
        if args.silent_for.is_some() && (any_silent || none_at_all) {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// Seconds as a person reads a span: the two largest units (`3d 4h`, `2h 5m`, `12m`, `40s`).
fn rough_duration(seconds: i64) -> String {
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let mut parts = Vec::new();
    let mut rest = seconds.max(0);
    for (unit, size) in units {
        if rest >= size || (parts.is_empty() && size == 1) {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        } else if !parts.is_empty() {
            // A zero between two units still counts as one of the two.
            parts.push(String::new());
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.retain(|p| !p.is_empty());
    parts.join(" ")
}

/// `perimeter rules list`'s columns at a terminal.
const RULE_COLUMNS: &[Column] = &[
    Column::new("ON", 5, &["enabled"]),
    Column::new("OFF FOR", 7, &["off_for_entities"]),
    Column::new("KIND", 11, &["kind"]),
    Column::new("LEVEL", 13, &["level"]),
    Column::new("RULE", 60, &["title"]),
    Column::new("ID", 36, &["id"]),
];

/// `perimeter rules list`: the rules a running server uses, with what the token's tenant
/// switched off (`off`: only those switched off, for everyone or for some entities).
pub fn list_rules(
    target: &ServerAccess,
    off: bool,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let body = target.call(reqwest::Method::GET, "/rules", None)?;
    let mut rules: Vec<serde_json::Value> = body["rules"].as_array().cloned().unwrap_or_default();
    for rule in &mut rules {
        let off_for = rule["switched_off_for"].as_object().map_or(0, |m| m.len());
        rule["off_for_entities"] = off_for.into();
    }
    if off {
        rules.retain(|r| r["enabled"] == false || r["off_for_entities"] != 0);
    }
    print_items(&rules, "rules", format, RULE_COLUMNS)
}

/// `perimeter rules disable|enable`: switch a rule off or on for the token's tenant; `body` is
/// the `PATCH /rules/{id}` request (absent options as nulls).
pub fn switch_rule(
    target: &ServerAccess,
    id: &str,
    mut body: serde_json::Value,
) -> anyhow::Result<ExitCode> {
    if let Some(fields) = body.as_object_mut() {
        fields.retain(|_, v| !v.is_null());
    }
    let rule = target.call(
        reqwest::Method::PATCH,
        &format!("/rules/{}", enc(id)),
        Some(&body),
    )?;
    say_json(&rule)?;
    let scope = match body["entity"].as_str() {
        Some(entity) => format!("for entity {entity}"),
        None => "for this tenant".to_string(),
    };
    // The time the server resolved (`now+30d` as a date), where the answer has it.
    let switched = match body["entity"].as_str() {
        Some(entity) => &rule["switched_off_for"][entity],
        None => &rule["switched_off"],
    };
    let until = switched["until"].as_str().or(body["until"].as_str());
    let state = match (body["enabled"].as_bool(), until) {
        (Some(true), _) => "on".to_string(),
        (_, Some(until)) => format!("off until {until}: its alerts are dropped"),
        _ => "off: its alerts are dropped".to_string(),
    };
    eprintln!(
        "rule {id} ({}) is now {state} {scope}",
        terminal_safe(rule["title"].as_str().unwrap_or("?")),
    );
    Ok(ExitCode::SUCCESS)
}

/// `perimeter triage`: change the status, assignee or notes of alerts through a running
/// server, or, with none of them, show each alert with its history and evidence. An alert that
/// fails (unknown id, no permission) is reported and the others go on; the exit code is 1 then.
pub fn triage(args: TriageArgs) -> anyhow::Result<ExitCode> {
    let mut change = serde_json::Map::new();
    for (key, value) in [
        ("status", &args.status),
        ("assignee", &args.assignee),
        ("note", &args.note),
    ] {
        if let Some(v) = value {
            change.insert(key.into(), serde_json::Value::String(v.clone()));
        }
    }
    let ids = triage_ids(&args.ids)?;
    anyhow::ensure!(!ids.is_empty(), "no alert ids given (stdin held none)");
    let body = (!change.is_empty()).then_some(serde_json::Value::Object(change));
    // Without changes, each alert is shown.
    let method = match body {
        Some(_) => reqwest::Method::PATCH,
        None => reqwest::Method::GET,
    };
    let mut failed = 0;
    for id in &ids {
        let path = format!("/alerts/{}", enc(id));
        let record = match args.server.call(method.clone(), &path, body.as_ref()) {
            Ok(record) => record,
            Err(e) => {
                failed += 1;
                eprintln!(
                    "alert {}: {}",
                    terminal_safe(id),
                    terminal_safe(&crate::logging::masked(&crate::error_text(&e)))
                );
                continue;
            }
        };
        say_json(&record)?;
        let alert = &record["alert"];
        // Titles, assignees and notes come from log data and from other analysts: written out
        // with their control characters escaped, as the tables are.
        eprintln!(
            "alert {}: {} [{}], status {}, assignee {}, {} change(s) in its history",
            terminal_safe(id),
            terminal_safe(alert["title"].as_str().unwrap_or("?")),
            terminal_safe(alert["severity"].as_str().unwrap_or("?")),
            terminal_safe(alert["status"].as_str().unwrap_or("?")),
            terminal_safe(record["assignee"].as_str().unwrap_or("none")),
            record["history"].as_array().map_or(0, Vec::len),
        );
        if let Some(gone) = record["evidence_missing"]
            .as_array()
            .filter(|g| !g.is_empty())
        {
            eprintln!(
                "alert {}: {} of its evidence events are no longer stored (event retention)",
                terminal_safe(id),
                gone.len()
            );
        }
    }
    if ids.len() > 1 {
        let done = if body.is_some() { "changed" } else { "shown" };
        eprintln!(
            "{} of {} alerts {done}, {failed} failed",
            ids.len() - failed,
            ids.len()
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The ids to triage: the arguments, with `-` replaced by the ids read from stdin (plain ids,
/// or JSON lines with `alert.id` or `id`); each once, in the order first given (an id twice,
/// from a list joined from two queries, would have its note added twice).
fn triage_ids(args: &[String]) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for arg in args {
        if arg != "-" {
            ids.push(arg.clone());
            continue;
        }
        for (n, line) in std::io::stdin().lines().enumerate() {
            let line = line.context("reading alert ids from stdin")?;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            // A JSON line cut short or mangled is not an id (it would be sent as one, and
            // answered "no such alert" under a name nobody recognises).
            anyhow::ensure!(
                !line.starts_with('{') || serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "stdin line {} is not valid JSON: {line}",
                n + 1
            );
            let id = match serde_json::from_str::<serde_json::Value>(line) {
                Ok(doc) if doc.is_object() => doc
                    .pointer("/alert/id")
                    .or_else(|| doc.get("id"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .with_context(|| format!("a JSON line without `alert.id` or `id`: {line}"))?,
                _ => line.to_string(),
            };
            ids.push(id);
        }
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    Ok(ids)
}

/// One JSON document on stdout, as a line.
fn say_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    Ok(())
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, URL_COMPONENT).to_string()
}

/// What a URL path segment or query value escapes: all but letters, digits and `-_.~`.
const URL_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `--sort newest|oldest` (newest when absent) for reading a data directory.
pub(crate) fn event_sort(s: &Option<String>) -> anyhow::Result<perimeter_store::EventSort> {
    Ok(s.as_deref()
        .map(str::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?
        .unwrap_or_default())
}

fn parse_time(s: &Option<String>) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    Ok(s.as_deref()
        .map(|t| perimeter_model::parse_time_bound(t, chrono::Utc::now()))
        .transpose()?)
}

/// Up to `limit` items printed page after page: a page holds at most [`MAX_PAGE_LIMIT`]
/// items, and `--limit 5000` means 5000, not the first page. `page(size, cursor)` fetches one
/// page and its `next_cursor`. Each page is printed before the next is fetched: a reader sees the
/// first results at once, and memory holds one page, whatever the limit.
fn paged<T: serde::Serialize>(
    limit: usize,
    printer: &mut ItemPrinter,
    mut page: impl FnMut(usize, Option<String>) -> anyhow::Result<(Vec<T>, Option<String>)>,
) -> anyhow::Result<()> {
    let mut shown = 0;
    let mut cursor = None;
    // A page longer than asked, or a cursor left over: more than `limit` match.
    let mut more = false;
    while shown < limit {
        let room = limit - shown;
        let (got, next) = page(room.min(MAX_PAGE_LIMIT), cursor.take())?;
        more |= got.len() > room;
        let got = &got[..got.len().min(room)];
        printer.page(got)?;
        shown += got.len();
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    // Said on stderr, beside the count: a script piping the output on (`alerts --format json |
    // triage -`) would otherwise handle the first `--limit` only, unaware of the rest.
    if more || cursor.is_some() {
        eprintln!("more match than --limit {limit}: only the first {limit} are shown (raise --limit for the rest)");
    }
    Ok(())
}

/// Up to `--limit` items from a running server, printed page by page: `path` (no query string)
/// with the filters that are set, `limit`, and the cursor of each next page.
fn server_items(
    target: &Target,
    path: &str,
    filters: &[(&str, &Option<String>)],
    printer: &mut ItemPrinter,
) -> anyhow::Result<()> {
    let params = query_string(filters);
    paged(target.limit, printer, |size, cursor| {
        let mut page_params = vec![format!("limit={size}")];
        if !params.is_empty() {
            page_params.push(params.clone());
        }
        if let Some(c) = cursor {
            page_params.push(format!("cursor={}", enc(&c)));
        }
        let body = get_json(&target.at, &format!("{path}?{}", page_params.join("&")))?;
        let next = body["next_cursor"].as_str().map(str::to_string);
        let items = match body {
            serde_json::Value::Object(mut o) => match o.remove("items") {
                Some(serde_json::Value::Array(items)) => items,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        Ok((items, next))
    })
}

/// `k=v&...` of the filters that are set, values percent-encoded.
pub(crate) fn query_string(filters: &[(&str, &Option<String>)]) -> String {
    filters
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v))))
        .collect::<Vec<_>>()
        .join("&")
}

/// The store in the data directory `target` names, and the tenant to read. Reading never
/// creates a data directory: a missing one is an error saying where to look instead.
pub(crate) fn local_store(
    target: &Access,
    config: &PerimeterConfig,
) -> anyhow::Result<(perimeter_store::Store, String)> {
    let dir = target.data_dir.as_ref().unwrap_or(&config.data_dir);
    // A service that has stored no event yet may have dead letters, an audit log or tokens:
    // that is when someone asks why nothing was stored (QA: refused as "no Perimeter data").
    anyhow::ensure!(
        ["index", "alerts", "dead_letters"]
            .iter()
            .any(|d| dir.join(d).is_dir())
            || ["audit.jsonl", "api-tokens.json", "state/mask.key"]
                .iter()
                .any(|f| dir.join(f).is_file()),
        "no Perimeter data in {}: pass --data-dir (`perimeter demo` stores into data/demo) or \
         --server for a running `perimeter run`",
        dir.display()
    );
    let store = crate::run::open_store_read_only(config, dir)?;
    let tenant = choose_tenant(target, config, dir, &store.tenants())?;
    Ok((store, tenant))
}

/// The tenant to read in `dir`, whose tenants with data are `tenants`: `--tenant`, which must
/// be one of them (a misspelt tenant read as empty would look like a quiet day, and make
/// `sources --silent-for` report no blind spot); else the configuration's, or the directory's
/// only tenant when the configuration's has no data there.
fn choose_tenant(
    target: &Access,
    config: &PerimeterConfig,
    dir: &std::path::Path,
    tenants: &[String],
) -> anyhow::Result<String> {
    if let Some(t) = &target.tenant {
        anyhow::ensure!(
            tenants.is_empty() || tenants.contains(t),
            "tenant {t} has no data in {}; its tenants: {}",
            dir.display(),
            tenants.join(", ")
        );
        return Ok(t.clone());
    }
    Ok(match tenants {
        [only] if *only != config.tenant => {
            eprintln!(
                "reading tenant {only}, the only one in {} (--tenant to choose)",
                dir.display()
            );
            only.clone()
        }
        [] | [_] => config.tenant.clone(),
        many => {
            anyhow::ensure!(
                many.contains(&config.tenant),
                "tenant {} has no data in {}; choose one with --tenant: {}",
                config.tenant,
                dir.display(),
                many.join(", ")
            );
            config.tenant.clone()
        }
    })
}

/// Listed items to stdout as they come: JSON lines, or table rows at a terminal (`--format`);
/// then their count on stderr. Written, not `println!`ed: a reader that stops early (`| head`)
/// is an error to return, not a panic.
struct ItemPrinter {
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    /// The table's columns, and whether its header is out; `None` for JSON lines.
    table: Option<(&'static [Column], bool)>,
    count: usize,
}

impl ItemPrinter {
    fn new(format: OutputFormat, columns: &'static [Column]) -> ItemPrinter {
        let stdout = std::io::stdout();
        let table = format.is_table(&stdout).then_some((columns, false));
        ItemPrinter {
            out: std::io::BufWriter::new(stdout.lock()),
            table,
            count: 0,
        }
    }

    /// Print `items` (and the table's header before the first), flushed: a page is seen as
    /// soon as it is read.
    fn page<T: serde::Serialize>(&mut self, items: &[T]) -> anyhow::Result<()> {
        use std::io::Write;
        self.header()?;
        for item in items {
            // Through a `Value`, as before: its keys print sorted, whatever `T`'s field order.
            let item = serde_json::to_value(item)?;
            match self.table {
                Some((columns, _)) => {
                    writeln!(self.out, "{}", table_line(columns, &|c| c.cell(&item)))?
                }
                None => {
                    serde_json::to_writer(&mut self.out, &item)?;
                    self.out.write_all(b"\n")?;
                }
            }
        }
        self.count += items.len();
        self.out.flush()?;
        Ok(())
    }

    /// The table's header, once (an empty listing gets one too).
    fn header(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        if let Some((columns, done @ false)) = &mut self.table {
            *done = true;
            writeln!(
                self.out,
                "{}",
                table_line(columns, &|c| c.header.to_string())
            )?;
        }
        Ok(())
    }

    /// The output completed, and `N <what>` said on stderr.
    fn finish(mut self, what: &str) -> anyhow::Result<ExitCode> {
        use std::io::Write;
        self.header()?;
        self.out.flush()?;
        eprintln!("{} {what}", self.count);
        Ok(ExitCode::SUCCESS)
    }
}

fn print_items(
    items: &[serde_json::Value],
    what: &str,
    format: OutputFormat,
    columns: &'static [Column],
) -> anyhow::Result<ExitCode> {
    let mut printer = ItemPrinter::new(format, columns);
    printer.page(items)?;
    printer.finish(what)
}

pub fn search(config: &PerimeterConfig, args: SearchArgs) -> anyhow::Result<ExitCode> {
    if args.histogram {
        return histogram(config, &args);
    }
    if let Some(field) = &args.top {
        return top_values(config, &args, field);
    }
    let mut printer = ItemPrinter::new(args.target.format, EVENT_COLUMNS);
    if args.target.at.server.is_some() {
        let query = Some(args.query.clone());
        server_items(
            &args.target,
            "/events/search",
            &[
                ("q", &query),
                ("from", &args.from),
                ("to", &args.to),
                ("sort", &args.sort),
            ],
            &mut printer,
        )?
    } else {
        let (store, tenant) = local_store(&args.target.at, config)?;
        let (from, to) = (parse_time(&args.from)?, parse_time(&args.to)?);
        let sort = event_sort(&args.sort)?;
        paged(args.target.limit, &mut printer, |limit, cursor| {
            let q = perimeter_store::EventQuery {
                query: args.query.clone(),
                from,
                to,
                limit,
                cursor,
                sort,
            };
            let page = store.search_events(&tenant, &q)?;
            Ok((page.items, page.next_cursor))
        })?
    };
    printer.finish("events")
}

/// `perimeter search --histogram`: the counts from a server or the data directory, printed.
fn histogram(config: &PerimeterConfig, args: &SearchArgs) -> anyhow::Result<ExitCode> {
    let interval = args.interval.clone();
    let body = if args.target.at.server.is_some() {
        let query = Some(args.query.clone());
        let params = query_string(&[
            ("q", &query),
            ("from", &args.from),
            ("to", &args.to),
            ("interval", &interval),
        ]);
        get_json(&args.target.at, &format!("/events/histogram?{params}"))?
    } else {
        let interval_seconds = interval
            .as_deref()
            .map(perimeter_model::parse_duration)
            .transpose()?;
        let (store, tenant) = local_store(&args.target.at, config)?;
        let h = store.event_histogram(
            &tenant,
            &perimeter_store::EventHistogramQuery {
                query: args.query.clone(),
                from: parse_time(&args.from)?,
                to: parse_time(&args.to)?,
                interval_seconds,
            },
        )?;
        serde_json::to_value(h)?
    };
    print_histogram(&body, args.target.format)
}

/// `perimeter search --top FIELD`: the field's most frequent values, from a server or the data
/// directory, printed.
fn top_values(
    config: &PerimeterConfig,
    args: &SearchArgs,
    field: &str,
) -> anyhow::Result<ExitCode> {
    let limit = args.target.limit.clamp(1, perimeter_store::MAX_TOP_VALUES);
    let body = if args.target.at.server.is_some() {
        let params = query_string(&[
            ("field", &Some(field.to_string())),
            ("q", &Some(args.query.clone())),
            ("from", &args.from),
            ("to", &args.to),
            ("limit", &Some(limit.to_string())),
            ("sample", &args.sample.map(|n| n.to_string())),
        ]);
        get_json(&args.target.at, &format!("/events/top?{params}"))?
    } else {
        let (store, tenant) = local_store(&args.target.at, config)?;
        let top = store.top_values(
            &tenant,
            &perimeter_store::TopValuesQuery {
                query: args.query.clone(),
                from: parse_time(&args.from)?,
                to: parse_time(&args.to)?,
                field: field.to_string(),
                limit,
                sample: args.sample.unwrap_or(perimeter_store::DEFAULT_TOP_SAMPLE),
            },
        )?;
        serde_json::to_value(top)?
    };
    print_document(&body, args.target.format, |out| {
        write_top_values(out, &body)
    })
}

/// Top values at a terminal: what was counted, then a line per value with its share and a bar.
fn write_top_values(
    out: &mut impl std::io::Write,
    body: &serde_json::Value,
) -> std::io::Result<()> {
    let total = body["total"].as_u64().unwrap_or(0);
    let counted = body["counted"].as_u64().unwrap_or(0);
    if body["exact"].as_bool() == Some(false) {
        writeln!(
            out,
            "{}: {total} events match; the newest {counted} were counted (--sample)",
            body["field"].as_str().unwrap_or("")
        )?;
    } else {
        writeln!(
            out,
            "{}: {total} events match",
            body["field"].as_str().unwrap_or("")
        )?;
    }
    let values = body["values"].as_array().cloned().unwrap_or_default();
    let max = values
        .iter()
        .filter_map(|v| v["count"].as_u64())
        .max()
        .unwrap_or(0);
    let width = values
        .iter()
        .filter_map(|v| v["value"].as_str())
        .map(|v| v.chars().count())
        .max()
        .unwrap_or(0)
        .min(60);
    let mut line = |label: &str, count: u64, bar: bool| {
        let share = 100.0 * count as f64 / counted.max(1) as f64;
        let marks = if bar && count > 0 {
            "#".repeat((count * HISTOGRAM_BAR_WIDTH).div_ceil(max.max(1)) as usize)
        } else {
            String::new()
        };
        writeln!(out, "{label:<width$}  {count:>9}  {share:>5.1}%  {marks}")
    };
    for v in &values {
        let value: String = terminal_safe(v["value"].as_str().unwrap_or(""))
            .chars()
            .take(60)
            .collect();
        line(&value, v["count"].as_u64().unwrap_or(0), true)?;
    }
    let other = body["other"].as_u64().unwrap_or(0);
    if other > 0 {
        line("(other values)", other, false)?;
    }
    let missing = body["missing"].as_u64().unwrap_or(0);
    if missing > 0 {
        line("(no value)", missing, false)?;
    }
    Ok(())
}

/// Widest bar of a histogram at a terminal.
const HISTOGRAM_BAR_WIDTH: u64 = 50;

/// A histogram: one JSON document, or at a terminal a line per bucket with a bar.
fn print_histogram(body: &serde_json::Value, format: OutputFormat) -> anyhow::Result<ExitCode> {
    print_document(body, format, |out| write_histogram(out, body))
}

fn write_histogram(out: &mut impl std::io::Write, body: &serde_json::Value) -> std::io::Result<()> {
    let buckets = body["buckets"].as_array().cloned().unwrap_or_default();
    let interval = body["interval_seconds"].as_i64().unwrap_or(0);
    writeln!(
        out,
        "{} events, {} buckets of {}",
        body["total"],
        buckets.len(),
        duration_text(interval)
    )?;
    let max = buckets
        .iter()
        .filter_map(|b| b["count"].as_u64())
        .max()
        .unwrap_or(0);
    let time = Column::time("", 19, &["start"]);
    for b in &buckets {
        let count = b["count"].as_u64().unwrap_or(0);
        // Any bucket with events shows at least one mark, so a lone event is not invisible.
        let width = if count == 0 {
            0
        } else {
            (count * HISTOGRAM_BAR_WIDTH).div_ceil(max.max(1))
        };
        let bar = "#".repeat(width as usize);
        writeln!(out, "{}  {count:>9}  {bar}", time.cell(b))?;
    }
    Ok(())
}

/// One JSON document (`body`), or at a terminal what `table` writes of it.
fn print_document(
    body: &serde_json::Value,
    format: OutputFormat,
    table: impl FnOnce(&mut std::io::BufWriter<std::io::StdoutLock<'static>>) -> std::io::Result<()>,
) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let stdout = std::io::stdout();
    if !format.is_table(&stdout) {
        say_json(body)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::BufWriter::new(stdout.lock());
    table(&mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Seconds as the largest unit that divides them: `600` is `10m`, `86400` is `1d`.
fn duration_text(seconds: i64) -> String {
    for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds >= size && seconds % size == 0 {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

pub fn alerts(config: &PerimeterConfig, args: AlertsArgs) -> anyhow::Result<ExitCode> {
    let filters = [
        ("severity", &args.severity),
        ("status", &args.status),
        ("from", &args.from),
        ("to", &args.to),
        ("rule", &args.rule),
        ("source", &args.source),
        ("entity", &args.entity),
        ("q", &args.query),
    ];
    if args.summary {
        let summary = if args.target.at.server.is_some() {
            get_json(
                &args.target.at,
                &format!("/alerts/summary?{}", query_string(&filters)),
            )?
        } else {
            let (store, tenant) = local_store(&args.target.at, config)?;
            serde_json::to_value(store.alert_summary(&tenant, &local_alert_query(&args)?))?
        };
        return print_summary(&summary, args.target.format);
    }
    let mut printer = ItemPrinter::new(args.target.format, ALERT_COLUMNS);
    if args.target.at.server.is_some() {
        let mut filters = filters.to_vec();
        filters.push(("sort", &args.sort));
        server_items(&args.target, "/alerts", &filters, &mut printer)?
    } else {
        let (store, tenant) = local_store(&args.target.at, config)?;
        let q = local_alert_query(&args)?;
        paged(args.target.limit, &mut printer, |limit, cursor| {
            let page = store.list_alerts(
                &tenant,
                &perimeter_store::AlertQuery {
                    limit,
                    cursor,
                    ..q.clone()
                },
            )?;
            Ok((page.items, page.next_cursor))
        })?
    };
    printer.finish("alerts")
}

/// The store query of `perimeter alerts`' filters, for a data directory.
fn local_alert_query(args: &AlertsArgs) -> anyhow::Result<perimeter_store::AlertQuery> {
    let mut q = perimeter_store::AlertQuery {
        limit: args.target.limit,
        from: parse_time(&args.from)?,
        to: parse_time(&args.to)?,
        rule_id: args.rule.clone(),
        source: args.source.clone(),
        entity: args.entity.clone(),
        text: args.query.clone(),
        ..Default::default()
    };
    if let Some(s) = &args.severity {
        q.severity = Some(
            perimeter_model::Severity::parse(s).with_context(|| format!("unknown severity {s}"))?,
        );
    }
    if let Some(list) = &args.status {
        for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            q.statuses.push(
                // Case aside, as the API takes it.
                serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
                    .with_context(|| format!("unknown status {s}"))?,
            );
        }
    }
    if let Some(s) = &args.sort {
        q.sort = serde_json::from_value(serde_json::Value::String(s.clone()))
            .with_context(|| format!("unknown sort {s}"))?;
    }
    Ok(q)
}

/// An alert summary: one JSON document, or at a terminal (`--format table`) the counts and
/// the busiest rules and entities as tables.
fn print_summary(summary: &serde_json::Value, format: OutputFormat) -> anyhow::Result<ExitCode> {
    print_document(summary, format, |out| write_summary(out, summary))
}

fn write_summary(
    out: &mut impl std::io::Write,
    summary: &serde_json::Value,
) -> std::io::Result<()> {
    let counts = |key: &str| -> String {
        summary[key]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let when = |key: &str| Column::time("", 19, &[]).cell(&summary[key]);
    writeln!(
        out,
        "{} alerts ({} .. {})",
        summary["total"],
        when("oldest"),
        when("newest")
    )?;
    writeln!(out, "  by severity: {}", counts("by_severity"))?;
    writeln!(out, "  by status:   {}", counts("by_status"))?;
    let list = |key: &str| summary[key].as_array().cloned().unwrap_or_default();
    writeln!(out)?;
    write_table(out, SUMMARY_RULE_COLUMNS, &list("by_rule"))?;
    writeln!(out)?;
    write_table(out, SUMMARY_ENTITY_COLUMNS, &list("by_entity"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An alert's time in the table is its first occurrence: a late repeat's when one came
    /// dated before it, else its own.
    #[test]
    fn an_alerts_time_is_its_first_occurrence() {
        let time = &ALERT_COLUMNS[0];
        let plain = serde_json::json!({"alert": {"@timestamp": "2026-12-06T13:20:00Z"}});
        assert_eq!(time.cell(&plain), "2026-12-06 13:20:00");
        let late = serde_json::json!({"alert": {"@timestamp": "2026-12-06T13:20:00Z"},
                                      "first_seen": "2026-12-06T12:50:00Z"});
        assert_eq!(time.cell(&late), "2026-12-06 12:50:00");
    }

    #[test]
    fn a_server_url_is_taken_with_or_without_the_api_base_and_needs_its_scheme() {
        for given in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080/api/v1",
            "http://127.0.0.1:8080/api/v1/",
        ] {
            assert_eq!(
                server_url(given).unwrap(),
                "http://127.0.0.1:8080",
                "{given}"
            );
        }
        // Behind a proxy under a path prefix: the prefix stays.
        assert_eq!(
            server_url("https://soc.example/perimeter/api/v1").unwrap(),
            "https://soc.example/perimeter"
        );
        assert!(server_url("127.0.0.1:8080")
            .unwrap_err()
            .contains("http://127.0.0.1:8080"));
    }

    #[test]
    fn triage_takes_each_id_once_in_the_order_given() {
        let args: Vec<String> = ["a2", "a1", "a2", "a3", "a1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(triage_ids(&args).unwrap(), ["a2", "a1", "a3"]);
    }

    #[test]
    fn the_tenant_read_is_one_with_data_and_a_misspelt_one_is_an_error() {
        let config: PerimeterConfig = toml::from_str("").unwrap();
        let target = |tenant: Option<&str>| Access {
            server: None,
            token: None,
            ca_cert: None,
            data_dir: None,
            tenant: tenant.map(str::to_string),
        };
        let dir = std::path::Path::new("data/demo");
        let one = ["demo".to_string()];
        let pick =
            |t: Option<&str>, tenants: &[String]| choose_tenant(&target(t), &config, dir, tenants);
        assert_eq!(pick(None, &one).unwrap(), "demo", "the only one");
        assert_eq!(pick(Some("demo"), &one).unwrap(), "demo");
        let e = pick(Some("dmeo"), &one).unwrap_err().to_string();
        assert!(
            e.contains("tenant dmeo has no data") && e.contains("demo"),
            "{e}"
        );
        let two = ["a".to_string(), "b".to_string()];
        assert!(
            pick(None, &two).is_err(),
            "the configuration's has no data: choose"
        );
        assert_eq!(
            pick(Some("anything"), &[]).unwrap(),
            "anything",
            "an empty directory"
        );
    }

    #[test]
    fn table_cells_and_top_values_print_control_characters_as_escapes() {
        let hostile = "\u{1b}[2J\u{1b}[31mevil\u{1b}]0;pwned\u{7}\nrow\u{202e}cba";
        let cell =
            Column::new("ENTITY", 40, &["entity"]).cell(&serde_json::json!({"entity": hostile}));
        assert!(
            !cell.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{cell:?}"
        );
        assert!(
            cell.contains("\\u{1b}[2J") && cell.contains("evil"),
            "{cell}"
        );
        let mut out = Vec::new();
        let body = serde_json::json!({"field": "user.name", "total": 1, "counted": 1,
            "values": [{"value": hostile, "count": 1}]});
        write_top_values(&mut out, &body).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
        assert_eq!(
            terminal_safe("dana.kim@acme.example"),
            "dana.kim@acme.example"
        );
    }

    #[test]
    fn quiet_spans_read_in_their_two_largest_units() {
        for (seconds, text) in [
            (0, "0s"),
            (40, "40s"),
            (125, "2m 5s"),
            (3_600, "1h"),
            (7_500, "2h 5m"),
            (86_400 + 59, "1d"),
            (3 * 86_400 + 4 * 3_600 + 59, "3d 4h"),
            (-5, "0s"),
        ] {
            assert_eq!(rough_duration(seconds), text, "{seconds}");
        }
    }

    #[test]
    fn intervals_print_in_the_largest_unit_that_divides_them() {
        for (seconds, text) in [
            (30, "30s"),
            (90, "90s"),
            (600, "10m"),
            (10_800, "3h"),
            (86_400, "1d"),
            (1_209_600, "2w"),
        ] {
            assert_eq!(duration_text(seconds), text);
            assert_eq!(perimeter_model::parse_duration(text), Ok(seconds));
        }
    }

    #[test]
    fn identity_columns_keep_the_end_that_tells_entities_apart() {
        let arn = "arn:aws:sts::314159265358:assumed-role/AWSReservedSSO_PlatformAdmin_4f1c2d3e/dana.kim@acme-corp.example";
        let cell = cut_middle(arn, 32);
        assert_eq!(cell.chars().count(), 32);
        assert_eq!(cell, "arn:aws…na.kim@acme-corp.example");
        assert_eq!(
            cut_middle("dana.kim@acme-corp.example", 32),
            "dana.kim@acme-corp.example"
        );
        assert_eq!(cut("abcdef", 4), "abc…");
        let repeated = "Password spray: one source IP failing against many users (repeated)";
        let cell = cut(repeated, 54);
        assert_eq!(
            cell,
            "Password spray: one source IP failing agai… (repeated)"
        );
        assert_eq!(cell.chars().count(), 54);
        // A qualifier longer than a third of the cell is cut as any text.
        assert_eq!(cut("abcdef (ghijkl)", 10), "abcdef (g…");

        let items = [serde_json::json!({"alert": {"entity": arn, "title": "t"}})];
        let mut out = Vec::new();
        write_table(&mut out, ALERT_COLUMNS, &items).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("arn:aws…na.kim@acme-corp.example"), "{text}");
    }
}
