//! Templates in plan strings: Handlebars in strict mode, without HTML escaping.
//!
//! Each template is compiled once and rendered once per host, so a plan of 100,000 hosts
//! parses its handful of templates a handful of times. Strings without `{{` skip
//! Handlebars altogether: most fields of a plan are plain text.
//!
//! Strict mode is what turns a typo such as `{{host.options.privte_ip}}` into a
//! validation error instead of an empty string in a command line.

use handlebars::{
    Context, Handlebars, Helper, HelperDef, JsonRender, RenderContext, RenderError, RenderErrorReason, ScopedJson,
    TemplateErrorReason,
};
use serde_json::{Map, Value};

use crate::graph::shell::shell_quote;

/// A compiled template, valid for the [`Templates`] that compiled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TemplateId(usize);

/// Compiled templates and the helpers they may call.
pub struct Templates {
    registry: Handlebars<'static>,
    /// Per template: the source, and its name in the registry when it goes through
    /// Handlebars at all.
    sources: Vec<(String, Option<String>)>,
    /// Each source compiled so far, by its text: a template written several times (the
    /// same `node` on `reject` and `accept`) is compiled once and has one id, so that
    /// its renderings can be shared.
    by_source: std::collections::HashMap<String, TemplateId>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").field("count", &self.sources.len()).finish()
    }
}

/// A template that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// What Handlebars says, without its own position prefix.
    pub message: String,
    /// 0-based byte offset into the template where the problem is, when known.
    pub offset: Option<usize>,
}

/// A template that parsed but does not render with some context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderFailure {
    /// The variable that does not resolve, as written (`host.options.privte_ip`); `None`
    /// for other failures, such as a helper given a map to quote.
    pub variable: Option<String>,
    /// 0-based byte offset of the failing `{{...}}` in the template, when known.
    pub offset: Option<usize>,
    pub message: String,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Self {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        // Commands and URLs, not HTML: `&` and `<` must reach the shell as written.
        registry.register_escape_fn(handlebars::no_escape);
        registry.register_helper("quote", Box::new(QuoteHelper));
        registry.register_helper("default", Box::new(DefaultHelper));
        registry.register_helper("join", Box::new(JoinHelper));
        Templates { registry, sources: Vec::new(), by_source: std::collections::HashMap::new() }
    }

    /// Compiles `source` once, for rendering with any number of contexts.
    pub fn compile(&mut self, source: &str) -> Result<TemplateId, SyntaxError> {
        if let Some(id) = self.by_source.get(source) {
            return Ok(*id);
        }
        let id = TemplateId(self.sources.len());
        // `{{` is the only way into Handlebars; a lone `}}` or `\{{` is left to it too.
        let templated = source.contains("{{") || source.contains("}}");
        let name = templated.then(|| id.0.to_string());
        if let Some(name) = &name {
            if let Some(open) = unclosed(source) {
                let rest = &source[open..];
                let shown = rest.lines().next().unwrap_or(rest);
                return Err(SyntaxError { message: format!("`{shown}` is not closed"), offset: Some(open) });
            }
            self.registry.register_template_string(name, source).map_err(|e| {
                let offset = e.pos().and_then(|(line, column)| offset_of(source, line, column));
                let message = match e.reason() {
                    TemplateErrorReason::MismatchingClosedHelper(open, close) => {
                        format!("`{{{{#{open}}}}}` is closed by `{{{{/{close}}}}}`")
                    }
                    // pest's own words ("expected trailing_tilde_to_omit_whitespace") name
                    // grammar rules, not anything an operator wrote.
                    TemplateErrorReason::InvalidSyntax(_) => "invalid template syntax".to_string(),
                    other => other.to_string(),
                };
                SyntaxError { message, offset }
            })?;
        }
        self.sources.push((source.to_string(), name));
        self.by_source.insert(source.to_string(), id);
        Ok(id)
    }

    /// The text the template was compiled from.
    pub fn source(&self, id: TemplateId) -> &str {
        &self.sources[id.0].0
    }

    pub fn render(&self, id: TemplateId, context: &TemplateContext) -> Result<String, RenderFailure> {
        let (source, name) = &self.sources[id.0];
        let Some(name) = name else {
            return Ok(source.clone());
        };
        // Handlebars' own `render_with_context` starts every output at 8 KiB of capacity
        // and hands that String back: 40,000 rendered commands held 330 MB. One buffer per
        // thread, copied out at its exact length, holds what the commands need.
        thread_local! {
            static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let rendered = BUFFER.with_borrow_mut(|buffer| {
            buffer.clear();
            self.registry.render_with_context_to_write(name, &context.data, &mut *buffer)?;
            // Templates and values are strings, so the output is UTF-8.
            Ok(String::from_utf8_lossy(buffer).into_owned())
        });
        rendered.map_err(|e: RenderError| {
            let offset = e.line_no.zip(e.column_no).and_then(|(line, column)| offset_of(source, line, column));
            match e.reason() {
                RenderErrorReason::MissingVariable(variable) => {
                    RenderFailure { variable: variable.clone(), offset, message: "a variable does not resolve".into() }
                }
                other => RenderFailure { variable: None, offset, message: other.to_string() },
            }
        })
    }
}

