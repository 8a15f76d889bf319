//! Rendering a plan's templates for every host: each template field compiled once,
//! rendered per host, and each broken template reported once, at the expression that
//! fails, with the host it first failed for.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::diagnostic::{Problem, SourceFile};
use crate::graph::shell::wrap_command;
use crate::graph::template::{self, HostVars, RenderFailure, TemplateContext, TemplateId, Templates};
use crate::graph::types::{
    Action, Check, DEFAULT_STEP_TIMEOUT, DEFAULT_WAIT_INTERVAL, DEFAULT_WAIT_TIMEOUT, HostRef, HttpCall, Phase,
    StepInstance, WaitCheck,
};
use crate::model::select::applies;
use crate::model::{Balancer, BalancerAction, HttpRequest, Plan, Step, Sudo};
use crate::text::{backticked_list, did_you_mean, few, pointer_escape};
use crate::validate::values::{Invalid, ValueKind};
use crate::yaml::{self, Tree};

/// An `http` balancer's request from its rendered fields, in `compile_balancer`'s order:
/// method (if set), url, headers, body (if set). `None` when a template failed.
fn http_call(source: &HttpRequest, rendered: Vec<String>) -> Option<HttpCall> {
    let mut values = rendered.into_iter();
    let method = match &source.method {
        Some(_) => values.next()?,
        None => "POST".to_string(),
    };
    let url = values.next()?;
    let mut headers = indexmap::IndexMap::new();
    for name in source.headers.keys() {
        headers.insert(name.clone(), values.next()?);
    }
    let body = match &source.body {
        Some(_) => Some(values.next()?),
        None => None,
    };
    Some(HttpCall { method, url, headers, body })
}

/// A template field of a step, compiled once.
struct Field {
    /// `None` when it did not parse: that is reported once, and nothing renders.
    id: Option<TemplateId>,
    pointer: String,
    /// What to call the field's owner in messages: "step `restart`".
    owner: String,
    failure: Option<Failure>,
    /// What every rendered value must be, checked for every host.
    kind: Option<ValueKind>,
    /// The first host whose rendered value `kind` refuses.
    invalid: Option<InvalidValue>,
}

/// A value that rendered but that the run could not use, for the first host it was
/// refused for, and how many more.
struct InvalidValue {
    host: Option<String>,
    invalid: Invalid,
    more: usize,
    last: Option<String>,
}

/// The first host a template failed for, and how many others it failed for.
struct Failure {
    host: Option<String>,
    /// Every variable of the template that does not resolve for that host (the first
    /// as Handlebars stops at it, the others found by rendering on past it), each with
    /// its help; or the one failure that is not a variable.
    failures: Vec<(RenderFailure, String)>,
    more: usize,
    /// The host of the latest failure: a balancer's `status` template renders once per
    /// balancer step of a host, and a host counts once.
    last: Option<String>,
}

/// A `run` or `local` command with what wraps it: exported variables, sudo.
struct CompiledCommand {
    command: usize,
    /// Names with their value fields, the step's over the plan's.
    env: Vec<(String, usize)>,
    sudo: Option<Sudo>,
}

enum Compiled {
    Run(CompiledCommand),
    Local(CompiledCommand),
    Balancer { balancer: String, action: BalancerAction, node: usize, wait_up: bool },
    Wait { check: CompiledCheck, successes: u32, interval: Duration, timeout: Duration, stable_for: Option<Duration> },
}

enum CompiledCheck {
    Sleep(Duration),
    Http(usize, u16),
    Tcp(usize),
    Command(usize),
    BalancerUp(String, usize),
}

pub(crate) struct CompiledStep<'p> {
    step: &'p Step,
    phase: Phase,
    index: usize,
    what: Compiled,
    timeout: Duration,
}

