//! Reading a Markdown page the way the docs test runs it: its ```` ```sh ```` blocks, the
//! `<!-- docs-test: … -->` directives before them, each block cut into shell commands, and
//! each command's expectation from its trailing comment. The convention itself is described at
//! the top of `docs_examples.rs`.

use std::fmt;

/// A page: its runnable blocks in order, and what runs after them.
#[derive(Debug, Default)]
pub(crate) struct Page {
    /// Every ```` ```sh ```` block, in order.
    pub(crate) blocks: Vec<Block>,
    /// `teardown` commands: run at the end, whether the page passed or not.
    pub(crate) teardown: Vec<Command>,
    /// `no-server` with its reason: the page's commands need no `warden serve` of the test's.
    pub(crate) no_server: Option<String>,
}

/// One ```` ```sh ```` block and the directives before it.
#[derive(Debug)]
pub(crate) struct Block {
    /// 1-based line of the opening fence.
    pub(crate) line: usize,
    /// `skip REASON`: not run, for that reason.
    pub(crate) skip: Option<String>,
    /// `needs …`: `postgres` (runs only with `WARDEN_TEST_DATABASE_URL`) and tools.
    pub(crate) needs: Vec<String>,
    /// `setup` commands: run first, not shown to the reader.
    pub(crate) setup: Vec<Command>,
    /// The block's own commands.
    pub(crate) commands: Vec<Command>,
}

/// One shell command (possibly several lines: `\` continuations, multi-line quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Command {
    /// 1-based line of the command's first line in the page.
    pub(crate) line: usize,
    /// The command as written, trailing comment included.
    pub(crate) text: String,
    /// What it must do.
    pub(crate) expect: Expect,
}

/// What a command must do: exit with `status` (0 unless a comment says otherwise), and print
/// `contains` (stdout or stderr).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Expect {
    pub(crate) status: i32,
    pub(crate) contains: Option<String>,
}

/// A page the docs test cannot read: a directive it does not know, or one out of place.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

const PREFIX: &str = "<!-- docs-test:";

/// Directives waiting for the next ```` ```sh ```` block.
#[derive(Default)]
struct Pending {
    /// Line of the first pending directive, for errors.
    line: Option<usize>,
    skip: Option<String>,
    needs: Vec<String>,
    setup: Vec<Command>,
}

/// Reads `text` (a Markdown page).
pub(crate) fn parse(text: &str) -> Result<Page, ParseError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut page = Page::default();
    let mut pending = Pending::default();
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        let trimmed = lines[i].trim_start();
        if let Some(rest) = trimmed.strip_prefix(PREFIX) {
            // A directive: up to the closing `-->`, possibly lines later.
            let mut body = vec![(line_no, rest.to_owned())];
            let mut j = i;
            while !body.last().is_some_and(|(_, l)| l.contains("-->")) {
                j += 1;
                let Some(next) = lines.get(j) else {
                    return Err(err(
                        line_no,
                        "docs-test directive without its closing `-->`",
                    ));
                };
                body.push((j + 1, (*next).to_owned()));
            }
            if let Some((_, last)) = body.last_mut() {
                let end = last.find("-->").unwrap_or(last.len());
                if !last[end + 3..].trim().is_empty() {
                    return Err(err(j + 1, "text after a docs-test directive's `-->`"));
                }
                last.truncate(end);
            }
            directive(&mut page, &mut pending, body)?;
            i = j + 1;
            continue;
        }
        if let Some(fence) = fence_open(trimmed) {
            let lang = fence.info.split_whitespace().next().unwrap_or("");
            let mut body = Vec::new();
            let mut j = i + 1;
            loop {
                let Some(l) = lines.get(j) else {
                    return Err(err(line_no, "code block without its closing fence"));
                };
                let t = l.trim_start();
                if t.starts_with(fence.marker) && t.trim_end().chars().all(|c| c == fence.ch) {
                    break;
                }
                body.push((j + 1, *l));
                j += 1;
            }
            if matches!(lang, "sh" | "bash" | "shell") {
                let p = std::mem::take(&mut pending);
                page.blocks.push(Block {
                    line: line_no,
                    skip: p.skip,
                    needs: p.needs,
                    setup: p.setup,
                    commands: split_commands(&body)?,
                });
            } else if let Some(at) = pending.line {
                return Err(err(
                    at,
                    format!("docs-test directive before a ```{lang} block, not a ```sh one"),
                ));
            }
            i = j + 1;
            continue;
        }
        if !trimmed.trim().is_empty() {
            if let Some(at) = pending.line {
                return Err(err(
                    at,
                    "a docs-test directive must come right before its ```sh block (blank lines and other directives may sit between them)",
                ));
            }
        }
        i += 1;
    }
    if let Some(at) = pending.line {
        return Err(err(at, "docs-test directive with no ```sh block after it"));
    }
    Ok(page)
}

