//! The editor experience, proven with the real client: the `yaml-language-server` that
//! VS Code, Neovim and others run, started over stdio, fed a plan with planrun's schema
//! modeline, asked what an editor asks.
//!
//! Needs Node.js and the server from the npm registry (`.ci/run` installs it into
//! `.ci/node`). Without them plain `cargo test` lists the test as ignored with the reason
//! (`build.rs` sets `no_yaml_language_server`); with `CI` set it runs and fails. Nothing reaches the network: the schema store is off, and every HTTP request the
//! server might make goes to a proxy that is a local tripwire, checked at the end.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const TIMEOUT: Duration = Duration::from_secs(30);

/// The server's entry point, installed by `.ci/run`.
fn server_script() -> PathBuf {
    Path::new(REPO).join(".ci/node/node_modules/yaml-language-server/bin/yaml-language-server")
}

/// Fails the test when Node.js or the server is missing: `build.rs` already made plain
/// `cargo test` ignore it then, so getting here without them (under CI, or `--ignored`)
/// is a set-up to fix, not a pass.
fn require_tools() {
    let node = Command::new("node").arg("--version").output();
    let pinned = pinned_version();
    let install = format!("run `.ci/run`, or `npm install --prefix .ci/node yaml-language-server@{pinned}`");
    let reason = match node {
        Err(_) => "Node.js (`node`) is not installed".to_string(),
        Ok(out) if !out.status.success() => "`node --version` failed".to_string(),
        Ok(_) if !server_script().is_file() => {
            format!("yaml-language-server is not installed at {}: {install}", server_script().display())
        }
        Ok(_) => match installed_version() {
            Some(version) if version == pinned => return,
            other => format!("yaml-language-server {other:?} is installed, `.ci/run` pins {pinned}: {install}"),
        },
    };
    panic!("the editor test cannot run: {reason}");
}

/// The version `.ci/run` pins: its `LS_VERSION=` line.
fn pinned_version() -> String {
    let run = std::fs::read_to_string(Path::new(REPO).join(".ci/run")).expect(".ci/run exists");
    run.lines().find_map(|l| l.strip_prefix("LS_VERSION=")).expect(".ci/run pins LS_VERSION").trim().to_string()
}

fn installed_version() -> Option<String> {
    let package = Path::new(REPO).join(".ci/node/node_modules/yaml-language-server/package.json");
    let package: Value = serde_json::from_str(&std::fs::read_to_string(package).ok()?).ok()?;
    package["version"].as_str().map(String::from)
}

/// A language server over stdio: Content-Length framed JSON-RPC, one reader thread.
struct Server {
    child: Child,
    stdin: ChildStdin,
    incoming: mpsc::Receiver<Value>,
    next_id: i64,
    /// `textDocument/publishDiagnostics` notifications, by document URI, latest last.
    diagnostics: Vec<(String, Value)>,
    settings: Value,
}

