//! In-place edits of `routes.yaml` that keep its comments and layout: the value of a route's
//! `mode` or `percent`, or of an adapter, is replaced where it is written, or a line is added
//! in the style of its neighbours. `strangler set-mode` and `set-adapter` (and the Make
//! targets built on them) use this; nothing else rewrites the file.

use super::types::{AdapterMode, Mode};
use super::yaml::{self, Kind, Node};

/// Sets a route's mode, and its percent when given. Returns the new text.
pub fn set_route_mode(
    text: &str,
    route: &str,
    mode: Mode,
    percent: Option<f64>,
) -> Result<String, String> {
    let root = parse(text)?;
    let routes = field(&root, "routes").ok_or("the file has no `routes`")?;
    let node = routes
        .as_seq()
        .unwrap_or_default()
        .iter()
        .find(|r| field(r, "name").and_then(Node::as_str) == Some(route))
        .ok_or_else(|| format!("no route named `{route}`"))?;
    let mut edits = Vec::new();
    edits.push(set_field(text, node, "mode", mode.as_str())?);
    if let Some(p) = percent {
        if !(0.0..=100.0).contains(&p) {
            return Err(format!("percent must be from 0 to 100, not {p}"));
        }
        edits.push(set_field(text, node, "percent", &format_percent(p))?);
    }
    Ok(apply(text, edits))
}

/// Sets an adapter to `local` or `remote`, adding the `adapters` section if needed.
pub fn set_adapter(text: &str, name: &str, mode: AdapterMode) -> Result<String, String> {
    let root = parse(text)?;
    let value = match mode {
        AdapterMode::Local => "local",
        AdapterMode::Remote => "remote",
    };
    let edit = match root
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("adapters")))
    {
        Some((_, adapters)) if adapters.is_null() => {
            // `adapters:` with nothing under it: put the entry on the next line.
            let at = line_end(text, adapters.pos.offset.max(1) - 1);
            Edit::insert(at, format!("\n  {name}: {value}"))
        }
        Some((_, adapters)) => set_field(text, adapters, name, value)?,
        None => {
            let sep = if text.ends_with('\n') || text.is_empty() {
                ""
            } else {
                "\n"
            };
            Edit::insert(text.len(), format!("{sep}adapters:\n  {name}: {value}\n"))
        }
    };
    Ok(apply(text, vec![edit]))
}

fn parse(text: &str) -> Result<Node, String> {
    match yaml::parse(text) {
        Ok(Some(root)) => Ok(root),
        Ok(None) => Err("the file is empty".into()),
        Err(e) => Err(format!(
            "{}:{}: YAML syntax error: {}",
            e.pos.line, e.pos.col, e.message
        )),
    }
}

fn field<'n>(map: &'n Node, name: &str) -> Option<&'n Node> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(name))
        .map(|(_, v)| v)
}

/// A replacement of `text[start..end]`.
struct Edit {
    start: usize,
    end: usize,
    with: String,
}

impl Edit {
    fn insert(at: usize, with: String) -> Edit {
        Edit {
            start: at,
            end: at,
            with,
        }
    }
}

fn apply(text: &str, mut edits: Vec<Edit>) -> String {
    edits.sort_by_key(|e| std::cmp::Reverse(e.start));
    let mut out = text.to_string();
    for e in edits {
        out.replace_range(e.start..e.end, &e.with);
    }
    out
}

/// Replaces the value of `key` in `map`, or adds `key: value` to it.
fn set_field(text: &str, map: &Node, key: &str, value: &str) -> Result<Edit, String> {
    let entries = map.as_map().ok_or("expected a mapping")?;
    if let Some((_, v)) = entries.iter().find(|(k, _)| k.as_str() == Some(key)) {
        return replace_scalar(text, v, value);
    }
    let flow = text.as_bytes().get(map.pos.offset) == Some(&b'{');
    if flow {
        // `{a: 1, b: 2}`: add before the closing brace of this mapping.
        let last = entries
            .last()
            .map_or(map.pos.offset + 1, |(_, v)| end_offset(text, v));
        let close = text[last..]
            .find('}')
            .map(|i| last + i)
            .ok_or("unterminated flow mapping")?;
        let before = text[..close].trim_end().len();
        return Ok(Edit::insert(before, format!(", {key}: {value}")));
    }
    let (first_key, _) = entries.first().ok_or("empty mapping")?;
    let indent = " ".repeat(first_key.pos.col - 1);
    let last = entries
        .iter()
        .map(|(_, v)| end_offset(text, v))
        .max()
        .unwrap_or(first_key.pos.offset);
    let at = line_end(text, last);
    Ok(Edit::insert(at, format!("\n{indent}{key}: {value}")))
}

