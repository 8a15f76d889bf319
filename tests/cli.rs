//! The command line an operator expects: `init`, several plans and folders at once,
//! completions, a manual page, and an example in every command's `--help`.

mod common;

use common::{TempDir, planrun, planrun_in};

#[test]
fn init_then_validate_the_folder_succeeds() {
    let dir = TempDir::new("init");
    let out = planrun_in(dir.path(), &["init"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for file in ["plans/base.yaml", "plans/production.yaml", "plans/staging.yaml", "schemas/plan.schema.json"] {
        assert!(out.stdout.contains(&format!("created ./{file}")), "{}", out.stdout);
        assert!(dir.0.join(file).is_file(), "{file}");
    }
    // The scaffold's schema is planrun's, and every plan points its editor at it.
    let schema = std::fs::read_to_string(dir.0.join("schemas/plan.schema.json")).unwrap();
    assert_eq!(schema, planrun::validate::schema::plan_schema_text());
    for plan in ["base", "production", "staging"] {
        let text = std::fs::read_to_string(dir.0.join(format!("plans/{plan}.yaml"))).unwrap();
        assert!(text.starts_with("# yaml-language-server: $schema=../schemas/plan.schema.json\n"), "{plan}");
    }

    let out = planrun_in(dir.path(), &["validate", "plans/"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        [
            "plans/production.yaml: valid: 2 servers (roles app), 2 hosts selected, 2 steps per host, 0 balancers",
            "plans/staging.yaml: valid: 1 server (roles app), 1 host selected, 2 steps per host, 0 balancers",
            "plans/base.yaml: base of plans/production.yaml, plans/staging.yaml: checked as part of them",
        ]
    );
}

#[test]
fn init_never_overwrites_and_names_what_exists() {
    let dir = TempDir::new("init-twice");
    std::fs::create_dir(dir.0.join("plans")).unwrap();
    dir.write("plans/staging.yaml", "mine\n");
    let out = planrun_in(dir.path(), &["init", "."]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert_eq!(out.stderr.lines().next(), Some("error: `./plans/staging.yaml` already exists; nothing was written"));
    assert!(out.stderr.contains("help: `planrun init` never overwrites a file"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(dir.0.join("plans/staging.yaml")).unwrap(), "mine\n");
    assert!(!dir.0.join("plans/base.yaml").exists(), "nothing is written when anything exists");

    // Into a new folder, created on the way.
    let out = planrun_in(dir.path(), &["init", "deploy"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(dir.0.join("deploy/plans/production.yaml").is_file());
}

#[test]
fn a_folder_validates_every_plan_and_checks_bases_through_them() {
    let out = planrun(&["validate", "plans"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        [
            "plans/production.yaml: valid: 4 servers (roles web, app, db), 3 hosts selected, 4 steps per host, 1 balancer",
            "plans/staging.yaml: valid: 1 server (roles web, app), 1 host selected, 4 steps per host, 1 balancer",
            "plans/base.yaml: base of plans/production.yaml, plans/staging.yaml: checked as part of them",
        ]
    );
    // Named explicitly, a base is checked alone, and has no servers.
    let out = planrun(&["validate", "plans/base.yaml"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("error: plans/base.yaml:9:1: missing field `servers` in the plan"), "{}", out.stderr);
}

#[test]
fn json_validation_is_one_document_for_all_plans() {
    let dir = TempDir::new("json-all");
    std::fs::create_dir(dir.0.join("plans")).unwrap();
    let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/plans/base.yaml")).unwrap();
    dir.write("plans/base.yaml", base.replace("    port: 80\n", "    prot: 80\n"));
    dir.write(
        "plans/production.yaml",
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/plans/production.yaml")).unwrap(),
    );
    dir.write("other.yaml", "version: 1\n");
    let out = planrun_in(dir.path(), &["validate", "--format", "json", "plans", "other.yaml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("one json document");
    assert_eq!(v["valid"], false);
    assert_eq!(v["plans"][0]["plan"], "plans/production.yaml");
    assert_eq!(v["plans"][0]["valid"], false);
    assert_eq!(v["plans"][0]["bases"], serde_json::json!(["plans/base.yaml"]));
    assert_eq!(v["plans"][1]["plan"], "other.yaml");
    assert_eq!(
        v["bases"],
        serde_json::json!([{ "file": "plans/base.yaml", "extended_by": ["plans/production.yaml"] }])
    );
    let problems = v["problems"].as_array().unwrap();
    let unknown = problems.iter().find(|p| p["message"] == "unknown field `prot` in `balancers.nodebalancer`").unwrap();
    assert_eq!(unknown["plan"], "plans/production.yaml");
    assert_eq!(unknown["file"], "plans/base.yaml");
    assert_eq!((unknown["line"].as_u64(), unknown["column"].as_u64()), (Some(21), Some(5)));
    assert!(
        problems.iter().any(|p| p["file"] == "other.yaml" && p["message"] == "missing field `application` in the plan")
    );
}

#[test]
fn a_folder_without_plans_is_refused() {
    let dir = TempDir::new("empty-folder");
    std::fs::create_dir(dir.0.join("plans")).unwrap();
    let out = planrun_in(dir.path(), &["validate", "plans"]);
    assert_eq!(out.code, 2);
    assert_eq!(out.stderr.lines().next(), Some("error: plans: the folder `plans` holds no plan file (`*.yaml`)"));
    assert!(out.stderr.contains("help: name the folder that holds the plans"), "{}", out.stderr);
}

#[test]
fn plan_shows_several_plans_one_after_another() {
    let out = planrun(&["plan", "plans/"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let headers: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("plan ")).collect();
    assert_eq!(headers.len(), 2, "{}", out.stdout);
    assert!(headers[0].starts_with("plan plans/production.yaml: shop, 3 hosts"), "{}", headers[0]);
    assert!(headers[1].starts_with("plan plans/staging.yaml: shop, 1 host"), "{}", headers[1]);

    let out = planrun(&["plan", "--format", "json", "plans/production.yaml", "plans/staging.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let docs: Vec<serde_json::Value> =
        out.stdout.lines().map(|l| serde_json::from_str(l).expect("a document per line")).collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1]["plan"], "plans/staging.yaml");
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, marker) in [("bash", "_planrun()"), ("zsh", "#compdef planrun"), ("fish", "complete -c planrun")] {
        let out = planrun(&["completions", shell]);
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        assert!(out.stdout.contains(marker), "{shell}: {}", &out.stdout[..out.stdout.len().min(300)]);
        assert!(out.stdout.contains("validate") && out.stdout.contains("completions"), "{shell}");
    }
    let out = planrun(&["completions", "tcsh"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("invalid value 'tcsh'"), "{}", out.stderr);
}

#[test]
fn the_manual_page_is_generated_from_the_command_line() {
    let out = planrun(&["man"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(".TH planrun 1"), "{}", &out.stdout[..200]);
    assert!(out.stdout.contains("validate"), "{}", out.stdout);

    let dir = TempDir::new("man");
    let out = planrun_in(dir.path(), &["man", "--output", "."]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for page in ["planrun.1", "planrun-validate.1", "planrun-plan.1", "planrun-apply.1", "planrun-init.1"] {
        assert!(dir.0.join(page).is_file(), "{page}");
    }
    let validate = std::fs::read_to_string(dir.0.join("planrun-validate.1")).unwrap();
    assert!(validate.contains("planrun validate plans/"), "the example is in the page");
}

/// Issue 17: the top page pointed to a `planrun-help(1)` that was never written, and
/// `--output` into a missing folder failed. Every page a page refers to must be there.
#[test]
fn every_manual_page_a_page_refers_to_is_written() {
    let dir = TempDir::new("man-refs");
    let out = planrun_in(dir.path(), &["man", "--output", "share/man/man1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let pages = dir.0.join("share/man/man1");
    let mut names: Vec<String> =
        std::fs::read_dir(&pages).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for page in ["planrun.1", "planrun-apply.1", "planrun-lock.1", "planrun-man.1"] {
        assert!(names.iter().any(|n| n == page), "{page} missing from {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
    for name in &names {
        let text = std::fs::read_to_string(pages.join(name)).unwrap();
        // References are `planrun-CMD(1)`, roff-escaped as `planrun\-CMD(1)`.
        for (at, _) in text.match_indices("(1)") {
            let start = text[..at].rfind(|c: char| c.is_whitespace()).map_or(0, |i| i + 1);
            let referred = text[start..at].replace("\\-", "-").replace("\\fB", "").replace("\\fR", "");
            if referred.starts_with("planrun") {
                assert!(
                    names.contains(&format!("{referred}.1")),
                    "{name} refers to {referred}(1), which is not written"
                );
            }
        }
    }
}

/// Read with `man -l -`, the printed page has a section for every command.
#[test]
fn the_printed_manual_has_every_command() {
    let out = planrun(&["man"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for section in [".SH \"PLANRUN APPLY\"", ".SH \"PLANRUN LOCK\"", ".SH \"PLANRUN MAN\""] {
        assert!(out.stdout.contains(section), "{section} missing:\n{}", out.stdout);
    }
    // roff escapes every dash.
    assert!(out.stdout.contains("planrun apply plans/production.yaml \\-\\-dry\\-run"), "the examples are in the page");
    assert!(!out.stdout.contains("planrun\\-help"), "a reference to a help page:\n{}", out.stdout);
}

#[test]
fn the_top_help_has_examples() {
    let out = planrun(&["--help"]);
    let example = out.stdout.lines().skip_while(|l| !l.starts_with("Example")).nth(1);
    assert!(example.is_some_and(|l| l.trim_start().starts_with("planrun ")), "{}", out.stdout);
}

#[test]
fn every_command_has_an_example_in_its_help() {
    let out = planrun(&["--help"]);
    let commands: Vec<String> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // Descriptions wrap onto lines indented further than the command names.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 7, "{commands:?}");
    for command in &commands {
        let out = planrun(&[command, "--help"]);
        assert_eq!(out.code, 0, "{command}");
        let example = out.stdout.lines().skip_while(|l| !l.starts_with("Example")).nth(1);
        assert!(
            example.is_some_and(|l| l.trim_start().starts_with(&format!("planrun {command}"))),
            "`planrun {command} --help` shows no example:\n{}",
            out.stdout
        );
    }
}