fn err(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

struct Fence<'a> {
    marker: &'a str,
    ch: char,
    info: &'a str,
}

fn fence_open(line: &str) -> Option<Fence<'_>> {
    for ch in ['`', '~'] {
        let n = line.chars().take_while(|c| *c == ch).count();
        if n >= 3 {
            return Some(Fence {
                marker: &line[..n],
                ch,
                info: line[n..].trim(),
            });
        }
    }
    None
}

/// Applies one directive (its lines, the first one after `docs-test:`).
fn directive(
    page: &mut Page,
    pending: &mut Pending,
    body: Vec<(usize, String)>,
) -> Result<(), ParseError> {
    let line = body[0].0;
    let first = body[0].1.trim();
    let (name, rest) = first.split_once(char::is_whitespace).unwrap_or((first, ""));
    let rest = rest.trim();
    let following: Vec<(usize, &str)> = body[1..].iter().map(|(n, l)| (*n, l.as_str())).collect();
    let only_one_line = |what: &str| {
        if following.iter().any(|(_, l)| !l.trim().is_empty()) {
            Err(err(line, format!("`{what}` takes one line")))
        } else {
            Ok(())
        }
    };
    match name {
        "skip" | "no-server" => {
            only_one_line(name)?;
            let reason = rest.trim_matches(|c| c == '(' || c == ')').trim();
            if reason.is_empty() {
                return Err(err(line, format!("`{name}` needs a reason")));
            }
            if name == "no-server" {
                page.no_server = Some(reason.to_owned());
                return Ok(());
            }
            if pending.skip.is_some() {
                return Err(err(line, "two `skip` directives for one block"));
            }
            pending.skip = Some(reason.to_owned());
        }
        "needs" => {
            only_one_line(name)?;
            if rest.is_empty() {
                return Err(err(line, "`needs` names what the block needs"));
            }
            pending
                .needs
                .extend(rest.split_whitespace().map(str::to_owned));
        }
        "setup" | "teardown" => {
            if !rest.is_empty() {
                return Err(err(
                    line,
                    format!("`{name}` commands go on the lines after it"),
                ));
            }
            let commands = split_commands(&following)?;
            if commands.is_empty() {
                return Err(err(line, format!("`{name}` without commands")));
            }
            if name == "teardown" {
                page.teardown.extend(commands);
                return Ok(());
            }
            pending.setup.extend(commands);
        }
        other => {
            return Err(err(
                line,
                format!(
                    "unknown docs-test directive `{other}` (skip, needs, setup, teardown, no-server)"
                ),
            ));
        }
    }
    pending.line.get_or_insert(line);
    Ok(())
}

/// Cuts shell text into commands: a command ends at a newline outside quotes, `$(…)` and a
/// here-document, not escaped by a trailing `\`. Lines that hold only a comment are prose,
/// not commands.
pub(crate) fn split_commands(lines: &[(usize, &str)]) -> Result<Vec<Command>, ParseError> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut start = 0;
    let mut scan = Scan::default();
    // The here-document being read: its delimiter, whether leading tabs are stripped, and the
    // comment of the line that opened it (the command's expectation).
    let mut heredoc: Option<(String, bool, Option<&str>)> = None;
    for &(line_no, line) in lines {
        if let Some((delimiter, dash, comment)) = &heredoc {
            current.push(line);
            let body = if *dash {
                line.trim_start_matches('\t')
            } else {
                line
            };
            if body != delimiter {
                continue;
            }
            let comment = *comment;
            heredoc = None;
            if scan.open() {
                continue;
            }
            out.push(Command {
                line: start,
                expect: expectation(comment.unwrap_or("")),
                text: current.join("\n"),
            });
            current.clear();
            continue;
        }
        if current.is_empty() {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            start = line_no;
        }
        current.push(line);
        let comment = scan.line(line);
        if let Some((delimiter, dash)) = scan.heredoc.take() {
            heredoc = Some((delimiter, dash, comment));
            continue;
        }
        if scan.open() {
            continue;
        }
        let text = current.join("\n");
        current.clear();
        out.push(Command {
            line: start,
            expect: expectation(comment.unwrap_or("")),
            text,
        });
    }
    if !current.is_empty() {
        return Err(err(
            start,
            "a command that never ends (an open quote, `$(`, a here-document or a trailing `\\`)",
        ));
    }
    Ok(out)
}

