//! Secrets (`secret_env`, `token_env`) are masked wherever text leaves planrun: the
//! pre-flight view and its problems, error messages, the balancer states printed after a
//! failed run, `--output json`, `planrun plan`, the per-host logs and the journal.

mod common;

use std::path::{Path, PathBuf};

use common::{TempDir, planrun_env};

const SECRET: &str = "k3y-Walrus-9921";

/// A loopback port nothing listens on: every request to it fails, and the error names the
/// URL, secret included.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn http_plan(root: &Path, port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/nodes/{{{{node}}}}?key={{{{vars.key}}}}");
    format!(
        r#"version: 1
application: shop
secret_env: [PLANRUN_TEST_KEY]
lock: {{ path: "{root}/lock" }}
vars: {{ key: unset }}
servers:
  - {{ host: 127.0.0.1, name: web1, transport: local, roles: [app] }}
  - {{ host: 127.0.0.1, name: web2, transport: local, roles: [app] }}
balancers:
  hook:
    kind: http
    reject: {{ method: PUT, url: "{url}" }}
    accept: {{ method: POST, url: "{url}" }}
    status: {{ method: GET, url: "{url}" }}
rollout:
  select: {{ roles: [app] }}
  steps:
    - {{ name: reject, balancer: {{ use: hook, action: reject, node: "{{{{host.name}}}}" }} }}
    - {{ name: restart, run: "true" }}
    - {{ name: accept, balancer: {{ use: hook, action: accept, node: "{{{{host.name}}}}" }} }}
"#,
        root = root.display()
    )
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "the secret leaked into {what}:\n{text}");
}

#[test]
fn an_http_balancer_whose_url_carries_a_secret_never_leaks_it() {
    let dir = TempDir::new("secret-http");
    dir.write("plan.yaml", http_plan(dir.path(), closed_port()));
    let key = format!("key={SECRET}");
    let env = [("PLANRUN_TEST_KEY", SECRET)];

    let shown = planrun_env(dir.path(), &["plan", "plan.yaml", "--var", &key], &env);
    assert_eq!(shown.code, 0, "{}{}", shown.stdout, shown.stderr);
    assert_clean("`planrun plan`", &shown.stdout);
    let json = planrun_env(dir.path(), &["plan", "plan.yaml", "--format", "json", "--var", &key], &env);
    assert!(json.stdout.contains("key=***"), "{}", json.stdout);
    assert_clean("`planrun plan --format json`", &json.stdout);

    // Pre-flight cannot read the node (the URL and its secret in the reason) and refuses;
    // with `--force` the reject fails the same way, and the states of the touched nodes
    // are printed at the end.
    for extra in [&[][..], &["--force"], &["--force", "--output", "json"], &["--force", "-v"]] {
        let mut args = vec!["apply", "plan.yaml", "--yes", "--var", &key];
        args.extend_from_slice(extra);
        let out = planrun_env(dir.path(), &args, &env);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(all.contains("key=***"), "the URL is shown, masked ({extra:?}):\n{all}");
        assert_clean(&format!("the output of apply {extra:?}"), &all);
    }
    let written = files_under(&dir.path().join(".planrun"));
    assert!(!written.is_empty(), "the journal and logs are written");
    for file in written {
        let text = std::fs::read_to_string(&file).unwrap();
        assert_clean(&file.display().to_string(), &text);
    }
}

#[test]
fn a_command_balancer_printing_the_secret_is_masked_in_the_preflight_view() {
    let dir = TempDir::new("secret-command");
    let root = dir.path().display();
    dir.write(
        "plan.yaml",
        format!(
            r#"version: 1
application: shop
secret_env: [PLANRUN_TEST_KEY]
lock: {{ path: "{root}/lock" }}
servers:
  - {{ host: 127.0.0.1, name: web1, transport: local, roles: [app] }}
  - {{ host: 127.0.0.1, name: web2, transport: local, roles: [app] }}
balancers:
  hook:
    kind: command
    reject: "echo rejecting with $PLANRUN_TEST_KEY; exit 3"
    accept: "true"
    status: "echo status via $PLANRUN_TEST_KEY >&2; exit 1"
rollout:
  select: {{ roles: [app] }}
  steps:
    - {{ name: reject, balancer: {{ use: hook, action: reject, node: "{{{{host.name}}}}" }} }}
    - {{ name: accept, balancer: {{ use: hook, action: accept, node: "{{{{host.name}}}}" }} }}
"#
        ),
    );
    let env = [("PLANRUN_TEST_KEY", SECRET)];
    for extra in [&["--force"][..], &["--force", "--output", "json"]] {
        let mut args = vec!["apply", "plan.yaml", "--yes"];
        args.extend_from_slice(extra);
        let out = planrun_env(dir.path(), &args, &env);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("***") || out.stderr.contains("***"), "{}{}", out.stdout, out.stderr);
        assert_clean("stdout", &out.stdout);
        assert_clean("stderr", &out.stderr);
    }
    for file in files_under(&dir.path().join(".planrun")) {
        assert_clean(&file.display().to_string(), &std::fs::read_to_string(&file).unwrap());
    }
}

