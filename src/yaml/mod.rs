//! YAML loader producing a position-annotated tree.
//!
//! Every node and key carries a [`Span`] so later stages (schema validation, graph building) can
//! point at `file:line:column`. The loader is meant for untrusted plans: input size, nesting depth
//! and the number of nodes (after alias expansion) are all bounded, and the tree is built without
//! recursion so deep input cannot overflow the stack.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Tag};

/// Which file a span points into: 0 is the plan named on the command line, the bases it
/// `extends` follow in the order they were read. A plan merged from several files keeps every
/// node's own file, so a problem found after merging still points where the text was written.
pub type FileId = u32;

/// Byte range into the source, plus 1-based line and column (column counted in characters) of
/// its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The file the offsets are in.
    pub file: FileId,
    /// Byte offset of the start.
    pub offset: usize,
    /// Length in bytes; 0 only for nodes with no text (e.g. an omitted value).
    pub len: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

/// A loaded YAML value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A mapping key. Keys must be scalars; the name is the scalar's text as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

/// A value with the span of its source text.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

/// Resource limits applied while loading.
///
/// `max_depth` also bounds the recursion of [`Node::to_json`], `Clone` and `Drop` on the
/// resulting tree, so keep it modest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted input, in bytes.
    pub max_bytes: usize,
    /// Deepest accepted nesting of sequences and mappings.
    pub max_depth: usize,
    /// Most nodes in the tree, counting every alias expansion. Copies kept for anchors are
    /// bounded by the same number, separately.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 4 * 1024 * 1024, max_depth: 128, max_nodes: 1_000_000 }
    }
}

/// Why a plan could not be loaded.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum LoadError {
    #[error("invalid yaml: {message}; check the quoting and indentation here")]
    Syntax { message: String, span: Span },
    #[error("the plan is {size} bytes, more than the limit of {limit} bytes; split it up")]
    TooLarge { size: u64, limit: usize },
    #[error("nesting is deeper than {limit} levels; flatten the structure")]
    TooDeep { limit: usize, span: Span },
    #[error(
        "the plan expands to more than {limit} nodes (aliases are counted once per use); \
         reduce the use of aliases"
    )]
    TooManyNodes { limit: usize, span: Span },
    #[error(
        "duplicate key `{key}` (first defined on line {}); remove or rename one of them",
        first.line
    )]
    DuplicateKey { key: String, span: Span, first: Span },
    #[error("mapping keys must be plain values, not lists or mappings; use a string key")]
    NonScalarKey { span: Span },
    #[error("alias refers to an anchor that is not defined before it; define `&name` first")]
    UnknownAnchor { span: Span },
    #[error("the file holds more than one yaml document; remove the extra `---`")]
    MultipleDocuments { span: Span },
    #[error(
        "the file is not valid utf-8 (bad byte at line {line}, column {column}); \
         save it as utf-8"
    )]
    NotUtf8 { file: FileId, offset: usize, line: usize, column: usize },
    #[error("the plan is empty; add the plan's settings")]
    Empty,
    #[error("`<<` must be given a mapping or a list of mappings, e.g. `<<: *defaults`")]
    InvalidMerge { span: Span },
    #[error("tag `{tag}` is not supported; remove it (only `!!str` and core tags are allowed)")]
    UnsupportedTag { tag: String, span: Span },
    #[error("the value does not match its tag `{tag}`; fix the value or remove the tag")]
    TagMismatch { tag: String, span: Span },
}

impl LoadError {
    /// Where the error is, when it has a position.
    pub fn span(&self) -> Option<Span> {
        match self {
            LoadError::Syntax { span, .. }
            | LoadError::TooDeep { span, .. }
            | LoadError::TooManyNodes { span, .. }
            | LoadError::DuplicateKey { span, .. }
            | LoadError::NonScalarKey { span }
            | LoadError::UnknownAnchor { span }
            | LoadError::MultipleDocuments { span }
            | LoadError::InvalidMerge { span }
            | LoadError::UnsupportedTag { span, .. }
            | LoadError::TagMismatch { span, .. } => Some(*span),
            LoadError::NotUtf8 { file, offset, line, column } => {
                Some(Span { file: *file, offset: *offset, len: 1, line: *line, column: *column })
            }
            LoadError::TooLarge { .. } | LoadError::Empty => None,
        }
    }
}

