//! The subset of olekukonko/tablewriter etcdctl uses for `-w table`: default settings
//! (borders, `+`/`-`/`|`, centered upper-case headers, cells wrapped at 30 columns with
//! minimum raggedness) and right-aligned rows.

use std::collections::HashMap;

const MAX_CELL_WIDTH: usize = 30;
const HEADER_ROW: i64 = -1;

pub struct TableWriter {
    /// Column widths.
    widths: Vec<usize>,
    /// Row heights in lines, by row index (`HEADER_ROW` for the header).
    heights: HashMap<i64, usize>,
    header: Vec<Vec<String>>,
    rows: Vec<Vec<Vec<String>>>,
}

impl TableWriter {
    pub fn new(header: &[&str]) -> Self {
        let mut t = TableWriter {
            widths: Vec::new(),
            heights: HashMap::new(),
            header: Vec::new(),
            rows: Vec::new(),
        };
        for (i, h) in header.iter().enumerate() {
            let lines = t.measure(h, i, HEADER_ROW);
            t.header.push(lines);
        }
        t
    }

    pub fn append(&mut self, row: &[String]) {
        let n = self.rows.len() as i64;
        let cells = row
            .iter()
            .enumerate()
            .map(|(i, v)| self.measure(v, i, n))
            .collect();
        self.rows.push(cells);
    }

    /// tablewriter's `parseDimension`: wrap the cell and widen its column and row to fit.
    fn measure(&mut self, text: &str, col: usize, row: i64) -> Vec<String> {
        let raw: Vec<&str> = text.split('\n').collect();
        let mut max_width = raw
            .iter()
            .map(|l| display_width(l))
            .max()
            .unwrap_or(0)
            .min(MAX_CELL_WIDTH);
        // Reflow: all paragraphs of the cell become one before wrapping.
        let paragraph = raw.join(" ");
        let (lines, _) = wrap_string(&paragraph, max_width);
        for l in &lines {
            max_width = max_width.max(display_width(l));
        }
        if self.widths.len() <= col {
            self.widths.resize(col + 1, 0);
        }
        self.widths[col] = self.widths[col].max(max_width);
        let h = self.heights.entry(row).or_insert(0);
        *h = (*h).max(lines.len());
        lines
    }

    fn line(&self, out: &mut String) {
        out.push('+');
        for w in &self.widths {
            out.push_str(&"-".repeat(w + 2));
            out.push('+');
        }
        out.push('\n');
    }

    /// Render with right-aligned cells, as etcdctl's `SetAlignment(ALIGN_RIGHT)`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.line(&mut out);
        let height = self.heights.get(&HEADER_ROW).copied().unwrap_or(0);
        if !self.header.is_empty() {
            for x in 0..height {
                out.push('|');
                for (y, w) in self.widths.iter().enumerate() {
                    let h = self
                        .header
                        .get(y)
                        .and_then(|lines| lines.get(x))
                        .map_or("", String::as_str);
                    out.push(' ');
                    out.push_str(&pad_center(&title(h), *w));
                    out.push_str(" |");
                }
                out.push('\n');
            }
            self.line(&mut out);
        }
        for (i, row) in self.rows.iter().enumerate() {
            let height = self.heights.get(&(i as i64)).copied().unwrap_or(1);
            for x in 0..height {
                for (y, cell) in row.iter().enumerate() {
                    out.push_str("| ");
                    // Shorter cells are padded with two spaces per missing line.
                    let text = cell.get(x).map_or("  ", String::as_str);
                    out.push_str(&pad_left(text, self.widths[y]));
                    out.push(' ');
                }
                out.push_str("|\n");
            }
        }
        self.line(&mut out);
        out
    }
}

/// tablewriter's `Title`: `_` and most `.` become spaces, trimmed, upper-cased.
fn title(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let num_or_space = |c: char| c.is_ascii_digit() || c == ' ';
    let mapped: String = chars
        .iter()
        .enumerate()
        .map(|(i, &c)| match c {
            '_' => ' ',
            '.' if (i != 0 && !num_or_space(chars[i - 1]))
                || (i != chars.len() - 1 && !num_or_space(chars[i + 1])) =>
            {
                ' '
            }
            c => c,
        })
        .collect();
    let trimmed = mapped.trim_matches(char::is_whitespace);
    if trimmed.is_empty() && !name.is_empty() {
        return " ".to_string();
    }
    trimmed.to_uppercase()
}

