//! The live view as an operator sees it: the real binary in a pseudo-terminal of a
//! given size (portable-pty), its output fed to a terminal emulator (vt100) whose final
//! screen is what is asserted — the notices shown, nothing left of the live area, no
//! line wrapped by the terminal — plus the confirmation after the pre-flight and colour.
//! Local transport and a `command` balancer: no sshd needed.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TempDir, local_servers, pool_in_rotation};
use portable_pty::{CommandBuilder, PtySize, native_pty_system};

const ROWS: u16 = 50;

/// Three local hosts behind a `command` balancer whose pool is a folder; each restart
/// takes `restart_secs` and appends to `record`; the restart fails on `vars.fail`.
fn plan(dir: &TempDir, restart_secs: f64) -> String {
    pool_in_rotation(dir.path(), 3);
    let root = dir.path().display();
    format!(
        "version: 1
application: shop
vars:
  fail: none
servers:
{servers}balancers:
  pool:
    kind: command
    reject: rm -f {root}/pool/{{{{node}}}}
    accept: touch {root}/pool/{{{{node}}}}
    status: test -e {root}/pool/{{{{node}}}}
lock: {{ path: {root}/lock }}
rollout:
  select: {{ roles: [app] }}
  batch_size: 1
  steps:
    - name: reject
      balancer: {{ use: pool, action: reject, node: \"{{{{host.name}}}}\" }}
    - name: restart
      run: sleep {restart_secs} && echo restart {{{{host.name}}}} >> {root}/record && test {{{{host.name}}}} != {{{{vars.fail}}}}
      timeout: 20s
    - name: accept
      balancer: {{ use: pool, action: accept, node: \"{{{{host.name}}}}\" }}
",
        servers = local_servers(3)
    )
}

/// planrun running in a pseudo-terminal `cols` wide.
struct Session {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    input: Box<dyn Write + Send>,
    output: Arc<Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Session {
    fn start(dir: &Path, args: &[&str], cols: u16, env: &[(&str, &str)]) -> Session {
        let pair = native_pty_system()
            .openpty(PtySize { rows: ROWS, cols, pixel_width: 0, pixel_height: 0 })
            .expect("open a pseudo-terminal");
        let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_planrun"));
        command.args(args);
        command.cwd(dir);
        // The terminal's own size is what counts, not what the suite's shell exported.
        for name in ["COLUMNS", "LINES", "NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "SSH_AUTH_SOCK"] {
            command.env_remove(name);
        }
        command.env("TERM", "xterm-256color");
        for (name, value) in env {
            command.env(name, value);
        }
        let child = pair.slave.spawn_command(command).expect("planrun starts in the pty");
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().expect("read the pty");
        let input = pair.master.take_writer().expect("write the pty");
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        let reader = std::thread::spawn(move || {
            // The master is kept open by this thread alone; it ends with the child (EIO).
            let _master = pair.master;
            let mut buffer = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        Session { child, input, output, reader }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the output shows `needle`.
    #[track_caller]
    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.text().contains(needle) {
            assert!(Instant::now() < deadline, "the terminal never showed {needle:?}:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.input.write_all(bytes).unwrap();
        self.input.flush().unwrap();
    }

    /// Waits for planrun to exit; its exit code and every byte it wrote.
    fn finish(mut self) -> (u32, Vec<u8>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("planrun did not exit:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // What it wrote last is read by the thread shortly after the exit: the read ends
        // when the last holder of the terminal (planrun, a command it started) is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let bytes = self.output.lock().unwrap().clone();
        (status.exit_code(), bytes)
    }
}

/// The screen a terminal of this size shows after all of `bytes`.
fn screen(bytes: &[u8], cols: u16) -> vt100::Parser {
    let size = |n: u16| std::num::NonZeroU16::new(n).expect("a terminal has rows and columns");
    let mut parser = vt100::Parser::new(size(ROWS), size(cols), 0);
    parser.process(bytes);
    parser
}

/// The lines written after the live view's last clear (`ESC[2K`): the summary and what
/// follows it, ANSI sequences removed.
fn closing_lines(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let after = text.rsplit("\u{1b}[2K").next().unwrap_or(&text);
    let mut plain = String::new();
    let mut chars = after.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                // Parameters, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            plain.push(c);
        }
    }
    plain.split('\n').map(String::from).collect()
}

/// What fits the terminal: no word the terminal had to break across two rows (indicatif
/// pads its lines to the full width and lets the terminal wrap after the padding, so a
/// wrapped row is fine when it ends in a blank), and no line of the summary wider than it.
#[track_caller]
fn assert_fits(bytes: &[u8], cols: u16) {
    let parser = screen(bytes, cols);
    let screen = parser.screen();
    let contents = screen.contents();
    let cell = |row: u16, col: u16| screen.cell(row, col).map(|c| c.contents().to_string()).unwrap_or_default();
    for row in 0..ROWS - 1 {
        let (last, next) = (cell(row, cols - 1), cell(row + 1, 0));
        let blank = |c: &str| c.trim().is_empty();
        assert!(
            !(screen.row_wrapped(row) && !blank(&last) && !blank(&next)),
            "row {row} breaks a word at {cols} columns:\n{contents}"
        );
    }
    for line in closing_lines(bytes) {
        assert!(line.chars().count() <= usize::from(cols), "a line wider than {cols} columns: {line:?}\n{contents}");
    }
}

/// Ctrl-C while h1 restarts: the notice shows above the live view, h1's window
/// finishes, nothing new starts, the summary lists every host and the exit code is 130.
fn ctrl_c_at(cols: u16) {
    let dir = TempDir::new(&format!("pty-ctrl-c-{cols}"));
    dir.write("plan.yaml", plan(&dir, 1.5));
    let mut session = Session::start(dir.path(), &["apply", "plan.yaml", "--yes"], cols, &[("NO_COLOR", "1")]);
    session.wait_for("restart");
    std::thread::sleep(Duration::from_millis(300));
    session.send(b"\x03");
    let (code, bytes) = session.finish();
    let parser = screen(&bytes, cols);
    let shown = parser.screen().contents();
    let rows: Vec<String> = parser.screen().rows(0, cols).collect();
    assert_eq!(code, 130, "{shown}");
    // The notice is broken between words at 60 columns: read as one text.
    let words = rows.join(" ").split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("interrupt: starting nothing new; running steps finish (press Ctrl-C again to cancel them)"),
        "the first Ctrl-C's notice:\n{shown}"
    );
    assert!(shown.contains("rollout INTERRUPTED"), "{shown}");
    // Nothing of the live area stays behind: neither the overall bar nor a host's line.
    assert!(!shown.contains("steps ·"), "a frozen copy of the live view:\n{shown}");
    assert!(!shown.contains("hosts done"), "a frozen copy of the live view:\n{shown}");
    // Every selected host has its row, in plan order; those never reached say so.
    let rows: Vec<&String> = rows.iter().filter(|l| l.starts_with("│ h") && !l.starts_with("│ host")).collect();
    assert_eq!(rows.len(), 3, "{shown}");
    assert!(rows[0].contains("h1") && rows[0].contains("ok"), "{shown}");
    assert!(rows[1].contains("h2") && rows[1].contains("not started"), "{shown}");
    assert!(rows[2].contains("h3") && rows[2].contains("not started"), "{shown}");
    assert_eq!(dir.lines("record"), ["restart h1"]);
    assert_fits(&bytes, cols);
}

#[test]
fn ctrl_c_in_the_live_view_at_120_columns() {
    ctrl_c_at(120);
}

#[test]
fn ctrl_c_in_the_live_view_at_60_columns() {
    ctrl_c_at(60);
}

/// A run to its end at 60 columns: the bars and the summary fit, nothing wraps.
#[test]
fn a_whole_run_fits_60_columns() {
    let dir = TempDir::new("pty-60");
    dir.write("plan.yaml", plan(&dir, 0.2));
    let session = Session::start(dir.path(), &["apply", "plan.yaml", "--yes"], 60, &[("NO_COLOR", "1")]);
    let (code, bytes) = session.finish();
    let parser = screen(&bytes, 60);
    let shown = parser.screen().contents();
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("rollout succeeded"), "{shown}");
    assert_fits(&bytes, 60);
}

/// Like `terraform apply`: the balancers' view and a short plan, then the question.
fn confirm(answer: &[u8]) -> (u32, String, TempDir) {
    let dir = TempDir::new("pty-confirm");
    dir.write("plan.yaml", plan(&dir, 0.1));
    let mut session = Session::start(dir.path(), &["apply", "plan.yaml"], 120, &[("NO_COLOR", "1")]);
    session.wait_for("[y/N]");
    let asked = session.text();
    session.send(answer);
    let (code, bytes) = session.finish();
    let shown = screen(&bytes, 120).screen().contents();
    let question = asked.find("? [y/N]").unwrap();
    for before in ["pre-flight: ok", "batch 1/3: h1", "batch 3/3: h3", "each host: reject → restart → accept"] {
        let at = asked.find(before).unwrap_or_else(|| panic!("{before:?} is not shown before the question:\n{asked}"));
        assert!(at < question, "{before:?} comes after the question:\n{asked}");
    }
    (code, shown, dir)
}

#[test]
fn the_question_comes_after_the_pre_flight_and_a_no_changes_nothing() {
    let (code, shown, dir) = confirm(b"n\r");
    // Declining is documented as exit 2: nothing was executed.
    assert_eq!(code, 2, "{shown}");
    assert!(shown.contains("apply cancelled; nothing was executed"), "{shown}");
    assert!(dir.lines("record").is_empty());
    for host in ["h1", "h2", "h3"] {
        assert!(dir.path().join("pool").join(host).exists(), "{host} was taken out of the pool");
    }
    assert!(!dir.path().join(".planrun").join("journal.jsonl").exists(), "a declined run was journaled");
    assert!(!dir.path().join("lock").exists(), "the lock was left behind");
}

#[test]
fn the_question_comes_after_the_pre_flight_and_a_yes_rolls() {
    let (code, shown, dir) = confirm(b"y\r");
    assert_eq!(code, 0, "{shown}");
    assert_eq!(dir.lines("record"), ["restart h1", "restart h2", "restart h3"]);
}

/// Ctrl-C at the question: nothing runs, and the exit code says it was interrupted.
#[test]
fn ctrl_c_at_the_question_exits_130_having_changed_nothing() {
    let dir = TempDir::new("pty-confirm-ctrl-c");
    dir.write("plan.yaml", plan(&dir, 0.1));
    let mut session = Session::start(dir.path(), &["apply", "plan.yaml"], 120, &[("NO_COLOR", "1")]);
    session.wait_for("[y/N]");
    session.send(b"\x03");
    let (code, bytes) = session.finish();
    let shown = screen(&bytes, 120).screen().contents();
    assert_eq!(code, 130, "{shown}");
    assert!(shown.contains("apply cancelled; nothing was executed"), "{shown}");
    assert!(dir.lines("record").is_empty());
    assert!(!dir.path().join("lock").exists(), "the lock was left behind");
}

/// Whether `bytes` hold an SGR colour sequence (`ESC[31m`, `ESC[38;5;…m`, `ESC[1;31m`).
fn has_colour(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    text.split('\u{1b}').skip(1).any(|rest| {
        let Some(params) = rest.strip_prefix('[') else { return false };
        let Some(end) = params.find(|c: char| !(c.is_ascii_digit() || c == ';')) else { return false };
        params[end..].starts_with('m')
            && params[..end].split(';').any(|p| p.len() == 2 && (p.starts_with('3') || p.starts_with('4')))
    })
}

fn failing_run(env: &[(&str, &str)]) -> (u32, Vec<u8>) {
    let dir = TempDir::new("pty-colour");
    dir.write("plan.yaml", plan(&dir, 0.1));
    let session = Session::start(dir.path(), &["apply", "plan.yaml", "--yes", "--var", "fail=h1"], 120, env);
    session.finish()
}

#[test]
fn a_failure_is_red_on_a_terminal_and_no_colour_with_no_color() {
    let (code, bytes) = failing_run(&[]);
    assert_eq!(code, 1);
    assert!(has_colour(&bytes), "no colour on a terminal:\n{}", String::from_utf8_lossy(&bytes));
    let (code, bytes) = failing_run(&[("NO_COLOR", "1")]);
    assert_eq!(code, 1);
    assert!(!has_colour(&bytes), "colour despite NO_COLOR:\n{:?}", String::from_utf8_lossy(&bytes));
}
