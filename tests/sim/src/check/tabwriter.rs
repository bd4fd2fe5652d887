//! Go's `text/tabwriter`, for the configurations RKE2 uses.
//!
//! Only left alignment with a non-tab pad character and no flags is implemented (RKE2's table
//! is `tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)`). The algorithm follows Go's: text is cut into
//! tab-terminated cells; a line's last cell is not part of any column; a *column block* is a run
//! of consecutive lines that all have a cell in that column; its width is the widest cell plus
//! the padding (at least `min_width`); a line with a single cell flushes everything buffered, so
//! columns never align across it. Widths count Unicode scalar values, as Go counts runes.

/// The subset of `tabwriter.NewWriter` parameters the simulator needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TabWriter {
    /// Minimal cell width including padding (`minwidth`).
    pub min_width: usize,
    /// Padding added to the widest cell of a column block (`padding`).
    pub padding: usize,
    /// Character used to pad cells (`padchar`); must not be a tab.
    pub pad_char: char,
}

impl TabWriter {
    /// The writer RKE2's `certificate check -o table` uses.
    pub const RKE2_TABLE: TabWriter = TabWriter {
        min_width: 0,
        padding: 3,
        pad_char: ' ',
    };

    /// Format `text` as Go's tabwriter would after writing it all and calling `Flush`.
    #[must_use]
    pub fn format(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() * 2);
        let mut block: Vec<Vec<&str>> = Vec::new();
        let mut rest = text;
        loop {
            match rest.find('\n') {
                Some(end) => {
                    let line: Vec<&str> = rest[..end].split('\t').collect();
                    let single_cell = line.len() == 1;
                    block.push(line);
                    rest = &rest[end + 1..];
                    if single_cell {
                        // Go flushes here: the one-cell line cannot influence later columns.
                        self.format_block(&block, &mut out, true);
                        block.clear();
                    }
                }
                None => {
                    // The unterminated tail; Go writes it without a newline at Flush.
                    block.push(rest.split('\t').collect());
                    self.format_block(&block, &mut out, false);
                    return out;
                }
            }
        }
    }

    /// Format buffered lines; every line but the last ends with a newline unless
    /// `all_terminated`, in which case all of them do.
    fn format_block(&self, lines: &[Vec<&str>], out: &mut String, all_terminated: bool) {
        let mut widths = Vec::new();
        let mut writer = LineWriter {
            tw: self,
            lines,
            out,
            all_terminated,
        };
        writer.format(&mut widths, 0, lines.len());
    }
}

/// Holds what the recursive formatting pass needs.
struct LineWriter<'a, 'b> {
    tw: &'a TabWriter,
    lines: &'a [Vec<&'b str>],
    out: &'a mut String,
    all_terminated: bool,
}

fn cell_width(cell: &str) -> usize {
    cell.chars().count()
}

/// Whether `line` has a tab-terminated cell in `column` (Go: `column < len(line)-1`).
fn has_column(line: &[&str], column: usize) -> bool {
    column + 1 < line.len()
}

impl LineWriter<'_, '_> {
    fn format(&mut self, widths: &mut Vec<usize>, mut line0: usize, line1: usize) {
        let column = widths.len();
        let mut this = line0;
        while this < line1 {
            if !has_column(&self.lines[this], column) {
                this += 1;
                continue;
            }
            // A column block starts here: print the lines before it with the known widths.
            self.write_lines(widths, line0, this);
            line0 = this;
            let mut width = self.tw.min_width;
            while this < line1 && has_column(&self.lines[this], column) {
                width = width.max(cell_width(self.lines[this][column]) + self.tw.padding);
                this += 1;
            }
            widths.push(width);
            self.format(widths, line0, this);
            widths.pop();
            line0 = this;
        }
        self.write_lines(widths, line0, line1);
    }

    fn write_lines(&mut self, widths: &[usize], line0: usize, line1: usize) {
        for i in line0..line1 {
            let line = &self.lines[i];
            for (j, cell) in line.iter().enumerate() {
                self.out.push_str(cell);
                if let Some(&width) = widths.get(j) {
                    let pad = width.saturating_sub(cell_width(cell));
                    self.out.extend(std::iter::repeat_n(self.tw.pad_char, pad));
                }
            }
            if self.all_terminated || i + 1 < self.lines.len() {
                self.out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rke2(text: &str) -> String {
        TabWriter::RKE2_TABLE.format(text)
    }

    #[test]
    fn columns_are_widest_cell_plus_three_and_last_cell_is_not_padded() {
        let out = rke2("a\tbb\tc\nccc\td\te\n");
        assert_eq!(out, "a     bb   c\nccc   d    e\n");
    }

    #[test]
    fn padding_applies_even_to_the_widest_cell_and_to_empty_cells() {
        let out = rke2("abcd\t\tx\n\tyy\tz\n");
        // column 0 width 4+3=7, column 1 width 2+3=5
        assert_eq!(out, "abcd        x\n       yy   z\n");
    }

    #[test]
    fn leading_empty_line_is_kept_and_does_not_join_a_column_block() {
        let out = rke2("\nH1\tH2\n--\t--\nlonger\tv\n");
        assert_eq!(out, "\nH1       H2\n--       --\nlonger   v\n");
    }

    #[test]
    fn a_one_cell_line_flushes_and_resets_column_widths() {
        let out = rke2("a\tb\nsingle\nlonger\tb\n");
        assert_eq!(out, "a   b\nsingle\nlonger   b\n");
    }

    #[test]
    fn lines_with_fewer_cells_end_a_column_block() {
        // The second column exists in lines 0 and 2 only, with line 1 in between having
        // just one terminated cell: widths are computed per block.
        let out = rke2("x\tlong-second\tz\nyy\tq\nw\ts\tt\n");
        assert_eq!(out, "x    long-second   z\nyy   q\nw    s   t\n");
    }

    #[test]
    fn unterminated_tail_is_written_without_newline() {
        assert_eq!(rke2("a\tb\nc\td"), "a   b\nc   d");
        assert_eq!(rke2(""), "");
    }

    #[test]
    fn widths_count_runes_not_bytes() {
        let out = rke2("é\tx\nab\ty\n");
        assert_eq!(out, "é    x\nab   y\n");
    }

    #[test]
    fn min_width_and_other_padding() {
        let tw = TabWriter {
            min_width: 6,
            padding: 1,
            pad_char: '.',
        };
        assert_eq!(tw.format("a\tb\nabcdefg\tc\n"), "a.......b\nabcdefg.c\n");
        assert_eq!(tw.format("a\tb\n"), "a.....b\n");
    }

    #[test]
    fn trailing_space_inside_a_cell_counts_towards_the_width() {
        let out = rke2("1 year \tOK\n2 days \tEXPIRED\nnow\tOK\n");
        assert_eq!(out, "1 year    OK\n2 days    EXPIRED\nnow       OK\n");
    }
}
