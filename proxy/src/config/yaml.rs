//! A YAML document tree that remembers where every node came from.
//!
//! Validation reports every problem as `FILE:LINE:COL`, including semantic ones (a duplicate
//! route name points at the second route), so the tree keeps a position on each node. This is
//! the only place that knows which YAML parser is in use.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column in the source text, plus the byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// Byte offset into the source.
    pub offset: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos {
            line: m.line(),
            col: m.col() + 1,
            offset: m.index(),
        }
    }
}

/// One YAML node with its position.
#[derive(Debug, Clone)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What the node holds.
    pub kind: Kind,
}

/// The shape of a node.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A scalar as written; `quoted` is false for plain scalars (where `null`, `~` and an
    /// empty value mean null).
    Scalar {
        /// The scalar's text.
        value: String,
        /// Whether it was quoted (or a block scalar), so never null.
        quoted: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, keys in file order.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The scalar text, if this is a non-null scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } if !self.is_null() => Some(value),
            _ => None,
        }
    }

    /// Whether the node is a YAML null (`~`, `null` or nothing).
    pub fn is_null(&self) -> bool {
        match &self.kind {
            Kind::Scalar { value, quoted } => {
                !quoted && matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL")
            }
            _ => false,
        }
    }

    /// The entries of a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The items of a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// A short name of the node's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "null",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// Where the parser gave up.
    pub pos: Pos,
    /// What it said.
    pub message: String,
}

/// Parses one YAML document. An empty document gives `Ok(None)`.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        pos: Pos::from(*e.marker()),
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    let mut root = builder.root;
    // The parser counts characters; past any non-ASCII text that is not the byte offset.
    if let (Some(node), false) = (&mut root, text.is_ascii()) {
        let byte_at: Vec<usize> = text
            .char_indices()
            .map(|(b, _)| b)
            .chain(std::iter::once(text.len()))
            .collect();
        to_byte_offsets(node, &byte_at);
    }
    Ok(root)
}

fn to_byte_offsets(node: &mut Node, byte_at: &[usize]) {
    node.pos.offset = byte_at
        .get(node.pos.offset)
        .or(byte_at.last())
        .copied()
        .unwrap_or(0);
    match &mut node.kind {
        Kind::Scalar { .. } => {}
        Kind::Seq(items) => items.iter_mut().for_each(|n| to_byte_offsets(n, byte_at)),
        Kind::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            to_byte_offsets(k, byte_at);
            to_byte_offsets(v, byte_at);
        }),
    }
}

/// Builds the tree from the parser's marked events.
#[derive(Default)]
struct Builder {
    /// Open sequences and mappings; a mapping's pending key waits in `Partial::Map`'s option.
    stack: Vec<Partial>,
    /// Nodes that carry an anchor, so that aliases can be expanded.
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    error: Option<SyntaxError>,
}

enum Partial {
    Seq(Pos, usize, Vec<Node>),
    Map(Pos, usize, Vec<(Node, Node)>, Option<Node>),
}

impl Builder {
    fn push_node(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Partial::Seq(_, _, items)) => items.push(node),
            Some(Partial::Map(_, _, entries, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    // Duplicate keys are an error YAML parsers often let through silently.
                    if let Some(k) = key.as_str() {
                        if entries.iter().any(|(e, _)| e.as_str() == Some(k)) {
                            self.error.get_or_insert(SyntaxError {
                                pos: key.pos,
                                message: format!("duplicate key `{k}`"),
                            });
                        }
                    }
                    entries.push((key, node));
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from(mark);
        match ev {
            Event::Scalar(value, style, anchor, _tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                self.push_node(
                    Node {
                        pos,
                        kind: Kind::Scalar { value, quoted },
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Partial::Seq(pos, anchor, Vec::new()))
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Partial::Map(pos, anchor, Vec::new(), None))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Partial::Seq(pos, anchor, items)) => (
                        Node {
                            pos,
                            kind: Kind::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Partial::Map(pos, anchor, entries, _)) => (
                        Node {
                            pos,
                            kind: Kind::Map(entries),
                        },
                        anchor,
                    ),
                    None => return,
                };
                self.push_node(node, anchor);
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(mut node) => {
                    node.pos = pos;
                    self.push_node(node, 0);
                }
                None => {
                    self.error.get_or_insert(SyntaxError {
                        pos,
                        message: "alias to an unknown anchor".into(),
                    });
                }
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let root = parse("a: 1\nb:\n  - x\n").unwrap().unwrap();
        let map = root.as_map().unwrap();
        assert_eq!((map[1].0.pos.line, map[1].0.pos.col), (2, 1));
        let seq = map[1].1.as_seq().unwrap();
        assert_eq!((seq[0].pos.line, seq[0].pos.col), (3, 5));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.pos.line, 2);
        assert!(err.message.contains("duplicate key"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1);
    }

    #[test]
    fn empty_document_is_none() {
        assert!(parse("").unwrap().is_none());
        assert!(parse("# only a comment\n").unwrap().is_none());
    }

    #[test]
    fn nulls_and_quoted_strings() {
        let root = parse("a: ~\nb: 'null'\nc:\n").unwrap().unwrap();
        let map = root.as_map().unwrap();
        assert!(map[0].1.is_null());
        assert_eq!(map[1].1.as_str(), Some("null"));
        assert!(map[2].1.is_null());
    }

    #[test]
    fn aliases_expand() {
        let root = parse("a: &x {k: v}\nb: *x\n").unwrap().unwrap();
        let map = root.as_map().unwrap();
        assert_eq!(map[1].1.as_map().unwrap()[0].1.as_str(), Some("v"));
    }
}
