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