/// Loads one YAML document.
///
/// Checks the size first (so huge input is never scanned), then UTF-8, then parses.
pub fn load(bytes: &[u8], limits: &Limits) -> Result<Node, LoadError> {
    load_file(bytes, limits, 0)
}

/// Loads one YAML document whose spans say they are in `file`.
pub fn load_file(bytes: &[u8], limits: &Limits, file: FileId) -> Result<Node, LoadError> {
    if bytes.len() > limits.max_bytes {
        return Err(LoadError::TooLarge { size: bytes.len() as u64, limit: limits.max_bytes });
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let offset = e.valid_up_to();
            // The prefix is valid UTF-8 by construction, so this cannot fail.
            let prefix = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
            let (line, column) = end_position(prefix);
            return Err(LoadError::NotUtf8 { file, offset, line, column });
        }
    };
    match Builder::new(text, limits, file).run() {
        Err(LoadError::Syntax { message, span }) if message == SAPHYR_FLOW_LIMIT => {
            // saphyr reads a whole flow collection ahead (it might be a key) before emitting its
            // first event, so its own 255-level cap fires before our depth check sees anything.
            // Parsing only the text before the offending bracket lets events flow and our check
            // fire at the right bracket.
            match Builder::new(&text[..span.offset], limits, file).run() {
                // A syntax error here is an artefact of cutting the text short.
                Err(e) if !matches!(e, LoadError::Syntax { .. }) => Err(e),
                _ => Err(LoadError::Syntax {
                    message: "flow collections (`[...]`, `{...}`) nest more than 255 levels \
                              deep"
                        .into(),
                    span,
                }),
            }
        }
        other => other,
    }
}

const SAPHYR_FLOW_LIMIT: &str = "recursion limit exceeded";
const SAPHYR_UNKNOWN_ANCHOR: &str = "while parsing node, found unknown anchor";

/// Line and column (both 1-based) just past the end of `text`, counting line breaks the way the
/// YAML scanner does (`\r\n`, `\r` and `\n` each end a line).
fn end_position(text: &str) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    let mut prev_cr = false;
    for c in text.chars() {
        match c {
            '\n' if prev_cr => {}
            '\n' | '\r' => {
                line += 1;
                column = 1;
            }
            _ => column += 1,
        }
        prev_cr = c == '\r';
    }
    (line, column)
}

/// Converts saphyr markers (character indices) to byte offsets.
///
/// Walking from the start of the line would be quadratic on a hostile single-line file, so we
/// keep a byte offset for every `STRIDE`th character and walk at most `STRIDE` characters.
struct Positions<'a> {
    text: &'a str,
    file: FileId,
    ascii: bool,
    checkpoints: Vec<usize>,
}

const STRIDE: usize = 64;

impl<'a> Positions<'a> {
    fn new(text: &'a str, file: FileId) -> Self {
        let ascii = text.is_ascii();
        let checkpoints =
            if ascii { Vec::new() } else { text.char_indices().step_by(STRIDE).map(|(byte, _)| byte).collect() };
        Positions { text, file, ascii, checkpoints }
    }

    fn byte(&self, char_index: usize) -> usize {
        if self.ascii {
            return char_index.min(self.text.len());
        }
        let Some(&base) = self.checkpoints.get(char_index / STRIDE) else {
            return self.text.len();
        };
        self.text[base..].char_indices().nth(char_index % STRIDE).map_or(self.text.len(), |(b, _)| base + b)
    }

    fn span(&self, span: saphyr_parser::Span) -> Span {
        let offset = self.byte(span.start.index());
        let end = self.byte(span.end.index()).max(offset);
        Span { file: self.file, offset, len: end - offset, line: span.start.line(), column: span.start.col() + 1 }
    }

    /// A span covering just the character at `span`'s start, for pointing at an indicator.
    fn first_char(&self, span: Span) -> Span {
        let len = self.text[span.offset..].chars().next().map_or(0, char::len_utf8);
        Span { len, ..span }
    }

    fn error(&self, e: &ScanError) -> LoadError {
        let m = e.marker();
        let span = self.first_char(self.span(saphyr_parser::Span::empty(*m)));
        if e.info() == SAPHYR_UNKNOWN_ANCHOR {
            return LoadError::UnknownAnchor { span };
        }
        LoadError::Syntax { message: e.info().to_string(), span }
    }
}

/// A copy of an anchored node with what is needed to charge its expansion up front.
struct Anchored {
    node: Node,
    /// Nodes in the subtree.
    size: usize,
    /// Collection levels in the subtree (0 for a scalar).
    height: usize,
}

