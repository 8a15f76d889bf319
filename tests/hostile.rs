//! The corpus of hostile plans in `tests/hostile/`, plus the ones too big or too odd to
//! check in (a 16 MiB+ file, the worst file under the limit, a huge key, a FIFO): every
//! one refused by `planrun validate` with exit 2 and an error naming the file (at a
//! line and column wherever there is one), none panicking, none printing a control
//! character, and the worst one's peak memory under the bound the README states.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;

/// The README's bound ("Input limits"): the peak memory of `planrun validate` on any
/// plan, however hostile.
const PEAK_RSS_BOUND_MIB: u64 = 1024;

/// Far beyond any plan's validation: only a hang reaches it.
const HANG: Duration = Duration::from_secs(120);

/// What each file must be refused for: a part of one of its error lines.
const EXPECTED: &[(&str, &str)] = &[
    ("alias-bomb.yaml", "expands to more than"),
    ("alias-undefined.yaml", "this alias refers to an anchor that is not defined before it"),
    ("application-del.yaml", "the application name: `shop\\u{7f}` contains the control character"),
    ("bad-indentation.yaml", "invalid YAML"),
    ("balancer-header-name.yaml", "`X Bad` is not an HTTP header name"),
    ("balancer-header-value-newline.yaml", "the header value `a\\r\\nX-Evil: 1` contains a control character"),
    ("balancer-method-space.yaml", "`GE T` is not an HTTP method"),
    ("balancer-name-escape.yaml", "a balancer name: `lb\\u{1b}[31m` contains the control character"),
    ("balancer-node-escape.yaml", "`web1\\u{1b}[1A` contains the control character"),
    ("balancer-up-without-status.yaml", "has no `status`, so a `balancer_up` wait can never pass"),
    ("balancer-url-broken.yaml", "`htp:/broken url/web1` is not an `http` or `https` URL"),
    ("batch-size-zero-percent.yaml", "batch_size"),
    ("binary-junk.yaml", "not valid UTF-8"),
    ("connect-timeout-zero.yaml", "`connect_timeout` is zero"),
    ("crlf-and-lone-cr.yaml", "missing field `rollout`"),
    ("custom-tag.yaml", "tag"),
    ("deep-nesting-block.yaml", "nest"),
    ("deep-nesting-flow.yaml", "nest"),
    ("duplicate-keys-nested.yaml", "duplicate key `run`"),
    ("duplicate-keys.yaml", "duplicate key `application`"),
    ("duplicate-servers-and-steps.yaml", "duplicate server name `web1`"),
    ("duration-without-unit.yaml", "duration"),
    ("empty.yaml", "the plan is empty"),
    ("env-name-invalid.yaml", "`1BAD` is not a valid environment variable name"),
    ("extends-dev-zero.yaml", "/dev/zero"),
    ("extends-directory.yaml", "is a directory"),
    ("extends-missing.yaml", "does not exist"),
    ("extends-self.yaml", "extends"),
    ("float-where-int.yaml", "retries"),
    ("integer-overflow.yaml", "port"),
    ("interval-zero.yaml", "`interval` is zero"),
    ("invalid-utf8.yaml", "not valid UTF-8"),
    ("jump-host-invalid.yaml", "jump host"),
    ("key-without-value-colon.yaml", "the plan must be a map of fields, not a string"),
    ("linode-api-url.yaml", "`gopher://api` is not an `http` or `https` URL"),
    ("lock-on-unknown-host.yaml", "which is not a server of this plan"),
    ("merge-key.yaml", "merge"),
    ("nul-bytes.yaml", "invalid YAML"),
    ("nul-in-quoted-value.yaml", "invalid YAML"),
    ("only-comments.yaml", "the plan is empty"),
    ("only-document-markers.yaml", "a plan file holds one YAML document, this is a second one"),
    ("raw-escape-byte.yaml", "the application name: `shop\\u{1b}[2J\\u{1b}[Hrun finished: succeeded` contains"),
    ("reject-without-accept.yaml", "no later step puts it back"),
    ("role-c1-csi.yaml", "a role: `db\\u{9b}2J` contains the control character"),
    ("root-is-a-list.yaml", "map"),
    ("root-is-a-scalar.yaml", "map"),
    ("root-is-null.yaml", "the plan must be a map of fields, not empty"),
    ("server-host-nul.yaml", "a server's host: `10.0.0.2\\u{0}` contains the control character"),
    ("server-name-ansi.yaml", "a server's name: `web1\\u{1b}[2K\\rrun finished: succeeded` contains"),
    ("sleep-31-days.yaml", "`sleep` is longer than 30 days"),
    ("stable-for-never.yaml", "can never pass: `stable_for` is not shorter than its timeout"),
    ("step-name-bidi-override.yaml", "`restart\\u{202e}` is not a valid value for `rollout.steps[0].name`"),
    ("step-name-newline.yaml", "`restart\\nrun finished: succeeded` is not a valid value for `rollout.steps[0].name`"),
    ("successes-never.yaml", "3 checks 10s apart take longer than its timeout of 2s"),
    ("tab-in-flow.yaml", "`application` must be a string, not a list"),
    ("tabs-indentation.yaml", "tabs"),
    ("template-behind-unknown-role.yaml", "`{{vars.relase}}` does not resolve"),
    ("template-host-in-before-local.yaml", "`{{host.name}}` does not resolve"),
    ("template-many-bad-variables.yaml", "`{{aplication}}` does not resolve"),
    ("template-quote-a-map.yaml", "`quote` cannot quote a map"),
    ("template-unclosed.yaml", "the template does not parse"),
    ("timeout-too-long-for-a-clock.yaml", "`timeout` is longer than 30 days"),
    ("timeout-zero.yaml", "`timeout` is zero"),
    ("two-documents.yaml", "document"),
    ("unknown-balancer-kind.yaml", "nginx"),
    ("unknown-fields.yaml", "unknown field `colour`"),
    ("unterminated-quote.yaml", "invalid YAML"),
    ("utf16-bom.yaml", "not valid UTF-8"),
    ("version-two.yaml", "version"),
    ("wait-http-ftp.yaml", "`ftp://10.0.0.2/health` is not an `http` or `https` URL"),
    ("wait-http-newline.yaml", "contains a control character"),
    ("wait-http-no-host.yaml", "is not a valid URL"),
    ("wait-http-not-a-url.yaml", "`not a url` is not a valid URL"),
    ("wait-http-status-zero.yaml", "`0` is too small for `rollout.steps[0].wait.status`"),
    ("wait-tcp-no-host.yaml", "`:80` has no host"),
    ("wait-tcp-no-port.yaml", "`nohostport` has no port"),
    ("wait-tcp-port-too-big.yaml", "`70000` is not a port"),
    ("wait-tcp-port-zero.yaml", "`0` is not a port"),
    ("when-on-local-before.yaml", "`when` on the `local` step `note` outside the rollout"),
    ("wrong-types-everywhere.yaml", "must be a whole number"),
    // Made by the test.
    ("generated-16-mib-and-a-byte.yaml", "is 16777217 bytes, more than the 16777216 a plan may have"),
    ("generated-worst-under-the-limit.yaml", "more than"),
    ("generated-huge-key.yaml", "invalid YAML"),
    ("generated-megabyte-line.yaml", "is not an HTTP method"),
    ("generated-fifo.yaml", "is not a regular file"),
    ("generated-extends-fifo.yaml", "is not a regular file"),
];

