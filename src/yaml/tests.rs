//! The loader's tests: positions, limits and merges, apart from the loader so
//! both stay readable.

use super::*;

fn load_str(src: &str) -> Result<Node, LoadError> {
    load(src.as_bytes(), &Limits::default())
}

fn ok(src: &str) -> Node {
    load_str(src).unwrap_or_else(|e| panic!("{src:?} failed: {e:?}"))
}

fn err(src: &str) -> LoadError {
    match load_str(src) {
        Ok(node) => panic!("{src:?} loaded: {:?}", node.to_json()),
        Err(e) => e,
    }
}

/// (line, column, text under the span)
fn at(src: &str, span: Span) -> (usize, usize, &str) {
    (span.line, span.column, &src[span.offset..span.offset + span.len])
}

const PLAN: &str = "\
name: web
servers:
  - host: a.example
    port: 22
  - host: b.example
    optons: {private_ip: 10.0.0.2}
timeout: 90s
";

#[test]
fn scalar_key_and_item_positions() {
    let root = ok(PLAN);
    let Value::Map(entries) = &root.value else { panic!("root is not a map") };
    assert_eq!(at(PLAN, entries[0].0.span), (1, 1, "name"));
    assert_eq!(at(PLAN, entries[0].1.span), (1, 7, "web"));
    assert_eq!(at(PLAN, entries[1].0.span), (2, 1, "servers"));
    let servers = root.pointer("/servers").unwrap();
    let Value::Seq(items) = &servers.value else { panic!("servers is not a seq") };
    // A block item's mapping starts at its first key, not at the dash.
    assert_eq!((items[0].span.line, items[0].span.column), (3, 5));
    assert_eq!((items[1].span.line, items[1].span.column), (5, 5));
    assert!(at(PLAN, items[1].span).2.ends_with("10.0.0.2}"));
    assert_eq!(at(PLAN, root.pointer("/servers/0/port").unwrap().span), (4, 11, "22"));
    let ip = root.pointer("/servers/1/optons/private_ip").unwrap();
    assert_eq!(at(PLAN, ip.span), (6, 26, "10.0.0.2"));
    assert_eq!(at(PLAN, root.pointer("/timeout").unwrap().span), (7, 10, "90s"));
    assert_eq!(root.span.offset, 0);
}

#[test]
fn quoted_and_block_scalar_spans() {
    let src = "a: \"x y\"\nb: 'z'\nc: |\n  lit\n  more\nd: plain\n  continued\ne:\n";
    let root = ok(src);
    assert_eq!(at(src, root.pointer("/a").unwrap().span), (1, 4, "\"x y\""));
    assert_eq!(at(src, root.pointer("/b").unwrap().span), (2, 4, "'z'"));
    assert_eq!(at(src, root.pointer("/c").unwrap().span), (4, 3, "lit\n  more"));
    assert_eq!(at(src, root.pointer("/d").unwrap().span), (6, 4, "plain\n  continued"));
    // An omitted value sits right after its key, not on the next line.
    let e = root.pointer("/e").unwrap();
    assert_eq!(e.value, Value::Null);
    assert_eq!((e.span.line, e.span.column, e.span.len), (8, 2, 0));
}

#[test]
fn non_ascii_offsets_are_bytes_and_columns_are_chars() {
    let src = "name: \"h\u{e9}llo\"\nk\u{f6}y: [\u{fc}, x]\nbad: \"open\n";
    match err(src) {
        LoadError::Syntax { span, .. } => {
            assert_eq!((span.line, span.column), (3, 6));
            assert_eq!(&src[span.offset..span.offset + span.len], "\"");
        }
        e => panic!("{e:?}"),
    }
    let src = "name: \"h\u{e9}llo\"\nk\u{f6}y: [\u{fc}, x]\n";
    let root = ok(src);
    assert_eq!(at(src, root.pointer("/name").unwrap().span), (1, 7, "\"h\u{e9}llo\""));
    assert_eq!(at(src, root.key_span("/k\u{f6}y").unwrap()), (2, 1, "k\u{f6}y"));
    assert_eq!(at(src, root.pointer("/k\u{f6}y/1").unwrap().span), (2, 10, "x"));
    // Past the 64-character checkpoint stride, with multi-byte text before it.
    let long = format!("a: \"{}\"\nb: here\n", "\u{e9}".repeat(200));
    let root = ok(&long);
    assert_eq!(at(&long, root.pointer("/b").unwrap().span), (2, 4, "here"));
}

