//! Strings that came from a peer (a node's report, the hub's request) on their way into a
//! message, a log line, a terminal or the store: capped in length and stripped of control
//! characters, so a hostile or broken peer can neither grow the hub's state without bound
//! nor rewrite an operator's terminal with escape sequences.

use std::borrow::Cow;

/// Longest detail string kept from an operation's progress or result, or a plan event.
pub const MAX_DETAIL: usize = 4096;

/// How much of a rejected input an error message repeats.
pub const MAX_QUOTED: usize = 64;

/// `s` cut to at most `max` bytes (on a character boundary), with `…(N bytes cut)` appended
/// when anything was cut, so a reader knows the text is incomplete.
#[must_use]
pub fn clip(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…({} bytes cut)", &s[..end], s.len() - end))
}

/// `s` with every control character (C0, DEL, C1; newlines and tabs included) written as a
/// Rust escape (`\n`, `\u{1b}`), everything else as is. For one-line fields in tables.
#[must_use]
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`escape_control`] that keeps line breaks: for multi-line text such as a unit's journal
/// lines, where the line structure is the point but a terminal escape must not get through.
#[must_use]
pub fn escape_control_keep_lines(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\n') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() && c != '\n' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A peer's input for an error message: escaped, then clipped to [`MAX_QUOTED`], in quotes.
#[must_use]
pub fn quoted(s: &str) -> String {
    format!("\"{}\"", clip(&escape_control(s), MAX_QUOTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_clipped_on_a_character_boundary_and_says_so() {
        assert_eq!(clip("short", 10), "short");
        let s = format!("{}é", "a".repeat(9));
        let c = clip(&s, 10);
        assert!(
            c.starts_with(&"a".repeat(9)) && c.ends_with("(2 bytes cut)"),
            "{c}"
        );
        let huge = "x".repeat(10_000);
        assert!(clip(&huge, MAX_DETAIL).len() < MAX_DETAIL + 32);
    }

    #[test]
    fn terminal_escapes_never_pass_through() {
        assert_eq!(escape_control("plain ünïcode"), "plain ünïcode");
        assert_eq!(escape_control("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
        assert_eq!(escape_control("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(
            escape_control_keep_lines("l1\nl2\u{1b}]0;x\u{7}"),
            "l1\nl2\\u{1b}]0;x\\u{7}"
        );
    }

    #[test]
    fn quoted_input_is_short_and_printable() {
        let q = quoted(&format!("\u{1b}{}", "y".repeat(10_000)));
        assert!(q.len() < 100 && q.starts_with("\"\\u{1b}y"), "{q}");
    }
}
