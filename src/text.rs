//! Small pieces of wording shared by every message planrun writes.
//!
//! Each of these was once copied into the module that needed it, and the copies drifted
//! apart; one home keeps a message about "1 host" or a list of names worded the same
//! wherever it is written.

/// `1 host`, `2 hosts`: a count with the noun that agrees with it.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `a`, `b` or `c`: for lists of valid names in messages.
pub fn backticked_list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("`{}`", s.as_ref())).collect();
    match quoted.len() {
        0 => "nothing".into(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

/// The closest of `candidates` to `word`, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A library's message made to continue a sentence: "Connection refused" after a colon
/// reads as "connection refused".
pub fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// An error with every cause after it, `: `-separated: a top-level error such as
/// reqwest's "error sending request" hides the cause that helps.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A map key as one JSON-pointer segment (RFC 6901): `~` and `/` escaped.
pub fn pointer_escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The key a JSON-pointer segment stands for.
pub fn pointer_unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

/// At most ten names, then how many more: a fleet of 10,000 is not a help text.
pub fn few(names: &[&str]) -> String {
    const SHOWN: usize = 10;
    if names.len() <= SHOWN {
        backticked_list(names)
    } else {
        format!("{} … and {} more", backticked_list(&names[..SHOWN]).replacen(" or ", ", ", 1), names.len() - SHOWN)
    }
}

/// Characters that must not reach a terminal from a plan: control characters (C0, DEL,
/// C1) move the cursor, recolour or erase a line, and bidirectional overrides reorder
/// what is shown, so either could forge a line such as "run finished: succeeded".
pub fn is_terminal_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with its terminal controls escaped (`\u{1b}`), for a message; newlines and tabs
/// too, so one problem stays one line.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(is_terminal_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_terminal_control(c) { out.extend(c.escape_default()) } else { out.push(c) }
    }
    std::borrow::Cow::Owned(out)
}

/// `text` with its terminal controls replaced by as many bytes of a visible one, so
/// that byte offsets into it stay true (a snippet of a hostile file). Line breaks and
/// tabs are kept; a carriage return, which a terminal obeys by going back over the
/// line, is a space before a newline and a newline alone (as YAML counts it).
pub fn mask_controls_keeping_offsets(text: &str) -> std::borrow::Cow<'_, str> {
    let control_here = |c: char| is_terminal_control(c) && !matches!(c, '\n' | '\t');
    if !text.chars().any(control_here) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            out.push(if chars.peek() == Some(&'\n') { ' ' } else { '\n' });
        } else if control_here(c) {
            out.push(match c.len_utf8() {
                1 => '?',
                2 => '\u{bf}',
                _ => '\u{fffd}',
            });
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_counts_read_as_sentences() {
        assert_eq!(plural(1, "host", "hosts"), "1 host");
        assert_eq!(plural(0, "host", "hosts"), "0 hosts");
        assert_eq!(backticked_list::<&str>(&[]), "nothing");
        assert_eq!(backticked_list(&["a"]), "`a`");
        assert_eq!(backticked_list(&["a", "b", "c"]), "`a`, `b` or `c`");
        assert_eq!(did_you_mean("roel", ["role", "web"]), Some("role"));
        assert_eq!(did_you_mean("x", ["role"]), None);
        assert_eq!(lower_first("Connection refused"), "connection refused");
    }

    #[test]
    fn pointer_segments_round_trip() {
        assert_eq!(pointer_escape("a/b~c"), "a~1b~0c");
        assert_eq!(pointer_unescape("a~1b~0c"), "a/b~c");
        assert_eq!(pointer_unescape("~01"), "~1");
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("optons", ["options", "roles", "host"]), Some("options"));
        assert_eq!(did_you_mean("privte_ip", ["private_ip"]), Some("private_ip"));
        assert_eq!(did_you_mean("zzz", ["options", "roles"]), None);
    }
}