struct Entry {
    key: Key,
    value: Node,
    /// A plain `<<` key, whose value is merged into the mapping when it closes.
    merge: bool,
}

enum Body {
    Seq(Vec<Node>),
    /// `index`: the keys of a map past `SMALL_MAP` entries, to find a duplicate without a scan.
    Map {
        entries: Vec<Entry>,
        pending: Option<(Key, bool)>,
        index: HashMap<String, Span>,
    },
}

/// A sequence or mapping still being read.
struct Frame {
    body: Body,
    start: Span,
    anchor: usize,
    size: usize,
    height: usize,
}

struct Builder<'a> {
    pos: Positions<'a>,
    limits: &'a Limits,
    nodes: usize,
    /// Nodes held in anchor copies; bounded separately so an alias bomb is reported at an
    /// alias, while nested anchors still cannot multiply memory unchecked.
    anchored_nodes: usize,
    anchors: HashMap<usize, Anchored>,
    stack: Vec<Frame>,
    root: Option<Node>,
}

impl<'a> Builder<'a> {
    fn new(text: &'a str, limits: &'a Limits, file: FileId) -> Self {
        Builder {
            pos: Positions::new(text, file),
            limits,
            nodes: 0,
            anchored_nodes: 0,
            anchors: HashMap::new(),
            stack: Vec::new(),
            root: None,
        }
    }