impl Server {
    fn start(settings: Value, proxy: &str) -> Server {
        let mut child = Command::new("node")
            .arg(server_script())
            .arg("--stdio")
            .env("HTTP_PROXY", proxy)
            .env("HTTPS_PROXY", proxy)
            .env("http_proxy", proxy)
            .env("https_proxy", proxy)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node starts the yaml-language-server");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, incoming) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            while let Some(message) = read_message(&mut reader) {
                if tx.send(message).is_err() {
                    break;
                }
            }
        });
        Server { child, stdin, incoming, next_id: 0, diagnostics: Vec::new(), settings }
    }

    /// The handshake an editor makes, with the capabilities the tests use.
    fn initialize(&mut self, root: &str) {
        self.request(
            "initialize",
            json!({
                "processId": std::process::id(),
                "rootUri": root,
                "capabilities": {
                    "workspace": { "configuration": true, "didChangeConfiguration": { "dynamicRegistration": true } },
                    "textDocument": {
                        "completion": { "completionItem": { "snippetSupport": true } },
                        "hover": { "contentFormat": ["markdown", "plaintext"] },
                        "publishDiagnostics": {},
                        "codeAction": {},
                    },
                },
            }),
        );
        self.notify("initialized", json!({}));
    }

    fn open(&mut self, uri: &str, text: &str) {
        self.notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": uri, "languageId": "yaml", "version": 1, "text": text } }),
        );
    }

    /// The diagnostics of the first validation of `uri`.
    fn first_diagnostics(&mut self, uri: &str) -> Vec<Value> {
        let diagnostics = self.diagnostics_for(uri, |_| true);
        diagnostics.as_array().cloned().unwrap_or_default()
    }

    /// The Markdown an editor shows on hover at `position`.
    fn hover(&mut self, uri: &str, position: Value) -> String {
        let hover = self.request("textDocument/hover", json!({ "textDocument": { "uri": uri }, "position": position }));
        hover["contents"]["value"].as_str().map(String::from).unwrap_or_else(|| hover["contents"].to_string())
    }

    fn send(&mut self, message: &Value) {
        let body = message.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).expect("write to the server");
        self.stdin.flush().expect("flush to the server");
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }

    /// Sends a request and waits for its response, answering what the server asks
    /// meanwhile (its configuration, capability registrations).
    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let message = self.next_message(deadline, method);
            if message.get("method").is_none() && message["id"] == json!(id) {
                assert!(message.get("error").is_none(), "{method} failed: {message}");
                return message["result"].clone();
            }
            self.handle(message);
        }
    }

    fn next_message(&mut self, deadline: Instant, waiting_for: &str) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.incoming.recv_timeout(left) {
            Ok(message) => message,
            Err(_) => panic!("no answer from yaml-language-server to {waiting_for} within {TIMEOUT:?}"),
        }
    }

    fn handle(&mut self, message: Value) {
        let method = message["method"].as_str().unwrap_or_default().to_string();
        if method == "textDocument/publishDiagnostics" {
            let uri = message["params"]["uri"].as_str().unwrap_or_default().to_string();
            self.diagnostics.push((uri, message["params"]["diagnostics"].clone()));
            return;
        }
        let Some(id) = message.get("id").cloned() else { return };
        // A request from the server: answer so it does not wait on us.
        let result = match method.as_str() {
            "workspace/configuration" => {
                let items = message["params"]["items"].as_array().cloned().unwrap_or_default();
                Value::Array(
                    items
                        .iter()
                        .map(|item| {
                            self.settings
                                .get(item["section"].as_str().unwrap_or_default())
                                .cloned()
                                .unwrap_or(json!({}))
                        })
                        .collect(),
                )
            }
            _ => Value::Null,
        };
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "result": result }));
    }

    /// Waits for diagnostics of `uri` that satisfy `done`, and returns them.
    fn diagnostics_for(&mut self, uri: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some((_, d)) = self.diagnostics.iter().rev().find(|(u, _)| u == uri)
                && done(d)
            {
                return d.clone();
            }
            let seen: Vec<&Value> = self.diagnostics.iter().filter(|(u, _)| u == uri).map(|(_, d)| d).collect();
            let message = self.next_message(deadline, &format!("diagnostics of {uri} (so far: {seen:?})"));
            self.handle(message);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_message(reader: &mut impl BufRead) -> Option<Value> {
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.strip_prefix("Content-Length:") {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length?];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// A local listener standing in for every HTTP(S) proxy: it counts who tried to go out.
fn tripwire() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the tripwire");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (address, hits)
}

fn labels(completion: &Value) -> Vec<String> {
    let items = completion.get("items").unwrap_or(completion);
    items.as_array().into_iter().flatten().filter_map(|i| i["label"].as_str().map(String::from)).collect()
}

/// Where `needle` ends in `text`, as an LSP position.
fn position_after(text: &str, needle: &str) -> Value {
    let offset = text.find(needle).unwrap_or_else(|| panic!("{needle:?} in the document")) + needle.len();
    let before = &text[..offset];
    let line = before.matches('\n').count();
    let character = before.len() - before.rfind('\n').map_or(0, |i| i + 1);
    json!({ "line": line, "character": character })
}

const PLAN: &str = "\
# yaml-language-server: $schema=../schemas/plan.schema.json
version: 1
application: shop
aplication: typo
servers:
  - { host: 10.0.0.2, roles: [app] }
rollout:
  select: { roles: [app] }
  steps:
    - name: restart
      
";

const BASE: &str = "\
# yaml-language-server: $schema=../schemas/plan.schema.json
version: 1
application: shop
rollout:
  select: { roles: [app] }
  stpes: []
  steps:
    - { name: restart, run: restart }
";

#[test]
#[cfg_attr(
    no_yaml_language_server,
    ignore = "needs Node.js and the yaml-language-server that .ci/run pins, in .ci/node: `bash .ci/run` installs both"
)]
fn yaml_language_server_completes_explains_and_checks_plans() {
    require_tools();
    let (proxy, hits) = tripwire();
    let settings = json!({
        "yaml": {
            "validate": true,
            "hover": true,
            "completion": true,
            // The catalog at schemastore.org would be fetched otherwise.
            "schemaStore": { "enable": false },
            // The README's VS Code setting for a repository of plans, relative to the
            // workspace; this test's own documents are the ones it maps.
            "schemas": { "./schemas/plan.schema.json": ["plans/editor-mapped-*.yaml"] },
        },
        "http": { "proxy": proxy, "proxyStrictSSL": false },
    });
    let mut server = Server::start(settings, &proxy);

    // The documents live beside the real plans: the modeline resolves, relative to the
    // document, to the checked-in schemas/plan.schema.json.
    let root = format!("file://{REPO}");
    server.initialize(&root);

    let uri = format!("{root}/plans/editor-test.yaml");
    server.open(&uri, PLAN);

    // A misspelt field: the schema's `additionalProperties: false`, at the field's line.
    let diagnostics = server.diagnostics_for(&uri, |d| d.to_string().contains("aplication"));
    let typo = diagnostics
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["message"].as_str().is_some_and(|m| m.contains("aplication")))
        .unwrap_or_else(|| panic!("no diagnostic for the misspelt `aplication`: {diagnostics}"));
    assert_eq!(typo["range"]["start"]["line"], 3, "{typo}");

    // Completion at the top level: the plan's fields.
    let at_top = json!({ "line": 11, "character": 0 });
    let top = labels(
        &server.request("textDocument/completion", json!({ "textDocument": { "uri": uri }, "position": at_top })),
    );
    for field in ["extends", "vars", "balancers", "before", "after", "ssh"] {
        assert!(top.contains(&field.to_string()), "top-level completion lacks `{field}`: {top:?}");
    }

    // Completion inside a step: the step kinds.
    let in_step = position_after(PLAN, "    - name: restart\n      ");
    let step = labels(
        &server.request("textDocument/completion", json!({ "textDocument": { "uri": uri }, "position": in_step })),
    );
    for kind in ["run", "local", "balancer", "wait"] {
        assert!(step.contains(&kind.to_string()), "completion in a step lacks `{kind}`: {step:?}");
    }

    // Hover on a field: its title and description from the Rust doc comment.
    let text = server.hover(&uri, json!({ "line": 2, "character": 3 }));
    assert!(text.contains("#### Application name"), "hover: {text}");
    assert!(text.contains("The application's name, available to templates as"), "hover: {text}");

    // A base plan (steps, no servers) is not flagged: the editor schema leaves `servers`
    // to planrun, which checks the merged plan.
    let base_uri = format!("{root}/plans/editor-test-base.yaml");
    server.open(&base_uri, BASE);
    // Its one mistake is found, so validation ran; nothing is said about `servers`.
    let base = server.diagnostics_for(&base_uri, |d| d.to_string().contains("stpes"));
    let messages: Vec<&str> = base.as_array().into_iter().flatten().filter_map(|d| d["message"].as_str()).collect();
    assert_eq!(messages.len(), 1, "{base}");
    assert!(messages[0].contains("stpes"), "{base}");

    // Without a modeline, the `yaml.schemas` setting maps the schema onto the file.
    let mapped_uri = format!("{root}/plans/editor-mapped-test.yaml");
    let mapped = BASE.replace("# yaml-language-server: $schema=../schemas/plan.schema.json\n", "");
    server.open(&mapped_uri, &mapped);
    server.diagnostics_for(&mapped_uri, |d| d.to_string().contains("stpes"));

    // The schema's `$id` (https://planrun.dev/..., not reachable) is not fetched: the
    // modeline's file is used as it is.
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the language server tried to reach the network");

    // The tripwire does catch a request: a modeline with a URL goes through it.
    let remote_uri = format!("{root}/plans/editor-test-remote.yaml");
    let remote = BASE.replace("../schemas/plan.schema.json", "https://planrun.dev/schemas/plan.schema.json");
    server.open(&remote_uri, &remote);
    // Whether a schema that cannot be fetched yields a diagnostic varies; the attempt
    // reaching the tripwire does not.
    let deadline = Instant::now() + TIMEOUT;
    while hits.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        if let Ok(message) = server.incoming.recv_timeout(Duration::from_millis(50)) {
            server.handle(message);
        }
    }
    assert!(hits.load(Ordering::SeqCst) > 0, "the tripwire saw no request for a remote schema");

    let _ = server.request("shutdown", Value::Null);
    server.notify("exit", Value::Null);
}