pub(crate) struct Builder<'p> {
    plan: &'p Plan,
    root: &'p Tree,
    /// The plan's files, to read back how a template was written.
    files: &'p [Arc<SourceFile>],
    templates: Templates,
    fields: Vec<Field>,
    /// The request templates of `http` and `command` balancers, compiled on first use.
    balancer_fields: HashMap<(String, &'static str), Vec<usize>>,
    ctx: TemplateContext,
    problems: Vec<Problem>,
    /// The plan's `env`, compiled once for every step.
    plan_env: Vec<(String, usize)>,
    /// Templates written in more than one field, and the last rendering of each, with
    /// the context's generation then: such a template is rendered once per host.
    shared: HashMap<TemplateId, Option<(u64, String)>>,
}

impl<'p> Builder<'p> {
    /// A builder for `plan` whose templates see `vars`, for `hosts` selected hosts. The
    /// plan's `env` is compiled here, once for every step.
    pub(crate) fn new(
        plan: &'p Plan,
        root: &'p Tree,
        files: &'p [Arc<SourceFile>],
        vars: serde_json::Map<String, Value>,
        hosts: usize,
    ) -> Self {
        let mut b = Builder {
            plan,
            root,
            files,
            templates: Templates::new(),
            fields: Vec::new(),
            balancer_fields: HashMap::new(),
            ctx: TemplateContext::new(&plan.application, vars, hosts),
            problems: Vec::new(),
            plan_env: Vec::new(),
            shared: HashMap::new(),
        };
        for (name, value) in &plan.env {
            let pointer = format!("/env/{}", pointer_escape(name));
            let field = b.field(pointer, "plan `env`".into(), &value.source());
            b.plan_env.push((name.clone(), field));
        }
        b
    }

    pub(crate) fn set_run(&mut self, run: &crate::graph::RunValues) {
        self.ctx.set_run(run);
    }

    pub(crate) fn set_batch(&mut self, index: Option<usize>) {
        self.ctx.set_batch(index);
    }

    /// Makes host `h` the one templates see, for the `host_steps` that follow: once per
    /// host for all of its lists.
    pub(crate) fn enter_host(&mut self, h: usize, hosts: &[HostRef]) {
        self.set_host(hosts, Some(h));
    }

    /// Host `h`'s chain of steps of a list, those whose `when` matches it, rendered for
    /// the host last entered (`enter_host`).
    pub(crate) fn host_steps(&mut self, steps: &[CompiledStep<'p>], h: usize, hosts: &[HostRef]) -> Vec<StepInstance> {
        let server = &self.plan.servers[hosts[h].server];
        steps
            .iter()
            .filter(|c| applies(c.step.when.as_ref(), server))
            .map(|c| self.instance(c, Some(h), hosts))
            .collect()
    }

    /// An ad-hoc command on host `h`, wrapped like a `run` step's: the plan's `env`
    /// rendered for the host, then sudo. The command is not a template.
    pub(crate) fn ad_hoc_command(&mut self, command: &str, sudo: Option<&Sudo>, h: usize, hosts: &[HostRef]) -> String {
        self.set_host(hosts, Some(h));
        let fields = self.plan_env.clone();
        let env: Vec<(String, String)> =
            fields.iter().map(|(name, field)| (name.clone(), self.render(*field, Some(&hosts[h].name)))).collect();
        wrap_command(command, &env, sudo)
    }

    /// Every problem found, each broken template once.
    pub(crate) fn finish(mut self) -> Vec<Problem> {
        self.report_failures();
        // Parse errors are found before render errors; an operator reads the file top down.
        self.problems.sort_by_key(|p| p.span.map(|s| s.offset));
        self.problems
    }

    /// The env of a `run`/`local` step: the plan's, with the step's over it by name.
    fn compile_env(
        &mut self,
        at: &str,
        owner: &str,
        env: &'p indexmap::IndexMap<String, crate::model::EnvValue>,
    ) -> Vec<(String, usize)> {
        let mut merged = self.plan_env.clone();
        for (name, value) in env {
            let pointer = format!("{at}/env/{}", pointer_escape(name));
            let field = self.field(pointer, owner.to_string(), &value.source());
            match merged.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = field,
                None => merged.push((name.clone(), field)),
            }
        }
        merged
    }

