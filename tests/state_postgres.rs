//! The journal and the lock in PostgreSQL (issue 21), on a real server each test starts
//! (`support::postgres`): a run from one folder is seen and resumed from another; a
//! second apply is refused naming the holder; a killed holder's lock is freed by the
//! server; a database that stops mid-run stops the run before its next host, and what
//! was recorded survives; an unreachable database stops an apply before anything runs;
//! TLS is used and the server's certificate checked.
//! Local transport only: nothing here needs SSH.

mod common;
mod support;

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use common::{Planrun, TempDir, local_servers};
use support::faults::wait_until;
use support::postgres::Postgres;

const TOKEN: &str = "s3cr3t-deploy-token";

/// Three local hosts, one per batch. Each host's `restart` notes `started HOST`, waits
/// (at most 60 s) for the file `go`, then fails if `fail-HOST` exists, else notes
/// `restart HOST`; all in `$PLANRUN_TEST_DIR`, so the plan's text is the same in every
/// folder it is copied to.
fn plan() -> String {
    format!(
        "version: 1
application: shop
vars: {{ token: none }}
secret_env: [DEPLOY_TOKEN]
state: {{ postgres: {{ url_env: PLANRUN_DATABASE_URL }} }}
servers:
{}rollout:
  select: {{ roles: [app] }}
  batch_size: 1
  steps:
    - name: restart
      run: >-
        echo started {{{{host.name}}}} >> \"$PLANRUN_TEST_DIR/record\";
        i=0; while [ ! -e \"$PLANRUN_TEST_DIR/go\" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done;
        test ! -e \"$PLANRUN_TEST_DIR/fail-{{{{host.name}}}}\" && echo restart {{{{host.name}}}} >> \"$PLANRUN_TEST_DIR/record\"
",
        local_servers(3)
    )
}

/// A folder holding a copy of the plan: an operator's checkout.
fn checkout() -> TempDir {
    let dir = TempDir::new("pg-checkout");
    dir.write("plan.yaml", plan());
    dir
}

/// planrun in `dir`, against `pg`, with the test's shared folder `shared`.
fn planrun(dir: &TempDir, pg: &Postgres, shared: &TempDir, args: &[&str]) -> Planrun {
    Planrun::in_dir(dir)
        .args(args)
        .env("PLANRUN_DATABASE_URL", pg.url())
        .env("PLANRUN_TEST_DIR", shared.path())
        .env("DEPLOY_TOKEN", TOKEN)
}

fn record(shared: &TempDir) -> Vec<String> {
    shared.lines("record")
}

fn go(shared: &TempDir) {
    shared.write("go", "");
}

fn wait_started(shared: &TempDir, host: &str, child: &mut Child) {
    let line = format!("started {host}");
    wait_until(Duration::from_secs(60), &format!("`{line}`"), || {
        assert!(child.try_wait().unwrap().is_none(), "the apply ended before {host} started");
        record(shared).contains(&line)
    });
}

/// Who the lock's holder row names: the user running the tests.
fn user() -> String {
    planrun::ssh_settings::current_user()
}

fn finish(child: Child) -> common::Output {
    common::Output::from(child.wait_with_output().expect("planrun ends"))
}

#[test]
#[cfg_attr(no_postgres, ignore = "needs PostgreSQL: apt-get install postgresql")]
fn a_run_from_one_folder_is_shown_and_resumed_from_another() {
    let pg = Postgres::start();
    let shared = TempDir::new("pg-shared");
    go(&shared);
    shared.write("fail-h2", "");
    let (laptop, ci) = (checkout(), checkout());

    let token_var = format!("token={TOKEN}");
    let first = planrun(&ci, &pg, &shared, &["apply", "plan.yaml", "--yes", "--var", &token_var]).run();
    first.code(1).stdout_has("h2");
    assert_eq!(record(&shared), ["started h1", "restart h1", "started h2"]);
    assert!(!ci.path().join(".planrun/journal.jsonl").exists(), "the journal is in the database, not in files");

    let status = planrun(&laptop, &pg, &shared, &["status", "plan.yaml"]).run();
    status.code(0).stdout_has(": halted").stdout_has("would run 2 of 3 steps:");
    assert!(status.stdout.contains("    h2: restart\n    h3: restart\n"), "{}", status.dump());

    std::fs::remove_file(shared.path().join("fail-h2")).unwrap();
    let resumed = planrun(&laptop, &pg, &shared, &["apply", "plan.yaml", "--yes", "--resume"]).run();
    resumed.code(0).stdout_has("rollout succeeded");
    assert_eq!(
        record(&shared),
        ["started h1", "restart h1", "started h2", "started h2", "restart h2", "started h3", "restart h3"],
        "the resume on another machine ran only what the first run left undone"
    );

    let runs = planrun(&laptop, &pg, &shared, &["runs", "plan.yaml"]).run();
    runs.code(0).stdout_has("halted").stdout_has("h2 (failed)").stdout_has("succeeded (resumed ");
    runs.stdout_has("2 runs of plan.yaml in PostgreSQL 127.0.0.1:");
    let last = planrun(&laptop, &pg, &shared, &["runs", "plan.yaml", "--last", "1"]).run();
    last.code(0).stdout_has("succeeded (resumed ").stdout_lacks("halted").stdout_has("(1 earlier not shown)");

    // The rows: one per record, in order, with their indexed columns; no secret.
    let steps = pg.psql(
        "SELECT host || ':' || outcome FROM planrun.records WHERE plan_key = 'shop/plan.yaml' AND kind = 'step' ORDER BY id",
    );
    assert_eq!(steps.lines().collect::<Vec<_>>(), ["h1:ok", "h2:failed", "h2:ok", "h3:ok"]);
    let kinds = pg.psql("SELECT string_agg(kind, ',' ORDER BY id) FROM planrun.records");
    assert_eq!(kinds, "run_started,step,step,run_finished,run_started,step,step,run_finished");
    assert_eq!(pg.psql(&format!("SELECT count(*) FROM planrun.records WHERE record::text LIKE '%{TOKEN}%'")), "0");
    assert_eq!(pg.psql("SELECT count(*) FROM planrun.records WHERE record->'inputs'->'vars'->>'token' = '***'"), "2");
    assert_eq!(pg.psql("SELECT count(*) FROM planrun.records WHERE kind = 'step' AND started_at <= ended_at"), "4");
    assert_eq!(
        pg.psql("SELECT count(*) FROM planrun.records WHERE kind = 'run_started' AND started_at IS NOT NULL"),
        "2"
    );
}

#[test]
#[cfg_attr(no_postgres, ignore = "needs PostgreSQL: apt-get install postgresql")]
fn a_second_apply_is_refused_naming_the_holder() {
    let pg = Postgres::start();
    let shared = TempDir::new("pg-shared");
    let (alice, bob) = (checkout(), checkout());
    let mut holder = planrun(&alice, &pg, &shared, &["apply", "plan.yaml", "--yes", "--message", "hotfix 12"]).spawn();
    wait_started(&shared, "h1", &mut holder);

    let place = format!("postgres:127.0.0.1:{}/postgres:shop/plan.yaml", pg.port);
    let user = user();
    let refused = planrun(&bob, &pg, &shared, &["apply", "plan.yaml", "--yes"]).run();
    refused.code(1).stderr_has(&format!("error: another apply holds the lock `{place}`: {user} on "));
    refused.stderr_has(&format!("(pid {}), since ", holder.id())).stderr_has(", applying plan.yaml: \"hotfix 12\"");
    refused.stderr_has("nothing was changed");
    assert_eq!(record(&shared), ["started h1"], "the refused apply ran nothing");

    let status = planrun(&bob, &pg, &shared, &["lock", "status", "plan.yaml"]).run();
    status
        .code(0)
        .stdout_has(&format!("lock `{place}`: held by {user} on "))
        .stdout_has("\"hotfix 12\" (PostgreSQL session ");

    // With `--lock-wait`, the second apply waits, naming the holder, and runs once it is free.
    let mut waiter = planrun(&bob, &pg, &shared, &["apply", "plan.yaml", "--yes", "--lock-wait", "5m"]).spawn();
    let stderr = std::io::BufReader::new(waiter.stderr.take().unwrap());
    let (lines, seen) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in stderr.lines().map_while(Result::ok) {
            if line.starts_with("waiting for the lock") {
                let _ = lines.send(line.clone());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let waiting = seen.recv_timeout(Duration::from_secs(60)).expect("the second apply says it waits");
    assert!(waiting.starts_with(&format!("waiting for the lock `{place}`: held by {user} on ")), "{waiting}");
    assert!(waiting.ends_with("\"hotfix 12\""), "{waiting}");

    go(&shared);
    finish(holder).code(0);
    let waited = finish(waiter);
    let stderr = reader.join().unwrap();
    assert!(waited.code == 0 && waited.stdout.contains("rollout succeeded"), "{}\n{stderr}", waited.dump());
    planrun(&bob, &pg, &shared, &["lock", "status", "plan.yaml"])
        .run()
        .code(0)
        .stdout_has(&format!("lock `{place}`: free\n"));
    assert_eq!(pg.psql("SELECT count(*) FROM planrun.locks"), "0", "a finished run removes its row");
}

#[test]
#[cfg_attr(no_postgres, ignore = "needs PostgreSQL: apt-get install postgresql")]
fn a_killed_holders_lock_is_freed_by_the_server() {
    let pg = Postgres::start();
    let shared = TempDir::new("pg-shared");
    let dir = checkout();
    let mut holder = planrun(&dir, &pg, &shared, &["apply", "plan.yaml", "--yes"]).spawn();
    wait_started(&shared, "h1", &mut holder);
    holder.kill().unwrap();
    holder.wait().unwrap();

    let place = format!("postgres:127.0.0.1:{}/postgres:shop/plan.yaml", pg.port);
    let user = user();
    wait_until(Duration::from_secs(30), "the server ending the killed planrun's session", || {
        let status = planrun(&dir, &pg, &shared, &["lock", "status", "plan.yaml"]).run();
        status.stdout.contains(&format!("lock `{place}`: free; its last holder, {user} on "))
    });

    go(&shared);
    let next = planrun(&dir, &pg, &shared, &["apply", "plan.yaml", "--yes"]).run();
    next.code(0).stdout_has("rollout succeeded").stderr_lacks("lock");
    let released = planrun(&dir, &pg, &shared, &["lock", "release", "plan.yaml"]).run();
    released.code(0).stdout_has(&format!("lock `{place}`: already free\n"));
}

#[test]
#[cfg_attr(no_postgres, ignore = "needs PostgreSQL: apt-get install postgresql")]
fn lock_release_ends_the_holders_session_and_it_halts_before_its_next_host() {
    let pg = Postgres::start();
    let shared = TempDir::new("pg-shared");
    let dir = checkout();
    let mut holder = planrun(&dir, &pg, &shared, &["apply", "plan.yaml", "--yes"]).spawn();
    wait_started(&shared, "h1", &mut holder);

    let place = format!("postgres:127.0.0.1:{}/postgres:shop/plan.yaml", pg.port);
    let user = user();
    let released = planrun(&dir, &pg, &shared, &["lock", "release", "plan.yaml"]).run();
    released.code(0).stdout_has(&format!("lock `{place}`: released (it was held by {user} on "));
    go(&shared);
    let out = finish(holder);
    out.code(1).stderr_has("the PostgreSQL session holding the lock").stderr_has("nothing new is started");
    assert_eq!(record(&shared), ["started h1", "restart h1"], "no host started after the lock was lost");
}

#[test]
#[cfg_attr(no_postgres, ignore = "needs PostgreSQL: apt-get install postgresql")]
fn a_database_stopped_mid_run_stops_it_before_the_next_host_and_keeps_what_was_recorded() {
    let pg = Postgres::start();
    let shared = TempDir::new("pg-shared");
    let dir = checkout();
    let mut run = planrun(&dir, &pg, &shared, &["apply", "plan.yaml", "--yes"]).spawn();
    wait_started(&shared, "h1", &mut run);
    pg.stop();
    go(&shared);
    let out = finish(run);
    out.code(1).stderr_has("nothing new is started");
    assert_eq!(record(&shared), ["started h1", "restart h1"], "no host started once the database was gone");

    pg.restart();
    let status = planrun(&dir, &pg, &shared, &["status", "plan.yaml"]).run();
    // h1's step ended after the database stopped: unrecorded, so it counts as not done.
    status.code(0).stdout_has("did not finish").stdout_has("would run 3 of 3 steps:");
    assert_eq!(pg.psql("SELECT string_agg(kind, ',' ORDER BY id) FROM planrun.records"), "run_started");
    let resumed = planrun(&dir, &pg, &shared, &["apply", "plan.yaml", "--yes", "--resume"]).run();
    resumed.code(0).stdout_has("rollout succeeded");
    assert!(record(&shared).ends_with(&["restart h2".into(), "started h3".into(), "restart h3".into()]));
}

#[test]
#[cfg_attr(no_postgres, ignore = "needs PostgreSQL: apt-get install postgresql")]
fn planruns_migrating_at_once_apply_each_migration_once() {
    let pg = Postgres::start();
    let shared = TempDir::new("pg-shared");
    let dirs: Vec<TempDir> = (0..4).map(|_| checkout()).collect();
    let children: Vec<Child> =
        dirs.iter().map(|d| planrun(d, &pg, &shared, &["lock", "status", "plan.yaml"]).spawn()).collect();
    for child in children {
        finish(child).code(0).stdout_has(": free\n");
    }
    assert_eq!(pg.psql("SELECT string_agg(version::text, ',') FROM planrun.migrations"), "1");
}

#[test]
fn an_unreachable_database_stops_the_apply_before_anything_runs() {
    let shared = TempDir::new("pg-shared");
    go(&shared);
    let dir = checkout();
    let port = support::haproxy::free_port();
    let out = Planrun::in_dir(&dir)
        .args(&["apply", "plan.yaml", "--yes"])
        .env("PLANRUN_DATABASE_URL", format!("postgres://planrun:hunter22@127.0.0.1:{port}/deploys"))
        .env("PLANRUN_TEST_DIR", shared.path())
        .env("DEPLOY_TOKEN", TOKEN)
        .run();
    out.code(1);
    out.stderr_has(&format!(
        "error: cannot reach the PostgreSQL database `127.0.0.1:{port}/deploys` that keeps the plan's journal and lock: error connecting to server: "
    ));
    out.stderr_has("; nothing was changed").stderr_lacks("hunter22");
    assert!(record(&shared).is_empty(), "nothing ran");

    let unset = Planrun::in_dir(&dir)
        .args(&["apply", "plan.yaml", "--yes"])
        .env("PLANRUN_TEST_DIR", shared.path())
        .env("DEPLOY_TOKEN", TOKEN)
        .run();
    unset.code(2).stderr_has("the environment variable `PLANRUN_DATABASE_URL` must be set");

    // The URL is a secret: a command that prints it shows it masked.
    let url = format!("postgres://planrun:hunter22@127.0.0.1:{port}/deploys");
    let printed = Planrun::in_dir(&dir)
        .args(&["exec", "plan.yaml", "--limit", "h1", "--", "echo \"url: $PLANRUN_DATABASE_URL\""])
        .env("PLANRUN_DATABASE_URL", &url)
        .env("DEPLOY_TOKEN", TOKEN)
        .run();
    printed.code(0).stdout_has("url: ***").stdout_lacks("hunter22");
}

#[test]
fn a_fleet_lock_beside_postgres_state_is_refused() {
    let out = Planrun::new().plan(plan() + "lock: { host: local }\n").args(&["validate", "plan.yaml"]).run();
    out.code(2).stderr_has("`lock` has no effect: the lock is in PostgreSQL (`state.postgres`)");
}

#[test]
#[cfg_attr(no_postgres, ignore = "needs PostgreSQL: apt-get install postgresql")]
fn tls_is_used_and_the_servers_certificate_is_checked() {
    let pg = Postgres::start_tls();
    let shared = TempDir::new("pg-shared");
    let dir = checkout();
    let url = |mode: &str| format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode={mode}", pg.port);
    let lock_status = |mode: &str, ca: Option<&Path>| {
        let mut run = Planrun::in_dir(&dir)
            .args(&["lock", "status", "plan.yaml"])
            .env("PLANRUN_DATABASE_URL", url(mode))
            .env("PLANRUN_TEST_DIR", shared.path());
        if let Some(ca) = ca {
            // rustls-platform-verifier reads the system's roots through rustls-native-certs,
            // which takes them from `SSL_CERT_FILE` when it is set.
            run = run.env("SSL_CERT_FILE", ca);
        }
        run.run()
    };
    // The server takes TLS connections only, so one that works was made over TLS.
    lock_status("require", Some(&pg.ca())).code(0).stdout_has(": free\n");
    let untrusted = lock_status("require", None);
    untrusted.code(1).stderr_has("error: cannot reach the PostgreSQL database `127.0.0.1:");
    untrusted.stderr_has("certificate");
    let plain = lock_status("disable", Some(&pg.ca()));
    plain.code(1).stderr_has("no encryption");
}

/// `planrun rollback` finds the run to go back from where the plan keeps its runs: a run
/// applied from one folder is rolled back from another (issues 18 and 21).
#[test]
#[cfg_attr(no_postgres, ignore = "needs PostgreSQL: apt-get install postgresql")]
fn a_run_applied_from_one_folder_is_rolled_back_from_another() {
    let pg = Postgres::start();
    let shared = TempDir::new("pg-rollback-shared");
    go(&shared);
    let with_rollback = plan()
        + "rollback:\n  steps:\n    - name: back\n      run: echo back {{host.name}} >> \"$PLANRUN_TEST_DIR/record\"\n";
    let (ci, laptop) = (TempDir::new("pg-rollback-ci"), TempDir::new("pg-rollback-laptop"));
    ci.write("plan.yaml", &with_rollback);
    laptop.write("plan.yaml", &with_rollback);

    let none = planrun(&laptop, &pg, &shared, &["rollback", "plan.yaml", "--yes"]).run();
    none.code(2).stderr_has("has no run of `plan.yaml` to go back from");

    planrun(&ci, &pg, &shared, &["apply", "plan.yaml", "--yes"]).run().code(0);
    let back = planrun(&laptop, &pg, &shared, &["rollback", "plan.yaml", "--yes"]).run();
    back.code(0);
    let backs: Vec<String> = record(&shared).into_iter().filter(|l| l.starts_with("back ")).collect();
    assert_eq!(backs, ["back h1", "back h2", "back h3"], "{}", back.dump());
    assert!(!laptop.path().join(".planrun/journal.jsonl").exists(), "the rollback was recorded in the database");
}
