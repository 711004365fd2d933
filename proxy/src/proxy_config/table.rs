//! Go's `text/tabwriter` as istioctl uses it (`minwidth 0, tabwidth 8, padding N, ' ', 0`):
//! every tab-terminated cell is padded to its column's widest cell plus `padding`; the last
//! cell of a row is written as is. Widths count characters, as Go's does for UTF-8.

/// Rows of cells -> aligned text (every row ends with `\n`).
pub fn render(rows: &[Vec<String>], padding: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            widths[i] = widths[i].max(c.chars().count() + padding);
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            out.push_str(c);
            if i + 1 < r.len() {
                let pad = widths[i].saturating_sub(c.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn pads_like_go_tabwriter() {
        let rows = vec![
            vec!["NAME".to_string(), "VHOST NAME".into(), "X".into()],
            vec!["80".to_string(), "".into(), "last".into()],
        ];
        assert_eq!(
            super::render(&rows, 5),
            "NAME     VHOST NAME     X\n80                      last\n"
        );
    }
}
