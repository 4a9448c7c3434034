//! A small line diff (longest common subsequence) for readable test failures.

/// Lines of `old` and `new` prefixed `-` (only in old), `+` (only in new) or ` ` (both).
/// Long inputs fall back to showing the first differing line and a few around it.
pub fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    const MAX: usize = 2000;
    if a.len() > MAX || b.len() > MAX {
        return coarse_diff(&a, &b);
    }
    // lcs[i][j] = length of the LCS of a[i..] and b[j..]
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", clip(a[i])));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", clip(a[i])));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", clip(b[j])));
            j += 1;
        }
    }
    out
}

fn coarse_diff(a: &[&str], b: &[&str]) -> String {
    let first = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = first.saturating_sub(3);
    let mut out = format!(
        "(long outputs: {} vs {} lines; first difference at line {})\n",
        a.len(),
        b.len(),
        first + 1
    );
    for l in a.iter().skip(from).take(8) {
        out.push_str(&format!("- {}\n", clip(l)));
    }
    for l in b.iter().skip(from).take(8) {
        out.push_str(&format!("+ {}\n", clip(l)));
    }
    out
}

fn clip(line: &str) -> String {
    const MAX: usize = 400;
    if line.len() <= MAX {
        return line.to_string();
    }
    let mut end = MAX;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &line[..end], line.len())
}

#[cfg(test)]
mod tests {
    use super::line_diff;

    #[test]
    fn marks_changed_lines() {
        assert_eq!(line_diff("a\nb\nc\n", "a\nx\nc\n"), "  a\n- b\n+ x\n  c\n");
        assert_eq!(line_diff("a\n", "a\n"), "  a\n");
    }
}
