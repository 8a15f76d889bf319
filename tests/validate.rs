//! `planrun validate` as an operator meets it: every problem of a plan at its line and
//! column, with a hint, exit 2; hostile files refused without panics.

mod common;

use common::{TempDir, planrun, planrun_in};

/// The `error: FILE:LINE:COL: MESSAGE` lines, in order.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error: ")).collect()
}

fn validate_text(name: &str, text: &str) -> common::Output {
    let dir = TempDir::new("validate");
    dir.write(name, text);
    planrun_in(dir.path(), &["validate", name])
}

#[test]
fn five_mistakes_are_reported_together_at_their_positions() {
    let out = validate_text("bad.yaml", common::FIVE_MISTAKES);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_lines(&out.stderr),
        [
            "error: bad.yaml:6:5: unknown field `optons` in `servers[0]`",
            "error: bad.yaml:9:18: `servers[1].ssh.port` must be a whole number, not a string",
            "error: bad.yaml:10:11: duplicate host `10.0.0.2`",
            "error: bad.yaml:16:13: no server has the role `ap`",
            "error: bad.yaml:19:24: step `reject` uses the balancer `nodebalancer`, which is not defined",
        ]
    );
    for hint in [
        "help: did you mean `options`?",
        "help: for example `22`",
        "help: list each server once",
        "help: did you mean `app`?",
        "help: the balancers of this plan are `lb`",
    ] {
        assert!(out.stderr.contains(hint), "missing {hint:?} in\n{}", out.stderr);
    }
    // The snippet with a caret under the offending text.
    assert!(out.stderr.contains("6 │     optons: { private_ip: 192.168.0.1 }"), "{}", out.stderr);
    assert!(out.stderr.contains("first listed here"), "{}", out.stderr);
    assert!(out.stderr.contains("bad.yaml: 5 problems found; nothing was executed"), "{}", out.stderr);
}

#[test]
fn a_yaml_syntax_error_is_reported_alone_at_its_position() {
    let out = validate_text("syntax.yaml", "version: 1\nservers:\n  - host: \"10.0.0.2\n    roles: [app]\n");
    assert_eq!(out.code, 2);
    let errors = error_lines(&out.stderr);
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(errors[0].starts_with("error: syntax.yaml:3:11: invalid YAML:"), "{}", out.stderr);
}

#[test]
fn bad_indentation_is_a_syntax_error_at_its_line() {
    let out = validate_text("indent.yaml", "version: 1\nservers:\n  - host: a\n   roles: [app]\n");
    assert_eq!(out.code, 2);
    let errors = error_lines(&out.stderr);
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(errors[0].starts_with("error: indent.yaml:4:"), "{}", out.stderr);
}

const BASE: &str = "\
version: 1
application: shop
servers:
  - host: 10.0.0.2
    roles: [app]
rollout:
  select: { roles: [app] }
  steps:
    - name: restart
      run: echo restart
";

#[test]
fn the_example_plans_validate() {
    let out = planrun(&["validate", "plans/production.yaml", "plans/staging.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(
            "plans/production.yaml: valid: 4 servers (roles web, app, db), 3 hosts selected, 4 steps per host, 1 balancer"
        ),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("plans/staging.yaml: valid: 1 server"), "{}", out.stdout);
}