    fn run(mut self) -> Result<Node, LoadError> {
        // Pull events one at a time: `Parser::load` recurses per nesting level, the event
        // iterator keeps its state on the heap.
        let mut parser = Parser::new_from_str(self.pos.text);
        let mut documents = 0;
        while let Some(event) = parser.next_event() {
            let (event, raw_span) = event.map_err(|e| self.pos.error(&e))?;
            let span = self.pos.span(raw_span);
            match event {
                Event::DocumentStart(_) => {
                    documents += 1;
                    if documents > 1 {
                        return Err(LoadError::MultipleDocuments { span: self.pos.first_char(span) });
                    }
                }
                Event::Scalar(text, style, anchor, tag) => {
                    self.charge(1, span)?;
                    let mut span = span;
                    if text.is_empty() && style == ScalarStyle::Plain && tag.is_none() && anchor == 0 {
                        // saphyr gives an omitted node the span of whatever token follows it
                        // (`...`, the next key); it has no text of its own.
                        span.len = 0;
                    }
                    if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
                        // Block scalars run up to the next line; stop the underline at the text.
                        let body = &self.pos.text[span.offset..span.offset + span.len];
                        let trimmed = body.trim_end_matches(['\n', '\r', ' ']);
                        if !trimmed.is_empty() {
                            span.len = trimmed.len();
                        }
                    }
                    let plain = style == ScalarStyle::Plain;
                    if self.expecting_key() && anchor == 0 && tag.is_none() {
                        // A key is only its text: resolving it as a value would allocate
                        // it a second time, for every key of the plan. With an anchor or
                        // a tag it is resolved below: an alias may use it as a value, and
                        // a tag may be wrong. The scanner's buffer has room to spare, and
                        // a key is kept for the whole run, 100,000 times `host:`.
                        let mut name = text.into_owned();
                        name.shrink_to_fit();
                        self.finish(Node { value: Value::Null, span }, 0, 1, 0, Some((name, plain)))?;
                    } else {
                        let value = resolve_scalar(&text, style, tag.as_deref(), span)?;
                        let key_info = self.expecting_key().then(|| (text.into_owned(), plain));
                        self.finish(Node { value, span }, anchor, 1, 0, key_info)?;
                    }
                }
                Event::Alias(id) => self.alias(id, span)?,
                Event::SequenceStart(anchor, tag) => {
                    self.open(Body::Seq(Vec::new()), span, anchor, tag.as_deref(), "seq")?;
                }
                Event::MappingStart(anchor, tag) => {
                    let body = Body::Map { entries: Vec::new(), pending: None, index: HashMap::new() };
                    self.open(body, span, anchor, tag.as_deref(), "map")?;
                }
                Event::SequenceEnd | Event::MappingEnd => self.close(span)?,
                Event::StreamEnd => break,
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            }
        }
        match self.root {
            // A lone `---` or an empty document reads as an empty plain scalar.
            None => Err(LoadError::Empty),
            Some(Node { value: Value::Null, span }) if span.len == 0 => Err(LoadError::Empty),
            Some(root) => Ok(root),
        }
    }

    fn charge(&mut self, count: usize, span: Span) -> Result<(), LoadError> {
        self.nodes = self.within_limit(self.nodes, count, span)?;
        Ok(())
    }

    fn within_limit(&self, used: usize, count: usize, span: Span) -> Result<usize, LoadError> {
        match used.checked_add(count) {
            Some(total) if total <= self.limits.max_nodes => Ok(total),
            _ => Err(LoadError::TooManyNodes { limit: self.limits.max_nodes, span: self.pos.first_char(span) }),
        }
    }

    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame { body: Body::Map { pending: None, .. }, .. }))
    }

    fn open(&mut self, body: Body, span: Span, anchor: usize, tag: Option<&Tag>, kind: &str) -> Result<(), LoadError> {
        if self.expecting_key() {
            return Err(LoadError::NonScalarKey { span: self.pos.first_char(span) });
        }
        if let Some(tag) = tag
            && !(tag.is_yaml_core_schema() && tag.suffix == kind)
        {
            return Err(LoadError::UnsupportedTag { tag: tag_name(tag), span });
        }
        if self.stack.len() >= self.limits.max_depth {
            return Err(LoadError::TooDeep { limit: self.limits.max_depth, span: self.pos.first_char(span) });
        }
        self.charge(1, span)?;
        self.stack.push(Frame { body, start: span, anchor, size: 1, height: 1 });
        Ok(())
    }

    fn close(&mut self, end: Span) -> Result<(), LoadError> {
        let Some(frame) = self.stack.pop() else {
            return Ok(());
        };
        let start = frame.start;
        let (value, last_end) = match frame.body {
            Body::Seq(mut items) => {
                // Vectors grow by doubling: a server's two roles would hold room for four.
                items.shrink_to_fit();
                let last = items.last().map(|n| n.span.offset + n.span.len);
                (Value::Seq(items), last)
            }
            Body::Map { entries, .. } => {
                let last = entries.last().map(|e| e.value.span.offset + e.value.span.len);
                let mut entries = merge(entries)?;
                entries.shrink_to_fit();
                (Value::Map(entries), last)
            }
        };
        // Flow collections end with a bracket; block ones end where the next token starts,
        // which may be lines later, so end them at their last child instead.
        let end_offset = if end.len > 0 { end.offset + end.len } else { last_end.unwrap_or(end.offset) };
        let span = Span { len: end_offset.saturating_sub(start.offset), ..start };
        let node = Node { value, span };
        self.finish(node, frame.anchor, frame.size, frame.height, None)
    }

    fn alias(&mut self, id: usize, span: Span) -> Result<(), LoadError> {
        let Some(anchored) = self.anchors.get(&id) else {
            return Err(LoadError::UnknownAnchor { span: self.pos.first_char(span) });
        };
        let (size, height) = (anchored.size, anchored.height);
        if self.stack.len() + height > self.limits.max_depth {
            return Err(LoadError::TooDeep { limit: self.limits.max_depth, span: self.pos.first_char(span) });
        }
        // Charging before cloning is what keeps an alias bomb from allocating anything.
        self.charge(size, span)?;
        let Some(anchored) = self.anchors.get(&id) else {
            return Ok(());
        };
        let node = Node { value: anchored.node.value.clone(), span };
        let key_info = scalar_key_text(&node.value).map(|t| (t, false));
        self.finish(node, 0, size, height, key_info)
    }

    /// Records a completed node: keeps a copy for its anchor, then hands it to its parent.
    /// `key_info` is the text and plainness of a scalar, in case it turns out to be a key.
    fn finish(
        &mut self,
        node: Node,
        anchor: usize,
        size: usize,
        height: usize,
        key_info: Option<(String, bool)>,
    ) -> Result<(), LoadError> {
        if anchor != 0 {
            self.anchored_nodes = self.within_limit(self.anchored_nodes, size, node.span)?;
            self.anchors.insert(anchor, Anchored { node: node.clone(), size, height });
        }
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        parent.size += size;
        parent.height = parent.height.max(height + 1);
        match &mut parent.body {
            Body::Seq(items) => items.push(node),
            Body::Map { entries, pending, index } => match pending.take() {
                Some((key, merge)) => {
                    let value = match (&node.value, node.span.len) {
                        // An omitted value is reported where the next token starts, often on
                        // a later line; place it right after its key instead.
                        (Value::Null, 0) => Node { value: Value::Null, span: after(&key.span, self.pos.text) },
                        _ => node,
                    };
                    entries.push(Entry { key, value, merge });
                }
                None => {
                    let Some((name, plain)) = key_info else {
                        return Err(LoadError::NonScalarKey { span: node.span });
                    };
                    let merge = plain && name == "<<";
                    let key = Key { name, span: node.span };
                    if let Some(first) = first_definition(entries, index, &key) {
                        return Err(LoadError::DuplicateKey { key: key.name, span: key.span, first });
                    }
                    *pending = Some((key, merge));
                }
            },
        }
        Ok(())
    }
}