/// A server for one test, its workspace the repository, the network a tripwire.
fn editor() -> (Server, String, Arc<AtomicUsize>) {
    require_tools();
    let (proxy, hits) = tripwire();
    let settings = json!({
        "yaml": { "validate": true, "hover": true, "completion": true, "schemaStore": { "enable": false } },
        "http": { "proxy": proxy, "proxyStrictSSL": false },
    });
    let mut server = Server::start(settings, &proxy);
    let root = format!("file://{REPO}");
    server.initialize(&root);
    (server, root, hits)
}

fn close(mut server: Server, hits: &AtomicUsize) {
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the language server tried to reach the network");
    let _ = server.request("shutdown", Value::Null);
    server.notify("exit", Value::Null);
}

fn message(diagnostic: &Value) -> &str {
    diagnostic["message"].as_str().unwrap_or_default()
}

fn line_of(diagnostic: &Value) -> u64 {
    diagnostic["range"]["start"]["line"].as_u64().unwrap_or(u64::MAX)
}

/// The YAML files of a folder, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The plans a user opens first: the repository's environment plans and examples, and what
/// `planrun init` writes. None is red (a plan that `extends` a base lacks nothing the base
/// supplies), and a misspelt field in each is still flagged, at its line.
#[test]
#[cfg_attr(
    no_yaml_language_server,
    ignore = "needs Node.js and the yaml-language-server that .ci/run pins, in .ci/node: `bash .ci/run` installs both"
)]
fn every_shipped_and_generated_plan_is_clean_and_a_misspelt_field_in_each_is_flagged() {
    let (mut server, _root, hits) = editor();
    let scaffold = common::TempDir::new("editor-init");
    common::planrun(&["init", &scaffold.path().display().to_string()]).code(0);
    let mut plans = yaml_files(&Path::new(REPO).join("plans"));
    plans.extend(yaml_files(&Path::new(REPO).join("examples")));
    plans.extend(yaml_files(&scaffold.path().join("plans")));
    assert!(plans.len() >= 8, "{plans:?}");

    for path in &plans {
        let text = std::fs::read_to_string(path).expect("the plan reads");
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schemas/plan.schema.json"),
            "{} has no schema modeline",
            path.display()
        );
        let uri = format!("file://{}", path.display());
        server.open(&uri, &text);
        let diagnostics = server.first_diagnostics(&uri);
        assert!(diagnostics.is_empty(), "{} is flagged in the editor: {diagnostics:#?}", path.display());

        // A copy beside it (the modeline resolves the same) with a misspelt field at its end.
        let name = path.file_name().unwrap().to_string_lossy();
        let copy_uri = format!("file://{}", path.with_file_name(format!("editor-typo-{name}")).display());
        let line = text.trim_end().lines().count() as u64;
        server.open(&copy_uri, &format!("{}\nrollot: {{}}\n", text.trim_end()));
        let diagnostics = server.first_diagnostics(&copy_uri);
        assert!(
            diagnostics.iter().any(|d| line_of(d) == line && message(d).contains("rollot")),
            "the misspelt `rollot` in a copy of {} is not flagged at line {line}: {diagnostics:#?}",
            path.display()
        );
    }
    close(server, &hits);
}