#[test]
fn every_line_of_a_multi_line_secret_is_masked() {
    let dir = TempDir::new("secret-pem");
    let root = dir.path().display();
    let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGhVbXpxY3Jl\nZXRzLWFyZS1zZWNyZXQtcmVhbGx5LW5v\n-----END PRIVATE KEY-----";
    dir.write(
        "plan.yaml",
        format!(
            r#"version: 1
application: shop
secret_env: [PLANRUN_TEST_PEM]
lock: {{ path: "{root}/lock" }}
servers:
  - {{ host: 127.0.0.1, name: h1, transport: local, roles: [app] }}
rollout:
  select: {{ roles: [app] }}
  steps:
    - {{ name: leak, run: "printf '%s\n' \"$PLANRUN_TEST_PEM\"; false" }}
"#
        ),
    );
    for extra in [&["-v"][..], &["--output", "json"]] {
        let mut args = vec!["apply", "plan.yaml", "--yes"];
        args.extend_from_slice(extra);
        let out = planrun_env(dir.path(), &args, &[("PLANRUN_TEST_PEM", pem)]);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        let all = format!("{}{}", out.stdout, out.stderr);
        for line in pem.lines() {
            assert!(!all.contains(line), "`{line}` leaked:\n{all}");
        }
        assert!(all.contains("***"), "{all}");
    }
    for file in files_under(&dir.path().join(".planrun")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in pem.lines() {
            assert!(!text.contains(line), "`{line}` leaked into {}:\n{text}", file.display());
        }
    }
}

#[test]
fn a_secret_too_short_to_mask_is_refused_before_anything_runs() {
    let dir = TempDir::new("secret-short");
    let root = dir.path().display();
    dir.write(
        "plan.yaml",
        format!(
            r#"version: 1
application: shop
secret_env: [PIN]
lock: {{ path: "{root}/lock" }}
servers:
  - {{ host: 127.0.0.1, name: h1, transport: local, roles: [app] }}
rollout:
  select: {{ roles: [app] }}
  steps:
    - {{ name: mark, run: "touch {root}/ran" }}
"#
        ),
    );
    let out = planrun_env(dir.path(), &["apply", "plan.yaml", "--yes"], &[("PIN", "42")]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("`PIN` is 2 characters; a secret that short cannot be masked"), "{}", out.stderr);
    assert!(!dir.path().join("ran").exists(), "nothing ran");
}

/// `{{vars.x}}` goes into a command as it is: `--var 'release=$(id)'` would run `id`. The
/// shipped examples and `planrun init`'s scaffold quote every var (`{{quote vars.x}}`),
/// since they are what plans are copied from.
#[test]
fn the_examples_and_the_scaffold_quote_every_var_in_a_command() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["examples", "plans", "src/init"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "yaml") {
                files.push(entry.path());
            }
        }
    }
    assert!(files.len() >= 5, "{files:?}");
    let mut unquoted = Vec::new();
    for file in &files {
        for (i, line) in std::fs::read_to_string(file).unwrap().lines().enumerate() {
            let code = line.split(" #").next().unwrap_or("");
            if code.trim_start().starts_with('#') {
                continue;
            }
            if code.replace(' ', "").contains("{{vars.") {
                unquoted.push(format!("{}:{}: {line}", file.display(), i + 1));
            }
        }
    }
    assert!(unquoted.is_empty(), "unquoted vars:\n{}", unquoted.join("\n"));
}

fn one_step_plan(root: &Path, run: &str) -> String {
    format!(
        r#"version: 1
application: shop
secret_env: [PLANRUN_TEST_KEY]
lock: {{ path: "{root}/lock" }}
vars: {{ key: unset }}
servers:
  - {{ host: 127.0.0.1, name: h1, transport: local, roles: [app] }}
  - {{ host: 127.0.0.1, name: h2, transport: local, roles: [app] }}
rollout:
  select: {{ roles: [app] }}
  batch_size: 1
  steps:
    - {{ name: print, run: {run} }}
"#,
        root = root.display(),
        run = serde_json::to_string(run).unwrap()
    )
}

