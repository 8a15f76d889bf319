//! Plans for unit tests: three local hosts behind a `command` balancer whose pool is a
//! directory, each node in rotation while its file exists.

use std::path::Path;

use crate::graph::{BuildOptions, ExecutionPlan};

pub const ROLLING: &str = r#"    - { name: reject, balancer: { use: pool, action: reject, node: "{{host.name}}" } }
    - { name: restart, run: "true" }
    - { name: accept, balancer: { use: pool, action: accept, node: "{{host.name}}", wait_up: false } }
"#;

/// Three local hosts; the pool is `dir/pool`, each node in rotation while its file exists.
pub fn plan_text(dir: &Path, steps: &str) -> String {
    let root = dir.display();
    format!(
        r#"version: 1
application: shop
lock: {{ host: local, path: "{root}/lock" }}
servers:
  - {{ host: 127.0.0.1, name: h1, transport: local, roles: [app] }}
  - {{ host: 127.0.0.2, name: h2, transport: local, roles: [app] }}
  - {{ host: 127.0.0.3, name: h3, transport: local, roles: [app] }}
balancers:
  pool:
    kind: command
    reject: rm -f {root}/pool/{{{{node}}}}
    accept: touch {root}/pool/{{{{node}}}}
    status: test -e {root}/pool/{{{{node}}}}
rollout:
  select: {{ roles: [app] }}
  batch_size: 1
  steps:
{steps}"#
    )
}

pub fn build(dir: &Path, steps: &str) -> ExecutionPlan {
    std::fs::create_dir_all(dir.join("pool")).unwrap();
    for h in ["h1", "h2", "h3"] {
        std::fs::write(dir.join("pool").join(h), "").unwrap();
    }
    let path = dir.join("plan.yaml");
    std::fs::write(&path, plan_text(dir, steps)).unwrap();
    let loaded = crate::validate::load_plan(&path).unwrap_or_else(|e| panic!("{}", e.render(false)));
    crate::graph::build(&loaded, &BuildOptions::default()).unwrap_or_else(|e| panic!("{}", e.render(false)))
}
