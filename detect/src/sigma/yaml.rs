//! A small YAML tree with line numbers, built on `yaml-rust2`'s marked event API, so every
//! rule error can point at the line it comes from.

use yaml_rust2::parser::{MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::{Event, Yaml};

/// A YAML value with the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys are kept as scalars' text, in document order.
    Map(Vec<(String, Node)>),
}

impl Node {
    /// This value and every value below it.
    fn count_values(&self) -> usize {
        1 + match &self.value {
            Value::Seq(items) => items.iter().map(Node::count_values).sum(),
            Value::Map(entries) => entries.iter().map(|(_, v)| v.count_values()).sum(),
            _ => 0,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Text of any scalar (numbers and booleans rendered), `None` for null, lists and maps.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(String, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Seq(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// Convert to JSON (test events, pipeline files). Non-finite floats become null.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => s.clone().into(),
            Value::Seq(items) => items.iter().map(Node::to_json).collect(),
            Value::Map(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }
}

/// A YAML syntax error with its line.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub line: usize,
    pub message: String,
}

enum Frame {
    Seq(usize, Vec<Node>),
    Map(usize, Vec<(String, Node)>, Option<(String, usize)>),
}

/// Values aliases may add to one file. Aliases of aliases multiply (the "billion laughs"): a
/// rule file of a few hundred bytes expanded to 10^7 values took 1.8 GB before it was refused,
/// and a deeper one ran out of memory. Real rules alias little, if at all.
const MAX_ALIASED_VALUES: usize = 10_000;

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    docs: Vec<Node>,
    /// Each anchored node with its count of values (itself and all below it).
    anchors: std::collections::HashMap<usize, (Node, usize)>,
    /// Values that aliases added so far (see [`MAX_ALIASED_VALUES`]).
    aliased_values: usize,
    error: Option<YamlError>,
    /// Anchor ids of the open collections, so the finished node can be recorded.
    open_anchors: Vec<usize>,
}

impl Builder {
    fn fail(&mut self, line: usize, message: String) {
        if self.error.is_none() {
            self.error = Some(YamlError { line, message });
        }
    }

    fn push_node(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let values = node.count_values();
            self.anchors.insert(anchor, (node.clone(), values));
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, pending)) => match pending.take() {
                None => {
                    let key = match &node.value {
                        Value::Str(s) => s.clone(),
                        Value::Int(i) => i.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => String::new(),
                        Value::Seq(_) | Value::Map(_) => {
                            let line = node.line;
                            self.fail(line, "a list or map used as a mapping key".into());
                            return;
                        }
                    };
                    if entries.iter().any(|(k, _)| *k == key) {
                        let line = node.line;
                        self.fail(line, format!("duplicate key `{key}`"));
                        return;
                    }
                    *pending = Some((key, node.line));
                }
                // A list or map under a key starts on the lines after it, and an empty value
                // is marked where the next token is: the key's line is where they are
                // (`selection:`, `cmd|contains|all:`, `rules:`), in errors and `explain`.
                Some((key, key_line)) => {
                    let mut node = node;
                    if matches!(node.value, Value::Seq(_) | Value::Map(_) | Value::Null) {
                        node.line = key_line;
                    }
                    entries.push((key, node))
                }
            },
        }
    }
}

