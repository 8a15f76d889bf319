//! Command output is split into lines in linear time and a kept line is capped: a step
//! printing a huge line without a newline finishes, and its summary shows it capped.

mod common;

use common::{TempDir, planrun_in};

#[test]
fn a_16_mb_line_without_a_newline_is_capped_in_the_summary() {
    let dir = TempDir::new("long-line");
    let root = dir.path().display();
    dir.write(
        "plan.yaml",
        format!(
            r#"version: 1
application: shop
lock: {{ path: "{root}/lock" }}
servers:
  - {{ host: 127.0.0.1, name: h1, transport: local, roles: [app] }}
rollout:
  select: {{ roles: [app] }}
  steps:
    - {{ name: flood, run: "head -c 16777216 /dev/zero | tr '\\0' x; exit 1" }}
"#
        ),
    );
    let out = planrun_in(dir.path(), &["apply", "plan.yaml", "--yes"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let more = 16 * 1024 * 1024 - 64 * 1024;
    let capped = format!("{} … {more} more bytes", "x".repeat(64 * 1024));
    assert!(out.stdout.contains(&capped), "the last line is capped at 64 KiB");
    assert!(out.stdout.len() < 2 * 1024 * 1024, "the output is bounded: {} bytes", out.stdout.len());
    // The per-host log keeps what it got: the capped line.
    let logs: Vec<_> = std::fs::read_dir(dir.path().join(".planrun/runs")).unwrap().flatten().collect();
    let log = std::fs::read_to_string(logs[0].path().join("h1.log")).unwrap();
    assert!(log.contains(&capped), "the log holds the capped line");
}

/// Issue 14: output waits for planrun to write it (bounded memory), so a reader that
/// stops reading (a paused terminal, a full pipe) slows the step down; when it reads
/// again everything arrives, in order, nothing lost, and the run ends.
#[test]
fn a_reader_that_stops_reading_slows_a_chatty_step_and_loses_nothing() {
    use std::io::Read;
    use std::time::{Duration, Instant};

    let dir = TempDir::new("stalled-reader");
    let root = dir.path().display();
    let lines = 200_000;
    dir.write(
        "plan.yaml",
        format!(
            r#"version: 1
application: shop
lock: {{ path: "{root}/lock" }}
servers:
  - {{ host: 127.0.0.1, name: h1, transport: local, roles: [app] }}
rollout:
  select: {{ roles: [app] }}
  steps:
    - {{ name: chatty, run: "seq 1 {lines}; echo done >&2" }}
"#
        ),
    );
    let mut child = common::Planrun::in_dir(&dir).args(&["apply", "plan.yaml", "--yes", "-v"]).spawn();
    // Nobody reads for a while: planrun's writes to the pipe block.
    std::thread::sleep(Duration::from_secs(2));
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("planrun did not finish once its output was read again");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().unwrap();
    let text = reader.join().unwrap().unwrap();
    assert!(status.success(), "{}", &text[text.len().saturating_sub(2000)..]);
    let shown: Vec<&str> = text.lines().filter_map(|l| l.split_once(" h1 | ").map(|(_, line)| line)).collect();
    assert_eq!(shown.len(), lines + 1, "every line shown");
    // Standard error's line comes wherever it was read; standard output's in order.
    let numbers: Vec<&str> = shown.iter().copied().filter(|l| *l != "done").collect();
    assert!(numbers.iter().zip(1..).all(|(l, n)| *l == n.to_string()), "in order");
    assert!(text.contains("h1 chatty: ok"), "the step's end is shown after its output");
    let logs: Vec<_> = std::fs::read_dir(dir.path().join(".planrun/runs")).unwrap().flatten().collect();
    let log = std::fs::read_to_string(logs[0].path().join("h1.log")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains(" h1 | ")).count(), lines + 1, "the log has every line");
}