/// Replaces a scalar's text where it is written (quotes, if any, are replaced too).
fn replace_scalar(text: &str, node: &Node, value: &str) -> Result<Edit, String> {
    let Kind::Scalar { value: old, quoted } = &node.kind else {
        return Err(format!(
            "line {}: expected a plain value here",
            node.pos.line
        ));
    };
    let start = node.pos.offset;
    let end = if node.is_null() && old.is_empty() {
        start
    } else if *quoted {
        let quote = text[start..]
            .chars()
            .next()
            .ok_or("unexpected end of file")?;
        if quote != '"' && quote != '\'' {
            return Err(format!(
                "line {}: cannot edit a block scalar in place",
                node.pos.line
            ));
        }
        let close = text[start + 1..].find(quote).ok_or("unterminated quote")?;
        start + 1 + close + 1
    } else {
        start + old.len()
    };
    if !*quoted && !old.is_empty() && text.get(start..end) != Some(old.as_str()) {
        return Err(format!(
            "line {}: cannot edit this value in place",
            node.pos.line
        ));
    }
    // A null written as nothing (`mode:`) needs a space after the colon.
    let with = if start == end && !text[..start].ends_with(' ') {
        format!(" {value}")
    } else {
        value.to_string()
    };
    Ok(Edit { start, end, with })
}

/// The byte offset just past the last scalar under `node`.
fn end_offset(text: &str, node: &Node) -> usize {
    match &node.kind {
        Kind::Scalar { value, .. } => (node.pos.offset + value.len()).min(text.len()),
        Kind::Seq(items) => items
            .iter()
            .map(|n| end_offset(text, n))
            .max()
            .unwrap_or(node.pos.offset),
        Kind::Map(entries) => entries
            .iter()
            .map(|(_, v)| end_offset(text, v))
            .max()
            .unwrap_or(node.pos.offset),
    }
}

/// Offset of the end of the line holding `offset` (before its newline).
fn line_end(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text[offset..].find('\n').map_or(text.len(), |i| offset + i)
}

fn format_percent(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{}", p as u64)
    } else {
        format!("{p}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FILE: &str = "# the plan\nupstreams:\n  legacy: http://127.0.0.1:1   # the monolith\n  catalog: http://127.0.0.1:2\nfallback: legacy\nroutes:\n  - name: catalog      # products\n    match:\n      prefix: /api/products\n    upstream: catalog\n    mode: legacy       # step 1\n  - {name: flow, match: {prefix: /f}, upstream: catalog}\nadapters:\n  catalog: local\n";

    #[test]
    fn replaces_a_mode_in_place_keeping_comments() {
        let out = set_route_mode(FILE, "catalog", Mode::Shadow, None).unwrap();
        assert_eq!(
            out,
            FILE.replace("mode: legacy       # step 1", "mode: shadow       # step 1")
        );
    }

    #[test]
    fn edits_files_with_non_ascii_text() {
        let file = format!(
            "# Migración — catálogo, Größe\n{}",
            FILE.replace("# products", "# productos ü")
        );
        let out = set_route_mode(&file, "catalog", Mode::Shadow, None).unwrap();
        assert_eq!(
            out,
            file.replace("mode: legacy       # step 1", "mode: shadow       # step 1")
        );
        let out = set_route_mode(&file, "flow", Mode::Canary, Some(5.0)).unwrap();
        assert!(crate::config::parse(&out).is_ok(), "{out}");
        let out = set_adapter(&file, "catalog", AdapterMode::Remote).unwrap();
        assert_eq!(out, file.replace("catalog: local", "catalog: remote"));
    }

    #[test]
    fn adds_percent_under_the_route() {
        let out = set_route_mode(FILE, "catalog", Mode::Canary, Some(25.0)).unwrap();
        assert!(
            out.contains("    mode: canary       # step 1\n    percent: 25\n  - {name: flow"),
            "{out}"
        );
        let checked = crate::config::parse(&out).unwrap();
        assert_eq!(checked.config.routes[0].percent, Some(25.0));
    }

    #[test]
    fn adds_to_a_flow_mapping() {
        let out = set_route_mode(FILE, "flow", Mode::Extracted, None).unwrap();
        assert!(
            out.contains("- {name: flow, match: {prefix: /f}, upstream: catalog, mode: extracted}"),
            "{out}"
        );
        assert!(crate::config::parse(&out).is_ok());
    }

    #[test]
    fn adds_mode_after_a_nested_block_last() {
        let text = "upstreams:\n  legacy: http://127.0.0.1:1\nfallback: legacy\nroutes:\n  - name: a\n    upstream: legacy\n    match:\n      prefix: /a\n# trailing comment\n";
        let out = set_route_mode(text, "a", Mode::Shadow, None).unwrap();
        assert!(
            out.contains("      prefix: /a\n    mode: shadow\n# trailing comment\n"),
            "{out}"
        );
    }

    #[test]
    fn sets_adapters() {
        let out = set_adapter(FILE, "catalog", AdapterMode::Remote).unwrap();
        assert!(out.ends_with("adapters:\n  catalog: remote\n"));
        let out = set_adapter(FILE, "inventory", AdapterMode::Local).unwrap();
        assert!(
            out.ends_with("adapters:\n  catalog: local\n  inventory: local\n"),
            "{out}"
        );
        let no_section = "upstreams:\n  legacy: http://127.0.0.1:1\nfallback: legacy\n";
        let out = set_adapter(no_section, "legacy", AdapterMode::Remote).unwrap();
        assert!(
            out.ends_with("fallback: legacy\nadapters:\n  legacy: remote\n"),
            "{out}"
        );
    }

    #[test]
    fn unknown_route_is_an_error() {
        assert!(set_route_mode(FILE, "nope", Mode::Shadow, None).is_err());
    }
}