fn is_whole_number(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let value = if style != TScalarStyle::Plain || tag.is_some() {
                    Value::Str(text)
                } else {
                    match Yaml::from_str(&text) {
                        Yaml::Null => Value::Null,
                        Yaml::Boolean(b) => Value::Bool(b),
                        // Hex/octal forms stay text: `0x40810000` is an identifier, not a number.
                        Yaml::Integer(i) if !text.starts_with("0x") && !text.starts_with("0o") => {
                            Value::Int(i)
                        }
                        // A whole number beyond i64 (an id, `12345678901234567890`) stays
                        // its digits: as a float it would be rounded and match nothing.
                        Yaml::Real(_) if is_whole_number(&text) => Value::Str(text),
                        Yaml::Real(r) => r
                            .parse::<f64>()
                            .map(Value::Float)
                            .unwrap_or(Value::Str(text)),
                        _ => Value::Str(text),
                    }
                };
                self.push_node(Node { line, value }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Seq(line, Vec::new()));
                self.open_anchors.push(anchor);
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(line, Vec::new(), None));
                self.open_anchors.push(anchor);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let anchor = self.open_anchors.pop().unwrap_or(0);
                let node = match self.stack.pop() {
                    Some(Frame::Seq(l, items)) => Node {
                        line: l,
                        value: Value::Seq(items),
                    },
                    Some(Frame::Map(l, entries, _)) => Node {
                        line: l,
                        value: Value::Map(entries),
                    },
                    None => return,
                };
                self.push_node(node, anchor);
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some((n, values)) => {
                        self.aliased_values += values;
                        if self.aliased_values > MAX_ALIASED_VALUES {
                            self.fail(
                                line,
                                format!("aliases expand to more than {MAX_ALIASED_VALUES} values (aliases of aliases multiply; a rule needs far fewer)"),
                            );
                            return;
                        }
                        Node {
                            line,
                            value: n.value.clone(),
                        }
                    }
                    None => {
                        self.fail(line, format!("unknown alias {id}"));
                        return;
                    }
                };
                self.push_node(node, 0);
            }
            Event::DocumentEnd => {
                // An empty document (`---` followed by nothing) yields no node; keep positions aligned.
                self.stack.clear();
            }
            _ => {}
        }
    }
}

/// Parse a (possibly multi-document) YAML text. Empty documents are skipped.
pub fn load_documents(text: &str) -> Result<Vec<Node>, YamlError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, true) {
        let (line, message) = (e.marker().line(), e.info().to_string());
        // The parser notices an unclosed `[` or `{` on a later line (a flow collection may go
        // on across lines); the mistake is where it was opened.
        return Err(match unclosed_flow_opener(text, e.marker().index()) {
            Some((opener, open_line)) if open_line < line => YamlError {
                line: open_line,
                message: format!("`{opener}` is not closed ({message} on line {line})"),
            },
            _ => YamlError { line, message },
        });
    }
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder
        .docs
        .into_iter()
        .filter(|d| d.value != Value::Null)
        .collect())
}