    fn command(&mut self, at: &str, owner: String, step: &'p Step, source: &str, field: &str) -> CompiledCommand {
        let command = self.field(format!("{at}/{field}"), owner.clone(), source);
        let env = self.compile_env(at, &owner, &step.env);
        // Validation refused `sudo` on a `local` step.
        let sudo = step.sudo.as_ref().and_then(|s| s.sudo());
        CompiledCommand { command, env, sudo }
    }

    fn render_command(&mut self, c: &CompiledCommand, host: Option<&str>) -> String {
        let command = self.render(c.command, host);
        let env: Vec<(String, String)> =
            c.env.iter().map(|(name, field)| (name.clone(), self.render(*field, host))).collect();
        wrap_command(&command, &env, c.sudo.as_ref())
    }

    fn field(&mut self, pointer: String, owner: String, source: &str) -> usize {
        self.checked_field(pointer, owner, source, None)
    }

    /// A field whose every rendered value must be of `kind`. A value written without a
    /// template was checked by validation, used or not (`values::check_plan_values`).
    fn checked_field(&mut self, pointer: String, owner: String, source: &str, kind: Option<ValueKind>) -> usize {
        let kind = kind.filter(|_| crate::validate::values::templated(source));
        let id = match self.templates.compile(source) {
            Ok(id) => {
                if self.fields.iter().any(|f| f.id == Some(id)) {
                    self.shared.entry(id).or_insert(None);
                }
                Some(id)
            }
            Err(e) => {
                let span = self.narrow(&pointer, e.offset, source);
                self.problems.push(
                    Problem::at(span, format!("{owner}: the template does not parse: {}", e.message))
                        .label("invalid template")
                        .help("close every `{{` with `}}`; write `\\{{` for a literal `{{`"),
                );
                None
            }
        };
        self.fields.push(Field { id, pointer, owner, failure: None, kind, invalid: None });
        self.fields.len() - 1
    }

