//! The OpenFGA modeling language (DSL), schema 1.1, parsed the way the official parser does.
//!
//! The grammar is `openfga/language` `OpenFGAParser.g4` / `OpenFGALexer.g4`, and the comment
//! handling is the official transformer's (`pkg/js/transformer/dsltojson.ts`): a line whose
//! first non-blank character is `#` is blanked, any other line is cut at its first ` #`, and
//! trailing blanks are dropped, before lexing. Consequences kept on purpose:
//!
//! - indentation is not significant; newlines are (one statement per line);
//! - after the first operand a relation uses one kind of operator only: `a or b or c`,
//!   `a and b and c`, or a single `a but not b`; mixing needs parentheses;
//! - direct type restrictions `[...]` may only be the leftmost operand (possibly inside
//!   leading parentheses) — `a or [user]` is an error;
//! - a parenthesised group becomes a nested node (`(a or b) or c` is a union inside a union).
//!
//! Names are IDENTIFIER (`[A-Za-z_][A-Za-z0-9_-]*`) or EXTENDED_IDENTIFIER (segments joined
//! by `/`, `.` or `-`), and the keywords `module`, `model`, `schema`, `extend`, `type`,
//! `relation` may be used as names; `and`, `or`, `from`, `define`, `relations`, `condition`,
//! `with`, `in`, `true`, `false`, `null` may not.

use crate::error::{Position, RebacError};
use crate::model::{Rewrite, TypeRestriction};

/// A relation as written.
#[derive(Debug)]
pub(crate) struct RawRelation {
    pub(crate) name: String,
    pub(crate) position: Position,
    pub(crate) rewrite: Rewrite,
    pub(crate) restrictions: Vec<TypeRestriction>,
}

/// A type as written.
#[derive(Debug)]
pub(crate) struct RawType {
    pub(crate) name: String,
    pub(crate) position: Position,
    pub(crate) relations: Vec<RawRelation>,
}

/// A model as written.
#[derive(Debug)]
pub(crate) struct RawModel {
    pub(crate) schema_version: String,
    pub(crate) schema_position: Position,
    pub(crate) types: Vec<RawType>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Whitespace,
    Newline,
    Hash,
    Colon,
    Comma,
    LBracket,
    RBracket,
    LParen,
    RParen,
    Star,
    And,
    Or,
    ButNot,
    From,
    Module,
    Model,
    Schema,
    Extend,
    Type,
    Condition,
    Relations,
    Relation,
    Define,
    With,
    SchemaVersion(String),
    Ident(String),
    /// Anything else the official lexer knows only inside conditions (`in`, `true`, `==`, …)
    /// or does not know at all.
    Other(String),
    Eof,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    pos: Position,
}

fn describe(kind: &Kind) -> String {
    match kind {
        Kind::Whitespace => "whitespace".into(),
        Kind::Newline => "a line break".into(),
        Kind::Hash => "`#`".into(),
        Kind::Colon => "`:`".into(),
        Kind::Comma => "`,`".into(),
        Kind::LBracket => "`[`".into(),
        Kind::RBracket => "`]`".into(),
        Kind::LParen => "`(`".into(),
        Kind::RParen => "`)`".into(),
        Kind::Star => "`*`".into(),
        Kind::And => "`and`".into(),
        Kind::Or => "`or`".into(),
        Kind::ButNot => "`but not`".into(),
        Kind::From => "`from`".into(),
        Kind::Module => "`module`".into(),
        Kind::Model => "`model`".into(),
        Kind::Schema => "`schema`".into(),
        Kind::Extend => "`extend`".into(),
        Kind::Type => "`type`".into(),
        Kind::Condition => "`condition`".into(),
        Kind::Relations => "`relations`".into(),
        Kind::Relation => "`relation`".into(),
        Kind::Define => "`define`".into(),
        Kind::With => "`with`".into(),
        Kind::SchemaVersion(v) => format!("`{v}`"),
        Kind::Ident(s) => format!("`{s}`"),
        Kind::Other(s) => format!("`{s}`"),
        Kind::Eof => "the end of the model".into(),
    }
}

