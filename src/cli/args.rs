//! The command line as clap sees it: clap's types end here; the commands get resolved
//! values (`GraphArgs::build_options`, `apply::ApplyArgs`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::graph::BuildOptions;
use crate::model::{BatchSize, BatchStep};

#[derive(Debug, Parser)]
#[command(
    name = "planrun",
    version,
    about = "Validate, preview and run rolling restarts from a YAML plan.",
    after_help = "Examples:\n  planrun init\n  planrun validate plans/\n  planrun plan plans/production.yaml\n  planrun apply plans/production.yaml --dry-run\n  planrun apply plans/production.yaml\n  planrun status plans/production.yaml\n\nEach command's --help has its own examples; `planrun man --output DIR` writes a manual page per command."
)]
pub struct Cli {
    /// When to color output: `auto` colors a terminal unless `NO_COLOR` is set.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ValidateFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LockAction {
    /// Show who holds the lock.
    Status,
    /// Break the lock (when its holder is gone for good).
    Release,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// Batches and steps in the order they run, with every command rendered.
    Text,
    /// The execution plan for programs; the shape is documented in docs/plan-json.md.
    Json,
    /// The step graph for Graphviz: `planrun plan --format dot PLAN | dot -Tsvg > plan.svg`.
    Dot,
    /// The step graph as a Mermaid flowchart, for Markdown that renders Mermaid.
    Mermaid,
}

/// What the command line may change about the step graph; `plan` and `apply` share it.
#[derive(Debug, Clone, Args)]
pub struct GraphArgs {
    /// Hosts out of rotation at once, overriding the plan's `rollout.batch_size`: a count
    /// (`2`), a percentage of the selected hosts (`25%`), or a ramp whose last entry
    /// repeats (`1,50%`).
    #[arg(long, value_name = "N|P%|RAMP", value_parser = parse_batch_size)]
    pub batch_size: Option<BatchSize>,

    /// Overrides the plan variable NAME (`{{vars.NAME}}`); repeat for several.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,

    /// Only these of the selected hosts: names or addresses, globs (`web*`, `app[1-3]`)
    /// and roles (`role:app`), comma-separated; `!` leaves hosts out (`role:app,!web3`).
    /// An entry that matches no selected host is refused.
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    pub limit: Option<Vec<String>>,
}

impl GraphArgs {
    pub fn build_options(&self) -> BuildOptions {
        BuildOptions { batch_size: self.batch_size.clone(), vars: self.vars.clone(), limit: self.limit.clone() }
    }
}

