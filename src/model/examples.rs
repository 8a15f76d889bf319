//! The schema's examples, kept apart so the types read as the format they define.
//! Functions rather than literals because schemars takes expressions, and these read
//! better as YAML-shaped JSON.

use std::collections::BTreeMap;

pub(super) fn plan_example() -> serde_json::Value {
    serde_json::json!({
        "version": 1,
        "application": "shop",
        "servers": [{ "host": "10.0.0.2", "roles": ["app"] }],
        "rollout": {
            "select": { "roles": ["app"] },
            "steps": [{ "name": "restart", "run": "/etc/init.d/rainbows_{{application}} restart" }]
        }
    })
}

/// The plan an editor inserts into an empty file (yaml-language-server's
/// `defaultSnippets`): a whole plan that `planrun validate` accepts once its placeholders
/// are filled in, each placeholder numbered once so that tabbing visits each in turn.
/// The language server writes the strings as they are, unquoted, so each must read the
/// same as plain YAML.
pub(super) fn plan_snippets() -> serde_json::Value {
    serde_json::json!([{
        "label": "planrun plan",
        "description": "A plan with one server and one step; `planrun validate` checks it.",
        "body": {
            "version": 1,
            "application": "${1:shop}",
            "servers": [{ "host": "${2:10.0.0.2}", "roles": ["app"] }],
            "rollout": {
                "select": { "roles": ["app"] },
                "steps": [{ "name": "${3:restart}", "run": "${4:systemctl restart shop}" }]
            }
        }
    }])
}

pub(super) fn vars_example() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([("branch", "production")])
}

pub(super) fn servers_example() -> serde_json::Value {
    serde_json::json!([
        { "host": "10.0.0.2", "roles": ["web", "app"], "options": { "private_ip": "192.168.0.1" } },
        { "host": "10.0.0.5", "roles": ["db"], "options": { "no_release": true } }
    ])
}

pub(super) fn servers_from_example() -> serde_json::Value {
    serde_json::json!([
        { "file": "inventory.yaml" },
        { "command": "planrun inventory linode --tag shop-production", "timeout": "30s" }
    ])
}

pub(super) fn balancers_example() -> serde_json::Value {
    serde_json::json!({
        "nodebalancer": { "kind": "linode", "token_env": "LINODE_TOKEN", "label": "NodebalancerConfiguration", "port": 80 }
    })
}

pub(super) fn before_example() -> serde_json::Value {
    serde_json::json!([{ "name": "update_code", "run": "cd /srv/{{application}} && git fetch && git checkout {{vars.branch}}" }])
}

pub(super) fn after_example() -> serde_json::Value {
    serde_json::json!([{ "name": "notify", "local": "echo \"{{application}} rolled on {{rollout.hosts}} hosts\"" }])
}

pub(super) fn options_example() -> serde_json::Value {
    serde_json::json!({ "private_ip": "192.168.0.1" })
}

pub(super) fn exclude_example() -> serde_json::Value {
    serde_json::json!({ "no_release": true })
}

pub(super) fn options_when_example() -> serde_json::Value {
    serde_json::json!({ "primary": true })
}

pub(super) fn headers_example() -> serde_json::Value {
    serde_json::json!({ "X-Requested-By": "planrun" })
}

pub(super) fn batch_ramp_example() -> serde_json::Value {
    serde_json::json!([1, 2, "50%"])
}

pub(super) fn steps_example() -> serde_json::Value {
    serde_json::json!([
        { "name": "reject", "balancer": { "use": "nodebalancer", "action": "reject", "node": "{{host.options.private_ip}}:80" } },
        { "name": "restart", "run": "/etc/init.d/rainbows_{{application}} restart", "timeout": "2m" },
        { "name": "accept", "balancer": { "use": "nodebalancer", "action": "accept", "node": "{{host.options.private_ip}}:80" } },
        { "name": "wait", "wait": { "http": "http://{{host.options.private_ip}}/health", "status": 200, "successes": 2, "interval": "2s", "timeout": "90s" } }
    ])
}