#[test]
fn pointer_key_span_and_span_at() {
    let root = ok(PLAN);
    assert_eq!(root.pointer("").unwrap().span, root.span);
    assert!(root.pointer("/servers/2").is_none());
    assert!(root.pointer("/servers/01").is_none());
    assert!(root.pointer("servers").is_none());
    assert!(root.pointer("/name/x").is_none());
    assert_eq!(at(PLAN, root.key_span("/servers/1/optons").unwrap()), (6, 5, "optons"));
    assert_eq!(root.key_span("/servers/1/options"), None);
    assert_eq!(root.key_span("/servers/0"), None);
    assert_eq!(root.key_span(""), None);
    // Missing leaf: the nearest ancestor that exists.
    let span = root.span_at("/servers/1/options/private_ip");
    assert_eq!((span.line, span.column), (5, 5));
    assert_eq!(at(PLAN, root.span_at("/servers/0/host")), (3, 11, "a.example"));
    assert_eq!(root.span_at("not a pointer"), root.span);

    let src = "\"a/b\": 1\n\"m~n\": 2\n";
    let root = ok(src);
    assert_eq!(root.pointer("/a~1b").unwrap().value, Value::Int(1));
    assert_eq!(root.pointer("/m~0n").unwrap().value, Value::Int(2));
}

#[test]
fn to_json_keeps_order_and_ints() {
    let root = ok("z: 1\na: [1.5, true, ~, \"2\"]\nm: {y: 0x10, b: .inf}\n");
    assert_eq!(
        serde_json::to_string(&root.to_json()).unwrap(),
        r#"{"z":1,"a":[1.5,true,null,"2"],"m":{"y":16,"b":".inf"}}"#
    );
}