const HOVERED: &str = "\
# yaml-language-server: $schema=../schemas/plan.schema.json
version: 1
application: shop
servers:
  - host: 10.0.0.2
    roles: [app]
balancers:
  lb:
    kind: haproxy
    socket: unix:///run/haproxy/admin.sock
    backend: app
rollout:
  select: { roles: [app] }
  batch_size: 2
  steps:
    - name: restart
      run: systemctl restart shop
      timeout: 2m
";

/// Hover shows the hovered property's own title and description, whatever branch its
/// value matched: never the plan's title, never only the branch's generic words.
#[test]
#[cfg_attr(
    no_yaml_language_server,
    ignore = "needs Node.js and the yaml-language-server that .ci/run pins, in .ci/node: `bash .ci/run` installs both"
)]
fn hover_shows_each_propertys_own_title_and_description() {
    let (mut server, root, hits) = editor();
    let uri = format!("{root}/plans/editor-hover.yaml");
    server.open(&uri, HOVERED);
    assert!(server.first_diagnostics(&uri).is_empty(), "the hovered plan is valid");
    for (key, title, description) in [
        ("batch_size", "Batch size", "How many hosts are out of rotation at once: a count (`1`)"),
        ("run", "Command on the host", "A command run on the host through its transport"),
        ("host", "Server address", "The address planrun connects to: an IP address or a host name."),
        ("kind", "Balancer kind", "Which balancer this is: `linode`, `haproxy`, `http` or `command`."),
        ("timeout", "Step timeout", "The longest this step may take, retries included."),
    ] {
        let at = HOVERED.find(&format!("{key}:")).unwrap_or_else(|| panic!("`{key}` in the plan"));
        let text = server.hover(&uri, position_after(HOVERED, &HOVERED[..at + 1]));
        assert!(text.starts_with(&format!("#### {title}\n")), "hover on `{key}` has not its title: {text}");
        assert!(text.contains(description), "hover on `{key}` lacks its description: {text}");
        assert!(!text.contains("planrun plan"), "hover on `{key}` falls back to the plan's title: {text}");
        let examples: Vec<&str> = text.split("Example:").skip(1).collect();
        let mut unique = examples.clone();
        unique.dedup();
        assert_eq!(examples, unique, "hover on `{key}` repeats an example: {text}");
    }
    close(server, &hits);
}

