//! The load balancers a plan names, one variant per kind.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::duration::HumanDuration;
use crate::model::examples::headers_example;

/// A load balancer planrun can take nodes out of and put back into rotation.
// A plan holds a handful of balancers; boxing variants would only make matching clumsy.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
#[schemars(transform = document_kind)]
pub enum Balancer {
    /// A Linode NodeBalancer, driven through the Linode API v4.
    Linode(LinodeBalancer),
    /// HAProxy, driven through its runtime API (stats socket at level admin).
    Haproxy(HaproxyBalancer),
    /// Any balancer with an HTTP API: a templated request per action.
    Http(HttpBalancer),
    /// A command on the machine running planrun per action.
    Command(CommandBalancer),
}

/// The tag `kind` that serde adds has no doc comment of its own: editors would show
/// nothing on hover. Each variant's `kind` gets a title, what the tag decides, and the
/// variant's own description.
fn document_kind(schema: &mut schemars::Schema) {
    let Some(serde_json::Value::Array(variants)) = schema.get_mut("oneOf") else { return };
    let kinds: Vec<String> = variants
        .iter()
        .filter_map(|v| v.pointer("/properties/kind/const").and_then(serde_json::Value::as_str).map(String::from))
        .collect();
    let kinds = crate::text::backticked_list(&kinds);
    for variant in variants {
        let about = variant.get("description").and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
        let Some(serde_json::Value::Object(kind)) = variant.pointer_mut("/properties/kind") else { continue };
        let name = kind.get("const").cloned().unwrap_or_default();
        let description = format!(
            "Which balancer this is: {kinds}. The kind decides the other fields.\n\n`{}`: {about}",
            name.as_str().unwrap_or_default()
        );
        kind.insert("title".into(), "Balancer kind".into());
        kind.insert("description".into(), description.into());
        kind.insert("examples".into(), serde_json::json!([name]));
    }
}

impl Balancer {
    pub fn kind(&self) -> &'static str {
        match self {
            Balancer::Linode(_) => "linode",
            Balancer::Haproxy(_) => "haproxy",
            Balancer::Http(_) => "http",
            Balancer::Command(_) => "command",
        }
    }
}

/// Linode NodeBalancer settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinodeBalancer {
    /// # API token variable
    ///
    /// The environment variable holding the Linode API token. It must be set when the plan
    /// is applied; its value is a secret and never printed.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"), example = &"LINODE_TOKEN")]
    pub token_env: String,

    /// # NodeBalancer label
    ///
    /// The NodeBalancer's label, as shown in the Linode Cloud Manager.
    #[schemars(length(min = 1), example = &"NodebalancerConfiguration")]
    pub label: String,

    /// # NodeBalancer port
    ///
    /// The port of the NodeBalancer configuration whose nodes the steps change.
    #[schemars(range(min = 1, max = 65535), example = 80)]
    pub port: u16,

    /// # API URL
    ///
    /// The API's base URL. Defaults to `https://api.linode.com/v4`; set it for a proxy or
    /// a test server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"https://api.linode.com/v4")]
    pub api_url: Option<String>,

    /// # Drain time
    ///
    /// Linode reports no connection counts, so a `drain` lasts this long. Defaults to `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"30s")]
    pub drain_timeout: Option<HumanDuration>,
}

/// HAProxy runtime API settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HaproxyBalancer {
    /// # Runtime API socket
    ///
    /// The runtime API socket: `tcp://HOST:PORT` or `unix:///PATH`.
    #[schemars(regex(pattern = r"^(tcp://.+:[0-9]+|unix:///.+)$"), example = &"unix:///run/haproxy/admin.sock")]
    pub socket: String,

    /// # Backend
    ///
    /// The HAProxy backend holding the servers.
    #[schemars(length(min = 1), example = &"app")]
    pub backend: String,
}

/// Per-action HTTP requests for a balancer with an HTTP API.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpBalancer {
    /// # Reject request
    ///
    /// The request that stops new connections to `{{node}}`.
    pub reject: HttpRequest,
    /// # Drain request
    ///
    /// The request that lets `{{node}}`'s open connections finish. Defaults to `reject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<HttpRequest>,
    /// # Accept request
    ///
    /// The request that puts `{{node}}` back into rotation.
    pub accept: HttpRequest,
    /// # Status request
    ///
    /// A request whose 2xx answer means `{{node}}` is up in the balancer (for
    /// `balancer_up` waits and pre-flight). Without it the balancer's view is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<HttpRequest>,
}

/// An HTTP request; every string is a template with `{{node}}` in its context.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    /// # HTTP method
    ///
    /// The HTTP method. Defaults to `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"POST")]
    pub method: Option<String>,
    /// # URL
    ///
    /// The URL.
    #[schemars(length(min = 1), example = &"http://127.0.0.1:9000/nodes/{{node}}/disable")]
    pub url: String,
    /// # Headers
    ///
    /// Request headers.
    #[serde(default)]
    #[schemars(example = headers_example())]
    pub headers: IndexMap<String, String>,
    /// # Body
    ///
    /// The request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"{\"node\": \"{{node}}\"}")]
    pub body: Option<String>,
}

/// Per-action commands, run on the machine running planrun, with `{{node}}` in their
/// template context.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandBalancer {
    /// # Reject command
    ///
    /// The command that stops new connections to `{{node}}`.
    #[schemars(length(min = 1), example = &"lbctl disable {{node}}")]
    pub reject: String,
    /// # Drain command
    ///
    /// The command that lets `{{node}}`'s open connections finish. Defaults to `reject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"lbctl drain {{node}}")]
    pub drain: Option<String>,
    /// # Accept command
    ///
    /// The command that puts `{{node}}` back into rotation.
    #[schemars(length(min = 1), example = &"lbctl enable {{node}}")]
    pub accept: String,
    /// # Status command
    ///
    /// A command that exits 0 when `{{node}}` is up in the balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"lbctl status {{node}} | grep -q UP")]
    pub status: Option<String>,
}
