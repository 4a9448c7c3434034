//! Go's `text/tabwriter` as etcdctl configures it for usage text (minwidth 0, tabwidth 8,
//! padding 1, tabs as padding, no flags): tab-terminated cells in consecutive lines form a
//! column whose width is the widest cell plus padding, rounded up to a tab stop; a line
//! without tabs ends every column.

const TAB_WIDTH: usize = 8;
const PADDING: usize = 1;

struct Cell<'t> {
    text: &'t str,
    /// Width in runes, as Go counts it.
    width: usize,
}

struct Line<'t> {
    /// All cells but the last are tab-terminated and belong to columns.
    cells: Vec<Cell<'t>>,
    newline: bool,
}

/// Align `text` the way `tabwriter.NewWriter(w, 0, 8, 1, '\t', 0)` followed by `Flush` does.
pub fn align(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    let mut block: Vec<Line> = Vec::new();
    let mut pieces = text.split('\n').peekable();
    while let Some(piece) = pieces.next() {
        let newline = pieces.peek().is_some();
        let cells: Vec<Cell> = piece
            .split('\t')
            .map(|t| Cell {
                text: t,
                width: t.chars().count(),
            })
            .collect();
        let single = cells.len() == 1;
        if newline || !piece.is_empty() {
            block.push(Line { cells, newline });
        }
        // A finished line with a single cell cannot affect later columns: Go flushes there.
        if single && newline {
            flush(&mut out, &mut block);
        }
    }
    flush(&mut out, &mut block);
    out
}

fn flush(out: &mut String, block: &mut Vec<Line>) {
    let mut widths = Vec::new();
    format(out, block, &mut widths, 0, block.len());
    block.clear();
}

/// Go's recursive column formatting: find the block of consecutive lines that have a cell in
/// the current column, size it, and format the columns to its right within that block.
fn format(
    out: &mut String,
    lines: &[Line],
    widths: &mut Vec<usize>,
    mut line0: usize,
    line1: usize,
) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].cells.len() {
            this += 1;
            continue;
        }
        write_lines(out, lines, widths, line0, this);
        line0 = this;
        let mut width = 0;
        while this < line1 && column + 1 < lines[this].cells.len() {
            width = width.max(lines[this].cells[column].width + PADDING);
            this += 1;
        }
        widths.push(width);
        format(out, lines, widths, line0, this);
        widths.pop();
        line0 = this;
    }
    write_lines(out, lines, widths, line0, line1);
}

fn write_lines(out: &mut String, lines: &[Line], widths: &[usize], line0: usize, line1: usize) {
    for line in &lines[line0..line1] {
        for (j, cell) in line.cells.iter().enumerate() {
            out.push_str(cell.text);
            if let Some(&w) = widths.get(j) {
                let cellw = w.div_ceil(TAB_WIDTH) * TAB_WIDTH;
                let pad = cellw - cell.width;
                out.extend(std::iter::repeat_n('\t', pad.div_ceil(TAB_WIDTH)));
            }
        }
        if line.newline {
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_round_up_to_tab_stops() {
        let text = "OPTIONS:\n  --a=1\tfirst\n  --longer-flag=x\tsecond\n\nNEXT:\n";
        assert_eq!(
            align(text),
            "OPTIONS:\n  --a=1\t\t\tfirst\n  --longer-flag=x\tsecond\n\nNEXT:\n"
        );
    }

    #[test]
    fn leading_empty_cells_take_one_tab() {
        assert_eq!(
            align("NAME:\n\tget - x\n\nUSAGE:\n"),
            "NAME:\n\tget - x\n\nUSAGE:\n"
        );
        let cmds = "C:\n\tadd\tAdds\n\tpromote\tPromotes\n";
        assert_eq!(align(cmds), "C:\n\tadd\tAdds\n\tpromote\tPromotes\n");
        let cmds = "C:\n\talarm disarm\tx\n\tget\ty\n";
        assert_eq!(align(cmds), "C:\n\talarm disarm\tx\n\tget\t\ty\n");
    }

    #[test]
    fn trailing_partial_line_has_no_newline() {
        assert_eq!(align("a\tb\nc"), "a\tb\nc");
    }
}
