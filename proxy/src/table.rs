//! Plain-text tables for the commands that print to a person (`status`, `shadow-report`,
//! `compare`).

/// Rows as left-aligned columns, two spaces apart, one line each (trailing spaces trimmed).
/// The first row is usually the header.
pub fn columns(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let rows = vec![
            vec!["A".to_string(), "BB".to_string()],
            vec!["ccc".to_string(), "d".to_string()],
        ];
        assert_eq!(columns(&rows), "A    BB\nccc  d\n");
    }
}