/// The shell lexer's state across lines, just enough to find where a command ends.
#[derive(Default)]
struct Scan {
    single: bool,
    double: bool,
    /// Depth of `$(` … `)`.
    depth: usize,
    /// The last line ended in a `\`.
    continued: bool,
    /// A here-document starts after this line: its delimiter, and whether `<<-` strips tabs.
    heredoc: Option<(String, bool)>,
}

impl Scan {
    fn open(&self) -> bool {
        self.single || self.double || self.depth > 0 || self.continued
    }

    /// Scans one line; returns its trailing comment (after `#`), if any.
    fn line<'a>(&mut self, line: &'a str) -> Option<&'a str> {
        self.continued = false;
        let mut prev: Option<char> = None;
        let mut chars = line.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            if self.single {
                if c == '\'' {
                    self.single = false;
                }
                prev = Some(c);
                continue;
            }
            match c {
                '\\' => {
                    if chars.next().is_none() {
                        self.continued = true;
                    }
                    prev = Some('x');
                    continue;
                }
                '"' => self.double = !self.double,
                '\'' if !self.double => self.single = true,
                '$' if chars.peek().is_some_and(|(_, n)| *n == '(') => {
                    chars.next();
                    self.depth += 1;
                }
                '<' if !self.double && line[at..].starts_with("<<") => {
                    chars.next();
                    if line[at..].starts_with("<<<") {
                        // A here-string: one word, nothing on the following lines.
                        chars.next();
                    } else {
                        let rest = &line[at + 2..];
                        let dash = rest.starts_with('-');
                        let word: String = rest
                            .trim_start_matches('-')
                            .trim_start()
                            .chars()
                            .take_while(|c| !c.is_whitespace() && !";|&<>()".contains(*c))
                            .filter(|c| *c != '\'' && *c != '"' && *c != '\\')
                            .collect();
                        if !word.is_empty() {
                            self.heredoc = Some((word, dash));
                        }
                    }
                }
                // Inside `$(…)` quotes nest anew; counting parentheses whatever the quotes
                // say is enough for the commands a page shows.
                '(' if self.depth > 0 => self.depth += 1,
                ')' if self.depth > 0 => self.depth -= 1,
                '#' if !self.double && prev.is_none_or(char::is_whitespace) => {
                    return Some(line[at + 1..].trim());
                }
                _ => {}
            }
            prev = Some(c);
        }
        None
    }
}

