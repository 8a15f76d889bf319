//! Finds the tools the integration tests drive (sshd, HAProxy, graphviz, sudo, PostgreSQL, Node.js
//! and the yaml-language-server under `.ci/node`, at the version `.ci/run` pins) and sets a `no_TOOL` cfg for
//! each one missing, so that plain `cargo test` lists the tests that need it as ignored,
//! with the reason and the package to install. With `CI` set nothing counts as missing:
//! there the tests run and fail, naming what to install.
//!
//! Nothing in the library or the binary depends on these cfgs; only `#[cfg_attr(no_…,
//! ignore = "…")]` on tests does.

use std::env;
use std::path::{Path, PathBuf};

/// cfg name and how to find the tool. `Sbin` also looks in the sbin directories that a
/// non-login root shell may leave out of `PATH` (as `tests/support::find_tool` does);
/// `Path` only in `PATH`, as the tests start those tools by name.
const TOOLS: &[(&str, Lookup)] = &[
    // openssh-server pulls in openssh-client: the fleets make keys and some tests an agent.
    ("no_sshd", Lookup::Sbin(&["sshd", "ssh-keygen", "ssh-agent", "ssh-add"])),
    ("no_haproxy", Lookup::Sbin(&["haproxy"])),
    ("no_sudo", Lookup::Sbin(&["sudo", "useradd", "userdel"])),
    // tests/support/apps.rs runs the HTTP backends with the system's python3.
    ("no_python3", Lookup::Files(&["/usr/bin/python3", "/usr/local/bin/python3"])),
    ("no_dot", Lookup::Path(&["dot"])),
    ("no_yaml_language_server", Lookup::Path(&["node"])),
    // Debian's postgresql keeps its server binaries out of PATH (tests/support/postgres.rs).
    ("no_postgres", Lookup::Postgres(&["initdb", "pg_ctl", "postgres", "psql"])),
];

enum Lookup {
    Sbin(&'static [&'static str]),
    Path(&'static [&'static str]),
    /// Any one of these files.
    Files(&'static [&'static str]),
    /// All of these in one `/usr/lib/postgresql/VERSION/bin`.
    Postgres(&'static [&'static str]),
}

/// The pinned language server that `.ci/run` installs (tests/editor.rs).
const LANGUAGE_SERVER: &str = ".ci/node/node_modules/yaml-language-server/bin/yaml-language-server";
const LANGUAGE_SERVER_PACKAGE: &str = ".ci/node/node_modules/yaml-language-server/package.json";

/// Whether the language server in `.ci/node` is the version `.ci/run` pins (its
/// `LS_VERSION=` line): a test of another version would prove nothing about the pinned one.
fn pinned_language_server() -> bool {
    let pinned = std::fs::read_to_string(".ci/run")
        .ok()
        .and_then(|run| run.lines().find_map(|l| l.strip_prefix("LS_VERSION=").map(|v| v.trim().to_string())));
    let installed = std::fs::read_to_string(LANGUAGE_SERVER_PACKAGE).ok().and_then(|package| {
        // `"version": "2.0.0"`, without a JSON parser among the build dependencies.
        let after = package.split_once("\"version\"")?.1;
        let value = after.split_once('"')?.1;
        Some(value.split_once('"')?.0.to_string())
    });
    Path::new(LANGUAGE_SERVER).is_file() && pinned.is_some() && pinned == installed
}

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=.ci/run");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=PATH");
    // Installing a package or running `.ci/run` changes these directories.
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", ".ci", "/usr/lib/postgresql"] {
        if Path::new(dir).exists() {
            println!("cargo::rerun-if-changed={dir}");
        }
    }
    let ci = env::var_os("CI").is_some();
    for (cfg, lookup) in TOOLS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if ci {
            continue;
        }
        let found = match lookup {
            Lookup::Sbin(tools) => tools.iter().all(|t| find(t, true)),
            Lookup::Path(tools) => tools.iter().all(|t| find(t, false)),
            Lookup::Files(files) => files.iter().any(|f| is_executable(Path::new(f))),
            Lookup::Postgres(tools) => postgres_bins().any(|bin| tools.iter().all(|t| is_executable(&bin.join(t)))),
        };
        let found = found && (*cfg != "no_yaml_language_server" || pinned_language_server());
        if !found {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}

fn postgres_bins() -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql").into_iter().flatten().filter_map(|e| Some(e.ok()?.path().join("bin")))
}

fn find(tool: &str, sbin: bool) -> bool {
    let path = env::var_os("PATH").unwrap_or_default();
    let extra: &[&str] = if sbin { &["/usr/sbin", "/sbin", "/usr/bin", "/bin"] } else { &[] };
    env::split_paths(&path).chain(extra.iter().map(PathBuf::from)).any(|dir| is_executable(&dir.join(tool)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}