impl Templates {
    /// `first` (how the template failed with `context`) and every other variable it
    /// names that does not resolve: Handlebars stops at the first, so each missing
    /// variable is given an empty value in a copy of the context and the template
    /// rendered again, until it renders or stops making progress. Only a template that
    /// failed pays for this, once.
    pub fn every_failure(&self, id: TemplateId, first: RenderFailure, context: &TemplateContext) -> Vec<RenderFailure> {
        const MAX_REPORTED: usize = 32;
        let mut context = context.clone();
        let mut found = vec![first];
        while found.len() < MAX_REPORTED {
            let Some(variable) = found.last().and_then(|f| f.variable.clone()) else { break };
            if !context.fill(&variable) {
                break;
            }
            match self.render(id, &context) {
                Ok(_) => break,
                Err(next) if found.iter().any(|f| f.variable == next.variable && f.offset == next.offset) => break,
                Err(next) => found.push(next),
            }
        }
        found
    }
}

/// The offset of the first `{{` with no `}}` after it: the most common template mistake,
/// which Handlebars reports at the end of the string rather than where it begins.
fn unclosed(source: &str) -> Option<usize> {
    let mut at = 0;
    while let Some(open) = source[at..].find("{{").map(|i| at + i) {
        match source[open + 2..].find("}}") {
            Some(close) => at = open + 2 + close + 2,
            None => return Some(open),
        }
    }
    None
}

/// Byte offset of Handlebars' 1-based line and column within `source`.
fn offset_of(source: &str, line: usize, column: usize) -> Option<usize> {
    let line_start = if line <= 1 { 0 } else { source.match_indices('\n').nth(line - 2).map(|(i, _)| i + 1)? };
    let rest = &source[line_start..];
    let within = rest.char_indices().nth(column.saturating_sub(1)).map_or(rest.len(), |(i, _)| i);
    Some(line_start + within)
}

/// The values a template sees. One context is reused for every host: only `host` and
/// `batch` change, so `vars` is not copied 100,000 times.
#[derive(Debug, Clone)]
pub struct TemplateContext {
    data: Context,
    /// Changes with every change to the values: renderings made in the same generation
    /// are the same, and may be reused.
    generation: u64,
}

/// What `{{host.*}}` resolves to.
#[derive(Debug, Clone, Copy)]
pub struct HostVars<'a> {
    pub name: &'a str,
    pub address: &'a str,
    pub roles: &'a [String],
    pub options: &'a indexmap::IndexMap<String, Value>,
    /// 0-based position in the selection.
    pub index: usize,
}