    pub(crate) fn compile_list(
        &mut self,
        phase: Phase,
        list: &str,
        steps: &'p [Step],
        skip_balancer: bool,
    ) -> Vec<CompiledStep<'p>> {
        let mut out = Vec::with_capacity(steps.len());
        for (index, step) in steps.iter().enumerate() {
            if skip_balancer && step.uses_balancer() {
                continue;
            }
            let at = format!("{list}/{index}");
            let owner = format!("step `{}`", step.name);
            let step_timeout = step.timeout.map(|t| t.get());
            let (what, timeout) = if let Some(command) = &step.run {
                (Compiled::Run(self.command(&at, owner, step, command, "run")), step_timeout)
            } else if let Some(command) = &step.local {
                (Compiled::Local(self.command(&at, owner, step, command, "local")), step_timeout)
            } else if let Some(b) = &step.balancer {
                let node = self.checked_field(format!("{at}/balancer/node"), owner, &b.node, Some(ValueKind::Label));
                let wait_up = b.action == BalancerAction::Accept && b.wait_up.unwrap_or(true);
                (Compiled::Balancer { balancer: b.balancer.clone(), action: b.action, node, wait_up }, step_timeout)
            } else if let Some(w) = &step.wait {
                let w_at = format!("{at}/wait");
                let check = if let Some(d) = w.sleep {
                    CompiledCheck::Sleep(d.get())
                } else if let Some(url) = &w.http {
                    let field = self.checked_field(format!("{w_at}/http"), owner, url, Some(ValueKind::HttpUrl));
                    CompiledCheck::Http(field, w.status.unwrap_or(200))
                } else if let Some(address) = &w.tcp {
                    CompiledCheck::Tcp(self.checked_field(
                        format!("{w_at}/tcp"),
                        owner,
                        address,
                        Some(ValueKind::HostPort),
                    ))
                } else if let Some(command) = &w.command {
                    CompiledCheck::Command(self.field(format!("{w_at}/command"), owner, command))
                } else if let (Some(balancer), Some(node)) = (&w.balancer_up, &w.node) {
                    let field = self.checked_field(format!("{w_at}/node"), owner, node, Some(ValueKind::Label));
                    CompiledCheck::BalancerUp(balancer.clone(), field)
                } else {
                    // Validation refuses a wait that checks nothing; nothing to build.
                    continue;
                };
                // A wait's own timeout bounds its checks; the step's, when only that is
                // given, is what the operator meant for both.
                let wait_timeout = w.timeout.map(|t| t.get()).or(step_timeout).unwrap_or(DEFAULT_WAIT_TIMEOUT);
                let timeout = match check {
                    // A sleep longer than the default step timeout is what was asked for.
                    CompiledCheck::Sleep(d) => Some(step_timeout.unwrap_or(DEFAULT_STEP_TIMEOUT.max(d))),
                    _ => Some(step_timeout.unwrap_or(wait_timeout)),
                };
                let what = Compiled::Wait {
                    check,
                    successes: w.successes.unwrap_or(1),
                    interval: w.interval.map_or(DEFAULT_WAIT_INTERVAL, |d| d.get()),
                    timeout: wait_timeout,
                    stable_for: w.stable_for.map(|d| d.get()),
                };
                (what, timeout)
            } else {
                continue;
            };
            out.push(CompiledStep { step, phase, index, what, timeout: timeout.unwrap_or(DEFAULT_STEP_TIMEOUT) });
        }
        out
    }

    fn set_host(&mut self, hosts: &[HostRef], h: Option<usize>) {
        let plan = self.plan;
        self.ctx.set_host(h.map(|h| {
            let s = &plan.servers[hosts[h].server];
            HostVars { name: &hosts[h].name, address: &s.host, roles: &s.roles, options: &s.options, index: h }
        }));
    }

    /// `before`/`after`: each `run` step once per host, each `local` step once.
    pub(crate) fn fan_out(&mut self, steps: &[CompiledStep<'p>], hosts: &[HostRef]) -> Vec<StepInstance> {
        let mut out = Vec::new();
        for c in steps {
            if matches!(c.what, Compiled::Local(_)) {
                self.set_host(hosts, None);
                out.push(self.instance(c, None, hosts));
                continue;
            }
            for h in 0..hosts.len() {
                if applies(c.step.when.as_ref(), &self.plan.servers[hosts[h].server]) {
                    self.set_host(hosts, Some(h));
                    out.push(self.instance(c, Some(h), hosts));
                }
            }
        }
        out
    }

    /// Renders `field` for the current context; a failure is recorded and renders as "".
    fn render(&mut self, field: usize, host: Option<&str>) -> String {
        let f = &mut self.fields[field];
        let Some(id) = f.id else { return String::new() };
        let generation = self.ctx.generation();
        let result = match self.shared.get_mut(&id) {
            None => self.templates.render(id, &self.ctx),
            Some(Some((at, text))) if *at == generation => Ok(text.clone()),
            Some(last) => {
                let result = self.templates.render(id, &self.ctx);
                *last = result.as_ref().ok().map(|text| (generation, text.clone()));
                result
            }
        };
        match result {
            Ok(text) => {
                if let Some(kind) = f.kind {
                    record_invalid(&mut f.invalid, kind, &text, host);
                }
                text
            }
            Err(failure) => {
                match &mut f.failure {
                    Some(first) => {
                        if first.last.as_deref() != host {
                            first.more += 1;
                            first.last = host.map(str::to_string);
                        }
                    }
                    None => {
                        let data = self.ctx.data();
                        let failures = self
                            .templates
                            .every_failure(id, failure, &self.ctx)
                            .into_iter()
                            .map(|failure| {
                                let help = failure
                                    .variable
                                    .as_deref()
                                    .map(|v| missing_help(v, data, host))
                                    .unwrap_or_else(|| "check the helper's arguments".into());
                                (failure, help)
                            })
                            .collect();
                        f.failure = Some(Failure {
                            host: host.map(str::to_string),
                            failures,
                            more: 0,
                            last: host.map(str::to_string),
                        });
                    }
                }
                String::new()
            }
        }
    }

    fn instance(&mut self, c: &CompiledStep<'p>, host: Option<usize>, hosts: &[HostRef]) -> StepInstance {
        let name = host.map(|h| hosts[h].name.as_str());
        let action = match &c.what {
            Compiled::Run(c) => Action::Run { command: self.render_command(c, name) },
            Compiled::Local(c) => Action::Local { command: self.render_command(c, name) },
            Compiled::Balancer { balancer, action, node, wait_up } => {
                let node = self.render(*node, name);
                let (command, request) = self.balancer_call(balancer, action.as_str(), &node, name);
                let (status_command, status_request) = self.balancer_call(balancer, "status", &node, name);
                Action::Balancer {
                    balancer: balancer.clone(),
                    action: *action,
                    node,
                    wait_up: *wait_up,
                    command,
                    status_command,
                    request,
                    status_request,
                }
            }
            Compiled::Wait { check, successes, interval, timeout, stable_for } => {
                let check = match check {
                    CompiledCheck::Sleep(d) => Check::Sleep { duration: *d },
                    CompiledCheck::Http(f, status) => Check::Http { url: self.render(*f, name), status: *status },
                    CompiledCheck::Tcp(f) => Check::Tcp { address: self.render(*f, name) },
                    CompiledCheck::Command(f) => Check::Command { command: self.render(*f, name) },
                    CompiledCheck::BalancerUp(balancer, f) => {
                        let node = self.render(*f, name);
                        let (status_command, status_request) = self.balancer_call(balancer, "status", &node, name);
                        Check::BalancerUp { balancer: balancer.clone(), node, status_command, status_request }
                    }
                };
                Action::Wait(WaitCheck {
                    check,
                    successes: *successes,
                    interval: *interval,
                    timeout: *timeout,
                    stable_for: *stable_for,
                })
            }
        };
        StepInstance {
            phase: c.phase,
            step: c.step.name.clone(),
            index: c.index,
            host,
            action,
            timeout: c.timeout,
            retries: c.step.retries,
            continue_on_error: c.step.continue_on_error,
        }
    }

    /// `http` and `command` balancers template their requests with `{{node}}` and the
    /// host: render them here so a typo there is found now, not halfway through a run.
    /// The executor runs what is rendered here: the command of a `command` balancer or
    /// the request of an `http` balancer for `request`, whichever it is.
    fn balancer_call(
        &mut self,
        balancer: &str,
        request: &'static str,
        node: &str,
        host: Option<&str>,
    ) -> (Option<String>, Option<Box<HttpCall>>) {
        let rendered = self.render_balancer(balancer, request, node, host);
        match self.plan.balancers.get(balancer) {
            Some(Balancer::Command(_)) => (rendered.into_iter().next(), None),
            Some(Balancer::Http(http)) => {
                let source = match request {
                    "reject" => Some(&http.reject),
                    "drain" => Some(http.drain.as_ref().unwrap_or(&http.reject)),
                    "accept" => Some(&http.accept),
                    _ => http.status.as_ref(),
                };
                (None, source.and_then(|source| http_call(source, rendered)).map(Box::new))
            }
            _ => (None, None),
        }
    }

    /// Renders the templates of `request` (`reject`, `drain`, `accept` or `status`) of
    /// `balancer` for the current host and `node`, compiling them on first use.
    fn render_balancer(
        &mut self,
        balancer: &str,
        request: &'static str,
        node: &str,
        host: Option<&str>,
    ) -> Vec<String> {
        let key = (balancer.to_string(), request);
        let fields = match self.balancer_fields.get(&key) {
            Some(fields) => fields.clone(),
            None => {
                let fields = self.compile_balancer(balancer, request);
                self.balancer_fields.insert(key, fields.clone());
                fields
            }
        };
        if fields.is_empty() {
            return Vec::new();
        }
        self.ctx.set_node(Some(node));
        let rendered = fields.into_iter().map(|f| self.render(f, host)).collect();
        self.ctx.set_node(None);
        rendered
    }

    fn compile_balancer(&mut self, name: &str, request: &'static str) -> Vec<usize> {
        let plan = self.plan;
        let Some(balancer) = plan.balancers.get(name) else { return Vec::new() };
        let owner = format!("balancer `{name}`");
        let at = format!("/balancers/{}", pointer_escape(name));
        let mut fields = Vec::new();
        match balancer {
            Balancer::Http(http) => {
                let (which, req): (&str, Option<&HttpRequest>) = match request {
                    "reject" => ("reject", Some(&http.reject)),
                    "drain" => http.drain.as_ref().map_or(("reject", Some(&http.reject)), |d| ("drain", Some(d))),
                    "accept" => ("accept", Some(&http.accept)),
                    _ => ("status", http.status.as_ref()),
                };
                let Some(req) = req else { return fields };
                let at = format!("{at}/{which}");
                if let Some(method) = &req.method {
                    fields.push(self.checked_field(
                        format!("{at}/method"),
                        owner.clone(),
                        method,
                        Some(ValueKind::Method),
                    ));
                }
                fields.push(self.checked_field(format!("{at}/url"), owner.clone(), &req.url, Some(ValueKind::HttpUrl)));
                for (header, value) in &req.headers {
                    let pointer = format!("{at}/headers/{}", pointer_escape(header));
                    fields.push(self.checked_field(pointer, owner.clone(), value, Some(ValueKind::HeaderValue)));
                }
                if let Some(body) = &req.body {
                    fields.push(self.field(format!("{at}/body"), owner.clone(), body));
                }
            }
            Balancer::Command(command) => {
                let (which, source) = match request {
                    "reject" => ("reject", Some(&command.reject)),
                    "drain" => command.drain.as_ref().map_or(("reject", Some(&command.reject)), |d| ("drain", Some(d))),
                    "accept" => ("accept", Some(&command.accept)),
                    _ => ("status", command.status.as_ref()),
                };
                if let Some(source) = source {
                    fields.push(self.field(format!("{at}/{which}"), owner, source));
                }
            }
            Balancer::Linode(_) | Balancer::Haproxy(_) => {}
        }
        fields
    }

    /// One problem per broken template, at its first failure; one per value the run
    /// could not use, for the first host it was refused for.
    fn report_failures(&mut self) {
        for f in &mut self.fields {
            if let Some(bad) = f.invalid.take() {
                let whom = match &bad.host {
                    Some(h) => {
                        format!(", rendered for host `{}`{}", crate::validate::values::shown(h), more_hosts(bad.more))
                    }
                    None => String::new(),
                };
                self.problems.push(
                    Problem::at(self.root.span_at(&f.pointer), format!("{}{whom}: {}", f.owner, bad.invalid.message))
                        .label("invalid value")
                        .help(bad.invalid.help),
                );
            }
            let Some(first) = f.failure.take() else { continue };
            let source = f.id.map_or("", |id| self.templates.source(id));
            let whom = match &first.host {
                Some(h) => format!(" for host `{}`", crate::validate::values::shown(h)),
                None => String::new(),
            };
            for (k, (failure, help)) in first.failures.into_iter().enumerate() {
                let expression = expression_at(source, failure.offset, failure.variable.as_deref());
                // The hosts counted are those where the template failed at all: said once.
                let more = if k == 0 { more_hosts(first.more) } else { String::new() };
                let message = match &failure.variable {
                    Some(_) => format!("{}: `{expression}` does not resolve{whom}{more}", f.owner),
                    None => format!("{}: `{expression}` fails{whom}{more}: {}", f.owner, failure.message),
                };
                let span = narrow(self.root, self.files, &f.pointer, failure.offset, source);
                let label = if failure.variable.is_some() { "unknown variable" } else { "fails here" };
                self.problems.push(Problem::at(span, message).label(label).help(help));
            }
        }
    }

    fn narrow(&self, pointer: &str, offset: Option<usize>, source: &str) -> yaml::Span {
        narrow(self.root, self.files, pointer, offset, source)
    }
}