/// The files whose problem has no line: the whole file is wrong, or is not a file.
const WHOLE_FILE: &[&str] =
    &["empty.yaml", "only-comments.yaml", "generated-16-mib-and-a-byte.yaml", "generated-fifo.yaml"];

struct Refusal {
    code: i32,
    stderr: String,
    stdout: String,
    peak_rss_kib: u64,
}

/// Runs `planrun validate NAME` in `dir`, waiting with `wait4` for its own peak RSS.
fn validate(dir: &Path, name: &str) -> Refusal {
    let out = dir.join(format!("{name}.stdout"));
    let err = dir.join(format!("{name}.stderr"));
    let child = Command::new(env!("CARGO_BIN_EXE_planrun"))
        .args(["validate", name])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("planrun runs");
    let pid = child.id() as libc::pid_t;
    let started = Instant::now();
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our child, not yet reaped (the `Child` is never waited on).
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(reaped >= 0, "wait4 on {name}: {}", std::io::Error::last_os_error());
        if reaped == pid {
            break (status, usage);
        }
        if started.elapsed() > HANG {
            // SAFETY: signalling our own, still unreaped, child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("`planrun validate {name}` hangs");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    drop(child);
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    Refusal {
        code,
        stderr: String::from_utf8_lossy(&std::fs::read(&err).unwrap()).into_owned(),
        stdout: String::from_utf8_lossy(&std::fs::read(&out).unwrap()).into_owned(),
        // Kilobytes on Linux.
        peak_rss_kib: usage.ru_maxrss as u64,
    }
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile")
}

/// The files too big or too odd to check in, made in `dir`.
fn generate(dir: &Path) {
    let head = "version: 1\napplication: shop\nservers:\n  - { host: 10.0.0.2, roles: [app] }\n";
    // One byte over the limit: refused before it is read.
    let mut big = head.as_bytes().to_vec();
    big.resize(16 * 1024 * 1024 + 1, b'#');
    std::fs::write(dir.join("generated-16-mib-and-a-byte.yaml"), big).unwrap();
    // Just under the limit, made of the cheapest values to write and the dearest to
    // hold: millions of one-character keys, the worst case for memory.
    let mut worst = String::from("version: 1\nvars:\n  m: {");
    let mut n = 0u64;
    while worst.len() < 16 * 1024 * 1024 - 64 {
        worst.push_str(&format!("{}: 1,", radix36(n)));
        n += 1;
    }
    worst.push_str("}\n");
    std::fs::write(dir.join("generated-worst-under-the-limit.yaml"), worst).unwrap();
    // An 8 MiB key.
    let mut key = String::from(head);
    key.push_str(&"k".repeat(8 * 1024 * 1024));
    key.push_str(": 1\n");
    std::fs::write(dir.join("generated-huge-key.yaml"), key).unwrap();
    // A one-megabyte method, on one line.
    let line = format!(
        "{head}balancers:\n  lb: {{ kind: http, reject: {{ method: \"{}\", url: \"http://lb/{{{{node}}}}\" }}, accept: {{ url: \"http://lb/{{{{node}}}}\" }} }}\nrollout:\n  select: {{ roles: [app] }}\n  steps:\n    - {{ name: out, balancer: {{ use: lb, action: reject, node: a }} }}\n    - {{ name: in, balancer: {{ use: lb, action: accept, node: a, wait_up: false }} }}\n",
        "G E T ".repeat(1024 * 1024 / 6)
    );
    std::fs::write(dir.join("generated-megabyte-line.yaml"), line).unwrap();
    // A FIFO nothing writes to: opening it to read would wait forever.
    let fifo = dir.join("generated-fifo.yaml");
    let path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "{}", std::io::Error::last_os_error());
    std::fs::write(dir.join("generated-extends-fifo.yaml"), "extends: generated-fifo.yaml\nversion: 1\n").unwrap();
}

