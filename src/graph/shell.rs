//! What a command becomes on its way to `sh`: exported variables, sudo, quoting.
//! Kept apart from rendering because the lock and the executor quote for the shell too.

use crate::model::Sudo;

/// `command` as sent: with `env` exported, and through `sudo -n` when `sudo` is set.
/// Values are shell-quoted, so they arrive as written.
///
/// Variables travel in the command because sshd refuses SSH `setenv` for all but a few
/// names by default (`AcceptEnv`). Under sudo they go through `env` after it, since
/// sudo resets the environment. A simple command is handed to sudo as written, so a
/// sudoers rule naming it matches; anything the shell must interpret runs as `sh -c`.
pub fn wrap_command(command: &str, env: &[(String, String)], sudo: Option<&Sudo>) -> String {
    let assignments: Vec<String> = env.iter().map(|(name, value)| format!("{name}={}", shell_quote(value))).collect();
    let Some(sudo) = sudo else {
        if assignments.is_empty() {
            return command.to_string();
        }
        // `export …;` rather than `NAME=v command`: a prefix assignment reaches only the
        // first command of `a && b`.
        return format!("export {}; {command}", assignments.join(" "));
    };
    let mut out = String::from("sudo -n");
    if let Sudo::As(user) = sudo {
        out.push_str(" -u ");
        out.push_str(&shell_quote(user));
    }
    out.push_str(" --");
    if !assignments.is_empty() {
        out.push_str(" env ");
        out.push_str(&assignments.join(" "));
    }
    if is_simple_command(command) {
        out.push(' ');
        out.push_str(command.trim());
    } else {
        out.push_str(" sh -c ");
        out.push_str(&shell_quote(command));
    }
    out
}

/// Whether `command` is one program with arguments, which sudo can run itself: no
/// operators, redirections, expansions or line breaks, no leading assignment, and not
/// a shell builtin or keyword (sudo cannot run `cd` or `if`).
fn is_simple_command(command: &str) -> bool {
    const BUILTINS: &[&str] = &[
        ".", ":", "alias", "break", "case", "cd", "command", "continue", "eval", "exec", "exit", "export", "for", "if",
        "read", "readonly", "return", "set", "shift", "source", "trap", "ulimit", "umask", "unset", "until", "wait",
        "while", "!", "{",
    ];
    let command = command.trim();
    let first = command.split_whitespace().next().unwrap_or_default();
    !command.is_empty()
        && !command.contains([';', '&', '|', '<', '>', '(', ')', '$', '`', '\n', '\r', '{', '}'])
        && !first.contains('=')
        && !BUILTINS.contains(&first)
}

/// `value` as one `sh` word that arrives as written, by shlex (bare when it is safe,
/// else quoted). A NUL byte cannot travel in a command line at all (a C string ends
/// there), so it is dropped rather than cutting the command short.
pub fn shell_quote(value: &str) -> String {
    let value = if value.contains('\0') { value.replace('\0', "").into() } else { std::borrow::Cow::Borrowed(value) };
    // Without a NUL, shlex quotes every string.
    shlex::try_quote(&value).map(std::borrow::Cow::into_owned).unwrap_or_default()
}