impl TemplateContext {
    /// `application`, `vars` and `rollout.hosts`: what every template of a plan shares.
    pub fn new(application: &str, vars: Map<String, Value>, selected_hosts: usize) -> Self {
        let mut root = Map::new();
        root.insert("application".into(), Value::String(application.into()));
        root.insert("vars".into(), Value::Object(vars));
        root.insert("rollout".into(), serde_json::json!({ "hosts": selected_hosts }));
        let mut context = TemplateContext { data: Context::from(Value::Object(root)), generation: 0 };
        context.set_run(&crate::graph::RunValues::placeholder());
        context
    }

    /// Sets `run.id` and `run.started`: the same for every host of a run.
    pub fn set_run(&mut self, run: &crate::graph::RunValues) {
        self.set("run", Some(serde_json::json!({ "id": run.id, "started": run.started })));
    }

    /// Sets (or, with `None`, removes) `host`, so that a step without a host fails on
    /// `{{host.name}}` instead of rendering an empty name.
    pub fn set_host(&mut self, host: Option<HostVars<'_>>) {
        let Some(h) = host else {
            self.set("host", None);
            return;
        };
        self.generation += 1;
        let Value::Object(root) = self.data.data_mut() else { return };
        let current = root.entry("host").or_insert(Value::Null);
        // The previous host's maps and strings are refilled in place: a plan of 100,000
        // hosts otherwise builds and drops 100,000 maps, hashing every key. The first
        // host (or one after a step without a host) starts from empty ones.
        if !matches!(current, Value::Object(map) if map.len() == 5) {
            *current = serde_json::json!({ "name": "", "address": "", "roles": [], "options": {}, "index": 0 });
        }
        let Value::Object(fields) = current else { return };
        let mut values = fields.values_mut();
        if let (
            Some(Value::String(name)),
            Some(Value::String(address)),
            Some(Value::Array(roles)),
            Some(Value::Object(options)),
            Some(index),
        ) = (values.next(), values.next(), values.next(), values.next(), values.next())
        {
            name.clear();
            name.push_str(h.name);
            address.clear();
            address.push_str(h.address);
            roles.clear();
            roles.extend(h.roles.iter().map(|r| Value::String(r.clone())));
            options.clear();
            options.extend(h.options.iter().map(|(k, v)| (k.clone(), v.clone())));
            *index = Value::from(h.index);
        }
    }

    /// Sets (or removes) `batch.index`, 0-based; `before` and `after` have no batch.
    pub fn set_batch(&mut self, index: Option<usize>) {
        self.set("batch", index.map(|i| serde_json::json!({ "index": i })));
    }

    /// Sets (or removes) `node`, for the templates of `http` and `command` balancers.
    pub fn set_node(&mut self, node: Option<&str>) {
        self.set("node", node.map(|n| Value::String(n.into())));
    }

    fn set(&mut self, key: &str, value: Option<Value>) {
        self.generation += 1;
        if let Value::Object(map) = self.data.data_mut() {
            match value {
                Some(v) => {
                    map.insert(key.into(), v);
                }
                None => {
                    map.shift_remove(key);
                }
            }
        }
    }

    /// Which values the context holds: equal generations, equal values.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn data(&self) -> &Value {
        self.data.data()
    }

    /// Gives the missing `variable` (`host.options.port`) an empty value, making the
    /// maps on its way; false when it cannot be placed (a path relative to a block, an
    /// index, a field of a value that is not a map).
    fn fill(&mut self, variable: &str) -> bool {
        if variable.starts_with("../") || variable.starts_with('@') {
            return false;
        }
        let path = variable.trim_start_matches("this.").trim_start_matches("./");
        let segments: Vec<&str> = path.split(['.', '/']).collect();
        self.generation += 1;
        let mut here = self.data.data_mut();
        for (i, segment) in segments.iter().enumerate() {
            let Value::Object(map) = here else { return false };
            if segment.is_empty() || segment.starts_with('[') {
                return false;
            }
            if i + 1 == segments.len() {
                return map.insert((*segment).to_string(), Value::String(String::new())).is_none();
            }
            here = map.entry((*segment).to_string()).or_insert_with(|| Value::Object(Map::new()));
        }
        false
    }
}

