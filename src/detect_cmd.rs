//! `perimeter normalize` and `perimeter detect`: files/stdin through the pipeline to stdout.

use crate::config::PerimeterConfig;
use anyhow::Context;
use perimeter_detect::mask::SecretMasker;
use perimeter_detect::normalize::NormalizerRegistry;
use perimeter_detect::pipeline::{Pipeline, PipelineOutput, UEBA_SNAPSHOT};
use perimeter_detect::sigma::{RuleSet, SigmaDetector};
use perimeter_detect::ueba::UebaEngine;
use perimeter_ingest::{InputFormat, InputItem, JsonInput, JsonlReaderConfig};
use perimeter_model::Metrics;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct NormalizeArgs {
    /// Source name (okta, github, google_workspace, slack, m365, aws_cloudtrail, onepassword, a
    /// mapping name such as zoom), `auto` to detect it per record, or `json` for plain JSON.
    #[arg(long, default_value = "auto")]
    pub source: String,
    /// JSON-lines input file (vendor API pages and `{"Records": [...]}` files work too, so do CSV
    /// files, see --format; gzipped files are read as they are); `-` is stdin.
    #[arg(long, default_value = "-")]
    pub input: PathBuf,
    #[command(flatten)]
    pub format: FormatArg,
    /// Tenant recorded on the events (default: the config's `tenant`).
    #[arg(long)]
    pub tenant: Option<String>,
}

#[derive(clap::Args)]
pub struct DetectArgs {
    /// Sigma rule directory or file (repeatable). Default: config `rules`, else ./detection-rules.
    /// A directory holding no rule file (*.yml, *.yaml) is refused (exit code 2).
    #[arg(long)]
    pub rules: Vec<PathBuf>,
    /// Source name, `auto` (detect per record) or `json` (plain JSON, no vendor normalization).
    #[arg(long, default_value = "auto")]
    pub source: String,
    /// JSON-lines input file (vendor API pages and CSV files work too, see --format; gzipped
    /// files are read as they are); `-` is stdin.
    #[arg(long, default_value = "-")]
    pub input: PathBuf,
    #[command(flatten)]
    pub format: FormatArg,
    /// Evaluate every rule on every event whatever its logsource (for trying rules on any JSON).
    #[arg(long)]
    pub ignore_logsource: bool,
    /// Run only Sigma rules, not the behavioural (UEBA) detectors.
    #[arg(long)]
    pub no_ueba: bool,
    /// Directory for detection state: restored on start and saved at the end, so consecutive runs
    /// over consecutive inputs (an hourly file, say) work as one stream: behavioural baselines are
    /// kept, and correlation windows still open at the end of an input stay open for the next
    /// run instead of closing (a burst split across two files is still one burst). Repeats of a
    /// behavioural alert still grouped at the end of an input are reported by a "(repeated)"
    /// alert then, and the next run reports only the repeats after them (each counted once). With
    /// `mask.hmac_key` set, the events seen are remembered too: one that comes again in a later
    /// input is not detected twice (the summary counts them). Without it, every window closes at
    /// the end of the input.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Tenant recorded on events and alerts (default: the config's `tenant`).
    #[arg(long)]
    pub tenant: Option<String>,
}

/// How the input is written and read.
#[derive(clap::Args)]
pub struct FormatArg {
    /// Input format: `json` (JSON lines, or pretty-printed JSON documents such as a saved API
    /// page), `csv` (a header row, then one record per row, each read as an object of strings
    /// keyed by the header: Salesforce Event Monitoring log files, console exports), or `auto`:
    /// csv for `*.csv` / `*.csv.gz` files, json otherwise (stdin included)
    #[arg(long, default_value = "auto", value_parser = ["auto", "json", "csv"])]
    pub format: String,
    /// Longest line (or CSV row) read, in bytes; a longer one is a dead letter. Default: the
    /// config's `max_line_bytes`, 1 MiB unless set. A CloudTrail `{"Records": [...]}` file is a
    /// single line: raise it for larger ones. At least 1 (0 would dead-letter every line).
    #[arg(long, value_name = "BYTES",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_line_bytes: Option<usize>,
    /// Write every dead-lettered line to FILE, one JSON object per line (`line`, `source`,
    /// `reason`, masked `excerpt`, `input_digest`); the summary on stderr shows the first 20.
    #[arg(long, value_name = "FILE")]
    pub dead_letters: Option<PathBuf>,
}