const MISTAKES: &str = "\
# yaml-language-server: $schema=../schemas/plan.schema.json
version: 1
application: shop
servers:
  - { host: 10.0.0.2, roles: [app] }
rollout:
  select: { roles: [app] }
  batch_size: lots
  steps:
    - name: late
      run: restart
      timeout: 90
    - name: nothing
      retries: 1
    - name: two
      run: restart
      local: notify
    - name: check
      wait: {}
";

/// What the editor says about a duration without a unit, a batch size that is neither a
/// count nor a percentage, and a step or a wait that does not do exactly one thing: the
/// schema's own messages, at the line of the mistake.
#[test]
#[cfg_attr(
    no_yaml_language_server,
    ignore = "needs Node.js and the yaml-language-server that .ci/run pins, in .ci/node: `bash .ci/run` installs both"
)]
fn the_editor_explains_durations_batch_sizes_and_step_kinds() {
    let (mut server, root, hits) = editor();
    let uri = format!("{root}/plans/editor-mistakes.yaml");
    server.open(&uri, MISTAKES);
    let diagnostics = server.first_diagnostics(&uri);
    let at = |line: u64| -> Vec<&str> { diagnostics.iter().filter(|d| line_of(d) == line).map(message).collect() };
    assert_eq!(at(7), ["a count of hosts such as `2`, or a percentage of the selected hosts such as `25%`"]);
    assert_eq!(
        at(11),
        ["a duration with a unit, like `90s` or `2m`: a bare number could mean seconds or milliseconds"]
    );
    assert_eq!(at(12), ["this step does nothing: give it one of `run`, `local`, `balancer` or `wait`"]);
    let several = "a step does one thing: give it only one of `run`, `local`, `balancer` or `wait`, and split it into several steps to do more";
    assert_eq!(at(15), [several], "{diagnostics:#?}");
    assert_eq!(at(16), [several], "{diagnostics:#?}");
    assert_eq!(
        at(18),
        ["this wait checks nothing: give it one of `sleep`, `http`, `tcp`, `command` or `balancer_up`"],
        "{diagnostics:#?}"
    );
    assert_eq!(diagnostics.len(), 6, "{diagnostics:#?}");
    close(server, &hits);
}