#[test]
fn a_minimal_plan_is_valid() {
    let out = validate_text("ok.yaml", BASE);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

fn single_error(text: &str) -> (String, String) {
    let out = validate_text("p.yaml", text);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let errors = error_lines(&out.stderr);
    assert_eq!(errors.len(), 1, "expected one error:\n{}", out.stderr);
    (errors[0].to_string(), out.stderr)
}

#[test]
fn a_misspelt_enum_value_suggests_the_right_one() {
    let (error, stderr) = single_error(&BASE.replace("servers:", "ssh:\n  host_key_checking: strct\nservers:"));
    assert_eq!(error, "error: p.yaml:4:22: `strct` is not a valid value for `ssh.host_key_checking`");
    assert!(stderr.contains("help: did you mean `strict`?"), "{stderr}");
}

#[test]
fn an_unknown_balancer_kind_names_the_kinds() {
    let text = format!("{BASE}balancers:\n  lb:\n    kind: nginx\n    socket: x\n");
    let (error, stderr) = single_error(&text);
    assert_eq!(error, "error: p.yaml:13:11: `nginx` is not a valid value for `kind` of `balancers.lb`");
    assert!(stderr.contains("use `linode`, `haproxy`, `http` or `command`"), "{stderr}");
}

#[test]
fn a_field_misspelt_inside_a_balancer_is_found_in_the_right_kind() {
    let text = format!("{BASE}balancers:\n  lb:\n    kind: linode\n    token_env: T\n    labl: x\n    port: 80\n");
    let out = validate_text("p.yaml", &text);
    let errors = error_lines(&out.stderr);
    assert_eq!(
        errors,
        [
            "error: p.yaml:13:5: missing field `label` in `balancers.lb`",
            "error: p.yaml:15:5: unknown field `labl` in `balancers.lb`",
        ],
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("help: did you mean `label`?"), "{}", out.stderr);
}

#[test]
fn a_missing_required_field_says_what_to_add() {
    let (error, stderr) = single_error(&BASE.replace("application: shop\n", ""));
    assert_eq!(error, "error: p.yaml:1:1: missing field `application` in the plan");
    assert!(stderr.contains("help: add `application:`, for example `application: shop`"), "{stderr}");
}

#[test]
fn a_duration_without_a_unit_is_refused() {
    let (error, stderr) = single_error(&BASE.replace("run: echo restart", "run: echo restart\n      timeout: 90"));
    assert_eq!(error, "error: p.yaml:11:16: `90` is not a valid value for `rollout.steps[0].timeout`");
    assert!(stderr.contains("help: a duration with a unit: `500ms`, `90s`, `2m`, `1h 30m`"), "{stderr}");
    let (error, _) =
        single_error(&BASE.replace("run: echo restart", "run: echo restart\n      timeout: 90 seconds please"));
    assert_eq!(error, "error: p.yaml:11:16: `90 seconds please` is not a valid value for `rollout.steps[0].timeout`");
}

#[test]
fn a_batch_size_of_zero_is_refused() {
    let (error, _) = single_error(&BASE.replace("  steps:", "  batch_size: 0\n  steps:"));
    assert_eq!(error, "error: p.yaml:8:15: `0` is too small for `rollout.batch_size`: the minimum is 1");
    let (error, _) = single_error(&BASE.replace("  steps:", "  batch_size: 0%\n  steps:"));
    assert_eq!(error, "error: p.yaml:8:15: `0%` is not a valid value for `rollout.batch_size`");
}

#[test]
fn a_step_must_do_exactly_one_thing() {
    let (error, stderr) = single_error(&BASE.replace("run: echo restart", "run: echo restart\n      local: echo too"));
    assert_eq!(error, "error: p.yaml:9:7: step `restart` sets `run` or `local`; a step does one thing");
    assert!(stderr.contains("exactly one of `run`, `local`, `balancer` or `wait`"), "{stderr}");
    let (error, _) = single_error(&BASE.replace("run: echo restart", "timeout: 1m"));
    assert_eq!(error, "error: p.yaml:9:7: step `restart` does nothing");
}

#[test]
fn a_misspelt_step_kind_suggests_the_kind() {
    let out = validate_text("p.yaml", &BASE.replace("run: echo restart", "rnu: echo restart"));
    assert_eq!(out.code, 2);
    assert_eq!(error_lines(&out.stderr)[0], "error: p.yaml:10:7: unknown field `rnu` in `rollout.steps[0]`");
    assert!(out.stderr.contains("help: did you mean `run`?"), "{}", out.stderr);
}

#[test]
fn duplicate_step_names_point_at_both() {
    let text = BASE.to_string() + "    - name: restart\n      run: echo again\n";
    let (error, stderr) = single_error(&text);
    assert_eq!(error, "error: p.yaml:11:13: duplicate step name `restart`");
    assert!(stderr.contains("first used here"), "{stderr}");
}

#[test]
fn a_reject_without_a_later_accept_is_refused() {
    let text = format!(
        "{}balancers:\n  lb: {{ kind: haproxy, socket: \"tcp://127.0.0.1:9999\", backend: app }}\n",
        BASE.replace(
            "    - name: restart\n",
            "    - name: out\n      balancer: { use: lb, action: drain, node: x }\n    - name: restart\n"
        )
    );
    let (error, stderr) = single_error(&text);
    assert_eq!(error, "error: p.yaml:10:36: step `out` takes the node out of `lb` and no later step puts it back");
    assert!(stderr.contains("add a later step `balancer: { use: lb, action: accept"), "{stderr}");
}

#[test]
fn an_empty_selection_is_refused() {
    let text = BASE.replace("select: { roles: [app] }", "select: { roles: [app], exclude: { primary: false } }");
    let (error, _) = single_error(&text);
    assert_eq!(error, "error: p.yaml:7:11: `rollout.select` matches no server");
}

#[test]
fn a_duplicate_yaml_key_points_at_both() {
    let (error, stderr) = single_error(&BASE.replace("application: shop\n", "application: shop\napplication: shop2\n"));
    assert_eq!(error, "error: p.yaml:3:1: duplicate key `application`");
    assert!(stderr.contains("first defined here"), "{stderr}");
}

#[test]
fn errors_in_two_files_are_all_reported() {
    let dir = TempDir::new("two");
    dir.write("a.yaml", BASE.replace("roles: [app]\nrollout", "roles: [ap]\nrollout"));
    dir.write("b.yaml", "version: 1\n");
    dir.write("ok.yaml", BASE);
    let out = planrun_in(dir.path(), &["validate", "a.yaml", "b.yaml", "ok.yaml"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("error: b.yaml:1:1: missing field `application`"), "{}", out.stderr);
    assert!(out.stdout.contains("ok.yaml: valid"), "{}", out.stdout);
}

#[test]
fn json_format_gives_machines_the_positions() {
    let dir = TempDir::new("json");
    dir.write("bad.yaml", common::FIVE_MISTAKES);
    let out = planrun_in(dir.path(), &["validate", "--format", "json", "bad.yaml"]);
    assert_eq!(out.code, 2);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["valid"], false);
    let first = &v["problems"][0];
    assert_eq!(first["file"], "bad.yaml");
    assert_eq!(first["line"], 6);
    assert_eq!(first["column"], 5);
    assert_eq!(first["message"], "unknown field `optons` in `servers[0]`");
    assert_eq!(first["help"], "did you mean `options`?");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(5));
}