impl FormatArg {
    /// The reader of `input` (a file or `-`) in this format. Reading starts here (the format
    /// is told from the first bytes), so an input that fails at once is named as one that
    /// fails later is.
    fn open(
        &self,
        config: &PerimeterConfig,
        input: &Path,
    ) -> anyhow::Result<JsonInput<Box<dyn BufRead>>> {
        JsonInput::with_format(open_input(input)?, self.reader(config), self.of(input))
            .with_context(|| {
                format!(
                    "reading input {} stopped before its first line",
                    input.display()
                )
            })
    }

    fn of(&self, input: &Path) -> InputFormat {
        match self.format.as_str() {
            "csv" => InputFormat::Csv,
            "json" => InputFormat::Json,
            _ => InputFormat::from_path(input),
        }
    }

    fn reader(&self, config: &PerimeterConfig) -> JsonlReaderConfig {
        JsonlReaderConfig::with_max_line_bytes(self.max_line_bytes.unwrap_or(config.max_line_bytes))
    }
}

/// The input file or stdin, gunzipped when it is gzip (by content).
fn open_input(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    let raw: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::BufReader::with_capacity(
            1 << 16,
            std::io::stdin().lock(),
        ))
    } else {
        let f = std::fs::File::open(path)
            .with_context(|| format!("opening input {}", path.display()))?;
        Box::new(std::io::BufReader::with_capacity(1 << 16, f))
    };
    let input = perimeter_ingest::decompressed(raw)
        .with_context(|| format!("reading input {}", path.display()))?;
    Ok(Box::new(input))
}

/// Say so when `source` has no normalizer: its records are read as plain JSON under that name
/// (deliberate, for vendors only rules know), which a misspelt name would otherwise hide.
fn note_unnormalized_source(command: &str, registry: &NormalizerRegistry, source: &str) {
    if let Some(note) = registry.unnormalized_source_note(source) {
        eprintln!(
            "perimeter {command}: {}",
            crate::terminal_cmd::terminal_safe(&note)
        );
    }
}

/// Build the registry (+ extra mappings) and masker every command shares.
pub fn base_parts(config: &PerimeterConfig) -> anyhow::Result<(NormalizerRegistry, SecretMasker)> {
    let registry = normalizers(config)?;
    let masker = SecretMasker::new(&config.mask).context("building the masker")?;
    // Event and alert ids keyed with the deployment's own masking key: unkeyed, they were a way
    // to test guesses of what masking hid.
    if let Some(key) = perimeter_detect::pipeline::id_key(&masker) {
        if !perimeter_model::key_ids(key) {
            anyhow::bail!("event ids were keyed with another masking key in this process");
        }
    }
    Ok((registry, masker))
}

/// The built-in normalizers and the config's mappings.
pub fn normalizers(config: &PerimeterConfig) -> anyhow::Result<NormalizerRegistry> {
    let mut registry = NormalizerRegistry::builtin();
    if let Some(dir) = &config.mappings_dir {
        registry
            .load_mappings_dir(dir)
            .with_context(|| format!("mappings_dir: loading mappings from {}", dir.display()))?;
    }
    Ok(registry)
}

/// Load rules; rule errors are printed (file, line, field, why) and the rest still run. The
/// rules come back before they are compiled into a detector, with the options they were loaded
/// with: for a caller that also lists them (`GET /rules`) without loading them twice.
pub fn load_rules(
    config: &PerimeterConfig,
    rules: &[PathBuf],
    ignore_logsource: bool,
) -> anyhow::Result<(RuleSet, perimeter_detect::sigma::SigmaOptions)> {
    let (set, options, report) = load_rules_reported(config, rules, ignore_logsource)?;
    for f in &report.failed {
        eprintln!("rule error: {f}");
    }
    Ok((set, options))
}

