//! The traffic guard's checks: it watches something, its limits belong to what it
//! watches, its URL can be requested and its balancer reports per-node responses.

use crate::diagnostic::Problem;
use crate::model::duration::MAX_DURATION;
use crate::model::{Balancer, Guard, Plan};
use crate::text::{backticked_list, did_you_mean};
use crate::validate::values::http_url;
use crate::yaml::Tree;

pub(crate) fn check_guard(plan: &Plan, root: &Tree, problems: &mut Vec<Problem>) {
    let Some(guard) = &plan.guard else { return };
    let at = |field: &str| root.key_span(&format!("/guard/{field}")).unwrap_or_else(|| root.span_at("/guard"));
    if guard.http.is_none() && guard.balancer.is_none() {
        problems.push(
            Problem::at(root.span_at("/guard"), "the guard watches nothing")
                .label("no `http` and no `balancer`")
                .help("give `http: URL` (the service as users reach it), or `balancer: NAME` of an `haproxy` balancer"),
        );
    }
    if guard.max_failed.is_some() && guard.max_failed_rate.is_some() {
        problems.push(
            Problem::at(at("max_failed_rate"), "the guard has both `max_failed` and `max_failed_rate`")
                .label("one limit too many")
                .related(at("max_failed"), "the other limit")
                .help("keep one: a count of failed probes, or their share of the probes"),
        );
    }
    if guard.http.is_none() {
        let probe_fields = [
            ("max_failed", guard.max_failed.is_some()),
            ("max_failed_rate", guard.max_failed_rate.is_some()),
            ("timeout", guard.timeout.is_some()),
        ];
        for (field, set) in probe_fields {
            if set {
                problems.push(
                    Problem::at(at(field), format!("`{field}` is about the guard's probes, but it has no `http`"))
                        .label("nothing to probe")
                        .help("add `http: URL` to the guard, or remove this field"),
                );
            }
        }
    }
    if guard.balancer.is_none() && guard.max_error_rate.is_some() {
        problems.push(
            Problem::at(
                at("max_error_rate"),
                "`max_error_rate` compares a balancer's nodes, but the guard has no `balancer`",
            )
            .label("no balancer to analyse")
            .help("add `balancer: NAME` of an `haproxy` balancer, or remove this field"),
        );
    }
    if let Some(url) = &guard.http
        && let Err(invalid) = http_url(url)
    {
        problems.push(
            Problem::at(root.span_at("/guard/http"), format!("the guard's `http`: {}", invalid.message))
                .label("invalid value")
                .help(format!("{} (templates are not rendered here)", invalid.help)),
        );
    }
    check_balancer(plan, guard, root, problems);
    for (field, duration) in [("interval", guard.interval), ("timeout", guard.timeout)] {
        let Some(duration) = duration else { continue };
        let why = if duration.get().is_zero() {
            Some(("is zero", "give it a positive duration, such as `200ms`"))
        } else if duration.get() > MAX_DURATION {
            Some(("is longer than 30 days", "durations are at most `30d`; write a shorter one, such as `2s`"))
        } else {
            None
        };
        if let Some((what, help)) = why {
            problems.push(
                Problem::at(root.span_at(&format!("/guard/{field}")), format!("the guard's `{field}` {what}"))
                    .label("invalid duration")
                    .help(help),
            );
        }
    }
}

/// The balancer analysis needs per-node response counters, which only HAProxy reports.
fn check_balancer(plan: &Plan, guard: &Guard, root: &Tree, problems: &mut Vec<Problem>) {
    let Some(name) = &guard.balancer else { return };
    // Found only for a problem: finding it may rebuild the tree.
    let span = || root.span_at("/guard/balancer");
    match plan.balancers.get(name) {
        None => {
            let names: Vec<&str> = plan.balancers.keys().map(String::as_str).collect();
            let help = match did_you_mean(name, names.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None if names.is_empty() => "define it under `balancers:` at the top level".to_string(),
                None => format!("the balancers of this plan are {}", backticked_list(&names)),
            };
            problems.push(
                Problem::at(span(), format!("the guard analyses the balancer `{name}`, which is not defined"))
                    .label("unknown balancer")
                    .help(help),
            );
        }
        Some(Balancer::Haproxy(_)) => {}
        Some(other) => problems.push(
            Problem::at(span(), format!("the balancer `{name}` is of kind `{}`, which reports no per-node responses", other.kind()))
                .label("no per-node counters")
                .help("the balancer analysis reads HAProxy's `hrsp_*` counters: name an `haproxy` balancer, or probe the service with `http: URL`"),
        ),
    }
}