fn radix36(mut n: u64) -> String {
    let digits = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = vec![digits[(n % 26) as usize]];
    n /= 26;
    while n > 0 {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
    }
    String::from_utf8(out).unwrap()
}

/// Whether `line` starts `error: NAME:LINE:COLUMN: `.
fn positioned(line: &str, name: &str) -> bool {
    let Some(rest) = line.strip_prefix(&format!("error: {name}:")) else { return false };
    let mut parts = rest.splitn(3, ':');
    let (Some(l), Some(c), Some(message)) = (parts.next(), parts.next(), parts.next()) else { return false };
    !l.is_empty()
        && l.bytes().all(|b| b.is_ascii_digit())
        && !c.is_empty()
        && c.bytes().all(|b| b.is_ascii_digit())
        && message.starts_with(' ')
}

#[test]
fn every_hostile_plan_is_refused_with_a_positioned_error_within_the_memory_bound() {
    let dir = TempDir::new("hostile");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(corpus()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        std::fs::copy(entry.path(), dir.path().join(&name)).unwrap();
        names.push(name);
    }
    generate(dir.path());
    names.extend(EXPECTED.iter().map(|(n, _)| n.to_string()).filter(|n| n.starts_with("generated-")));
    names.sort();
    let expected: BTreeMap<&str, &str> = EXPECTED.iter().copied().collect();
    let unlisted: Vec<&String> = names.iter().filter(|n| !expected.contains_key(n.as_str())).collect();
    assert!(unlisted.is_empty(), "say in EXPECTED what these are refused for: {unlisted:?}");
    assert!(names.len() >= 80, "the corpus shrank: {names:?}");

    let mut failures = Vec::new();
    let mut worst = (0, String::new());
    for name in &names {
        let r = validate(dir.path(), name);
        if r.peak_rss_kib > worst.0 {
            worst = (r.peak_rss_kib, name.clone());
        }
        let first = r.stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
        let mut wrong = Vec::new();
        if r.code != 2 {
            wrong.push(format!("exit {} (101 is a panic)", r.code));
        }
        if r.stderr.contains("panicked") {
            wrong.push("panicked".to_string());
        }
        if WHOLE_FILE.contains(&name.as_str()) {
            if !first.starts_with(&format!("error: {name}: ")) {
                wrong.push("no `error: FILE: ` line".to_string());
            }
        } else if !positioned(first, name) {
            wrong.push("the first error has no `FILE:LINE:COLUMN:`".to_string());
        }
        let needle = expected[name.as_str()];
        if !r.stderr.lines().any(|l| l.starts_with("error: ") && l.contains(needle)) {
            wrong.push(format!("does not say {needle:?}"));
        }
        if !r.stderr.contains("nothing was executed") {
            wrong.push("does not say that nothing was executed".to_string());
        }
        if let Some(c) = r.stderr.chars().chain(r.stdout.chars()).find(|&c| c.is_control() && c != '\n') {
            wrong.push(format!("prints the control character {c:?}"));
        }
        if !wrong.is_empty() {
            let shown: String = r.stderr.chars().take(3000).collect();
            failures.push(format!("{name}: {}\n{shown}", wrong.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{} of {} files:\n\n{}", failures.len(), names.len(), failures.join("\n\n"));
    let (peak, name) = worst;
    eprintln!("worst peak RSS: {} MiB, for {name}", peak / 1024);
    assert!(
        peak < PEAK_RSS_BOUND_MIB * 1024,
        "`planrun validate {name}` peaked at {} MiB, over the README's {PEAK_RSS_BOUND_MIB} MiB",
        peak / 1024
    );
}
