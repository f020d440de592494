//! Turning engine errors into located [`Diagnostic`]s.

use crate::Diagnostic;

/// 1-based line and column (in characters) of byte `offset` in `text`. An offset past the
/// end, or inside a character, is clamped to the nearest earlier character boundary.
pub(crate) fn line_column(text: &str, offset: usize) -> (u32, u32) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (saturate(line), saturate(column))
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Appends `d` (and its related diagnostics) located in `file` / `text` by the first label.
pub(crate) fn push_miette(
    out: &mut Vec<Diagnostic>,
    file: &str,
    text: &str,
    d: &dyn miette::Diagnostic,
) {
    let offset = d
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset());
    let (line, column) = match offset {
        Some(offset) => {
            let (l, c) = line_column(text, offset);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    out.push(Diagnostic {
        file: file.to_owned(),
        line,
        column,
        message: d.to_string(),
        help: d.help().map(|h| h.to_string()),
    });
    if let Some(related) = d.related() {
        for r in related {
            push_miette(out, file, text, r);
        }
    }
}

/// A regorus error. Regorus formats located errors as
/// `\n--> <file>:<line>:<col>\n  |\n<n> | <source line>\n  | ^\nerror: <message>`; the
/// location and message are taken from that, anything else is kept whole.
pub(crate) fn from_rego(fallback_file: &str, message: &str) -> Diagnostic {
    let location = message
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("--> "))
        .and_then(|loc| {
            let mut parts = loc.rsplitn(3, ':');
            let column = parts.next()?.trim().parse::<u32>().ok()?;
            let line = parts.next()?.trim().parse::<u32>().ok()?;
            let file = parts.next()?;
            Some((file.to_owned(), line, column))
        });
    match location {
        Some((file, line, column)) => {
            let text = message
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .unwrap_or(message)
                .trim()
                .to_owned();
            Diagnostic {
                file,
                line: Some(line),
                column: Some(column),
                message: text,
                help: None,
            }
        }
        None => Diagnostic::in_file(fallback_file, message.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_table() {
        let text = "ab\ncdé\n\nx";
        for (offset, want) in [
            (0, (1, 1)),
            (1, (1, 2)),
            (2, (1, 3)),
            (3, (2, 1)),
            (5, (2, 3)),
            (6, (2, 3)), // inside `é`: clamped to its start
            (7, (2, 4)),
            (8, (3, 1)),
            (9, (4, 1)),
            (10, (4, 2)),
            (999, (4, 2)),
        ] {
            assert_eq!(line_column(text, offset), want, "offset {offset}");
        }
    }

    #[test]
    fn rego_messages() {
        let located =
            "\n--> dir:a.rego:3:7\n  |\n3 | allow if {\n  |       ^\nerror: unexpected token";
        let d = from_rego("x.rego", located);
        assert_eq!(
            (d.file.as_str(), d.line, d.column, d.message.as_str()),
            ("dir:a.rego", Some(3), Some(7), "unexpected token")
        );
        let plain = from_rego("x.rego", "recursion detected");
        assert_eq!(
            (plain.file.as_str(), plain.line, plain.message.as_str()),
            ("x.rego", None, "recursion detected")
        );
    }
}