pub(super) fn parse_batch_size(text: &str) -> Result<BatchSize, String> {
    let steps = text.split(',').map(str::parse::<BatchStep>).collect::<Result<Vec<_>, _>>()?;
    Ok(match <[BatchStep; 1]>::try_from(steps) {
        Ok([one]) => BatchSize::One(one),
        Err(ramp) => BatchSize::Ramp(ramp),
    })
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration ({e}): write `30s`, `10m` or `1h`"))
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!("`{text}` has no `=`: write NAME=VALUE, such as `--var branch=hotfix`"));
    };
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(format!(
            "`{name}` is not a variable name: use letters, digits, `_` and `-`, starting with a letter, such as `--var branch=hotfix`"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// `planrun exec`'s command line.
#[derive(Debug, Clone, Args)]
pub struct ExecCommand {
    /// The plan file.
    #[arg(value_name = "PLAN")]
    pub plan: PathBuf,
    /// Only these of the selected hosts: names or addresses, globs (`web*`, `app[1-3]`)
    /// and roles (`role:app`), comma-separated; `!` leaves hosts out (`role:app,!web3`).
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    pub limit: Option<Vec<String>>,
    /// Overrides the plan variable NAME, for templates in the plan's `env`.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Hosts the command runs on at once. Defaults to the plan's `rollout.fan_out` (16
    /// unless set).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub fan_out: Option<u32>,
    /// Run in batches instead, one after another, each batch's hosts at once: a count
    /// (`2`), a percentage (`25%`) or a ramp (`1,50%`). A batch with a failed host
    /// stops the run: later batches do not start.
    #[arg(long, value_name = "N|P%|RAMP", value_parser = parse_batch_size, conflicts_with = "fan_out")]
    pub batch_size: Option<BatchSize>,
    /// Run the command through `sudo -n` (never prompting), as root.
    #[arg(long)]
    pub sudo: bool,
    /// How long the command may run on a host before it is killed and the host fails.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub timeout: std::time::Duration,
    /// Stream every line as it arrives, prefixed with its host (`h1 | line`), instead
    /// of a block per host.
    #[arg(long, short)]
    pub verbose: bool,
    /// The command, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `planrun inventory`'s sources.
#[derive(Debug, Clone, Subcommand)]
pub enum InventoryCommand {
    /// The Linode instances carrying a tag (API v4), as a JSON list of servers: the label
    /// as `name`, the public IPv4 address as `host` (`--address private` for the private
    /// one), the tags as `roles`, and `options.private_ip`, `options.linode_id`,
    /// `options.region`.
    #[command(
        after_help = "Examples:\n  planrun inventory linode --tag shop-production\n  planrun inventory linode --tag shop-production --address private --role app\n\nIn a plan:\n  servers_from:\n    - command: planrun inventory linode --tag shop-production"
    )]
    Linode(LinodeInventory),
}

#[derive(Debug, Clone, Args)]
pub struct LinodeInventory {
    /// The tag the instances carry.
    #[arg(long, value_name = "TAG")]
    pub tag: String,
    /// The environment variable holding the API token (read-only access to Linodes is enough).
    #[arg(long, value_name = "NAME", default_value = "LINODE_TOKEN")]
    pub token_env: String,
    /// The API's base URL.
    #[arg(long, value_name = "URL", default_value = crate::inventory::linode::DEFAULT_API)]
    pub api_url: String,
    /// Which IPv4 address becomes the server's `host`.
    #[arg(long, value_enum, default_value_t = AddressChoice::Public)]
    pub address: AddressChoice,
    /// A role for every server (repeat for several); without it, an instance's tags are its roles.
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AddressChoice {
    Public,
    Private,
}

/// `planrun rollback`'s command line: apply's, without what only a rollout has.
#[derive(Debug, Clone, Args)]
pub struct RollbackCommand {
    /// The plan file.
    #[arg(value_name = "PLAN")]
    pub plan: PathBuf,
    /// Do not ask for confirmation (required without a terminal).
    #[arg(long, short)]
    pub yes: bool,
    /// Render and walk every step, print what would run, change nothing (the balancers
    /// are still read).
    #[arg(long)]
    pub dry_run: bool,
    /// Override the budget's refusal, loudly, as for `apply`.
    #[arg(long)]
    pub force: bool,
    /// Wait this long for a lock another run holds (`10m`, `30s`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lock_wait: Option<std::time::Duration>,
    /// Why this run holds the lock: `lock status` and a refused run show it.
    #[arg(long, short, value_name = "TEXT")]
    pub message: Option<String>,
    /// `human` or `json`, as for `apply`.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// Show only failures and the summary.
    #[arg(long, short, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also show every line the commands print.
    #[arg(long, short)]
    pub verbose: bool,
    #[command(flatten)]
    pub graph: GraphArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check plans against the schema and each other; nothing is executed.
    ///
    /// A folder stands for every `*.yaml` in it. A file that other plans of the folder
    /// `extends` is a base: it is checked as part of each of them, not alone (a base has no
    /// servers). Name a base explicitly to check it alone.
    #[command(
        after_help = "Examples:\n  planrun validate plans/\n  planrun validate plans/production.yaml plans/staging.yaml\n  planrun validate --format json plans/ > problems.json"
    )]
    Validate {
        /// Plan files, or folders of plans.
        #[arg(required = true, value_name = "PLAN|DIR")]
        plans: Vec<PathBuf>,
        /// `json` prints one document for all plans, every problem with its file, line and
        /// column, for editors and CI annotations.
        #[arg(long, value_enum, default_value_t = ValidateFormat::Text)]
        format: ValidateFormat,
    },
    /// Run the rollout: connect, then each batch's steps, halting safely on failure.
    #[command(
        after_help = "Examples:\n  planrun apply plans/production.yaml\n  planrun apply examples/localhost.yaml --yes\n  planrun apply plans/production.yaml --dry-run --limit app1\n  planrun apply plans/production.yaml --yes --force"
    )]
    Apply {
        /// The plan file, or a plan saved by `planrun plan PLAN --out FILE`.
        #[arg(value_name = "PLAN")]
        plan: PathBuf,
        /// Do not ask for confirmation (required without a terminal).
        #[arg(long, short)]
        yes: bool,
        /// Render and walk every step, print what would run, change nothing. Balancer
        /// nodes are still resolved and read (read-only), so a wrong label, port or node is
        /// found now.
        #[arg(long)]
        dry_run: bool,
        /// Continue the last failed or interrupted run of this plan from the first step
        /// that did not complete; hosts already done are not touched again.
        #[arg(long)]
        resume: bool,
        /// Override the budget's refusal, loudly: pre-flight (nodes already out of
        /// rotation or down leave no room in the batch budget, or the run would take out
        /// the last healthy node) and the same check before each batch.
        #[arg(long)]
        force: bool,
        /// With `--resume`: resume although the plan or a base it extends changed since
        /// the run it continues (a mixed fleet is then your decision).
        #[arg(long, requires = "resume")]
        resume_changed: bool,
        /// Pause after these batches (1-based; repeat it or give a comma list), instead of
        /// the plan's `rollout.pause_after`: on a terminal planrun asks whether to go on,
        /// without one it stops (exit 3) and `--resume` promotes. `--yes` does not skip it.
        #[arg(long, value_name = "N", value_delimiter = ',', conflicts_with = "no_pause")]
        pause_after: Vec<std::num::NonZeroU32>,
        /// Run through every pause, the plan's and `--pause-after`'s.
        #[arg(long)]
        no_pause: bool,
        /// Wait this long for a lock another apply holds (`10m`, `30s`), showing who
        /// holds it, instead of refusing at once.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        lock_wait: Option<std::time::Duration>,
        /// Why this run holds the lock: `lock status` and a refused apply show it.
        #[arg(long, short, value_name = "TEXT")]
        message: Option<String>,
        /// `human`: a live view on a terminal, timestamped lines otherwise; `json`: one
        /// JSON object per event per line (shape in the README).
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
        /// Show only failures and the summary.
        #[arg(long, short, conflicts_with = "verbose")]
        quiet: bool,
        /// Also show every line the commands print.
        #[arg(long, short)]
        verbose: bool,
        #[command(flatten)]
        graph: GraphArgs,
    },
    /// Go back from the last run: the plan's `rollback.steps` on every host it changed.
    ///
    /// The hosts are those the last apply of the plan (with its resumes) completed a
    /// rollout step on, from the journal; they go back in the plan's batches, with
    /// apply's pre-flight, budget, lock, journal, live view and summary. A rollback that
    /// stopped is continued by running it again: hosts already rolled back are left alone.
    #[command(
        after_help = "Examples:\n  planrun rollback plans/production.yaml\n  planrun rollback plans/production.yaml --yes --limit app1\n  planrun plan plans/production.yaml --rollback"
    )]
    Rollback(RollbackCommand),
    /// Show the last run of a plan, from its journal, and what `--resume` would do.
    #[command(after_help = "Example:\n  planrun status plans/production.yaml")]
    Status {
        /// The plan file.
        #[arg(value_name = "PLAN")]
        plan: PathBuf,
    },
    /// List the past runs of a plan, newest last: who, when, outcome, hosts.
    #[command(
        after_help = "Examples:\n  planrun runs plans/production.yaml\n  planrun runs plans/production.yaml --last 5"
    )]
    Runs {
        /// The plan file.
        #[arg(value_name = "PLAN")]
        plan: PathBuf,
        /// Only the last N runs.
        #[arg(long, value_name = "N")]
        last: Option<std::num::NonZeroUsize>,
    },
    /// Show or break the rollout lock of a plan.
    #[command(
        after_help = "Examples:\n  planrun lock status plans/production.yaml\n  planrun lock release plans/production.yaml"
    )]
    Lock {
        #[arg(value_enum)]
        action: LockAction,
        /// The plan file.
        #[arg(value_name = "PLAN")]
        plan: PathBuf,
    },
    /// Show the ordered step graph: batches, hosts and every rendered command; nothing is executed.
    ///
    /// Several plans, or a folder of plans (its bases skipped, as for `validate`), are shown
    /// one after another; `--format json` prints one document per line.
    #[command(
        after_help = "Examples:\n  planrun plan plans/production.yaml\n  planrun plan plans/\n  planrun plan plans/production.yaml --batch-size 1,50% --var branch=hotfix\n  planrun plan plans/production.yaml --format dot | dot -Tsvg > plan.svg\n  planrun plan plans/production.yaml --out run.plan && planrun apply run.plan"
    )]
    Plan {
        /// Plan files, or folders of plans.
        #[arg(required = true, value_name = "PLAN|DIR")]
        plans: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        /// Also show, for each host, the SSH settings planrun will use and where each
        /// came from (server, plan, ssh config or default). Text format only.
        #[arg(long, short)]
        verbose: bool,
        /// Print only the selected hosts (after `--limit`), one name a line.
        #[arg(long, conflicts_with_all = ["format", "verbose"])]
        list_hosts: bool,
        /// Save the execution plan, with the hash of every input and the balancers' view,
        /// to FILE (JSON); `planrun apply FILE` then runs exactly that, or refuses.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["format", "verbose", "list_hosts"])]
        out: Option<PathBuf>,
        /// Show what `planrun rollback` would run instead: the plan's `rollback.steps` on
        /// the hosts the last run changed, from the journal.
        #[arg(long, conflicts_with = "list_hosts")]
        rollback: bool,
        #[command(flatten)]
        graph: GraphArgs,
    },
    /// Run one command on the selected hosts, over the plan's transports; no balancer
    /// is touched, nothing is journaled, no lock is taken.
    ///
    /// For read-mostly, ad-hoc commands (look at a file, a service's status). Each
    /// host's output is printed as one block when it finishes, then a summary of exit
    /// codes; exit 1 if any host failed. One word after `--` is a shell command line,
    /// sent as written; several words are quoted and joined, so they arrive as typed.
    #[command(
        after_help = "Examples:\n  planrun exec plans/production.yaml -- uptime\n  planrun exec plans/production.yaml --limit 'role:app,!web3' -- systemctl is-active shop\n  planrun exec plans/production.yaml --limit 'web*' -v -- 'tail -n 20 /var/log/shop.log'\n  planrun exec plans/production.yaml --batch-size 1 --sudo -- systemctl reload nginx"
    )]
    Exec(ExecCommand),
    /// Print a list of servers from elsewhere, for a plan's `servers_from` commands.
    #[command(
        subcommand,
        after_help = "Example:\n  planrun inventory linode --tag shop-production\n\nIn a plan:\n  servers_from:\n    - command: planrun inventory linode --tag shop-production"
    )]
    Inventory(InventoryCommand),
    /// Print the plan JSON schema (the one checked in at schemas/plan.schema.json).
    #[command(after_help = "Example:\n  planrun schema --output schemas/plan.schema.json")]
    Schema {
        /// Write the schema to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Start a repository of plans: plans/ (a base, production, staging) and the schema
    /// their modeline points at. Never overwrites a file.
    #[command(after_help = "Examples:\n  planrun init\n  planrun init deploy/\n  planrun validate plans/")]
    Init {
        /// The folder to create plans/ and schemas/ in.
        #[arg(value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  planrun completions bash > ~/.local/share/bash-completion/completions/planrun\n  planrun completions zsh > ~/.zfunc/_planrun\n  planrun completions fish > ~/.config/fish/completions/planrun.fish"
    )]
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), generated from these same definitions.
    #[command(after_help = "Examples:\n  planrun man | man -l -\n  planrun man --output /usr/local/share/man/man1")]
    Man {
        /// Write planrun.1 and a page per command (planrun-validate.1, ...) into this folder.
        #[arg(long, short, value_name = "DIR")]
        output: Option<PathBuf>,
    },
}
