//! Values that would only fail once a run is under way (a URL, an address, a method),
//! names that could rewrite the output (control characters), every problem of a plan at
//! once with its templates, in reading order; and per-host logs that never share a file.

mod common;

use common::{TempDir, planrun_in};

/// The `error: FILE:LINE:COL: MESSAGE` lines, in order.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error: ")).collect()
}

fn validate(text: &str) -> common::Output {
    let dir = TempDir::new("values");
    dir.write("p.yaml", text);
    planrun_in(dir.path(), &["validate", "p.yaml"])
}

/// A valid plan with two servers, an `http` balancer and the `rollout.steps` `steps`.
fn plan(balancer_url: &str, steps: &str) -> String {
    format!(
        "\
version: 1
application: shop
servers:
  - {{ host: 10.0.0.2, name: web1, roles: [app], options: {{ port: 80 }} }}
  - {{ host: 10.0.0.3, name: web2, roles: [app], options: {{ port: \"8 0\" }} }}
balancers:
  lb:
    kind: http
    reject: {{ url: \"{balancer_url}\" }}
    accept: {{ url: \"http://lb.internal/enable/{{{{node}}}}\" }}
rollout:
  select: {{ roles: [app] }}
  steps:
    - name: out
      balancer: {{ use: lb, action: reject, node: \"{{{{host.name}}}}\" }}
{steps}    - name: in
      balancer: {{ use: lb, action: accept, node: \"{{{{host.name}}}}\", wait_up: false }}
"
    )
}

const GOOD_URL: &str = "http://lb.internal/disable/{{node}}";

#[test]
fn the_plan_these_tests_break_is_valid() {
    let out =
        validate(&plan(GOOD_URL, "    - name: up\n      wait: { http: \"http://{{host.address}}:80/health\" }\n"));
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn urls_addresses_and_methods_that_would_fail_mid_run_are_refused_at_their_position() {
    let steps = concat!(
        "    - name: a\n      wait: { http: \"not a url\" }\n",
        "    - name: b\n      wait: { http: \"ftp://10.0.0.2/health\" }\n",
        "    - name: c\n      wait: { tcp: nohostport }\n",
        "    - name: d\n      wait: { tcp: \"{{host.address}}:99999\" }\n",
    );
    let text = plan("htp:/broken url/{{node}}", steps)
        .replace("accept: { url:", "accept: { method: \"GE T\", headers: { \"Bad Header\": x }, url:");
    let out = validate(&text);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_lines(&out.stderr),
        [
            "error: p.yaml:9:20: balancer `lb`, rendered for host `web1` and 1 more host: `htp:/broken url/web1` is not an `http` or `https` URL",
            "error: p.yaml:10:23: balancer `lb`: `GE T` is not an HTTP method",
            "error: p.yaml:10:42: balancer `lb`: `Bad Header` is not an HTTP header name",
            "error: p.yaml:17:21: step `a`: `not a url` is not a valid URL: relative URL without a base",
            "error: p.yaml:19:21: step `b`: `ftp://10.0.0.2/health` is not an `http` or `https` URL",
            "error: p.yaml:21:20: step `c`: `nohostport` has no port",
            "error: p.yaml:23:20: step `d`, rendered for host `web1` and 1 more host: `10.0.0.2:99999`: `99999` is not a port (1 to 65535)",
        ],
        "{}",
        out.stderr
    );
    for hint in [
        "help: planrun speaks HTTP only: write `http://` or `https://` instead of `htp:`",
        "help: write a method such as `POST`",
        "help: write `host:port`, such as `10.0.0.2:8080`",
    ] {
        assert!(out.stderr.contains(hint), "missing {hint:?} in\n{}", out.stderr);
    }
    // The snippet under the first one.
    assert!(out.stderr.contains("9 │     reject: { url: \"htp:/broken url/{{node}}\" }"), "{}", out.stderr);
}

#[test]
fn a_url_is_checked_as_it_renders_for_each_host() {
    // Valid as written; for `web2` its port option makes it no URL at all.
    let steps = "    - name: up\n      wait: { http: \"http://{{host.address}}:{{host.options.port}}/health\" }\n";
    let out = validate(&plan(GOOD_URL, steps));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_lines(&out.stderr),
        [
            "error: p.yaml:17:21: step `up`, rendered for host `web2`: `http://10.0.0.3:8 0/health` is not a valid URL: invalid port number"
        ],
        "{}",
        out.stderr
    );
}

#[test]
fn control_characters_in_names_printed_as_labels_are_refused() {
    // YAML escapes write what a terminal would obey: erase the line and print a forged
    // success, a NUL, a newline, C1's CSI, a right-to-left override.
    let text = "\
version: 1
application: \"shop\\u009b2J\"
servers:
  - { host: 10.0.0.2, name: \"web1\\e[2K\\rrun finished: succeeded\", roles: [app] }
  - { host: \"10.0.0.3\\0\", roles: [\"app\", \"db\\u202e\"] }
balancers:
  \"lb\\e[31m\": { kind: command, reject: \"true\", accept: \"true\" }
rollout:
  select: { roles: [app] }
  steps:
    - name: restart
      run: echo restart
";
    let out = validate(text);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_lines(&out.stderr),
        [
            "error: p.yaml:2:14: the application name: `shop\\u{9b}2J` contains the control character \\u{9b}",
            "error: p.yaml:4:29: a server's name: `web1\\u{1b}[2K\\rrun finished: succeeded` contains the control character \\u{1b}",
            "error: p.yaml:5:13: a server's host: `10.0.0.3\\u{0}` contains the control character \\u{0}",
            "error: p.yaml:5:42: a role: `db\\u{202e}` contains the control character \\u{202e}",
            "error: p.yaml:7:3: a balancer name: `lb\\u{1b}[31m` contains the control character \\u{1b}",
        ],
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("help: names are printed in the output"), "{}", out.stderr);
    // Nothing of what the plan wrote reaches the terminal unescaped.
    for forbidden in ['\u{1b}', '\0', '\r', '\u{9b}', '\u{202e}'] {
        assert!(!out.stderr.contains(forbidden), "{forbidden:?} printed raw in\n{}", out.stderr);
    }
    assert!(!out.stderr.lines().any(|l| l.starts_with("run finished")), "{}", out.stderr);
}

#[test]
fn a_step_name_the_schema_refuses_hides_no_other_problem() {
    // A required field the schema refuses used to leave no plan for the other checks.
    let steps = "    - name: \"up\\nrun finished: succeeded\"\n      wait: { tcp: nohostport }\n";
    let out = validate(&plan(GOOD_URL, steps));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_lines(&out.stderr),
        [
            "error: p.yaml:16:13: `up\\nrun finished: succeeded` is not a valid value for `rollout.steps[1].name`",
            "error: p.yaml:17:20: step `up\\nrun finished: succeeded`: `nohostport` has no port",
        ],
        "{}",
        out.stderr
    );
}

#[test]
fn a_raw_control_character_in_the_file_is_not_drawn_in_the_snippet() {
    // A DEL byte written as is in a quoted value, which YAML lets through: the message
    // escapes it, the snippet shows `?` in its place.
    let text = plan(GOOD_URL, "").replace("application: shop", "application: \"sh\u{7f}op\"");
    let out = validate(&text);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_lines(&out.stderr),
        ["error: p.yaml:2:14: the application name: `sh\\u{7f}op` contains the control character \\u{7f}"]
    );
    assert!(out.stderr.contains("2 │ application: \"sh?op\""), "{}", out.stderr);
    assert!(!out.stderr.contains('\u{7f}'), "{}", out.stderr);
}

#[test]
fn every_bad_variable_of_every_template_is_reported_with_the_other_problems() {
    // An unknown role and an unknown field used to hide every template problem, and a
    // template reported only its first unknown variable.
    let text = "\
version: 1
application: shop
vars: { release: v1 }
servers:
  - { host: 10.0.0.2, name: web1, roles: [app], options: { dir: /srv } }
rollout:
  select: { roles: [app, wbe] }
  colour: blue
  steps:
    - name: deploy
      run: deploy {{vars.relase}} {{host.options.dri}} {{vars.release}} {{application}} {{vras.x}}
    - name: restart
      run: systemctl restart {{applicaton}}
";
    let out = validate(text);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_lines(&out.stderr),
        [
            "error: p.yaml:7:26: no server has the role `wbe`",
            "error: p.yaml:8:3: unknown field `colour` in `rollout`",
            "error: p.yaml:11:19: step `deploy`: `{{vars.relase}}` does not resolve for host `web1`",
            "error: p.yaml:11:35: step `deploy`: `{{host.options.dri}}` does not resolve for host `web1`",
            "error: p.yaml:11:89: step `deploy`: `{{vras.x}}` does not resolve for host `web1`",
            "error: p.yaml:13:30: step `restart`: `{{applicaton}}` does not resolve for host `web1`",
        ],
        "{}",
        out.stderr
    );
    for hint in
        ["did you mean `release`?", "did you mean `dir`?", "did you mean `vars`?", "did you mean `application`?"]
    {
        assert!(out.stderr.contains(hint), "missing {hint:?} in\n{}", out.stderr);
    }
}

#[test]
fn problems_are_shown_in_file_and_line_order_across_an_extends_chain() {
    let dir = TempDir::new("order");
    // Found in this order: the schema's, then the semantic checks', then the templates';
    // shown in the order of the lines, the plan's file first, then its base.
    dir.write(
        "base.yaml",
        "version: 1\napplication: shop\nservers:\n  - { host: 10.0.0.2, roles: [app], optons: {} }\n",
    );
    dir.write(
        "p.yaml",
        "\
extends: base.yaml
rollout:
  select: { roles: [ap] }
  steps:
    - name: one
      run: echo {{vars.x}}
    - name: one
      wait: { tcp: \"10.0.0.2\", timeout: 0s }
",
    );
    let out = planrun_in(dir.path(), &["validate", "p.yaml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let errors = error_lines(&out.stderr);
    let places: Vec<&str> = errors.iter().map(|e| e.split(' ').nth(1).unwrap_or_default()).collect();
    assert_eq!(
        places,
        ["p.yaml:3:21:", "p.yaml:6:17:", "p.yaml:7:13:", "p.yaml:8:20:", "p.yaml:8:41:", "base.yaml:4:37:"],
        "{}",
        out.stderr
    );
}

#[test]
fn hosts_whose_names_make_one_file_name_get_a_log_file_each() {
    let dir = TempDir::new("log-names");
    let text = "\
version: 1
application: shop
servers:
  - { host: 127.0.0.1, name: app/1, transport: local, roles: [app] }
  - { host: 127.0.0.1, name: app_1, transport: local, roles: [app] }
  - { host: 127.0.0.1, name: \"app:1\", transport: local, roles: [app] }
rollout:
  select: { roles: [app] }
  steps:
    - name: hello
      run: echo hello from {{quote host.name}}
";
    dir.write("plan.yaml", text);
    let out = planrun_in(dir.path(), &["apply", "plan.yaml", "--yes"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    let runs: Vec<_> = std::fs::read_dir(dir.path().join(".planrun/runs")).unwrap().flatten().collect();
    assert_eq!(runs.len(), 1);
    let mut logs: Vec<(String, String)> = std::fs::read_dir(runs[0].path())
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap()))
        .filter(|(name, _)| name.ends_with(".log"))
        .collect();
    logs.sort();
    assert_eq!(logs.len(), 3, "{logs:#?}");
    // The name that is already a file name keeps it.
    assert!(logs.iter().any(|(name, _)| name == "app_1.log"), "{logs:#?}");
    for host in ["app/1", "app_1", "app:1"] {
        let own: Vec<&(String, String)> =
            logs.iter().filter(|(_, log)| log.contains(&format!("hello from {host}"))).collect();
        assert_eq!(own.len(), 1, "{host}'s output in {logs:#?}");
        for other in ["app/1", "app_1", "app:1"].iter().filter(|o| **o != host) {
            assert!(!own[0].1.contains(&format!("hello from {other}")), "{host}'s log has {other}'s output: {logs:#?}");
        }
    }
}