/// A misspelt field's diagnostic comes with quick fixes from the schema's field names:
/// the editor's did-you-mean (the server offers every field not yet written, unranked;
/// the CLI names the closest one).
#[test]
#[cfg_attr(
    no_yaml_language_server,
    ignore = "needs Node.js and the yaml-language-server that .ci/run pins, in .ci/node: `bash .ci/run` installs both"
)]
fn a_misspelt_field_gets_quick_fixes_from_the_schemas_field_names() {
    let (mut server, root, hits) = editor();
    let uri = format!("{root}/plans/editor-quick-fix.yaml");
    let text = HOVERED.replace("application: shop", "aplication: shop");
    server.open(&uri, &text);
    let diagnostics = server.first_diagnostics(&uri);
    let typo = diagnostics
        .iter()
        .find(|d| message(d).contains("aplication"))
        .unwrap_or_else(|| panic!("no diagnostic for `aplication`: {diagnostics:#?}"))
        .clone();
    let actions = server.request(
        "textDocument/codeAction",
        json!({ "textDocument": { "uri": uri }, "range": typo["range"], "context": { "diagnostics": [typo] } }),
    );
    let fix = actions
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["title"] == "application")
        .unwrap_or_else(|| panic!("no quick fix `application`: {actions:#}"));
    let edit = &fix["edit"]["changes"][&uri][0];
    assert_eq!(edit["newText"], "application", "{fix}");
    assert_eq!(edit["range"], typo["range"], "the fix replaces the misspelt key: {fix}");
    close(server, &hits);
}

/// Completing an empty plan offers the plan snippet; inserted with its placeholders'
/// defaults it is a plan that `planrun validate` accepts, and no other completion there
/// inserts a whole plan that would not.
#[test]
#[cfg_attr(
    no_yaml_language_server,
    ignore = "needs Node.js and the yaml-language-server that .ci/run pins, in .ci/node: `bash .ci/run` installs both"
)]
fn the_plan_snippet_inserts_a_plan_that_validates() {
    let (mut server, root, hits) = editor();
    let uri = format!("{root}/plans/editor-empty.yaml");
    let modeline = "# yaml-language-server: $schema=../schemas/plan.schema.json\n";
    server.open(&uri, modeline);
    server.first_diagnostics(&uri);
    let completion = server.request(
        "textDocument/completion",
        json!({ "textDocument": { "uri": uri }, "position": { "line": 1, "character": 0 } }),
    );
    let items = completion.get("items").unwrap_or(&completion).as_array().cloned().unwrap_or_default();
    let plans: Vec<&Value> =
        items.iter().filter(|i| i["insertText"].as_str().is_some_and(|t| t.lines().count() > 3)).collect();
    let [snippet] = plans.as_slice() else { panic!("expected the plan snippet alone among: {items:#?}") };
    assert_eq!(snippet["label"], "planrun plan", "{snippet}");
    let inserted = snippet["insertText"].as_str().unwrap();
    let dir = common::TempDir::new("editor-snippet");
    dir.write("plan.yaml", format!("{modeline}{}\n", common::expand_placeholders(inserted)));
    common::planrun_in(dir.path(), &["validate", "plan.yaml"]).code(0);
    close(server, &hits);
}