/// The official transformer's comment stripping (see the module docs).
fn strip_comments(dsl: &str) -> String {
    dsl.split('\n')
        .map(|line| {
            if line.trim_start().starts_with('#') {
                ""
            } else {
                let cut = line.find(" #").map_or(line, |i| &line[..i]);
                cut.trim_end()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_letter(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Length (in chars) of the longest IDENTIFIER / EXTENDED_IDENTIFIER at the start of `s`,
/// whose first char is already known to be a letter or `_`.
fn identifier_len(s: &[char]) -> usize {
    // IDENTIFIER: (LETTER | '_') (LETTER | DIGIT | '_' | '-')*
    let mut ident = 1;
    while ident < s.len() && (is_word(s[ident]) || s[ident] == '-') {
        ident += 1;
    }
    // EXTENDED_IDENTIFIER: (LETTER | '_') ((SLASH | DOT | MINUS)? (LETTER | DIGIT | '_')+)*
    let mut ext = 1;
    loop {
        if ext < s.len() && is_word(s[ext]) {
            ext += 1;
        } else if ext + 1 < s.len() && matches!(s[ext], '/' | '.' | '-') && is_word(s[ext + 1]) {
            ext += 2;
        } else {
            break;
        }
    }
    ident.max(ext)
}

fn lex(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1u32, 1u32);
    // Advances over `n` chars, keeping line and column.
    let advance = |i: &mut usize, line: &mut u32, col: &mut u32, n: usize| {
        for _ in 0..n {
            if chars.get(*i) == Some(&'\n') {
                *line += 1;
                *col = 1;
            } else {
                *col += 1;
            }
            *i += 1;
        }
    };
    while i < chars.len() {
        let pos = Position { line, column: col };
        let c = chars[i];
        let (kind, len) = if matches!(c, ' ' | '\t' | '\x0c' | '\n' | '\r') {
            let mut j = i;
            let mut newline = false;
            while j < chars.len() && matches!(chars[j], ' ' | '\t' | '\x0c' | '\n' | '\r') {
                newline |= matches!(chars[j], '\n' | '\r');
                j += 1;
            }
            let kind = if newline {
                Kind::Newline
            } else {
                Kind::Whitespace
            };
            (kind, j - i)
        } else if is_letter(c) {
            let n = identifier_len(&chars[i..]);
            let word: String = chars[i..i + n].iter().collect();
            let but_not: Vec<char> = "but not".chars().collect();
            if word == "but" && chars[i..].starts_with(&but_not) {
                (Kind::ButNot, but_not.len())
            } else {
                let kind = match word.as_str() {
                    "and" => Kind::And,
                    "or" => Kind::Or,
                    "from" => Kind::From,
                    "module" => Kind::Module,
                    "model" => Kind::Model,
                    "schema" => Kind::Schema,
                    "extend" => Kind::Extend,
                    "type" => Kind::Type,
                    "condition" => Kind::Condition,
                    "relations" => Kind::Relations,
                    "relation" => Kind::Relation,
                    "define" => Kind::Define,
                    "with" => Kind::With,
                    "in" | "true" | "false" | "null" => Kind::Other(word),
                    _ => Kind::Ident(word),
                };
                (kind, n)
            }
        } else if c.is_ascii_digit() {
            let mut j = i;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            let mut k = j;
            if k + 1 < chars.len() && chars[k] == '.' && chars[k + 1].is_ascii_digit() {
                k += 1;
                while k < chars.len() && chars[k].is_ascii_digit() {
                    k += 1;
                }
                (Kind::SchemaVersion(chars[i..k].iter().collect()), k - i)
            } else {
                (Kind::Other(chars[i..j].iter().collect()), j - i)
            }
        } else {
            let kind = match c {
                '#' => Kind::Hash,
                ':' => Kind::Colon,
                ',' => Kind::Comma,
                '[' => Kind::LBracket,
                ']' => Kind::RBracket,
                '(' => Kind::LParen,
                ')' => Kind::RParen,
                '*' => Kind::Star,
                other => Kind::Other(other.to_string()),
            };
            (kind, 1)
        };
        tokens.push(Token { kind, pos });
        advance(&mut i, &mut line, &mut col, len);
    }
    tokens.push(Token {
        kind: Kind::Eof,
        pos: Position { line, column: col },
    });
    tokens
}

/// Which operator chains a relation definition's operands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Or,
    And,
    ButNot,
}

struct Parser {
    tokens: Vec<Token>,
    p: usize,
    /// The direct type restrictions of the relation being parsed.
    restrictions: Option<Vec<TypeRestriction>>,
}

type Res<T> = Result<T, RebacError>;

impl Parser {
    fn peek(&self) -> &Kind {
        self.peek_at(0)
    }

    fn peek_at(&self, k: usize) -> &Kind {
        self.tokens
            .get(self.p + k)
            .or_else(|| self.tokens.last())
            .map_or(&Kind::Eof, |t| &t.kind)
    }

    fn pos(&self) -> Position {
        self.tokens
            .get(self.p)
            .or_else(|| self.tokens.last())
            .map_or(Position { line: 1, column: 1 }, |t| t.pos)
    }

    fn bump(&mut self) {
        if self.p + 1 < self.tokens.len() {
            self.p += 1;
        }
    }

    /// An error at the current token (or at the one after it, when the current one is a blank:
    /// "unexpected whitespace" helps no one).
    fn unexpected(&self, expected: &str) -> RebacError {
        let skip = usize::from(*self.peek() == Kind::Whitespace);
        let at = self.p + skip;
        let (kind, pos) = self
            .tokens
            .get(at)
            .or_else(|| self.tokens.last())
            .map_or((Kind::Eof, Position { line: 1, column: 1 }), |t| {
                (t.kind.clone(), t.pos)
            });
        match kind {
            Kind::Condition | Kind::With => RebacError::ConditionUnsupported {
                position: Some(pos),
                message: format!("{} found where {expected} was expected", describe(&kind)),
            },
            _ => RebacError::model(
                Some(pos),
                format!("unexpected {}, expected {expected}", describe(&kind)),
            ),
        }
    }

    fn expect(&mut self, kind: Kind, expected: &str) -> Res<()> {
        if *self.peek() == kind {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn skip(&mut self, kind: &Kind) {
        while self.peek() == kind {
            self.bump();
        }
    }

    /// A name: an identifier or one of the keywords the grammar lets stand for one.
    fn name(&mut self, what: &str) -> Res<(String, Position)> {
        let pos = self.pos();
        let name = match self.peek() {
            Kind::Ident(s) => s.clone(),
            Kind::Module => "module".into(),
            Kind::Model => "model".into(),
            Kind::Schema => "schema".into(),
            Kind::Extend => "extend".into(),
            Kind::Type => "type".into(),
            Kind::Relation => "relation".into(),
            _ => return Err(self.unexpected(what)),
        };
        self.bump();
        Ok((name, pos))
    }

    fn model(&mut self) -> Res<RawModel> {
        self.skip(&Kind::Whitespace);
        self.skip(&Kind::Newline);
        if *self.peek() == Kind::Module {
            return Err(RebacError::model(
                Some(self.pos()),
                "modular models (`module`, `fga.mod`) are not supported: combine the modules \
                 into one model",
            ));
        }
        self.expect(Kind::Model, "`model`")?;
        self.expect(Kind::Newline, "a line break after `model`")?;
        self.expect(Kind::Schema, "`schema`")?;
        self.expect(Kind::Whitespace, "whitespace after `schema`")?;
        let schema_position = self.pos();
        let schema_version = match self.peek() {
            Kind::SchemaVersion(v) => v.clone(),
            _ => return Err(self.unexpected("a schema version such as `1.1`")),
        };
        self.bump();
        self.skip(&Kind::Whitespace);
        let mut types = Vec::new();
        loop {
            match self.peek() {
                Kind::Eof => break,
                Kind::Newline => match self.peek_at(1) {
                    Kind::Eof => break,
                    Kind::Type => {
                        self.bump();
                        types.push(self.type_def()?);
                    }
                    Kind::Extend => {
                        self.bump();
                        return Err(RebacError::model(
                            Some(self.pos()),
                            "`extend` belongs to modular models, which are not supported",
                        ));
                    }
                    Kind::Condition => {
                        self.bump();
                        return Err(RebacError::ConditionUnsupported {
                            position: Some(self.pos()),
                            message: "`condition` blocks cannot be used".into(),
                        });
                    }
                    _ => {
                        self.bump();
                        return Err(self.unexpected("`type`"));
                    }
                },
                _ => return Err(self.unexpected("a line break")),
            }
        }
        Ok(RawModel {
            schema_version,
            schema_position,
            types,
        })
    }

    fn type_def(&mut self) -> Res<RawType> {
        self.expect(Kind::Type, "`type`")?;
        self.expect(Kind::Whitespace, "whitespace after `type`")?;
        let (name, position) = self.name("a type name")?;
        let mut relations: Vec<RawRelation> = Vec::new();
        if *self.peek() == Kind::Newline && *self.peek_at(1) == Kind::Relations {
            self.bump();
            self.bump();
            if !(*self.peek() == Kind::Newline && *self.peek_at(1) == Kind::Define) {
                if *self.peek() == Kind::Newline {
                    self.bump();
                }
                return Err(self.unexpected("`define`"));
            }
            while *self.peek() == Kind::Newline && *self.peek_at(1) == Kind::Define {
                self.bump();
                let relation = self.relation()?;
                if relations.iter().any(|r| r.name == relation.name) {
                    return Err(RebacError::model(
                        Some(relation.position),
                        format!(
                            "relation `{}` is already defined in type `{name}`",
                            relation.name
                        ),
                    ));
                }
                relations.push(relation);
            }
        }
        Ok(RawType {
            name,
            position,
            relations,
        })
    }

    fn relation(&mut self) -> Res<RawRelation> {
        self.expect(Kind::Define, "`define`")?;
        self.expect(Kind::Whitespace, "whitespace after `define`")?;
        let (name, position) = self.name("a relation name")?;
        self.skip(&Kind::Whitespace);
        self.expect(Kind::Colon, "`:` after the relation name")?;
        self.skip(&Kind::Whitespace);
        self.restrictions = None;
        let rewrite = self.definition(true)?;
        match self.peek() {
            Kind::Newline | Kind::Eof => {}
            _ => return Err(self.unexpected("a line break after the relation definition")),
        }
        Ok(RawRelation {
            name,
            position,
            rewrite,
            restrictions: self.restrictions.take().unwrap_or_default(),
        })
    }

    /// `relationDef` (`allow_direct`) or `relationDefNoDirect`: a first operand, then
    /// operands joined by one kind of operator.
    fn definition(&mut self, allow_direct: bool) -> Res<Rewrite> {
        let first = match self.peek() {
            Kind::LBracket if allow_direct => self.direct()?,
            Kind::LBracket => {
                return Err(RebacError::model(
                    Some(self.pos()),
                    "direct type restrictions `[...]` must be the first operand",
                ));
            }
            Kind::LParen => self.group(allow_direct)?,
            _ => self.rewrite()?,
        };
        let mut operands = vec![first];
        let mut op: Option<Op> = None;
        while *self.peek() == Kind::Whitespace {
            let next = match self.peek_at(1) {
                Kind::Or => Op::Or,
                Kind::And => Op::And,
                Kind::ButNot => Op::ButNot,
                _ => break,
            };
            self.bump();
            let op_pos = self.pos();
            match op {
                Some(Op::ButNot) if next == Op::ButNot => {
                    return Err(RebacError::model(
                        Some(op_pos),
                        "only one `but not` may follow an operand; add parentheses",
                    ));
                }
                Some(current) if current != next => {
                    return Err(RebacError::model(
                        Some(op_pos),
                        "`or`, `and` and `but not` cannot be mixed without parentheses",
                    ));
                }
                _ => op = Some(next),
            }
            self.bump();
            self.expect(Kind::Whitespace, "whitespace after the operator")?;
            let operand = match self.peek() {
                Kind::LParen => self.group(false)?,
                Kind::LBracket => {
                    return Err(RebacError::model(
                        Some(self.pos()),
                        "direct type restrictions `[...]` must be the first operand",
                    ));
                }
                _ => self.rewrite()?,
            };
            operands.push(operand);
        }
        Ok(match (op, operands.len()) {
            (Some(Op::Or), _) => Rewrite::Union(operands),
            (Some(Op::And), _) => Rewrite::Intersection(operands),
            (Some(Op::ButNot), 2) => {
                let subtract = operands.pop().unwrap_or(Rewrite::This);
                let base = operands.pop().unwrap_or(Rewrite::This);
                Rewrite::Difference {
                    base: Box::new(base),
                    subtract: Box::new(subtract),
                }
            }
            _ => operands.pop().unwrap_or(Rewrite::This),
        })
    }

    fn group(&mut self, allow_direct: bool) -> Res<Rewrite> {
        self.expect(Kind::LParen, "`(`")?;
        self.skip(&Kind::Whitespace);
        let inner = self.definition(allow_direct)?;
        self.skip(&Kind::Whitespace);
        self.expect(Kind::RParen, "`)` or an operator")?;
        Ok(inner)
    }

    /// `relation` or `relation from tupleset`.
    fn rewrite(&mut self) -> Res<Rewrite> {
        let (name, _) = self.name("a relation name, `(` or `[`")?;
        if *self.peek() == Kind::Whitespace && *self.peek_at(1) == Kind::From {
            self.bump();
            self.bump();
            self.expect(Kind::Whitespace, "whitespace after `from`")?;
            let (tupleset, _) = self.name("a relation name after `from`")?;
            return Ok(Rewrite::TupleToUserset {
                tupleset,
                computed: name,
            });
        }
        Ok(Rewrite::Computed(name))
    }

    /// `[type, type:*, type#relation, ...]`.
    fn direct(&mut self) -> Res<Rewrite> {
        self.expect(Kind::LBracket, "`[`")?;
        self.skip(&Kind::Whitespace);
        let mut list = Vec::new();
        loop {
            if *self.peek() == Kind::Newline {
                self.bump();
            }
            let (type_name, _) = self.name("a type name")?;
            let restriction = match self.peek() {
                Kind::Colon => {
                    self.bump();
                    self.expect(Kind::Star, "`*` after `:`")?;
                    TypeRestriction::Wildcard(type_name)
                }
                Kind::Hash => {
                    self.bump();
                    let (relation, _) = self.name("a relation name after `#`")?;
                    TypeRestriction::Userset {
                        type_name,
                        relation,
                    }
                }
                _ => TypeRestriction::Type(type_name),
            };
            if *self.peek() == Kind::Whitespace && *self.peek_at(1) == Kind::With {
                self.bump();
                return Err(RebacError::ConditionUnsupported {
                    position: Some(self.pos()),
                    message: format!(
                        "`{}` carries a condition (`with`); conditional relationships cannot be \
                         used",
                        restriction
                    ),
                });
            }
            list.push(restriction);
            if *self.peek() == Kind::Newline {
                self.bump();
            }
            self.skip(&Kind::Whitespace);
            match self.peek() {
                Kind::Comma => {
                    self.bump();
                    self.skip(&Kind::Whitespace);
                }
                Kind::RBracket => {
                    self.bump();
                    break;
                }
                _ => return Err(self.unexpected("`,` or `]`")),
            }
        }
        self.restrictions = Some(list);
        Ok(Rewrite::This)
    }
}

/// Parses DSL text into the model as written (no semantic checks).
pub(crate) fn parse(dsl: &str) -> Result<RawModel, RebacError> {
    let tokens = lex(&strip_comments(dsl));
    Parser {
        tokens,
        p: 0,
        restrictions: None,
    }
    .model()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<Kind> {
        lex(s).into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn identifiers_follow_the_official_lexer() {
        assert_eq!(
            kinds("a/b a.b a-b- a..b"),
            vec![
                Kind::Ident("a/b".into()),
                Kind::Whitespace,
                Kind::Ident("a.b".into()),
                Kind::Whitespace,
                Kind::Ident("a-b-".into()),
                Kind::Whitespace,
                Kind::Ident("a".into()),
                Kind::Other(".".into()),
                Kind::Other(".".into()),
                Kind::Ident("b".into()),
                Kind::Eof
            ]
        );
        assert_eq!(
            kinds("but not orx or"),
            vec![
                Kind::ButNot,
                Kind::Whitespace,
                Kind::Ident("orx".into()),
                Kind::Whitespace,
                Kind::Or,
                Kind::Eof
            ]
        );
        assert_eq!(
            kinds("1.1 \n  x"),
            vec![
                Kind::SchemaVersion("1.1".into()),
                Kind::Newline,
                Kind::Ident("x".into()),
                Kind::Eof
            ]
        );
    }

    #[test]
    fn comments_are_stripped_like_the_official_transformer() {
        assert_eq!(
            strip_comments("a # c\n  # full\nb#c\r\n"),
            "a\n\nb#c\n".to_string()
        );
    }

    #[test]
    fn positions_are_one_based() {
        let t = lex("ab\n  cd");
        assert_eq!(t[0].pos, Position { line: 1, column: 1 });
        assert_eq!(t[2].pos, Position { line: 2, column: 3 });
    }
}
