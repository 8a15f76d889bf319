//! Values a plan writes that would only fail once a run is under way: URLs, `host:port`
//! addresses, HTTP methods and headers, and the names printed as labels. Each check
//! accepts exactly what the executor can use, so a plan that validates does not fail
//! after a node was taken out of rotation because a value was malformed.
//!
//! The graph's renderer runs these on every rendered value (a URL may be a template),
//! `checks` on the values written as they are.

use crate::diagnostic::Problem;
use crate::model::{Balancer, Plan};
use crate::text::pointer_escape;
use crate::yaml::{Span, Tree};

/// Why a value is refused, and how to write it instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    pub help: String,
}

fn invalid(message: impl Into<String>, help: impl Into<String>) -> Invalid {
    Invalid { message: message.into(), help: help.into() }
}

/// What a rendered value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// An `http`/`https` URL with a host, as the HTTP client sends it.
    HttpUrl,
    /// `host:port`, as a TCP connect takes it.
    HostPort,
    /// An HTTP method: a token, such as `POST`.
    Method,
    /// An HTTP header's value.
    HeaderValue,
    /// A name printed as a label in output (a node): no control characters.
    Label,
}

impl ValueKind {
    pub fn check(self, value: &str) -> Result<(), Invalid> {
        match self {
            ValueKind::HttpUrl => http_url(value),
            ValueKind::HostPort => host_port(value),
            ValueKind::Method => http_method(value),
            ValueKind::HeaderValue => header_value(value),
            ValueKind::Label => label(value),
        }
    }
}

/// Whether `value` goes through the template engine: only then can its checks wait
/// until it is rendered for each host.
pub fn templated(value: &str) -> bool {
    value.contains("{{") || value.contains("}}")
}

/// `value` as it can be shown in a message: control characters escaped, so a hostile
/// value cannot paint the terminal, and bounded, so a huge one does not fill it.
pub fn shown(value: &str) -> String {
    const MAX: usize = 120;
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if is_terminal_control(c) { out.extend(c.escape_default()) } else { out.push(c) }
    }
    out
}

use crate::text::is_terminal_control;

/// A name printed as a label in output: a server, role, step, balancer, node.
pub fn label(value: &str) -> Result<(), Invalid> {
    match value.chars().find(|&c| is_terminal_control(c)) {
        Some(c) => Err(invalid(
            format!("`{}` contains the control character {}", shown(value), c.escape_unicode()),
            "names are printed in the output, where a control character could rewrite what is shown: remove it",
        )),
        None => Ok(()),
    }
}

/// An URL the HTTP client can request: it parses, is `http` or `https`, names a host.
pub fn http_url(value: &str) -> Result<(), Invalid> {
    const HELP: &str = "write a full URL, such as `http://10.0.0.2:8080/health`";
    // The URL parser silently drops tabs and newlines; a URL with them is a mistake.
    if value.chars().any(char::is_control) {
        return Err(invalid(format!("`{}` is not a valid URL: it contains a control character", shown(value)), HELP));
    }
    let url =
        url::Url::parse(value).map_err(|e| invalid(format!("`{}` is not a valid URL: {e}", shown(value)), HELP))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            format!("`{}` is not an `http` or `https` URL", shown(value)),
            format!("planrun speaks HTTP only: write `http://` or `https://` instead of `{}:`", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("`{}` names no host", shown(value)), HELP));
    }
    Ok(())
}

/// `host:port` with a port from 1 to 65535, as a TCP connect takes it.
pub fn host_port(value: &str) -> Result<(), Invalid> {
    const HELP: &str = "write `host:port`, such as `10.0.0.2:8080` or `[::1]:8080`";
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(invalid(format!("`{}` has no port", shown(value)), HELP));
    };
    if host.is_empty() || host == "[]" {
        return Err(invalid(format!("`{}` has no host", shown(value)), HELP));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        return Err(invalid(format!("`{}` is not a host name or address", shown(host)), HELP));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => {
            Err(invalid(format!("`{}`: `{}` is not a port (1 to 65535)", shown(value), shown(port)), HELP))
        }
        Ok(_) => Ok(()),
    }
}

/// An HTTP method: a token of the characters HTTP allows, such as `POST` or `PATCH`.
pub fn http_method(value: &str) -> Result<(), Invalid> {
    match http::Method::from_bytes(value.as_bytes()) {
        Ok(_) => Ok(()),
        Err(_) => Err(invalid(
            format!("`{}` is not an HTTP method", shown(value)),
            "write a method such as `POST`, `PUT` or `DELETE`: letters, without spaces",
        )),
    }
}

/// An HTTP header name.
pub fn header_name(value: &str) -> Result<(), Invalid> {
    match http::HeaderName::from_bytes(value.as_bytes()) {
        Ok(_) => Ok(()),
        Err(_) => Err(invalid(
            format!("`{}` is not an HTTP header name", shown(value)),
            "a header name is letters, digits and `-`, such as `Authorization`",
        )),
    }
}

/// An HTTP header value: no control characters but tab.
pub fn header_value(value: &str) -> Result<(), Invalid> {
    match http::HeaderValue::from_str(value) {
        Ok(_) => Ok(()),
        Err(_) => Err(invalid(
            format!("the header value `{}` contains a control character", shown(value)),
            "header values are one line of text: remove newlines and other control characters",
        )),
    }
}