/// [`load_rules`] with the load report returned instead of printed.
pub fn load_rules_reported(
    config: &PerimeterConfig,
    rules: &[PathBuf],
    ignore_logsource: bool,
) -> anyhow::Result<(
    RuleSet,
    perimeter_detect::sigma::SigmaOptions,
    perimeter_detect::sigma::LoadReport,
)> {
    let mut options = config.sigma.clone();
    options.ignore_logsource |= ignore_logsource;
    let paths = config.rule_paths(rules);
    for p in &paths {
        // Named as given: `--rules` on the command line, else the config's `rules`.
        let given = if rules.is_empty() { "rules" } else { "--rules" };
        anyhow::ensure!(
            p.exists(),
            "{given}: rule path {} does not exist",
            p.display()
        );
    }
    let (set, report) = RuleSet::load(&paths, &options);
    Ok((set, options, report))
}

/// How often `normalize` and `detect` say how far they got, on a terminal.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// How far a run got, said every [`PROGRESS_EVERY`] on stderr when it is a terminal: a long
/// run is seen to be going.
struct Progress {
    started: std::time::Instant,
    lines: crate::progress::ProgressLines,
}

impl Progress {
    fn start() -> Progress {
        Progress {
            started: std::time::Instant::now(),
            lines: crate::progress::ProgressLines::new(
                PROGRESS_EVERY,
                std::io::stderr().is_terminal(),
            ),
        }
    }

    /// `records` read so far, and the count of what the run makes of them (`(n, "events")`).
    fn tick(&mut self, records: u64, (made, what): (u64, &str)) {
        let started = self.started;
        self.lines.say(|| {
            let secs = started.elapsed().as_secs_f64();
            format!(
                "  ... {records} records, {made} {what} in {secs:.0}s ({:.0} records/s)",
                records as f64 / secs.max(0.001)
            )
        });
    }
}

/// Set by the first SIGINT once [`stop_on_interrupt`] is in place.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Input items the read loop has finished, and whether it has left the loop: what tells the
/// watchdog of [`stop_on_interrupt`] a loop waiting for input from one at work.
static ITEMS_DONE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static LOOP_LEFT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The read loop finished an input item; `true` when it is to stop (interrupted).
fn item_done() -> bool {
    ITEMS_DONE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    interrupted()
}

/// How long an interrupted read loop may take to finish its item before the watchdog takes it
/// for one waiting on input that does not come.
const INTERRUPT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Output a watchdog flushes: what the read loop has written is seen within a moment on a live
/// stream (`tail -f | perimeter normalize`), not once 8 KiB have piled up. The loop holds the
/// lock for each item's lines, so a flush writes whole lines.
type SharedOutput = std::sync::Arc<std::sync::Mutex<std::io::BufWriter<std::io::Stdout>>>;

fn shared_output() -> SharedOutput {
    std::sync::Arc::new(std::sync::Mutex::new(std::io::BufWriter::new(
        std::io::stdout(),
    )))
}

/// From here on the first SIGINT (Ctrl-C) asks the read loop to stop after the input item in
/// hand, so the output ends with a whole line, is flushed and the summary is printed (killed
/// mid-write, the output ended in a cut-off JSON object). The handler resets itself: a second
/// Ctrl-C ends the process at once, as usual.
///
/// A loop waiting for input that does not come (a pipe whose writer stays open) would not see
/// the interrupt: a watchdog thread ends such a run after [`INTERRUPT_GRACE`], `output` flushed
/// (whole lines), saying so, with the exit code of an interrupted run. It also flushes `output`
/// every 100 ms.
fn stop_on_interrupt(command: &'static str, output: Option<SharedOutput>) {
    let flush = move || {
        if let Some(Ok(mut w)) = output.as_ref().map(|o| o.lock()) {
            let _ = w.flush();
        }
    };
    std::thread::spawn(move || {
        let mut waiting_since: Option<(u64, std::time::Instant)> = None;
        loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if LOOP_LEFT.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            flush();
            if !interrupted() {
                continue;
            }
            let done = ITEMS_DONE.load(std::sync::atomic::Ordering::Relaxed);
            match waiting_since {
                Some((seen, since)) if seen == done => {
                    if since.elapsed() >= INTERRUPT_GRACE {
                        flush();
                        eprintln!(
                            "perimeter {command}: interrupted while waiting for input, after {done} input items; the output above is whole, the summary (and detect's saved state) are not written"
                        );
                        std::process::exit(130);
                    }
                }
                _ => waiting_since = Some((done, std::time::Instant::now())),
            }
        }
    });
    stop_on_sigint();
}