/// Why `variable` (`host.options.privte_ip`) does not resolve in `data`: the first segment
/// that is missing and the keys that exist at that level, for a "did you mean".
pub fn diagnose(variable: &str, data: &Value) -> Option<(String, Vec<String>)> {
    let path = variable.trim_start_matches("this.").trim_start_matches("./");
    let mut here = data;
    for segment in path.split(['.', '/']) {
        let segment = segment.trim_start_matches('[').trim_end_matches(']');
        match here {
            Value::Object(map) => match map.get(segment) {
                Some(next) => here = next,
                None => return Some((segment.to_string(), map.keys().cloned().collect())),
            },
            // `host.roles.7`: an index past the end, or a field of a string.
            _ => return Some((segment.to_string(), Vec::new())),
        }
    }
    None
}

/// The value of a helper parameter, or the strict-mode error naming the variable.
fn param<'a>(h: &'a Helper<'_>, index: usize, helper: &'static str) -> Result<&'a Value, RenderError> {
    let Some(p) = h.param(index) else {
        return Err(RenderErrorReason::ParamNotFoundForIndex(helper, index).into());
    };
    // In strict mode Handlebars hands a missing variable to helpers as "missing" rather
    // than failing, so that helpers such as `default` can see it; the others must fail.
    if p.is_value_missing() {
        return Err(RenderError::strict_error(p.relative_path()));
    }
    Ok(p.value())
}

fn derived(s: String) -> Result<ScopedJson<'static>, RenderError> {
    Ok(ScopedJson::Derived(Value::String(s)))
}

/// `{{quote x}}`: one shell word. A list becomes one word per item.
struct QuoteHelper;

impl HelperDef for QuoteHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        match param(h, 0, "quote")? {
            Value::Array(items) => {
                let words: Result<Vec<String>, RenderError> = items.iter().map(scalar_text).collect();
                derived(words?.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" "))
            }
            value => derived(shell_quote(&scalar_text(value)?)),
        }
    }
}

fn scalar_text(value: &Value) -> Result<String, RenderError> {
    match value {
        Value::Object(_) | Value::Array(_) => {
            Err(RenderErrorReason::Other("`quote` cannot quote a map or a nested list: name one of its values".into())
                .into())
        }
        other => Ok(other.render()),
    }
}

/// `{{default host.options.port 80}}`: the first value unless it is missing or null.
struct DefaultHelper;

impl HelperDef for DefaultHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        match h.param(0) {
            Some(p) if !p.is_value_missing() && !p.value().is_null() => Ok(ScopedJson::Derived(p.value().clone())),
            _ => Ok(ScopedJson::Derived(param(h, 1, "default")?.clone())),
        }
    }
}

/// `{{join host.roles ","}}`: the items of a list with a separator (`,` when left out).
struct JoinHelper;