#[test]
fn core_schema_resolution() {
    let cases: &[(&str, Value)] = &[
        ("~", Value::Null),
        ("null", Value::Null),
        ("NULL", Value::Null),
        ("true", Value::Bool(true)),
        ("True", Value::Bool(true)),
        ("FALSE", Value::Bool(false)),
        ("yes", Value::String("yes".into())),
        ("1", Value::Int(1)),
        ("-17", Value::Int(-17)),
        ("+3", Value::Int(3)),
        ("0x1F", Value::Int(31)),
        ("0o17", Value::Int(15)),
        ("012", Value::Int(12)),
        ("1.5", Value::Float(1.5)),
        ("-.5", Value::Float(-0.5)),
        ("1e3", Value::Float(1000.0)),
        ("2.", Value::Float(2.0)),
        ("-.inf", Value::Float(f64::NEG_INFINITY)),
        (".Inf", Value::Float(f64::INFINITY)),
        ("90s", Value::String("90s".into())),
        ("1.2.3", Value::String("1.2.3".into())),
        ("0x", Value::String("0x".into())),
        ("0b101", Value::String("0b101".into())),
        (".", Value::String(".".into())),
        ("1e", Value::String("1e".into())),
        ("99999999999999999999", Value::String("99999999999999999999".into())),
        ("\"1\"", Value::String("1".into())),
        ("'true'", Value::String("true".into())),
        ("\"\"", Value::String("".into())),
        ("!!str 1", Value::String("1".into())),
        ("!!float 1", Value::Float(1.0)),
        ("!!int \"7\"", Value::Int(7)),
    ];
    for (text, want) in cases {
        let src = format!("v: {text}\n");
        let got = ok(&src).pointer("/v").unwrap().value.clone();
        assert_eq!(&got, want, "{text}");
        let span = ok(&src).pointer("/v").unwrap().span;
        assert_eq!(&src[span.offset..span.offset + span.len], *text);
    }
    match ok("v: .nan\n").pointer("/v").unwrap().value {
        Value::Float(f) => assert!(f.is_nan()),
        ref v => panic!("{v:?}"),
    }
    assert!(matches!(err("v: !!int abc\n"), LoadError::TagMismatch { .. }));
    match err("v: !custom x\n") {
        LoadError::UnsupportedTag { tag, span } => {
            assert_eq!(tag, "!custom");
            assert_eq!((span.line, span.column), (1, 4));
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(err("v: !!map [1]\n"), LoadError::UnsupportedTag { .. }));
    // Keys keep their text as written.
    assert!(ok("1: a\n0x10: b\n").pointer("/0x10").is_some());
}

#[test]
fn duplicate_keys_point_at_the_second() {
    let src = "name: a\nport: 1\nname: b\n";
    match err(src) {
        e @ LoadError::DuplicateKey { .. } => {
            assert!(e.to_string().contains("line 1"), "{e}");
            let LoadError::DuplicateKey { key, span, first } = e else { unreachable!() };
            assert_eq!(key, "name");
            assert_eq!(at(src, span), (3, 1, "name"));
            assert_eq!(at(src, first), (1, 1, "name"));
        }
        e => panic!("{e:?}"),
    }
    match err("a: {x: 1, x: 2}\n") {
        LoadError::DuplicateKey { span, .. } => assert_eq!((span.line, span.column), (1, 11)),
        e => panic!("{e:?}"),
    }
    // Same name in different maps is fine.
    ok("a: {x: 1}\nb: {x: 2}\n");
}

#[test]
fn non_scalar_keys_and_unknown_anchors() {
    match err("? [a]\n: b\n") {
        LoadError::NonScalarKey { span } => assert_eq!((span.line, span.column), (1, 3)),
        e => panic!("{e:?}"),
    }
    assert!(matches!(err("{{a: 1}: b}\n"), LoadError::NonScalarKey { .. }));
    assert!(matches!(err("x: &m {a: 1}\n? *m\n: 2\n"), LoadError::NonScalarKey { .. }));
    match err("a: 1\nb: *nope\n") {
        LoadError::UnknownAnchor { span } => assert_eq!((span.line, span.column), (2, 4)),
        e => panic!("{e:?}"),
    }
}

#[test]
fn aliases_are_expanded() {
    let src = "base: &b {user: deploy, port: 22}\nweb: *b\nport: &p 8080\nalt: *p\n";
    let root = ok(src);
    assert_eq!(root.pointer("/web").unwrap().to_json(), root.pointer("/base").unwrap().to_json());
    assert_eq!(root.pointer("/alt").unwrap().value, Value::Int(8080));
    assert_eq!(at(src, root.pointer("/web").unwrap().span), (2, 6, "*b"));
    // An alias that would push the tree past the depth limit is refused.
    let limits = Limits { max_depth: 3, ..Limits::default() };
    let deep = load(b"a: &a [[1]]\nb: [*a]\n", &limits).unwrap_err();
    assert!(matches!(deep, LoadError::TooDeep { limit: 3, .. }), "{deep:?}");
}

#[test]
fn billion_laughs_stops_at_the_node_limit() {
    let mut src = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let (prev, name) = (pair[0], pair[1]);
        let refs = vec![format!("*{prev}"); 9].join(", ");
        src.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    // Finishes quickly by construction: nothing past `max_nodes` is ever copied.
    match err(&src) {
        LoadError::TooManyNodes { limit, span } => {
            assert_eq!(limit, 1_000_000);
            assert_eq!(&src[span.offset..span.offset + span.len], "*");
        }
        e => panic!("{e:?}"),
    }
    let small = Limits { max_nodes: 50, ..Limits::default() };
    let e = load(b"a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: [*a, *a, *a, *a]\n", &small);
    match e {
        Err(LoadError::TooManyNodes { span, .. }) => {
            assert_eq!((span.line, span.column), (2, 17));
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn deep_flow_nesting_is_too_deep_not_a_stack_overflow() {
    let src = "[".repeat(10_000);
    match err(&src) {
        LoadError::TooDeep { limit, span } => {
            assert_eq!(limit, 128);
            assert_eq!((span.line, span.column, span.offset, span.len), (1, 129, 128, 1));
        }
        e => panic!("{e:?}"),
    }
    let src = format!("a:\n  b: {}\n", "{x: ".repeat(10_000));
    match err(&src) {
        LoadError::TooDeep { span, .. } => {
            assert_eq!((span.line, span.column), (2, 6 + 4 * 126))
        }
        e => panic!("{e:?}"),
    }
    // Beyond saphyr's own 255-level flow cap, with a limit that does not trip first.
    let limits = Limits { max_depth: 1_000, ..Limits::default() };
    match load("[".repeat(10_000).as_bytes(), &limits) {
        Err(LoadError::Syntax { span, .. }) => assert_eq!(span.column, 256),
        e => panic!("{e:?}"),
    }
}

#[test]
fn deep_block_nesting_is_too_deep() {
    let mut src = String::new();
    for depth in 0..10_000 {
        src.push_str(&" ".repeat(depth));
        src.push_str("k:\n");
    }
    let limits = Limits { max_bytes: usize::MAX, ..Limits::default() };
    match load(src.as_bytes(), &limits) {
        Err(LoadError::TooDeep { span, .. }) => {
            assert_eq!((span.line, span.column), (129, 129))
        }
        e => panic!("{e:?}"),
    }
    let src = "- ".repeat(10_000) + "x\n";
    match err(&src) {
        LoadError::TooDeep { span, .. } => assert_eq!((span.line, span.column), (1, 257)),
        e => panic!("{e:?}"),
    }
}

#[test]
fn saphyr_event_stream_does_not_recurse_on_block_depth() {
    // The depth limit protects our tree; this checks the parser underneath holds up on its
    // own when events are pulled one at a time (its `load` method would recurse).
    let src = "- ".repeat(10_000) + "x\n";
    let mut parser = Parser::new_from_str(&src);
    let mut events = 0;
    while let Some(event) = parser.next_event() {
        event.unwrap();
        events += 1;
    }
    assert_eq!(events, 2 * 10_000 + 5);
}

#[test]
fn oversized_input_is_rejected_before_parsing() {
    let huge = vec![b'['; 100 << 20];
    match load(&huge, &Limits::default()) {
        Err(LoadError::TooLarge { size, limit }) => {
            assert_eq!(size, 100 << 20);
            assert_eq!(limit, 4 << 20);
        }
        e => panic!("{e:?}"),
    }
    drop(huge);
    let limits = Limits { max_bytes: 8, ..Limits::default() };
    assert!(matches!(load(b"a: 123456", &limits), Err(LoadError::TooLarge { size: 9, .. })));
    assert!(load(b"a: 12345", &limits).is_ok());
}

#[test]
fn invalid_utf8_reports_the_first_bad_byte() {
    let src = b"name: ok\nbad: \"\xc3\xa9\xff\"\n";
    match load(src, &Limits::default()) {
        Err(LoadError::NotUtf8 { offset, line, column, .. }) => {
            assert_eq!((offset, line, column), (17, 2, 8));
        }
        e => panic!("{e:?}"),
    }
    match load(b"a: 1\r\nb: \x80", &Limits::default()) {
        Err(LoadError::NotUtf8 { line, column, .. }) => assert_eq!((line, column), (2, 4)),
        e => panic!("{e:?}"),
    }
}

#[test]
fn empty_plans() {
    for src in ["", "\n\n", "# just a comment\n  # another\n", "---\n", "--- # c\n...\n"] {
        assert!(matches!(err(src), LoadError::Empty), "{src:?}");
    }
    assert_eq!(err("").to_string(), "the plan is empty; add the plan's settings");
    assert_eq!(ok("~\n").value, Value::Null);
}

#[test]
fn syntax_error_positions() {
    let cases: &[(&str, usize, usize)] = &[
        // Unclosed quote: reported at the opening quote.
        ("a: 1\nb: \"abc\n", 2, 4),
        // Dedent to a column no mapping is at.
        ("a:\n  b: 1\n c: 2\n", 3, 2),
        // Tab used for indentation.
        ("a:\n\tb: 1\n", 2, 2),
        // Unclosed flow sequence.
        ("a: [1, 2\nb: 3\n", 2, 2),
    ];
    for (src, line, column) in cases {
        match err(src) {
            LoadError::Syntax { span, message } => {
                assert_eq!((span.line, span.column), (*line, *column), "{src:?}: {message}");
                assert!(span.len >= 1);
            }
            e => panic!("{src:?}: {e:?}"),
        }
    }
}

#[test]
fn merge_keys() {
    let src = "\
defaults: &d {user: deploy, port: 22}
extra: &e {port: 2222, shell: bash}
web:
  host: a
  <<: *d
  port: 2200
many:
  <<: [*d, *e]
quoted:
  \"<<\": *d
";
    let root = ok(src);
    assert_eq!(
        serde_json::to_string(&root.pointer("/web").unwrap().to_json()).unwrap(),
        r#"{"host":"a","user":"deploy","port":2200}"#
    );
    assert_eq!(
        serde_json::to_string(&root.pointer("/many").unwrap().to_json()).unwrap(),
        r#"{"user":"deploy","port":22,"shell":"bash"}"#
    );
    assert!(root.pointer("/quoted/<<").is_some());
    match err("a: &a 1\nb:\n  <<: *a\n") {
        LoadError::InvalidMerge { span } => assert_eq!((span.line, span.column), (3, 7)),
        e => panic!("{e:?}"),
    }
    assert!(matches!(err("b:\n  <<: [{a: 1}, 2]\n"), LoadError::InvalidMerge { .. }));
}

#[test]
fn overlay_merges_maps_replaces_lists_and_keeps_each_file() {
    let base = load_file(b"a: {x: 1, y: [1, 2]}\nb: base\nc: {deep: {k: 1}}\n", &Limits::default(), 1).unwrap();
    let child = ok("c: {deep: {j: 2}}\na: {y: [3]}\nd: new\n");
    let merged = overlay(base, child);
    assert_eq!(
        serde_json::to_string(&merged.to_json()).unwrap(),
        r#"{"a":{"x":1,"y":[3]},"b":"base","c":{"deep":{"k":1,"j":2}},"d":"new"}"#
    );
    // Values from the base point into the base file, the child's into the child.
    assert_eq!(merged.span_at("/a/x").file, 1);
    assert_eq!(merged.span_at("/b").file, 1);
    assert_eq!(merged.span_at("/a/y").file, 0);
    assert_eq!(merged.span_at("/c/deep/j").file, 0);
    assert_eq!(merged.span_at("/c/deep/k").file, 1);
    assert_eq!(merged.key_span("/a/x").map(|s| s.file), Some(1));
    // A scalar in the child replaces a map in the base, and the other way round.
    let base = ok("a: {x: 1}\n");
    assert_eq!(overlay(base, ok("a: 2\n")).to_json(), serde_json::json!({"a": 2}));
    assert_eq!(overlay(ok("a: 2\n"), ok("a: {x: 1}\n")).to_json(), serde_json::json!({"a": {"x": 1}}));
    assert_eq!(ok("a: {b: [1, 2]}\n").count(), 7);
}

#[test]
fn multiple_documents_are_refused_at_the_second() {
    match err("a: 1\n---\nb: 2\n") {
        LoadError::MultipleDocuments { span } => assert_eq!((span.line, span.column), (2, 1)),
        e => panic!("{e:?}"),
    }
    match err("---\na: 1\n...\n---\nb: 2\n") {
        LoadError::MultipleDocuments { span } => assert_eq!((span.line, span.column), (4, 1)),
        e => panic!("{e:?}"),
    }
    assert!(ok("---\na: 1\n...\n").pointer("/a").is_some());
}

/// Small deterministic xorshift so the property loop needs no extra dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn never_panics_on_mangled_input() {
    let plan =
        format!("{PLAN}anchors: &x {{a: [1, 2, {{b: \"q\"}}]}}\nuse:\n  <<: *x\n  lit: |\n    t\u{e9}xt\n  - 'bad\n");
    let limits = Limits { max_nodes: 10_000, ..Limits::default() };
    let bytes = plan.as_bytes();
    for cut in 0..=bytes.len() {
        let _ = load(&bytes[..cut], &limits);
    }
    let alphabet = b"[]{}:,-?&*!|>'\"#%@` \t\n\rab0\xc3\xa9\xff~<.";
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3_000 {
        let mut input = bytes.to_vec();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(input.len() + 1);
            let byte = alphabet[rng.below(alphabet.len())];
            match rng.below(3) {
                0 => input.insert(at, byte),
                1 if at < input.len() => input[at] = byte,
                _ if at < input.len() => {
                    input.remove(at);
                }
                _ => {}
            }
        }
        if let Err(e) = load(&input, &limits) {
            // Every error with a position must point inside (or just past) the input.
            if let Some(span) = e.span() {
                assert!(span.offset + span.len <= input.len(), "{e:?}");
                assert!(span.line >= 1 && span.column >= 1, "{e:?}");
            }
        }
    }
    for _ in 0..2_000 {
        let len = rng.below(40);
        let input: Vec<u8> = (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect();
        let _ = load(&input, &limits);
    }
}
