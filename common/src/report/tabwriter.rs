//! The subset of Go's `text/tabwriter` that RKE2's table uses: cells separated by tabs,
//! every column but the last padded to its widest cell (in characters) plus `padding`
//! spaces, the last cell written as-is. Lines with a single cell (like RKE2's leading empty
//! line) take no part in column widths.
//!
//! Cells often hold what a node reported (names, subjects, versions, reasons): control
//! characters in them are escaped here, once for every table, so a hostile report can
//! neither break the layout nor send escape sequences to an operator's terminal.

/// Lays out `lines` (each a list of cells).
#[must_use]
pub fn layout(lines: &[Vec<String>], padding: usize) -> String {
    let escaped: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            l.iter()
                .map(|c| crate::text::escape_control(c).into_owned())
                .collect()
        })
        .collect();
    let lines = &escaped;
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for line in lines.iter().filter(|l| l.len() > 1) {
        for (i, cell) in line.iter().enumerate().take(line.len() - 1) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in lines {
        let last = line.len().saturating_sub(1);
        for (i, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] + padding - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(s: &[&str]) -> Vec<String> {
        s.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn pads_all_but_last_column_to_widest_plus_padding() {
        let out = layout(&[cells(&["A", "BB", "C"]), cells(&["aaa", "b", "cccc"])], 3);
        assert_eq!(out, "A     BB   C\naaa   b    cccc\n");
    }

    #[test]
    fn single_cell_lines_do_not_widen_columns() {
        let out = layout(&[cells(&[""]), cells(&["x", "y"])], 3);
        assert_eq!(out, "\nx   y\n");
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let out = layout(&[cells(&["é", "1"]), cells(&["ab", "2"])], 1);
        assert_eq!(out, "é  1\nab 2\n");
    }

    #[test]
    fn control_characters_in_cells_are_escaped() {
        let out = layout(&[cells(&["A", "B"]), cells(&["x\u{1b}[2J\ny", "z\r"])], 1);
        assert_eq!(
            out,
            format!("A{}B\nx\\u{{1b}}[2J\\ny z\\r\n", " ".repeat(13))
        );
    }
}