/// Issue 14: a secret a command prints in two writes (two reads of its output) is
/// still masked: masking works on whole lines.
#[test]
fn a_secret_printed_in_two_pieces_is_masked() {
    let dir = TempDir::new("secret-pieces");
    let head = &SECRET[..6];
    dir.write(
        "plan.yaml",
        one_step_plan(
            dir.path(),
            "printf '%.6s' \"$PLANRUN_TEST_KEY\"; sleep 0.2; printf '%s\\n' \"${PLANRUN_TEST_KEY#??????}\"",
        ),
    );
    for extra in [&["-v"][..], &["--output", "json"]] {
        let mut args = vec!["apply", "plan.yaml", "--yes"];
        args.extend_from_slice(extra);
        let out = planrun_env(dir.path(), &args, &[("PLANRUN_TEST_KEY", SECRET)]);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("***"), "{}", out.stdout);
        assert_clean("stdout", &out.stdout);
        assert!(!out.stdout.contains(head), "{}", out.stdout);
    }
    for file in files_under(&dir.path().join(".planrun")) {
        assert_clean(&file.display().to_string(), &std::fs::read_to_string(&file).unwrap());
    }
}

/// Issue 14: a line longer than the 64 KiB a line keeps, cut in the middle of a
/// secret: the part before the cut is the secret's beginning, and is masked too.
#[test]
fn a_secret_cut_by_the_line_cap_is_masked() {
    let dir = TempDir::new("secret-cut");
    let before = 64 * 1024 - 6;
    dir.write(
        "plan.yaml",
        one_step_plan(
            dir.path(),
            &format!("head -c {before} /dev/zero | tr '\\0' x; printf '%s\\n' \"$PLANRUN_TEST_KEY\"; false"),
        ),
    );
    let out = planrun_env(dir.path(), &["apply", "plan.yaml", "--yes", "-v"], &[("PLANRUN_TEST_KEY", SECRET)]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let more = SECRET.len() - 6;
    let masked = format!("{}*** … {more} more bytes", "x".repeat(before));
    assert!(
        out.stdout.contains(&masked),
        "the cut secret is masked:\n{}",
        &out.stdout[out.stdout.len().saturating_sub(400)..]
    );
    assert!(!out.stdout.contains(&format!("x{}", &SECRET[..6])), "the secret's beginning leaked");
    for file in files_under(&dir.path().join(".planrun")) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains(&format!("x{}", &SECRET[..6])), "leaked into {}", file.display());
    }
}

/// Issue 14: a `--var` that carries a secret is journaled masked, with the name of
/// the variable the secret comes from; a resume rebuilds it from the environment.
#[test]
fn a_var_carrying_a_secret_never_reaches_the_journal_and_a_resume_still_uses_it() {
    let dir = TempDir::new("secret-var");
    let root = dir.path().display().to_string();
    // h1 records the key it got; h2 fails the first time, so the run is resumable.
    let run = format!(
        "echo \"{{{{host.name}}}} {{{{vars.key}}}}\" >> {root}/got; [ {{{{host.name}}}} = h1 ] || [ -e {root}/fixed ]"
    );
    dir.write("plan.yaml", one_step_plan(dir.path(), &run));
    let key = format!("key=pre-{SECRET}-post");
    let env = [("PLANRUN_TEST_KEY", SECRET)];
    let out = planrun_env(dir.path(), &["apply", "plan.yaml", "--yes", "--var", &key], &env);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let journal = std::fs::read_to_string(dir.path().join(".planrun/journal.jsonl")).unwrap();
    assert_clean("the journal", &journal);
    assert!(journal.contains(r#""key":"pre-***-post""#), "{journal}");
    assert!(journal.contains(r#"{"secret":"PLANRUN_TEST_KEY"}"#), "{journal}");
    // The hint to resume leaves the var out: `--resume` reuses it.
    assert!(out.stdout.contains("planrun apply plan.yaml --resume\n"), "{}", out.stdout);

    let resumed = planrun_env(dir.path(), &["apply", "plan.yaml", "--yes", "--resume"], &env);
    assert_eq!(resumed.code, 1, "h2 fails again: {}{}", resumed.stdout, resumed.stderr);
    let got = std::fs::read_to_string(dir.path().join("got")).unwrap();
    assert_eq!(got.lines().last(), Some(format!("h2 pre-{SECRET}-post").as_str()), "{got}");
    // Giving the var again, the same value, is the same input.
    dir.write("fixed", "");
    let again = planrun_env(dir.path(), &["apply", "plan.yaml", "--yes", "--resume", "--var", &key], &env);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    for file in files_under(&dir.path().join(".planrun")) {
        assert_clean(&file.display().to_string(), &std::fs::read_to_string(&file).unwrap());
    }
}