/// Records that `text`, rendered for `host`, is not of `kind`: the first host in full,
/// the others counted once each.
fn record_invalid(slot: &mut Option<InvalidValue>, kind: ValueKind, text: &str, host: Option<&str>) {
    match slot {
        Some(first) => {
            if first.last.as_deref() != host && kind.check(text).is_err() {
                first.more += 1;
                first.last = host.map(str::to_string);
            }
        }
        None => {
            if let Err(invalid) = kind.check(text) {
                *slot = Some(InvalidValue {
                    host: host.map(str::to_string),
                    invalid,
                    more: 0,
                    last: host.map(str::to_string),
                });
            }
        }
    }
}

fn more_hosts(more: usize) -> String {
    match more {
        0 => String::new(),
        1 => " and 1 more host".into(),
        n => format!(" and {n} more hosts"),
    }
}

/// The help for a variable that does not resolve: the likely intended name, or what
/// exists at that level.
fn missing_help(variable: &str, data: &Value, host: Option<&str>) -> String {
    let top = variable.split(['.', '/']).next().unwrap_or_default();
    if top == "host" && data.get("host").is_none() {
        return "a `local` step of `before` or `after` runs once, on the machine running planrun, so it has no \
                `host`; make it a `run` step to run it on every host"
            .into();
    }
    if top == "batch" && data.get("batch").is_none() {
        return "`batch` exists only in `rollout.steps`; `before` and `after` run outside the batches".into();
    }
    let Some((missing, keys)) = template::diagnose(variable, data) else {
        return "check the variable's name".into();
    };
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let parent = variable.strip_suffix(&missing).unwrap_or("").trim_end_matches(['.', '/']);
    if let Some(best) = did_you_mean(&missing, keys.iter().copied()) {
        return format!("did you mean `{best}`?");
    }
    let whose = match host {
        Some(h) if parent.starts_with("host") => format!(" for `{h}`"),
        _ => String::new(),
    };
    match (parent, keys.is_empty()) {
        ("", _) => format!("the variables are {}", backticked_list(&keys)),
        (p, true) => format!("`{p}` has no `{missing}`{whose}; `{{{{default {variable} VALUE}}}}` gives a fallback"),
        (p, false) => format!("`{p}` has {}{whose}; `{{{{default {variable} VALUE}}}}` gives a fallback", few(&keys)),
    }
}