/// The values of a plan written as they are: the names printed as labels, header
/// names, a Linode API URL, and every URL, address, method, header value and node
/// written without a template, whether a run would use it or not. Templated values are
/// checked by the graph's renderer, as rendered for each host. One pass over the plan,
/// linear in its size.
pub(crate) fn check_plan_values(plan: &Plan, root: &Tree, problems: &mut Vec<Problem>) {
    let value_at = |pointer: &str| root.span_at(pointer);
    let key_at = |pointer: &str| root.key_span(pointer).unwrap_or_else(|| root.span_at(pointer));
    // The span is found only for a value that is refused: walking the tree for every
    // server's fields would cost more than checking them.
    let mut refuse = |span: &dyn Fn() -> Span, what: &str, checked: Result<(), Invalid>| {
        if let Err(invalid) = checked {
            problems.push(
                Problem::at(span(), format!("{what}: {}", invalid.message)).label("invalid value").help(invalid.help),
            );
        }
    };
    refuse(&|| value_at("/application"), "the application name", label(&plan.application));
    for (i, server) in plan.servers.iter().enumerate() {
        refuse(&|| value_at(&format!("/servers/{i}/host")), "a server's host", label(&server.host));
        if let Some(name) = &server.name {
            refuse(&|| value_at(&format!("/servers/{i}/name")), "a server's name", label(name));
        }
        for (k, role) in server.roles.iter().enumerate() {
            refuse(&|| value_at(&format!("/servers/{i}/roles/{k}")), "a role", label(role));
        }
    }
    for (list, steps) in plan.step_lists() {
        for (i, step) in steps.iter().enumerate() {
            // A step's name is held to a pattern by the schema already.
            let owner = format!("step `{}`", shown(&step.name));
            let mut written = |pointer: String, kind: ValueKind, value: &str| {
                if !templated(value) {
                    refuse(&|| value_at(&pointer), &owner, kind.check(value));
                }
            };
            if let Some(b) = &step.balancer {
                written(format!("{list}/{i}/balancer/node"), ValueKind::Label, &b.node);
            }
            if let Some(w) = &step.wait {
                let at = format!("{list}/{i}/wait");
                let fields = [
                    ("http", ValueKind::HttpUrl, &w.http),
                    ("tcp", ValueKind::HostPort, &w.tcp),
                    ("node", ValueKind::Label, &w.node),
                ];
                for (field, kind, value) in fields {
                    if let Some(value) = value {
                        written(format!("{at}/{field}"), kind, value);
                    }
                }
            }
        }
    }
    for (name, balancer) in &plan.balancers {
        let at = format!("/balancers/{}", pointer_escape(name));
        refuse(&|| key_at(&at), "a balancer name", label(name));
        let owner = format!("balancer `{}`", shown(name));
        match balancer {
            Balancer::Haproxy(h) => refuse(&|| value_at(&format!("{at}/backend")), &owner, label(&h.backend)),
            Balancer::Linode(l) => {
                refuse(&|| value_at(&format!("{at}/label")), &owner, label(&l.label));
                if let Some(url) = &l.api_url {
                    refuse(&|| value_at(&format!("{at}/api_url")), &owner, http_url(url));
                }
            }
            Balancer::Http(h) => {
                let requests = [
                    ("reject", Some(&h.reject)),
                    ("drain", h.drain.as_ref()),
                    ("accept", Some(&h.accept)),
                    ("status", h.status.as_ref()),
                ];
                for (which, request) in requests {
                    let Some(request) = request else { continue };
                    let at = format!("{at}/{which}");
                    let mut written = |pointer: String, kind: ValueKind, value: &str| {
                        if !templated(value) {
                            refuse(&|| value_at(&pointer), &owner, kind.check(value));
                        }
                    };
                    if let Some(method) = &request.method {
                        written(format!("{at}/method"), ValueKind::Method, method);
                    }
                    written(format!("{at}/url"), ValueKind::HttpUrl, &request.url);
                    for (header, value) in &request.headers {
                        written(format!("{at}/headers/{}", pointer_escape(header)), ValueKind::HeaderValue, value);
                    }
                    for header in request.headers.keys() {
                        let pointer = format!("{at}/headers/{}", pointer_escape(header));
                        refuse(&|| key_at(&pointer), &owner, header_name(header));
                    }
                }
            }
            Balancer::Command(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_the_client_can_request_pass() {
        for ok in ["http://10.0.0.2:8080/health", "https://lb.example.com/api/nodes/a%20b", "http://[::1]:80/"] {
            assert_eq!(http_url(ok), Ok(()), "{ok}");
        }
        for bad in
            ["not a url", "ftp://10.0.0.2/x", "htp:/broken url/10.0.0.2", "http://", "http://a b/", "http://x/\n"]
        {
            assert!(http_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_port_needs_a_host_and_a_real_port() {
        for ok in ["10.0.0.2:80", "db.internal:5432", "[::1]:8080", "localhost:65535"] {
            assert_eq!(host_port(ok), Ok(()), "{ok}");
        }
        for bad in ["nohostport", ":80", "a:0", "a:65536", "a:http", "a b:80", "a:"] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn methods_are_tokens() {
        assert_eq!(http_method("PATCH"), Ok(()));
        assert!(http_method("GE T").is_err());
        assert!(http_method("").is_err());
    }

    #[test]
    fn labels_refuse_every_control_character() {
        assert_eq!(label("app-1.example/β"), Ok(()));
        for bad in ["a\0b", "a\u{1b}[2K", "a\nb", "a\rb", "a\u{7f}", "a\u{85}", "a\u{9b}", "a\u{202e}b", "\t"] {
            let e = label(bad).unwrap_err();
            assert!(!e.message.chars().any(is_terminal_control), "{:?}", e.message);
        }
    }
}
