//! `planrun plan` and the template checks of `planrun validate`, through the real binary:
//! what an operator sees.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde::Deserialize;

fn planrun(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_planrun"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("NO_COLOR")
        .output()
        .expect("planrun runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A directory of its own per test, removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("planrun-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, file: &str, text: &str) -> String {
        let path = self.0.join(file);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A plan of `n` app servers `h1`…`hn` with the four steps of the recipe.
fn fleet(n: usize, batch_size: &str) -> String {
    let mut plan = String::from("version: 1\napplication: shop\nservers:\n");
    for i in 1..=n {
        plan.push_str(&format!(
            "  - host: 10.0.0.{i}\n    name: h{i}\n    roles: [app]\n    options: {{ private_ip: 192.168.0.{i} }}\n"
        ));
    }
    plan.push_str(&format!(
        r#"balancers:
  lb: {{ kind: linode, token_env: LINODE_TOKEN, label: lb, port: 80 }}
rollout:
  select: {{ roles: [app] }}
  batch_size: {batch_size}
  steps:
    - name: reject
      balancer: {{ use: lb, action: reject, node: "{{{{host.options.private_ip}}}}:80" }}
    - name: restart
      run: systemctl restart {{{{application}}}}
    - name: accept
      balancer: {{ use: lb, action: accept, node: "{{{{host.options.private_ip}}}}:80" }}
    - name: wait
      wait: {{ http: "http://{{{{host.options.private_ip}}}}/health" }}
"#
    ));
    plan
}

/// The host names of each batch, from the JSON output.
fn batches(args: &[&str]) -> Vec<Vec<String>> {
    let out = planrun(args);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = doc["hosts"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
    doc["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            b["hosts"].as_array().unwrap().iter().map(|h| names[h["host"].as_u64().unwrap() as usize].into()).collect()
        })
        .collect()
}

fn hosts(groups: &[&[&str]]) -> Vec<Vec<String>> {
    groups.iter().map(|g| g.iter().map(|s| s.to_string()).collect()).collect()
}

#[test]
fn production_rolls_one_app_server_at_a_time() {
    let out = planrun(&["plan", "plans/production.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("plan plans/production.yaml: shop, 3 hosts in 3 batches (batch size 1), 4 steps per host\n"),
        "{text}"
    );
    assert!(!text.contains("db1"), "the db server is excluded:\n{text}");

    // Each batch: its header, then the host's four steps in order.
    let sections: Vec<&str> = text.split("\nbatch ").skip(1).collect();
    assert_eq!(sections.len(), 3, "{text}");
    for (i, section) in sections.iter().enumerate() {
        let host = format!("app{}", i + 1);
        let ip = format!("192.168.0.{}", i + 1);
        let lines: Vec<&str> = section.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines[0], format!("{}: {host}", i + 1));
        let steps: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(steps.iter().map(|s| s[0]).collect::<Vec<_>>(), [host.as_str(); 4], "{section}");
        assert_eq!(steps.iter().map(|s| s[1]).collect::<Vec<_>>(), ["reject", "restart", "accept", "wait"]);
        assert!(lines[1].ends_with(&format!("balancer nodebalancer: reject {ip}:80")), "{}", lines[1]);
        assert!(lines[2].contains("run: /etc/init.d/rainbows_shop restart   (timeout 2m)"), "{}", lines[2]);
        assert!(lines[3].contains(&format!("balancer nodebalancer: accept {ip}:80, until the balancer reports it up")));
        assert!(
            lines[4].contains(&format!("wait: http://{ip}/health answers 200, 2 in a row, every 2s, up to 1m 30s"))
        );
    }
}

#[test]
fn staging_restarts_its_single_host_without_the_balancer() {
    let out = planrun(&["plan", "plans/staging.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("1 host: balancer steps skipped (single_host: skip_balancer)"), "{text}");
    assert!(!text.contains("balancer nodebalancer"), "{text}");
    let steps: Vec<&str> = text.lines().filter(|l| l.starts_with("  staging1")).collect();
    assert_eq!(steps.len(), 2, "{text}");
    assert!(steps[0].contains("restart") && steps[0].contains("run: /etc/init.d/rainbows_shop restart"));
    assert!(steps[1].contains("wait: http://192.168.1.1/health answers 200"));
}

#[test]
fn limiting_production_to_one_host_still_uses_the_balancer() {
    // One host of a fleet still serves traffic: it must leave the balancer first.
    let out = planrun(&["plan", "plans/production.yaml", "--limit", "app2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("1 host in 1 batch"), "{text}");
    assert!(text.contains("balancer nodebalancer: reject 192.168.0.2:80"), "{text}");
    assert!(!text.contains("app1") && !text.contains("app3"), "{text}");
}

#[test]
fn batch_sizes_group_hosts_in_rollout_order() {
    let dir = TempDir::new("batches");
    let cases: [(&str, &[&[&str]]); 4] = [
        ("1", &[&["h1"], &["h2"], &["h3"], &["h4"], &["h5"]]),
        ("2", &[&["h1", "h2"], &["h3", "h4"], &["h5"]]),
        // 50% of 5 rounds up to 3.
        ("\"50%\"", &[&["h1", "h2", "h3"], &["h4", "h5"]]),
        ("[1, \"50%\"]", &[&["h1"], &["h2", "h3", "h4"], &["h5"]]),
    ];
    for (i, (size, expected)) in cases.iter().enumerate() {
        let path = dir.write(&format!("fleet{i}.yaml"), &fleet(5, size));
        assert_eq!(batches(&["plan", "--format", "json", &path]), hosts(expected), "batch_size: {size}");
        // The same through the command line, overriding the plan's batch size of 1.
        let plain = size.replace(['"', '[', ']', ' '], "");
        let default = dir.write(&format!("default{i}.yaml"), &fleet(5, "1"));
        assert_eq!(
            batches(&["plan", "--format", "json", &default, "--batch-size", &plain]),
            hosts(expected),
            "--batch-size {plain}"
        );
    }
}

#[test]
fn an_unresolvable_variable_names_the_step_the_host_and_the_position() {
    let dir = TempDir::new("unresolved");
    let plan =
        fleet(3, "1").replace("run: systemctl restart {{application}}", "run: ping -c1 {{host.options.privte_ip}}");
    let path = dir.write("typo.yaml", &plan);
    // The position of the expression in the file, computed from the text itself.
    let (line, column) = plan
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("{{host.options.privte_ip}}").map(|c| (i + 1, c + 1)))
        .unwrap();

    for command in ["validate", "plan"] {
        let out = planrun(&[command, &path]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", stdout(&out));
        let err = stderr(&out);
        let first = format!(
            "error: {path}:{line}:{column}: step `restart`: `{{{{host.options.privte_ip}}}}` does not resolve for host `h1` and 2 more hosts"
        );
        assert!(err.starts_with(&first), "{command}:\n{err}\nexpected: {first}");
        assert!(err.contains("did you mean `private_ip`?"), "{err}");
        assert_eq!(err.matches("error:").count(), 1, "reported once, not per host:\n{err}");
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn every_broken_template_is_reported_at_once() {
    let dir = TempDir::new("broken");
    let plan = fleet(2, "1").replace("systemctl restart {{application}}", "systemctl restart {{aplication}}").replace(
        "wait: { http: \"http://{{host.options.private_ip}}/health\" }",
        "wait: { tcp: \"{{host.address:80\" }",
    ) + "after:\n  - name: notify\n    local: echo {{host.name}} {{vars.branch}}\n";
    let path = dir.write("broken.yaml", &plan);
    let out = planrun(&["validate", &path]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("step `restart`: `{{aplication}}` does not resolve for host `h1` and 1 more host"), "{err}");
    assert!(err.contains("did you mean `application`?"), "{err}");
    assert!(err.contains("step `wait`: the template does not parse"), "{err}");
    assert!(err.contains("step `notify`: `{{host.name}}` does not resolve\n"), "{err}");
    assert!(err.contains("make it a `run` step to run it on every host"), "{err}");
    // In the order of the file.
    let restart = err.find("step `restart`").unwrap();
    assert!(
        restart < err.find("step `wait`").unwrap()
            && err.find("step `wait`").unwrap() < err.find("step `notify`").unwrap()
    );
    // Every variable of a template that does not resolve, not only the first.
    assert!(err.contains(":28:31: step `notify`: `{{vars.branch}}` does not resolve\n"), "{err}");
    assert!(err.contains("4 problems found; nothing was executed"), "{err}");
}

#[test]
fn vars_can_be_overridden_and_quoted() {
    let dir = TempDir::new("vars");
    let plan = fleet(1, "1")
        .replace("systemctl restart {{application}}", "deploy {{quote vars.branch}} {{default host.options.port 80}}")
        + "vars: { branch: main }\n";
    let path = dir.write("vars.yaml", &plan);
    let out = planrun(&["plan", &path, "--var", "branch=it's a test"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(r#"run: deploy "it's a test" 80"#), "{}", stdout(&out));
}

#[test]
fn bad_arguments_are_refused_with_exit_2() {
    for (args, expected) in [
        (&["--batch-size", "0"][..], "a batch size of 0 would never roll a host"),
        (&["--batch-size", "1,0%"][..], "a percentage must be from 1% to 100%"),
        (&["--var", "branch"][..], "write NAME=VALUE"),
        (&["--var", "=x"][..], "is not a variable name"),
        (&["--limit", "nosuch"][..], "`--limit` names `nosuch`, which is not a server of this plan"),
        (&["--limit", "db1"][..], "`--limit` names `db1`, which the rollout does not select"),
        (&["--verbose", "--format", "json"][..], "`--verbose` adds the SSH settings to the text plan only"),
    ] {
        let mut all = vec!["plan", "plans/production.yaml"];
        all.extend_from_slice(args);
        let out = planrun(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty());
    }
    let out = planrun(&["plan", "plans/production.yaml", "--limit", "nosuch"]);
    assert!(stderr(&out).contains("the selected hosts are `app1`, `app2` or `app3`"), "{}", stderr(&out));
}

// The JSON shape of docs/plan-json.md. `deny_unknown_fields` everywhere: a field added to
// the output without updating the document fails here.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct JsonPlan {
    version: u32,
    plan: String,
    application: String,
    batch_size: serde_json::Value,
    skipped_balancer: bool,
    hosts: Vec<JsonHost>,
    before: Vec<JsonStep>,
    batches: Vec<JsonBatch>,
    after: Vec<JsonStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct JsonHost {
    server: usize,
    name: String,
    address: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonBatch {
    index: usize,
    hosts: Vec<JsonHostSteps>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonHostSteps {
    host: usize,
    steps: Vec<JsonStep>,
}

#[derive(Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct JsonStep {
    phase: String,
    step: String,
    index: usize,
    host: Option<usize>,
    action: JsonAction,
    timeout: String,
    retries: u32,
    continue_on_error: bool,
}

#[derive(Deserialize, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum JsonAction {
    Run {
        command: String,
    },
    Local {
        command: String,
    },
    Balancer {
        balancer: String,
        action: String,
        node: String,
        wait_up: bool,
        #[serde(default)]
        command: Option<String>,
        #[serde(default)]
        status_command: Option<String>,
        #[serde(default)]
        request: Option<JsonRequest>,
        #[serde(default)]
        status_request: Option<JsonRequest>,
    },
    Wait {
        check: JsonCheck,
        successes: u32,
        interval: String,
        timeout: String,
        stable_for: Option<String>,
    },
}

#[derive(Deserialize, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum JsonCheck {
    Sleep {
        duration: String,
    },
    Http {
        url: String,
        status: u16,
    },
    Tcp {
        address: String,
    },
    Command {
        command: String,
    },
    BalancerUp {
        balancer: String,
        node: String,
        #[serde(default)]
        status_command: Option<String>,
        #[serde(default)]
        status_request: Option<JsonRequest>,
    },
}

#[derive(Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    method: String,
    url: String,
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
}

#[test]
fn json_output_has_the_documented_shape() {
    let dir = TempDir::new("json");
    let plan = fleet(3, "[1, \"50%\"]")
        + "before:\n  - name: fetch\n    run: git -C /srv/{{application}} fetch\n    when: { options: { private_ip: 192.168.0.2 } }\n  - name: announce\n    local: echo start\nafter:\n  - name: settle\n    wait: { sleep: 2s }\n";
    let path = dir.write("json.yaml", &plan);
    let out = planrun(&["plan", "--format", "json", &path]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: JsonPlan = serde_json::from_slice(&out.stdout).expect("the documented shape");
    assert_eq!(doc.version, 1);
    assert_eq!(doc.application, "shop");
    assert_eq!(doc.batch_size, serde_json::json!([1, "50%"]));
    assert!(!doc.skipped_balancer);
    assert_eq!(doc.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["h1", "h2", "h3"]);

    // `when` keeps `fetch` to h2; the `local` step runs once, without a host.
    assert_eq!(
        doc.before.iter().map(|s| (s.step.as_str(), s.host)).collect::<Vec<_>>(),
        [("fetch", Some(1)), ("announce", None)]
    );
    assert_eq!(doc.before[0].action, JsonAction::Run { command: "git -C /srv/shop fetch".into() });
    assert_eq!(doc.batches.iter().map(|b| b.index).collect::<Vec<_>>(), [0, 1]);
    let first = &doc.batches[0].hosts[0];
    assert_eq!(first.host, 0);
    assert_eq!(
        first.steps[0],
        JsonStep {
            phase: "rollout".into(),
            step: "reject".into(),
            index: 0,
            host: Some(0),
            action: JsonAction::Balancer {
                balancer: "lb".into(),
                action: "reject".into(),
                node: "192.168.0.1:80".into(),
                wait_up: false,
                command: None,
                status_command: None,
                request: None,
                status_request: None,
            },
            timeout: "5m".into(),
            retries: 0,
            continue_on_error: false,
        }
    );
    assert_eq!(
        first.steps[3].action,
        JsonAction::Wait {
            check: JsonCheck::Http { url: "http://192.168.0.1/health".into(), status: 200 },
            successes: 1,
            interval: "1s".into(),
            timeout: "1m".into(),
            stable_for: None,
        }
    );
    assert_eq!(
        doc.after[0].action,
        JsonAction::Wait {
            check: JsonCheck::Sleep { duration: "2s".into() },
            successes: 1,
            interval: "1s".into(),
            timeout: "1m".into(),
            stable_for: None,
        }
    );
}

#[test]
#[cfg_attr(no_dot, ignore = "needs graphviz's dot: apt-get install graphviz")]
fn dot_output_is_accepted_by_graphviz() {
    let out = planrun(&["plan", "--format", "dot", "plans/production.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("digraph plan {"), "{text}");
    assert!(text.contains("subgraph cluster_batch_2"), "{text}");

    let dot =
        Command::new("dot").arg("-Tsvg").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let mut child = dot.unwrap_or_else(|e| panic!("cannot run graphviz's `dot` ({e}): apt-get install graphviz"));
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let svg = child.wait_with_output().unwrap();
    assert!(svg.status.success(), "dot refused the graph: {}", String::from_utf8_lossy(&svg.stderr));
    assert!(String::from_utf8_lossy(&svg.stdout).contains("<svg"));
}

#[test]
fn mermaid_output_is_a_flowchart() {
    let out = planrun(&["plan", "--format", "mermaid", "plans/production.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("flowchart"), "{text}");
    assert!(text.contains("subgraph batch_0 [\"batch 1\"]"), "{text}");
    assert!(text.contains("-->"), "{text}");
}

#[test]
fn validate_accepts_the_project_plans() {
    let out = planrun(&["validate", "plans/production.yaml", "plans/staging.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn json_output_renders_http_balancer_requests_per_host() {
    let dir = TempDir::new("json-http");
    let plan = r#"version: 1
application: shop
servers:
  - { host: 10.0.0.1, name: h1, roles: [app] }
  - { host: 10.0.0.2, name: h2, roles: [app] }
balancers:
  hook:
    kind: http
    reject: { method: PUT, url: "http://127.0.0.1:9000/nodes/{{node}}", headers: { X-App: "{{application}}" }, body: '{"state": "off"}' }
    accept: { url: "http://127.0.0.1:9000/nodes/{{node}}/on" }
    status: { method: GET, url: "http://127.0.0.1:9000/nodes/{{node}}" }
rollout:
  select: { roles: [app] }
  steps:
    - { name: reject, balancer: { use: hook, action: reject, node: "{{host.name}}" } }
    - { name: accept, balancer: { use: hook, action: accept, node: "{{host.name}}" } }
    - { name: up, wait: { balancer_up: hook, node: "{{host.name}}" } }
"#;
    let path = dir.write("http.yaml", plan);
    let out = planrun(&["plan", "--format", "json", &path]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: JsonPlan = serde_json::from_slice(&out.stdout).expect("the documented shape");
    let second = &doc.batches[1].hosts[0].steps;
    let status = JsonRequest {
        method: "GET".into(),
        url: "http://127.0.0.1:9000/nodes/h2".into(),
        headers: Default::default(),
        body: None,
    };
    assert_eq!(
        second[0].action,
        JsonAction::Balancer {
            balancer: "hook".into(),
            action: "reject".into(),
            node: "h2".into(),
            wait_up: false,
            command: None,
            status_command: None,
            request: Some(JsonRequest {
                method: "PUT".into(),
                url: "http://127.0.0.1:9000/nodes/h2".into(),
                headers: [("X-App".to_string(), "shop".to_string())].into(),
                body: Some("{\"state\": \"off\"}".into()),
            }),
            status_request: Some(status),
        }
    );
    let JsonAction::Balancer { request: Some(accept), .. } = &second[1].action else { panic!("{:?}", second[1]) };
    assert_eq!((accept.method.as_str(), accept.url.as_str()), ("POST", "http://127.0.0.1:9000/nodes/h2/on"));
    let JsonAction::Wait { check: JsonCheck::BalancerUp { status_request: Some(up), .. }, .. } = &second[2].action
    else {
        panic!("{:?}", second[2])
    };
    assert_eq!(up.url, "http://127.0.0.1:9000/nodes/h2");
}

/// Issue 17: the text said `before` steps run "on every host at once"; they fan out
/// `rollout.fan_out` (16) at a time, as the executor runs them.
#[test]
fn the_text_says_how_many_hosts_a_before_step_runs_on_at_a_time() {
    let dir = TempDir::new("before-fan-out");
    let plan = fleet(3, "1") + "before:\n  - name: fetch\n    run: git -C /srv/{{application}} fetch\n";
    let path = dir.write("before.yaml", &plan);
    let out = planrun(&["plan", &path]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("`run` steps on every host, 16 at a time"), "{text}");
    assert!(!text.contains("at once"), "{text}");
    // `rollout.fan_out` sets the width; the text says the plan's value.
    let path = dir.write("narrow.yaml", &plan.replace("  batch_size: 1\n", "  batch_size: 1\n  fan_out: 4\n"));
    let text = stdout(&planrun(&["plan", &path]));
    assert!(text.contains("`run` steps on every host, 4 at a time"), "{text}");
}
