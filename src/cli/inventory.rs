//! `planrun inventory`: lists of servers from elsewhere, printed for `servers_from`.

use super::args::{AddressChoice, InventoryCommand};
use crate::exit;
use crate::inventory::linode::{self, Address, Query};

pub fn inventory(command: InventoryCommand) -> i32 {
    let InventoryCommand::Linode(args) = command;
    let Some(token) = std::env::var(&args.token_env).ok().filter(|t| !t.is_empty()) else {
        eprintln!(
            "error: the environment variable `{}` is not set\n  help: export the Linode API token in it, or name another with `--token-env`",
            args.token_env
        );
        return exit::INVALID_INPUT;
    };
    // Whatever is printed masks the token, an API error echoing it included.
    crate::redact::install(vec![token.clone()]);
    let query = Query {
        tag: args.tag,
        api_url: args.api_url,
        token,
        address: match args.address {
            AddressChoice::Public => Address::Public,
            AddressChoice::Private => Address::Private,
        },
        roles: args.roles,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::INVALID_INPUT;
        }
    };
    let notices: crate::balancer::retry::Notices = std::sync::Arc::new(|text: String| eprintln!("{text}"));
    match runtime.block_on(linode::servers(&query, Some(&notices))) {
        Ok(servers) => {
            let text = serde_json::to_string_pretty(&servers).unwrap_or_else(|_| "[]".into());
            println!("{text}");
            exit::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::ROLLOUT_FAILED
        }
    }
}