/// The innermost `[` or `{` that starts a flow collection before character `end` of `text` and
/// is not closed there, with its line. Quotes and comments are skipped; a bracket inside a plain
/// scalar (`cmd[1]`, `powershell -c {Get-Process`, `title: Y [test`) does not start a
/// collection: only one where a value starts does (after `:`, `-`, `,`, `[`, `{` or at a line's
/// start, spaces aside).
fn unclosed_flow_opener(text: &str, end: usize) -> Option<(char, usize)> {
    let mut open: Vec<(char, usize)> = Vec::new();
    let mut line = 1;
    let mut prev = '\n'; // last character that is not a space
    let mut after_space = true; // whether a space (or the line's start) came right before
    let mut chars = text.chars().take(end).peekable();
    while let Some(c) = chars.next() {
        let value_starts = matches!(prev, '\n' | ':' | '-' | ',' | '[' | '{');
        match c {
            '\n' => line += 1,
            '#' if after_space => while chars.next_if(|&n| n != '\n').is_some() {},
            '\'' | '"' if value_starts => {
                while let Some(n) = chars.next() {
                    match n {
                        '\n' => line += 1,
                        '\\' if c == '"' => {
                            chars.next();
                        }
                        _ if n == c && !(c == '\'' && chars.next_if_eq(&'\'').is_some()) => break,
                        _ => {}
                    }
                }
            }
            '[' | '{' if value_starts => open.push((c, line)),
            ']' | '}' => {
                open.pop();
            }
            _ => {}
        }
        after_space = matches!(c, ' ' | '\t' | '\n');
        if !matches!(c, ' ' | '\t') {
            prev = c;
        }
    }
    open.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_recorded_per_node() {
        let docs = load_documents(
            "title: x\ndetection:\n    sel:\n        a|contains: 'b'\n---\ntitle: y\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        let det = docs[0].get("detection").unwrap();
        // A map under a key is at the key's line.
        assert_eq!(det.line, 2);
        assert_eq!(det.get("sel").unwrap().line, 3);
        let sel = det.get("sel").unwrap();
        assert_eq!(sel.get("a|contains").unwrap().line, 4);
        assert_eq!(docs[1].get("title").unwrap().as_str(), Some("y"));
    }

    #[test]
    fn aliases_are_resolved_but_their_expansion_is_bounded() {
        let docs = load_documents("a: &x [1, 2]\nb: *x\n").unwrap();
        assert_eq!(
            docs[0].get("b").unwrap().as_seq().map(<[Node]>::len),
            Some(2)
        );
        // Nine levels of ten aliases each: 10^9 values if expanded.
        let mut text = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n".to_string();
        for level in 1..9 {
            let prev = format!("*l{}", level - 1);
            let items = [prev.as_str(); 10].join(", ");
            text.push_str(&format!("l{level}: &l{level} [{items}]\n"));
        }
        let err = load_documents(&text).unwrap_err();
        assert!(
            err.message.contains("aliases expand to more than"),
            "{err:?}"
        );
        assert!((3..=9).contains(&err.line), "{err:?}");
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let err =
            load_documents("title: x\ndetection:\n  sel: [a, b\n  condition: sel\n").unwrap_err();
        assert_eq!(err.line, 3, "{err:?}");
        assert!(err.message.starts_with("`[` is not closed"), "{err:?}");
        let err = load_documents("title: x\ndetection:\n  sel:\n    f: [a, b\n  condition: sel\n")
            .unwrap_err();
        assert_eq!(err.line, 4, "{err:?}");
        let err =
            load_documents("title: x\ndetection:\n  sel: {a: 1\n  condition: sel\n").unwrap_err();
        assert_eq!(err.line, 3, "{err:?}");
        assert!(err.message.starts_with("`{` is not closed"), "{err:?}");
        // Brackets in plain values (regression QA: the error was put on their line), quotes and
        // comments open nothing: the error stays where it is.
        for (with, without) in [
            (
                "a: powershell -c {Get-Process\nb: 1\n\tc: 2\n",
                "a: powershell -c Get-Process\nb: 1\n\tc: 2\n",
            ),
            (
                "title: Y [test\nb: 1\n\tc: 2\n",
                "title: Y test\nb: 1\n\tc: 2\n",
            ),
        ] {
            let (err, plain) = (
                load_documents(with).unwrap_err(),
                load_documents(without).unwrap_err(),
            );
            assert_eq!(err, plain, "{with:?}");
            assert!(!err.message.contains("is not closed"), "{err:?}");
        }
        let err = load_documents("a: cmd[1] # [x\nb: '[' \nc: \"{\"\nd: [1, 2]\ne: 1\n  f: 2\n")
            .unwrap_err();
        assert_eq!(err.line, 6, "{err:?}");
        let err = load_documents("a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("duplicate"));
    }

    #[test]
    fn scalars_keep_sigma_friendly_types() {
        let d = &load_documents("a: 0x17\nb: 4624\nc: '4624'\nd: null\ne: true\n").unwrap()[0];
        assert_eq!(d.get("a").unwrap().value, Value::Str("0x17".into()));
        assert_eq!(d.get("b").unwrap().value, Value::Int(4624));
        assert_eq!(d.get("c").unwrap().value, Value::Str("4624".into()));
        assert_eq!(d.get("d").unwrap().value, Value::Null);
        assert_eq!(d.get("e").unwrap().value, Value::Bool(true));
    }
}
