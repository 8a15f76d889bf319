//! The files a plan names — the ssh config (and what it `Include`s), known_hosts, an
//! identity file — are read with bounds: a device, a FIFO, a directory or a file over
//! the README's limit is bad input, refused with its path before anything runs, never a
//! hang or gigabytes of memory.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Output, Planrun, TempDir};

/// Runs `apply` on `plan`, killed after 20 s: a hang fails the test instead of CI.
fn apply_guarded(dir: &TempDir, plan: &str) -> Output {
    dir.write("plan.yaml", plan);
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let mut child = Planrun::in_dir(dir).args(&["apply", "plan.yaml", "--yes"]).env("HOME", &home).spawn();
    let started = Instant::now();
    while child.try_wait().expect("wait for planrun").is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("planrun hung on a file the plan names");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Output::from(child.wait_with_output().expect("planrun's output"))
}

fn plan_with(ssh: &str) -> String {
    format!(
        "version: 1\napplication: shop\nssh: {{ {ssh} }}\nservers: [{{ host: 127.0.0.1, name: app1, roles: [app] }}]\nrollout: {{ select: {{ roles: [app] }}, steps: [{{ name: hello, run: \"touch ran\" }}] }}\n"
    )
}

/// The hostile files: a device, a FIFO, a directory, a (sparse) file one byte over `limit`.
fn hostile(dir: &TempDir, limit: u64) -> Vec<(PathBuf, &'static str)> {
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let large = dir.path().join("large");
    std::fs::File::create(&large).unwrap().set_len(limit + 1).unwrap();
    vec![
        (PathBuf::from("/dev/zero"), "it is not a regular file"),
        (fifo, "it is not a regular file"),
        (folder, "it is a directory"),
        (large, "more than the"),
    ]
}

fn assert_refused(out: &Output, dir: &Path, path: &Path, why: &str, limit: &str) {
    assert_eq!(out.code, 2, "{}", out.dump());
    assert!(out.stderr.contains(&format!("`{}`", path.display())), "names the path: {}", out.dump());
    assert!(out.stderr.contains(why), "says why ({why}): {}", out.dump());
    if why == "more than the" {
        assert!(out.stderr.contains(limit), "states the limit {limit}: {}", out.dump());
    }
    assert!(out.stderr.contains("nothing was executed"), "{}", out.dump());
    assert!(!dir.join("ran").exists(), "nothing ran");
}

#[test]
fn an_ssh_config_that_is_a_device_a_fifo_a_folder_or_too_large_is_refused() {
    let dir = TempDir::new("files-config");
    for (path, why) in hostile(&dir, 1024 * 1024) {
        let out = apply_guarded(&dir, &plan_with(&format!("config_file: {}", path.display())));
        assert_refused(&out, dir.path(), &path, why, "1 MiB");
        assert!(out.stderr.contains("cannot read the ssh config"), "{}", out.dump());
    }
}

#[test]
fn a_file_an_ssh_config_includes_is_read_with_the_same_bounds() {
    let dir = TempDir::new("files-include");
    for (path, why) in hostile(&dir, 1024 * 1024) {
        let config = dir.write("config", format!("Host *\n  User ops\nInclude {} # fleet\n", path.display()));
        let out = apply_guarded(&dir, &plan_with(&format!("config_file: {}", config.display())));
        assert_refused(&out, dir.path(), &path, why, "1 MiB");
        assert!(out.stderr.contains("included by the ssh config"), "{}", out.dump());
    }
}

#[test]
fn a_known_hosts_that_is_a_device_a_fifo_a_folder_or_too_large_is_refused() {
    let dir = TempDir::new("files-known-hosts");
    for (path, why) in hostile(&dir, 64 * 1024 * 1024) {
        let out = apply_guarded(&dir, &plan_with(&format!("config_file: /dev/null, known_hosts: {}", path.display())));
        assert_refused(&out, dir.path(), &path, why, "64 MiB");
        assert!(out.stderr.contains("cannot read the known_hosts"), "{}", out.dump());
    }
}

#[test]
fn an_identity_file_that_is_a_device_a_fifo_a_folder_or_too_large_is_refused() {
    let dir = TempDir::new("files-identity");
    for (path, why) in hostile(&dir, 1024 * 1024) {
        let out =
            apply_guarded(&dir, &plan_with(&format!("config_file: /dev/null, identity_file: {}", path.display())));
        assert_refused(&out, dir.path(), &path, why, "1 MiB");
        assert!(out.stderr.contains("cannot read the identity_file"), "{}", out.dump());
    }
}

#[test]
fn dev_null_still_means_no_ssh_config_and_no_known_hosts() {
    let dir = TempDir::new("files-dev-null");
    dir.write("plan.yaml", plan_with("config_file: /dev/null, known_hosts: /dev/null"));
    let out = Planrun::in_dir(&dir).args(&["plan", "-v", "plan.yaml"]).run();
    assert_eq!(out.code, 0, "{}", out.dump());
    assert!(
        out.stdout.lines().any(|l| l.trim_start().starts_with("known_hosts") && l.contains("/dev/null")),
        "{}",
        out.dump()
    );
}