// Hostile and broken input: each a clear error and exit 2, never a panic or a hang.

fn assert_refused(out: &common::Output, needle: &str) {
    assert_eq!(out.code, 2, "stderr:\n{}", out.stderr);
    assert!(out.stderr.contains(needle), "missing {needle:?} in\n{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn a_billion_laughs_alias_bomb_is_refused() {
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let out = validate_text("bomb.yaml", &text);
    assert_refused(&out, "expands to more than");
}

#[test]
fn a_100_mb_file_is_refused_before_it_is_read() {
    let dir = TempDir::new("big");
    let path = dir.0.join("big.yaml");
    let file = std::fs::File::create(&path).unwrap();
    // Sparse: the test costs no disk, and planrun must refuse on size, not by reading.
    file.set_len(100 * 1024 * 1024).unwrap();
    let out = planrun_in(dir.path(), &["validate", "big.yaml"]);
    assert_refused(&out, "`big.yaml` is 104857600 bytes, more than the 16777216 a plan may have");
}

#[test]
fn nesting_ten_thousand_levels_deep_is_refused() {
    let flow = format!("a: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    assert_refused(&validate_text("deep.yaml", &flow), "nests deeper than");
    let mut block = String::new();
    // 2,000 levels: deep enough to pass the limit, shallow enough to stay under the size limit.
    for i in 0..2_000 {
        block.push_str(&" ".repeat(i));
        block.push_str("a:\n");
    }
    assert_refused(&validate_text("deep2.yaml", &block), "nests deeper than");
}

#[test]
fn a_non_utf8_file_is_refused_with_the_position() {
    let dir = TempDir::new("utf8");
    dir.write("latin1.yaml", b"version: 1\napplication: caf\xe9\n");
    let out = planrun_in(dir.path(), &["validate", "latin1.yaml"]);
    assert_refused(&out, "error: latin1.yaml:2:17: the plan is not valid UTF-8");
}

#[test]
fn an_empty_file_is_refused() {
    assert_refused(&validate_text("empty.yaml", ""), "error: empty.yaml: the plan is empty");
    assert_refused(&validate_text("comments.yaml", "# nothing yet\n"), "the plan is empty");
}

#[test]
fn a_directory_or_a_missing_path_is_refused() {
    let dir = TempDir::new("paths");
    std::fs::create_dir(dir.0.join("plans")).unwrap();
    assert_refused(
        &planrun_in(dir.path(), &["validate", "plans"]),
        "error: plans: the folder `plans` holds no plan file (`*.yaml`)",
    );
    assert_refused(
        &planrun_in(dir.path(), &["apply", "plans"]),
        "error: plans: `plans` is a directory, not a plan file",
    );
    assert_refused(
        &planrun_in(dir.path(), &["validate", "nope.yaml"]),
        "error: nope.yaml: the plan file `nope.yaml` does not exist",
    );
}

#[test]
fn yaml_merge_keys_and_tags_are_refused_at_their_position() {
    let (error, stderr) = single_error("version: 1\nanchor: &a 1\nssh:\n  <<: *a\n");
    assert_eq!(error, "error: p.yaml:4:7: a `<<` merge key takes a map or a list of maps");
    assert!(stderr.contains("help: merge an anchored map, such as `<<: *defaults`"), "{stderr}");
    let (error, stderr) = single_error("version: !custom 1\n");
    assert_eq!(error, "error: p.yaml:1:10: the tag `!custom` is not supported");
    assert!(stderr.contains("help: remove it"), "{stderr}");
    let (error, _) = single_error("version: !!int one\n");
    assert_eq!(error, "error: p.yaml:1:10: the value does not match its tag `!!int`");
}

#[test]
fn a_plan_that_is_a_list_is_refused() {
    let (error, _) = single_error("- a\n- b\n");
    assert_eq!(error, "error: p.yaml:1:1: the plan must be a map of fields, not a list");
}

#[test]
fn garbage_never_panics() {
    // Truncations of a valid plan and byte-flipped variants: every one must be either
    // valid or a clean exit 2.
    let plan = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/plans/production.yaml")).unwrap();
    let bytes = plan.as_bytes();
    let dir = TempDir::new("garbage");
    // The plan extends the base: variants are merged over the real one.
    dir.write("base.yaml", std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/plans/base.yaml")).unwrap());
    for (i, cut) in (0..bytes.len()).step_by(97).enumerate() {
        let mut variant = bytes[..cut].to_vec();
        if i % 2 == 1 && !variant.is_empty() {
            let at = (i * 31) % variant.len();
            variant[at] = b"{}[]:-&*!|>'\"%@`\t\n"[i % 19];
        }
        dir.write("g.yaml", &variant);
        let out = planrun_in(dir.path(), &["validate", "g.yaml"]);
        assert!(out.code == 0 || out.code == 2, "exit {} for cut {cut}:\n{}", out.code, out.stderr);
        assert!(!out.stderr.contains("panicked"), "cut {cut}:\n{}", out.stderr);
    }
}

#[test]
fn a_megabyte_long_line_is_refused_without_drawing_it() {
    // A single flow list of 4 MB: past the value limit, on one line that no terminal
    // could show (miette once panicked laying it out).
    let text = format!("a: [{}1]\n", "1,".repeat(2 * 1024 * 1024));
    let out = validate_text("long.yaml", &text);
    assert_refused(&out, "the line is too long to show");
}

#[test]
fn jump_hosts_env_names_and_sudo_are_checked_at_their_position() {
    let plan = "\
version: 1
application: shop
env: { 1BAD: x, PORT: 8080 }
ssh: { jump: [ops@bastion, \"gate:ssh\"] }
servers:
  - { host: 10.0.0.2, roles: [app], ssh: { jump: \"@inner\" } }
rollout:
  select: { roles: [app] }
  steps:
    - { name: pause, wait: { sleep: 1s }, sudo: true }
";
    // Every problem at once, in the order of the lines.
    let out = validate_text("reach.yaml", plan);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_lines(&out.stderr),
        [
            "error: reach.yaml:3:8: plan `env`: `1BAD` is not a valid environment variable name",
            "error: reach.yaml:4:28: jump host `gate:ssh`: `ssh` is not a port (1 to 65535)",
            "error: reach.yaml:6:50: jump host `@inner`: the user before `@` is empty",
            "error: reach.yaml:10:49: step `pause`: `sudo` applies to `run` steps only",
        ],
        "{}",
        out.stderr
    );
}

/// Issue 12, reproduction 1: a duration too long to add to a clock validated, then
/// panicked at run time. Every duration is bounded; a timeout of zero is refused.
#[test]
fn durations_too_long_for_a_clock_and_zero_timeouts_are_refused() {
    let text = BASE.replace(
        "run: echo restart",
        "run: echo restart\n      timeout: 10000000000000000000s\n    - name: settle\n      wait: { sleep: 31d }\n    - name: up\n      wait: { tcp: \"127.0.0.1:80\", interval: 0s, timeout: 0s }",
    );
    let out = validate_text("p.yaml", &text);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_lines(&out.stderr),
        [
            "error: p.yaml:11:16: `timeout` is longer than 30 days",
            "error: p.yaml:13:22: `sleep` is longer than 30 days",
            "error: p.yaml:15:46: `interval` is zero",
            "error: p.yaml:15:59: `timeout` is zero",
        ],
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("help: durations are at most `30d`"), "{}", out.stderr);
}

const POOL: &str = "\
version: 1
application: shop
servers:
  - host: 10.0.0.2
    roles: [app, web]
  - host: 10.0.0.3
    roles: [app]
balancers:
  pool: { kind: command, reject: 'true', accept: 'true' }
rollout:
  select: { roles: [app] }
  steps:
    - name: reject
      balancer: { use: pool, action: reject, node: x }
    - name: accept
      balancer: { use: pool, action: accept, node: x }
";

/// Issue 12, reproduction 3: an `accept` that can be skipped leaves the node out.
#[test]
fn an_accept_that_can_be_skipped_is_refused() {
    let (error, stderr) = single_error(&format!("{POOL}      when: {{ roles: [web] }}\n"));
    assert_eq!(
        error,
        "error: p.yaml:17:13: step `accept` puts the node back under a different `when` than step `reject` took it out"
    );
    assert!(stderr.contains("help: give the `accept` the same `when`"), "{stderr}");
    let (error, stderr) = single_error(&format!("{POOL}      continue_on_error: true\n"));
    assert_eq!(error, "error: p.yaml:17:26: `continue_on_error` on the `accept` of step `accept`");
    assert!(stderr.contains("help: remove `continue_on_error`"), "{stderr}");
    // The same `when` on both is fine.
    let same = POOL.replace("node: x }\n", "node: x }\n      when: { roles: [web] }\n");
    let out = validate_text("p.yaml", &same);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// Issue 14: waits that can never pass, and a `balancer_up` wait on a balancer that
/// cannot report a node's state.
#[test]
fn waits_that_can_never_pass_are_refused() {
    let text = POOL.replace(
        "    - name: accept\n",
        "    - name: stable\n      wait: { tcp: \"127.0.0.1:80\", stable_for: 10s, timeout: 4s }\n    - name: three\n      wait: { tcp: \"127.0.0.1:80\", successes: 3, interval: 10s, timeout: 2s }\n    - name: up\n      wait: { balancer_up: pool, node: x }\n    - name: accept\n",
    );
    let out = validate_text("p.yaml", &text);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let errors = error_lines(&out.stderr);
    assert_eq!(errors.len(), 3, "{}", out.stderr);
    assert!(errors[0].starts_with("error: p.yaml:16:"), "{}", out.stderr);
    assert!(errors[0].contains("`stable_for` is not shorter than its timeout of 4s"), "{}", out.stderr);
    assert!(errors[1].starts_with("error: p.yaml:18:"), "{}", out.stderr);
    assert!(errors[1].contains("3 checks 10s apart take longer than its timeout of 2s"), "{}", out.stderr);
    assert!(errors[2].starts_with("error: p.yaml:20:"), "{}", out.stderr);
    assert!(errors[2].contains("has no `status`, so a `balancer_up` wait can never pass"), "{}", out.stderr);
}

/// Issue 14: `when` on a `local` step in `before`/`after` was ignored; it is refused.
#[test]
fn when_on_a_local_step_outside_the_rollout_is_refused() {
    let text = format!("{BASE}before:\n  - name: prepare\n    local: 'true'\n    when: {{ roles: [app] }}\n");
    let (error, stderr) = single_error(&text);
    assert_eq!(error, "error: p.yaml:14:11: `when` on the `local` step `prepare` outside the rollout");
    assert!(stderr.contains("help: a `local` step in `before` or `after` runs once"), "{stderr}");
}

/// Issue 14: `--var` naming a variable the plan does not have was accepted silently.
#[test]
fn a_var_the_plan_does_not_have_is_refused_with_a_suggestion() {
    let dir = TempDir::new("validate");
    dir.write("p.yaml", BASE.replace("servers:", "vars:\n  rel: \"1\"\nservers:"));
    let out = planrun_in(dir.path(), &["plan", "p.yaml", "--var", "rle=3"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("`--var rle=…` names a variable the plan does not have"), "{}", out.stderr);
    assert!(out.stderr.contains("help: did you mean `rel`?"), "{}", out.stderr);
    let out = planrun_in(dir.path(), &["plan", "p.yaml", "--var", "rel=3"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// Issue 14: a plan that is a FIFO hung `validate`; it is refused with its path.
#[test]
fn a_plan_that_is_not_a_regular_file_is_refused() {
    let dir = TempDir::new("validate");
    let fifo = dir.path().join("fifo.yaml");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let out = planrun_in(dir.path(), &["validate", "fifo.yaml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("is not a regular file"), "{}", out.stderr);
    let out = planrun_in(dir.path(), &["validate", "/dev/zero"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("`/dev/zero` is not a regular file"), "{}", out.stderr);
}