/// An empty span just past the end of `span` (which must not cross a line break).
fn after(span: &Span, text: &str) -> Span {
    let end = span.offset + span.len;
    let chars = text.get(span.offset..end).map_or(0, |t| t.chars().count());
    Span { offset: end, len: 0, column: span.column + chars, ..*span }
}

/// A tag as the user wrote it, e.g. `!!int` rather than the expanded core-schema URI.
fn tag_name(tag: &Tag) -> String {
    if tag.is_yaml_core_schema() { format!("!!{}", tag.suffix) } else { tag.to_string() }
}

/// Text usable as a key for an alias that resolved to a scalar.
fn scalar_key_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some("null".into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Seq(_) | Value::Map(_) => None,
    }
}

/// Maps up to this many entries are scanned for a duplicate key: the small maps a plan is
/// made of (a server, a step) cost less to scan than to hash, 100,000 times over.
const SMALL_MAP: usize = 16;

/// Where `key` was first defined among the map's `entries`, if it was; otherwise `key` is
/// recorded, in `index` once the map is past `SMALL_MAP` entries.
fn first_definition(entries: &[Entry], index: &mut HashMap<String, Span>, key: &Key) -> Option<Span> {
    if entries.len() < SMALL_MAP {
        return entries.iter().find(|e| e.key.name == key.name).map(|e| e.key.span);
    }
    if index.is_empty() {
        index.extend(entries.iter().map(|e| (e.key.name.clone(), e.key.span)));
    }
    match index.get(&key.name) {
        Some(first) => Some(*first),
        None => {
            index.insert(key.name.clone(), key.span);
            None
        }
    }
}

/// Applies `<<` merge keys: merged entries take the place of the `<<` entry, explicit keys win,
/// and among several merged mappings the earlier one wins.
fn merge(entries: Vec<Entry>) -> Result<Vec<(Key, Node)>, LoadError> {
    if !entries.iter().any(|e| e.merge) {
        return Ok(entries.into_iter().map(|e| (e.key, e.value)).collect());
    }
    let explicit: std::collections::HashSet<String> = entries.iter().map(|e| e.key.name.clone()).collect();
    let mut merged_names: HashMap<String, ()> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        if !entry.merge {
            out.push((entry.key, entry.value));
            continue;
        }
        let sources = match entry.value.value {
            Value::Map(map) => vec![map],
            Value::Seq(items) => {
                let mut maps = Vec::with_capacity(items.len());
                for item in items {
                    match item.value {
                        Value::Map(map) => maps.push(map),
                        _ => return Err(LoadError::InvalidMerge { span: item.span }),
                    }
                }
                maps
            }
            _ => {
                return Err(LoadError::InvalidMerge { span: entry.value.span });
            }
        };
        for (key, value) in sources.into_iter().flatten() {
            if explicit.contains(&key.name) || merged_names.contains_key(&key.name) {
                continue;
            }
            merged_names.insert(key.name.clone(), ());
            out.push((key, value));
        }
    }
    Ok(out)
}

fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>, span: Span) -> Result<Value, LoadError> {
    let Some(tag) = tag else {
        return Ok(if style == ScalarStyle::Plain { resolve_plain(text) } else { Value::String(text.to_string()) });
    };
    if !tag.is_yaml_core_schema() {
        return Err(LoadError::UnsupportedTag { tag: tag_name(tag), span });
    }
    let resolved = resolve_plain(text);
    let value = match (tag.suffix.as_str(), resolved) {
        ("str", _) => Value::String(text.to_string()),
        ("int", v @ Value::Int(_)) | ("bool", v @ Value::Bool(_)) | ("null", v @ Value::Null) => v,
        ("float", v @ Value::Float(_)) => v,
        ("float", Value::Int(i)) => Value::Float(i as f64),
        ("int" | "bool" | "null" | "float", _) => {
            return Err(LoadError::TagMismatch { tag: tag_name(tag), span });
        }
        _ => {
            return Err(LoadError::UnsupportedTag { tag: tag_name(tag), span });
        }
    };
    Ok(value)
}

