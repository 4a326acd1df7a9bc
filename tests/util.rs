//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root (where Cargo.toml is).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The recorded SaaS API pages next to the repository.
pub fn fixtures() -> PathBuf {
    repo().join("../shared/fixtures/saas-api-pages")
}

/// Run the `perimeter` binary with `args`, feeding `stdin`, from the repo root.
pub fn perimeter(args: &[&str], stdin: Option<&[u8]>) -> Output {
    perimeter_in(&repo(), args, stdin)
}

/// The `perimeter` binary with `args`, run in `dir`, without the caller's config or token
/// from the environment; its standard streams as the caller sets them.
pub fn perimeter_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_perimeter"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("PERIMETER_CONFIG")
        .env_remove("PERIMETER_TOKEN");
    cmd
}

pub fn perimeter_in(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = perimeter_command(dir, args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning perimeter");
    if let Some(input) = stdin {
        use std::io::Write;
        let mut s = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        // Write on another thread so a large input cannot deadlock against a full stdout pipe.
        std::thread::spawn(move || {
            let _ = s.write_all(&input);
        });
    }
    child.wait_with_output().expect("waiting for perimeter")
}

/// The `perimeter` binary started with `args` from the repo root, its stdin and stdout piped
/// (a live input, read as it comes), its stderr to `stderr`.
pub fn spawn_perimeter(args: &[&str], stderr: Stdio) -> std::process::Child {
    perimeter_command(&repo(), args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawning perimeter")
}

/// Parse stdout as JSON lines.
pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fail, showing the whole of stderr, unless it holds `text`.
pub fn assert_stderr_says(out: &Output, text: &str) {
    let err = stderr(out);
    assert!(err.contains(text), "stderr lacks {text:?}:\n{err}");
}

/// The line of `perimeter run --check`'s report (`out`) about the part whose name holds `part`.
pub fn check_line(out: &Output, part: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains(part))
        .unwrap_or_else(|| panic!("no line about {part}: {text}"))
        .to_string()
}

/// A child process killed when the test ends, passed or not.
pub struct KilledOnDrop(pub std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `perimeter demo` serving its API over `data`, started in `cwd`: (process, API URL, its admin
/// token). Its stdout is read up to the token line, then dropped, as `perimeter demo | head`
/// would.
pub fn serving_demo(data: &Path, cwd: &Path) -> (KilledOnDrop, String, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_perimeter"))
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .current_dir(cwd)
        .env_remove("PERIMETER_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut url, mut token) = (None, None);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("API serving the demo data at ") {
            url = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(t) = line
            .split("): ")
            .nth(1)
            .filter(|_| line.contains("demo token"))
        {
            token = Some(t.trim().to_string());
            break;
        }
    }
    let (url, token) = (url.expect("API url printed"), token.expect("token printed"));
    (KilledOnDrop(child), url, token)
}