/// The `{{...}}` expression at `offset` in a template, or the first one naming
/// `variable`, for quoting it in a message.
fn expression_at(source: &str, offset: Option<usize>, variable: Option<&str>) -> String {
    let start = offset.filter(|&o| source[o..].starts_with("{{")).or_else(|| {
        let variable = variable?;
        source
            .match_indices("{{")
            .map(|(i, _)| i)
            .find(|&i| source[i..].find("}}").is_some_and(|end| source[i..i + end].contains(variable)))
    });
    match start.and_then(|s| source[s..].find("}}").map(|e| &source[s..s + e + 2])) {
        Some(expression) => expression.to_string(),
        None => variable.map_or_else(|| source.to_string(), |v| format!("{{{{{v}}}}}")),
    }
}

/// The span of the template's string node at `pointer`, narrowed to the expression at
/// `offset` when the string appears verbatim in the source (plain, or quoted without
/// escapes): there, positions in the value are positions in the file.
fn narrow(root: &Tree, files: &[Arc<SourceFile>], pointer: &str, offset: Option<usize>, source: &str) -> yaml::Span {
    let span = root.span_at(pointer);
    let Some(text) = files.get(span.file as usize).map(|f| f.text.as_str()) else { return span };
    let Some(offset) = offset.filter(|&o| o <= source.len() && !source[..o].contains('\n')) else {
        return span;
    };
    let Some(written) = text.get(span.offset..span.offset + span.len) else { return span };
    let lead = if written == source {
        0
    } else if written.len() == source.len() + 2
        && (written.starts_with('"') || written.starts_with('\''))
        && &written[1..written.len() - 1] == source
    {
        1
    } else {
        return span;
    };
    let len = source[offset..].find("}}").map_or(source.len() - offset, |e| e + 2);
    yaml::Span {
        offset: span.offset + lead + offset,
        len,
        column: span.column + lead + source[..offset].chars().count(),
        ..span
    }
}