/// Resolves a plain scalar with the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let radix = |prefix: &str, radix: u32, valid: fn(char) -> bool| {
        text.strip_prefix(prefix)
            .filter(|d| !d.is_empty() && d.chars().all(valid))
            .map(|d| i64::from_str_radix(d, radix))
    };
    let parsed = radix("0x", 16, |c| c.is_ascii_hexdigit()).or_else(|| radix("0o", 8, |c| matches!(c, '0'..='7')));
    if let Some(parsed) = parsed {
        // Out-of-range numbers stay text rather than silently losing precision.
        return parsed.map_or_else(|_| Value::String(text.to_string()), Value::Int);
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<i64>().map_or_else(|_| Value::String(text.to_string()), Value::Int);
    }
    if is_core_float(unsigned)
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::String(text.to_string())
}

/// `( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`, sign already stripped.
fn is_core_float(s: &str) -> bool {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let int_len = digits(s);
    let mut rest = &s[int_len..];
    let mut frac_len = 0;
    if let Some(r) = rest.strip_prefix('.') {
        frac_len = digits(r);
        rest = &r[frac_len..];
    } else if int_len == 0 {
        return false;
    }
    if int_len == 0 && frac_len == 0 {
        return false;
    }
    match rest.strip_prefix(['e', 'E']) {
        None => rest.is_empty(),
        Some(exp) => {
            let exp = exp.strip_prefix(['-', '+']).unwrap_or(exp);
            !exp.is_empty() && digits(exp) == exp.len()
        }
    }
}

/// A plan's tree, kept for pointing into its source: either held, or dropped once its
/// values moved into the plan and rebuilt from the text on first use. Only a problem
/// uses it, so a valid plan of 100,000 servers never holds its tree and its typed plan
/// at once. Its methods are `Node`'s; take `&Tree`, not `&Node`, where the tree may go
/// unused, as the conversion rebuilds it.
pub struct Tree {
    node: std::sync::OnceLock<Node>,
    rebuild: Option<Box<dyn Fn() -> Option<Node> + Send + Sync>>,
}

impl Tree {
    /// A tree that is held.
    pub fn held(node: Node) -> Tree {
        Tree { node: std::sync::OnceLock::from(node), rebuild: None }
    }

    /// A tree rebuilt by `rebuild` when first used: it must load the same text the same
    /// way as the tree that was dropped.
    pub fn rebuilt(rebuild: impl Fn() -> Option<Node> + Send + Sync + 'static) -> Tree {
        Tree { node: std::sync::OnceLock::new(), rebuild: Some(Box::new(rebuild)) }
    }

    /// Whether the tree is there: held, or rebuilt since.
    pub fn is_built(&self) -> bool {
        self.node.get().is_some()
    }

    pub fn node(&self) -> &Node {
        self.node.get_or_init(|| {
            // The text loaded once already, so it loads again; were it not to, an empty
            // tree only loses positions, and problems still point at the file.
            self.rebuild
                .as_ref()
                .and_then(|rebuild| rebuild())
                .unwrap_or(Node { value: Value::Null, span: Span { file: 0, offset: 0, len: 0, line: 1, column: 1 } })
        })
    }
}

impl std::ops::Deref for Tree {
    type Target = Node;

    fn deref(&self) -> &Node {
        self.node()
    }
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.node.get() {
            Some(node) => node.fmt(f),
            None => f.write_str("Tree(not built)"),
        }
    }
}

impl Node {
    /// `to_json`, moving the strings out of the tree instead of copying them, and
    /// freeing each part of the tree once it is converted.
    pub fn into_json(self) -> serde_json::Value {
        use serde_json::Value as J;
        match self.value {
            Value::String(s) => J::String(s),
            Value::Seq(items) => J::Array(items.into_iter().map(Node::into_json).collect()),
            Value::Map(entries) => J::Object(entries.into_iter().map(|(k, v)| (k.name, v.into_json())).collect()),
            _ => self.to_json(),
        }
    }