impl HelperDef for JoinHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let separator = match h.param(1) {
            Some(_) => param(h, 1, "join")?.render(),
            None => ",".to_string(),
        };
        match param(h, 0, "join")? {
            Value::Array(items) => derived(items.iter().map(JsonRender::render).collect::<Vec<_>>().join(&separator)),
            // One value joins to itself, so `join` works on an option that is sometimes a list.
            other => derived(other.render()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;

    fn context() -> TemplateContext {
        let vars = serde_json::json!({ "branch": "main", "note": "it's \"done\" $HOME `x`" });
        let mut ctx = TemplateContext::new("shop", vars.as_object().unwrap().clone(), 3);
        ctx.set_host(Some(HostVars { name: "app1", address: "10.0.0.2", roles: ROLES, options: options(), index: 0 }));
        ctx.set_batch(Some(0));
        ctx
    }

    static ROLES: &[String] = &[];

    fn options() -> &'static IndexMap<String, Value> {
        static OPTIONS: std::sync::OnceLock<IndexMap<String, Value>> = std::sync::OnceLock::new();
        OPTIONS.get_or_init(|| {
            IndexMap::from([("private_ip".to_string(), Value::from("192.168.0.1")), ("weight".into(), Value::from(3))])
        })
    }

    fn render(source: &str) -> Result<String, RenderFailure> {
        let mut t = Templates::new();
        let id = t.compile(source).unwrap();
        t.render(id, &context())
    }

    #[test]
    fn renders_the_context_without_escaping() {
        assert_eq!(
            render("{{application}} {{vars.branch}} {{host.name}}@{{host.address}} {{host.options.private_ip}} <&> {{host.index}}/{{rollout.hosts}} b{{batch.index}}").unwrap(),
            "shop main app1@10.0.0.2 192.168.0.1 <&> 0/3 b0"
        );
        assert_eq!(render("no templates here").unwrap(), "no templates here");
    }

    #[test]
    fn an_unknown_variable_is_an_error_naming_it() {
        let e = render("ping {{host.options.privte_ip}}").unwrap_err();
        assert_eq!(e.variable.as_deref(), Some("host.options.privte_ip"));
        assert_eq!(e.offset, Some(5));
        let (missing, keys) = diagnose("host.options.privte_ip", context().data()).unwrap();
        assert_eq!(missing, "privte_ip");
        assert_eq!(keys, ["private_ip", "weight"]);
    }

    #[test]
    fn helpers_fail_on_unknown_variables_too() {
        for source in
            ["{{quote host.options.nope}}", "{{join host.nope \",\"}}", "{{default host.options.nope vars.nope}}"]
        {
            let e = render(source).unwrap_err();
            assert!(e.variable.as_deref().is_some_and(|v| v.contains("nope")), "{source}: {e:?}");
        }
    }

    #[test]
    fn default_fills_in_a_missing_option() {
        assert_eq!(render("{{default host.options.port 80}}").unwrap(), "80");
        assert_eq!(render("{{default host.options.weight 1}}").unwrap(), "3");
        assert_eq!(render("{{quote (default host.options.user \"deploy user\")}}").unwrap(), "'deploy user'");
    }

    #[test]
    fn join_joins_lists() {
        let mut t = Templates::new();
        let id = t.compile("{{join host.roles \",\"}}|{{join host.roles}}|{{quote host.roles}}").unwrap();
        let mut ctx = context();
        let roles = vec!["web".to_string(), "app".to_string()];
        ctx.set_host(Some(HostVars { name: "a", address: "b", roles: &roles, options: options(), index: 1 }));
        assert_eq!(t.render(id, &ctx).unwrap(), "web,app|web,app|web app");
    }

    #[test]
    fn quote_is_shell_safe() {
        let rendered = render("{{quote vars.note}}").unwrap();
        let out = std::process::Command::new("sh").arg("-c").arg(format!("printf %s {rendered}")).output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "it's \"done\" $HOME `x`");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = Templates::new().compile("echo {{host.name").unwrap_err();
        assert_eq!(e, SyntaxError { message: "`{{host.name` is not closed".into(), offset: Some(5) });
        let e = Templates::new().compile("a {{#if x}} b {{/each}}").unwrap_err();
        assert_eq!(e.message, "`{{#if}}` is closed by `{{/each}}`");
    }

    #[test]
    fn a_context_without_host_refuses_host_variables() {
        let mut ctx = context();
        ctx.set_host(None);
        let mut t = Templates::new();
        let id = t.compile("{{host.name}}").unwrap();
        assert_eq!(t.render(id, &ctx).unwrap_err().variable.as_deref(), Some("host.name"));
    }
}