fn stop_on_sigint() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the action is
    // fully initialised (zeroed, then its mask emptied) before it is installed.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = note_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// After an interrupted run's summary: where it stopped, and the exit code of a process ended
/// by SIGINT (128 + 2), so a script still learns that the run did not finish.
fn interrupted_exit(command: &str, lines: u64) -> ExitCode {
    eprintln!(
        "perimeter {command}: interrupted after line {lines}; the output above covers the lines before"
    );
    ExitCode::from(130)
}

pub fn normalize(config: &PerimeterConfig, args: NormalizeArgs) -> anyhow::Result<ExitCode> {
    let (registry, masker) = base_parts(config)?;
    note_unnormalized_source("normalize", &registry, &args.source);
    let tenant = args.tenant.unwrap_or_else(|| config.tenant.clone());
    let mut pipeline = Pipeline::new(registry, masker, Arc::new(Metrics::new()), true);
    let output = shared_output();
    let mut out = PipelineOutput::default();
    let mut dead = DeadLetterReport::new(args.format.dead_letters.as_deref(), &args.input)?;
    let mut reader = args.format.open(config, &args.input)?;
    let mut progress = Progress::start();
    stop_on_interrupt("normalize", Some(output.clone()));
    let mut stopped = None;
    for item in reader.by_ref() {
        let Some(item) = input_item(item, &mut stopped) else {
            break;
        };
        feed(&mut pipeline, &args.source, &tenant, item, &mut out);
        {
            let mut out_w = output.lock().expect("output lock");
            for e in out.events.drain(..) {
                serde_json::to_writer(&mut *out_w, &e.to_output_json())?;
                out_w.write_all(b"\n")?;
            }
        }
        dead.take(&mut out.dead_letters)?;
        let stats = pipeline.stats();
        progress.tick(stats.records, (stats.events, "events"));
        if item_done() {
            break;
        }
    }
    LOOP_LEFT.store(true, std::sync::atomic::Ordering::Relaxed);
    output.lock().expect("output lock").flush()?;
    let stats = pipeline.stats();
    eprintln!(
        "perimeter normalize: {} records, {} events, {} values masked, {} dead-lettered",
        stats.records, stats.events, stats.values_masked, stats.dead_letters
    );
    dead.finish(stats.dead_letters)?;
    print_timestamps_adjusted(stats.timestamps_adjusted);
    print_repeated_keys(stats.inputs_with_repeated_keys);
    read_outcome(stopped, &args.input, reader.lines_read())?;
    if interrupted() {
        return Ok(interrupted_exit("normalize", reader.lines_read()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The item, or `None` with the read error kept in `stopped`: the input ends there, and what
/// was read before it still gets its output and its summary.
fn input_item(
    item: std::io::Result<InputItem>,
    stopped: &mut Option<std::io::Error>,
) -> Option<InputItem> {
    item.map_err(|e| *stopped = Some(e)).ok()
}

/// The error of an input that could not be read to its end (a cut-off gzip file), naming the
/// last line read, after the summary of what was read before it.
fn read_outcome(stopped: Option<std::io::Error>, input: &Path, lines: u64) -> anyhow::Result<()> {
    match stopped {
        None => Ok(()),
        Some(e) => Err(anyhow::Error::new(e).context(format!(
            "reading input {} stopped after line {lines}; the output above covers the lines before",
            input.display()
        ))),
    }
}

/// One input item into the pipeline: a parsed value, or a dead letter for an unusable line.
fn feed(
    pipeline: &mut Pipeline,
    source: &str,
    tenant: &str,
    item: InputItem,
    out: &mut PipelineOutput,
) {
    let now = chrono::Utc::now();
    let empty_before = out.empty_inputs;
    // A CloudTrail digest lists log files and holds no record by design: no dead letter (a
    // synced bucket's digests buried the real ones).
    let digest = matches!(&item, InputItem::Record { value, .. }
        if perimeter_detect::normalize::is_cloudtrail_digest_value(value));
    let line = perimeter_serve::process_item(pipeline, source, tenant, item, now, out);
    // A value without a record (`{}`, `[]`, an envelope with an empty list) gives no event: a
    // dead letter says so, or it would vanish from the output and the counts.
    if out.empty_inputs > empty_before && !digest {
        pipeline.dead_letter(
            source,
            tenant,
            Some(line),
            "holds no record (an empty object, array or page)",
            "",
            None,
            now,
            out,
        );
    }
}

/// Dead letters shown in the summary; the rest are counted (the pipeline's stats), not kept, so a
/// file of millions of bad lines does not grow memory (`--dead-letters FILE` gets them all).
const SHOWN_DEAD_LETTERS: usize = 20;

/// Whether `a` and `b` name the same existing file (links and other names included).
fn is_same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // `-` reads standard input: what it is open on (a pipe, a file) is what a path must not
    // name (`--dead-letters /dev/stdin` opened the pipe's write end, so the read never ended).
    let stdin_or = |p: &Path| {
        if p == Path::new("-") {
            Path::new("/dev/stdin").to_path_buf()
        } else {
            p.to_path_buf()
        }
    };
    match (
        std::fs::metadata(stdin_or(a)),
        std::fs::metadata(stdin_or(b)),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// A run's dead letters: the first [`SHOWN_DEAD_LETTERS`] kept for the summary, every one
/// written to the `--dead-letters` file as it comes.
struct DeadLetterReport {
    shown: Vec<perimeter_model::DeadLetter>,
    file: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
}

impl DeadLetterReport {
    /// `path`: the `--dead-letters` file, refused when it is the `input` being read (creating
    /// it would empty the input before a line is read).
    fn new(path: Option<&Path>, input: &Path) -> anyhow::Result<DeadLetterReport> {
        let file = match path {
            Some(path) => {
                anyhow::ensure!(
                    path != Path::new("-"),
                    "--dead-letters takes a file path (`-` is not stdout: stdout carries the output)"
                );
                anyhow::ensure!(
                    !is_same_file(path, input),
                    "--dead-letters {} is the input file: writing it would empty the input",
                    path.display()
                );
                // Nor the file or pipe the output goes to (`--dead-letters /dev/stdout`, or
                // `> FILE` and `--dead-letters FILE`): each would overwrite the other. (A
                // terminal or /dev/null for both is no loss.)
                let device = {
                    use std::os::unix::fs::FileTypeExt;
                    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device())
                };
                anyhow::ensure!(
                    device || !is_same_file(path, Path::new("/dev/stdout")),
                    "--dead-letters {} is where the output goes: each would overwrite the other",
                    path.display()
                );
                let file = std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                Some((path.to_path_buf(), std::io::BufWriter::new(file)))
            }
            None => None,
        };
        Ok(DeadLetterReport {
            shown: Vec::new(),
            file,
        })
    }

    /// Take the pipeline's new dead letters (`new` is left empty).
    fn take(&mut self, new: &mut Vec<perimeter_model::DeadLetter>) -> anyhow::Result<()> {
        if let Some((path, w)) = &mut self.file {
            for d in new.iter() {
                serde_json::to_writer(&mut *w, d)
                    .map_err(std::io::Error::from)
                    .and_then(|()| w.write_all(b"\n"))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        let room = SHOWN_DEAD_LETTERS.saturating_sub(self.shown.len());
        // Dropping the drain empties `new`, the letters past `room` included.
        self.shown.extend(new.drain(..).take(room));
        Ok(())
    }

    /// The summary's lines of dead letters, `total` of them in the run; the file completed.
    fn finish(self, total: u64) -> anyhow::Result<()> {
        for d in &self.shown {
            match d.line {
                Some(l) => eprintln!("  line {l}: {}", d.reason),
                None => eprintln!("  {}", d.reason),
            }
        }
        let more = total.saturating_sub(self.shown.len() as u64);
        match self.file {
            Some((path, mut w)) => {
                w.flush()
                    .with_context(|| format!("writing {}", path.display()))?;
                if total > 0 {
                    eprintln!("  every dead letter ({total}) is in {}", path.display());
                }
            }
            None if more > 0 => {
                eprintln!("  ... and {more} more (--dead-letters FILE writes them all)")
            }
            None => {}
        }
        Ok(())
    }
}

pub fn detect(config: &PerimeterConfig, args: DetectArgs) -> anyhow::Result<ExitCode> {
    let (registry, masker) = base_parts(config)?;
    note_unnormalized_source("detect", &registry, &args.source);
    let tenant = args.tenant.clone().unwrap_or_else(|| config.tenant.clone());
    let key = perimeter_detect::pipeline::entity_key(&masker);
    // Run from another directory (a cron job), the default ./detection-rules is not there: a
    // run without rules would find nothing and look like a quiet day.
    let rule_paths = config.rule_paths(&args.rules);
    anyhow::ensure!(
        !rule_paths.is_empty(),
        "no rules to run: --rules names none, the config has no `rules`, and there is no \
         ./detection-rules here; pass --rules DIR"
    );
    let (set, options, rules) = load_rules_reported(config, &rule_paths, args.ignore_logsource)?;
    // A directory without a rule file (a wrong or emptied one) loads without an error: refused
    // too, before reading the input, even with the behavioural detectors to run.
    if let Some(empty) = rule_paths.iter().find(|p| RuleSet::files(p).is_empty()) {
        anyhow::bail!(
            "no rules to run in {}: it holds no rule file (*.yml, *.yaml); pass --rules DIR",
            empty.display()
        );
    }
    for f in &rules.failed {
        eprintln!("rule error: {f}");
    }
    let ueba_on = !args.no_ueba && config.ueba.enabled;
    anyhow::ensure!(
        rules.loaded > 0 || ueba_on,
        "no detector to run: no rule loaded and the behavioural detectors are off"
    );
    // What runs, said first: a run with fewer rules than meant is visible before its output.
    let paths: Vec<String> = rule_paths.iter().map(|p| p.display().to_string()).collect();
    eprintln!(
        "perimeter detect: {} rules from {}{}",
        rules.loaded,
        paths.join(", "),
        if ueba_on {
            ", behavioural detectors on"
        } else {
            ", behavioural detectors off"
        }
    );
    let sigma = SigmaDetector::new(set, &options);
    let mut pipeline =
        Pipeline::new(registry, masker, Arc::new(Metrics::new()), false).with_sigma(sigma);
    let ueba_state = args.state_dir.as_ref().map(|d| d.join(UEBA_SNAPSHOT));
    if ueba_on {
        config.ueba.validate()?;
        let engine = match &ueba_state {
            Some(p) if p.exists() => UebaEngine::restore_from(config.ueba.clone(), key, p)
                .with_context(|| format!("restoring behavioural state from {}", p.display()))?,
            _ => UebaEngine::new(config.ueba.clone(), key),
        };
        pipeline = pipeline.with_ueba(engine);
    }
    if let Some(dir) = &args.state_dir {
        let restore = pipeline
            .restore_correlations(dir)
            .with_context(|| format!("restoring correlation windows from {}", dir.display()))?;
        if let Some((aside, reason)) = &restore.set_aside {
            eprintln!(
                "perimeter detect: correlation windows could not be restored ({reason}); moved to {} and starting with none",
                aside.display()
            );
        } else if restore.restored.dropped_correlations > 0 {
            eprintln!(
                "perimeter detect: {} correlation(s) changed since {} was saved; their windows start empty",
                restore.restored.dropped_correlations,
                dir.display()
            );
        }
        // Events the saved state already counted are not detected again (the summary says how
        // many): consecutive runs are one stream.
        let replay = pipeline
            .restore_replay_window(dir)
            .with_context(|| format!("restoring the replay window from {}", dir.display()))?;
        if let Err((aside, reason)) = replay {
            eprintln!(
                "perimeter detect: the replay window could not be restored ({reason}); moved to {}",
                aside.display()
            );
        }
    }
    let stdout = std::io::stdout();
    let mut out_w = std::io::BufWriter::new(stdout.lock());
    let mut out = PipelineOutput::default();
    let mut dead = DeadLetterReport::new(args.format.dead_letters.as_deref(), &args.input)?;
    let mut progress = Progress::start();
    let mut reader = args.format.open(config, &args.input)?;
    // Flushed when it wrote any: on a live stream (`tail -f log | perimeter detect`) an alert
    // is seen when it fires, not when the input ends or 8 KiB of alerts have piled up.
    let write_alerts = |out: &mut PipelineOutput, w: &mut dyn Write| -> anyhow::Result<()> {
        if out.alerts.is_empty() {
            return Ok(());
        }
        for a in out.alerts.drain(..) {
            serde_json::to_writer(&mut *w, &a)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        Ok(())
    };
    // Alerts are flushed as they are written: nothing for the watchdog to flush.
    stop_on_interrupt("detect", None);
    let mut stopped = None;
    for item in reader.by_ref() {
        let Some(item) = input_item(item, &mut stopped) else {
            break;
        };
        feed(&mut pipeline, &args.source, &tenant, item, &mut out);
        write_alerts(&mut out, &mut out_w)?;
        dead.take(&mut out.dead_letters)?;
        let stats = pipeline.stats();
        progress.tick(stats.records, (stats.alerts, "alerts"));
        // Interrupted, the input read so far is finished as an input that ends here.
        if item_done() {
            break;
        }
    }
    LOOP_LEFT.store(true, std::sync::atomic::Ordering::Relaxed);
    // With a state directory the next run continues the stream: open windows are saved, not
    // closed.
    if args.state_dir.is_some() {
        pipeline.suspend(&mut out);
    } else {
        pipeline.finish(&mut out);
    }
    write_alerts(&mut out, &mut out_w)?;
    out_w.flush()?;
    if let Some(dir) = &args.state_dir {
        pipeline
            .save_state(dir)
            .with_context(|| format!("saving detection state to {}", dir.display()))?;
    }
    let stats = pipeline.stats();
    eprintln!(
        "perimeter detect: {} lines, {} records, {} events, {} alerts, {} dead-lettered in {:.2}s",
        reader.lines_read(),
        stats.records,
        stats.events,
        stats.alerts,
        stats.dead_letters,
        progress.started.elapsed().as_secs_f64()
    );
    if stats.replayed > 0 {
        eprintln!(
            "  {} events repeated an earlier one exactly and were not detected again",
            stats.replayed
        );
    }
    let late = pipeline.late_events_dropped();
    if late > 0 {
        eprintln!(
            "  {late} events came more than {}s (sigma.allowed_lateness_seconds) after newer events of their source and were not counted in correlations: sort the input by time, or raise the lateness",
            config.sigma.allowed_lateness_seconds
        );
    }
    let ahead = pipeline.events_dated_ahead();
    if ahead > 0 {
        eprintln!(
            "  {ahead} events were dated more than {}s after they were read (a clock ahead, or a forged time): counted by their own time, but not allowed to make other events of their source late",
            config.sigma.allowed_lateness_seconds
        );
    }
    dead.finish(stats.dead_letters)?;
    print_timestamps_adjusted(stats.timestamps_adjusted);
    print_repeated_keys(stats.inputs_with_repeated_keys);
    read_outcome(stopped, &args.input, reader.lines_read())?;
    if interrupted() {
        return Ok(interrupted_exit("detect", reader.lines_read()));
    }
    if !rules.failed.is_empty() {
        // The run went on with the rules that loaded; a script must still learn that it was
        // not the detection it asked for.
        eprintln!(
            "perimeter detect: {} rule file(s) failed to load (errors above); their detections did not run",
            rules.failed.len()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Say how many inputs repeated a key in an object (each such key kept its last value): rare
/// from a vendor, so a sign of a broken exporter or of a record crafted to show rules one value.
fn print_repeated_keys(count: u64) {
    if count > 0 {
        eprintln!(
            "  {count} inputs repeated a key in an object; each such key kept its last value, as the events show"
        );
    }
}

/// Say how many events had an implausible time replaced by their receive time: their
/// `@timestamp` is not the vendor's (the events carry `perimeter.timestamp_adjusted`).
fn print_timestamps_adjusted(count: u64) {
    if count > 0 {
        eprintln!(
            "  {count} events had a time too far in the future or before 2000; their @timestamp is the receive time (perimeter.timestamp_adjusted)"
        );
    }
}