    /// Converts to JSON: map keys keep their order, ints stay ints. Infinities and NaN, which
    /// JSON cannot hold, become the strings `.inf`, `-.inf` and `.nan`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or_else(
                || {
                    J::String(
                        if f.is_nan() {
                            ".nan"
                        } else if *f > 0.0 {
                            ".inf"
                        } else {
                            "-.inf"
                        }
                        .into(),
                    )
                },
                J::Number,
            ),
            Value::String(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|(k, v)| (k.name.clone(), v.to_json())).collect()),
        }
    }

    /// Node at a JSON pointer such as `/servers/2/options/private_ip` (`""` = root). `None` if
    /// absent.
    pub fn pointer(&self, pointer: &str) -> Option<&Node> {
        let mut node = self;
        for segment in segments(pointer)? {
            node = node.child(&segment)?;
        }
        Some(node)
    }

    /// Span of the key named by the last segment of the pointer, e.g. `/servers/0/optons` ->
    /// span of `optons:`. `None` when absent or when the parent is not a mapping.
    pub fn key_span(&self, pointer: &str) -> Option<Span> {
        let mut segments = segments(pointer)?;
        let last = segments.pop()?;
        let mut node = self;
        for segment in &segments {
            node = node.child(segment)?;
        }
        match &node.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == last).map(|(k, _)| k.span),
            _ => None,
        }
    }

    /// Best span for a pointer: the node if present, else the nearest existing ancestor.
    pub fn span_at(&self, pointer: &str) -> Span {
        let mut node = self;
        for segment in segments(pointer).unwrap_or_default() {
            match node.child(&segment) {
                Some(child) => node = child,
                None => break,
            }
        }
        node.span
    }

    fn child(&self, segment: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == segment).map(|(_, v)| v),
            Value::Seq(items) => {
                // RFC 6901: no signs, no leading zeros.
                let valid = !segment.is_empty()
                    && segment.bytes().all(|b| b.is_ascii_digit())
                    && (segment == "0" || !segment.starts_with('0'));
                if !valid {
                    return None;
                }
                items.get(segment.parse::<usize>().ok()?)
            }
            _ => None,
        }
    }
}

/// Lays `child` over `base`, the way a plan overrides the base it `extends`: mappings merge
/// key by key (recursively), anything else in the child — a scalar, a list — replaces the
/// base's value whole. Lists replace rather than append because a plan's lists (servers,
/// steps, roles) are ordered wholes: appending would leave no way to drop a base's entry.
///
/// Every node keeps its own span, so a problem in a value that came from the base points
/// into the base file. Base keys keep their order; keys only the child has follow them.
/// Recursion is bounded by the loader's depth limit, which both trees passed.
pub fn overlay(base: Node, child: Node) -> Node {
    let (base_entries, child_entries) = match (base.value, child.value) {
        (Value::Map(base), Value::Map(child)) => (base, child),
        // Not two maps: the child's value wins whole.
        (_, value) => return Node { value, span: child.span },
    };
    let mut index: HashMap<String, usize> = HashMap::with_capacity(base_entries.len());
    let mut merged: Vec<(Key, Option<Node>)> = Vec::with_capacity(base_entries.len() + child_entries.len());
    for (key, value) in base_entries {
        index.insert(key.name.clone(), merged.len());
        merged.push((key, Some(value)));
    }
    for (key, value) in child_entries {
        match index.get(&key.name) {
            Some(&i) => {
                let under = merged[i].1.take();
                // The child's key is the one written last, so it is where the value is set.
                merged[i] = (
                    key,
                    Some(match under {
                        Some(under) => overlay(under, value),
                        None => value,
                    }),
                );
            }
            None => merged.push((key, Some(value))),
        }
    }
    let entries = merged.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
    Node { value: Value::Map(entries), span: child.span }
}

impl Node {
    /// How many values the tree holds, keys included, as the loader counts them against
    /// `Limits::max_nodes`: the budget left for the bases of a plan.
    pub fn count(&self) -> usize {
        match &self.value {
            Value::Seq(items) => 1 + items.iter().map(Node::count).sum::<usize>(),
            Value::Map(entries) => 1 + entries.iter().map(|(_, v)| 1 + v.count()).sum::<usize>(),
            _ => 1,
        }
    }
}

/// Splits and unescapes an RFC 6901 pointer; `None` if it is malformed.
fn segments(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    Some(rest.split('/').map(crate::text::pointer_unescape).collect())
}

#[cfg(test)]
mod tests;