fn pad_center(s: &str, width: usize) -> String {
    let gap = width.saturating_sub(display_width(s));
    let left = gap / 2;
    format!("{}{s}{}", " ".repeat(left), " ".repeat(gap - left))
}

fn pad_left(s: &str, width: usize) -> String {
    let gap = width.saturating_sub(display_width(s));
    format!("{}{s}", " ".repeat(gap))
}

/// tablewriter's `WrapString`: split on spaces and break into lines of at most `limit`
/// columns (or the longest word) with minimal raggedness.
fn wrap_string(s: &str, limit: usize) -> (Vec<String>, usize) {
    let words: Vec<&str> = s.split(' ').collect();
    let limit = words
        .iter()
        .map(|w| display_width(w))
        .fold(limit, usize::max);
    let lines = wrap_words(&words, 1, limit, 100_000)
        .into_iter()
        .map(|line| line.join(" "))
        .collect();
    (lines, limit)
}

fn wrap_words<'w>(words: &[&'w str], spc: usize, lim: usize, pen: i64) -> Vec<Vec<&'w str>> {
    let n = words.len();
    let widths: Vec<usize> = words.iter().map(|w| display_width(w)).collect();
    // length[i][j]: width of words i..=j joined by spaces.
    let length =
        |i: usize, j: usize| -> usize { widths[i..=j].iter().sum::<usize>() + spc * (j - i) };
    let mut nbrk = vec![0usize; n];
    let mut cost = vec![i32::MAX as i64; n];
    for i in (0..n).rev() {
        if length(i, n - 1) <= lim {
            cost[i] = 0;
            nbrk[i] = n;
        } else {
            for j in i + 1..n {
                let d = lim as i64 - length(i, j - 1) as i64;
                let mut c = d * d + cost[j];
                if length(i, j - 1) > lim {
                    c += pen;
                }
                if c < cost[i] {
                    cost[i] = c;
                    nbrk[i] = j;
                }
            }
        }
    }
    let mut lines = Vec::new();
    let mut i = 0;
    while i < n {
        lines.push(words[i..nbrk[i]].to_vec());
        i = nbrk[i];
    }
    lines
}

/// Terminal columns a string takes, close to go-runewidth: East Asian wide characters count
/// two, combining marks and zero-width characters none.
pub fn display_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

fn char_width(c: char) -> usize {
    let u = c as u32;
    match u {
        0..=0x1f | 0x7f..=0x9f | 0xad => 0,
        0x300..=0x36f | 0x1ab0..=0x1aff | 0x1dc0..=0x1dff | 0x20d0..=0x20ff | 0xfe20..=0xfe2f => 0,
        0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x2064 | 0xfeff => 0,
        0x1100..=0x115f
        | 0x2e80..=0x303e
        | 0x3041..=0x33ff
        | 0x3400..=0x4dbf
        | 0x4e00..=0x9fff
        | 0xa000..=0xa4cf
        | 0xac00..=0xd7a3
        | 0xf900..=0xfaff
        | 0xfe30..=0xfe4f
        | 0xff00..=0xff60
        | 0xffe0..=0xffe6
        | 0x1f300..=0x1f64f
        | 0x1f900..=0x1f9ff
        | 0x20000..=0x2fffd
        | 0x30000..=0x3fffd => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_tablewriter() {
        let mut t = TableWriter::new(&["endpoint", "hash"]);
        t.append(&["127.0.0.1:23791".to_string(), "3305255506".to_string()]);
        assert_eq!(
            t.render(),
            "+-----------------+------------+\n|    ENDPOINT     |    HASH    |\n+-----------------+------------+\n| 127.0.0.1:23791 | 3305255506 |\n+-----------------+------------+\n"
        );
    }

    #[test]
    fn long_cells_wrap_at_thirty_columns() {
        let mut t = TableWriter::new(&["error"]);
        t.append(&["etcdserver: mvcc: required revision has been compacted".to_string()]);
        let border = format!("+{}+\n", "-".repeat(32));
        let expected = format!(
            "{border}|             ERROR              |\n{border}|     etcdserver: mvcc: required |\n|    revision has been compacted |\n{border}"
        );
        assert_eq!(t.render(), expected);
    }

    #[test]
    fn titles() {
        assert_eq!(title("raft applied index"), "RAFT APPLIED INDEX");
        assert_eq!(title("db_size"), "DB SIZE");
        assert_eq!(title("v1.2"), "V1.2");
        assert_eq!(title("a.b"), "A B");
    }
}