/// The expectation a trailing comment states: `exits N`, `refused` or `denied` (exit 1) at its
/// start, and `→ TEXT` anywhere (TEXT must be printed). Any other comment is prose.
pub(crate) fn expectation(comment: &str) -> Expect {
    let mut expect = Expect::default();
    let (head, contains) = match comment.split_once('→') {
        Some((head, text)) => (head, Some(text.trim())),
        None => (comment, None),
    };
    expect.contains = contains.filter(|t| !t.is_empty()).map(str::to_owned);
    let mut words = head.split(|c: char| c.is_whitespace() || ",;:".contains(c));
    match words.next() {
        Some("refused" | "denied") => expect.status = 1,
        Some("exits") => {
            if let Some(n) = words.next().and_then(|w| w.parse().ok()) {
                expect.status = n;
            }
        }
        _ => {}
    }
    expect
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmds(text: &str) -> Vec<Command> {
        let lines: Vec<(usize, &str)> = text.lines().enumerate().map(|(i, l)| (i + 1, l)).collect();
        split_commands(&lines).unwrap()
    }

    #[test]
    fn commands_end_at_newlines_outside_quotes_and_continuations() {
        let got = cmds(concat!(
            "# a comment line is prose\n",
            "warden entry create --spiffe-id spiffe://example.org/a \\\n",
            "    --selector unix:uid:0   # → entry\n",
            "\n",
            "python3 -c '\n",
            "print(\"#not a comment\")'   # exits 3\n",
            "x=$(warden token generate\n",
            "  --ttl 10m)\n",
            "echo \"it's # fine\" # refused: because\n",
        ));
        let lines: Vec<usize> = got.iter().map(|c| c.line).collect();
        assert_eq!(lines, [2, 5, 7, 9]);
        assert!(got[0].text.ends_with("unix:uid:0   # → entry"));
        assert_eq!(got[0].expect.contains.as_deref(), Some("entry"));
        assert_eq!(got[1].expect.status, 3);
        assert_eq!(got[2].expect, Expect::default());
        assert_eq!(got[3].expect.status, 1);
    }

    #[test]
    fn here_documents_belong_to_their_command() {
        let got = cmds(concat!(
            "cat > bad.fga <<'EOF'   # → written\n",
            "model\n",
            "# not a comment: text of the file\n",
            "EOF\n",
            "jq -r .dsn <<<\"$cred\"\n",
        ));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].text.ends_with("text of the file\nEOF"));
        assert_eq!(got[0].expect.contains.as_deref(), Some("written"));
        assert_eq!(got[1].line, 5);
    }

    #[test]
    fn an_unfinished_command_is_an_error() {
        let lines = [(4, "echo 'open")];
        assert_eq!(split_commands(&lines).unwrap_err().line, 4);
    }

    #[test]
    fn expectations() {
        assert_eq!(expectation("prose about it").status, 0);
        assert_eq!(expectation("refused").status, 1);
        assert_eq!(expectation("denied, no task yet").status, 1);
        assert_eq!(expectation("exits 2").status, 2);
        let e = expectation("exits 1 → error: nope");
        assert_eq!((e.status, e.contains.as_deref()), (1, Some("error: nope")));
        assert_eq!(expectation("→ allow").contains.as_deref(), Some("allow"));
        assert_eq!(expectation("writes now denied").status, 0);
    }

    #[test]
    fn directives_attach_to_the_next_sh_block() {
        let page = parse(concat!(
            "# Title\n",
            "<!-- docs-test: skip (needs a second host) -->\n",
            "```sh\n",
            "warden join\n",
            "```\n",
            "<!-- docs-test: needs postgres -->\n",
            "<!-- docs-test: setup\n",
            "echo hidden\n",
            "-->\n",
            "\n",
            "```sh\n",
            "warden db list\n",
            "```\n",
            "```\n",
            "warden not run\n",
            "```\n",
            "<!-- docs-test: teardown\n",
            "echo done\n",
            "-->\n",
            "<!-- docs-test: no-server the script starts its own -->\n",
        ))
        .unwrap();
        assert_eq!(page.blocks.len(), 2);
        assert_eq!(page.blocks[0].skip.as_deref(), Some("needs a second host"));
        assert_eq!(page.blocks[0].line, 3);
        assert_eq!(page.blocks[1].needs, ["postgres"]);
        assert_eq!(page.blocks[1].setup[0].text, "echo hidden");
        assert_eq!(page.blocks[1].setup[0].line, 8);
        assert_eq!(page.blocks[1].commands[0].line, 12);
        assert_eq!(page.teardown[0].text, "echo done");
        assert_eq!(page.no_server.as_deref(), Some("the script starts its own"));
    }

    #[test]
    fn misplaced_or_unknown_directives_are_errors() {
        for (text, line) in [
            ("<!-- docs-test: skip -->\n```sh\nx\n```\n", 1),
            ("<!-- docs-test: skip why -->\ntext\n```sh\nx\n```\n", 1),
            ("<!-- docs-test: skip why -->\n```json\n{}\n```\n", 1),
            ("\n<!-- docs-test: frobnicate -->\n```sh\nx\n```\n", 2),
            ("<!-- docs-test: needs postgres -->\n", 1),
            ("<!-- docs-test: setup\n-->\n```sh\nx\n```\n", 1),
        ] {
            assert_eq!(parse(text).unwrap_err().line, line, "{text}");
        }
    }
}
